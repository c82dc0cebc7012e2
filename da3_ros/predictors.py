"""Build the node's predictor from its parameters: the DA3 network or the synthetic-geometry oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

from da3_core.stream.frame import Frame
from da3_core.stream.predictor import DA3Predictor, OraclePredictor
from da3_core.weights.embedded import EMBEDDED_DEFAULT


def load_model(weights: str, variant: str, device: str) -> tuple[Any, str]:
    """(DA3 model, human-readable source). '' weights: the embedded default, else untrained recipe weights."""
    import torch

    from da3_core.api import DA3

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if weights:
        return DA3.from_pretrained(weights, variant=variant or None, device=dev), f"checkpoint {weights}"
    if (EMBEDDED_DEFAULT / "model.safetensors").is_file():
        return DA3.from_pretrained(EMBEDDED_DEFAULT, device=dev), "embedded default weights"
    from da3_core.registry import build_network
    from da3_core.weights.recipe import apply_recipe

    name = variant or "da3-small-reduced"
    net = apply_recipe(build_network(name))
    return DA3.from_network(net, variant=name, device=dev), f"UNTRAINED recipe weights ({name}): outputs are not " \
                                                            "meaningful; set the 'weights' parameter"


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
    model, source = load_model(values["weights"], values["variant"], values["device"])
    pred = DA3Predictor(model, process_res=values["process_res"], ref_view=values["ref_view"],
                        use_ray_pose=values["use_ray_pose"])
    return pred, f"{model!r} from {source}", str(getattr(model, "variant", "") or "")
