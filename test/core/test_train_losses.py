"""Student losses (da3_core.train.losses) against hand-computed values (paper §3.3, Eq. 3)."""

import math

import numpy as np
import pytest
import torch

from da3_core.data.synthetic import intrinsics_from_fov, make_scene, make_trajectory, render_sequence
from da3_core.train.losses import (
    MIN_CAMERA_SPREAD,
    StudentLossConfig,
    camera_loss,
    camera_spread,
    depth_loss,
    gradient_loss,
    point_loss,
    ray_loss,
    student_loss,
    view_scale_loss,
)
from da3_core.train.targets import build_targets


@pytest.fixture(scope="module")
def synthetic_targets():
    scene = make_scene("room", seed=2)
    K = intrinsics_from_fov((42, 56), 70.0)
    frames = render_sequence(scene, make_trajectory(scene, 2, "walk", seed=2), K, (42, 56), normals=False, ids=False)
    depth = torch.from_numpy(np.stack([f.depth for f in frames])[None]).double()
    w2c = torch.from_numpy(np.stack([f.w2c for f in frames])[None])
    Ks = torch.from_numpy(np.stack([f.K for f in frames])[None])
    return build_targets(depth, w2c, Ks)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_depth_loss_confidence_weighted_by_hand():
    pred = t([[[[1.0, 2.0, 3.0, float("nan")]]]])
    gt = t([[[[1.5, 2.0, 1.0, 1.0]]]])
    conf = t([[[[1.0, 2.0, math.e, 1.0]]]])
    mask = torch.ones_like(pred, dtype=torch.bool)
    loss, parts = depth_loss(pred, gt, mask, conf, lambda_c=0.2)
    # pixel 3 is dropped (NaN prediction); errors 0.5, 0, 2; log c = 0, ln 2, 1
    expected = (1 * 0.5 + 2 * 0.0 + math.e * 2.0 - 0.2 * (0.0 + math.log(2) + 1.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert parts["l1"].item() == pytest.approx(2.5 / 3)
    plain, _ = depth_loss(pred, gt, mask)
    assert plain.item() == pytest.approx(2.5 / 3)


def test_gradient_loss_eq3_by_hand():
    pred = t([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
    gt = torch.zeros_like(pred)
    mask = torch.ones_like(pred, dtype=torch.bool)
    loss, parts = gradient_loss(pred, gt, mask)
    # x pairs: |1|, |2|, 0, 0 -> 0.75 ; y pairs: |2-0|, |2-1|, |2-3| -> 4/3
    assert parts["grad_x"].item() == pytest.approx(0.75)
    assert parts["grad_y"].item() == pytest.approx(4 / 3)
    assert loss.item() == pytest.approx(0.75 + 4 / 3)
    mask[0, 2] = False
    pred[0, 2] = float("inf")  # ignored pixel: must not leak
    loss, parts = gradient_loss(pred, gt, mask)
    assert loss.item() == pytest.approx(1 / 3 + 1.5)  # x: 1, 0, 0 ; y: 2, 1


def test_gradient_loss_is_shift_invariant_and_zero_for_exact():
    d = torch.rand(2, 5, 6, dtype=torch.float64)
    m = torch.ones_like(d, dtype=torch.bool)
    assert gradient_loss(d + 3.0, d, m)[0].item() == pytest.approx(0.0, abs=1e-12)


def test_ray_loss_by_hand():
    pred = torch.zeros(1, 1, 1, 2, 6, dtype=torch.float64)
    gt = pred.clone()
    gt[..., 0, :] = 1.0  # mean abs error 1
    gt[..., 1, 0] = 3.0  # mean abs error 0.5
    loss, _ = ray_loss(pred, gt)
    assert loss.item() == pytest.approx(0.75)
    conf = t([[[[1.0, 3.0]]]])
    loss, _ = ray_loss(pred, gt, None, conf, lambda_c=0.2)
    assert loss.item() == pytest.approx((1 * 1.0 + 3 * 0.5 - 0.2 * math.log(3)) / 2)
    loss, _ = ray_loss(pred, gt, torch.tensor([[[[False, True]]]]))
    assert loss.item() == pytest.approx(0.5)


def test_point_loss_by_hand():
    depth = t([[[[1.0, 2.0], [3.0, 4.0]]]])
    ray = torch.zeros(1, 1, 2, 2, 6, dtype=torch.float64)
    ray[..., 2] = 1.0  # d = (0, 0, 1)
    ray[..., 3] = 1.0  # origin (1, 0, 0)
    gt = torch.stack((torch.ones_like(depth), torch.zeros_like(depth), depth), -1)
    gt[0, 0, 1, 1, 2] = 1.0  # |4 - 1| = 3 on z -> mean over xyz = 1
    mask = torch.ones_like(depth, dtype=torch.bool)
    assert point_loss(depth, ray, gt, mask)[0].item() == pytest.approx(0.25)
    mask[0, 0, 0, 0] = False
    assert point_loss(depth, ray, gt, mask)[0].item() == pytest.approx(1 / 3)


def test_camera_loss_quaternion_sign_and_norm():
    pred = t([[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 1.0]]])  # q = -identity: the same rotation
    gt = t([[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.5]]])
    loss, parts = camera_loss(pred, gt)
    assert parts["t"].item() == pytest.approx(1.0)
    assert parts["q"].item() == pytest.approx(0.0)
    assert parts["f"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(1.5)
    # a 180-degree-apart quaternion on x: q = (1, 0, 0, 0) vs identity -> |q - q'| = 2 either sign
    pred2 = gt.clone()
    pred2[..., 3:7] = t([1.0, 0.0, 0.0, 0.0])
    assert camera_loss(pred2, gt)[1]["q"].item() == pytest.approx(2.0)
    assert camera_loss(pred, gt, torch.tensor([[False]]))[0].item() == 0.0
    # the raw quaternion's norm is penalised (|-2 q + q| = 1 on w), so it cannot drift away from 1
    pred3 = gt.clone()
    pred3[..., 3:7] = t([0.0, 0.0, 0.0, -2.0])
    assert camera_loss(pred3, gt)[1]["q"].item() == pytest.approx(1.0)


def test_camera_loss_rotation_gradient_does_not_shrink_with_quaternion_norm():
    """A long raw quaternion must not damp the rotation gradient (a normalised loss divides it by |q^|)."""
    s10 = math.sin(math.radians(5.0))  # ground truth: 10 degrees about y
    gt = t([[[0.0, 0.0, 0.0, 0.0, s10, 0.0, math.cos(math.radians(5.0)), 1.0, 1.0]]])
    grads = []
    for scale in (1.0, 5.0):
        pred = t([[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, scale, 1.0, 1.0]]]).requires_grad_(True)
        camera_loss(pred, gt)[0].backward()  # only the q part depends on element 4 (q_y)
        grads.append(pred.grad[0, 0, 4].item())
    assert grads[0] == pytest.approx(-1.0) and grads[1] == pytest.approx(-1.0)


def test_camera_loss_rotation_weight_and_degree_parts():
    """rot_weight scales only the quaternion part; rot_deg / rot_deg_identity are the geodesic angles (closed form:
    an x-axis rotation by a quaternion with components (sin a/2, cos a/2) turns by a), sign- and norm-invariant."""
    half = math.radians(12.0) / 2  # ground truth: 12 degrees about x; prediction: 3 degrees about x, scaled by 2
    gt = t([[[0.1, 0.0, 0.0, math.sin(half), 0.0, 0.0, math.cos(half), 1.0, 1.0]]])
    q3 = math.radians(3.0) / 2
    pred = t([[[0.0, 0.0, 0.0, -2 * math.sin(q3), 0.0, 0.0, -2 * math.cos(q3), 1.0, 1.0]]])
    plain, parts = camera_loss(pred, gt)
    weighted, _ = camera_loss(pred, gt, rot_weight=10.0)
    assert weighted.item() == pytest.approx(plain.item() + 9.0 * parts["q"].item())
    assert parts["t"].item() == pytest.approx(0.1)
    assert parts["rot_deg"].item() == pytest.approx(9.0, abs=1e-3)
    assert parts["rot_deg_identity"].item() == pytest.approx(12.0, abs=1e-3)


def _enc(ts) -> torch.Tensor:
    """(1, S, 9) encodings with the given translations, identity rotations and fov 1."""
    return t([[[*tv, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0] for tv in ts]])


def test_camera_loss_relative_translation_divides_by_the_camera_spread():
    """t_relative: each sample's translation L1 over its cameras' mean distance from the reference (closed form),
    floored at MIN_CAMERA_SPREAD; invariant to the window's size; masked views count in neither."""
    gt = _enc([(0.0, 0.0, 0.0), (3.0, 0.0, 0.0), (0.0, 4.0, 3.0)])  # distances 3 and 5 -> spread 4
    pred = _enc([(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)])  # L1 errors 0, 2, 7
    assert camera_spread(gt[..., :3], torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(4.0)
    assert camera_loss(pred, gt)[1]["t"].item() == pytest.approx(9 / 3)
    assert camera_loss(pred, gt, t_relative=True)[1]["t"].item() == pytest.approx(9 / 3 / 4)
    for c in (0.01, 100.0):  # the same window at 1/100 or 100x its size costs the same (spread 0.04 >= floor)
        assert camera_loss(pred * t([c] * 3 + [1.0] * 6), gt * t([c] * 3 + [1.0] * 6), t_relative=True)[1][
            "t"].item() == pytest.approx(9 / 3 / 4)
    # a masked view leaves the spread (now 3: one other camera) and the mean (over 2 views: errors 0, 2)
    mask = torch.tensor([[True, True, False]])
    assert camera_loss(pred, gt, mask, t_relative=True)[1]["t"].item() == pytest.approx(2 / 2 / 3)
    # a window that does not move (a pan): the floor, not a division by zero
    still = _enc([(0.0, 0.0, 0.0)] * 3)
    moved = _enc([(0.0, 0.0, 0.0), (0.01, 0.0, 0.0), (0.0, 0.0, 0.0)])
    assert camera_loss(moved, still, t_relative=True)[1]["t"].item() == pytest.approx(0.01 / 3 / MIN_CAMERA_SPREAD)
    # two samples, each over its own spread
    both = camera_loss(torch.cat([pred, moved]), torch.cat([gt, still]), t_relative=True)[1]["t"].item()
    assert both == pytest.approx((9 / 4 + 0.01 / MIN_CAMERA_SPREAD) / 6)


def test_view_scale_loss_is_the_spread_of_the_views_log_scales(synthetic_targets):
    gt, valid = synthetic_targets.depth, synthetic_targets.valid  # (1, 2, H, W)
    # one factor for the whole window costs nothing, whatever it is
    assert view_scale_loss(gt * 3.7, gt, valid)[0].item() == pytest.approx(0.0, abs=1e-12)
    # view j's depth off by c_j: the loss is the mean |log c_j - mean_k log c_k| (closed form)
    c = torch.tensor([1.0, 1.6], dtype=gt.dtype)
    expected = float((c.log() - c.log().mean()).abs().mean())
    assert view_scale_loss(gt * c[None, :, None, None], gt, valid)[0].item() == pytest.approx(expected, rel=1e-9)
    # a view without valid pixels is left out; a sample left with one view has no spread; gradients stay finite
    pred = (gt * c[None, :, None, None]).clone().requires_grad_(True)
    only_first = valid.clone()
    only_first[:, 1] = False
    loss = view_scale_loss(pred, gt, only_first)[0]
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()
    # in student_loss under its own weight
    outputs = {"depth": gt * c[None, :, None, None], "ray": synthetic_targets.ray.clone()}
    _, parts = student_loss(outputs, synthetic_targets, StudentLossConfig(beta=0.0, view_scale_weight=2.0))
    assert parts["vscale"].item() == pytest.approx(expected, rel=1e-9)
    assert "vscale" not in student_loss(outputs, synthetic_targets, StudentLossConfig(beta=0.0))[1]


def test_losses_are_nan_safe_in_gradients():
    pred = torch.tensor([[[[1.0, float("nan"), 2.0]]]], requires_grad=True)
    gt = torch.tensor([[[[1.5, 1.0, float("inf")]]]])
    conf = torch.tensor([[[[2.0, float("nan"), 1.0]]]], requires_grad=True)
    mask = torch.tensor([[[[True, True, True]]]])
    loss = depth_loss(pred, gt, mask, conf)[0] + gradient_loss(pred, gt, mask)[0]
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all() and torch.isfinite(conf.grad).all()
    empty = depth_loss(pred, gt, torch.zeros_like(mask))[0]
    assert empty.item() == 0.0


def test_student_loss_zero_for_perfect_prediction(synthetic_targets):
    tg = synthetic_targets
    B, S, H, W = tg.depth.shape
    outputs = {
        "depth": tg.depth.clone(),
        "depth_conf": torch.ones_like(tg.depth),
        "ray": tg.ray.clone(),
        "ray_conf": torch.ones(tg.ray.shape[:-1], dtype=tg.ray.dtype),
        "pose_enc": tg.pose_enc.clone(),
    }
    total, parts = student_loss(outputs, tg)
    assert total.item() == pytest.approx(0.0, abs=1e-9)
    for k in ("depth", "ray", "point", "camera", "grad"):
        assert k in parts
    outputs["depth"] = outputs["depth"] * 1.1
    total2, parts2 = student_loss(outputs, tg, StudentLossConfig(alpha=0.0, beta=0.0))
    assert parts2["depth"].item() > 0 and "camera" not in parts2


def test_student_loss_on_a_tiny_network_backward(synthetic_targets):
    from da3_core.config import reduced
    from da3_core.registry import build_network, get_config

    torch.manual_seed(0)
    net = build_network(reduced(get_config("da3-small"), depth=4, out_layers=(0, 1, 2, 3), alt_start=2,
                                cam_trunk_depth=1))
    tg = synthetic_targets.to("cpu")
    tg = build_targets(tg.depth.float() * tg.scale.float()[:, None, None, None], tg.w2c.float(), tg.K.float())
    x = torch.randn(1, 2, 3, 42, 56)
    out = net(x)
    total, parts = student_loss(out, tg)
    total.backward()
    assert torch.isfinite(total) and parts["camera"] > 0
    grads = [p.grad for p in net.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
