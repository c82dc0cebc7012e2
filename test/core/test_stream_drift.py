"""Drift monitor: odometry with injected slip and heading drift against the true camera motion (closed form), alone
and inside the pipeline (odometry-conditioned oracle windows: the poses are the odometry's, the monitor sees the slip).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_stream_scene import make_frames, truth_fn

from da3_core.stream.drift import DriftMonitor, path_length, rotation_angle_deg
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.predictor import OraclePredictor


def rot_z(a: float) -> np.ndarray:
    R = np.eye(4)
    R[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return R


def odometry(true_c2w: list[np.ndarray], slip_steps: set[int], slip: float):
    """Integrated odometry of a camera: each true step, its translation times (1 + slip) on ``slip_steps``."""
    out = [true_c2w[0].copy()]
    for i in range(1, len(true_c2w)):
        step = np.linalg.inv(true_c2w[i - 1]) @ true_c2w[i]
        if i in slip_steps:
            step[:3, 3] *= 1.0 + slip
        out.append(out[-1] @ step)
    return np.stack(out)


def test_metric_estimate_reports_the_injected_slip_and_heading_drift():
    frames, truth = make_frames(9)
    true = np.stack([np.linalg.inv(truth[f.stamp_ns][1]) for f in frames])
    stamps = [f.stamp_ns for f in frames]
    odo = odometry(list(true), slip_steps=set(range(1, 9)), slip=0.25)
    sample = DriftMonitor().update(0, stamps, true, True, odo)
    assert sample.slip == pytest.approx(0.25, abs=1e-9)  # every step slipped by 25 %
    assert sample.scale == 1.0 and sample.estimate_source == "chained"
    assert sample.odometry_distance_m == pytest.approx(1.25 * path_length(true), rel=1e-12)
    assert sample.rotation_drift_deg == pytest.approx(0.0, abs=1e-6) and sample.duration_s == pytest.approx(0.8)
    # end to end, the odometry's translation is the true one plus 25 % of every step (rotated into the first camera)
    rel_true = np.linalg.inv(true[0]) @ true[-1]
    rel_odo = np.linalg.inv(odo[0]) @ odo[-1]
    assert sample.translation_drift_m == pytest.approx(np.linalg.norm(rel_odo[:3, 3] - rel_true[:3, 3]), rel=1e-9)
    # heading drift: the odometry's world turning by 0.5 degrees per frame (about world z) -> 4 degrees over 8 steps
    turned = np.stack([rot_z(math.radians(0.5) * i) @ T for i, T in enumerate(true)])
    assert DriftMonitor().update(0, stamps, true, True, turned).rotation_drift_deg == pytest.approx(4.0, abs=1e-6)


def test_relative_estimate_is_scaled_by_the_first_windows():
    frames, truth = make_frames(25)
    true = np.stack([np.linalg.inv(truth[f.stamp_ns][1]) for f in frames])
    units = true.copy()
    units[:, :3, 3] *= 0.3  # a relative estimate: 0.3 units per metre
    stamps = [f.stamp_ns for f in frames]
    odo = odometry(list(true), slip_steps=set(range(13, 25)), slip=0.2)
    monitor = DriftMonitor(reference_windows=3)
    samples = [monitor.update(w, stamps[a:a + 5], units[a:a + 5], False, odo[a:a + 5])
               for w, a in enumerate(range(0, 21, 4))]  # windows of 5 frames sharing one
    assert all(math.isnan(s.slip) for s in samples[:2])  # scale not known yet
    assert samples[2].scale == pytest.approx(1 / 0.3, rel=1e-9) and samples[2].slip == pytest.approx(0.0, abs=1e-9)
    assert samples[4].slip == pytest.approx(0.2, abs=1e-9) and samples[5].slip == pytest.approx(0.2, abs=1e-9)
    assert monitor.max_abs_slip == pytest.approx(0.2, abs=1e-9) and monitor.samples == 6


def test_standing_still_is_not_compared():
    still = np.stack([np.eye(4)] * 4)
    assert DriftMonitor(min_distance_m=0.05).update(0, [0, 1, 2, 3], still, True, still) is None
    assert rotation_angle_deg(rot_z(math.radians(30))[:3, :3]) == pytest.approx(30.0)


def test_pipeline_conditioned_on_slipping_odometry():
    """Odometry-conditioned oracle windows: the poses are the odometry's (map = odometry's frame at the start); the
    monitor compares the oracle's own (true, metric) motion with it and reports the slip of the slipping windows."""
    frames, truth = make_frames(18)
    true = [np.linalg.inv(truth[f.stamp_ns][1]) for f in frames]
    slip_steps = set(range(7, 12))  # inside window 2 (frames 6..11 with window 6, overlap 2: 0-5, 4-9, 8-13, ...)
    odo = odometry(true, slip_steps, slip=0.3)
    frames = [replace(f, pose_w2c=np.linalg.inv(o)) for f, o in zip(frames, odo)]
    oracle = OraclePredictor(truth_fn(truth), is_metric=True, use_known_poses=True)
    pipe = StreamPipeline(oracle, PipelineConfig(window_size=6, overlap=2, map_origin="first_pose", voxel_size=None))
    results = [r for r in (pipe.process(f) for f in frames) if r is not None]
    assert len(results) == 4 and oracle.counts["pose_conditioned"] == 4
    for res in results:  # the node's poses are the odometry's
        for cf in res.frames:
            np.testing.assert_allclose(cf.c2w, odo[frames.index(next(f for f in frames if f.stamp_ns == cf.stamp_ns))],
                                       atol=1e-9)
    slips = []
    for res in results:
        first, last = res.frames[0].index, res.frames[-1].index
        true_len = path_length(np.stack(true[first:last + 1]))
        slipped = sum(np.linalg.norm((np.linalg.inv(true[i - 1]) @ true[i])[:3, 3]) for i in range(first + 1, last + 1)
                      if i in slip_steps)
        expected = 0.3 * slipped / true_len  # slip of the window's whole distance
        assert res.drift is not None and res.drift.estimate_source == "own"
        assert res.drift.slip == pytest.approx(expected, abs=0.05 * 0.3)
        slips.append(res.drift.slip)
    assert slips[0] == pytest.approx(0.0, abs=1e-9) and max(slips) > 0.1
    assert pipe.stats()["drift_samples"] == 4
