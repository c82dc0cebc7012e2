"""Camera-pose accuracy: relative pose errors over all view pairs (RRA / RTA / AUC, paper §6.2), trajectory
alignment (Umeyama Sim(3) / SE(3), optional RANSAC) and the absolute trajectory error.

Relative pose of a pair (i, j), i < j: ``T_ij = w2c_i @ inv(w2c_j)`` (camera j in camera i's frame); it does not
depend on the world frame, and its translation direction not on the scale, so no alignment is needed.

- rotation error of a pair = angle of ``R_ij_pred^T R_ij_gt`` in degrees;
- translation error = angle between ``t_ij_pred`` and ``t_ij_gt`` in degrees; with ``symmetric=True`` (default, as
  the VGGT / DA3 benchmark code) ``min(a, 180 - a)``; 0 when both translations vanish, 180 (90 symmetric) when
  exactly one does;
- RRA@τ / RTA@τ = fraction of pairs with rotation / translation error < τ degrees;
- AUC@T (the paper's Auc3 / Auc30) = the benchmark's discrete area under the accuracy curve of
  ``e = max(rotation error, translation error)``: with 1-degree bins, ``mean_{k=1..T} fraction(e < k)`` (the last
  bin closed at ``T``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_core.geometry.rigid import as_4x4, camera_centers, invert_rigid
from da3_core.geometry.sim3 import apply_sim3_to_c2w, ransac_umeyama_sim3, umeyama_sim3

__all__ = [
    "TrajectoryScores",
    "PairErrors",
    "absolute_trajectory_error",
    "relative_pose_errors",
    "accuracy_at",
    "pose_auc",
    "accuracy_curve",
    "align_trajectory",
    "pose_scores",
]


@dataclass(frozen=True, eq=False)
class TrajectoryScores:
    ate_rmse: float  # RMSE of camera-centre positions after alignment, in ground-truth units
    scale: float  # alignment scale (1 for SE(3))
    num_poses: int
    rotation: np.ndarray | None = None  # (3, 3) the alignment: predicted centre c -> scale * rotation @ c + translation
    translation: np.ndarray | None = None  # (3,)


@dataclass(frozen=True)
class PairErrors:
    pairs: np.ndarray  # (P, 2) int view indices i < j
    rot_deg: np.ndarray  # (P,)
    trans_deg: np.ndarray  # (P,)

    @property
    def max_deg(self) -> np.ndarray:
        return np.maximum(self.rot_deg, self.trans_deg)


def absolute_trajectory_error(pred_w2c: np.ndarray, gt_w2c: np.ndarray, with_scale: bool = True) -> TrajectoryScores:
    """ATE of (N, 3|4, 4) predicted against ground-truth world-to-camera poses (N >= 3) after the least-squares
    Sim(3) (SE(3) without scale) of the predicted centres onto the true ones. A straight true path (a robot driving
    straight) or a predicted path collapsed to one spot has many such alignments, all with the same error, which is
    the one returned (a collapsed path: the true path's RMS spread about its mean)."""
    if len(pred_w2c) != len(gt_w2c):
        raise ValueError(f"{len(pred_w2c)} predicted poses vs {len(gt_w2c)} ground-truth poses")
    src, dst = camera_centers(np.asarray(pred_w2c, np.float64)), camera_centers(np.asarray(gt_w2c, np.float64))
    s, r, t = umeyama_sim3(src, dst, with_scale=with_scale, unique=False)
    err = (s * src @ r.T + t) - dst
    return TrajectoryScores(ate_rmse=float(np.sqrt(np.mean(np.sum(err**2, axis=1)))), scale=float(s),
                            num_poses=len(src), rotation=r, translation=t)


def camera_distance_errors(pred_w2c: np.ndarray, gt_w2c: np.ndarray, ref: int = 0, min_gt: float = 1e-9
                           ) -> np.ndarray:
    """How far each view's predicted distance from the reference camera strays from the window's common scale.

    For views j != ``ref`` of (S, 3|4, 4) w2c poses, ``r_j = |c_j - c_ref| pred / |c_j - c_ref| true``; the result is
    ``exp(|log r_j - median_k log r_k|)`` per view (1 = every distance in one scale, whatever it is; a camera head whose
    spread fades with the distance from the reference shows it). Views at the reference's true position (distance
    <= ``min_gt``) or predicted on it are left out (NaN); the reference view is NaN too, and so is every view when
    fewer than two distances are left (one distance has no spread). Returns (S,).
    """
    pred_c, gt_c = camera_centers(as_4x4(np.asarray(pred_w2c, np.float64))), camera_centers(
        as_4x4(np.asarray(gt_w2c, np.float64)))
    if pred_c.shape != gt_c.shape:
        raise ValueError(f"{len(pred_c)} predicted poses vs {len(gt_c)} ground-truth poses")
    d_pred = np.linalg.norm(pred_c - pred_c[ref], axis=1)
    d_gt = np.linalg.norm(gt_c - gt_c[ref], axis=1)
    ok = (d_gt > min_gt) & (d_pred > 0)
    ok[ref] = False
    logs = np.full(len(pred_c), np.nan)
    if ok.sum() < 2:
        return logs
    logs[ok] = np.log(d_pred[ok] / d_gt[ok])
    return np.exp(np.abs(logs - np.nanmedian(logs)))


def _rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle of ``Ra^T Rb`` (…, 3, 3) in degrees, robust near 0 and 180 (via the quaternion-free atan2 form)."""
    M = np.swapaxes(Ra, -1, -2) @ Rb
    tr = np.trace(M, axis1=-2, axis2=-1)
    skew = np.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1)
    return np.degrees(np.arctan2(0.5 * np.linalg.norm(skew, axis=-1), 0.5 * (tr - 1.0)))


def _vector_angle_deg(a: np.ndarray, b: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Angle between ``a`` and ``b`` (degrees; ``symmetric``: ``min(a, 180 - a)``); 0 when both vanish, 180 (90
    symmetric: a vanished vector has no direction, either way) when exactly one does."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    ang = np.degrees(np.arctan2(cross, np.sum(a * b, axis=-1)))
    if symmetric:
        ang = np.minimum(ang, 180.0 - ang)
    eps = 1e-12
    ang = np.where((na < eps) & (nb < eps), 0.0, ang)
    return np.where((na < eps) ^ (nb < eps), 90.0 if symmetric else 180.0, ang)


def relative_pose_errors(pred_w2c: np.ndarray, gt_w2c: np.ndarray, symmetric: bool = True) -> PairErrors:
    """Rotation and translation-direction errors (degrees) of every pair i < j of (N, 3|4, 4) w2c poses."""
    pred, gt = as_4x4(pred_w2c), as_4x4(gt_w2c)
    if pred.shape != gt.shape:
        raise ValueError(f"{len(pred)} predicted poses vs {len(gt)} ground-truth poses")
    i, j = np.triu_indices(len(gt), k=1)
    rel_p = pred[i] @ invert_rigid(pred[j])
    rel_g = gt[i] @ invert_rigid(gt[j])
    rot = _rotation_angle_deg(rel_p[:, :3, :3], rel_g[:, :3, :3])
    trans = _vector_angle_deg(rel_p[:, :3, 3], rel_g[:, :3, 3], symmetric)
    return PairErrors(np.stack([i, j], 1).astype(np.int64), rot, trans)


def accuracy_at(errors_deg: np.ndarray, threshold_deg: float) -> float:
    """Fraction of errors strictly below ``threshold_deg`` (RRA / RTA); NaN for no errors."""
    e = np.asarray(errors_deg, np.float64)
    return float(np.mean(e < threshold_deg)) if e.size else float("nan")


def pose_auc(max_errors_deg: np.ndarray, max_threshold: int) -> float:
    """The benchmark AUC@T: ``mean_{k=1..T}`` of the fraction of pairs in 1-degree bins up to k (see module doc)."""
    e = np.asarray(max_errors_deg, np.float64).reshape(-1)
    if e.size == 0:
        return float("nan")
    hist, _ = np.histogram(e, bins=np.arange(int(max_threshold) + 1))
    return float(np.mean(np.cumsum(hist / e.size)))


def accuracy_curve(max_errors_deg: np.ndarray, max_threshold: float = 30.0, steps: int = 61
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, fraction of pairs with error < threshold) for plotting; thresholds 0..max_threshold."""
    e = np.asarray(max_errors_deg, np.float64).reshape(-1)
    th = np.linspace(0.0, max_threshold, steps)
    return th, np.array([accuracy_at(e, t) for t in th])


def _first_frame_alignment(pred_c2w: np.ndarray, gt_c2w: np.ndarray, with_scale: bool
                           ) -> tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) mapping the first predicted camera onto the first ground-truth one (scale from centre spreads)."""
    s = 1.0
    if with_scale and len(gt_c2w) > 1:
        sp = np.linalg.norm(pred_c2w[:, :3, 3] - pred_c2w[:, :3, 3].mean(0), axis=1).sum()
        sg = np.linalg.norm(gt_c2w[:, :3, 3] - gt_c2w[:, :3, 3].mean(0), axis=1).sum()
        s = float(sg / sp) if sp > 1e-12 and sg > 1e-12 else 1.0
    R = gt_c2w[0, :3, :3] @ pred_c2w[0, :3, :3].T
    t = gt_c2w[0, :3, 3] - s * R @ pred_c2w[0, :3, 3]
    return s, R, t


def align_trajectory(pred_w2c: np.ndarray, gt_w2c: np.ndarray, mode: str = "sim3", ransac: bool | None = None,
                     seed: int | None = 42) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, str]:
    """Align predicted poses onto the ground truth (evo-style: Umeyama on camera centres, whole poses moved).

    Args:
        mode: "sim3" (scale, relative models), "se3" (rigid, metric models) or "none".
        ransac: RANSAC over Umeyama (:func:`da3_core.geometry.sim3.ransac_umeyama_sim3`); None = the official rule
            N >= 10. For "se3" the RANSAC inliers are refitted rigidly.
    Returns:
        ``(s, R, t, aligned_pred_w2c (N, 4, 4), method)`` with ``gt_centre ≈ s R pred_centre + t``; ``method`` says
        what was done ("umeyama", "ransac", "first_frame" when the centres are degenerate (N < 3 or collinear),
        or "none").
    """
    pred_c2w = invert_rigid(pred_w2c)
    gt_c2w = invert_rigid(gt_w2c)
    if pred_c2w.shape != gt_c2w.shape:
        raise ValueError(f"{len(pred_c2w)} predicted poses vs {len(gt_c2w)} ground-truth poses")
    if mode not in ("sim3", "se3", "none"):
        raise ValueError(f"pose alignment {mode!r}: use sim3, se3 or none")
    with_scale = mode == "sim3"
    n = len(gt_c2w)
    if mode == "none":
        s, R, t, method = 1.0, np.eye(3), np.zeros(3), "none"
    else:
        if ransac is None:
            ransac = n >= 10
        src, dst = pred_c2w[:, :3, 3], gt_c2w[:, :3, 3]
        try:
            if n < 3:
                raise ValueError("fewer than 3 cameras")
            if ransac:
                s, R, t, inl = ransac_umeyama_sim3(src, dst, seed=seed)
                if not with_scale:
                    m = inl if inl is not None and inl.sum() >= 3 else np.ones(n, bool)
                    s, R, t = umeyama_sim3(src[m], dst[m], with_scale=False)
                method = "ransac"
            else:
                s, R, t = umeyama_sim3(src, dst, with_scale=with_scale)
                method = "umeyama"
        except ValueError:
            s, R, t = _first_frame_alignment(pred_c2w, gt_c2w, with_scale)
            method = "first_frame"
    aligned = invert_rigid(apply_sim3_to_c2w(pred_c2w, s, R, t))
    return float(s), R, t, aligned, method


def pose_scores(pred_w2c: np.ndarray, gt_w2c: np.ndarray, thresholds: tuple[float, ...] = (3.0, 5.0, 15.0, 30.0),
                auc_thresholds: tuple[int, ...] = (3, 30), symmetric: bool = True) -> tuple[dict[str, float],
                                                                                          PairErrors]:
    """All pair metrics as a flat dict (``auc@3``, ``auc@30``, ``rra@3`` …, mean / median errors) and the errors."""
    pe = relative_pose_errors(pred_w2c, gt_w2c, symmetric=symmetric)
    out: dict[str, float] = {"pairs": int(len(pe.rot_deg))}
    for T in auc_thresholds:
        out[f"auc@{T:g}"] = pose_auc(pe.max_deg, T)
    for th in thresholds:
        out[f"rra@{th:g}"] = accuracy_at(pe.rot_deg, th)
        out[f"rta@{th:g}"] = accuracy_at(pe.trans_deg, th)
    if len(pe.rot_deg):
        out.update(rot_err_mean=float(pe.rot_deg.mean()), rot_err_median=float(np.median(pe.rot_deg)),
                   trans_err_mean=float(pe.trans_deg.mean()), trans_err_median=float(np.median(pe.trans_deg)))
    return out, pe
