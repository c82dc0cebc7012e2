"""Camera-pose accuracy: absolute trajectory error after a Sim(3) (or SE(3)) alignment of camera centres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_core.geometry.sim3 import camera_centers, umeyama_sim3


@dataclass(frozen=True)
class TrajectoryScores:
    ate_rmse: float  # RMSE of camera-centre positions after alignment, in ground-truth units
    scale: float  # alignment scale (1 for SE(3))
    num_poses: int


def absolute_trajectory_error(pred_w2c: np.ndarray, gt_w2c: np.ndarray, with_scale: bool = True) -> TrajectoryScores:
    """ATE of (N, 3|4, 4) predicted against ground-truth world-to-camera poses (N >= 3, non-collinear centres)."""
    if len(pred_w2c) != len(gt_w2c):
        raise ValueError(f"{len(pred_w2c)} predicted poses vs {len(gt_w2c)} ground-truth poses")
    src, dst = camera_centers(np.asarray(pred_w2c, np.float64)), camera_centers(np.asarray(gt_w2c, np.float64))
    s, r, t = umeyama_sim3(src, dst, with_scale=with_scale)
    err = (s * src @ r.T + t) - dst
    return TrajectoryScores(ate_rmse=float(np.sqrt(np.mean(np.sum(err**2, axis=1)))), scale=float(s),
                            num_poses=len(src))
