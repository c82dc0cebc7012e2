"""StreamPipeline: deterministic synchronous replay, async latest-wins with rebasing, outputs, and no ROS imports."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_stream_scene import make_frames, truth_fn

from da3_core.stream.frame import FrameError
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline, format_stamp
from da3_core.stream.predictor import OraclePredictor

CFG = PipelineConfig(window_size=4, overlap=2, voxel_size=0.1, cloud_conf_percentile=None, keep_depth_frames=4)


def _replay(frames, truth, cfg=CFG, seed=5):
    pipe = StreamPipeline(OraclePredictor(truth_fn(truth), random_transform=True, seed=seed), cfg)
    results = [r for r in (pipe.process(f) for f in frames) if r is not None]
    last = pipe.flush()
    return pipe, results + ([last] if last is not None else [])


def test_sync_replay_is_deterministic_and_complete():
    frames, truth = make_frames(11)
    p1, r1 = _replay(frames, truth)
    p2, r2 = _replay(frames, truth)
    assert len(r1) == len(r2) == 5  # 4 full windows + the flushed tail
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.colors, b.colors)
        for fa, fb in zip(a.frames, b.frames):
            np.testing.assert_array_equal(fa.c2w, fb.c2w)
            np.testing.assert_array_equal(fa.depth, fb.depth)
    np.testing.assert_array_equal(p1.map_snapshot()[0], p2.map_snapshot()[0])
    stamps, poses = p1.trajectory()
    assert list(stamps) == [f.stamp_ns for f in frames]  # every frame processed exactly once
    assert sum(len(r.new_frames) for r in r1) == len(frames)
    # map-frame poses are the truth relative to the first camera (times the first window's scale)
    E0 = truth[frames[0].stamp_ns][1]
    s0 = r1[0].frames[0].depth[0, 0] / truth[frames[0].stamp_ns][0][0, 0]
    for s, P in zip(stamps, poses):
        want = E0 @ np.linalg.inv(truth[s][1])
        np.testing.assert_allclose(P[:3, :3], want[:3, :3], atol=1e-6)
        np.testing.assert_allclose(P[:3, 3], s0 * want[:3, 3], atol=1e-5 * s0)
    st = p1.stats()
    assert st["windows"] == 5 and st["trajectory_len"] == 11 and st["map_points"] > 0


def test_cloud_filters_and_bounds():
    frames, truth = make_frames(4)
    cfg = PipelineConfig(window_size=4, overlap=1, cloud_conf_percentile=50.0, cloud_max_points=500, voxel_size=None)
    oracle = OraclePredictor(truth_fn(truth), conf_fn=lambda f, d: d.astype(np.float32))  # conf = depth
    pipe = StreamPipeline(oracle, cfg)
    res = [pipe.process(f) for f in frames][-1]
    assert res.points.shape == (500, 3) and res.colors.shape == (500, 3) and res.colors.dtype == np.uint8
    assert pipe.map is not None and pipe.map.voxel_size > 0  # auto voxel size
    # every kept point is at least as far as the median depth of the window (conf = depth, 50th percentile)
    med = np.median(np.stack([truth[f.stamp_ns][0] for f in frames]))
    cams = pipe.trajectory()[1][:, :3, 3]
    dist = np.min(np.linalg.norm(res.points[:, None] - cams[None], axis=-1), axis=1)
    assert np.all(dist >= 0.5 * med)


def test_save_outputs(tmp_path):
    frames, truth = make_frames(6)
    pipe, _ = _replay(frames, truth)
    paths = pipe.save_outputs(tmp_path / "npz")
    lines = paths["trajectory"].read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 7
    first = lines[1].split()
    assert first[0] == format_stamp(frames[0].stamp_ns) == "1.000000000" and len(first) == 8
    np.testing.assert_allclose([float(v) for v in first[1:]], [0, 0, 0, 0, 0, 0, 1], atol=1e-9)
    npz = sorted(paths["depth"].glob("*.npz"))
    assert len(npz) == 4  # keep_depth_frames
    with np.load(npz[-1]) as z:
        assert z["depth"].shape == (24, 32) and int(z["stamp_ns"]) == frames[-1].stamp_ns
    assert paths["map"].read_bytes().startswith(b"ply\n")
    png = pipe.save_outputs(tmp_path / "png", depth_format="png16")
    from PIL import Image

    img = np.asarray(Image.open(sorted(png["depth"].glob("*.png"))[0]))
    assert img.dtype == np.uint16 and img.max() > 0


def test_rejections_counted():
    frames, truth = make_frames(2)
    pipe = StreamPipeline(OraclePredictor(truth_fn(truth)), CFG)
    pipe.process(frames[1])
    with pytest.raises(FrameError):
        pipe.process(frames[0])
    assert pipe.stats()["rejected_out_of_order"] == 1


class _SlowOracle(OraclePredictor):
    """Blocks each predict until released, to make the worker busy on demand."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.release = threading.Semaphore(0)
        self.calls = []

    def predict(self, frames):
        self.calls.append([f.index for f in frames])
        assert self.release.acquire(timeout=10)
        return super().predict(frames)


def test_async_latest_wins_rebases_and_chains():
    frames, truth = make_frames(12)
    oracle = _SlowOracle(truth_fn(truth), random_transform=True, seed=1)
    pipe = StreamPipeline(oracle, CFG)
    out = []
    pipe.start(out.append)
    try:
        for f in frames[:4]:  # window [0-3] starts running
            pipe.submit(f)
        deadline = time.monotonic() + 10
        while not oracle.calls and time.monotonic() < deadline:
            time.sleep(0.005)
        for f in frames[4:]:  # [2-5], [4-7], [6-9] replaced in turn (dropped), [8-11] waits
            pipe.submit(f)
        for _ in range(3):
            oracle.release.release()
        assert pipe.worker.wait_idle(10)
        st = pipe.stats()
        assert st["worker_dropped"] == 3 and st["worker_processed"] == 2
        assert oracle.calls == [[0, 1, 2, 3], [2, 3, 10, 11]]  # last window rebased onto the processed tail
        assert out[1].rebased and out[1].method == "points"
        stamps, poses = pipe.trajectory()
        E0 = truth[frames[0].stamp_ns][1]
        s0 = out[0].frames[0].depth[0, 0] / truth[frames[0].stamp_ns][0][0, 0]
        for s, P in zip(stamps, poses):
            want = E0 @ np.linalg.inv(truth[s][1])
            np.testing.assert_allclose(P[:3, 3], s0 * want[:3, 3], atol=1e-5 * s0)
        pipe.reset()
        assert pipe.trajectory()[0].size == 0 and pipe.map_snapshot()[0].shape == (0, 3)
    finally:
        for _ in range(5):
            oracle.release.release()
        assert pipe.stop(5)


def test_stream_package_imports_without_ros():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        root = name.split('.')[0]\n"
        "        if root == 'rclpy' or root.endswith('_msgs') or root.endswith('_interfaces'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import da3_core.stream, da3_core.stream.pipeline\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.split('.')[0].endswith('_msgs')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _FakeDA3:
    """Stands in for da3_core.api.DA3: records the call, returns a Prediction."""

    def __init__(self, with_poses=True):
        self.with_poses, self.calls = with_poses, []

    def predict(self, images, intrinsics=None, process_res=504, ref_view="saddle_balanced", use_ray_pose=False):
        from da3_core.api import Prediction

        self.calls.append({"n": len(images), "K": intrinsics, "ref_view": ref_view, "res": process_res})
        n, (h, w) = len(images), images[0].shape[:2]
        E = np.tile(np.eye(4), (n, 1, 1))[:, :3] if self.with_poses else None
        return Prediction(depth=np.ones((n, h, w), np.float32), conf=None, sky=None, extrinsics=E,
                          intrinsics=None if intrinsics is None else intrinsics, is_metric=True)


def test_da3_predictor_contract():
    from da3_core.stream.predictor import DA3Predictor

    frames, _ = make_frames(3)
    model = _FakeDA3()
    pred = DA3Predictor(model, process_res=280).predict(frames)
    assert model.calls[0]["ref_view"] == "first" and model.calls[0]["res"] == 280
    assert model.calls[0]["K"].shape == (3, 3, 3)  # known K passed when every frame has it
    assert pred.w2c.shape == (3, 4, 4) and pred.conf.shape == pred.depth.shape and pred.is_metric
    frames[1].K = None
    with pytest.raises(RuntimeError, match="intrinsics"):
        DA3Predictor(model).predict(frames)  # K not passed, and the fake model predicts none
    with pytest.raises(RuntimeError, match="poses"):
        DA3Predictor(_FakeDA3(with_poses=False)).predict(frames)
