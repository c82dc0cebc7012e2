"""quat_xyzw_to_matrix / matrix_to_quat_xyzw against closed-form rotations and the official functions."""

from __future__ import annotations

import math

import pytest
import torch

from da3_core.geometry.quaternion import matrix_to_quat_xyzw, quat_xyzw_to_matrix


def axis_angle_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, independent reference. axis (..., 3) unit, angle (...)."""
    kx, ky, kz = axis.unbind(-1)
    zero = torch.zeros_like(kx)
    Kx = torch.stack(
        (torch.stack((zero, -kz, ky), -1), torch.stack((kz, zero, -kx), -1), torch.stack((-ky, kx, zero), -1)), -2
    )
    eye = torch.eye(3, dtype=axis.dtype).expand_as(Kx)
    s, c = angle.sin()[..., None, None], angle.cos()[..., None, None]
    return eye + s * Kx + (1 - c) * (Kx @ Kx)


def random_axis_angle(n: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(n, generator=g, dtype=dtype) * math.pi
    return axis, angle


def test_unit_quaternion_matches_rodrigues():
    axis, angle = random_axis_angle(64)
    q = torch.cat((axis * (angle / 2).sin()[:, None], (angle / 2).cos()[:, None]), -1)  # xyzw
    torch.testing.assert_close(quat_xyzw_to_matrix(q), axis_angle_matrix(axis, angle), atol=1e-12, rtol=0)


def test_unnormalised_quaternion_gives_same_rotation():
    axis, angle = random_axis_angle(32, seed=1)
    q = torch.cat((axis * (angle / 2).sin()[:, None], (angle / 2).cos()[:, None]), -1)
    scale = torch.linspace(0.05, 7.0, 32, dtype=torch.float64)[:, None]
    torch.testing.assert_close(quat_xyzw_to_matrix(q * scale), axis_angle_matrix(axis, angle), atol=1e-12, rtol=0)
    torch.testing.assert_close(quat_xyzw_to_matrix(-q), quat_xyzw_to_matrix(q), atol=1e-12, rtol=0)


def test_batched_shapes():
    q = torch.randn(2, 3, 5, 4)
    R = quat_xyzw_to_matrix(q)
    assert R.shape == (2, 3, 5, 3, 3)
    torch.testing.assert_close(R @ R.mT, torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    assert matrix_to_quat_xyzw(R).shape == (2, 3, 5, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_to_quat_round_trip_all_branches(dtype):
    axis, angle = random_axis_angle(200, dtype=dtype, seed=2)
    # add the cases that select each Shepperd branch: identity (w), pi about x / y / z, and near-pi rotations
    special_axes = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 2 + [[1, 1, 1]], dtype=dtype)
    special_axes = special_axes / special_axes.norm(dim=-1, keepdim=True)
    special_angles = torch.tensor([math.pi] * 3 + [math.pi - 1e-3] * 3 + [0.0], dtype=dtype)
    axis = torch.cat((axis, special_axes))
    angle = torch.cat((angle, special_angles))
    R = axis_angle_matrix(axis, angle)
    q = matrix_to_quat_xyzw(R)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(q.norm(dim=-1), torch.ones_like(angle), atol=atol, rtol=0)
    torch.testing.assert_close(quat_xyzw_to_matrix(q), R, atol=atol * 2, rtol=0)
    # the expected quaternion up to sign, canonicalised to w >= 0
    expected = torch.cat((axis * (angle / 2).sin()[:, None], (angle / 2).cos()[:, None]), -1)
    assert (q[:, 3] >= 0).all()
    sign = torch.where(expected[:, 3:] * q[:, 3:] < 0, -1.0, 1.0).to(dtype)
    close_to_pi = angle > math.pi - 1e-2  # w ~ 0: compare up to sign instead
    err = torch.minimum((q - expected).abs().amax(-1), (q + expected).abs().amax(-1))
    assert err.max() < (1e-5 if dtype == torch.float32 else 1e-10)
    torch.testing.assert_close((q * sign)[~close_to_pi], expected[~close_to_pi], atol=atol * 5, rtol=0)


def test_matches_official_quaternion_functions():
    transform = pytest.importorskip("depth_anything_3.model.utils.transform")
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 50, 4, generator=g) * torch.rand(4, 50, 1, generator=g) * 3  # raw, non-unit
    torch.testing.assert_close(quat_xyzw_to_matrix(q), transform.quat_to_mat(q), atol=1e-7, rtol=0)
    R = transform.quat_to_mat(q.double())
    ours = matrix_to_quat_xyzw(R)
    theirs = transform.mat_to_quat(R)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
