"""Depth maps <-> world points for pinhole cameras.

Pixel convention: pixel (row v, col u) of a depth map is unprojected at image coordinates ``(u, v)`` -- integer
coordinates, no +0.5 -- exactly as the official ``utils/geometry.py: unproject_depth`` (``torch.arange`` grid,
``ixt_normalized=False``). With this convention K's principal point ``(W/2, H/2)`` is half a pixel right/below the
true image centre ((W-1)/2, (H-1)/2); that is what the official code (and its outputs) use. ``project_points``
returns coordinates in the same convention, so project(unproject) is the identity.
"""

from __future__ import annotations

import torch

__all__ = ["pixel_grid", "depth_to_points", "depth_to_camera_points", "project_points"]


def pixel_grid(H: int, W: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(H, W, 2) pixel coordinates ``(u, v) = (col, row)`` (integers, official convention)."""
    v, u = torch.meshgrid(
        torch.arange(H, dtype=dtype, device=device), torch.arange(W, dtype=dtype, device=device), indexing="ij"
    )
    return torch.stack((u, v), -1)


def depth_to_camera_points(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (..., H, W, 3) from z-depth (..., H, W) and intrinsics K (..., 3, 3) in pixels."""
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, dtype=depth.dtype, device=depth.device)  # (H, W, 2)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    skew = K[..., 0, 1, None, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return torch.stack((x * depth, y * depth, depth), -1)


def depth_to_points(depth: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World points of every pixel.

    Args:
        depth: (..., H, W) z-depth (NaN stays NaN).
        w2c: (..., 3, 4) or (..., 4, 4) world-to-camera, OpenCV.
        K: (..., 3, 3) intrinsics in pixels of the depth map.

    Returns:
        (..., H, W, 3) points in the world frame: ``R^T (X_cam - t)``.
    """
    X = depth_to_camera_points(depth, K)
    R = w2c[..., None, None, :3, :3]
    t = w2c[..., None, None, :3, 3]
    return ((X - t).unsqueeze(-2) @ R).squeeze(-2)  # row-vector form of R^T (X - t)


def project_points(
    pts_world: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into a camera.

    Args:
        pts_world: (..., N, 3) world points.
        w2c: (..., 3, 4) or (..., 4, 4) world-to-camera, OpenCV.
        K: (..., 3, 3) intrinsics in pixels.

    Returns:
        uv: (..., N, 2) pixel coordinates (official integer-pixel convention, see module docstring).
        z: (..., N) depth along the optical axis (points behind the camera have z <= 0; uv is then meaningless).
    """
    R = w2c[..., :3, :3]
    t = w2c[..., None, :3, 3]
    X = pts_world @ R.mT + t  # (..., N, 3) camera frame
    x = X @ K.mT  # (..., N, 3)
    z = X[..., 2]
    return x[..., :2] / x[..., 2:3], z
