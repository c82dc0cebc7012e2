"""The reconstruct node's parameters: one table (name, default, description, range), declared with descriptors.

Ranges are enforced twice: by the descriptor (``ros2 param set`` outside the range is refused by rclpy) and by
:func:`validate`, which also checks choices and cross-parameter rules and names the parameter and its valid range in
the message. ``config/reconstruct.yaml`` holds the same defaults for launch files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from da3_core.models.reference_view import REF_VIEW_STRATEGIES, WINDOW_REF_VIEW


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive
    choices: tuple[str, ...] | None = None
    read_only: bool = True  # most settings shape the pipeline and are fixed at start-up


PARAMS: tuple[Param, ...] = (
    # model
    Param("predictor", "da3", "what produces depth and poses: 'da3' (the network) or 'oracle' (exact synthetic "
          "geometry, for tests)", choices=("da3", "oracle")),
    Param("weights", "", "official checkpoint folder / model.safetensors, or ours; '' = embedded default"),
    Param("variant", "", "variant name when the checkpoint has no config.json ('' = from the checkpoint)"),
    Param("device", "auto", "torch device: auto (a GPU when there is one), cpu, cuda, cuda:N"),
    Param("backend", "torch", "how the network runs: 'torch' (eager), 'torch_graph' (the window shape captured "
          "once: a CUDA graph on a GPU, torch.compile on the CPU; other shapes run eagerly, counted) or "
          "'onnxruntime' (exported ONNX graphs on ONNX Runtime: CPU, CUDA, TensorRT)",
          choices=("torch", "torch_graph", "onnxruntime")),
    Param("precision", "auto", "network precision: 'auto' (bf16 autocast on CUDA, fp32 on the CPU), 'fp32', "
          "'bf16' (CUDA, or a CPU with native bf16: AVX512-BF16 / AMX; opt-in there) or 'fp16' (CUDA)",
          choices=("auto", "fp32", "bf16", "fp16")),
    Param("onnx_model", "", "backend onnxruntime: exported graph(s) (`da3 export --onnx`), a .onnx file or a folder "
          "of them; '' = export the weights' graph for each new window shape into onnx_cache_dir"),
    Param("onnx_cache_dir", "", "backend onnxruntime: where graphs exported on demand and TensorRT engines are "
          "cached ('' = $DA3_CACHE or ~/.cache/da3_ros)"),
    Param("onnx_providers", "", "backend onnxruntime: comma-separated providers in order (tensorrt, cuda, cpu); "
          "'' = TensorRT and CUDA when installed (onnxruntime-gpu) on a GPU device, else the CPU"),
    Param("warm_up_size", "", "camera image size 'WxH' to prepare the network for at start-up (CUDA kernels, graph "
          "capture, ONNX export, TensorRT engine) so the first window is not slow; '' = on the first window"),
    Param("process_res", 504, "longest image side fed to the network (pixels)", range=(56, 2016)),
    Param("ref_view", WINDOW_REF_VIEW, "reference view of each window", choices=REF_VIEW_STRATEGIES),
    Param("use_ray_pose", False, "poses from the ray head (slower, more accurate) instead of the camera head"),
    Param("oracle_sequence", "", "oracle predictor: the SyntheticSequence spec the images come from (or a robot spec, "
          "'robot:...', see da3_ros.robot_sim)"),
    Param("oracle_mode", "relative", "oracle predictor: 'relative' (true geometry, reported as relative), 'metric' "
          "(reported as metric) or 'random_sim3' (each window moved and scaled at random, as a relative network's "
          "windows are)", choices=("relative", "metric", "random_sim3")),
    # input
    Param("use_compressed", False, "subscribe to sensor_msgs/CompressedImage on '<image>/compressed'"),
    Param("use_camera_info", True, "pair images with CameraInfo (known focal: metric depth with metric models)"),
    Param("camera_info_tolerance_s", 0.02, "largest stamp difference for image / CameraInfo pairing (s)",
          range=(0.0, 1.0)),
    Param("pose_source_frame", "", "pose conditioning: look up TF <this frame> -> camera optical frame at each image "
          "stamp (through the whole chain, e.g. odom -> base_link -> camera_link -> optical) and condition the "
          "network on it ('' = off, e.g. 'odom'; must differ from map_frame)"),
    Param("pose_tf_tolerance_s", 0.05, "pose conditioning: largest gap between an image stamp and the TF history "
          "still served by the nearest transform (s)", range=(0.0, 1.0)),
    Param("tf_wait_s", 0.5, "an image whose TF pose has not arrived yet waits at most this long (wall clock, s) "
          "before it goes on without it (counted as pose_lookup_failed_*)", range=(0.0, 10.0)),
    Param("pose_source_metric", True, "pose conditioning: the pose source is in metres (REP-103 TF), so conditioned "
          "depth and poses are metric"),
    Param("input_qos", "sensor_data", "input QoS: 'sensor_data' (best effort) or 'reliable'",
          choices=("sensor_data", "reliable")),
    Param("input_queue_depth", 5, "input subscription history depth", range=(1, 1000)),
    Param("max_image_side", 4096, "reject images with a side larger than this (pixels)", range=(14, 16384)),
    Param("cameras", "", "multi-camera rig: 2-6 camera namespaces, comma-separated (e.g. 'cam0,cam1,cam2': inputs "
          "cam0/image + cam0/camera_info, outputs cam0/depth ...; mounts from /tf_static); '' = one camera on image / "
          "camera_info"),
    Param("rig_sync_tolerance_s", 0.01, "rig: frames of all cameras within this of each other form one time step (s)",
          range=(0.0, 1.0)),
    Param("rig_wait_s", 0.5, "rig: a time step missing a camera leaves once another camera is this far ahead (stream "
          "time, s): a camera that stops degrades windows, it never blocks them", range=(0.0, 10.0)),
    # window
    Param("window_size", 0, "frames (views) per inference window, 2-64; a rig of N cameras gets window_size // N "
          "time steps; 0 = the weights' recommendation (their config.json's stream_window: the embedded default's "
          "is 6 frames sharing 3), else 8", range=(0, 64)),
    Param("overlap", -1, "frames shared with the previous window (chaining needs >= 1); a rig shares "
          "ceil(overlap / N) time steps; -1 = the weights' recommendation, else 2", range=(-1, 63)),
    Param("pose_refine", "auto", "'photometric': before chaining, direct image alignment on the network's depth "
          "gives a one-camera window its cameras and per-view depth scales, and a window conditioned on metric poses "
          "its metric depth scale, camera by camera, and a relative rig window its metric scale from the images "
          "across the mounts (instead of the predicted baselines) and its motion from each camera's frames "
          "(da3_core.stream.photometric, da3_core.stream.rig; for weights whose views disagree in scale); 'off'; "
          "'auto' = the weights' recommendation (their config.json's stream_refine: the embedded default's is "
          "photometric), else off",
          choices=("auto", "photometric", "off")),
    Param("refine_max_rotation_deg", 6.0, "pose_refine: largest change of rotation between consecutive frames' "
          "motions the alignment may find (deg; beyond it the last motion is kept)", range=(0.1, 180.0)),
    Param("depth_refine", "off", "'multiview': the depth of each window's new frames is corrected by a plane sweep "
          "against the window's other views of their camera and a rig's other cameras of their time step (on given "
          "poses only the latter), around the network's depth (da3_core.stream.multiview_depth; changes the depth "
          "images, clouds and map, not the cameras; ~0.1 s of CPU per new frame at process_res 168); 'off'",
          choices=("multiview", "off")),
    Param("min_interval_s", 0.0, "keyframe gate: least time between keyframes (s, 0 = off)", range=(0.0, 60.0)),
    Param("min_motion", 0.0, "keyframe gate: least mean grey-level change (0-255, 0 = off)", range=(0.0, 255.0)),
    Param("max_pending_windows", 1, "windows waiting for the inference worker: 1 = latest wins (live cameras), more = "
          "queue them (bag replay faster than the model; none dropped unless the queue is full)", range=(1, 256)),
    # map / outputs
    Param("map_frame", "map", "fixed frame of poses, TF and clouds"),
    Param("camera_frame", "", "camera optical frame id ('' = the image header's frame_id)"),
    Param("publish_tf", True, "broadcast the map frame on /tf (map -> odom on a robot, map -> camera for a free "
          "camera: tf_mode)"),
    Param("tf_mode", "auto", "'auto': map -> odom when the camera frame has a parent in /tf or /tf_static (REP-105), "
          "else map -> camera; or force 'map_to_odom' / 'map_to_camera'",
          choices=("auto", "map_to_odom", "map_to_camera")),
    Param("odom_frame", "", "the frame map -> X is published to ('' = the top of the camera's TF chain, normally "
          "odom)"),
    Param("base_frame", "base_link", "robot base frame: pose and path are of it on a robot (pose_frame)"),
    Param("pose_frame", "auto", "what pose and path describe: 'auto' (base_frame when it is an ancestor of the "
          "camera, else the camera), 'base' or 'camera'", choices=("auto", "base", "camera")),
    Param("tf_future_dating_s", 0.1, "map -> odom is stamped this much after the image it comes from, as "
          "localisation nodes do (s)", range=(0.0, 2.0)),
    Param("map_tf_rate_hz", 10.0, "re-publish the newest map -> odom, stamped now + tf_future_dating_s, at this rate "
          "(Hz, 0 = only with new images)", range=(0.0, 100.0)),
    Param("voxel_size", 0.05, "map voxel size in map units (0 = 1 % of the first window's median depth)",
          range=(0.0, 10.0)),
    Param("map_max_points", 2_000_000, "largest number of map voxels kept", range=(1000, 50_000_000)),
    Param("map_publish_rate_hz", 1.0, "accumulated map cloud publish rate (Hz)", range=(0.01, 30.0),
          read_only=False),
    Param("cloud_conf_percentile", 30.0, "window cloud keeps pixels above this confidence percentile",
          range=(0.0, 100.0)),
    Param("cloud_stride", 4, "pixel stride of the window cloud (4: 72k points per window of 6 new 504x378 frames, "
          "2 quadruples the cloud and its cost, #13)", range=(1, 16)),
    Param("map_stride", 0, "pixel stride of the points fused into the voxel map (a multiple of cloud_stride; 0 = "
          "auto: about 64 points across the image, 8 at 504 px wide and 4 up to 383 px with cloud_stride 4). At "
          "504x378, 8 instead of 4 costs a quarter as much for 94 % of the voxels indoors, 88 % in the courtyard "
          "scene (98-99.9 % of 4's voxels have one within 1.5 voxels); 4 for a denser map", range=(0, 64)),
    # long runs: pose graph, loop closure, submaps (da3_core.stream.loop_closure)
    Param("pose_graph", True, "windows become nodes of a GTSAM pose graph (Sim(3) for relative predictions, SE(3) "
          "for metric), optimised incrementally; needed by loop_closure; off = plain window-to-window chaining"),
    Param("loop_closure", True, "place recognition (pooled backbone tokens, or an image descriptor for the oracle), "
          "verification by a window over both places, loop edges in the pose graph; after a closed loop TF, path and "
          "map are re-anchored (needs pose_graph)"),
    Param("submaps", True, "keep map points per window and assemble the map cloud at map_publish_rate_hz (always on "
          "with pose_graph: the map moves with the graph); off = one voxel-map insert per window"),
    Param("loop_min_similarity", 0.9, "loop closure: least descriptor cosine similarity of a candidate",
          range=(-1.0, 1.0)),
    Param("loop_min_gap_windows", 5, "loop closure: candidates are at least this many windows older than the query "
          "(the temporal window: neighbours always look alike)", range=(1, 100000)),
    Param("loop_top_k", 1, "loop closure: candidates verified per window (each costs one network window)",
          range=(1, 10)),
    Param("loop_min_inlier_ratio", 0.3, "loop closure verification: least fraction of the candidate anchor's pixels "
          "seen in the query anchor at a consistent depth", range=(0.0, 1.0)),
    Param("loop_max_depth_residual", 0.05, "loop closure verification: largest median relative disagreement between "
          "a place's stored depth and its depth in the joint window (after one scale)", range=(0.0, 1.0)),
    Param("loop_cooldown_windows", 25, "loop closure: windows after an accepted loop that search no candidates "
          "(each loop edge costs the incremental solver fill-in: a loop every few windows makes it grow)",
          range=(0, 100000)),
    Param("loop_max_places", 1000, "loop closure: places kept (older ones are thinned past this; each holds two "
          "JPEG images and a subsampled depth map, about 0.1 MB at 504x378)", range=(10, 1_000_000)),
    Param("pose_graph_robust", "huber", "robust kernel on loop edges", choices=("huber", "cauchy", "none")),
    # TSDF map (da3_core.stream.tsdf_stream / tsdf_map): keyframes fused into a mesh in a background thread
    Param("tsdf", True, "fuse keyframes into a confidence-weighted TSDF volume (Open3D voxel blocks) in a background "
          "thread; moved with the pose graph after a closed loop; ~save_map also writes map_mesh.ply"),
    Param("tsdf_every_n_frames", 6, "TSDF: every n-th new frame is fused (one per window at window 8, "
          "overlap 2; a fusion is ~7-13 ms CPU at 504x378 and voxel 0.04-0.05, in the TSDF thread)", range=(1, 1000)),
    Param("tsdf_stride", 2, "TSDF: pixel stride of the fused (and stored) keyframes", range=(1, 16)),
    Param("tsdf_voxel_size", 0.05, "TSDF: voxel edge in map units (the cost of a fusion grows with the surface's voxel "
          "count: ~1 / voxel_size^2)", range=(0.001, 10.0)),
    Param("tsdf_depth_max", 8.0, "TSDF: depth beyond this (map units) is not fused", range=(0.01, 1000.0)),
    Param("tsdf_weight_mode", "relative", "TSDF: confidence -> weight: 'relative' (conf / the frame's median), "
          "'absolute' (conf / 1) or 'uniform' (plain TSDF)", choices=("relative", "absolute", "uniform")),
    Param("tsdf_w_max", 4.0, "TSDF: largest weight of one observation", range=(0.01, 1000.0)),
    Param("tsdf_min_obs_weight", 0.05, "TSDF: pixels of a lower weight are not fused", range=(0.0, 1000.0)),
    Param("tsdf_mesh_min_weight", 0.5, "TSDF: fused weight a voxel needs to be meshed", range=(0.0, 1000.0)),
    Param("tsdf_max_store_mb", 512.0, "TSDF: cap on the stored keyframes kept for re-integration (MB; older ones are "
          "subsampled, then dropped)", range=(1.0, 1_000_000.0)),
    Param("tsdf_queue_size", 4, "TSDF: keyframes waiting for the TSDF thread; more are dropped (counted as "
          "tsdf_dropped_frames)", range=(1, 1000)),
    Param("tsdf_device", "cpu", "TSDF: 'cpu' or 'cuda:N' (needs an Open3D built with CUDA; the open3d-cpu wheel has "
          "none)"),
    Param("path_max_poses", 2000, "most poses in a 'path' message: a longer path is thinned evenly (the newest pose "
          "always in it; 0 = every pose); the full trajectory is in save_map's trajectory.tum", range=(0, 1_000_000)),
    Param("executor", "events", "rclpy executor for subscriptions, timers and services: 'events' (rclpy's C++ events "
          "executor, least Python per message; single-threaded where this rclpy lacks it), 'single_threaded' or "
          "'multi_threaded'", choices=("events", "single_threaded", "multi_threaded")),
    Param("diagnostics_rate_hz", 1.0, "diagnostics publish rate (Hz)", range=(0.1, 10.0), read_only=False),
    Param("save_map_root", "", "~/save_map writes only below this folder (requests are relative to it; paths that "
          "resolve outside it are refused); '' = $ROS_HOME/da3_maps (~/.ros/da3_maps)"),
)
BY_NAME = {p.name: p for p in PARAMS}


def descriptor(p: Param) -> ParameterDescriptor:
    kinds = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    text = p.description + (f"; one of {', '.join(p.choices)}" if p.choices else "")
    d = ParameterDescriptor(name=p.name, type=kinds[type(p.default)], description=text, read_only=p.read_only)
    if p.range is not None and isinstance(p.default, int) and not isinstance(p.default, bool):
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    elif p.range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                     step=0.0)]
    return d


def check_value(name: str, value: Any) -> str | None:
    """None if ``value`` is valid for parameter ``name``, else a message naming it and what is allowed."""
    p = BY_NAME.get(name)
    if p is None:
        return None  # not ours (use_sim_time, qos overrides ...)
    if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(p.default):
        return f"parameter '{name}' must be a {type(p.default).__name__}, got {value!r}"
    if p.range is not None and not (p.range[0] <= value <= p.range[1]):
        return f"parameter '{name}' = {value} is outside its valid range [{p.range[0]}, {p.range[1]}]"
    if p.choices is not None and value not in p.choices:
        return f"parameter '{name}' = {value!r} is not one of: {', '.join(p.choices)}"
    return None


def validate(values: dict[str, Any]) -> list[str]:
    """All problems with a full parameter set (single values and cross-parameter rules)."""
    errors = [m for n, v in values.items() if (m := check_value(n, v))]
    if not errors and values["window_size"] == 1:
        errors.append("parameter 'window_size' = 1: a window needs 2-64 frames (0 = the weights' recommendation)")
    if not errors and values["window_size"] and values["overlap"] >= values["window_size"]:
        errors.append(f"parameter 'overlap' = {values['overlap']} must be smaller than 'window_size' = "
                      f"{values['window_size']} (valid range [0, window_size - 1])")
    if not errors and values["pose_source_frame"] and values["pose_source_frame"] == values["map_frame"]:
        errors.append(f"parameter 'pose_source_frame' = {values['pose_source_frame']!r} must differ from "
                      "'map_frame': the node would condition on the map -> camera transforms it publishes itself")
    if not errors and values["cameras"]:
        errors += _rig_errors(values)
    if not errors and values["predictor"] == "oracle" and not values["oracle_sequence"]:
        errors.append("parameter 'oracle_sequence' must name the synthetic sequence when predictor = 'oracle'")
    return errors


def checked_values(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(values with the window and the refinement resolved by :func:`resolve_window` and :func:`resolve_refine`,
    every problem): what the node and replay run."""
    errors = validate(values)
    if errors:
        return values, errors
    try:
        values = resolve_refine(resolve_window(values))
    except ValueError as exc:
        return values, [str(exc)]
    return values, validate(values)


DEFAULT_WINDOW = (8, 2)
"""(window_size, overlap) for weights that recommend none (official checkpoints) and for the oracle predictor."""


def resolve_window(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``window_size`` 0 / ``overlap`` -1 replaced by the weights' recommendation
    (:func:`da3_core.weights.loading.stream_window`; weights '' = the embedded default), else by
    :data:`DEFAULT_WINDOW`. The recommendation counts time steps, so a rig of N cameras (``cameras``) gets N times
    it in frames (at most 64); an overlap left to it is capped at window_size - 1. Whether the result fits (a given
    overlap against a recommended window) is :func:`validate`'s to say (:func:`checked_values` runs it again);
    raises ValueError when the weights' config.json holds a malformed stream_window."""
    if values["window_size"] and values["overlap"] >= 0:
        return values
    from da3_core.weights.loading import stream_window

    source = _weights_source(values)
    recommended = stream_window(source) if source is not None else None
    if recommended is None:
        window, overlap = DEFAULT_WINDOW
    else:
        n = len(camera_namespaces(values))
        window, overlap = min(64, recommended[0] * n), recommended[1] * n
    out = dict(values)
    out["window_size"] = values["window_size"] or window
    out["overlap"] = values["overlap"] if values["overlap"] >= 0 else min(overlap, out["window_size"] - 1)
    return out


def _weights_source(values: dict[str, Any]) -> Path | None:
    """The checkpoint the da3 predictor loads (weights '' = the embedded default), None for the oracle or when it
    does not exist (:func:`resource_errors` reports that)."""
    if values["predictor"] != "da3":
        return None
    from da3_core.weights.embedded import EMBEDDED_DEFAULT

    source = Path(values["weights"]).expanduser() if values["weights"] else EMBEDDED_DEFAULT
    return source if source.exists() else None


def resolve_refine(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``pose_refine`` 'auto' replaced by the weights' recommendation
    (:func:`da3_core.weights.loading.stream_refine`: the embedded default's is 'photometric'), else 'off' (official
    checkpoints, the oracle); raises ValueError when the weights' config.json holds a malformed stream_refine."""
    if values["pose_refine"] != "auto":
        return values
    from da3_core.weights.loading import stream_refine

    source = _weights_source(values)
    return {**values, "pose_refine": (stream_refine(source) if source is not None else None) or "off"}


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resource_errors(values: dict[str, Any]) -> list[str]:
    """What the machine lacks for these parameters, each naming the parameter and the fix: a weights path that does
    not exist, a device that is not a torch device or a CUDA device without CUDA (imports torch only then)."""
    errors = []
    if values["predictor"] == "da3" and values["weights"] and not Path(values["weights"]).expanduser().exists():
        errors.append(f"parameter 'weights' = {values['weights']!r}: no such file or folder; pass an official "
                      "checkpoint folder (model.safetensors + config.json) or model file, or '' for the embedded "
                      "default")
    errors += _backend_errors(values) + _tsdf_errors(values)
    device = values["device"]
    if not _DEVICE_RE.match(device):
        errors.append(f"parameter 'device' = {device!r} is not a torch device; use auto, cpu, cuda or cuda:N")
    elif values["predictor"] == "da3" and device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            found = f"{n} CUDA device(s)" if n else "no CUDA device"
            errors.append(f"parameter 'device' = {device!r} but this machine has {found} (torch {torch.__version__}); "
                          "use device:=cpu, or device:=auto to take a GPU when there is one")
    return errors


_SIZE_RE = re.compile(r"^\d+x\d+$")
_TSDF_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _tsdf_errors(values: dict[str, Any]) -> list[str]:
    """The TSDF map needs Open3D (with CUDA for a cuda device)."""
    if not values["tsdf"]:
        return []
    device = values["tsdf_device"]
    if not _TSDF_DEVICE_RE.match(device):
        return [f"parameter 'tsdf_device' = {device!r}: use cpu or cuda:N"]
    try:
        import open3d
    except ImportError:
        return ["parameter 'tsdf' = true but open3d is not installed; `pip install -r requirements/mapping.txt` "
                "(open3d-cpu) or set tsdf:=false"]
    if device.startswith("cuda") and not open3d.core.cuda.is_available():
        return [f"parameter 'tsdf_device' = {device!r} but this Open3D ({open3d.__version__}) has no CUDA (the "
                "open3d-cpu wheel); use tsdf_device:=cpu"]
    return []


def torch_device(device: str) -> str:
    """The torch device a 'device' parameter means ('auto': cuda when torch sees a GPU, else cpu)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _backend_errors(values: dict[str, Any]) -> list[str]:
    """Backend / precision parameters the installation cannot serve."""
    if values["predictor"] != "da3":
        return []
    errors = []
    if values["warm_up_size"] and not _SIZE_RE.match(values["warm_up_size"]):
        errors.append(f"parameter 'warm_up_size' = {values['warm_up_size']!r}: expected the camera image size as "
                      "WIDTHxHEIGHT (e.g. 640x480), or '' to prepare on the first window")
    if values["backend"] == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            errors.append("parameter 'backend' = 'onnxruntime' but onnxruntime is not installed; `pip install "
                          "onnxruntime` (onnxruntime-gpu for CUDA / TensorRT) or use backend:=torch")
        model = values["onnx_model"]
        if model and not Path(model).expanduser().exists():
            errors.append(f"parameter 'onnx_model' = {model!r}: no such file or folder; export one with `da3 export "
                          "--onnx ...` or leave it '' to export on demand")
        if values["precision"] not in ("auto", "fp32"):
            errors.append(f"parameter 'precision' = {values['precision']!r} with backend onnxruntime: exported "
                          "graphs run in fp32; use precision:=fp32 (or auto), or backend:=torch for bf16")
    elif values["precision"] in ("bf16", "fp16") and torch_device(values["device"]) == "cpu":
        from da3_core.api import cpu_supports_bf16

        if values["precision"] == "fp16" or not cpu_supports_bf16():
            errors.append(f"parameter 'precision' = {values['precision']!r} on device cpu: "
                          + ("fp16 needs CUDA" if values["precision"] == "fp16" else
                             "this CPU has no native bf16 (AVX512-BF16 / AMX), where bf16 is slower than fp32")
                          + "; use precision:=fp32 (or auto)")
    return errors


def camera_namespaces(values: dict[str, Any]) -> list[str]:
    """The cameras' namespaces: ``['']`` for a single camera, else the ``cameras`` list."""
    return [n.strip() for n in values["cameras"].split(",")] if values["cameras"].strip() else [""]


def rig_steps(values: dict[str, Any]) -> tuple[int, int]:
    """(time steps per window, steps shared with the previous window) of a rig."""
    n = len(camera_namespaces(values))
    steps = values["window_size"] // n
    return steps, min(steps - 1, -(-values["overlap"] // n))


def _rig_errors(values: dict[str, Any]) -> list[str]:
    names = camera_namespaces(values)
    if not 2 <= len(names) <= 6:
        return [f"parameter 'cameras' = {values['cameras']!r} names {len(names)} camera(s); a rig has 2 to 6 "
                "(comma-separated namespaces such as 'cam0,cam1'); leave it '' for one camera"]
    bad = [n for n in names if not _NAME_RE.match(n)]
    if bad or len(set(names)) != len(names):
        return [f"parameter 'cameras' = {values['cameras']!r}: namespaces must be distinct relative ROS names "
                f"(letters, digits, '_', '/'){'; not valid: ' + ', '.join(map(repr, bad)) if bad else ''}"]
    if values["window_size"] and values["window_size"] < 2 * len(names):  # 0: resolved later (resolve_window)
        return [f"parameter 'window_size' = {values['window_size']} is the view budget of a window: a rig of "
                f"{len(names)} cameras needs at least {2 * len(names)} (two time steps)"]
    if values["camera_frame"]:
        return ["parameter 'camera_frame' applies to a single camera; a rig uses each image's header frame_id"]
    return []


def rig_window(values: dict[str, Any]):
    """The pipeline's window assembler: None (a plain sliding window) for one camera, a RigWindow for several."""
    names = camera_namespaces(values)
    if len(names) < 2:
        return None
    from da3_core.stream.rig import RigWindow

    steps, overlap_steps = rig_steps(values)
    return RigWindow(len(names), steps, overlap_steps, tolerance_ns=int(round(values["rig_sync_tolerance_s"] * 1e9)),
                     wait_ns=int(round(values["rig_wait_s"] * 1e9)))


def pipeline_config(values: dict[str, Any]):
    """The streaming pipeline's configuration from parameter values (live node and offline replay alike), their
    window resolved (:func:`checked_values`)."""
    from da3_core.stream.photometric import RefineConfig
    from da3_core.stream.pipeline import PipelineConfig

    v = values
    if v["window_size"] < 2 or v["overlap"] < 0 or v["pose_refine"] == "auto":
        raise ValueError(f"window_size {v['window_size']} / overlap {v['overlap']} / pose_refine {v['pose_refine']!r} "
                         "are not resolved; pass the values through checked_values (or replay.parameter_values) first")
    return PipelineConfig(window_size=v["window_size"], overlap=v["overlap"], min_interval_s=v["min_interval_s"],
                          min_motion=v["min_motion"], voxel_size=v["voxel_size"] or None,
                          map_max_points=v["map_max_points"], cloud_conf_percentile=v["cloud_conf_percentile"],
                          cloud_stride=v["cloud_stride"], map_stride=v["map_stride"],
                          max_pending_windows=v["max_pending_windows"],
                          map_origin="first_pose" if uses_tf(v) else "first_camera",
                          pose_graph=v["pose_graph"], loop_closure=v["pose_graph"] and v["loop_closure"],
                          submaps=v["submaps"], loop=loop_config(v), tsdf=v["tsdf"],
                          tsdf_every_n_frames=v["tsdf_every_n_frames"], tsdf_queue_size=v["tsdf_queue_size"],
                          tsdf_map=tsdf_config(v), pose_refine=v["pose_refine"],
                          refine=RefineConfig(max_rotation_deg=v["refine_max_rotation_deg"]),
                          depth_refine=v["depth_refine"])


def tsdf_config(values: dict[str, Any]):
    """The TSDF volume's knobs from parameter values."""
    from da3_core.stream.tsdf_map import TsdfConfig

    v = values
    return TsdfConfig(voxel_size=v["tsdf_voxel_size"], depth_max=v["tsdf_depth_max"], device=v["tsdf_device"],
                      weight_mode=v["tsdf_weight_mode"], w_max=v["tsdf_w_max"], min_obs_weight=v["tsdf_min_obs_weight"],
                      mesh_min_weight=v["tsdf_mesh_min_weight"], stride=v["tsdf_stride"],
                      max_store_mb=v["tsdf_max_store_mb"], block_count=TSDF_BLOCK_COUNT)


TSDF_BLOCK_COUNT = 2000  # initial voxel blocks (8^3 voxels each, 20 MB; the hash map grows as needed): the default
# 10,000 (100 MB) made each fusion slower here (13 against 7.6 ms median at 504x378, voxel 0.04, stride 2)


def loop_config(values: dict[str, Any]):
    """Loop-closure knobs from parameter values."""
    from da3_core.stream.loop_closure import LoopConfig

    v = values
    return LoopConfig(loop_closure=v["loop_closure"], min_similarity=v["loop_min_similarity"],
                      min_gap_windows=v["loop_min_gap_windows"], top_k=v["loop_top_k"],
                      min_inlier_ratio=v["loop_min_inlier_ratio"], max_depth_residual=v["loop_max_depth_residual"],
                      cooldown_windows=v["loop_cooldown_windows"], max_places=v["loop_max_places"],
                      robust=None if v["pose_graph_robust"] == "none" else v["pose_graph_robust"])


def uses_tf(values: dict[str, Any]) -> bool:
    """Whether the node reads /tf and /tf_static: for pose conditioning or to find the camera's parent (REP-105)."""
    return bool(values["pose_source_frame"]) or values["tf_mode"] != "map_to_camera"


YAML_HEADER = ("# reconstruct node parameters (defaults). Used by launch/reconstruct.launch.py; copy and edit for your "
               "robot.\n# Every value is checked at start-up: an invalid one stops the node with a message naming it "
               "and its range.\n")


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def parameter_yaml(node_name: str = "reconstruct") -> str:
    """``config/reconstruct.yaml``: every parameter with its default, description, choices and range (regenerate the
    file with ``python -m da3_ros.params > config/reconstruct.yaml``; a test keeps them equal)."""
    lines = [YAML_HEADER.rstrip("\n"), f"{node_name}:", "  ros__parameters:"]
    for p in PARAMS:
        note = p.description + (f" ({' | '.join(p.choices)})" if p.choices else "")
        if p.range is not None:
            note += f" [{p.range[0]:g}, {p.range[1]:g}]"
        lines += [f"    # {note}", f"    {p.name}: {_yaml_value(p.default)}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(parameter_yaml(), end="")
