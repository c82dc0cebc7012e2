"""Drift monitor: the camera motion DA3 sees over a window against the motion odometry reports (ROS-free).

Wheel odometry slips (the wheels turn, the robot does not move as far) and drifts in heading; DA3 sees the motion in
the images. Over each window the monitor compares the two motions of one camera (frames in stamp order):

- distances: the camera path length by odometry (metres) and by DA3 (metres when the estimate is metric, else map
  units); ``distance_ratio = odometry / DA3``;
- ``slip = distance_ratio / scale - 1``: the odometry's distance over the true one, minus 1 (0.2: odometry claims
  20 % more than the robot moved). ``scale`` = metres per DA3 unit: 1 for a metric estimate, else the median ratio of
  the first ``reference_windows`` windows that moved (slip is then relative to the start of the run, NaN until then);
- ``rotation_drift_deg``: the angle between the two end-to-end rotations over the window (heading drift);
- ``translation_drift_m``: the distance between the two end-to-end translations, in the odometry's frame, metres.

What DA3's motion is: for an unconditioned window, its chained poses (map frame, one consistent scale across
windows); for a window conditioned on the odometry itself, the predictor's own estimate when it has one
(:attr:`~da3_core.stream.predictor.WindowPrediction.own_w2c`), else nothing can be compared (the window's poses *are*
the odometry's) and no sample is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from da3_core.geometry.rigid import invert_rigid

__all__ = ["DriftSample", "DriftMonitor", "path_length", "rotation_angle_deg"]


@dataclass(frozen=True)
class DriftSample:
    """One window's comparison (module docstring); stamps in ns, distances in metres / estimate units."""

    window_index: int
    stamp_ns: int  # last frame of the window
    duration_s: float
    odometry_distance_m: float
    estimate_distance: float
    estimate_is_metric: bool
    estimate_source: str  # "chained" or "own"
    distance_ratio: float
    scale: float  # metres per estimate unit (NaN until known)
    slip: float
    rotation_drift_deg: float
    translation_drift_m: float


def path_length(c2w: np.ndarray) -> float:
    """Sum of the distances between consecutive camera centres of (S, 4, 4) camera-to-world poses."""
    return float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()) if len(c2w) > 1 else 0.0


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix (atan2 of the axis part and the trace: exact near 0 and 180)."""
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return math.degrees(math.atan2(0.5 * float(np.linalg.norm(axis)), 0.5 * (float(np.trace(R)) - 1.0)))


class DriftMonitor:
    """Stateful per-run monitor. ``min_distance_m``: windows whose odometry moved less are not compared (a
    standing robot has no slip to see); ``reference_windows``: windows whose median ratio sets a relative estimate's
    scale."""

    def __init__(self, min_distance_m: float = 0.05, reference_windows: int = 3):
        self.min_distance_m = float(min_distance_m)
        self.reference_windows = int(reference_windows)
        self.reset()

    def reset(self) -> None:
        self._ratios: list[float] = []
        self.latest: DriftSample | None = None
        self.max_abs_slip = 0.0
        self.samples = 0

    def update(self, window_index: int, stamps_ns: list[int], estimate_c2w: np.ndarray, estimate_is_metric: bool,
               odometry_c2w: np.ndarray, source: str = "chained") -> DriftSample | None:
        """Compare one window: ``estimate_c2w`` / ``odometry_c2w`` (S, 4, 4) camera-to-world of the same camera at
        ``stamps_ns`` (any world frames: only relative motion is used). None when it moved too little."""
        est, odo = np.asarray(estimate_c2w, np.float64), np.asarray(odometry_c2w, np.float64)
        if len(stamps_ns) < 2 or est.shape != odo.shape:
            return None
        d_odo, d_est = path_length(odo), path_length(est)
        if d_odo < self.min_distance_m or d_est <= 0.0:
            return None
        ratio = d_odo / d_est
        if estimate_is_metric:
            scale = 1.0
        else:
            if len(self._ratios) < self.reference_windows:
                self._ratios.append(ratio)
            scale = float(np.median(self._ratios)) if len(self._ratios) >= self.reference_windows else math.nan
        rel_est, rel_odo = invert_rigid(est[0]) @ est[-1], invert_rigid(odo[0]) @ odo[-1]
        slip = ratio / scale - 1.0  # NaN while the scale is unknown
        sample = DriftSample(
            window_index=int(window_index), stamp_ns=int(stamps_ns[-1]),
            duration_s=(int(stamps_ns[-1]) - int(stamps_ns[0])) / 1e9, odometry_distance_m=d_odo,
            estimate_distance=d_est, estimate_is_metric=bool(estimate_is_metric), estimate_source=source,
            distance_ratio=ratio, scale=scale, slip=slip,
            rotation_drift_deg=rotation_angle_deg(rel_odo[:3, :3].T @ rel_est[:3, :3]),
            translation_drift_m=float(np.linalg.norm(rel_odo[:3, 3] - scale * rel_est[:3, 3])))
        self.latest = sample
        self.samples += 1
        if slip == slip:
            self.max_abs_slip = max(self.max_abs_slip, abs(slip))
        return sample
