"""Monocular teacher (paper §4.1) and its losses (Eq. 3-7) on closed-form cases."""

import math

import pytest
import torch

from da3_core.geometry.points import depth_to_camera_points
from da3_core.train.teacher import (
    TeacherNetwork,
    global_local_loss,
    mask_mse,
    normal_loss,
    ssi_loss,
    surface_normals,
    teacher_loss,
    tiny_teacher_config,
)

H, W = 28, 42
K = torch.tensor([[40.0, 0.0, 21.0], [0.0, 40.0, 14.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def tilted_plane(z0: float, a: float) -> torch.Tensor:
    """z-depth of the plane z = z0 + a x seen by K: z = z0 / (1 - a (u - cx) / fx)."""
    u = torch.arange(W, dtype=torch.float64)
    return (z0 / (1 - a * (u - K[0, 2]) / K[0, 0])).expand(H, W).clone()


def test_teacher_forward_backward_tiny():
    torch.manual_seed(0)
    net = TeacherNetwork(tiny_teacher_config())
    x = torch.randn(2, 3, H, W)
    out = net(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, H, W) for k in ("depth", "sky", "object")}
    assert (out["depth"] > 0).all()
    gt = 1.0 + torch.rand(2, H, W)
    loss, parts = teacher_loss(out, gt, K.float().expand(2, 3, 3), sky=torch.zeros(2, H, W, dtype=torch.bool),
                               objects=torch.zeros(2, H, W))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    assert set(parts) >= {"gl", "grad", "normal", "sky", "object", "total"}
    assert net(torch.randn(1, 2, 3, H, W))["depth"].shape == (1, 2, H, W)


def test_ssi_loss_zero_for_affine_and_hand_value():
    gt = 1.0 + torch.rand(3, H, W, dtype=torch.float64)
    mask = torch.ones_like(gt, dtype=torch.bool)
    loss, used = ssi_loss(0.3 * gt - 2.0, gt, mask)
    assert used.all() and loss.abs().max().item() < 1e-12
    gl, parts = global_local_loss(5.0 * gt + 1.0, gt, mask)
    assert gl.item() == pytest.approx(0.0, abs=1e-12) and parts["local"].item() == pytest.approx(0.0, abs=1e-12)
    # pred (0, 1, 2, 3) vs gt (1, 1, 1, 5): LS gives s = 1.2, t = 0.2; aligned (0.2, 1.4, 2.6, 3.8)
    # |err| = 0.8, 0.4, 1.6, 1.2 -> mean 1.0; mean gt = 2 -> loss 0.5
    p = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]], dtype=torch.float64)
    g = torch.tensor([[[1.0, 1.0], [1.0, 5.0]]], dtype=torch.float64)
    loss, _ = ssi_loss(p, g, torch.ones_like(p, dtype=torch.bool))
    assert loss.item() == pytest.approx(0.5)


def test_normal_loss_zero_for_planes_and_closed_form_for_tilt():
    mask = torch.ones(H, W, dtype=torch.bool)
    gt_pts = depth_to_camera_points(tilted_plane(3.0, 0.4), K)
    # same plane orientation, other offset and scale: normals agree everywhere
    loss, _ = normal_loss(depth_to_camera_points(tilted_plane(5.0, 0.4), K), gt_pts, mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    # fronto-parallel vs z = z0 + a x: normals (0, 0, 1) and (-a, 0, 1) / sqrt(1 + a^2)
    a = 0.4
    loss, _ = normal_loss(depth_to_camera_points(torch.full((H, W), 2.0, dtype=torch.float64), K), gt_pts, mask)
    assert loss.item() == pytest.approx(1.0 - 1.0 / math.sqrt(1.0 + a * a), rel=1e-9)


def test_normal_loss_distance_weighting_limits_discontinuity_leakage():
    depth = torch.full((H, W), 2.0, dtype=torch.float64)
    depth[:, W // 2:] = 20.0  # a step: two parallel planes
    pts = depth_to_camera_points(depth, K)
    n, ok = surface_normals(pts, torch.ones(H, W, dtype=torch.bool))
    assert ok.all()
    # at the step the averaged normal stays close to the plane normal (the long triangles get tiny weights)
    assert (n[..., 2] > 0.99).all()


def test_teacher_loss_zero_for_exact_prediction_and_mask_mse():
    gt = tilted_plane(3.0, 0.2).expand(2, H, W).clone()
    gt[1] = 4.0
    sky = torch.zeros(2, H, W, dtype=torch.bool)
    sky[:, :3] = True
    gt[sky] = float("inf")
    obj = torch.zeros(2, H, W)
    obj[:, 10:20, 10:20] = 1.0
    pred_depth = torch.where(sky, torch.ones_like(gt), 2.0 * gt + 0.5)  # affine in the valid region
    out = {"depth": pred_depth, "sky": sky.double(), "object": obj.clone()}
    total, parts = teacher_loss(out, gt, K.expand(2, 3, 3), sky=sky, objects=obj)
    assert total.item() == pytest.approx(0.0, abs=1e-9), parts
    # MSE of masks by hand: 4 wrong pixels of value 0.5 among 8 -> 4 * 0.25 / 8
    pred = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]])
    assert mask_mse(pred, target).item() == pytest.approx(0.125)
