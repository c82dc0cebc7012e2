"""Rigid transform helpers against torch.linalg.inv and the official affine_inverse."""

from __future__ import annotations

import pytest
import torch

from da3_core.geometry.quaternion import quat_xyzw_to_matrix
from da3_core.geometry.transforms import camera_centers, compose, invert_extrinsics, relative_pose, to_homogeneous


def random_w2c(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = quat_xyzw_to_matrix(torch.randn(*shape, 4, generator=g, dtype=dtype))
    t = torch.randn(*shape, 3, 1, generator=g, dtype=dtype) * 3
    return torch.cat((R, t), -1)


def test_to_homogeneous():
    T = random_w2c(2, 3)
    H = to_homogeneous(T)
    assert H.shape == (2, 3, 4, 4)
    torch.testing.assert_close(H[..., :3, :], T)
    torch.testing.assert_close(H[..., 3, :], torch.tensor([0, 0, 0, 1.0], dtype=T.dtype).expand(2, 3, 4))
    assert to_homogeneous(H) is H
    with pytest.raises(ValueError):
        to_homogeneous(torch.zeros(3, 3))


def test_invert_matches_matrix_inverse():
    T = random_w2c(5, 4)
    H = to_homogeneous(T)
    inv34 = invert_extrinsics(T)
    inv44 = invert_extrinsics(H)
    assert inv34.shape == (5, 4, 3, 4) and inv44.shape == (5, 4, 4, 4)
    ref = torch.linalg.inv(H)
    torch.testing.assert_close(inv44, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(inv34, ref[..., :3, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(compose(T, inv34), torch.eye(4, dtype=T.dtype).expand(5, 4, 4, 4), atol=1e-12, rtol=0)


def test_camera_centres_and_relative_pose():
    T = random_w2c(6)
    C = camera_centers(T)
    # the centre maps to the camera origin
    origin = (T[..., :3, :3] @ C[..., None]).squeeze(-1) + T[..., :3, 3]
    torch.testing.assert_close(origin, torch.zeros(6, 3, dtype=T.dtype), atol=1e-12, rtol=0)
    rel = relative_pose(T[:3], T[3:])
    X = torch.randn(3, 3, dtype=T.dtype)  # world points, one per pair
    x_a = (T[:3, :3, :3] @ X[..., None]).squeeze(-1) + T[:3, :3, 3]
    x_b = (T[3:, :3, :3] @ X[..., None]).squeeze(-1) + T[3:, :3, 3]
    x_b_hat = (rel[..., :3, :3] @ x_a[..., None]).squeeze(-1) + rel[..., :3, 3]
    torch.testing.assert_close(x_b_hat, x_b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_official_affine_inverse(dtype):
    geometry = pytest.importorskip("depth_anything_3.utils.geometry")
    T = random_w2c(2, 3, seed=4, dtype=dtype)
    torch.testing.assert_close(invert_extrinsics(T), geometry.affine_inverse(T), atol=0, rtol=0)
    H = to_homogeneous(T)
    torch.testing.assert_close(invert_extrinsics(H), geometry.affine_inverse(H), atol=0, rtol=0)
