"""Pinhole cameras for the synthetic renderer: intrinsics, OpenCV look-at poses, pixel rays.

Frames: the world is right-handed with **+z up** (ground plane z = 0). Cameras are OpenCV world-to-camera
``w2c`` (4, 4) float64: camera x right, y down, z forward; ``X_cam = R @ X_world + t``.

Pixel convention (the project's, see ``da3_core.geometry.points``): the ray of pixel (row v, col u) passes
through image coordinates ``(u + pixel_offset, v + pixel_offset)`` with ``pixel_offset = 0.0`` by default, i.e.
integer coordinates exactly as ``depth_to_points`` unprojects them. ``intrinsics_from_fov`` puts the principal
point at ``(W/2, H/2)`` like the official preprocessing.
"""

from __future__ import annotations

import numpy as np

from da3_core.geometry.rigid import camera_centers, invert_rigid  # noqa: F401 - part of this module's API

__all__ = [
    "intrinsics_from_fov",
    "look_at",
    "camera_centers",
    "invert_rigid",
    "pixel_grid_uv",
    "camera_rays",
    "rotvec_to_matrix",
    "rotation_angle_deg",
]


def intrinsics_from_fov(hw: tuple[int, int], fov_x_deg: float = 60.0, fov_y_deg: float | None = None) -> np.ndarray:
    """K (3, 3) float64 in pixels for an image of ``hw = (H, W)``; square pixels unless ``fov_y_deg`` is given."""
    H, W = hw
    fx = 0.5 * W / np.tan(np.radians(fov_x_deg) / 2.0)
    fy = fx if fov_y_deg is None else 0.5 * H / np.tan(np.radians(fov_y_deg) / 2.0)
    return np.array([[fx, 0.0, W / 2.0], [0.0, fy, H / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV w2c (..., 4, 4) of a camera at ``eye`` (..., 3) looking at ``target`` (..., 3), world frame.

    Camera z = normalised (target - eye); x = z × up (right); y = z × x (down, i.e. image up is world ``up``).
    Raises ValueError when the view direction is parallel to ``up``.
    """
    eye = np.asarray(eye, np.float64)
    target = np.asarray(target, np.float64)
    up = np.broadcast_to(np.asarray(up, np.float64), np.broadcast_shapes(eye.shape, target.shape))
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, up)
    nx = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(nx < 1e-9):
        raise ValueError("look_at: view direction parallel to the up vector")
    x = x / nx
    y = np.cross(z, x)
    R = np.stack((x, y, z), axis=-2)  # rows = camera axes in world coordinates -> world-to-camera rotation
    w2c = np.zeros(R.shape[:-2] + (4, 4))
    w2c[..., :3, :3] = R
    w2c[..., :3, 3] = -np.einsum("...ij,...j->...i", R, eye)
    w2c[..., 3, 3] = 1.0
    return w2c


def pixel_grid_uv(hw: tuple[int, int], pixel_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (u, v), each (H, W) float64, of every pixel's ray (see module docstring)."""
    H, W = hw
    u = np.arange(W, dtype=np.float64) + pixel_offset
    v = np.arange(H, dtype=np.float64) + pixel_offset
    return np.broadcast_to(u[None, :], (H, W)), np.broadcast_to(v[:, None], (H, W))


def camera_rays(
    w2c: np.ndarray, K: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """World rays through image points (u, v) (any equal shapes S).

    Returns the camera centre (3,) and the world direction components ``(dx, dy, dz)`` (each S, float64) of
    ``R^T K^-1 [u, v, 1]``: the camera-frame direction has z = 1, so the ray parameter of a hit *is* its z-depth.
    """
    fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    yc = (v - cy) / fy
    xc = (u - cx - s * yc) / fx
    R = w2c[:3, :3]
    dx = R[0, 0] * xc + R[1, 0] * yc + R[2, 0]
    dy = R[0, 1] * xc + R[1, 1] * yc + R[2, 1]
    dz = R[0, 2] * xc + R[1, 2] * yc + R[2, 2]
    return camera_centers(w2c), (dx, dy, dz)


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from rotation vectors (..., 3) (axis * angle in radians), Rodrigues."""
    rv = np.asarray(rv, np.float64)
    theta = np.linalg.norm(rv, axis=-1)[..., None, None]
    k = rv / np.maximum(np.linalg.norm(rv, axis=-1, keepdims=True), 1e-300)
    Kx = np.zeros(rv.shape[:-1] + (3, 3))
    Kx[..., 0, 1], Kx[..., 0, 2] = -k[..., 2], k[..., 1]
    Kx[..., 1, 0], Kx[..., 1, 2] = k[..., 2], -k[..., 0]
    Kx[..., 2, 0], Kx[..., 2, 1] = -k[..., 1], k[..., 0]
    return np.eye(3) + np.sin(theta) * Kx + (1.0 - np.cos(theta)) * (Kx @ Kx)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle (...) in degrees of the relative rotation ``Ra^T Rb`` between (..., 3, 3) rotations."""
    rel = np.swapaxes(Ra, -1, -2) @ Rb
    c = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
