"""Model x dataset evaluation: per-scene and aggregate depth, pose and reconstruction metrics.

For each scene the model predicts all its frames in one call (pose-free: no poses given; ground-truth intrinsics
only with ``with_intrinsics``), outputs at the input resolution. Then:

- depth (frames with ground-truth depth): AbsRel and delta1 over all views of the scene with one shared alignment:
  ``auto`` = ``none`` for metric predictions, else ``median``; or forced ``median`` / ``scale_shift`` / ``none``
  (:mod:`da3_core.eval.depth_metrics`);
- pose (ground-truth poses, >= 2 views): relative rotation / translation errors of all pairs, RRA / RTA at
  3/5/15/30 degrees, AUC@3 / AUC@30 (:mod:`da3_core.eval.pose_metrics`), plus the ATE after the trajectory alignment;
- reconstruction (ground-truth depth, poses and intrinsics): the predicted poses are aligned onto the ground truth
  (Umeyama Sim(3) on camera centres, SE(3) for metric predictions, RANSAC for >= 10 views unless told otherwise;
  first-frame alignment when the centres are degenerate), the predicted depth is back-projected with the predicted
  intrinsics and aligned poses at the pixels where ground-truth depth is valid, the ground-truth cloud likewise;
  both are voxel-downsampled (threshold / 2) and capped at ``max_points``; then accuracy, completeness, Chamfer and
  precision / recall / F1 at ``f1_threshold`` (:mod:`da3_core.eval.pointcloud_metrics`). With ``tsdf`` both clouds
  are instead the surfaces of TSDF volumes fused from the (aligned) depth maps (:mod:`da3_core.eval.tsdf`).

Aggregates are the means over scenes of each per-scene metric (scenes without that metric are skipped), plus
``pose_pooled``: the pair metrics over the pairs of all scenes together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from da3_core.eval.datasets import EvalScene
from da3_core.eval.depth_metrics import depth_scores, valid_depth_mask
from da3_core.eval.pointcloud_metrics import cloud_scores, subsample, voxel_downsample
from da3_core.eval.pose_metrics import absolute_trajectory_error, align_trajectory, pose_scores
from da3_core.geometry.sim3 import apply_sim3_to_points

__all__ = ["EvalConfig", "SceneResult", "evaluate_scene", "run_evaluation", "aggregate"]


@dataclass
class EvalConfig:
    depth_align: str = "auto"  # auto | median | scale_shift | none
    pose_align: str = "auto"  # auto (se3 for metric predictions, else sim3) | sim3 | se3
    ransac: bool | None = None  # None: RANSAC for >= 10 views (official rule)
    f1_threshold: float = 0.05  # metres (ground-truth units)
    tsdf: bool = False
    tsdf_voxel: float | None = None  # default f1_threshold / 2.5
    max_points: int = 50_000
    process_res: int = 504
    with_intrinsics: bool = False
    ref_view: str = "saddle_balanced"
    use_ray_pose: bool = False
    seed: int = 0
    map_views: int = 3  # views per scene whose depth / error maps are kept for the report
    map_width: int = 256


@dataclass
class SceneResult:
    name: str
    dataset: str
    frames: int
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # for the report (not serialised): pair errors, depth maps
    pair_max_err: np.ndarray | None = None
    depth_maps: list[dict[str, np.ndarray]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, "frames": self.frames, "metrics": self.metrics,
                "notes": self.notes}


def _unproject(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """World points of the ``mask`` pixels of one view (integer-pixel convention)."""
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    cam = np.stack([x, y, z], 1)
    R, t = w2c[:3, :3], w2c[:3, 3]
    return (cam - t) @ R


def _small(a: np.ndarray, width: int) -> np.ndarray:
    step = max(1, int(np.ceil(a.shape[1] / width)))
    return np.ascontiguousarray(a[::step, ::step]).astype(np.float32)


def evaluate_scene(model, scene: EvalScene, cfg: EvalConfig) -> SceneResult:
    res = SceneResult(scene.name, scene.dataset, len(scene), {})
    images = [f.rgb for f in scene.frames]
    K_in = np.stack([f.K for f in scene.frames]) if cfg.with_intrinsics and scene.has_intrinsics else None
    t0 = time.perf_counter()
    pred = model.predict(images, intrinsics=K_in, process_res=cfg.process_res, ref_view=cfg.ref_view,
                         use_ray_pose=cfg.use_ray_pose, output="input", seed=cfg.seed)
    res.metrics["inference_s"] = time.perf_counter() - t0
    res.metrics["is_metric"] = bool(pred.is_metric)
    n = len(scene)

    # depth
    if scene.has_depth:
        gt = np.stack([f.depth for f in scene.frames]).astype(np.float64)
        pd = np.asarray(pred.depth, np.float64)
        if pd.shape != gt.shape:
            res.notes.append(f"depth skipped: prediction {pd.shape} vs ground truth {gt.shape}")
        else:
            mode = cfg.depth_align if cfg.depth_align != "auto" else ("none" if pred.is_metric else "median")
            sc = depth_scores(pd, gt, mode)
            res.metrics["depth"] = {"abs_rel": sc.abs_rel, "delta1": sc.delta1, "alignment": mode, "scale": sc.scale,
                                    "shift": sc.shift, "pixels": sc.num_pixels}
            for i in np.linspace(0, n - 1, min(cfg.map_views, n)).round().astype(int):
                aligned = sc.scale * pd[i] + sc.shift
                m = valid_depth_mask(gt[i], pd[i])
                err = np.full(gt[i].shape, np.nan)
                err[m] = np.abs(aligned[m] - gt[i][m]) / gt[i][m]
                res.depth_maps.append({"view": int(i), "gt": _small(gt[i], cfg.map_width),
                                       "pred": _small(aligned, cfg.map_width), "abs_rel": _small(err, cfg.map_width)})
    else:
        res.notes.append("no ground-truth depth: depth metrics skipped")

    # poses
    have_pred_poses = pred.extrinsics is not None
    if scene.has_poses and have_pred_poses and n >= 2:
        gt_w2c = np.stack([f.w2c for f in scene.frames])
        ps, pe = pose_scores(pred.extrinsics, gt_w2c)
        res.metrics["pose"] = ps
        res.pair_max_err = pe.max_deg
        if n >= 3:
            try:
                ate = absolute_trajectory_error(pred.extrinsics, gt_w2c, with_scale=not pred.is_metric)
                ps["ate_rmse"] = ate.ate_rmse
            except ValueError as exc:
                res.notes.append(f"ATE skipped: {exc}")
    elif not scene.has_poses:
        res.notes.append("no ground-truth poses: pose and reconstruction metrics skipped")
    elif not have_pred_poses:
        res.notes.append("the model predicts no poses: pose and reconstruction metrics skipped")

    # reconstruction
    if (scene.has_poses and scene.has_depth and scene.has_intrinsics and have_pred_poses
            and pred.intrinsics is not None and "depth" in res.metrics):
        try:
            res.metrics["reconstruction"] = _reconstruction(scene, pred, cfg)
        except Exception as exc:  # noqa: BLE001 - a failed reconstruction must not lose the other metrics
            res.notes.append(f"reconstruction failed: {type(exc).__name__}: {exc}")
    return res


def _reconstruction(scene: EvalScene, pred, cfg: EvalConfig) -> dict[str, Any]:
    gt_w2c = np.stack([f.w2c for f in scene.frames])
    mode = cfg.pose_align if cfg.pose_align != "auto" else ("se3" if pred.is_metric else "sim3")
    s, R, t, aligned_w2c, method = align_trajectory(pred.extrinsics, gt_w2c, mode, cfg.ransac)
    out: dict[str, Any] = {"alignment": mode, "method": method, "scale": s, "threshold": cfg.f1_threshold}
    masks = [np.isfinite(f.depth) & (f.depth > 0) & np.isfinite(pred.depth[i]) & (pred.depth[i] > 0)
             for i, f in enumerate(scene.frames)]
    if cfg.tsdf:
        from da3_core.eval.tsdf import tsdf_fuse

        voxel = cfg.tsdf_voxel or cfg.f1_threshold / 2.5
        pdepth = [np.where(m, s * pred.depth[i], np.nan) for i, m in enumerate(masks)]
        gdepth = [np.where(m, f.depth, np.nan) for m, f in zip(masks, scene.frames)]
        P = tsdf_fuse(pdepth, pred.intrinsics, aligned_w2c, voxel)
        G = tsdf_fuse(gdepth, [f.K for f in scene.frames], gt_w2c, voxel)
        out.update(fusion="tsdf", tsdf_voxel=voxel)
    else:
        P = np.concatenate([_unproject(pred.depth[i], pred.intrinsics[i], pred.extrinsics[i], m)
                            for i, m in enumerate(masks)])
        P = apply_sim3_to_points(P, s, R, t)
        G = np.concatenate([_unproject(f.depth, f.K, f.w2c, m) for f, m in zip(scene.frames, masks)])
        P, G = voxel_downsample(P, cfg.f1_threshold / 2), voxel_downsample(G, cfg.f1_threshold / 2)
        out.update(fusion="points", voxel=cfg.f1_threshold / 2)
    P, G = subsample(P, cfg.max_points, cfg.seed), subsample(G, cfg.max_points, cfg.seed)
    out.update(cloud_scores(P, G, cfg.f1_threshold).to_dict())
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


SKIP_MEAN = {"depth.scale", "depth.shift", "depth.pixels", "reconstruction.scale", "reconstruction.threshold",
             "reconstruction.voxel", "reconstruction.tsdf_voxel", "pose.pairs", "reconstruction.num_pred",
             "reconstruction.num_gt"}


def aggregate(results: Sequence[SceneResult]) -> dict[str, Any]:
    """Means over scenes of every numeric per-scene metric (finite values only) and pooled pair metrics."""
    flat = [_flatten(r.metrics) for r in results]
    keys = sorted({k for f in flat for k in f} - SKIP_MEAN)
    mean = {}
    for k in keys:
        vals = [f[k] for f in flat if k in f and np.isfinite(f[k])]
        if vals:
            mean[k] = {"mean": float(np.mean(vals)), "scenes": len(vals)}
    out: dict[str, Any] = {"scenes": len(results), "frames": int(sum(r.frames for r in results)), "mean": mean}
    errs = [r.pair_max_err for r in results if r.pair_max_err is not None and len(r.pair_max_err)]
    if errs:
        from da3_core.eval.pose_metrics import accuracy_at, pose_auc

        e = np.concatenate(errs)
        out["pose_pooled"] = {"pairs": int(len(e)), "auc@3": pose_auc(e, 3), "auc@30": pose_auc(e, 30),
                              "acc@3": accuracy_at(e, 3), "acc@30": accuracy_at(e, 30)}
    return out


def run_evaluation(model, scenes: Sequence[EvalScene], cfg: EvalConfig | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[SceneResult]]:
    """(JSON-able result dict, per-scene results with report artefacts)."""
    cfg = cfg or EvalConfig()
    results = []
    for k, scene in enumerate(scenes):
        if log:
            log(f"[{k + 1}/{len(scenes)}] {scene.dataset}:{scene.name} ({len(scene)} frames)")
        results.append(evaluate_scene(model, scene, cfg))
    summary = {"config": asdict(cfg), "scenes": [r.to_dict() for r in results], "aggregate": aggregate(results)}
    return summary, results
