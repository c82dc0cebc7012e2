"""depth_to_points / project_points: closed-form plane, round trips and the official unproject_depth."""

from __future__ import annotations

import pytest
import torch

from da3_core.geometry.points import depth_to_points, pixel_grid, project_points
from da3_core.geometry.quaternion import quat_xyzw_to_matrix

H, W = 21, 34


def make_camera(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.tensor([0.1, -0.2, 0.05, 1.0], dtype=dtype) + 0.05 * torch.randn(4, generator=g, dtype=dtype)
    R = quat_xyzw_to_matrix(q)
    t = torch.tensor([0.3, -0.2, 0.5], dtype=dtype)
    w2c = torch.cat((R, t[:, None]), -1)
    K = torch.tensor([[40.0, 0, 15.0], [0, 44.0, 11.5], [0, 0, 1]], dtype=dtype)
    return w2c, K


def test_plane_closed_form():
    """Depth of the world plane z = 6 seen by a rotated camera; the points must lie on it and reproject."""
    w2c, K = make_camera()
    R, t = w2c[:, :3], w2c[:, 3]
    C = -R.T @ t
    uv = pixel_grid(H, W, dtype=w2c.dtype)  # (H, W, 2) integer pixels (official convention)
    pix = torch.cat((uv, torch.ones(H, W, 1, dtype=w2c.dtype)), -1)
    ray_cam = pix @ torch.linalg.inv(K).T  # camera-frame rays with z = 1
    ray_world = ray_cam @ R  # R^T r, row-vector form
    depth = (6.0 - C[2]) / ray_world[..., 2]  # z-depth, because ray_cam has z = 1
    pts = depth_to_points(depth, w2c, K)
    assert pts.shape == (H, W, 3)
    torch.testing.assert_close(pts[..., 2], torch.full((H, W), 6.0, dtype=w2c.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(pts, C + depth[..., None] * ray_world, atol=1e-10, rtol=0)
    uv_back, z = project_points(pts.reshape(-1, 3), w2c, K)
    torch.testing.assert_close(uv_back, uv.reshape(-1, 2), atol=1e-9, rtol=0)
    torch.testing.assert_close(z, depth.reshape(-1), atol=1e-10, rtol=0)


def test_identity_camera_pixel_convention():
    """Pixel (row 0, col 0) unprojects at (u, v) = (0, 0): x = -cx / fx * depth (no half-pixel offset)."""
    K = torch.tensor([[10.0, 0, 4.0], [0, 20.0, 3.0], [0, 0, 1]])
    w2c = torch.eye(4)
    pts = depth_to_points(torch.full((6, 8), 2.0), w2c, K)
    torch.testing.assert_close(pts[0, 0], torch.tensor([-0.8, -0.3, 2.0]))
    torch.testing.assert_close(pts[3, 4], torch.tensor([0.0, 0.0, 2.0]))


def test_batched_round_trip_float32():
    w2c_list, K_list = zip(*(make_camera(s, torch.float32) for s in range(6)))
    w2c = torch.stack(w2c_list).reshape(2, 3, 3, 4)
    K = torch.stack(K_list).reshape(2, 3, 3, 3)
    depth = 1 + 4 * torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    pts = depth_to_points(depth, w2c, K)
    assert pts.shape == (2, 3, H, W, 3)
    uv, z = project_points(pts.reshape(2, 3, H * W, 3), w2c, K)
    torch.testing.assert_close(z, depth.reshape(2, 3, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(uv, pixel_grid(H, W).reshape(-1, 2).expand(2, 3, -1, -1), atol=1e-3, rtol=0)


def test_matches_official_unproject_depth():
    geometry = pytest.importorskip("depth_anything_3.utils.geometry")
    w2c_list, K_list = zip(*(make_camera(s) for s in range(3)))
    w2c = torch.stack(w2c_list)[None]  # (1, 3, 3, 4)
    K = torch.stack(K_list)[None]
    depth = 1 + torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c2w = geometry.affine_inverse(geometry.as_homogeneous(w2c))
    ref = geometry.unproject_depth(depth[..., None], K, c2w=c2w)
    torch.testing.assert_close(depth_to_points(depth, w2c, K), ref, atol=1e-10, rtol=0)
