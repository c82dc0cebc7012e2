"""Synthetic loop-closure scenarios for tests and ``bench/loop_closure.py``: rendered sequences with ground truth,
a predictor wrapper that injects drift per window, and a runner that reports ATE and loop counts. No ROS.

- :func:`loop_sequence`: a camera on a horizontal circle in a furnished room looking outward, over more than one
  turn (it comes back to where it started and sees the same walls again);
- :func:`no_revisit_sequences`: three sequences that never come back to a place they saw (a part-turn orbit, a
  walk across a room, a walk across an outdoor scene);
- :class:`DriftingPredictor`: moves every frame after the first ``n_fixed`` of a window by a Sim(3) about the last
  fixed camera (scale ``1 + scale_per_window``, ``deg_per_window`` about the window's y axis), so chaining on the
  untouched overlap frames passes the error on and it accumulates window after window, as chaining drift does;
- :func:`run_sequence`: the streaming pipeline over a sequence with the geometry oracle behind the drift, with or
  without the pose graph and loop closure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from da3_core.eval.pose_metrics import absolute_trajectory_error
from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.frame import Frame
from da3_core.stream.loop_closure import LoopConfig
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.predictor import OraclePredictor, Predictor, WindowPrediction

__all__ = ["Sequence", "loop_sequence", "no_revisit_sequences", "DriftingPredictor", "run_sequence", "RunSummary"]

HW = (48, 64)
K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])


@dataclass
class Sequence:
    """``frames`` with known K; ``truth`` stamp -> (depth, w2c, K); ``name``."""

    name: str
    frames: list[Frame]
    truth: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _render(name: str, kind: str, seed: int, w2cs: np.ndarray) -> Sequence:
    from da3_core.data.synthetic.render import render
    from da3_core.data.synthetic.scene import make_scene

    scene = make_scene(kind, seed)
    frames, truth = [], {}
    for i, E in enumerate(w2cs):
        view = render(scene, E, K, HW, normals=False, ids=False)
        depth = np.where(np.isfinite(view.depth), view.depth, np.nan).astype(np.float32)
        stamp = 1_000_000_000 + i * 100_000_000
        frames.append(Frame(stamp_ns=stamp, rgb=view.rgb, K=K.copy(), frame_id="cam_optical", index=i))
        truth[stamp] = (depth, np.asarray(E, dtype=np.float64), K.copy())
    return Sequence(name, frames, truth)


def loop_sequence(n: int = 240, turns_deg: float = 400.0, seed: int = 0) -> Sequence:
    """``n`` frames on a 1 m circle at 1.5 m height in room ``seed``, looking outward, over ``turns_deg`` degrees."""
    from da3_core.data.synthetic.paths import orbit

    w2cs = orbit([0.0, 0.0, 1.5], 1.0, 1.5, n, arc_deg=turns_deg, outward=True)
    return _render(f"orbit {turns_deg:.0f} deg, room {seed}", "room", seed, w2cs)


def no_revisit_sequences(n: int = 120) -> list[Sequence]:
    """Three sequences of ``n`` frames that never return to a place: a 200-degree outward orbit (room 1), a walk
    across room 2, a walk across the outdoor objects scene 3."""
    from da3_core.data.synthetic.paths import orbit, walkthrough

    return [
        _render("orbit 200 deg, room 1", "room", 1,
                orbit([0.0, 0.0, 1.5], 1.0, 1.5, n, arc_deg=200.0, outward=True)),
        _render("walk across room 2", "room", 2,
                walkthrough([[-2.0, -1.5, 1.5], [0.0, 0.2, 1.5], [2.0, 1.0, 1.5]], n)),
        _render("walk across objects 3", "objects", 3,
                walkthrough([[-6.0, -6.0, 1.6], [0.0, -5.0, 1.6], [6.0, -6.5, 1.6]], n)),
    ]


def _sim3_about(s: float, R: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(4, 4) ``X -> s R (X - centre) + centre``."""
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = centre - s * R @ centre
    return T


class DriftingPredictor:
    """Wraps a predictor; frames ``n_fixed..`` of every prediction are moved by a Sim(3) about camera
    ``n_fixed - 1`` (module docstring). ``applied`` counts the windows it distorted."""

    def __init__(self, inner: Predictor, scale_per_window: float = 0.01, deg_per_window: float = 0.5,
                 n_fixed: int = 2):
        self.inner = inner
        self.scale, self.deg, self.n_fixed = 1.0 + float(scale_per_window), float(deg_per_window), int(n_fixed)
        self.applied = 0

    def predict(self, frames: list[Frame]) -> WindowPrediction:
        pred = self.inner.predict(frames)
        if len(frames) <= self.n_fixed or self.n_fixed < 1:
            return pred
        a = math.radians(self.deg)
        R = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
        c2w = invert_rigid(np.asarray(pred.w2c, dtype=np.float64))
        G = _sim3_about(self.scale, R, c2w[self.n_fixed - 1, :3, 3])
        w2c, depth = pred.w2c.copy(), pred.depth.copy()
        for i in range(self.n_fixed, len(frames)):
            moved = np.eye(4)
            moved[:3, :3] = R @ c2w[i, :3, :3]
            moved[:3, 3] = G[:3, :3] @ c2w[i, :3, 3] + G[:3, 3]
            w2c[i] = invert_rigid(moved)
            depth[i] = depth[i] * np.float32(self.scale)
        self.applied += 1
        return replace(pred, w2c=w2c, depth=depth)


@dataclass
class RunSummary:
    """ATE (truth units, Sim(3)-aligned), loop counters and the pipeline stats of one run."""

    name: str
    ate: float
    accepted: int
    rejected: int
    candidates: int
    closed: int
    stats: dict


def run_sequence(seq: Sequence, pose_graph: bool, loop_closure: bool, scale_per_window: float = 0.01,
                 deg_per_window: float = 0.5, loop: LoopConfig | None = None, window_size: int = 8,
                 overlap: int = 2, metric: bool = False) -> RunSummary:
    """The pipeline (oracle windows in their own random Sim(3) frames, drift injected) over ``seq``; ``metric``:
    metric windows (random rigid frames, SE(3) chaining and graph; use ``scale_per_window=0``)."""
    oracle = OraclePredictor(lambda f: seq.truth[f.stamp_ns], random_transform=True, seed=1, is_metric=metric)
    predictor = DriftingPredictor(oracle, scale_per_window, deg_per_window, n_fixed=overlap)
    cfg = PipelineConfig(window_size=window_size, overlap=overlap, voxel_size=0.05, cloud_conf_percentile=None,
                         keep_depth_frames=0, pose_graph=pose_graph, loop_closure=loop_closure,
                         loop=loop or LoopConfig())
    pipe = StreamPipeline(predictor, cfg)
    closed = 0
    for f in seq.frames:
        r = pipe.process(f)
        closed += int(r is not None and r.loop_closed)
    r = pipe.flush()
    closed += int(r is not None and r.loop_closed)
    stamps, c2w = pipe.trajectory()
    gt = np.stack([seq.truth[int(s)][1] for s in stamps])
    ate = absolute_trajectory_error(invert_rigid(c2w), gt, with_scale=not metric).ate_rmse
    st = pipe.stats()
    st.update(pipe.loop_timings())
    return RunSummary(seq.name, float(ate), int(st.get("loop_accepted", 0)), int(st.get("loop_rejected", 0)),
                      int(st.get("loop_candidates", 0)), closed, st)
