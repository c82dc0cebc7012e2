"""The launch file, parameter file and RViz config agree with the node's parameter table."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from da3_ros.params import (
    BY_NAME,
    DEFAULT_WINDOW,
    PARAMS,
    checked_values,
    parameter_yaml,
    pipeline_config,
    resolve_refine,
    resolve_window,
    resource_errors,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_file_lists_every_parameter_with_a_valid_default():
    data = yaml.safe_load((ROOT / "config" / "reconstruct.yaml").read_text())
    values = data["reconstruct"]["ros__parameters"]
    assert set(values) == set(BY_NAME)
    for p in PARAMS:
        assert values[p.name] == p.default, p.name
    assert validate(values) == []


def test_parameter_file_is_the_generated_one():
    """config/reconstruct.yaml = `python -m da3_ros.params` (descriptions, ranges and choices from the table)."""
    assert (ROOT / "config" / "reconstruct.yaml").read_text() == parameter_yaml()


@pytest.mark.parametrize("name", ["robot.yaml", "rig.yaml"])
def test_robot_and_rig_set_ups_are_valid_parameter_files(name):
    data = yaml.safe_load((ROOT / "config" / name).read_text())
    values = data["reconstruct"]["ros__parameters"]
    assert set(values) <= set(BY_NAME), set(values) - set(BY_NAME)
    assert validate({**{p.name: p.default for p in PARAMS}, **values}) == []


def test_validation_names_the_parameter_and_its_range():
    values = {p.name: p.default for p in PARAMS}
    assert any("'window_size'" in e and "2-64" in e for e in validate({**values, "window_size": 1}))
    assert any("'window_size'" in e and "[0, 64]" in e for e in validate({**values, "window_size": 65}))
    assert any("'overlap'" in e and "window_size" in e for e in validate({**values, "window_size": 4, "overlap": 4}))
    assert any("'ref_view'" in e for e in validate({**values, "ref_view": "last"}))
    assert any("'voxel_size'" in e for e in validate({**values, "voxel_size": -1.0}))


def test_the_window_defaults_to_the_weights_recommendation(tmp_path):
    """window_size 0 / overlap -1 (the defaults): the weights' config.json stream_window (the embedded default's),
    8 sharing 2 for weights that name none (official checkpoints) and for the oracle; a rig gets it per camera."""
    from da3_core.weights.embedded import EMBEDDED_DEFAULT
    from da3_core.weights.loading import stream_window

    defaults = {p.name: p.default for p in PARAMS}
    embedded = stream_window(EMBEDDED_DEFAULT)
    assert embedded == (6, 3)
    v = resolve_window(defaults)
    assert (v["window_size"], v["overlap"]) == embedded
    official = tmp_path / "official"
    official.mkdir()
    (official / "config.json").write_text(json.dumps({"model_name": "da3-large"}))
    v = resolve_window({**defaults, "weights": str(official)})
    assert (v["window_size"], v["overlap"]) == DEFAULT_WINDOW == (8, 2)
    v = resolve_window({**defaults, "predictor": "oracle", "oracle_sequence": "room"})
    assert (v["window_size"], v["overlap"]) == DEFAULT_WINDOW
    # given values win; an overlap left to the recommendation fits the given window
    v = resolve_window({**defaults, "window_size": 6, "overlap": 3})
    assert (v["window_size"], v["overlap"]) == (6, 3)
    v = resolve_window({**defaults, "window_size": 2})
    assert (v["window_size"], v["overlap"]) == (2, 1)
    # a given overlap that does not fit the recommended window is refused, naming both
    _, errors = checked_values({**defaults, "overlap": 6})
    assert len(errors) == 1 and "'overlap' = 6" in errors[0] and "'window_size' = 6" in errors[0]
    # three cameras: 6 time steps sharing 3 = 18 frames sharing 9
    v, errors = checked_values({**defaults, "cameras": "cam0,cam1,cam2"})
    assert errors == [] and (v["window_size"], v["overlap"]) == (18, 9)
    # a malformed recommendation is named with the file and the fix
    (official / "config.json").write_text(json.dumps({"model_name": "da3-large", "stream_window": [4, 4]}))
    v, errors = checked_values({**defaults, "weights": str(official)})
    assert len(errors) == 1 and "stream_window" in errors[0] and "config.json" in errors[0]


def test_pose_refine_defaults_to_the_weights_recommendation(tmp_path):
    """pose_refine 'auto' (the default): the weights' config.json stream_refine (the embedded default's is
    photometric), off for weights that name none (official checkpoints) and for the oracle; a given value wins; the
    pipeline gets it, and refuses values that were not resolved."""
    from da3_core.weights.embedded import EMBEDDED_DEFAULT
    from da3_core.weights.loading import stream_refine

    defaults = {p.name: p.default for p in PARAMS}
    assert defaults["pose_refine"] == "auto"
    assert stream_refine(EMBEDDED_DEFAULT) == "photometric"
    assert resolve_refine(defaults)["pose_refine"] == "photometric"
    official = tmp_path / "official"
    official.mkdir()
    (official / "config.json").write_text(json.dumps({"model_name": "da3-large"}))
    assert resolve_refine({**defaults, "weights": str(official)})["pose_refine"] == "off"
    assert resolve_refine({**defaults, "predictor": "oracle", "oracle_sequence": "room"})["pose_refine"] == "off"
    assert resolve_refine({**defaults, "pose_refine": "off"})["pose_refine"] == "off"
    v, errors = checked_values({**defaults, "weights": str(official), "pose_refine": "photometric",
                                "refine_max_rotation_deg": 3.0})
    assert errors == []
    cfg = pipeline_config(v)
    assert cfg.pose_refine == "photometric" and cfg.refine.max_rotation_deg == 3.0
    with pytest.raises(ValueError, match="pose_refine"):
        pipeline_config({**v, "pose_refine": "auto"})
    assert any("'pose_refine'" in e for e in validate({**defaults, "pose_refine": "on"}))
    (official / "config.json").write_text(json.dumps({"stream_refine": "yes"}))
    _, errors = checked_values({**defaults, "weights": str(official)})
    assert len(errors) == 1 and "stream_refine" in errors[0] and "config.json" in errors[0]


def test_depth_refine_reaches_the_pipeline():
    """depth_refine is off unless asked for (no weights recommend it); 'multiview' reaches the pipeline config, a
    value outside its choices is named."""
    defaults = {p.name: p.default for p in PARAMS}
    assert defaults["depth_refine"] == "off"
    v, errors = checked_values({**defaults, "depth_refine": "multiview"})
    assert errors == []
    assert pipeline_config(v).depth_refine == "multiview"
    assert pipeline_config(checked_values(defaults)[0]).depth_refine == "off"
    assert any("'depth_refine'" in e for e in validate({**defaults, "depth_refine": "on"}))


def test_backend_and_precision_the_machine_cannot_serve_are_named(tmp_path, monkeypatch):
    values = {p.name: p.default for p in PARAMS}
    assert any("'backend'" in e for e in validate({**values, "backend": "tensorrt"}))

    def errors(**kw):
        return resource_errors({**values, "device": "cpu", **kw})

    assert errors(backend="onnxruntime", onnx_cache_dir=str(tmp_path)) == []
    assert any("'onnx_model'" in e and "da3 export --onnx" in e
               for e in errors(backend="onnxruntime", onnx_model=str(tmp_path / "no.onnx")))
    assert any("'precision'" in e and "fp32" in e for e in errors(backend="onnxruntime", precision="bf16"))
    assert any("'warm_up_size'" in e and "WIDTHxHEIGHT" in e for e in errors(warm_up_size="640*480"))
    assert any("'precision'" in e and "CUDA" in e for e in errors(precision="fp16"))
    import da3_core.api

    monkeypatch.setattr(da3_core.api, "cpu_supports_bf16", lambda: False)
    assert any("'precision'" in e and "native bf16" in e for e in errors(precision="bf16"))
    monkeypatch.setattr(da3_core.api, "cpu_supports_bf16", lambda: True)
    assert errors(precision="bf16") == []


def test_rviz_config_shows_depth_map_tf_and_path_in_the_map_frame():
    rviz = yaml.safe_load((ROOT / "config" / "reconstruct.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == BY_NAME["map_frame"].default
    classes = {d["Class"] for d in manager["Displays"]}
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/PointCloud2", "rviz_default_plugins/Path",
            "rviz_default_plugins/Image"} <= classes
    topics = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert {"/map_cloud", "/path", "/depth"} <= topics


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((ROOT / "launch" / "reconstruct.launch.py").read_text())
    args = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGS")
    names = {k.value for k in args.value.keys}
    assert {"weights", "variant", "image", "camera_info", "config", "use_sim_time", "rviz"} <= names
    assert {"cameras", "image_suffix", "camera_info_suffix", "pose_source_frame", "odom_frame", "base_frame",
            "tf_mode"} <= names  # robot and rig set-ups
    overrides = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "OVERRIDES")
    assert {e.value for e in overrides.value.elts} <= set(BY_NAME)  # every override is a node parameter


def test_launch_file_builds_a_description_when_launch_is_installed():
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; a ROS 2 distro install provides it")
    import importlib.util

    spec = importlib.util.spec_from_file_location("reconstruct_launch", ROOT / "launch" / "reconstruct.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
