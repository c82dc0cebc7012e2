"""Ray / point / camera targets (da3_core.train.targets) are consistent with each other on synthetic ground truth."""

import numpy as np
import pytest
import torch

from da3_core.data.synthetic import intrinsics_from_fov, make_scene, make_trajectory, render_sequence
from da3_core.geometry.points import depth_to_points
from da3_core.geometry.pose_encoding import encoding_to_cameras
from da3_core.geometry.ray_solver import cameras_to_rays
from da3_core.geometry.transforms import to_homogeneous
from da3_core.train.targets import (
    build_targets,
    points_from_depth_and_rays,
    ray_resolution,
    resample_rays,
)

HW = (42, 56)


@pytest.fixture(scope="module")
def gt():
    scene = make_scene("courtyard", seed=5)  # outdoor: has sky (invalid depth)
    K = intrinsics_from_fov(HW, 75.0)
    frames = render_sequence(scene, make_trajectory(scene, 3, "auto", seed=5), K, HW, normals=False, ids=False)
    depth = torch.from_numpy(np.stack([np.where(f.sky, np.nan, f.depth) for f in frames])[None]).double()
    w2c = torch.from_numpy(np.stack([f.w2c for f in frames])[None])
    Ks = torch.from_numpy(np.stack([f.K for f in frames])[None])
    return depth, w2c, Ks


def test_ray_resolution_matches_dualdpt():
    assert ray_resolution((280, 504)) == (160, 288)  # facts §2.2 example
    with pytest.raises(ValueError):
        ray_resolution((100, 504))


def test_points_from_depth_and_rays_equal_unprojected_depth(gt):
    depth, w2c, K = gt
    tg = build_targets(depth, w2c, K)
    assert tg.ray.shape == (1, 3, 24, 32, 6) and tg.points.shape == (1, 3, *HW, 3)
    assert tg.valid.any() and not tg.valid.all()  # sky is invalid
    pts = points_from_depth_and_rays(tg.depth, tg.ray)
    v = tg.valid
    torch.testing.assert_close(pts[v], tg.points[v], rtol=0, atol=1e-9)
    # and against the metric world points, mapped into camera 0's frame and scaled
    world = depth_to_points(torch.nan_to_num(depth), w2c, K)  # (1, 3, H, W, 3)
    T0 = to_homogeneous(w2c[:, 0])
    cam0 = world @ T0[:, None, None, :3, :3].mT + T0[:, None, None, None, :3, 3]
    torch.testing.assert_close(tg.points[v] * tg.scale[0], cam0[v], rtol=0, atol=1e-9)


def test_normalised_targets_have_unit_mean_point_norm(gt):
    depth, w2c, K = gt
    tg = build_targets(depth, w2c, K)
    assert tg.points[tg.valid].norm(dim=-1).mean().item() == pytest.approx(1.0, abs=1e-12)
    raw = build_targets(depth, w2c, K, normalise=False)
    assert raw.scale.item() == 1.0
    assert raw.points[raw.valid].norm(dim=-1).mean().item() == pytest.approx(tg.scale.item(), rel=1e-12)
    torch.testing.assert_close(raw.depth / tg.scale, tg.depth)


def test_camera_targets_decode_to_gt_cameras(gt):
    depth, w2c, K = gt
    tg = build_targets(depth, w2c, K)
    assert torch.allclose(tg.w2c[0, 0], torch.eye(4, dtype=tg.w2c.dtype), atol=1e-12)  # camera 0 is the world
    w2c_dec, K_dec = encoding_to_cameras(tg.pose_enc, HW)
    torch.testing.assert_close(w2c_dec, tg.w2c[..., :3, :], rtol=0, atol=1e-9)
    torch.testing.assert_close(K_dec, K, rtol=0, atol=1e-9)
    # the ray map's origins are the camera centres of the decoded cameras
    torch.testing.assert_close(tg.ray, cameras_to_rays(w2c_dec, K_dec, HW, (24, 32)), rtol=0, atol=1e-9)


def test_resample_rays_exact_for_pinhole_and_differentiable():
    w2c = torch.eye(4, dtype=torch.float64)[None, :3].clone()
    w2c[0, :3, 3] = torch.tensor([0.1, -0.2, 0.3])
    K = torch.tensor([[[30.0, 0.0, 27.0], [0.0, 31.0, 20.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    coarse = cameras_to_rays(w2c, K, HW, (24, 32))
    fine = resample_rays(coarse, HW)
    ones = torch.ones(1, *HW, dtype=torch.float64)
    torch.testing.assert_close(fine[..., 3:] + fine[..., :3], depth_to_points(ones, w2c, K), rtol=0, atol=1e-12)
    r = coarse.clone().requires_grad_(True)
    resample_rays(r, HW).sum().backward()
    assert torch.isfinite(r.grad).all()


def test_build_targets_masks_and_pose_valid(gt):
    depth, w2c, K = gt
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[..., :10, :] = False
    tg = build_targets(depth.float(), w2c.float(), K.float(), mask=mask, pose_valid=torch.tensor([[True, False, True]]))
    assert tg.depth.dtype == torch.float32
    assert not tg.valid[..., :10, :].any()
    assert tg.ray_valid[0, 1].sum() == 0 and tg.ray_valid[0, 0].all()
    assert torch.isfinite(tg.depth).all() and torch.isfinite(tg.points).all()
