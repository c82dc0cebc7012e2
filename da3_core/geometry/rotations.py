"""NumPy (float64) rotation <-> unit quaternion (xyzw, scalar last) for single poses at the ROS / file edges.

The batched torch versions used by the network are in :mod:`da3_core.geometry.quaternion`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rotation_to_quat_xyzw", "quat_xyzw_to_rotation", "quat_wxyz_to_rotation"]


def rotation_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (4,) xyzw with w >= 0 (Shepperd's method, float64)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] >= R[1, 1] and R[0, 0] >= R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] >= R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


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
