"""Pose graph over windows, optimised incrementally with GTSAM (ISAM2). No ROS.

A node is one chained window: its pose ``T_w`` (4, 4) is the window -> map transform of
:mod:`da3_core.stream.chaining` (``[[s R, t], [0, 1]]``, ``X_map = s R X_win + t``). An edge ``(a, b, T_ab)`` measures
``T_a^-1 T_b`` (window b's frame expressed in window a's frame):

- sequential edges come from chaining (the alignment of window b on the frames it shares with window a);
- loop edges come from :mod:`da3_core.stream.loop_closure` (a window run over frames of two places).

Relative predictions are chained with a Sim(3) per window, so the graph is over GTSAM ``Similarity3`` with
``BetweenFactorSimilarity3`` (7 tangent dimensions: rotation, translation, log-scale); metric predictions use
``Pose3`` / ``BetweenFactorPose3`` (6 dimensions) and keep every scale at 1. The first node is held by a tight prior
(the gauge: it stays where the chain put it). Each edge carries a diagonal noise model built from standard deviations
(rotation rad, translation in map units, log-scale) and, on loop edges, optionally a robust kernel (Huber or
Cauchy on the whitened error).

``add_node`` + ``add_edge`` queue new variables and factors; :meth:`PoseGraph.optimize` hands them to ISAM2 (one
update for sequential growth, reading back only the new nodes: a leaf joined by one edge does not move the others;
after a loop edge, extra relinearising updates until the estimate stops moving, then every node is read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gtsam
import numpy as np

__all__ = ["EdgeNoise", "PoseGraph", "sim3_to_gtsam", "gtsam_to_matrix", "relative_error"]


@dataclass(frozen=True)
class EdgeNoise:
    """Standard deviations of an edge's error: ``rot`` (rad), ``trans`` (map units), ``scale`` (log-scale; unused
    for SE(3) graphs)."""

    rot: float = 0.01
    trans: float = 0.01
    scale: float = 0.01


def _scale_of(T: np.ndarray) -> float:
    return float(np.cbrt(np.linalg.det(T[:3, :3])))


def sim3_to_gtsam(T: np.ndarray, with_scale: bool):
    """A (4, 4) ``[[s R, t], [0, 1]]`` as GTSAM ``Similarity3(R, t / s, s)`` (it maps ``X -> s (R X + t')``), or
    as ``Pose3(R, t)`` when ``with_scale`` is False (s must then be 1)."""
    T = np.asarray(T, dtype=np.float64)
    s = _scale_of(T)
    R = T[:3, :3] / s
    u, _, vt = np.linalg.svd(R)  # re-orthonormalise (chained products drift by rounding)
    R = u @ vt
    if with_scale:
        return gtsam.Similarity3(gtsam.Rot3(R), T[:3, 3] / s, s)
    return gtsam.Pose3(gtsam.Rot3(R), T[:3, 3])


def gtsam_to_matrix(value) -> np.ndarray:
    """(4, 4) ``[[s R, t], [0, 1]]`` of a GTSAM ``Similarity3`` or ``Pose3``."""
    M = np.asarray(value.matrix(), dtype=np.float64)
    return M / M[3, 3]


def relative_error(T_est: np.ndarray, T_ref: np.ndarray) -> tuple[float, float, float]:
    """(rotation deg, translation (ref units), |log scale|) of ``T_ref^-1 T_est``."""
    D = np.linalg.inv(T_ref) @ T_est
    s = _scale_of(D)
    cos = np.clip((np.trace(D[:3, :3] / s) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos))), float(np.linalg.norm(D[:3, 3])), abs(float(np.log(s)))


class PoseGraph:
    """Sim(3) (``with_scale``) or SE(3) pose graph, keys are non-negative ints (window indices).

    Args:
        with_scale: Sim(3) nodes (relative predictions) or SE(3) (metric).
        robust: None, "huber" or "cauchy": the kernel applied to the whitened error of loop edges (and of other
            edges added with ``robust=True``).
        robust_k: the kernel's threshold (whitened units).
        prior_sigma: standard deviation of the first node's prior (all dimensions).
        max_loop_iterations: extra ISAM2 updates after a loop edge (stops earlier when the estimate settles).
    """

    def __init__(self, with_scale: bool, robust: str | None = "huber", robust_k: float = 1.345,
                 prior_sigma: float = 1e-6, max_loop_iterations: int = 20):
        if robust not in (None, "huber", "cauchy"):
            raise ValueError(f"robust must be None, 'huber' or 'cauchy', got {robust!r}")
        self.with_scale = bool(with_scale)
        self.robust, self.robust_k = robust, float(robust_k)
        self.prior_sigma = float(prior_sigma)
        self.max_loop_iterations = int(max_loop_iterations)
        self.reset()

    def reset(self) -> None:
        """Forget every node and edge."""
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(1e-4)
        params.relinearizeSkip = 1
        self._isam = gtsam.ISAM2(params)
        self._new_factors = gtsam.NonlinearFactorGraph()
        self._new_values = gtsam.Values()
        self._estimate: dict[int, np.ndarray] = {}  # key -> (4, 4), last optimised (or initial) pose
        self._pending_loop = False
        self.n_sequential = 0
        self.n_loops = 0
        self.last_optimize_s = 0.0
        self.last_iterations = 0

    # --- building ---------------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return 7 if self.with_scale else 6

    def __len__(self) -> int:
        return len(self._estimate)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._estimate

    def _noise(self, noise: EdgeNoise, scale_a: float, robust: bool = True):
        t = noise.trans / max(scale_a, 1e-12)  # the error's translation is in node a's (window) units
        sig = [noise.rot] * 3 + [t] * 3 + ([noise.scale] if self.with_scale else [])
        model = gtsam.noiseModel.Diagonal.Sigmas(np.maximum(np.asarray(sig, dtype=np.float64), 1e-9))
        if not robust or self.robust is None:
            return model
        kernel = (gtsam.noiseModel.mEstimator.Huber.Create(self.robust_k) if self.robust == "huber"
                  else gtsam.noiseModel.mEstimator.Cauchy.Create(self.robust_k))
        return gtsam.noiseModel.Robust.Create(kernel, model)

    def add_node(self, key: int, T: np.ndarray) -> None:
        """A new node with initial pose ``T`` (4, 4); the first node ever added gets the gauge prior."""
        key = int(key)
        if key in self._estimate:
            raise ValueError(f"node {key} already in the graph")
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("node pose must be a finite (4, 4) matrix")
        value = sim3_to_gtsam(T, self.with_scale)
        self._new_values.insert(key, value)
        if not self._estimate:
            prior = gtsam.noiseModel.Isotropic.Sigma(self.dim, self.prior_sigma)
            factor = (gtsam.PriorFactorSimilarity3(key, value, prior) if self.with_scale
                      else gtsam.PriorFactorPose3(key, value, prior))
            self._new_factors.add(factor)
        self._estimate[key] = gtsam_to_matrix(value)

    def add_edge(self, a: int, b: int, T_ab: np.ndarray, noise: EdgeNoise, loop: bool = False,
                 robust: bool | None = None) -> None:
        """A measurement of ``T_a^-1 T_b`` (4, 4) between existing nodes. ``robust``: apply the graph's kernel
        (default: on loop edges only; a sequential edge has no alternative path to be an outlier against)."""
        a, b = int(a), int(b)
        if a not in self._estimate or b not in self._estimate:
            raise KeyError(f"edge ({a}, {b}) needs both nodes in the graph")
        T_ab = np.asarray(T_ab, dtype=np.float64)
        if T_ab.shape != (4, 4) or not np.all(np.isfinite(T_ab)):
            raise ValueError("edge measurement must be a finite (4, 4) matrix")
        model = self._noise(noise, _scale_of(self._estimate[a]), loop if robust is None else bool(robust))
        meas = sim3_to_gtsam(T_ab, self.with_scale)
        factor = (gtsam.BetweenFactorSimilarity3(a, b, meas, model) if self.with_scale
                  else gtsam.BetweenFactorPose3(a, b, meas, model))
        self._new_factors.add(factor)
        if loop:
            self.n_loops += 1
            self._pending_loop = True
        else:
            self.n_sequential += 1

    # --- solving ----------------------------------------------------------------------------------------------------

    def optimize(self) -> bool:
        """Hand queued nodes and edges to ISAM2 and refresh the estimate. Returns True when a loop edge was among
        them (every node may then have moved)."""
        t0 = time.perf_counter()
        if self._new_factors.size() == 0 and self._new_values.size() == 0:
            return False
        new_keys = [int(k) for k in self._new_values.keys()]
        self._isam.update(self._new_factors, self._new_values)
        self._new_factors = gtsam.NonlinearFactorGraph()
        self._new_values = gtsam.Values()
        loop, self._pending_loop = self._pending_loop, False
        iterations = 1
        if loop:  # relinearise until the estimate settles, then read every node
            previous = self._read(self._isam.calculateEstimate())
            for _ in range(self.max_loop_iterations):
                self._isam.update()
                iterations += 1
                current = self._read(self._isam.calculateEstimate())
                moved = max(np.abs(current[k] - previous[k]).max() for k in current)
                previous = current
                if moved < 1e-9:
                    break
            self._estimate = previous
        else:  # without a new loop edge, new leaves do not move the older nodes: read the new ones only
            get = (self._isam.calculateEstimateSimilarity3 if self.with_scale
                   else self._isam.calculateEstimatePose3)
            for k in new_keys:
                self._estimate[k] = gtsam_to_matrix(get(k))
        self.last_iterations = iterations
        self.last_optimize_s = time.perf_counter() - t0
        return loop

    def _read(self, values) -> dict[int, np.ndarray]:
        get = values.atSimilarity3 if self.with_scale else values.atPose3
        return {k: gtsam_to_matrix(get(k)) for k in self._estimate}

    def pose(self, key: int) -> np.ndarray:
        """(4, 4) current estimate of node ``key``."""
        return self._estimate[int(key)].copy()

    def poses(self) -> dict[int, np.ndarray]:
        """Every node's current estimate (copies), by key."""
        return {k: v.copy() for k, v in self._estimate.items()}
