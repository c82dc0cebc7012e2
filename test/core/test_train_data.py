"""Training datasets: synthetic (deterministic by index), generic folder, TUM RGB-D and COLMAP readers."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from da3_core.train.batching import TokenBudgetBatcher, TokenBudgetBatchSampler, scale_resolutions
from da3_core.train.data import (
    ColmapScene,
    FolderScene,
    RawView,
    SyntheticSceneDataset,
    TUMScene,
    ViewSetDataset,
    resize_crop_view,
)

RES = scale_resolutions(factor=1 / 9)[:3]  # (56, 56), (42, 56), (28, 56)


def test_synthetic_dataset_deterministic_and_shapes():
    ds = SyntheticSceneDataset(16, resolutions=RES, views=(2, 3), seed=7)
    a, b = ds[5], ds[5]
    _, H, W, S = ds.sample_key(5)
    assert a["images"].shape == (S, 3, H, W) and a["depth"].shape == (S, H, W)
    assert a["w2c"].shape == (S, 4, 4) and a["K"].shape == (S, 3, 3) and a["sky"].shape == (S, H, W)
    for k in a:
        assert torch.equal(torch.nan_to_num(a[k]), torch.nan_to_num(b[k])), k
    fresh = SyntheticSceneDataset(16, resolutions=RES, views=(2, 3), seed=7)[5]  # new instance, same content
    assert torch.equal(fresh["images"], a["images"])
    keyed = ds[(5, 42, 56, 2)]
    assert keyed["images"].shape == (2, 3, 42, 56)
    assert torch.equal(keyed["valid"], torch.isfinite(keyed["depth"]))
    assert (keyed["depth"][keyed["valid"]] > 0).all()
    assert not (keyed["sky"] & keyed["valid"]).any()
    other = ds[(6, 42, 56, 2)]
    assert not torch.equal(other["images"], keyed["images"])
    with pytest.raises(IndexError):
        ds[(16, 42, 56, 2)]


def test_synthetic_dataset_path_frames_gives_consecutive_path_frames():
    """path_frames=N: an S-view item is S consecutive frames of the item's N-frame camera path (a keyframe window)."""
    n = 8
    ds = SyntheticSceneDataset(16, resolutions=RES, views=(2, 3), seed=7, path_frames=n)
    for index in (3, 5, 9):
        path = ds[(index, 28, 56, n)]["w2c"].numpy()  # S == N: the whole path
        for S in (2, 3):
            w2c = ds[(index, 28, 56, S)]["w2c"].numpy()
            starts = [k for k in range(n - S + 1) if np.allclose(path[k:k + S], w2c, atol=1e-6)]
            assert len(starts) == 1, (index, S)
    # the spread protocol puts 2 views at the two ends of a 2-frame path: farther apart than path neighbours
    spread = SyntheticSceneDataset(16, resolutions=RES, views=(2, 3), seed=7)
    gaps_window, gaps_spread = [], []
    for index in range(8):
        for d, gaps in ((ds, gaps_window), (spread, gaps_spread)):
            w2c = d[(index, 28, 56, 2)]["w2c"].numpy()
            c = [-w[:3, :3].T @ w[:3, 3] for w in w2c]
            gaps.append(np.linalg.norm(c[1] - c[0]))
    assert np.median(gaps_window) < 0.5 * np.median(gaps_spread)
    with pytest.raises(ValueError, match="path_frames"):
        SyntheticSceneDataset(4, path_frames=-1)


def test_path_frames_max_gives_each_scene_its_own_path_length():
    """path_frames_max: each scene's path has N in [path_frames, path_frames_max] frames (fixed by the seed and the
    scene), and an item is S consecutive frames of that N-frame path."""
    ds = SyntheticSceneDataset(64, resolutions=RES, views=(2, 3), seed=7, path_frames=6, path_frames_max=14)
    lengths = [ds.frames_of_path(g) for g in range(64)]
    assert min(lengths) == 6 and max(lengths) == 14 and len(set(lengths)) >= 6
    again = SyntheticSceneDataset(64, resolutions=RES, views=(2, 3), seed=7, path_frames=6, path_frames_max=14)
    assert [again.frames_of_path(g) for g in range(64)] == lengths
    assert [SyntheticSceneDataset(64, path_frames=6).frames_of_path(g) for g in range(4)] == [6] * 4
    for index in (1, 2):
        n = ds.frames_of_path(index)
        path = ds[(index, 28, 56, n)]["w2c"].numpy()  # S == N: the whole path
        w2c = ds[(index, 28, 56, 3)]["w2c"].numpy()
        assert sum(np.allclose(path[k:k + 3], w2c, atol=1e-6) for k in range(n - 2)) == 1, (index, n)
    with pytest.raises(ValueError, match="path_frames_max"):
        SyntheticSceneDataset(4, path_frames=12, path_frames_max=8)
    with pytest.raises(ValueError, match="path_frames_max"):
        SyntheticSceneDataset(4, path_frames_max=8)  # needs windows (path_frames > 0)


def test_windows_per_scene_share_one_scene_and_path_and_stay_pure_functions_of_the_key():
    """windows_per_scene=R: items g R .. g R + R - 1 are windows of one camera path (overlapping frames identical),
    the frame cache never changes content (a fresh instance without cache gives the same tensors), other groups
    are other scenes."""
    ds = SyntheticSceneDataset(24, resolutions=RES, views=(2, 4), seed=7, path_frames=6, windows_per_scene=3)
    path = ds[(3, 28, 56, 6)]["w2c"].numpy()  # S == N: the whole path of group 1
    for index in (3, 4, 5):
        item = ds[(index, 28, 56, 3)]
        w2c = item["w2c"].numpy()
        assert any(np.allclose(path[k:k + 3], w2c, atol=1e-6) for k in range(4)), index
        fresh = SyntheticSceneDataset(24, resolutions=RES, views=(2, 4), seed=7, path_frames=6,
                                      windows_per_scene=3)[(index, 28, 56, 3)]
        for k in ("images", "w2c", "K"):
            assert torch.equal(fresh[k], item[k]), (index, k)
        assert torch.equal(torch.nan_to_num(fresh["depth"]), torch.nan_to_num(item["depth"]))
    other = ds[(6, 28, 56, 6)]["w2c"].numpy()  # group 2
    assert not np.allclose(other, path)
    assert len(ds._frames) > 0  # frames were cached ...
    plain = SyntheticSceneDataset(24, resolutions=RES, views=(2, 4), seed=7, path_frames=6)
    plain[(3, 28, 56, 3)]
    assert not plain._frames  # ... and are not without reuse
    with pytest.raises(ValueError, match="windows_per_scene"):
        SyntheticSceneDataset(4, windows_per_scene=2)  # needs path_frames


def test_synthetic_dataset_with_token_budget_loader():
    ds = SyntheticSceneDataset(32, resolutions=RES, views=(2, 3), seed=1)
    batcher = TokenBudgetBatcher(48, RES, views=(2, 3), tol=0.5)
    loader = DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(batcher, len(ds), steps=2, seed=0))
    for batch in loader:
        B, S, _, H, W = batch["images"].shape
        assert batcher.lower <= B * S * (H // 14) * (W // 14) <= batcher.budget
        assert batch["depth"].shape == (B, S, H, W)


def _write_png16(path, arr):
    Image.fromarray(arr.astype(np.uint16)).save(path)


def _write_rgb(path, h, w, value):
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_tum_reader(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    for i in range(3):
        _write_rgb(tmp_path / "rgb" / f"{i}.png", 8, 10, 40 * i)
        d = np.zeros((8, 10))
        d[2, 3] = 5000 * (i + 1)  # (i + 1) metres
        _write_png16(tmp_path / "depth" / f"{i}.png", d)
    (tmp_path / "rgb.txt").write_text("# rgb\n" + "".join(f"{1.0 + i * 0.1:.4f} rgb/{i}.png\n" for i in range(3)))
    (tmp_path / "depth.txt").write_text("".join(f"{1.005 + i * 0.1:.4f} depth/{i}.png\n" for i in range(3)))
    # ground truth for frames 0 and 1 only (frame 2 has none within 20 ms)
    (tmp_path / "groundtruth.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw\n"
        "0.999 1.0 2.0 3.0 0.0 0.0 0.0 1.0\n"
        "1.101 0.0 0.0 0.0 0.0 0.0 0.7071067811865476 0.7071067811865476\n"
    )
    scene = TUMScene(tmp_path)
    assert len(scene) == 2 and scene.timestamp(1) == pytest.approx(1.1)
    v0, v1 = scene.load(0), scene.load(1)
    assert v0.rgb.shape == (8, 10, 3) and v1.rgb[0, 0, 0] == 40
    assert v0.depth[2, 3] == pytest.approx(1.0) and v1.depth[2, 3] == pytest.approx(2.0)
    assert np.isnan(v0.depth[0, 0])
    np.testing.assert_allclose(v0.w2c[:3, 3], [-1.0, -2.0, -3.0])  # c2w translation inverted
    np.testing.assert_allclose(v1.w2c[:3, :3], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)  # R_z(90)^T
    np.testing.assert_allclose(v0.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])


def test_colmap_reader_with_sparse_depth(tmp_path):
    (tmp_path / "images").mkdir()
    _write_rgb(tmp_path / "images" / "a.png", 6, 8, 10)
    _write_rgb(tmp_path / "images" / "b.png", 6, 8, 20)
    (tmp_path / "cameras.txt").write_text("# comment\n1 PINHOLE 8 6 100 110 4 3\n2 SIMPLE_RADIAL 8 6 90 4 3 0.01\n")
    (tmp_path / "images.txt").write_text(
        "# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n# POINTS2D\n"
        "2 1 0 0 0 0 0 0 2 b.png\n\n"
        "1 0.7071067811865476 0 0 0.7071067811865476 1 2 3 1 a.png\n"
        "2.6 1.2 7 5.5 5.5 -1 0.5 0.5 8 20.0 3.0 8\n"
    )
    (tmp_path / "points3D.txt").write_text("7 0.5 -0.5 4.0 255 0 0 0.1\n8 0 0 1 0 0 0 0.1\n")
    scene = ColmapScene(tmp_path)
    assert len(scene) == 2  # sorted by name: a, b
    a, b = scene.load(0), scene.load(1)
    np.testing.assert_allclose(a.K, [[100, 0, 3.5], [0, 110, 2.5], [0, 0, 1]])  # COLMAP centre 0.5 -> 0
    np.testing.assert_allclose(b.K, [[90, 0, 3.5], [0, 90, 2.5], [0, 0, 1]])
    np.testing.assert_allclose(a.w2c[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(a.w2c[:3, 3], [1, 2, 3])
    # point 7 in camera a: R X + t = (0.5 + 1, 0.5 + 2, 4 + 3) -> z = 7 at pixel floor(2.6), floor(1.2) = (2, 1)
    assert a.depth[1, 2] == pytest.approx(7.0)
    assert a.depth[0, 0] == pytest.approx(4.0)  # point 8: R X + t = (1, 2, 4)
    assert np.isfinite(a.depth).sum() == 2  # the -1 id and the out-of-image keypoint (x = 20) are skipped
    assert np.isnan(b.depth).all()


def test_folder_reader_npz_png_and_c2w(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "depth").mkdir()
    for name in ("f0", "f1"):
        _write_rgb(tmp_path / "images" / f"{name}.jpg", 4, 6, 100)
    np.savez(tmp_path / "depth" / "f0.npz", depth=np.full((4, 6), 2.5, np.float32))
    _write_png16(tmp_path / "depth" / "f1.png", np.full((4, 6), 1500))
    (tmp_path / "intrinsics.txt").write_text("50 51 3 2\n")
    (tmp_path / "poses.txt").write_text(
        "# convention: c2w\n"
        "f0 1 0 0 1  0 1 0 2  0 0 1 3\n"
        "f1.jpg 1 0 0 0  0 1 0 0  0 0 1 0  0 0 0 1\n"
    )
    scene = FolderScene(tmp_path)
    assert scene.pose_convention == "c2w" and len(scene) == 2
    v0, v1 = scene.load(0), scene.load(1)
    assert np.all(v0.depth == 2.5) and np.allclose(v1.depth, 1.5)
    np.testing.assert_allclose(v0.w2c[:3, 3], [-1, -2, -3])
    np.testing.assert_allclose(v1.K, [[50, 0, 3], [0, 51, 2], [0, 0, 1]])


def test_resize_crop_view_intrinsics_and_view_set_dataset(tmp_path):
    K = np.array([[20.0, 0, 9.5], [0, 20.0, 5.5], [0, 0, 1]])
    depth = np.arange(12 * 20, dtype=np.float32).reshape(12, 20) + 1
    view = RawView(np.zeros((12, 20, 3), np.uint8), depth, K, np.eye(4))
    out = resize_crop_view(view, (6, 6))  # scale 0.5 -> 6x10, crop 2 columns on the left
    # u' = 0.5 (u + 0.5) - 0.5 - 2: fx 10, cx = 0.5 * 10 - 0.5 - 2 = 2.5, cy = 0.5 * 6 - 0.5 = 2.5
    np.testing.assert_allclose(out.K, [[10, 0, 2.5], [0, 10, 2.5], [0, 0, 1]])
    assert out.depth.shape == (6, 6) and out.depth[0, 0] == depth[1, 5]  # nearest: row 2*0+1, col 2*(0+2)+1
    (tmp_path / "images").mkdir()
    for i in range(3):
        _write_rgb(tmp_path / "images" / f"{i}.png", 28, 42, 10 * i)
    (tmp_path / "intrinsics.txt").write_text("30 30 21 14\n")
    (tmp_path / "poses.txt").write_text("".join(f"{i} 1 0 0 {i}  0 1 0 0  0 0 1 0\n" for i in range(3)))
    ds = ViewSetDataset([FolderScene(tmp_path)], num_samples=4, resolutions=[(14, 28)], views=(2, 5), seed=0)
    item = ds[(1, 14, 28, 5)]  # more views than frames: repeated frames
    assert item["images"].shape == (5, 3, 14, 28) and not item["valid"].any()
    assert torch.equal(ds[2]["images"], ds[2]["images"])
