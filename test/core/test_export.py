"""Exports: PLY read back by an independent parser, npz round trip, colour map properties, camera files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.ply import parse_ply

from da3_core.api import Prediction
from da3_core.export import (
    COLORMAP,
    apply_colormap,
    colorize_depth,
    export_prediction,
    load_npz,
    save_npz,
    write_cameras_json,
    write_ply,
    write_tum,
)


def test_ply_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    pts[5] = np.nan
    write_ply(tmp_path / "a.ply", pts, cols)
    header, v = parse_ply(tmp_path / "a.ply")
    keep = np.ones(1000, bool)
    keep[5] = False
    assert len(v) == 999
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], -1), pts[keep])
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], -1), cols[keep])


def test_ply_empty_and_errors(tmp_path):
    write_ply(tmp_path / "e.ply", np.zeros((0, 3)))
    _, v = parse_ply(tmp_path / "e.ply")
    assert len(v) == 0
    with pytest.raises(TypeError, match="uint8"):
        write_ply(tmp_path / "x.ply", np.zeros((2, 3)), np.zeros((2, 3)))


def srgb_luminance(rgb_u8: np.ndarray) -> np.ndarray:
    c = rgb_u8.astype(np.float64) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def test_colormap_monotone_and_range():
    assert COLORMAP.shape == (256, 3) and COLORMAP.dtype == np.uint8
    lum = srgb_luminance(COLORMAP)
    assert np.all(np.diff(lum) > 0), "relative luminance must increase strictly"
    assert lum[0] > 0.005 and COLORMAP[0].max() >= 20  # distinguishable from the black of invalid pixels
    assert lum[-1] > 0.8
    np.testing.assert_array_equal(apply_colormap(np.array([np.nan, -1.0, 0.0, 1.0, 2.0])),
                                  np.stack([[0, 0, 0], COLORMAP[0], COLORMAP[0], COLORMAP[-1], COLORMAP[-1]]))


def test_colorize_depth_near_is_bright_invalid_black():
    depth = np.tile(np.linspace(1.0, 10.0, 64), (8, 1))
    depth[0, 0] = np.nan
    depth[1, 1] = -1
    valid = np.ones_like(depth, bool)
    valid[2, 2] = False
    rgb = colorize_depth(depth, valid)
    assert rgb.shape == (8, 64, 3) and rgb.dtype == np.uint8
    for r, c in [(0, 0), (1, 1), (2, 2)]:
        assert rgb[r, c].tolist() == [0, 0, 0]
    lum = srgb_luminance(rgb[4])
    assert np.all(np.diff(lum) <= 0) and lum[0] > lum[-1]
    assert colorize_depth(np.full((3, 3), np.nan)).max() == 0


def _prediction(n=2, h=6, w=8, seed=0) -> Prediction:
    rng = np.random.default_rng(seed)
    ext = np.stack([np.eye(4)] * n)
    ext[:, :3, 3] = rng.normal(size=(n, 3))
    K = np.array([[[10.0, 0, w / 2], [0, 11.0, h / 2], [0, 0, 1]]] * n)
    return Prediction(depth=rng.uniform(1, 5, (n, h, w)).astype(np.float32),
                      conf=rng.uniform(1, 3, (n, h, w)).astype(np.float32), sky=None, extrinsics=ext, intrinsics=K,
                      images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), is_metric=True, depth_units="metric")


def test_npz_roundtrip(tmp_path):
    pred = _prediction()
    pred.sky = np.zeros(pred.depth.shape, bool)
    data = load_npz(save_npz(tmp_path / "r.npz", pred))
    np.testing.assert_array_equal(data["depth"], pred.depth)
    np.testing.assert_array_equal(data["conf"], pred.conf)
    np.testing.assert_array_equal(data["extrinsics"], pred.extrinsics)
    np.testing.assert_array_equal(data["intrinsics"], pred.intrinsics)
    np.testing.assert_array_equal(data["image"], pred.images)
    np.testing.assert_array_equal(data["sky"], pred.sky)
    assert bool(data["is_metric"]) and str(data["depth_units"]) == "metric" and np.isnan(data["scale_factor"])


def quat_xyzw_to_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.mark.parametrize("angle", [0.3, 2.0, 3.1, np.pi])
def test_tum_and_cameras_json(tmp_path, angle):
    axes = [np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([1.0, 1, 1]) / 3 ** 0.5]
    ext = []
    for a in axes:
        Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        R = np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx
        E = np.eye(4)
        E[:3, :3], E[:3, 3] = R, [1.0, -2.0, 3.0]
        ext.append(E)
    ext = np.stack(ext)
    K = np.array([[[100.0, 0, 32], [0, 100, 24], [0, 0, 1]]] * len(ext))
    write_tum(tmp_path / "t.tum", ext, timestamps=[0.5 * i for i in range(len(ext))])
    rows = [line.split() for line in (tmp_path / "t.tum").read_text().splitlines() if not line.startswith("#")]
    assert len(rows) == len(ext)
    for i, row in enumerate(rows):
        vals = np.array([float(v) for v in row])
        assert vals[0] == pytest.approx(0.5 * i)
        c2w = np.linalg.inv(ext[i])
        np.testing.assert_allclose(vals[1:4], c2w[:3, 3], atol=1e-8)
        assert np.linalg.norm(vals[4:]) == pytest.approx(1.0, abs=1e-8)
        np.testing.assert_allclose(quat_xyzw_to_matrix(vals[4:]), c2w[:3, :3], atol=1e-8)
    doc = json.loads(write_cameras_json(tmp_path / "c.json", ext[:, :3], K, (48, 64)).read_text())
    assert len(doc["frames"]) == len(ext)
    f = doc["frames"][1]
    assert (f["width"], f["height"]) == (64, 48)
    np.testing.assert_allclose(f["K"], K[1])
    np.testing.assert_allclose(f["w2c"], ext[1], atol=1e-12)
    np.testing.assert_allclose(np.array(f["c2w"]) @ np.array(f["w2c"]), np.eye(4), atol=1e-12)


def test_export_prediction_writes_everything(tmp_path):
    pred = _prediction()
    paths = export_prediction(pred, tmp_path / "out", conf_percentile=50.0, max_points=20)
    assert set(paths) == {"npz", "depth", "ply", "cameras", "trajectory"}
    pngs = sorted((tmp_path / "out" / "depth").glob("*.png"))
    assert [p.name for p in pngs] == ["0000.png", "0001.png"]
    assert np.asarray(Image.open(pngs[0])).shape == (6, 8, 3)
    _, v = parse_ply(paths["ply"])
    assert len(v) == 20  # 50% of 96 pixels kept, then capped
