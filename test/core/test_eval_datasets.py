"""Dataset adapters on tiny fixtures written by the tests in each format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from da3_core.eval.datasets import TUM_INTRINSICS, load_dataset, select_indices

H, W = 12, 16


def _rgb(i):
    return np.full((H, W, 3), 10 * i, np.uint8)


def _depth_mm(i):
    d = np.full((H, W), 1000 + 100 * i, np.uint16)
    d[0, 0] = 0
    return d


def _c2w(i):
    T = np.eye(4)
    T[:3, 3] = [0.1 * i, 0.0, 0.05 * i * i]
    return T


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _check(scene, n, depth_m0=1.0, poses=True):
    assert len(scene) == n and scene.has_depth
    f = scene.frames[0]
    assert f.rgb.shape == (H, W, 3) and f.depth.shape == (H, W) and np.isnan(f.depth[0, 0])
    assert f.depth[1, 1] == pytest.approx(depth_m0)
    if poses:
        assert scene.has_poses
        for k, fr in enumerate(scene.frames):
            assert np.allclose(np.linalg.inv(fr.w2c), _c2w(k), atol=1e-6)


def test_select_indices_even_spacing():
    assert select_indices(10, 3) == [0, 4, 9] and select_indices(3, None) == [0, 1, 2] and select_indices(5, 1) == [0]


def test_tum_sequence_with_groundtruth_and_flat_pair(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg2_desk"
    rgb, dep, gt = [], [], []
    for i in range(3):
        t = 1.0 + i
        _save(root / f"rgb/{t:.6f}.png", _rgb(i))
        _save(root / f"depth/{t:.6f}.png", (_depth_mm(i).astype(np.float64) * 5).astype(np.uint16))
        rgb.append(f"{t:.6f} rgb/{t:.6f}.png")
        dep.append(f"{t + 0.001:.6f} depth/{t:.6f}.png")
        x, y, z = _c2w(i)[:3, 3]
        gt.append(f"{t:.4f} {x} {y} {z} 0 0 0 1")
    (root / "rgb.txt").write_text("# rgb\n" + "\n".join(rgb) + "\n")
    (root / "depth.txt").write_text("\n".join(dep) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    (scene,) = load_dataset(f"tum:{root}")
    _check(scene, 3)
    assert np.allclose(scene.frames[0].K[[0, 1, 0, 1], [0, 1, 2, 2]], TUM_INTRINSICS["fr2"])
    # flat pair layout, depth only
    pair = tmp_path / "pair"
    for i in (1, 2):
        _save(pair / f"{i}.png", _rgb(i))
        _save(pair / f"{i}_depth.png", (_depth_mm(0).astype(np.float64) * 5).astype(np.uint16))
    (scene,) = load_dataset(f"tum:{pair}", intrinsics=(100, 100, 8, 6))
    _check(scene, 2, poses=False)
    assert not scene.has_poses and scene.frames[0].K[0, 0] == 100


def test_7scenes_layout(tmp_path):
    seq = tmp_path / "chess" / "seq-01"
    seq.mkdir(parents=True)
    for i in range(4):
        _save(seq / f"frame-{i:06d}.color.png", _rgb(i))
        d = _depth_mm(i)
        d[0, 1] = 65535
        _save(seq / f"frame-{i:06d}.depth.png", d)
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", _c2w(i))
    (scene,) = load_dataset(f"7scenes:{tmp_path / 'chess'}")
    _check(scene, 4)
    assert np.isnan(scene.frames[0].depth[0, 1]) and scene.frames[0].K[0, 0] == 585.0
    assert [len(s) for s in load_dataset(f"7scenes:{tmp_path}", max_frames=3, views=2)] == [3]  # 1-frame tail merged


def test_scannet_layout_resizes_colour_to_depth(tmp_path):
    root = tmp_path / "scene0000_00"
    (root / "pose").mkdir(parents=True)
    for i in range(3):
        _save(root / f"color/{i}.jpg", np.full((2 * H, 2 * W, 3), 50, np.uint8))
        _save(root / f"depth/{i}.png", _depth_mm(i))
        np.savetxt(root / f"pose/{i}.txt", _c2w(i))
    np.savetxt(root / "pose/3.txt", np.full((4, 4), -np.inf))
    _save(root / "color/3.jpg", np.zeros((2 * H, 2 * W, 3), np.uint8))
    kc, kd = np.eye(4), np.eye(4)
    kc[:3, :3] = [[20, 0, 16], [0, 20, 12], [0, 0, 1]]
    kd[:3, :3] = [[10, 0, 8], [0, 10, 6], [0, 0, 1]]
    (root / "intrinsic").mkdir()
    np.savetxt(root / "intrinsic/intrinsic_color.txt", kc)
    np.savetxt(root / "intrinsic/intrinsic_depth.txt", kd)
    (scene,) = load_dataset(f"scannet:{tmp_path}")
    _check(scene, 3)  # the frame with an invalid pose is dropped
    assert scene.frames[0].K[0, 0] == 10


def test_colmap_text_model(tmp_path):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse/0/cameras.txt").write_text(f"# c\n1 PINHOLE {W} {H} 10 10 8.5 6.5\n")
    lines = []
    for i in range(3):
        _save(tmp_path / f"images/im{i}.png", _rgb(i))
        w2c = np.linalg.inv(_c2w(i))
        lines += [f"{i + 1} 1 0 0 0 {w2c[0, 3]} {w2c[1, 3]} {w2c[2, 3]} 1 im{i}.png", f"{W / 2 + 0.5} {H / 2 + 0.5} 1"]
    (tmp_path / "sparse/0/images.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "sparse/0/points3D.txt").write_text("1 0 0 2 255 255 255 0\n")
    (scene,) = load_dataset(f"colmap:{tmp_path}")
    assert len(scene) == 3 and scene.has_poses and scene.frames[0].K[0, 2] == 8.0
    assert np.allclose(np.linalg.inv(scene.frames[2].w2c), _c2w(2))
    assert np.nansum(np.isfinite(scene.frames[0].depth)) == 1


def test_generic_folder(tmp_path):
    lines = ["# convention: c2w"]
    for i in range(3):
        _save(tmp_path / f"images/{i:03d}.png", _rgb(i))
        _save(tmp_path / f"depth/{i:03d}.png", _depth_mm(i))
        lines.append(f"{i:03d} " + " ".join(str(v) for v in _c2w(i).reshape(-1)))
    (tmp_path / "poses.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "intrinsics.txt").write_text("10 10 8 6\n")
    (scene,) = load_dataset(f"folder:{tmp_path}")
    _check(scene, 3)


def test_synthetic_specs():
    scenes = load_dataset("synthetic:kind=room,seed=0,frames=3,size=28x28;kind=objects,seed=1,frames=2,size=28x28")
    assert [len(s) for s in scenes] == [3, 2] and all(s.has_depth and s.has_poses for s in scenes)
    with pytest.raises(ValueError, match="KIND"):
        load_dataset("nope:x")


def test_rosbag_with_ground_truth_topics(tmp_path):
    pytest.importorskip("rosbags")
    bags = pytest.importorskip("da3_ros.bags")
    try:
        out = bags.write_synthetic_bag("kind=room,seed=2,frames=3,size=28x21", tmp_path / "b", storage="mcap")
    except ImportError as exc:  # ROS message packages missing
        pytest.skip(f"ROS messages unavailable: {exc}")
    (scene,) = load_dataset(f"bag:{out}")
    ref = load_dataset("synthetic:kind=room,seed=2,frames=3,size=28x21")[0]
    assert len(scene) == 3 and scene.has_depth and scene.has_poses and scene.has_intrinsics
    for a, b in zip(scene.frames, ref.frames):
        assert np.allclose(a.w2c, b.w2c, atol=1e-5) and np.allclose(a.K, b.K)
        m = np.isfinite(b.depth)
        assert np.allclose(a.depth[m], b.depth[m], rtol=1e-5) and np.array_equal(a.rgb, b.rgb)
