"""Offline replay: every frame of a rosbag2 through the same window / inference / chaining code as the live node.

::

    python -m da3_ros.replay BAG --out DIR [--image-topic auto] [--camera-info-topic auto]
        [--weights CKPT | --predictor oracle --oracle-sequence SPEC] [--window-size 8 --overlap 2 ...]

Deterministic: frames are read in log-time order and pushed with :meth:`StreamPipeline.process` (no worker thread,
nothing dropped, no wall clock), then :meth:`~StreamPipeline.flush`. Two runs give byte-identical ``map.ply`` and
``trajectory.tum`` and equal summary numbers (timings aside) for a deterministic predictor.

Parameters and their defaults are the node's (:data:`da3_ros.params.PARAMS`, ``--window-size`` for
``window_size``); the predictor is built by :func:`da3_ros.predictors.make_predictor`. Images (``Image`` or
``CompressedImage``) are paired with the nearest CameraInfo within ``camera_info_tolerance_s`` (the node's rule,
over all CameraInfo messages of the bag) and converted by :mod:`da3_ros.conversions`, which reads the ``rosbags``
message objects directly. No rclpy is needed.

Outputs in ``--out``:
- ``replay/`` (rosbag2, mcap): ``/da3/depth`` (32FC1, NaN invalid), ``/da3/pose``, ``/tf`` (map -> camera optical
  frame), ``/da3/window_cloud`` (PointCloud2), ``/da3/path``, ``/da3/map_cloud`` (once, at the end); log time =
  the source frame's stamp;
- ``map.ply``, ``trajectory.tum``, ``depth/`` and, with ``tsdf`` (the default), ``map_mesh.ply`` (the TSDF mesh of
  the keyframes, fused right away in replay; :meth:`StreamPipeline.save_outputs`). The mesh's surface is
  deterministic, its vertex order is not (Open3D's marching cubes);
- ``previews/<stamp_ns>.png`` colourised depth; ``map.png`` the map and camera path (and aligned ground truth);
- ``summary.json``: frames, windows, chain methods, per-stage timings (decode, predict, chain, cloud, map, write:
  total and mean), map points, is_metric and, when the bag has ground truth (depth image topic, PoseStamped
  ``*pose_gt*``, or ``/tf`` ``world_gt`` -> ``camera_gt``), accuracy: depth AbsRel / delta1 (median alignment for
  relative models, none for metric), trajectory ATE (Sim(3), SE(3) for metric) and map F1 at ``--f1-threshold``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.geometry.rotations import quat_xyzw_to_rotation
from da3_ros import bags
from da3_ros.params import pipeline_config

__all__ = ["run_replay", "pipeline_config", "parameter_values", "nearest_within", "map_f1", "within_distance",
           "ground_truth_accuracy", "depth_accuracy", "trajectory_accuracy", "gt_cloud", "eval_stride", "main"]

STAGES = ("decode", "predict", "chain", "cloud", "map", "write")
TIMING_KEYS = ("timings",)  # summary fields that differ between runs
MAX_EVAL_PIXELS = 40_000  # per frame, for depth metrics and the ground-truth cloud
MAX_F1_POINTS = 400_000
# node-only parameters (QoS, publish rates) that do not apply to offline replay
_NODE_ONLY = {"input_qos", "input_queue_depth", "map_publish_rate_hz", "diagnostics_rate_hz", "use_compressed"}


def parameter_values(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node's parameter defaults with ``overrides``, the window resolved as the node resolves it (the weights'
    recommendation for window_size 0 / overlap -1); raises ValueError listing every problem."""
    from da3_ros.params import PARAMS, checked_values

    values = {p.name: p.default for p in PARAMS}
    unknown = set(overrides or {}) - set(values)
    if unknown:
        raise ValueError(f"unknown parameters: {', '.join(sorted(unknown))}")
    values.update(overrides or {})
    values, errors = checked_values(values)
    if errors:
        raise ValueError("; ".join(errors))
    return values


def nearest_within(stamps: np.ndarray, stamp_ns: int, tolerance_ns: float) -> int | None:
    """Index of the stamp nearest ``stamp_ns`` (ties: the earlier) if within the tolerance, else None."""
    if len(stamps) == 0:
        return None
    i = int(np.searchsorted(stamps, stamp_ns))
    cands = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    j = min(cands, key=lambda k: (abs(int(stamps[k]) - stamp_ns), k))
    return j if abs(int(stamps[j]) - stamp_ns) <= tolerance_ns else None


def _pose_to_c2w(position, orientation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_rotation(np.array([orientation.x, orientation.y, orientation.z, orientation.w]))
    T[:3, 3] = (position.x, position.y, position.z)
    return T


def _gt_depth_array(msg) -> np.ndarray | None:
    """Ground-truth depth in metres: 32FC1 (metres) or 16UC1 (millimetres, 0 = invalid); None otherwise."""
    from da3_ros.conversions import image_msg_to_array

    if msg.encoding == "32FC1":
        return image_msg_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        raw = np.asarray(msg.data, dtype=np.uint8).reshape(h, step)[:, : 2 * w]
        mm = np.ascontiguousarray(raw).view(dt).astype(np.float32)
        mm[mm == 0] = np.nan
        return mm / 1000.0
    return None


def eval_stride(hw: tuple[int, int], max_pixels: int = MAX_EVAL_PIXELS) -> int:
    return max(1, int(np.ceil(np.sqrt(hw[0] * hw[1] / max_pixels))))


def within_distance(query: np.ndarray, ref: np.ndarray, threshold: float, chunk: int = 20_000) -> np.ndarray:
    """(N,) bool: does ``query[i]`` have a ``ref`` point within ``threshold`` (exact: a grid of cell size
    ``threshold``, candidates from the 27 neighbouring cells)."""
    query, ref = np.asarray(query, np.float64).reshape(-1, 3), np.asarray(ref, np.float64).reshape(-1, 3)
    out = np.zeros(len(query), bool)
    if len(query) == 0 or len(ref) == 0:
        return out
    tau = float(threshold)
    qc, rc = np.floor(query / tau).astype(np.int64), np.floor(ref / tau).astype(np.int64)
    lo = np.minimum(qc.min(0), rc.min(0)) - 1
    dims = np.maximum(qc.max(0), rc.max(0)) - lo + 2

    def key(c: np.ndarray) -> np.ndarray:
        c = c - lo
        return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]

    order = np.argsort(key(rc), kind="stable")
    keys, refs = key(rc)[order], ref[order]
    offsets = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    for a in range(0, len(query), chunk):
        q, c, hit = query[a:a + chunk], qc[a:a + chunk], out[a:a + chunk]
        for off in offsets:
            todo = np.nonzero(~hit)[0]
            if not len(todo):
                break
            k = key(c[todo] + off)
            start = np.searchsorted(keys, k, "left")
            n = np.searchsorted(keys, k, "right") - start
            sel = n > 0
            todo, start, n = todo[sel], start[sel], n[sel]
            if not len(todo):
                continue
            qi = np.repeat(todo, n)
            ri = np.repeat(start - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
            close = np.sum((q[qi] - refs[ri]) ** 2, axis=1) <= tau * tau
            hit[qi[close]] = True
    return out


def map_f1(pred: np.ndarray, gt: np.ndarray, threshold: float, max_points: int = MAX_F1_POINTS, seed: int = 0
           ) -> dict[str, float]:
    """Precision (accuracy: predicted points within ``threshold`` of the ground truth), recall (completeness: ground
    truth points within ``threshold`` of the prediction) and F1; both clouds subsampled to ``max_points``
    (seeded)."""
    rng = np.random.default_rng(seed)

    def sub(P: np.ndarray) -> np.ndarray:
        P = np.asarray(P, dtype=np.float64)
        P = P[np.all(np.isfinite(P), axis=1)]
        return P[np.sort(rng.choice(len(P), max_points, replace=False))] if len(P) > max_points else P

    p, g = sub(pred), sub(gt)
    if len(p) == 0 or len(g) == 0:
        return {"threshold": threshold, "precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    prec = float(np.mean(within_distance(p, g, threshold)))
    rec = float(np.mean(within_distance(g, p, threshold)))
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"threshold": threshold, "precision": prec, "recall": rec, "f1": f1}


class _Timer:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: Counter[str] = Counter()

    def add(self, stage: str, seconds: float, n: int = 1) -> None:
        self.total[stage] += float(seconds)
        self.count[stage] += n

    def summary(self) -> dict[str, dict[str, float]]:
        return {s: {"total_s": self.total.get(s, 0.0), "count": int(self.count.get(s, 0)),
                    "mean_s": self.total.get(s, 0.0) / self.count[s] if self.count.get(s) else 0.0}
                for s in STAGES}


def _resolve_topics(info: bags.BagInfo, image_topic: str, camera_info_topic: str, use_camera_info: bool
                    ) -> tuple[str, str | None]:
    if image_topic == "auto":
        image_topic = bags.find_image_topic(info)
    elif image_topic not in info.topics:
        raise ValueError(f"topic {image_topic} not in the bag; topics: {', '.join(info.topics)}")
    if info.topics[image_topic].msgtype not in (bags.IMAGE, bags.COMPRESSED):
        raise ValueError(f"{image_topic} is a {info.topics[image_topic].msgtype}, not an Image / CompressedImage")
    if not use_camera_info or camera_info_topic in ("", "none"):
        return image_topic, None
    if camera_info_topic == "auto":
        return image_topic, bags.find_camera_info_topic(info, image_topic)
    if camera_info_topic not in info.topics:
        raise ValueError(f"topic {camera_info_topic} not in the bag; topics: {', '.join(info.topics)}")
    return image_topic, camera_info_topic


def run_replay(bag: str | Path, out: str | Path, values: dict[str, Any] | None = None, image_topic: str = "auto",
               camera_info_topic: str = "auto", ground_truth: bool = True, f1_threshold: float = 0.05,
               write_bag: bool = True, previews: bool = True, render: bool = True, log=print) -> dict[str, Any]:
    """Process every image of ``bag`` and write the outputs (module docstring) into ``out``; returns the summary.
    ``values``: node parameters (see :func:`parameter_values`, overrides of the defaults)."""
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from da3_core.export.depth_vis import save_depth_png
    from da3_core.stream.chaining import unproject_pixels
    from da3_core.stream.frame import Frame, FrameError
    from da3_core.stream.pipeline import StreamPipeline
    from da3_ros.conversions import (
        c2w_to_pose_stamped,
        c2w_to_transform,
        camera_info_to_K,
        compressed_to_rgb,
        depth_to_image_msg,
        image_to_rgb,
        make_path,
        ns_to_stamp,
        stamp_to_ns,
    )
    from da3_ros.pointcloud import points_to_pointcloud2
    from da3_ros.predictors import make_predictor

    v = parameter_values(values)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = bags.bag_info(bag)
    image_topic, info_topic = _resolve_topics(info, image_topic, camera_info_topic, v["use_camera_info"])
    compressed = info.topics[image_topic].msgtype == bags.COMPRESSED
    convert = compressed_to_rgb if compressed else image_to_rgb
    gt_topics = bags.find_gt_topics(info) if ground_truth else {}
    log(f"replay {info.path}: images {image_topic} ({info.topics[image_topic].count}), camera info "
        f"{info_topic or 'none'}, ground truth {', '.join(f'{k} {t}' for k, t in gt_topics.items()) or 'none'}")

    predictor, pred_desc, variant = make_predictor(v)
    log(f"predictor: {pred_desc}")
    pipeline = StreamPipeline(predictor, pipeline_config(v))
    timer = _Timer()
    tol_ns = v["camera_info_tolerance_s"] * 1e9

    # CameraInfo and ground-truth poses first (small): pairing by nearest stamp over the whole bag
    infos: list[tuple[int, Any]] = []
    gt_pose: dict[int, np.ndarray] = {}
    pre_topics = [t for t in (info_topic, gt_topics.get("pose"), gt_topics.get("tf")) if t]
    for topic, _, msg in (bags.read_messages(bag, pre_topics) if pre_topics else ()):
        if topic == info_topic:
            infos.append((stamp_to_ns(msg.header.stamp), msg))
        elif topic == gt_topics.get("pose"):
            gt_pose[stamp_to_ns(msg.header.stamp)] = _pose_to_c2w(msg.pose.position, msg.pose.orientation)
        elif "pose" not in gt_topics:
            for tf in msg.transforms:
                if tf.child_frame_id == bags.GT_CAMERA_FRAME:
                    tr = tf.transform
                    gt_pose[stamp_to_ns(tf.header.stamp)] = _pose_to_c2w(tr.translation, tr.rotation)
    infos.sort(key=lambda x: x[0])
    info_stamps = np.array([s for s, _ in infos], dtype=np.int64)

    counts: Counter[str] = Counter()
    frame_K: dict[int, np.ndarray] = {}
    # stamp -> (full (H, W), stride, subsampled depth): prediction in map units (NaN invalid / sky), GT in metres
    pred_depth: dict[int, tuple] = {}
    gt_depth: dict[int, tuple] = {}
    writer = bags.BagWriter(out / "replay.mcap", overwrite=True) if write_bag else None
    map_frame = v["map_frame"]
    windows: list[dict[str, Any]] = []
    is_metric = False

    def handle(res) -> None:
        nonlocal is_metric
        if res is None:
            return
        is_metric = bool(res.is_metric)
        t = res.timings
        timer.add("predict", t.get("predict_s", 0.0))
        timer.add("chain", t.get("chain_s", 0.0))
        timer.add("cloud", t.get("cloud_s", 0.0))
        timer.add("map", t.get("map_s", 0.0))
        windows.append({"index": res.window_index, "frames": len(res.frames), "new": len(res.new_frames),
                        "method": res.method, "chained": bool(res.chained), "scale": float(res.scale),
                        "residual_rel": float(res.residual_rel), "points": int(len(res.points))})
        t0 = time.perf_counter()
        new = res.new_frames
        transforms = []
        for cf in new:
            d = np.array(cf.depth, dtype=np.float32)
            if cf.sky is not None:
                d[cf.sky] = np.nan
            st = eval_stride(d.shape)
            pred_depth[cf.stamp_ns] = (d.shape, st, d[::st, ::st])
            frame_K[cf.stamp_ns] = cf.K
            if previews:
                save_depth_png(out / "previews" / f"{cf.stamp_ns}.png", cf.depth,
                               None if cf.sky is None else ~cf.sky)
            if writer is not None:
                header = Header(stamp=ns_to_stamp(cf.stamp_ns), frame_id=cf.frame_id)
                map_header = Header(stamp=header.stamp, frame_id=map_frame)
                writer.write("/da3/depth", cf.stamp_ns, depth_to_image_msg(cf.depth, header, invalid=cf.sky))
                writer.write("/da3/pose", cf.stamp_ns, c2w_to_pose_stamped(cf.c2w, map_header))
                transforms.append(c2w_to_transform(cf.c2w, map_header, cf.frame_id))
        if writer is not None and new:
            last = new[-1].stamp_ns
            if v["publish_tf"]:
                writer.write("/tf", last, TFMessage(transforms=transforms))
            header = Header(stamp=ns_to_stamp(last), frame_id=map_frame)
            if len(res.points):
                writer.write("/da3/window_cloud", last, points_to_pointcloud2(res.points, res.colors, header))
            stamps, poses = pipeline.trajectory()
            writer.write("/da3/path", last, make_path(stamps, poses, map_frame))
        timer.add("write", time.perf_counter() - t0)

    read_topics = [image_topic] + ([gt_topics["depth"]] if "depth" in gt_topics else [])
    t_wall = time.perf_counter()
    try:
        for topic, _, msg in bags.read_messages(bag, read_topics):
            if topic != image_topic:
                d = _gt_depth_array(msg)
                if d is None:
                    counts["gt_depth_unsupported_encoding"] += 1
                else:
                    st = eval_stride(d.shape)
                    gt_depth[stamp_to_ns(msg.header.stamp)] = (d.shape, st, d[::st, ::st])
                continue
            t0 = time.perf_counter()
            try:
                rgb = convert(msg, v["max_image_side"])
                stamp = stamp_to_ns(msg.header.stamp)
                K = None
                if infos:
                    j = nearest_within(info_stamps, stamp, tol_ns)
                    if j is None:
                        counts["camera_info_unpaired"] += 1
                    else:
                        try:
                            K = camera_info_to_K(infos[j][1], rgb.shape[:2])
                        except FrameError as exc:
                            counts[f"rejected_camera_info_{exc.reason}"] += 1
                elif info_topic is not None:
                    counts["no_camera_info"] += 1
                frame = Frame(stamp_ns=stamp, rgb=rgb, K=K,
                              frame_id=v["camera_frame"] or msg.header.frame_id or bags.CAMERA_FRAME)
            except FrameError as exc:
                counts[f"rejected_{exc.reason}"] += 1
                log(f"skipped a message ({exc})")
                continue
            finally:
                timer.add("decode", time.perf_counter() - t0)
            try:
                res = pipeline.process(frame)
            except FrameError as exc:
                counts[f"rejected_{exc.reason}"] += 1
                log(f"skipped frame {frame.stamp_ns} ({exc})")
                continue
            counts["frames"] += 1
            handle(res)
        handle(pipeline.flush())
        t0 = time.perf_counter()
        pts, cols = pipeline.map_snapshot()
        stamps, poses = pipeline.trajectory()
        if writer is not None and len(pts) and len(stamps):
            header = Header(stamp=ns_to_stamp(int(stamps[-1])), frame_id=map_frame)
            writer.write("/da3/map_cloud", int(stamps[-1]), points_to_pointcloud2(pts, cols, header))
    finally:
        if writer is not None:
            writer.close()
    paths = pipeline.save_outputs(out)
    timer.add("write", time.perf_counter() - t0)

    accuracy, gt_aligned = ground_truth_accuracy(stamps, poses, pts, pred_depth, gt_depth, gt_pose, frame_K,
                                                 is_metric, tol_ns, f1_threshold, unproject_pixels) \
        if ground_truth else ({}, None)
    if render:
        from da3_core.export.map_render import save_map_png

        t0 = time.perf_counter()
        save_map_png(out / "map.png", pts, cols, path_c2w=poses, gt_c2w=gt_aligned,
                     title=f"{Path(info.path).name}: {len(stamps)} frames")
        timer.add("write", time.perf_counter() - t0)

    stats = pipeline.stats()
    summary = {
        "bag": str(info.path),
        "image_topic": image_topic,
        "camera_info_topic": info_topic,
        "predictor": pred_desc,
        "variant": variant,
        "frames_in_bag": info.topics[image_topic].count,
        "frames": int(counts["frames"]),
        "frames_in_trajectory": int(len(stamps)),
        "windows": len(windows),
        "chain_methods": dict(sorted(Counter(w["method"] for w in windows).items())),
        "windows_chained": int(sum(w["chained"] for w in windows)),
        "map_points": int(len(pts)),
        "is_metric": bool(is_metric),
        "counts": dict(sorted(counts.items())),
        "pipeline": {k: float(x) for k, x in sorted(stats.items())},
        "parameters": {k: val for k, val in v.items() if k not in _NODE_ONLY},
        "window_results": windows,
        "accuracy": accuracy,
        "outputs": {k: str(p) for k, p in paths.items()},
        "timings": {**timer.summary(), "wall_s": time.perf_counter() - t_wall},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False, default=_json_default) + "\n")
    log(format_timings(summary))
    return summary


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def depth_accuracy(pred: list[np.ndarray], gt: list[np.ndarray], is_metric: bool) -> dict[str, Any]:
    """AbsRel / delta1 of predicted against true depth over all given frames (each a flat or 2-D array, equal
    shapes pairwise): median alignment for relative predictions, none for metric ones."""
    from da3_core.eval.depth_metrics import depth_scores

    mode = "none" if is_metric else "median"
    sc = depth_scores(np.concatenate([p.reshape(-1) for p in pred]), np.concatenate([g.reshape(-1) for g in gt]),
                      mode=mode)
    return {"abs_rel": sc.abs_rel, "delta1": sc.delta1, "alignment": mode, "scale": sc.scale, "frames": len(pred),
            "pixels": sc.num_pixels}


def trajectory_accuracy(pred_c2w: np.ndarray, gt_c2w: np.ndarray, is_metric: bool
                        ) -> tuple[dict[str, Any], tuple[float, np.ndarray, np.ndarray], np.ndarray]:
    """ATE after Sim(3) (SE(3) when metric) alignment of predicted onto true camera-to-world poses (N, 4, 4); returns
    (scores, (s, R, t) mapping predicted map points into the true world: ``X -> s R X + t``, the true path moved into
    the map frame for drawing)."""
    from da3_core.eval.pose_metrics import absolute_trajectory_error

    ate = absolute_trajectory_error(np.linalg.inv(pred_c2w), np.linalg.inv(gt_c2w), with_scale=not is_metric)
    s, R, t = ate.scale, ate.rotation, ate.translation  # the alignment the ATE was measured after
    extent = float(np.linalg.norm(gt_c2w[:, :3, 3].max(0) - gt_c2w[:, :3, 3].min(0)))
    scores = {"ate_rmse": ate.ate_rmse, "ate_rel_extent": ate.ate_rmse / max(extent, 1e-12), "scale": ate.scale,
              "poses": ate.num_poses, "alignment": "se3" if is_metric else "sim3"}
    sd = s if s > 0 else 1.0  # a predicted path collapsed to one spot (s = 0): draw the truth at its own size
    inv = np.eye(4)
    inv[:3, :3] = R.T / sd
    inv[:3, 3] = -R.T @ t / sd
    gt_aligned = np.einsum("ij,njk->nik", inv, gt_c2w)
    gt_aligned[:, :3, :3] *= sd  # keep rotations orthonormal for drawing
    return scores, (s, R, t), gt_aligned


def ground_truth_accuracy(stamps, poses, map_pts, pred_depth, gt_depth, gt_pose, frame_K, is_metric, tol_ns,
                          f1_threshold, unproject_pixels) -> tuple[dict[str, Any], np.ndarray | None]:
    """Depth (AbsRel / delta1), trajectory (ATE after Sim(3), SE(3) when metric) and map F1 against ground truth,
    plus the ground-truth path moved into the map frame for drawing. ``pred_depth`` / ``gt_depth``: stamp ->
    (full (H, W), stride, depth subsampled by stride); ``gt_pose``: stamp -> c2w; ``frame_K``: stamp -> K."""
    acc: dict[str, Any] = {}
    # depth
    if gt_depth:
        gs = np.array(sorted(gt_depth), dtype=np.int64)
        P, G, skipped = [], [], 0
        for s, (d_shape, _, d) in sorted(pred_depth.items()):
            j = nearest_within(gs, s, tol_ns)
            if j is None:
                continue
            shape, _, g = gt_depth[int(gs[j])]
            if shape != d_shape:
                skipped += 1
                continue
            P.append(d)
            G.append(g)
        if P:
            acc["depth"] = depth_accuracy(P, G, is_metric)
        if skipped:
            acc["depth_skipped_size_mismatch"] = skipped
    # trajectory
    gt_aligned = None
    if gt_pose and len(stamps) >= 3:
        gs = np.array(sorted(gt_pose), dtype=np.int64)
        pairs = [(i, int(gs[j])) for i, s in enumerate(stamps) if (j := nearest_within(gs, int(s), tol_ns)) is not None]
        if len(pairs) >= 3:
            pred_c2w = poses[[i for i, _ in pairs]]
            gt_c2w = np.stack([gt_pose[s] for _, s in pairs])
            try:
                acc["trajectory"], (s, R, t), gt_aligned = trajectory_accuracy(pred_c2w, gt_c2w, is_metric)
                # map F1 in ground-truth units
                if gt_depth and frame_K:
                    gds = np.array(sorted(gt_depth), dtype=np.int64)
                    cloud = []
                    for i, sg in pairs:
                        ps = int(stamps[i])
                        j = nearest_within(gds, sg, tol_ns)
                        K = frame_K.get(ps)
                        if j is None or K is None or ps not in pred_depth:
                            continue
                        shape, st, g = gt_depth[int(gds[j])]
                        if shape != pred_depth[ps][0]:  # K belongs to the colour image
                            continue
                        cloud.append(gt_cloud(g, K, st, gt_pose[sg], unproject_pixels))
                    if cloud:
                        pred_world = s * np.asarray(map_pts, np.float64) @ R.T + t
                        acc["map"] = map_f1(pred_world, np.concatenate(cloud), f1_threshold)
            except (np.linalg.LinAlgError, ValueError) as exc:
                acc["trajectory_error"] = str(exc)
    return acc, gt_aligned


def gt_cloud(depth_sub: np.ndarray, K: np.ndarray, stride: int, c2w: np.ndarray, unproject_pixels) -> np.ndarray:
    """World points (N, 3) of a true depth map subsampled by ``stride`` (pixel (r, c) of it is full-resolution pixel
    (r stride, c stride)); K of the full-resolution image."""
    r, c = np.nonzero(np.isfinite(depth_sub) & (depth_sub > 0))
    Kd = np.asarray(K, dtype=np.float64).copy()
    Kd[:2] /= stride
    return unproject_pixels(depth_sub, Kd, c2w, r, c)


def format_timings(summary: dict[str, Any]) -> str:
    t = summary["timings"]
    lines = [f"processed {summary['frames']} frames in {summary['windows']} windows "
             f"(chain {summary['chain_methods']}), map {summary['map_points']} points, "
             f"is_metric={summary['is_metric']}; wall {t['wall_s']:.2f} s",
             f"{'stage':8s} {'total s':>9s} {'count':>6s} {'mean ms':>9s}"]
    for s in STAGES:
        lines.append(f"{s:8s} {t[s]['total_s']:9.3f} {t[s]['count']:6d} {1e3 * t[s]['mean_s']:9.2f}")
    acc = summary.get("accuracy") or {}
    if "depth" in acc:
        lines.append(f"depth AbsRel {acc['depth']['abs_rel']:.4f} delta1 {acc['depth']['delta1']:.4f} "
                     f"({acc['depth']['alignment']} alignment)")
    if "trajectory" in acc:
        lines.append(f"trajectory ATE {acc['trajectory']['ate_rmse']:.4f} ({acc['trajectory']['alignment']})")
    if "map" in acc:
        m = acc["map"]
        lines.append(f"map F1@{m['threshold']:g} {m['f1']:.3f} (precision {m['precision']:.3f}, "
                     f"recall {m['recall']:.3f})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from da3_ros.params import PARAMS

    ap = argparse.ArgumentParser(prog="da3_replay", description="Offline, deterministic replay of a rosbag2 "
                                 "through the da3-ros reconstruction pipeline.")
    ap.add_argument("bag", help="rosbag2 directory (mcap or sqlite3) or its .mcap / .db3 file")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--image-topic", default="auto", help="Image or CompressedImage topic (auto: the colour one)")
    ap.add_argument("--camera-info-topic", default="auto", help="CameraInfo topic (auto; 'none' to ignore)")
    ap.add_argument("--no-ground-truth", action="store_true", help="skip accuracy even if the bag has GT")
    ap.add_argument("--f1-threshold", type=float, default=0.05, help="map F1 distance threshold (GT units)")
    ap.add_argument("--no-output-bag", action="store_true")
    ap.add_argument("--no-previews", action="store_true")
    ap.add_argument("--no-render", action="store_true")
    g = ap.add_argument_group("node parameters (same names and defaults as the reconstruct node)")
    for p in PARAMS:
        if p.name in _NODE_ONLY:
            continue
        flag = "--" + p.name.replace("_", "-")
        helptext = f"{p.description} (default {p.default!r})".replace("%", "%%")  # argparse formats help with %
        if isinstance(p.default, bool):
            g.add_argument(flag, dest=p.name, action=argparse.BooleanOptionalAction, default=p.default,
                           help=helptext)
        else:
            g.add_argument(flag, dest=p.name, type=type(p.default), default=p.default, help=helptext,
                           choices=p.choices)
    return ap


def main(argv: list[str] | None = None) -> int:
    from da3_ros.params import PARAMS

    a = build_parser().parse_args(argv)
    values = {p.name: getattr(a, p.name) for p in PARAMS if p.name not in _NODE_ONLY}
    try:
        run_replay(a.bag, a.out, values, image_topic=a.image_topic, camera_info_topic=a.camera_info_topic,
                   ground_truth=not a.no_ground_truth, f1_threshold=a.f1_threshold,
                   write_bag=not a.no_output_bag, previews=not a.no_previews, render=not a.no_render)
    except (ValueError, FileNotFoundError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
