"""Ray-map pose solver: golden ray-pose case and closed-form synthetic cameras (live official: *_official.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.golden import load_npz

from da3_core.geometry.quaternion import quat_xyzw_to_matrix
from da3_core.geometry.ray_solver import cameras_to_rays, rays_to_cameras

IMAGE_HW = (280, 504)
RAY_HW = (40, 72)


@pytest.fixture(scope="module")
def golden_rays():
    mv3 = load_npz("da3-small", "case_mv3.npz")
    ref = load_npz("da3-small", "case_raypose3.npz")
    return torch.from_numpy(mv3["ray"]), torch.from_numpy(mv3["ray_conf"]), ref


def test_golden_raypose3(golden_rays):
    """Seed 0 right before the solver, stored rays -> the official ray-pose output.

    Not bitwise: the official code run live here differs from the stored golden by the same amount (extrinsics
    3.0e-6 abs, fx 2.7e-5 rel; the final 8000-point SVD is sensitive to the LAPACK build), while the RANSAC inlier
    sets agree (a different set changes extrinsics by O(1), README section 8).
    """
    ray, conf, ref = golden_rays
    torch.manual_seed(0)
    w2c, K = rays_to_cameras(ray, conf, IMAGE_HW)
    np.testing.assert_allclose(w2c.numpy(), ref["extrinsics"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(K.numpy(), ref["intrinsics"], rtol=1e-4, atol=1e-4)


def synthetic_cameras(dtype=torch.float64, off_centre: bool = False):
    """(1, 4, 3, 4) w2c and (1, 4, 3, 3) K with various focal lengths, aspect ratios and rotations."""
    g = torch.Generator().manual_seed(7)
    R = quat_xyzw_to_matrix(torch.randn(1, 4, 4, generator=g, dtype=dtype))
    t = torch.randn(1, 4, 3, 1, generator=g, dtype=dtype) * 2
    K = torch.zeros(1, 4, 3, 3, dtype=dtype)
    K[..., 0, 0] = torch.tensor([180.0, 350.0, 520.0, 900.0], dtype=dtype)
    K[..., 1, 1] = torch.tensor([200.0, 330.0, 520.0, 820.0], dtype=dtype)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = IMAGE_HW[1] / 2, IMAGE_HW[0] / 2, 1
    if off_centre:
        K[..., 0, 2] = torch.tensor([220.0, 275.0, 252.0, 300.0], dtype=dtype)
        K[..., 1, 2] = torch.tensor([118.0, 150.0, 165.0, 140.0], dtype=dtype)
    return torch.cat((R, t), -1), K


def test_cameras_to_rays_closed_form():
    """origin + z-depth * d is a world point that projects (with K) to the ray-map cell centre."""
    w2c, K = synthetic_cameras(off_centre=True)
    rays = cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW)
    h, w = RAY_HW
    assert rays.shape == (1, 4, h, w, 6)
    depth = 1.5 + torch.rand(1, 4, h, w, generator=torch.Generator().manual_seed(0), dtype=w2c.dtype)
    X = rays[..., 3:] + depth[..., None] * rays[..., :3]
    R, t = w2c[..., :3], w2c[..., 3]
    Xc = torch.einsum("bsij,bshwj->bshwi", R, X) + t[:, :, None, None]
    torch.testing.assert_close(Xc[..., 2], depth, atol=1e-10, rtol=0)
    uv = torch.einsum("bsij,bshwj->bshwi", K, Xc)[..., :2] / Xc[..., 2:3]
    cols = (torch.arange(w, dtype=w2c.dtype) + 0.5) * IMAGE_HW[1] / w
    rows = (torch.arange(h, dtype=w2c.dtype) + 0.5) * IMAGE_HW[0] / h
    torch.testing.assert_close(uv[..., 0], cols.expand(1, 4, h, w), atol=1e-9, rtol=0)
    torch.testing.assert_close(uv[..., 1], rows[:, None].expand(1, 4, h, w), atol=1e-9, rtol=0)
    centres = -(R.mT @ t[..., None]).squeeze(-1)
    torch.testing.assert_close(rays[..., 3:], centres[:, :, None, None].expand(1, 4, h, w, 3))


@pytest.mark.parametrize("dtype,atol_ext,atol_K", [(torch.float64, 1e-8, 1e-5), (torch.float32, 1e-4, 1e-2)])
def test_round_trip_centred_principal_point(dtype, atol_ext, atol_K):
    w2c, K = synthetic_cameras(dtype)
    rays = cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW)
    w2c_hat, K_hat = rays_to_cameras(rays, None, IMAGE_HW, torch.Generator().manual_seed(0))
    assert w2c_hat.dtype == dtype and K_hat.dtype == dtype
    torch.testing.assert_close(w2c_hat, w2c, atol=atol_ext, rtol=0)
    torch.testing.assert_close(K_hat, K, atol=atol_K, rtol=0)


def test_round_trip_off_centre_principal_point_qr():
    w2c, K = synthetic_cameras(off_centre=True)
    rays = cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW)
    w2c_hat, K_hat = rays_to_cameras(rays, None, IMAGE_HW, torch.Generator().manual_seed(0), decomposition="qr")
    torch.testing.assert_close(w2c_hat, w2c, atol=1e-8, rtol=0)
    torch.testing.assert_close(K_hat, K, atol=1e-5, rtol=0)


def _corrupt(rays: torch.Tensor, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bad = torch.rand(rays.shape[:-1], generator=g, dtype=rays.dtype) < frac
    noisy = rays.clone()
    noise = torch.randn(*rays.shape[:-1], 3, generator=g, dtype=rays.dtype) * 2
    noisy[..., :3] = torch.where(bad[..., None], rays[..., :3] + noise, rays[..., :3])
    return noisy, bad


def test_ransac_rejects_low_confidence_outliers():
    w2c, K = synthetic_cameras()
    rays, bad = _corrupt(cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW), 0.3, seed=1)
    g = torch.Generator().manual_seed(2)
    conf = torch.where(bad, 0.05, 1.0 + torch.rand(bad.shape, generator=g, dtype=rays.dtype))
    w2c_hat, K_hat = rays_to_cameras(rays, conf, IMAGE_HW, torch.Generator().manual_seed(0))
    torch.testing.assert_close(w2c_hat, w2c, atol=1e-3, rtol=0)
    torch.testing.assert_close(K_hat, K, rtol=2e-3, atol=0.5)


def test_ransac_rejects_outliers_with_equal_confidence():
    """30 % corrupted directions with the same confidence as the clean rays: only the consensus can reject them."""
    w2c, K = synthetic_cameras()
    rays, bad = _corrupt(cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW), 0.3, seed=4)
    w2c_hat, K_hat = rays_to_cameras(rays, None, IMAGE_HW, torch.Generator().manual_seed(0))
    torch.testing.assert_close(w2c_hat, w2c, atol=1e-2, rtol=0)
    torch.testing.assert_close(K_hat, K, rtol=2e-2, atol=0.5)


def test_seeded_generator_is_reproducible_and_leaves_global_rng_alone():
    w2c, K = synthetic_cameras(torch.float32)
    rays, _ = _corrupt(cameras_to_rays(w2c, K, IMAGE_HW, RAY_HW), 0.3, seed=5)
    state = torch.get_rng_state()
    a = rays_to_cameras(rays, None, IMAGE_HW, torch.Generator().manual_seed(11))
    assert torch.equal(torch.get_rng_state(), state)
    b = rays_to_cameras(rays, None, IMAGE_HW, torch.Generator().manual_seed(11))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
