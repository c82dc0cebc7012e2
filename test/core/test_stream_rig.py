"""Multi-camera rigs without ROS: time-step grouping with a tolerance, windows of K steps x N cameras, a camera that
stops (degraded, never blocking), and metric scale from the calibrated baselines (oracle windows moved and scaled at
random: the scale must come back, depth in metres)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_stream_scene import K, render, trajectory

from da3_core.stream.frame import Frame
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.predictor import OraclePredictor
from da3_core.stream.rig import RigWindow, align_to_rig, rig_scale

MS = 1_000_000
T0, DT = 1_000 * MS, 100 * MS


def mount(yaw_deg: float, y: float) -> np.ndarray:
    """T(rig <- camera optical): cameras side by side (``y`` m apart along the rig's x), turned by ``yaw_deg``."""
    a = math.radians(yaw_deg)
    M = np.eye(4)
    M[:3, :3] = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    M[:3, 3] = [y, 0.0, 0.02 * y]
    return M


MOUNTS = [mount(20.0, -0.15), mount(0.0, 0.0), mount(-20.0, 0.15)]


def rig_frames(n_steps: int, jitter_ns=(0, 2 * MS, -3 * MS)):
    """Frames of a 3-camera rig on the analytic room's path (the path's poses are the rig's), with stamps jittered
    per camera, plus the truth (stamp, camera) -> (depth, w2c, K)."""
    frames, truth = [], {}
    for i, rig_w2c in enumerate(trajectory(n_steps)):
        for k, M in enumerate(MOUNTS):
            w2c = np.linalg.inv(np.linalg.inv(rig_w2c) @ M)
            depth, rgb = render(w2c)
            stamp = T0 + i * DT + jitter_ns[k]
            frames.append(Frame(stamp_ns=stamp, rgb=rgb, K=K.copy(), frame_id=f"cam{k}", index=i, camera=k,
                                mount=M.copy()))
            truth[(stamp, k)] = (depth, w2c, K.copy())
    return frames, truth


def shuffled_by_step(frames, rng):
    """Cameras of one step arrive in random order."""
    out = []
    for i in range(0, len(frames), 3):
        step = frames[i:i + 3]
        out += [step[j] for j in rng.permutation(3)]
    return out


def test_steps_group_jittered_stamps_into_windows():
    frames, _ = rig_frames(9)
    rig = RigWindow(3, steps=3, overlap_steps=1, tolerance_ns=5 * MS, wait_ns=300 * MS)
    windows = [w for w in (rig.push(f) for f in shuffled_by_step(frames, np.random.default_rng(0))) if w]
    assert len(windows) == 4  # steps 0-2, 2-4, 4-6, 6-8
    for n, w in enumerate(windows):
        steps = sorted({f.index for f in w.frames})
        assert steps == list(range(2 * n, 2 * n + 3))
        assert [(f.index, f.camera) for f in w.frames] == [(i, k) for i in steps for k in range(3)]
        assert w.n_overlap == (0 if n == 0 else 3)
        assert [f.key for f in rig.tail_of(w)] == [f.key for f in w.frames[-3:]]
    assert rig.counts["steps"] == 9 and rig.counts["steps_degraded"] == 0


def test_a_camera_that_stops_degrades_steps_and_never_blocks():
    frames, _ = rig_frames(12)
    live = [f for f in frames if not (f.camera == 2 and f.index >= 5)]  # camera 2 stops after step 4
    rig = RigWindow(3, steps=3, overlap_steps=1, tolerance_ns=5 * MS, wait_ns=250 * MS)
    windows = [w for w in (rig.push(f) for f in live) if w]
    while (tail := rig.flush()) is not None:  # end of stream: the steps still waiting for camera 2 leave too
        windows.append(tail)
    steps_seen = sorted({f.index for w in windows for f in w.frames})
    assert steps_seen == list(range(12))  # every step of the live cameras went into a window
    assert rig.counts["steps_degraded"] == 7 and rig.counts["missing_cam2"] == 7
    assert rig.counts["missing_cam0"] == 0 and rig.counts["windows_degraded"] >= 3
    for w in windows:
        assert all(f.camera != 2 or f.index < 5 for f in w.frames)
    # late and duplicate frames are dropped and counted
    assert rig.push(frames[0]) is None and rig.counts["late_frames"] == 1
    fresh = RigWindow(3, steps=2)
    fresh.push(frames[0])
    fresh.push(frames[0])
    assert fresh.counts["duplicate_frames"] == 1


def test_baselines_give_the_metric_scale_of_a_randomly_scaled_window():
    frames, truth = rig_frames(4)
    oracle = OraclePredictor(lambda f: truth[f.key], random_transform=True, seed=1)
    pred = oracle.predict(frames)
    s_applied = float(np.cbrt(np.linalg.det(oracle.applied[0][:3, :3])))
    assert abs(s_applied - 1.0) > 0.1  # the window really is scaled
    assert rig_scale(frames, np.linalg.inv(pred.w2c), 5 * MS) == pytest.approx(1.0 / s_applied, rel=1e-9)
    aligned, s, source = align_to_rig(frames, pred, 5 * MS)
    assert aligned.is_metric and source == "baselines" and s == pytest.approx(1.0 / s_applied, rel=1e-9)
    for f, d in zip(frames, aligned.depth):
        np.testing.assert_allclose(d, truth[f.key][0], rtol=1e-6)
    # every step's cameras sit on the rigid rig: relative poses equal the mounts'
    c2w = np.linalg.inv(aligned.w2c)
    for i in range(0, len(frames), 3):
        for a, b in ((0, 1), (1, 2)):
            rel = np.linalg.inv(c2w[i + a]) @ c2w[i + b]
            np.testing.assert_allclose(rel, np.linalg.inv(MOUNTS[a]) @ MOUNTS[b], atol=1e-9)
    one_camera = [f for f in frames if f.camera == 0]
    assert align_to_rig(one_camera, oracle.predict(one_camera)) is None  # no baseline: nothing to measure


def test_pipeline_rig_windows_are_metric_and_chained():
    frames, truth = rig_frames(10)
    oracle = OraclePredictor(lambda f: truth[f.key], random_transform=True, seed=3)
    rig = RigWindow(3, steps=4, overlap_steps=1, tolerance_ns=5 * MS)
    pipe = StreamPipeline(oracle, PipelineConfig(voxel_size=None), window=rig)
    results = [r for r in (pipe.process(f) for f in frames) if r is not None]
    last = pipe.flush()
    results += [last] if last is not None else []
    assert pipe.stats()["rig_aligned"] == len(results) == 3  # steps 0-3, 3-6, 6-9
    first = np.linalg.inv(truth[(frames[0].stamp_ns, 0)][1])  # map = the first camera
    delivered = {}
    for res in results:
        assert res.is_metric and res.method in ("first", "points")
        for cf in res.new_frames:
            delivered[cf.key] = cf
            np.testing.assert_allclose(cf.depth, truth[cf.key][0], rtol=1e-6)
            np.testing.assert_allclose(cf.c2w, np.linalg.inv(first) @ np.linalg.inv(truth[cf.key][1]), atol=1e-6)
    assert len(delivered) == 30
    stamps, _ = pipe.trajectory()
    assert len(stamps) == 10  # the trajectory is camera 0's
