"""Build the node's predictor from its parameters: the DA3 network or the synthetic-geometry oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

from da3_core.stream.frame import Frame
from da3_core.stream.predictor import DA3Predictor, OraclePredictor
from da3_core.weights.embedded import EMBEDDED_DEFAULT


def load_model(weights: str, variant: str, device: str, **backend: Any) -> tuple[Any, str]:
    """(DA3 model, human-readable source). '' weights: the embedded default, else untrained recipe weights.
    ``backend``: DA3 keywords (precision, backend, onnx, cache_dir, providers)."""
    from da3_core.api import DA3
    from da3_ros.params import torch_device

    dev = torch_device(device)
    if weights:
        return DA3.from_pretrained(weights, variant=variant or None, device=dev, **backend), f"checkpoint {weights}"
    if (EMBEDDED_DEFAULT / "model.safetensors").is_file():
        return DA3.from_pretrained(EMBEDDED_DEFAULT, device=dev, **backend), "embedded default weights"
    from da3_core.registry import build_network
    from da3_core.weights.recipe import apply_recipe

    name = variant or "da3-small-reduced"
    net = apply_recipe(build_network(name))
    return DA3.from_network(net, variant=name, device=dev, **backend), f"UNTRAINED recipe weights ({name}): " \
                                                                       "outputs are not meaningful; set the " \
                                                                       "'weights' parameter"


def backend_options(values: dict[str, Any]) -> dict[str, Any]:
    """DA3 keywords from the node's backend parameters."""
    opts: dict[str, Any] = {"precision": values["precision"], "backend": values["backend"]}
    if values["backend"] == "onnxruntime":
        from da3_core.backends import default_cache_dir

        opts.update(onnx=[values["onnx_model"]] if values["onnx_model"] else [],
                    cache_dir=values["onnx_cache_dir"] or default_cache_dir(),
                    providers=[p for p in values["onnx_providers"].split(",") if p.strip()] or None)
    return opts


def warm_up(model: Any, values: dict[str, Any], conditioned: bool) -> str:
    """Prepare the network for the camera size of ``warm_up_size`` (the window the node will run); a log line."""
    if not values["warm_up_size"]:
        return ""
    from da3_core.api import processed_hw

    w, h = (int(v) for v in values["warm_up_size"].split("x"))
    height, width = processed_hw((h, w), values["process_res"])
    views = values["window_size"]
    seconds = model.warm_up(views, height, width, ref_view=values["ref_view"])
    if conditioned:
        seconds += model.warm_up(views, height, width, conditioned=True, ref_view=values["ref_view"])
    return f"warmed up for {views} views of {height}x{width} in {seconds:.1f} s"
def oracle_truth(spec: str):
    """(truth(frame) -> (depth, w2c, K), description) of a synthetic sequence or robot spec ('robot:...': frames
    are told apart by their camera frame id)."""
    from da3_ros.robot_sim import RobotSequence, is_robot_spec

    if is_robot_spec(spec):
        robot = RobotSequence(spec)

        def robot_truth(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            view = robot.view(robot.camera_of(frame.frame_id), robot.index_of(frame.stamp_ns))
            return view.depth, view.w2c, view.K

        return robot_truth, robot.spec.to_string()
    from da3_core.data.synthetic.sequence import SyntheticSequence

    seq = SyntheticSequence.from_spec(spec)

    def truth(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gt = seq.frame(seq.index_of(frame.stamp_ns))
        return gt.depth, gt.w2c, gt.K

    return truth, seq.spec.to_string()


def make_predictor(values: dict[str, Any]) -> tuple[Any, str, str]:
    """(predictor, description for logs/diagnostics, model variant name)."""
    if values["predictor"] == "oracle":
        truth, text = oracle_truth(values["oracle_sequence"])

        def sky(frame: Frame, depth: np.ndarray) -> np.ndarray:
            return ~np.isfinite(depth)

        mode = values["oracle_mode"]
        oracle = OraclePredictor(truth, sky_fn=sky, is_metric=mode == "metric", random_transform=mode == "random_sim3")
        return oracle, f"geometry oracle ({text}, {mode})", "oracle"
    model, source = load_model(values["weights"], values["variant"], values["device"], **backend_options(values))
    pred = DA3Predictor(model, process_res=values["process_res"], ref_view=values["ref_view"],
                        use_ray_pose=values["use_ray_pose"],
                        descriptors=bool(values.get("pose_graph")) and bool(values.get("loop_closure")))
    warmed = warm_up(model, values, conditioned=bool(values["pose_source_frame"]))
    text = f"{model!r} from {source}" + (f"; {warmed}" if warmed else "")
    return pred, text, str(getattr(model, "variant", "") or "")
