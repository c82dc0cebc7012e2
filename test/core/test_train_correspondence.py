"""Patch correspondences (da3_core.train.correspondence) against closed-form geometry: a pure rotation maps pixels
by K R K^-1, a fronto-parallel plane under translation by its plane homography, occluded points are excluded."""

import numpy as np
import pytest
import torch

from da3_core.data.synthetic import intrinsics_from_fov, make_scene, make_trajectory, render_sequence
from da3_core.data.synthetic.camera import rotvec_to_matrix
from da3_core.train.correspondence import (
    bilinear_patch_targets,
    intrinsics_inverse,
    matches_into_view,
    patch_centres,
    patch_correspondences,
    project_patch_centres,
)

P = 14
H, W = 56, 84  # 4 x 6 patches


def _K() -> torch.Tensor:
    return torch.tensor(intrinsics_from_fov((H, W), 70.0), dtype=torch.float64)


def _apply_homography(Hm: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    x = torch.cat((uv, torch.ones_like(uv[:, :1])), -1) @ Hm.T
    return x[:, :2] / x[:, 2:]


def _two_views(depth_j, depth_i, w2c_i):
    depth = torch.stack((depth_j, depth_i))[None]
    w2c = torch.stack((torch.eye(4, dtype=torch.float64), w2c_i))[None]
    return depth, w2c, torch.stack((_K(), _K()))[None]


def test_patch_centres_in_row_major_order():
    a = patch_centres((2, 3), P)
    assert a.tolist() == [[6.5, 6.5], [20.5, 6.5], [34.5, 6.5], [6.5, 20.5], [20.5, 20.5], [34.5, 20.5]]


def test_pure_rotation_maps_pixels_by_K_R_Kinv_whatever_the_depth():
    R = torch.tensor(rotvec_to_matrix(np.array([0.02, 0.15, -0.03])), dtype=torch.float64)
    w2c_i = torch.eye(4, dtype=torch.float64)
    w2c_i[:3, :3] = R
    gen = torch.Generator().manual_seed(0)
    depth_j = 1.0 + 4.0 * torch.rand(H, W, generator=gen, dtype=torch.float64)
    depth, w2c, K = _two_views(depth_j, depth_j.clone(), w2c_i)
    uv, _ = project_patch_centres(depth, w2c, K, P)
    anchors = patch_centres((H // P, W // P), P, dtype=torch.float64)
    want = _apply_homography(_K() @ R @ torch.linalg.inv(_K()), anchors)
    assert torch.allclose(uv[0, 0, :, 1], want, atol=1e-9)
    # and back: view i -> view j by the inverse rotation
    want_back = _apply_homography(_K() @ R.T @ torch.linalg.inv(_K()), anchors)
    assert torch.allclose(uv[0, 1, :, 0], want_back, atol=1e-9)


@pytest.fixture
def plane_pair():
    """Camera j at the origin, camera i translated by c; a fronto-parallel plane Z = d seen by both."""
    d = 3.0
    c = torch.tensor([0.4, -0.1, 0.5], dtype=torch.float64)
    w2c_i = torch.eye(4, dtype=torch.float64)
    w2c_i[:3, 3] = -c
    depth_j = torch.full((H, W), d, dtype=torch.float64)
    depth_i = torch.full((H, W), d - float(c[2]), dtype=torch.float64)
    t = -c  # X_i = X_j + t
    n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    homography = _K() @ (torch.eye(3, dtype=torch.float64) + torch.outer(t, n) / d) @ torch.linalg.inv(_K())
    return depth_j, depth_i, w2c_i, homography


def test_fronto_parallel_plane_under_translation_follows_its_homography(plane_pair):
    depth_j, depth_i, w2c_i, homography = plane_pair
    depth, w2c, K = _two_views(depth_j, depth_i, w2c_i)
    uv, valid = project_patch_centres(depth, w2c, K, P)
    anchors = patch_centres((H // P, W // P), P, dtype=torch.float64)
    want = _apply_homography(homography, anchors)
    assert torch.allclose(uv[0, 0, :, 1], want, atol=1e-9)
    inside = (want[:, 0] >= -0.5) & (want[:, 0] < W - 0.5) & (want[:, 1] >= -0.5) & (want[:, 1] < H - 0.5)
    assert 0 < inside.sum() < len(inside)  # some points leave the image: they must not count
    assert torch.equal(valid[0, 0, :, 1], inside)
    assert not valid[0, :, :, :].diagonal(dim1=0, dim2=2).any()  # never a view with itself


def test_occluded_points_are_excluded(plane_pair):
    depth_j, depth_i, w2c_i, homography = plane_pair
    occluded = depth_i.clone()
    occluded[:, : W // 2] = 1.0  # something closer than the plane covers the left half of view i
    depth, w2c, K = _two_views(depth_j, occluded, w2c_i)
    _, valid = project_patch_centres(depth, w2c, K, P)
    want = _apply_homography(homography, patch_centres((H // P, W // P), P, dtype=torch.float64))
    inside = (want[:, 0] >= -0.5) & (want[:, 0] < W - 0.5) & (want[:, 1] >= -0.5) & (want[:, 1] < H - 0.5)
    hidden = torch.round(want[:, 0]) < W // 2
    assert (inside & hidden).any() and (inside & ~hidden).any()
    assert torch.equal(valid[0, 0, :, 1], inside & ~hidden)


def test_unknown_anchor_depth_is_never_matched(plane_pair):
    depth_j, depth_i, w2c_i, _ = plane_pair
    holes = depth_j.clone()
    holes[:P] = float("nan")  # the first patch row has no depth (sky)
    depth, w2c, K = _two_views(holes, depth_i, w2c_i)
    _, valid = project_patch_centres(depth, w2c, K, P)
    assert not valid[0, 0, : W // P].any()
    assert valid[0, 0, W // P:].any()


def test_bilinear_targets_average_back_to_the_point():
    grid = (4, 6)
    gen = torch.Generator().manual_seed(1)
    # points strictly between the outermost patch centres (6.5 .. 76.5, 6.5 .. 48.5)
    uv = torch.stack((6.5 + 70 * torch.rand(200, generator=gen), 6.5 + 42 * torch.rand(200, generator=gen)), -1)
    index, weight = bilinear_patch_targets(uv, torch.ones(200, dtype=torch.bool), grid, P)
    centres = torch.stack(((index % 6) * P + 6.5, (index // 6) * P + 6.5), -1).float()  # (200, 4, 2)
    assert torch.allclose(weight.sum(-1), torch.ones(200))
    assert torch.allclose((weight[..., None] * centres).sum(1), uv, atol=1e-4)
    # a point beyond the outermost centre goes to that patch; invalid points get no weight
    index, weight = bilinear_patch_targets(torch.tensor([[-0.4, 2.0], [83.0, 55.0]]), torch.tensor([True, False]),
                                           grid, P)
    assert index[0][weight[0] > 0].unique().tolist() == [0]
    assert weight[1].sum() == 0


def test_rendered_scene_correspondences_land_on_the_same_surface_point():
    """On a rendered room walk, every matched anchor's 3-D point, re-read from view i's depth at the target, is the
    same point (the depth test and projection agree with the renderer's geometry)."""
    hw = (70, 98)
    scene = make_scene("room", seed=3)
    K = intrinsics_from_fov(hw, 70.0)
    frames = render_sequence(scene, make_trajectory(scene, 12, "walk", seed=3)[[0, 2, 4]], K, hw, normals=False,
                             ids=False)
    depth = torch.from_numpy(np.stack([f.depth for f in frames])[None]).double()
    w2c = torch.from_numpy(np.stack([f.w2c for f in frames])[None])
    Ks = torch.from_numpy(np.stack([f.K for f in frames])[None])
    uv, valid = project_patch_centres(depth, w2c, Ks, P)
    assert valid.float().mean() > 0.3
    m = patch_correspondences(depth, w2c, Ks, P)
    assert torch.equal(m.valid, valid)
    # world point of the centre pixel vs world point of view i's depth at the rounded target pixel
    anchors = (patch_centres((hw[0] // P, hw[1] // P), P) + 0.5).floor().long()
    for j in range(3):
        for i in range(3):
            sel = valid[0, j, :, i]
            if not sel.any():
                continue
            a = anchors[sel]
            Xj = _world(depth[0, j], w2c[0, j], Ks[0, j], a[:, 0].double(), a[:, 1].double())
            u, v = torch.round(uv[0, j, sel, i, 0]), torch.round(uv[0, j, sel, i, 1])
            Xi = _world(depth[0, i], w2c[0, i], Ks[0, i], u, v)
            scale = Xj.norm(dim=-1).clamp_min(1.0)
            # the nearest pixel is up to half a pixel off: allow the surface distance that spans
            assert ((Xi - Xj).norm(dim=-1) / scale).median() < 0.03


def _world(depth, w2c, K, u, v):
    d = depth[v.long(), u.long()]
    X = torch.stack(((u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d), -1)
    return (X - w2c[:3, 3]) @ w2c[:3, :3]



def test_intrinsics_inverse_closed_form():
    """The closed-form K^-1 (no solver, no host sync) equals the LU inverse, skew and principal point included."""
    g = torch.Generator().manual_seed(0)
    K = torch.zeros(4, 3, 3, 3, dtype=torch.float64)
    K[..., 0, 0] = 50 + 100 * torch.rand(4, 3, generator=g)
    K[..., 1, 1] = 50 + 100 * torch.rand(4, 3, generator=g)
    K[..., 0, 1] = torch.randn(4, 3, generator=g)
    K[..., 0, 2] = 200 * torch.rand(4, 3, generator=g)
    K[..., 1, 2] = 200 * torch.rand(4, 3, generator=g)
    K[..., 2, 2] = 1
    torch.testing.assert_close(intrinsics_inverse(K), torch.linalg.inv(K), rtol=1e-12, atol=1e-12)


def test_matches_into_the_reference_view_keep_only_its_targets():
    """Three views turned about the same centre (pure rotations: every patch seen by the others); restricted to the
    reference view (per sample: 1 and 2), the targets are the full ones in that view and nothing elsewhere."""
    Rs = [np.zeros(3), np.array([0.0, 0.06, 0.0]), np.array([0.02, -0.05, 0.01])]
    w2c = torch.eye(4, dtype=torch.float64).repeat(2, 3, 1, 1)
    for v, rv in enumerate(Rs):
        w2c[:, v, :3, :3] = torch.tensor(rotvec_to_matrix(rv), dtype=torch.float64)
    depth = torch.full((2, 3, H, W), 2.0, dtype=torch.float64)
    K = _K().repeat(2, 3, 1, 1)
    full = patch_correspondences(depth, w2c, K, P)
    assert full.valid.sum() > 0
    ref = torch.tensor([1, 2])
    kept = matches_into_view(full, ref)
    for b, r in enumerate(ref.tolist()):
        for i in range(3):
            if i == r:
                assert torch.equal(kept.valid[b, :, :, i], full.valid[b, :, :, i])
                assert torch.equal(kept.weight[b, :, :, i], full.weight[b, :, :, i])
            else:
                assert not kept.valid[b, :, :, i].any() and not kept.weight[b, :, :, i].any()
        assert not kept.valid[b, r].any()  # the reference view's own patches: no target
    first = matches_into_view(full, None)  # the network kept the input order: view 0
    assert torch.equal(first.valid[:, :, :, 0], full.valid[:, :, :, 0]) and not first.valid[:, :, :, 1:].any()
    with pytest.raises(ValueError, match=r"\(B,\)"):
        matches_into_view(full, torch.tensor([0]))
