"""NumPy (float64) rotation <-> unit quaternion (xyzw, scalar last) for single poses at the ROS / file edges.

The batched torch versions used by the network are in :mod:`da3_core.geometry.quaternion`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rotation_to_quat_xyzw", "quat_xyzw_to_rotation", "quat_wxyz_to_rotation"]


def rotation_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (4,) xyzw with w >= 0 (Shepperd's method, float64; Python floats inside:
    numpy scalar arithmetic on nine numbers costs more than the arithmetic)."""
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = np.asarray(R, dtype=np.float64).tolist()
    tr = r00 + r11 + r22
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [(r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s, 0.25 * s]
    elif r00 >= r11 and r00 >= r22:
        s = 2.0 * math.sqrt(1.0 + r00 - r11 - r22)
        q = [0.25 * s, (r01 + r10) / s, (r02 + r20) / s, (r21 - r12) / s]
    elif r11 >= r22:
        s = 2.0 * math.sqrt(1.0 + r11 - r00 - r22)
        q = [(r01 + r10) / s, 0.25 * s, (r12 + r21) / s, (r02 - r20) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r22 - r00 - r11)
        q = [(r02 + r20) / s, (r12 + r21) / s, 0.25 * s, (r10 - r01) / s]
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    sign = -1.0 if q[3] < 0 else 1.0
    return np.array([sign * v / n for v in q])


def quat_xyzw_to_rotation(q: np.ndarray) -> np.ndarray:
    """(4,) quaternion xyzw (normalised here) -> (3, 3) rotation."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quat_wxyz_to_rotation(q) -> np.ndarray:
    """(3, 3) rotation of a scalar-first (w, x, y, z) quaternion (COLMAP's order), normalised first."""
    w, x, y, z = np.asarray(q, dtype=np.float64)
    return quat_xyzw_to_rotation(np.array([x, y, z, w]))
