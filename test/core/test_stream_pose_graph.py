"""Pose graph (GTSAM ISAM2) on closed-form cases: a square loop returns to the truth from perturbed initial poses,
and an evenly biased chain closed by an exact loop edge spreads the error as least squares says it must."""

from __future__ import annotations

import math

import numpy as np
import pytest

from da3_core.stream.pose_graph import EdgeNoise, PoseGraph, relative_error
from da3_core.stream.predictor import sim3_matrix


def yaw(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def square(with_scale: bool) -> list[np.ndarray]:
    """Four corners of a 2 m square, each turned 90 degrees more; Sim(3) nodes also change scale."""
    scales = [1.0, 1.5, 0.8, 1.2] if with_scale else [1.0] * 4
    corners = [(0, 0), (2, 0), (2, 2), (0, 2)]
    return [sim3_matrix(s, yaw(math.pi / 2 * i), np.array([x, y, 0.3])) for i, (s, (x, y)) in
            enumerate(zip(scales, corners))]


@pytest.mark.parametrize("with_scale", [True, False])
def test_square_loop_returns_to_the_truth(with_scale):
    truth = square(with_scale)
    rng = np.random.default_rng(3)
    graph = PoseGraph(with_scale=with_scale)
    for k, T in enumerate(truth):
        s = 1.0 + (0.1 * rng.uniform(-1, 1) if with_scale and k else 0.0)
        noise = sim3_matrix(s, yaw(0.2 * rng.uniform(-1, 1)), rng.uniform(-0.3, 0.3, 3)) if k else np.eye(4)
        graph.add_node(k, T @ noise)  # perturbed initial guess (node 0 exact: the gauge)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        graph.add_edge(a, b, np.linalg.inv(truth[a]) @ truth[b], EdgeNoise())
    graph.add_edge(3, 0, np.linalg.inv(truth[3]) @ truth[0], EdgeNoise(), loop=True)
    before = max(relative_error(graph.pose(k), truth[k])[1] for k in range(4))
    assert graph.optimize() is True and graph.n_loops == 1 and graph.n_sequential == 3
    for k in range(4):
        rot, trans, logs = relative_error(graph.pose(k), truth[k])
        assert rot < 1e-5 and trans < 1e-6 and logs < 1e-7
    assert before > 0.05  # the initial guess was really off


@pytest.mark.parametrize("with_scale", [True, False])
def test_biased_chain_closed_by_exact_loop_spreads_error_evenly(with_scale):
    """Nodes on the x axis, n edges each measuring d + e, an exact loop edge n d back to node 0, equal weights, no
    kernel: least squares gives every edge the same correction, so node k sits at k (d + e) - k n e / (n + 1). (Sim(3)
    could trade translation for scale, so its log-scale is held almost fixed: sigma 1e-6 against 1e-2.)"""
    n, d, e = 6, 1.0, 0.05
    noise = EdgeNoise(0.01, 0.01, 1e-6)
    graph = PoseGraph(with_scale=with_scale, robust=None)
    for k in range(n + 1):
        graph.add_node(k, sim3_matrix(1.0, np.eye(3), np.array([k * (d + e), 0.0, 0.0])))
    step = sim3_matrix(1.0, np.eye(3), np.array([d + e, 0.0, 0.0]))
    for k in range(n):
        graph.add_edge(k, k + 1, step, noise)
    graph.optimize()
    loop = sim3_matrix(1.0, np.eye(3), np.array([-n * d, 0.0, 0.0]))  # node n -> node 0
    graph.add_edge(n, 0, loop, noise, loop=True)
    graph.optimize()
    for k in range(n + 1):
        expected = k * (d + e) - k * n * e / (n + 1)
        assert graph.pose(k)[:3, 3] == pytest.approx([expected, 0.0, 0.0], abs=1e-5)
        assert np.allclose(graph.pose(k)[:3, :3], np.eye(3), atol=1e-7)


def test_biased_scale_chain_closed_by_exact_loop():
    """Sim(3): the same closed form in log-scale (pure scale edges, identity rotation, zero translation)."""
    n, e = 5, math.log(1.02)
    graph = PoseGraph(with_scale=True, robust=None)
    for k in range(n + 1):
        graph.add_node(k, sim3_matrix(math.exp(k * e), np.eye(3), np.zeros(3)))
    for k in range(n):
        graph.add_edge(k, k + 1, sim3_matrix(math.exp(e), np.eye(3), np.zeros(3)), EdgeNoise())
    graph.add_edge(n, 0, np.eye(4), EdgeNoise(), loop=True)  # truth: every scale is 1
    graph.optimize()
    for k in range(n + 1):
        s = float(np.cbrt(np.linalg.det(graph.pose(k)[:3, :3])))
        assert math.log(s) == pytest.approx(k * e - k * n * e / (n + 1), abs=1e-7)


def test_incremental_growth_and_bad_input():
    graph = PoseGraph(with_scale=False)
    graph.add_node(0, np.eye(4))
    step = sim3_matrix(1.0, yaw(0.1), np.array([1.0, 0.0, 0.0]))
    for k in range(1, 20):
        graph.add_node(k, graph.pose(k - 1) @ step)
        graph.add_edge(k - 1, k, step, EdgeNoise())
        assert graph.optimize() is False
    expected = np.linalg.matrix_power(step, 19)
    assert relative_error(graph.pose(19), expected)[1] < 1e-9 and len(graph) == 20
    with pytest.raises(ValueError):
        graph.add_node(3, np.eye(4))  # duplicate
    with pytest.raises(KeyError):
        graph.add_edge(0, 99, step, EdgeNoise())
    with pytest.raises(ValueError):
        graph.add_node(50, np.full((4, 4), np.nan))


def test_cauchy_kernel_discounts_a_wrong_loop_edge():
    """A square whose true loop edge is joined by a grossly wrong one: with a Cauchy kernel the truth survives far
    better than without a kernel."""
    truth = square(False)

    def solve(robust):
        graph = PoseGraph(with_scale=False, robust=robust, robust_k=1.0)
        for k, T in enumerate(truth):
            graph.add_node(k, T)
        for a, b in [(0, 1), (1, 2), (2, 3)]:
            graph.add_edge(a, b, np.linalg.inv(truth[a]) @ truth[b], EdgeNoise())
        graph.add_edge(3, 0, np.linalg.inv(truth[3]) @ truth[0], EdgeNoise(), loop=True)
        wrong = np.linalg.inv(truth[2]) @ truth[0] @ sim3_matrix(1.0, yaw(0.5), np.array([1.5, -1.0, 0.0]))
        graph.add_edge(2, 0, wrong, EdgeNoise(), loop=True)
        graph.optimize()
        return max(relative_error(graph.pose(k), truth[k])[1] for k in range(4))

    assert solve("cauchy") < 0.1 * solve(None)
