"""``da3`` CLI: end to end in a subprocess, video sampling, window chaining, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from support.api_helpers import synthetic_images
from support.ply import parse_ply

from da3_core.api import Prediction
from da3_core.cli import _chain, load_inputs, main, parse_intrinsics, window_starts

REPO = Path(__file__).resolve().parents[2]
VARIANT = "da3-small-reduced"


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "da3_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from da3_core.registry import build_network
    from da3_core.weights.loading import save_weights
    from da3_core.weights.recipe import apply_recipe

    folder = tmp_path_factory.mktemp("ckpt")
    save_weights(apply_recipe(build_network(VARIANT)), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_name": VARIANT}))
    return folder


def test_infer_folder_end_to_end(tmp_path, checkpoint):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, img in enumerate(synthetic_images(3, 120, 160)):
        Image.fromarray(img).save(images / f"frame_{i:02d}.png")
    (images / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    res = run_cli("infer", str(images), "--weights", str(checkpoint), "--out", str(out), "--process-res", "112",
                  "--device", "cpu", "--max-points", "5000", "--ref-view", "first")
    assert res.returncode == 0, res.stderr
    assert "inference" in res.stderr  # tqdm progress
    with np.load(out / "results.npz") as data:
        assert data["depth"].shape == (3, 120, 160) and data["conf"].shape == (3, 120, 160)
        assert data["extrinsics"].shape == (3, 4, 4) and data["image"].shape == (3, 120, 160, 3)
        assert np.isfinite(data["depth"]).all()
    pngs = sorted((out / "depth").glob("*.png"))
    assert len(pngs) == 3 and np.asarray(Image.open(pngs[0])).shape == (120, 160, 3)
    _, vertices = parse_ply(out / "points.ply")
    assert 0 < len(vertices) <= 5000
    cams = json.loads((out / "cameras.json").read_text())
    assert [f["name"] for f in cams["frames"]] == ["frame_00", "frame_01", "frame_02"]
    assert (cams["frames"][0]["width"], cams["frames"][0]["height"]) == (160, 120)
    tum = [line for line in (out / "trajectory.tum").read_text().splitlines() if not line.startswith("#")]
    assert len(tum) == 3 and all(len(line.split()) == 8 for line in tum)


def test_infer_windows_and_intrinsics(tmp_path, checkpoint):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, img in enumerate(synthetic_images(5, 84, 112)):
        Image.fromarray(img).save(images / f"{i}.jpg")
    out = tmp_path / "out"
    res = run_cli("infer", str(images), "--weights", str(checkpoint / "model.safetensors"), "--variant", VARIANT,
                  "--out", str(out), "--process-res", "112", "--device", "cpu", "--batch-views", "3",
                  "--intrinsics", "100,101,56,42")
    assert res.returncode == 0, res.stderr
    with np.load(out / "results.npz") as data:
        assert data["depth"].shape == (5, 84, 112)
        np.testing.assert_array_equal(data["intrinsics"][4], [[100, 0, 56], [0, 101, 42], [0, 0, 1]])


def test_variants_and_missing_weights(tmp_path, capsys):
    assert main(["variants"]) == 0
    listed = capsys.readouterr().out.split()
    assert "da3-small" in listed and "da3nested-giant-large" in listed and VARIANT not in listed
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["infer", str(tmp_path), "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Nothing is downloaded" in err


def test_bad_inputs(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "missing"), "--weights", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["infer", str(tmp_path), "--weights", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["infer", str(tmp_path), "--out", str(tmp_path)])  # --weights is required


def test_parse_intrinsics():
    K = parse_intrinsics("500,510,320.5,240", 2)
    np.testing.assert_array_equal(K[1], [[500, 0, 320.5], [0, 510, 240], [0, 0, 1]])
    from da3_core.cli import CliError

    with pytest.raises(CliError, match="fx,fy,cx,cy"):
        parse_intrinsics("500,510", 1)


def test_video_sampling(tmp_path):
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("OpenCV build cannot write MJPG/AVI")
    for i in range(20):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 2] = 12 * i  # red channel in BGR order grows with the frame index
        writer.write(frame)
    writer.release()
    frames, names, stamps = load_inputs(path, fps=5.0, max_frames=None)
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    np.testing.assert_allclose(stamps, np.arange(10) * 0.2)
    assert frames[3][..., 0].mean() == pytest.approx(72, abs=4)  # frame 6 (RGB order), JPEG tolerance
    assert len(load_inputs(path, fps=5.0, max_frames=4)[0]) == 4


def test_window_spans():
    assert window_starts(5, 10) == [(0, 5)]
    assert window_starts(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert window_starts(6, 3) == [(0, 3), (2, 5), (4, 6)]


def _w2c(R, c):
    E = np.eye(4)
    E[:3, :3], E[:3, 3] = R, -R @ c
    return E


def test_chain_windows_closed_form():
    """Window 2 sees views 2..4 in its own frame (view 2 at the origin) and scale (x 0.5); chaining restores the
    global poses and depths of window 1's frame."""
    rng = np.random.default_rng(0)

    def rot(a):
        return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])

    Rs = [rot(0.1 * i) for i in range(5)]
    cs = [np.array([0.3 * i, 0.05 * i, 0.0]) for i in range(5)]
    glob = np.stack([_w2c(R, c) for R, c in zip(Rs, cs)])
    depth = rng.uniform(1, 3, (5, 4, 6)).astype(np.float32)
    s = 0.5
    T2inv = np.linalg.inv(glob[2])
    local = []
    for j in range(2, 5):
        A = glob[j] @ T2inv  # pose relative to view 2, global units
        A[:3, 3] *= s
        local.append(A)

    def pred(ext, d):
        return Prediction(depth=d, conf=None, sky=None, extrinsics=np.stack(ext),
                          intrinsics=np.stack([np.eye(3)] * len(d)))

    chained = _chain(pred(list(glob[:3]), depth[:3]), pred(local, depth[2:] * np.float32(s)))
    np.testing.assert_allclose(chained.extrinsics, glob, atol=1e-12)
    np.testing.assert_allclose(chained.depth, depth, rtol=1e-6)
