"""CloudBuilder (the vectorised window cloud) against a pixel-by-pixel float64 reference: X = c2w (d K^-1 [u v 1])."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.stream.cloud import CloudBuilder


def _frames(n: int = 3, h: int = 12, w: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = [rng.uniform(0.5, 4.0, (h, w)).astype(np.float32) for _ in range(n)]
    depth[0][2, 3] = np.nan
    depth[1 % n][4, 5] = -1.0
    depth[-1][6, 7] = np.inf
    conf = [rng.uniform(1.0, 5.0, (h, w)).astype(np.float32) for _ in range(n)]
    conf[1][0, 2] = np.nan
    sky = [None, rng.random((h, w)) < 0.2, None][:n]
    rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    K = [np.array([[20.0 + i, 0.7 * i, 7.5], [0.0, 21.0, 5.5], [0.0, 0.0, 1.0]]) for i in range(n)]
    c2w = []
    for i in range(n):
        a = 0.3 * (i + 1)
        T = np.eye(4)
        T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        T[:3, 3] = [0.5 * i, -0.2, 1.0 + i]
        c2w.append(T)
    return depth, conf, sky, rgb, K, c2w


def _reference(depth, conf, sky, rgb, K, c2w, stride, map_stride, thr_percentile=None, thr=None, drop_sky=True):
    """Pixel loop: (points, colors, weights, on_map) in frame order, row-major."""
    valid = []
    for i, d in enumerate(depth):
        for r in range(0, d.shape[0], stride):
            for c in range(0, d.shape[1], stride):
                z, q = float(d[r, c]), float(conf[i][r, c])
                if not (np.isfinite(z) and z > 0 and np.isfinite(q)):
                    continue
                if drop_sky and sky[i] is not None and sky[i][r, c]:
                    continue
                valid.append((i, r, c, z, q))
    if thr is None and thr_percentile is not None:  # over the valid pixels of the map grid
        thr = np.percentile([v[4] for v in valid if v[1] % map_stride == 0 and v[2] % map_stride == 0],
                            thr_percentile)
    pts, cols, wts, on_map = [], [], [], []
    for i, r, c, z, q in valid:
        if thr is not None and q < thr:
            continue
        cam = np.linalg.inv(K[i]) @ np.array([c, r, 1.0]) * z
        pts.append(c2w[i][:3, :3] @ cam + c2w[i][:3, 3])
        cols.append(rgb[i][r, c])
        wts.append(q)
        on_map.append(r % map_stride == 0 and c % map_stride == 0)
    return np.array(pts), np.array(cols, np.uint8), np.array(wts), np.array(on_map)


@pytest.mark.parametrize("stride,map_stride", [(1, 4), (2, 4), (2, 3)])
def test_cloud_equals_pixel_loop(stride, map_stride):
    frames = _frames()
    cloud = CloudBuilder(stride=stride, map_stride=map_stride, conf_percentile=30.0).build(*frames)
    ms = stride * -(-map_stride // stride)  # the map grid is a multiple of the stride (3 -> 4 at stride 2)
    P, C, W, G = _reference(*frames, stride=stride, map_stride=ms, thr_percentile=30.0)
    assert len(cloud) == len(P) > 0
    np.testing.assert_allclose(cloud.points, P, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cloud.colors, C)
    np.testing.assert_allclose(cloud.weights, W, rtol=1e-6)
    np.testing.assert_array_equal(cloud.on_map, G)
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8


@pytest.mark.parametrize("stride,map_stride", [(1, 4), (2, 4), (2, 3)])
def test_map_only_cloud_is_the_on_map_part_of_the_full_cloud(stride, map_stride):
    """What the map gets does not depend on whether the whole window cloud was built."""
    frames = _frames(seed=4)
    builder = CloudBuilder(stride=stride, map_stride=map_stride, conf_percentile=30.0)
    full, only = builder.build(*frames), builder.build(*frames, map_only=True)
    assert only.on_map.all() and len(only) == int(full.on_map.sum()) > 0
    np.testing.assert_array_equal(only.points, full.points[full.on_map])
    np.testing.assert_array_equal(only.colors, full.colors[full.on_map])
    np.testing.assert_array_equal(only.weights, full.weights[full.on_map])
    again = builder.build(*frames)  # the ray and pixel caches of both grids coexist
    np.testing.assert_array_equal(again.points, full.points)


def test_fixed_threshold_sky_kept_and_ray_cache():
    frames = _frames(seed=1)
    builder = CloudBuilder(stride=1, map_stride=2, conf_percentile=None, conf_threshold=2.5, drop_sky=False)
    first = builder.build(*frames)
    P, C, W, G = _reference(*frames, stride=1, map_stride=2, thr=2.5, drop_sky=False)
    np.testing.assert_allclose(first.points, P, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first.colors, C)
    # the cached rays of a camera must not leak into another camera's cloud: same builder, other intrinsics
    depth, conf, sky, rgb, K, c2w = _frames(seed=2)
    K = [k * np.array([[1.3], [1.1], [1.0]]) for k in K]
    second = builder.build(depth, conf, sky, rgb, K, c2w)
    P2, *_ = _reference(depth, conf, sky, rgb, K, c2w, stride=1, map_stride=2, thr=2.5, drop_sky=False)
    np.testing.assert_allclose(second.points, P2, rtol=1e-5, atol=1e-5)


def test_max_points_subsamples_rows_of_the_full_cloud():
    frames = _frames()
    full = CloudBuilder(stride=1, conf_percentile=None).build(*frames)
    sub = CloudBuilder(stride=1, conf_percentile=None, max_points=50, seed=3).build(*frames, window_index=4)
    assert len(sub) == 50
    rows = {tuple(p) for p in full.points.tolist()}
    assert all(tuple(p) in rows for p in sub.points.tolist())


def test_other_sizes_skipped_and_empty():
    depth, conf, sky, rgb, K, c2w = _frames(n=2)
    small = (np.ones((6, 8), np.float32), np.ones((6, 8), np.float32), None, np.zeros((6, 8, 3), np.uint8))
    mixed = CloudBuilder(stride=1, conf_percentile=None).build(
        [depth[0], small[0]], [conf[0], small[1]], [sky[0], None], [rgb[0], small[3]], K, c2w)
    only = CloudBuilder(stride=1, conf_percentile=None).build([depth[0]], [conf[0]], [sky[0]], [rgb[0]], K[:1],
                                                              c2w[:1])
    np.testing.assert_array_equal(mixed.points, only.points)
    assert len(CloudBuilder().build([], [], [], [], [], [])) == 0
    nan = np.full((4, 4), np.nan, np.float32)
    assert len(CloudBuilder().build([nan], [nan], [None], [np.zeros((4, 4, 3), np.uint8)], K[:1], c2w[:1])) == 0


def test_auto_map_stride_keeps_about_64_map_columns():
    builder = CloudBuilder(stride=4, map_stride=0)
    assert [builder.map_stride_for(w) for w in (168, 383, 384, 504, 1280)] == [4, 4, 8, 8, 20]
    assert CloudBuilder(stride=4, map_stride=6).map_stride_for(504) == 8  # explicit: rounded up to a multiple
    frames = _frames(w=16)  # 16 px wide: auto = the cloud stride itself, the same cloud as an explicit one
    auto = CloudBuilder(stride=2, map_stride=0, conf_percentile=30.0).build(*frames)
    fixed = CloudBuilder(stride=2, map_stride=2, conf_percentile=30.0).build(*frames)
    np.testing.assert_array_equal(auto.points, fixed.points)
    np.testing.assert_array_equal(auto.on_map, fixed.on_map)
