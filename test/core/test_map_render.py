"""da3_core.export.map_render: splat projection, z-buffer, auto framing, path drawing, determinism."""

import numpy as np

from da3_core.export.map_render import GT_COLOR, PATH_COLOR, auto_view, look_at, render_map, render_points

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def test_known_point_lands_on_expected_pixel_and_nearest_wins():
    pts = np.array([[0.1, 0.2, 1.0], [0.2, 0.4, 2.0], [-0.5, 0.0, -1.0]])  # 2nd: same pixel, farther; 3rd: behind
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    img, z = render_points(pts, cols, np.eye(4), K, (100, 80), background=(0, 0, 0))
    assert img.shape == (80, 100, 3) and img.dtype == np.uint8
    assert tuple(img[60, 60]) == (255, 0, 0) and z[60, 60] == 1.0  # u = 100*0.1+50, v = 100*0.2+40
    assert np.count_nonzero(img.any(axis=2)) == 1
    big, _ = render_points(pts[:1], cols[:1], np.eye(4), K, (100, 80), radius=2, background=(0, 0, 0))
    assert np.count_nonzero(big.any(axis=2)) == 9


def test_look_at_points_the_optical_axis_at_the_target():
    w2c = look_at([0.0, -5.0, 0.0], [0.0, 0.0, 0.0], up=[0.0, 0.0, 1.0])
    cam = w2c[:3, :3] @ np.zeros(3) + w2c[:3, 3]
    np.testing.assert_allclose(cam, [0.0, 0.0, 5.0], atol=1e-12)
    up_in_cam = w2c[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert up_in_cam[1] < -0.99  # world up is image up (-y)


def _scene():
    rng = np.random.default_rng(0)
    pts = rng.uniform([-2, 1, -2], [2, 1.2, 2], size=(5000, 3))  # a floor below the cameras (OpenCV y down)
    cols = rng.integers(0, 255, size=(5000, 3)).astype(np.uint8)
    path = np.stack([np.eye(4)] * 10)
    path[:, 0, 3] = np.linspace(-1, 1, 10)
    return pts, cols, path


def test_render_map_size_determinism_and_path_colours():
    pts, cols, path = _scene()
    gt = path.copy()
    gt[:, 2, 3] += 0.5
    a = render_map(pts, cols, path_c2w=path, gt_c2w=gt, size=(320, 240))
    b = render_map(pts, cols, path_c2w=path, gt_c2w=gt, size=(320, 240))
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.all(a == PATH_COLOR, axis=2).sum() > 20
    assert np.all(a == GT_COLOR, axis=2).sum() > 20
    # the path projects inside the auto-framed view, and the points fill a good part of it
    w2c, Kv = auto_view(pts, path, (320, 240))
    cam = path[:, :3, 3] @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ Kv.T
    uv = uv[:, :2] / uv[:, 2:]
    assert np.all(cam[:, 2] > 0) and np.all((uv >= 0) & (uv < [320, 240]))
    plain = render_map(pts, cols, size=(320, 240), legend=False)
    assert (plain != plain[0, 0]).any(axis=2).mean() > 0.1


def test_empty_inputs_render_background():
    img = render_map(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), size=(64, 48), legend=False)
    assert img.shape == (48, 64, 3) and (img == img[0, 0]).all()
