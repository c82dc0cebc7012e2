"""Synthetic renderer: exact geometry (unprojected depth lies on the surfaces), multi-view consistency, sky mask,
determinism. Small images keep it fast."""

import numpy as np
import pytest

from da3_core.data.synthetic import (
    SCENE_KINDS,
    cast_rays,
    intrinsics_from_fov,
    look_at,
    make_scene,
    make_trajectory,
    render,
    render_sequence,
)

HW = (48, 64)


def unproject(depth, K, w2c, offset=0.0):
    """World points (H, W, 3) of z-depth at image coordinates (u + offset, v + offset), written independently of
    the renderer: X_cam = z K^-1 [u, v, 1], X_world = R^T (X_cam - t)."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + offset
    pix = np.stack((u, v, np.ones_like(u)), -1)
    Xc = (pix @ np.linalg.inv(K).T) * depth.astype(np.float64)[..., None]
    return (Xc - w2c[:3, 3]) @ w2c[:3, :3]


def project(pts, K, w2c):
    Xc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    x = Xc @ K.T
    return x[..., :2] / x[..., 2:3], Xc[..., 2]


@pytest.fixture(scope="module")
def rendered():
    out = {}
    for kind in SCENE_KINDS:
        for seed in (0, 1):
            scene = make_scene(kind, seed)
            K = intrinsics_from_fov(HW, 70.0)
            w2cs = make_trajectory(scene, 3, "auto", seed=seed)
            out[kind, seed] = (scene, K, w2cs, render_sequence(scene, w2cs, K, HW))
    return out


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_unprojected_depth_lies_on_hit_surface(rendered, kind):
    for seed in (0, 1):
        scene, K, _, frames = rendered[kind, seed]
        for f in frames:
            hit = ~f.sky
            assert hit.mean() > 0.3
            pts = unproject(np.where(hit, f.depth, 0.0), K, f.w2c)[hit]
            ids = f.ids[hit]
            sdf = np.stack([p.sdf(pts) for p in scene.primitives], 1)  # (M, P)
            own = sdf[np.arange(len(pts)), ids]
            z = f.depth[hit].astype(np.float64)
            # float32 depth: relative rounding 6e-8 of z; the hit surface is where the point is
            assert np.abs(own).max() / z.max() < 1e-6, np.abs(own).max()
            # no other surface is closer: the point is not inside any other object
            assert sdf.min(axis=1).min() > -1e-6 * z.max()
            # and the open segment camera -> point is in free space (nearest hit), checked on samples
            c = np.linalg.inv(f.w2c)[:3, 3]
            sub = slice(None, None, 7)
            for a in np.linspace(0.02, 0.98, 13):
                seg = c + a * (pts[sub] - c)
                assert scene.sdf(seg).min() > -1e-9


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_depth_is_z_depth_and_sky_mask(rendered, kind):
    scene, K, _, frames = rendered[kind, 0]
    for f in frames:
        assert f.rgb.shape == HW + (3,) and f.rgb.dtype == np.uint8
        assert f.depth.shape == HW and f.depth.dtype == np.float32
        np.testing.assert_array_equal(f.sky, ~np.isfinite(f.depth))
        np.testing.assert_array_equal(f.sky, f.ids < 0)
        assert np.all(f.depth[~f.sky] > 0)
        # z-depth: the unprojected point's camera z equals the stored depth (not the ray length)
        pts = unproject(np.where(f.sky, 1.0, f.depth), K, f.w2c)
        _, z = project(pts, K, f.w2c)
        np.testing.assert_allclose(z[~f.sky], f.depth[~f.sky], rtol=1e-6)
        n = f.normals[~f.sky]
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
        # normals face the camera: (point - camera) . n < 0
        c = np.linalg.inv(f.w2c)[:3, 3]
        assert np.all(np.einsum("ij,ij->i", pts[~f.sky] - c, n) < 1e-6)
    if kind == "room":
        assert not any(f.sky.any() for f in frames)
    else:
        assert any(f.sky.any() for f in frames)


def test_matches_project_depth_to_points():
    torch = pytest.importorskip("torch")
    from da3_core.geometry.points import depth_to_points

    scene = make_scene("objects", 2)
    K = intrinsics_from_fov(HW, 60.0)
    f = render(scene, look_at([6.0, -3.0, 1.6], [0.0, 0.0, 0.8]), K, HW)
    d = np.where(f.sky, 0.0, f.depth).astype(np.float64)
    pts = depth_to_points(torch.from_numpy(d), torch.from_numpy(f.w2c), torch.from_numpy(K)).numpy()[~f.sky]
    own = np.array([scene.primitives[i].sdf(p[None])[0] for i, p in zip(f.ids[~f.sky], pts)])
    assert np.abs(own).max() < 1e-5


def test_pixel_offset_convention():
    scene = make_scene("room", 0)
    K = intrinsics_from_fov(HW, 70.0)
    w2c = make_trajectory(scene, 1, "orbit", seed=0)[0]
    f = render(scene, w2c, K, HW, pixel_offset=0.5)
    pts = unproject(f.depth, K, w2c, offset=0.5)
    own = np.array([scene.primitives[i].sdf(p[None])[0] for i, p in zip(f.ids.ravel(), pts.reshape(-1, 3))])
    assert np.abs(own).max() < 1e-5


@pytest.mark.parametrize("kind", SCENE_KINDS)
@pytest.mark.parametrize("traj", ["orbit", "walk"])
def test_multiview_consistency(kind, traj):
    """Points seen in frame A, cast through their projections in frame B: B sees the same point (same depth,
    same colour) unless something is in front of it (then B's depth is smaller)."""
    scene = make_scene(kind, 4)
    K = intrinsics_from_fov(HW, 70.0)
    w2cs = make_trajectory(scene, 24, traj, seed=4)
    A = render(scene, w2cs[0], K, HW)
    hit = ~A.sky
    pts = unproject(np.where(hit, A.depth, 0.0), K, A.w2c)[hit]
    rgb_a = A.rgb[hit]
    for w2c_b in w2cs[2:5]:
        uv, z = project(pts, K, w2c_b)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= HW[1] - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= HW[0] - 1)
        assert inside.sum() > 200
        hits = cast_rays(scene, w2c_b, K, uv[inside])
        zb = z[inside]
        assert np.all(hits.depth <= zb * (1 + 1e-5))
        same = np.abs(hits.depth - zb) <= 1e-5 * zb
        assert same.mean() > 0.5
        np.testing.assert_allclose(hits.points[same], pts[inside][same], atol=1e-5 * zb.max())
        col = np.clip(hits.rgb[same] * 255 + 0.5, 0, 255).astype(np.uint8).astype(int)
        diff = np.abs(col - rgb_a[inside][same].astype(int))
        assert np.median(diff) <= 1 and np.percentile(diff, 95) <= 3  # view-independent shading


def test_deterministic_by_seed():
    K = intrinsics_from_fov(HW, 70.0)
    for kind in SCENE_KINDS:
        a, b, c = make_scene(kind, 5), make_scene(kind, 5), make_scene(kind, 6)
        w2c = make_trajectory(a, 1, "orbit", seed=0)[0]
        fa, fb = render(a, w2c, K, HW), render(b, w2c, K, HW)
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        np.testing.assert_array_equal(fa.ids, fb.ids)
        fc = render(c, make_trajectory(c, 1, "orbit", seed=0)[0], K, HW)
        assert not np.array_equal(fa.rgb, fc.rgb)


def test_antialias_keeps_depth_and_fog_changes_colour():
    scene = make_scene("objects", 0)
    K = intrinsics_from_fov(HW, 70.0)
    w2c = make_trajectory(scene, 1, "orbit", seed=0)[0]
    f1 = render(scene, w2c, K, HW)
    f2 = render(scene, w2c, K, HW, antialias=2)
    np.testing.assert_array_equal(f1.depth, f2.depth)
    assert np.abs(f1.rgb.astype(int) - f2.rgb.astype(int)).mean() < 20
    f3 = render(scene, w2c, K, HW, fog_m=5.0)
    np.testing.assert_array_equal(f1.depth, f3.depth)
    assert not np.array_equal(f1.rgb, f3.rgb)


def test_culling_matches_uncropped_cast():
    """The screen-rectangle culling in ``render`` never drops a hit: per-pixel cast without culling agrees."""
    scene = make_scene("courtyard", 3)
    K = intrinsics_from_fov(HW, 80.0)
    w2c = make_trajectory(scene, 1, "walk", seed=2)[0]
    f = render(scene, w2c, K, HW)
    v, u = np.mgrid[0 : HW[0], 0 : HW[1]]
    hits = cast_rays(scene, w2c, K, np.stack((u.ravel(), v.ravel()), -1))
    np.testing.assert_array_equal(hits.ids.reshape(HW), f.ids)
    np.testing.assert_array_equal(hits.depth.reshape(HW).astype(np.float32), f.depth)
