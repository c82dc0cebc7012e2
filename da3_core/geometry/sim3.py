"""Similarity transforms Sim(3): Umeyama least squares, RANSAC, and alignment of camera trajectories.

All functions work on numpy float64 (poses are few: this is CPU bookkeeping next to the network, and float64 keeps
the closed form exact to ~1e-12). Conventions: ``dst ≈ s * R @ src + t`` with ``R`` (3, 3) a rotation, ``s > 0``.

Pose alignment follows the official API (``DepthAnything3._align_to_input_extrinsics_intrinsics`` with evo's
``PosePath3D.align``): only camera *centres* (translations of the camera-to-world poses) enter the Umeyama fit; the
fitted Sim(3) then moves whole poses: ``c2w' = [R @ R_i | s * R @ t_i + t]``. For N >= 10 views the official code uses
a small RANSAC (:func:`ransac_umeyama_sim3`) seeded with 42.
"""

from __future__ import annotations

import numpy as np

from da3_core.geometry.rigid import camera_centers, invert_rigid

__all__ = [
    "umeyama_sim3",
    "ransac_umeyama_sim3",
    "given_pose_scale",
    "apply_sim3_to_points",
    "apply_sim3_to_c2w",
    "camera_centers",
    "align_input_poses_to_prediction",
]


def umeyama_sim3(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True,
                 unique: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) with ``dst ≈ s * R @ src + t``.

    Args:
        src, dst: (N, 3) corresponding points, N >= 3 and not all collinear.
        weights: optional (N,) non-negative weights (weighted means and covariance); None = uniform.
        with_scale: fit ``s``; otherwise ``s = 1`` (rigid fit).
        unique: require a unique answer (raise on a degenerate configuration). ``False`` returns *a* least-squares
            answer when there are many, for callers that need only the residual (a trajectory error): collinear
            points leave the rotation about their line free (the SVD's choice is as good as any), and a ``src`` or
            ``dst`` collapsed to one point gives ``R = I`` and, with scale, ``s = 0`` (every point onto ``dst``'s
            mean: the residual is ``dst``'s spread).
    Returns:
        ``(s, R, t)``: float, (3, 3) float64 rotation (det +1), (3,) float64.
    Raises:
        ValueError: bad shapes, non-finite values, or (``unique``) a degenerate configuration (rank of the
        cross-covariance < 2).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"umeyama_sim3: src {src.shape} and dst {dst.shape} must both be (N, 3)")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("umeyama_sim3: points contain NaN or inf")
    n = src.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != n or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise ValueError("umeyama_sim3: weights must be (N,) finite, non-negative, with a positive sum")
        w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    var_s = float(w @ np.sum(xs * xs, axis=1))
    cov = (xd * w[:, None]).T @ xs  # (3, 3) = sum_i w_i (dst_i - mu_d)(src_i - mu_s)^T
    U, d, Vt = np.linalg.svd(cov)
    rank = np.count_nonzero(d > np.finfo(np.float64).eps * max(1.0, d[0]))
    if unique and (rank < 2 or var_s <= 0):
        raise ValueError("umeyama_sim3: degenerate point configuration (fewer than 3 non-collinear points)")
    if rank == 0 or var_s <= 0:  # not unique: src or dst is one point; no rotation does better than another
        s = 0.0 if with_scale else 1.0
        return s, np.eye(3), mu_d - s * mu_s
    S = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2] = -1.0
    R = (U * S) @ Vt
    s = float((d * S).sum() / var_s) if with_scale else 1.0
    t = mu_d - s * (R @ mu_s)
    return s, R, t


def apply_sim3_to_points(points: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(…, 3) -> ``s * R @ p + t`` (float64)."""
    return s * (np.asarray(points, dtype=np.float64) @ np.asarray(R).T) + np.asarray(t)


def apply_sim3_to_c2w(c2w: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Move camera-to-world poses (N, 4, 4) by a Sim(3): ``[R @ R_i | s * R @ t_i + t]`` (rotation part stays rigid)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    out = np.array(c2w)
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = apply_sim3_to_points(c2w[:, :3, 3], s, R, t)
    return out


def _nearest_distance_median(ref: np.ndarray, est: np.ndarray) -> float:
    """Median over ``est`` points of the distance to the nearest ``ref`` point (any index)."""
    d = np.linalg.norm(est[:, None, :] - ref[None, :, :], axis=-1)
    return float(np.median(d.min(axis=1))) if len(est) else 0.0


def ransac_umeyama_sim3(src: np.ndarray, dst: np.ndarray, sample_size: int | None = None,
                        inlier_threshold: float | None = None, max_iters: int = 10, seed: int | None = 42
                        ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
    """RANSAC over :func:`umeyama_sim3` as the official pose alignment does for N >= 10 cameras.

    - A first fit on all points; the default inlier threshold is the median, over the transformed ``src`` points,
      of the distance to the *nearest* ``dst`` point (not the corresponding one).
    - ``max_iters`` random subsets of ``sample_size`` points (default ``max(3, ceil(N / 2))``, drawn without
      replacement with ``numpy.random.default_rng(seed)``); a hypothesis is scored by its number of inliers
      (residual to the corresponding point <= threshold), ties broken by the lower mean inlier residual.
    - The best inlier set (if it has >= 3 points) is refitted; otherwise the best hypothesis (or the first fit) is kept.

    Returns ``(s, R, t, inliers)``; ``inliers`` is the (N,) bool mask of the best hypothesis, or None.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    rng = np.random.default_rng(seed)
    k = max(3, (n + 1) // 2) if sample_size is None else max(3, min(sample_size, n))
    s0, R0, t0 = umeyama_sim3(src, dst)
    if inlier_threshold is None:
        inlier_threshold = _nearest_distance_median(dst, apply_sim3_to_points(src, s0, R0, t0))
    best = (s0, R0, t0)
    best_mask = None
    best_score = (-1, np.inf)
    for _ in range(max_iters):
        idx = rng.choice(np.arange(n), size=k, replace=False)
        try:
            s, R, t = umeyama_sim3(src[idx], dst[idx])
        except ValueError:
            continue
        err = np.linalg.norm(apply_sim3_to_points(src, s, R, t) - dst, axis=1)
        mask = err <= inlier_threshold
        count = int(mask.sum())
        mean_err = float(err[mask].mean()) if count else np.inf
        if count > best_score[0] or (count == best_score[0] and mean_err < best_score[1]):
            best_score = (count, mean_err)
            best = (s, R, t)
            best_mask = mask
    if best_mask is not None and best_mask.sum() >= 3:
        try:
            best = umeyama_sim3(src[best_mask], dst[best_mask])
        except ValueError:
            pass
    return best[0], best[1], best[2], best_mask


def given_pose_scale(pred_w2c: np.ndarray, input_w2c: np.ndarray) -> float | None:
    """Network units per given unit: the ``s`` the API divides depth by when it returns the given poses.

    ``pred_w2c`` / ``input_w2c``: (N, 3|4, 4) predicted (network frame and scale) and given (user frame and scale)
    world-to-camera. N >= 3: the official Umeyama (RANSAC for N >= 10) of :func:`align_input_poses_to_prediction`;
    N == 2: the ratio of the two baselines (beyond the official, whose alignment fails on two views). None where it
    is undefined: one view, or a two-view baseline of (near) zero length.
    """
    n = len(input_w2c)
    if len(pred_w2c) != n:
        raise ValueError(f"given_pose_scale: {len(pred_w2c)} predicted vs {n} given poses")
    if n >= 3:
        return float(align_input_poses_to_prediction(pred_w2c, input_w2c)[0])
    if n == 2:
        base_pred = float(np.linalg.norm(np.diff(camera_centers(pred_w2c), axis=0)))
        base_in = float(np.linalg.norm(np.diff(camera_centers(input_w2c), axis=0)))
        if base_pred > 1e-9 and base_in > 1e-9:
            return base_pred / base_in
    return None


def align_input_poses_to_prediction(pred_w2c: np.ndarray, input_w2c: np.ndarray, ransac: bool | None = None,
                                    seed: int | None = 42) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Sim(3) taking the *input* camera centres onto the *predicted* ones, as the official API does.

    Args:
        pred_w2c: (N, 3|4, 4) predicted world-to-camera (network frame and scale).
        input_w2c: (N, 3|4, 4) given world-to-camera (user frame and scale).
        ransac: use :func:`ransac_umeyama_sim3`; None = official rule ``N >= 10``.
    Returns:
        ``(s, R, t, aligned_input_w2c)`` with ``pred_centre ≈ s * R @ input_centre + t``; ``aligned_input_w2c``
        (N, 4, 4) float64 are the input poses expressed in the prediction frame. Depth predicted in the network scale
        is in input-pose units after division by ``s`` (official ``depth /= scale``).
    """
    pred_c2w = invert_rigid(pred_w2c)
    in_c2w = invert_rigid(input_w2c)
    if pred_c2w.shape != in_c2w.shape:
        raise ValueError(f"align_input_poses_to_prediction: {len(pred_c2w)} predicted vs {len(in_c2w)} input poses")
    n = len(in_c2w)
    if n < 3:
        raise ValueError(f"pose alignment needs at least 3 cameras with distinct centres, got {n}")
    if ransac is None:
        ransac = n >= 10
    src, dst = in_c2w[:, :3, 3], pred_c2w[:, :3, 3]
    if ransac:
        s, R, t, _ = ransac_umeyama_sim3(src, dst, seed=seed)
    else:
        s, R, t = umeyama_sim3(src, dst)
    aligned = invert_rigid(apply_sim3_to_c2w(in_c2w, s, R, t))
    return s, R, t, aligned
