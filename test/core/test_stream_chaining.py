"""WindowChainer with the geometry oracle: random per-window Sim(3) / SE(3) must be undone exactly."""

from __future__ import annotations

import numpy as np
import pytest
from test_stream_scene import make_frames, truth_fn

from da3_core.stream.chaining import WindowChainer
from da3_core.stream.predictor import OraclePredictor
from da3_core.stream.window import SlidingWindow


def _windows(frames, size, overlap):
    sw = SlidingWindow(size, overlap)
    wins = [w for w in (sw.push(f) for f in frames) if w is not None]
    last = sw.flush()
    return wins + ([last] if last is not None else [])


def _run(frames, oracle, chainer, size=4, overlap=2):
    results = []
    for w in _windows(frames, size, overlap):
        results.append((w, chainer.add(w.frames, oracle.predict(w.frames), w.n_overlap)))
    return results


def _expected_c2w(truth, frames, scale):
    E0 = truth[frames[0].stamp_ns][1]
    out = {}
    for f in frames:
        c2w = E0 @ np.linalg.inv(truth[f.stamp_ns][1])  # map := first camera
        c2w[:3, 3] *= scale
        out[f.stamp_ns] = c2w
    return out


@pytest.mark.parametrize("metric", [False, True])
def test_chain_recovers_map_frame(metric):
    frames, truth = make_frames(14)
    oracle = OraclePredictor(truth_fn(truth), random_transform=True, is_metric=metric, seed=3)
    results = _run(frames, oracle, WindowChainer(robust="irls"))
    assert len(results) >= 6
    s0 = float(np.cbrt(np.linalg.det(oracle.applied[0][:3, :3])))
    if metric:
        assert s0 == pytest.approx(1.0, abs=1e-12)
        assert all(r.scale == 1.0 for _, r in results)
    else:
        assert len({round(float(np.cbrt(np.linalg.det(T[:3, :3]))), 6) for T in oracle.applied}) > 3
    expect = _expected_c2w(truth, frames, s0)
    extent = 2.0 * s0
    seen = set()
    for w, res in results:
        assert res.chained and res.method in ("first", "points")
        assert res.residual_rel < 1e-6
        for cf in res.frames:
            E = expect[cf.stamp_ns]
            np.testing.assert_allclose(cf.c2w[:3, :3], E[:3, :3], atol=1e-6)
            np.testing.assert_allclose(cf.c2w[:3, 3], E[:3, 3], atol=1e-6 * extent)
            np.testing.assert_allclose(cf.depth, s0 * truth[cf.stamp_ns][0], rtol=1e-6)
            assert cf.is_new == (cf.stamp_ns not in seen)
        seen.update(w.stamps_ns)
    assert seen == {f.stamp_ns for f in frames}


def test_chain_robust_to_outliers_and_ransac():
    frames, truth = make_frames(8)

    def corrupt(f):
        d, E, K = truth[f.stamp_ns]
        d = d.copy()
        d[::5, ::3] *= 1.5  # 7 % gross outliers
        return d, E, K

    # (metric, robust): SE(3) + RANSAC once returned one weight per inlier for all correspondences and crashed
    for metric, robust in ((False, "irls"), (False, "ransac"), (True, "ransac")):
        oracle = OraclePredictor(corrupt, random_transform=True, is_metric=metric, seed=1)
        results = _run(frames, oracle, WindowChainer(robust=robust, conf_percentile=None))
        s0 = float(np.cbrt(np.linalg.det(oracle.applied[0][:3, :3])))
        expect = _expected_c2w(truth, frames, s0)
        for _, res in results:
            for cf in res.frames:
                err = np.linalg.norm(cf.c2w[:3, 3] - expect[cf.stamp_ns][:3, 3]) / s0
                assert err < 1e-3, (robust, err)


def test_no_overlap_cannot_be_chained():
    frames, truth = make_frames(8)
    oracle = OraclePredictor(truth_fn(truth), random_transform=True, seed=0)
    results = _run(frames, oracle, WindowChainer(), size=4, overlap=0)
    assert [r.method for _, r in results] == ["first", "none"]
    assert results[0][1].chained and not results[1][1].chained
    assert all(cf.is_new for cf in results[1][1].frames)
    # the guess parks the window's first camera at the last known pose
    np.testing.assert_allclose(results[1][1].frames[0].c2w[:3, :3], results[0][1].frames[-1].c2w[:3, :3], atol=1e-9)


def test_pose_fallback_when_overlap_has_no_valid_pixels():
    frames, truth = make_frames(6)
    oracle = OraclePredictor(truth_fn(truth), random_transform=True, is_metric=True, seed=2,
                             conf_fn=lambda f, d: np.zeros_like(d) if f.index in (2, 3) else np.ones_like(d))
    results = _run(frames, oracle, WindowChainer())
    assert results[1][1].method == "pose"
    expect = _expected_c2w(truth, frames, 1.0)
    for cf in results[1][1].frames:
        np.testing.assert_allclose(cf.c2w, expect[cf.stamp_ns], atol=1e-6)


def test_chainer_validates_arguments():
    with pytest.raises(ValueError):
        WindowChainer(mode="affine")
    with pytest.raises(ValueError):
        WindowChainer(robust="lms")


def test_first_pose_origin_puts_the_map_at_the_known_pose_frame():
    """origin="first_pose": the first frame's known pose (e.g. odom -> camera) places the map; metric oracle windows
    moved at random come out in that pose's frame (here the truth's world frame): c2w = the true c2w."""
    from dataclasses import replace

    frames, truth = make_frames(10)
    frames[0] = replace(frames[0], pose_w2c=truth[frames[0].stamp_ns][1])  # only the first frame needs a pose
    oracle = OraclePredictor(truth_fn(truth), random_transform=True, is_metric=True, seed=5)
    results = _run(frames, oracle, WindowChainer(robust="irls", origin="first_pose"))
    for _, res in results:
        for cf in res.frames:
            np.testing.assert_allclose(cf.c2w, np.linalg.inv(truth[cf.stamp_ns][1]), atol=1e-6)
    # without a known pose on the first frame the map stays the first camera
    frames[0] = replace(frames[0], pose_w2c=None)
    plain = _run(frames, OraclePredictor(truth_fn(truth)), WindowChainer(origin="first_pose"))
    np.testing.assert_allclose(plain[0][1].frames[0].c2w, np.eye(4), atol=1e-9)
