"""Sim(3) fitting: closed-form recovery, RANSAC with outliers, and the official pose-alignment path (golden)."""

from __future__ import annotations

import numpy as np
import pytest
from support.golden import load_npz

from da3_core.geometry.sim3 import (
    align_input_poses_to_prediction,
    camera_centers,
    given_pose_scale,
    ransac_umeyama_sim3,
    umeyama_sim3,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation from a random axis-angle via Rodrigues' formula (independent of the code under test)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.2, 3.0)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


@pytest.mark.parametrize("seed", range(5))
def test_exact_recovery(seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(12, 3))
    R, s, t = random_rotation(rng), rng.uniform(0.1, 5.0), rng.normal(size=3) * 3
    dst = s * src @ R.T + t
    s_hat, R_hat, t_hat = umeyama_sim3(src, dst)
    assert abs(s_hat - s) < 1e-12 * max(1, s)
    np.testing.assert_allclose(R_hat, R, atol=1e-12)
    np.testing.assert_allclose(t_hat, t, atol=1e-11)
    assert np.linalg.det(R_hat) == pytest.approx(1.0, abs=1e-12)


def test_minimal_three_points_and_rigid_mode():
    rng = np.random.default_rng(7)
    src = rng.normal(size=(3, 3))
    R, t = random_rotation(rng), np.array([1.0, -2.0, 0.5])
    s_hat, R_hat, t_hat = umeyama_sim3(src, src @ R.T + t, with_scale=False)
    assert s_hat == 1.0
    np.testing.assert_allclose(R_hat, R, atol=1e-12)
    np.testing.assert_allclose(t_hat, t, atol=1e-12)


def test_weights_ignore_zero_weight_outliers():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3))
    R, s, t = random_rotation(rng), 2.5, np.array([0.3, 0.1, -4.0])
    dst = s * src @ R.T + t
    dst[:5] += rng.normal(size=(5, 3)) * 10
    w = np.ones(20)
    w[:5] = 0
    s_hat, R_hat, t_hat = umeyama_sim3(src, dst, weights=w)
    assert s_hat == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(R_hat, R, atol=1e-12)


def test_reflection_is_not_returned():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(10, 3))
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror: best proper rotation has det +1
    _, R_hat, _ = umeyama_sim3(src, dst)
    assert np.linalg.det(R_hat) == pytest.approx(1.0)


@pytest.mark.parametrize("src", [np.zeros((5, 3)), np.outer(np.arange(5.0), [1, 2, 3]), np.zeros((2, 3))])
def test_degenerate_raises(src):
    with pytest.raises(ValueError, match="degenerate"):
        umeyama_sim3(src, src + 1)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama_sim3(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        umeyama_sim3(np.full((4, 3), np.nan), np.zeros((4, 3)))


def test_ransac_with_noise_and_30_percent_outliers():
    rng = np.random.default_rng(11)
    n = 30
    src = rng.normal(size=(n, 3)) * 2
    R, s, t = random_rotation(rng), 0.7, np.array([2.0, -1.0, 3.0])
    dst = s * src @ R.T + t + rng.normal(size=(n, 3)) * 1e-3
    out = rng.choice(n, size=9, replace=False)
    dst[out] += rng.normal(size=(9, 3)) * 5
    s_plain, R_plain, _ = umeyama_sim3(src, dst)
    # minimal samples: the official default (half of the points per sample, 10 iterations) suits few outliers only
    s_hat, R_hat, t_hat, inliers = ransac_umeyama_sim3(src, dst, sample_size=3, max_iters=50, seed=0,
                                                       inlier_threshold=0.05)
    assert abs(s_hat - s) < 5e-3 < abs(s_plain - s)
    np.testing.assert_allclose(R_hat, R, atol=5e-3)
    np.testing.assert_allclose(t_hat, t, atol=1e-2)
    assert set(np.flatnonzero(~inliers)) == set(out)


def _w2c_from_c2w(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    E = np.eye(4)
    E[:3, :3] = R.T
    E[:3, 3] = -R.T @ c
    return E


def test_pose_alignment_closed_form():
    """Input poses = a known Sim(3) of the predicted ones: the fit returns it and maps the inputs onto them."""
    rng = np.random.default_rng(5)
    n = 6
    pred_c2w_R = [random_rotation(rng) for _ in range(n)]
    pred_c = rng.normal(size=(n, 3))
    pred = np.stack([_w2c_from_c2w(R, c) for R, c in zip(pred_c2w_R, pred_c)])
    Rg, sg, tg = random_rotation(rng), 3.0, np.array([1.0, 2.0, 3.0])  # input = Sim3(pred)
    inp = np.stack([_w2c_from_c2w(Rg @ R, sg * Rg @ c + tg) for R, c in zip(pred_c2w_R, pred_c)])
    s, R, t, aligned = align_input_poses_to_prediction(pred, inp)
    assert s == pytest.approx(1 / sg, rel=1e-12)
    np.testing.assert_allclose(R, Rg.T, atol=1e-12)
    np.testing.assert_allclose(aligned, pred, atol=1e-12)
    np.testing.assert_allclose(camera_centers(pred[:, :3]), pred_c, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_given_pose_scale_is_network_units_per_given_unit(n):
    """Given poses = a known Sim(3) of the predicted ones (scale sg): the API divides depth by 1 / sg, for two views
    (baseline ratio) as for more (Umeyama); one view or a zero baseline has no scale."""
    rng = np.random.default_rng(10 + n)
    Rs = [random_rotation(rng) for _ in range(n)]
    cs = rng.normal(size=(n, 3))
    pred = np.stack([_w2c_from_c2w(R, c) for R, c in zip(Rs, cs)])
    Rg, sg, tg = random_rotation(rng), 2.5, np.array([-1.0, 0.5, 4.0])
    inp = np.stack([_w2c_from_c2w(Rg @ R, sg * Rg @ c + tg) for R, c in zip(Rs, cs)])
    assert given_pose_scale(pred, inp) == pytest.approx(1 / sg, rel=1e-9)
    assert given_pose_scale(pred[:1], inp[:1]) is None
    with pytest.raises(ValueError, match="predicted vs"):
        given_pose_scale(pred[:1], inp)
    if n == 2:
        assert given_pose_scale(pred, np.stack([inp[0], inp[0]])) is None


def test_pose_alignment_ransac_rule_for_ten_views():
    rng = np.random.default_rng(6)
    n = 12
    Rs = [random_rotation(rng) for _ in range(n)]
    cs = rng.normal(size=(n, 3)) * 2
    pred = np.stack([_w2c_from_c2w(R, c) for R, c in zip(Rs, cs)])
    inp_c = 2.0 * cs + 0.5
    inp_c[[1, 7]] += 20.0  # two bad input poses
    inp = np.stack([_w2c_from_c2w(R, c) for R, c in zip(Rs, inp_c)])
    s, _, _, _ = align_input_poses_to_prediction(pred, inp)  # N >= 10 -> RANSAC (official rule)
    s_plain, _, _, _ = align_input_poses_to_prediction(pred, inp, ransac=False)
    assert s == pytest.approx(0.5, rel=1e-9)
    assert abs(s_plain - 0.5) > 0.05


def test_official_alignment_on_golden_raw_poses():
    """Raw golden posecond3 poses + the API's input poses reproduce the official API's aligned poses and depth."""
    inputs = load_npz("da3-small", "inputs.npz")
    raw = load_npz("da3-small", "case_posecond3.npz")
    noscale = load_npz("da3-small", "api", "api_posecond3_noalignscale__fp32.npz")
    scaled = load_npz("da3-small", "api", "api_posecond3__fp32.npz")
    s, _, _, aligned = align_input_poses_to_prediction(raw["extrinsics"][0], inputs["extrinsics_w2c_raw"][0])
    np.testing.assert_allclose(aligned, noscale["extrinsics"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw["depth"][0] / np.float32(s), scaled["depth"], rtol=1e-5, atol=1e-6)


@pytest.mark.reference
def test_ransac_matches_official_pose_align():
    pytest.importorskip("evo")
    from depth_anything_3.utils.pose_align import align_poses_umeyama

    rng = np.random.default_rng(9)
    n = 14
    Rs = [random_rotation(rng) for _ in range(n)]
    cs = rng.normal(size=(n, 3))
    pred = np.stack([_w2c_from_c2w(R, c) for R, c in zip(Rs, cs)])
    inp_c = 1.7 * cs + rng.normal(size=(n, 3)) * 0.05
    inp_c[3] += 4
    inp = np.stack([_w2c_from_c2w(R, c) for R, c in zip(Rs, inp_c)])
    _, _, s_ref, aligned_ref = align_poses_umeyama(pred, inp, ransac=True, return_aligned=True, random_state=42)
    s, _, _, aligned = align_input_poses_to_prediction(pred, inp)
    assert s == pytest.approx(s_ref, rel=1e-9)
    np.testing.assert_allclose(aligned, aligned_ref, atol=1e-9)


def test_not_unique_returns_a_least_squares_answer_for_degenerate_points():
    line = np.outer(np.arange(5.0), [1, 2, 3])
    s, R, t = umeyama_sim3(line, 2.0 * line + 1, unique=False)  # collinear: the rotation about the line is free
    np.testing.assert_allclose(s * line @ R.T + t, 2.0 * line + 1, atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    s, R, t = umeyama_sim3(np.zeros((5, 3)), line, unique=False)  # one point: scale 0, onto dst's mean
    assert s == 0.0 and np.allclose(R, np.eye(3)) and np.allclose(t, line.mean(0))
    s, _, t = umeyama_sim3(np.zeros((5, 3)), line, with_scale=False, unique=False)
    assert s == 1.0 and np.allclose(t, line.mean(0))
