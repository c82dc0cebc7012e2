"""Pair pose metrics (RRA / RTA / AUC) and trajectory alignment against closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.eval.pose_metrics import accuracy_at, align_trajectory, pose_auc, pose_scores, relative_pose_errors
from da3_core.geometry.sim3 import camera_centers


def _rot(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _w2c(R_c2w, centre):
    T = np.eye(4)
    T[:3, :3] = R_c2w.T
    T[:3, 3] = -R_c2w.T @ centre
    return T


def _cameras(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([_w2c(_rot(rng.normal(size=3), rng.uniform(0, 60)), rng.normal(size=3) * 2) for _ in range(n)])


def test_ground_truth_scores_perfectly_even_in_another_similarity_frame():
    gt = _cameras()
    G = np.eye(4)
    G[:3, :3], G[:3, 3] = _rot([1, 2, 3], 40), [1, -2, 0.5]
    pred = gt @ np.linalg.inv(G)  # same cameras, world moved rigidly
    pred[:, :3, 3] *= 3.0  # and scaled (translations of w2c scale with the world)
    scores, pe = pose_scores(pred, gt)
    assert np.allclose(pe.rot_deg, 0, atol=1e-6) and np.allclose(pe.trans_deg, 0, atol=1e-5)
    assert scores["auc@3"] == 1.0 and scores["auc@30"] == 1.0 and scores["rra@3"] == 1.0 and scores["rta@3"] == 1.0
    assert scores["pairs"] == 15


def test_known_rotation_of_one_camera_gives_exactly_that_rotation_error():
    gt = _cameras(5, seed=1)
    pred = gt.copy()
    k, theta = 2, 7.0
    c = camera_centers(gt)[k]
    R_c2w = gt[k, :3, :3].T
    pred[k] = _w2c(R_c2w @ _rot([0.3, -1, 0.2], theta), c)  # rotate camera k about its own centre
    pe = relative_pose_errors(pred, gt)
    involved = (pe.pairs == k).any(axis=1)
    assert np.allclose(pe.rot_deg[involved], theta, atol=1e-9)
    assert np.allclose(pe.rot_deg[~involved], 0, atol=1e-9)
    assert np.allclose(pe.trans_deg[~involved], 0, atol=1e-6)
    # RRA at thresholds either side of theta: the 4 pairs with camera k (of 10) fall between them
    assert accuracy_at(pe.rot_deg, theta - 0.01) == pytest.approx(0.6)
    assert accuracy_at(pe.rot_deg, theta + 0.01) == pytest.approx(1.0)


def test_auc_of_a_known_error_distribution():
    e = np.array([0.5, 1.5, 2.5, 10.0])
    # fractions below 1, 2, 3 degrees: 1/4, 2/4, 3/4 -> AUC@3 = 0.5; all below 30 except none -> AUC@30
    assert pose_auc(e, 3) == pytest.approx(0.5)
    expected30 = np.mean([np.mean(e < k) for k in range(1, 31)])
    assert pose_auc(e, 30) == pytest.approx(expected30)
    assert pose_auc(np.zeros(7), 3) == 1.0 and pose_auc(np.full(3, 45.0), 30) == 0.0
    assert np.isnan(pose_auc(np.zeros(0), 3))


def test_translation_error_is_the_direction_angle_and_symmetric_by_default():
    gt = np.stack([_w2c(np.eye(3), np.zeros(3)), _w2c(np.eye(3), np.array([1.0, 0, 0]))])
    pred = np.stack([_w2c(np.eye(3), np.zeros(3)), _w2c(np.eye(3), np.array([1.0, 1.0, 0]))])
    assert relative_pose_errors(pred, gt).trans_deg[0] == pytest.approx(45.0)
    flipped = np.stack([_w2c(np.eye(3), np.zeros(3)), _w2c(np.eye(3), np.array([-1.0, 0, 0]))])
    assert relative_pose_errors(flipped, gt).trans_deg[0] == pytest.approx(0.0)
    assert relative_pose_errors(flipped, gt, symmetric=False).trans_deg[0] == pytest.approx(180.0)
    # a camera predicted on top of the other has no direction: 90 degrees folded (no better than a random axis),
    # 180 strict -- never 0, which would score identity poses as perfect
    still = np.stack([_w2c(np.eye(3), np.zeros(3))] * 2)
    assert relative_pose_errors(still, gt).trans_deg[0] == pytest.approx(90.0)
    assert relative_pose_errors(still, gt, symmetric=False).trans_deg[0] == pytest.approx(180.0)
    assert relative_pose_errors(still, still).trans_deg[0] == 0.0


@pytest.mark.parametrize("ransac", [False, True])
def test_sim3_alignment_recovers_a_known_similarity(ransac):
    gt = _cameras(12, seed=3)
    R, s, t = _rot([0, 0, 1], 30), 0.25, np.array([3.0, 0, -1])
    # predicted world = (1/s) R^T (gt world - t): centres map back with s, R, t
    c_pred = (camera_centers(gt) - t) @ R / s
    pred = np.stack([_w2c(R.T @ g[:3, :3].T, c) for g, c in zip(gt, c_pred)])
    if ransac:
        pred[0] = _w2c(pred[0, :3, :3].T, c_pred[0] + 5.0)  # one outlier camera
    s_, R_, t_, aligned, method = align_trajectory(pred, gt, "sim3", ransac=ransac)
    assert method == ("ransac" if ransac else "umeyama")
    assert s_ == pytest.approx(s) and np.allclose(R_, R) and np.allclose(t_, t, atol=1e-9)
    good = slice(1, None) if ransac else slice(None)
    assert np.allclose(aligned[good], gt[good], atol=1e-9)


def test_alignment_falls_back_to_the_first_frame_for_two_cameras():
    gt = _cameras(2, seed=4)
    G = np.eye(4)
    G[:3, :3], G[:3, 3] = _rot([1, 0, 0], 20), [0.5, 0, 0]
    pred = gt @ G
    s, _, _, aligned, method = align_trajectory(pred, gt, "sim3")
    assert method == "first_frame" and s == pytest.approx(1.0) and np.allclose(aligned, gt, atol=1e-9)
