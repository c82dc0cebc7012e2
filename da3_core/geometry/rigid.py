"""NumPy (float64) rigid transforms for poses at the API / ROS / file edges: [R | t] as (..., 4, 4).

The batched torch versions used inside the network are in :mod:`da3_core.geometry.transforms`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_4x4", "invert_rigid", "camera_centers"]


def as_4x4(T: np.ndarray) -> np.ndarray:
    """(..., 3, 4) or (..., 4, 4) [R | t] -> a new (..., 4, 4) float64 array with last row [0, 0, 0, 1]."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] == (4, 4):
        return T.copy()
    if T.shape[-2:] != (3, 4):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4) transforms, got shape {T.shape}")
    out = np.zeros(T.shape[:-2] + (4, 4))
    out[..., :3, :] = T
    out[..., 3, 3] = 1.0
    return out


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse (..., 4, 4) of rigid (..., 3|4, 4) transforms, R taken as orthonormal: [R^T | -R^T t] (w2c <-> c2w)."""
    T = as_4x4(T)
    R = T[..., :3, :3]
    out = np.zeros_like(T)
    out[..., :3, :3] = np.swapaxes(R, -1, -2)
    out[..., :3, 3] = -np.einsum("...ji,...j->...i", R, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def camera_centers(w2c: np.ndarray) -> np.ndarray:
    """World positions (..., 3) of cameras with world-to-camera (..., 3|4, 4) poses: ``-R^T t``."""
    w2c = np.asarray(w2c, dtype=np.float64)
    return -np.einsum("...ji,...j->...i", w2c[..., :3, :3], w2c[..., :3, 3])
