"""Depth and trajectory metrics against closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.eval.depth_metrics import depth_scores, view_scale_errors
from da3_core.eval.pose_metrics import absolute_trajectory_error, camera_distance_errors


def _gt(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 10.0, size=(3, 20, 30))
    gt[0, :2] = np.inf  # sky
    return gt


def test_perfect_prediction_scores_perfectly():
    gt = _gt()
    for mode in ("none", "median", "scale_shift"):
        s = depth_scores(gt.copy(), gt, mode)
        assert s.abs_rel == pytest.approx(0.0, abs=1e-12) and s.delta1 == 1.0
        assert s.num_pixels == gt.size - 60


def test_known_scale_and_shift_are_removed_by_the_matching_alignment():
    gt = _gt(1)
    assert depth_scores(gt * 3.5, gt, "median").abs_rel == pytest.approx(0.0, abs=1e-12)
    assert depth_scores(gt * 3.5, gt, "median").scale == pytest.approx(1 / 3.5)
    s = depth_scores(0.5 * gt + 2.0, gt, "scale_shift")
    assert s.abs_rel == pytest.approx(0.0, abs=1e-9)
    assert s.scale == pytest.approx(2.0) and s.shift == pytest.approx(-4.0)
    assert depth_scores(gt * 3.5, gt, "none").abs_rel == pytest.approx(2.5)  # no alignment for metric models


def test_delta1_counts_the_fraction_inside_the_threshold():
    gt = np.ones((1, 1, 10))
    pred = gt.copy()
    pred[0, 0, :3] = 1.3  # 3 of 10 pixels outside 1.25
    s = depth_scores(pred, gt, "none")
    assert s.delta1 == pytest.approx(0.7) and s.abs_rel == pytest.approx(0.09)


def _w2c(c2w_rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = c2w_rot.T
    out[:3, 3] = -c2w_rot.T @ centre
    return out


def test_ate_zero_for_a_similar_trajectory_and_exact_for_a_known_offset():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(6, 3))
    gt = np.stack([_w2c(np.eye(3), c) for c in centres])
    theta = 0.4
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    pred = np.stack([_w2c(rot, 2.0 * rot @ c + 1.0) for c in centres])  # same trajectory in another Sim(3) frame
    ate = absolute_trajectory_error(pred, gt)
    assert ate.ate_rmse == pytest.approx(0.0, abs=1e-9) and ate.scale == pytest.approx(0.5)
    # the alignment it returns is the one that maps the predicted centres onto the true ones (pred = 2 rot c + 1)
    pred_c = 2.0 * centres @ rot.T + 1.0
    np.testing.assert_allclose(ate.scale * pred_c @ ate.rotation.T + ate.translation, centres, atol=1e-9)
    np.testing.assert_allclose(ate.rotation, rot.T, atol=1e-9)
    moved = centres.copy()
    moved[0] += np.array([0.0, 0.0, 0.6])
    moved[1] -= np.array([0.0, 0.0, 0.6])  # zero-mean perturbation orthogonal to the others' spread stays put
    ate_rigid = absolute_trajectory_error(np.stack([_w2c(np.eye(3), c) for c in moved]), gt, with_scale=False)
    assert ate_rigid.ate_rmse <= np.sqrt(2 * 0.36 / 6) + 1e-9 and ate_rigid.ate_rmse > 0


def test_ate_of_a_straight_drive_and_of_a_collapsed_path():
    """A robot driving straight (collinear true centres) leaves the rotation about its line free: the ATE is still
    the least-squares error, checked against a direct numerical minimisation over Sim(3)."""
    from scipy.optimize import minimize
    from scipy.spatial.transform import Rotation

    line = np.outer(np.linspace(0.0, 3.0, 10), [0.6, 0.0, 0.8]) + 1.0
    gt = np.stack([_w2c(np.eye(3), c) for c in line])
    rot = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    similar = np.stack([_w2c(rot, 0.7 * rot @ c - 2.0) for c in line])
    assert absolute_trajectory_error(similar, gt).ate_rmse == pytest.approx(0.0, abs=1e-9)
    noisy = line + np.random.default_rng(3).normal(scale=0.2, size=line.shape)
    ate = absolute_trajectory_error(np.stack([_w2c(np.eye(3), c) for c in noisy]), gt).ate_rmse

    def rmse(p: np.ndarray) -> float:
        moved = np.exp(p[3]) * noisy @ Rotation.from_rotvec(p[:3]).as_matrix().T
        return float(np.sqrt(np.mean(np.sum((moved - moved.mean(0) - (line - line.mean(0))) ** 2, axis=1))))

    best = min(minimize(rmse, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).fun
               for x0 in np.random.default_rng(4).normal(scale=1.0, size=(8, 4)))
    assert ate == pytest.approx(best, rel=1e-5)
    # every predicted camera on one spot: the best Sim(3) has scale 0, the error is the true path's spread
    collapsed = absolute_trajectory_error(np.stack([_w2c(np.eye(3), np.ones(3))] * 10), gt)
    spread = np.sqrt(np.mean(np.sum((line - line.mean(0)) ** 2, axis=1)))
    assert collapsed.scale == 0.0 and collapsed.ate_rmse == pytest.approx(spread)


def test_view_scale_errors_measure_each_views_scale_against_the_window():
    rng = np.random.default_rng(3)
    gt = rng.uniform(1.0, 5.0, size=(4, 6, 8))
    # the window's depth right up to one factor: every view is consistent
    np.testing.assert_allclose(view_scale_errors(gt / 2.5, gt), 1.0)
    # views off by 1, 1, 1.5 and 1/2 of it: the median view scale is the window's, errors are the factors' ratios
    f = np.array([1.0, 1.0, 1.5, 0.5])
    np.testing.assert_allclose(view_scale_errors(gt * f[:, None, None], gt), [1.0, 1.0, 1.5, 2.0])
    # a view with no valid pixel has no scale
    gt2 = gt.copy()
    gt2[3] = np.nan
    out = view_scale_errors(gt * f[:, None, None], gt2)
    assert np.isnan(out[3]) and np.allclose(out[:3], [1.0, 1.0, 1.5])
    with pytest.raises(ValueError, match="S, H, W"):
        view_scale_errors(gt[0], gt[0])


def test_camera_distance_errors_measure_each_cameras_distance_against_the_window():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(5, 3))
    gt = np.stack([_w2c(np.eye(3), c) for c in centres])
    # the whole window in another similarity frame: every distance in one scale
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    similar = np.stack([_w2c(rot, 3.0 * rot @ c + 2.0) for c in centres])
    out = camera_distance_errors(similar, gt)
    assert np.isnan(out[0]) and np.allclose(out[1:], 1.0)
    # cameras 3 and 4 pulled halfway towards camera 0 (a fading spread): their distances are 2x too short
    moved = centres.copy()
    moved[3:] = centres[0] + 0.5 * (centres[3:] - centres[0])
    out = camera_distance_errors(np.stack([_w2c(np.eye(3), c) for c in moved]), gt)
    # by hand: the log ratios 0, 0, log 0.5, log 0.5 about their median
    logs = np.log([1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(out[1:], np.exp(np.abs(logs - np.median(logs))))
    # one distance has no spread
    assert np.isnan(camera_distance_errors(gt[:2], gt[:2])).all()
