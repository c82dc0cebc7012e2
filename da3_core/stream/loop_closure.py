"""Loop closure: places, candidate search, geometric verification with the predictor, and the pose graph. No ROS.

:class:`LoopCloser` follows the chained windows (:meth:`LoopCloser.add_window`, called once per window after
chaining):

1. the window becomes a node of a :class:`~da3_core.stream.pose_graph.PoseGraph`, joined to the previous node by a
   sequential edge: the relative pose of the two windows' anchor cameras as chained (what chaining measured), with
   standard deviations from the chaining residuals (floors below);
2. one place per window: an anchor keyframe (the middle of the window's new first-camera frames) and the
   ``place_frames - 1`` frames after it, with the anchor's depth and the place frames' poses in the window's own
   frame, and a descriptor (the predictor's pooled backbone tokens when it gives them, else
   :func:`~da3_core.stream.place_recognition.image_descriptor`);
3. candidate search: older places (at least ``min_gap_windows`` windows back) whose descriptor similarity reaches
   ``min_similarity``;
4. geometric verification: the predictor runs one window over the frames of both places (known poses stripped, so a
   pose-conditioned predictor gives its own estimate). Accepted only when, for both anchors, the joint depth is a
   scaled copy of the stored depth (median relative residual <= ``max_depth_residual``), the other place frames'
   poses agree with the stored ones (rotation <= ``max_pose_deg``, translation <= ``max_pose_rel`` of the median
   depth), and enough of the candidate anchor's pixels land in the query anchor's image at a consistent depth
   (inlier ratio >= ``min_inlier_ratio``); for SE(3) graphs also the two anchors' depth scales must agree
   (``max_scale_log``). Graph nodes are the windows' anchor cameras (``N_w = T_w c2w_anchor``: window -> map
   transform times the anchor's pose in the window), so the loop edge, the measurement of ``N_a^-1 N_b``, is the
   joint window's anchor-to-anchor pose with its translation in a's units and scale ``sigma_a / sigma_b``:
   ``D(sigma_a) w2c_a^joint c2w_b^joint D(1 / sigma_b)`` (``sigma_x``: stored over joint depth of anchor x);
5. the graph is optimised (ISAM2) every window; after an accepted loop, every window's correction
   ``T_optimised T_chained^-1`` may change (:meth:`LoopCloser.corrections`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.chaining import ChainResult
from da3_core.stream.frame import Frame
from da3_core.stream.place_recognition import Candidate, PlaceDatabase, image_descriptor
from da3_core.stream.pose_graph import EdgeNoise, PoseGraph
from da3_core.stream.predictor import Predictor, WindowPrediction

__all__ = ["LoopConfig", "Place", "Verification", "LoopCloser", "PublishedPoses", "apply_sim3_to_pose"]


@dataclass
class LoopConfig:
    """Loop-closure knobs (the node fills them from ROS parameters; ``loop_closure=False`` keeps the graph with
    sequential edges only)."""

    loop_closure: bool = True
    min_similarity: float = 0.9
    centre_descriptors: bool = True  # compare descriptors minus the stored mean (place_recognition.PlaceDatabase)
    min_gap_windows: int = 5
    top_k: int = 1
    place_frames: int = 2
    cooldown_windows: int = 25  # ~5 s at 30 Hz; each loop edge adds fill-in to the ISAM2 tree
    max_places: int = 1000
    place_image_step: int = 2  # place images are kept subsampled by this (1: as they came)
    min_inlier_ratio: float = 0.3
    inlier_depth_tol: float = 0.05
    max_depth_residual: float = 0.05
    max_pose_deg: float = 3.0
    max_pose_rel: float = 0.05
    max_scale_log: float = 0.1
    verify_stride: int = 4
    robust: str | None = "huber"
    seq_rot_sigma: float = 0.01  # rad, floor
    seq_trans_sigma_rel: float = 0.01  # of the window's median depth, floor
    seq_scale_sigma: float = 0.01  # log-scale, floor
    loop_rot_sigma: float = 0.01
    loop_trans_sigma_rel: float = 0.01
    loop_scale_sigma: float = 0.01


@dataclass
class Place:
    """One place: ``frames`` (known poses stripped; the anchor first) whose images are kept subsampled by
    ``image_step`` (every ``image_step``-th pixel, a quarter of the memory for 2; :meth:`full_frames` restores the
    full size), ``hw`` their full size, ``c2w`` (P, 4, 4) their poses in the window's own frame, ``depth`` the
    anchor's depth in window units subsampled by ``stride`` (float32), ``descriptor`` unit vector."""

    key: int
    frames: list[Frame]
    c2w: np.ndarray
    depth: np.ndarray
    descriptor: np.ndarray
    hw: tuple[int, int] = (0, 0)
    image_step: int = 1
    stride: int = 1

    def full_frames(self) -> list[Frame]:
        """The place frames at their full size (bilinear upsampling of the kept images)."""
        if self.image_step == 1:
            return list(self.frames)
        import cv2

        H, W = self.hw
        return [replace(f, rgb=np.ascontiguousarray(cv2.resize(f.rgb, (W, H), interpolation=cv2.INTER_LINEAR)))
                for f in self.frames]


@dataclass
class Verification:
    """Outcome of one geometric verification. ``reason`` is "accepted" or why not; ``transform`` the measured
    ``T_a^-1 T_b`` (a: ``match``, b: ``query``); ``inlier_ratio``, ``depth_residual`` (worst of the two anchors),
    ``pose_deg`` / ``pose_rel`` (worst place-frame disagreement), ``scale_log`` (|log sigma_a / sigma_b|)."""

    candidate: Candidate
    reason: str
    transform: np.ndarray | None = None
    inlier_ratio: float = 0.0
    depth_residual: float = float("inf")
    pose_deg: float = float("inf")
    pose_rel: float = float("inf")
    scale_log: float = float("inf")
    median_depth: float = 0.0
    seconds: float = 0.0
    predict_cpu_s: float = 0.0  # this thread's CPU time in the verification forward

    @property
    def accepted(self) -> bool:
        return self.reason == "accepted"


@dataclass
class LoopEvent:
    """What :meth:`LoopCloser.add_window` did: ``verifications`` run, ``loop_closed`` (an edge was accepted and the
    graph re-optimised), ``timings`` seconds (detect_s, verify_s, optimize_s)."""

    verifications: list[Verification] = field(default_factory=list)
    loop_closed: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def apply_sim3_to_pose(C: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """The rigid camera pose after moving the world by the Sim(3) ``C`` (4, 4): rotation ``R_C R``, centre
    ``C(centre)``."""
    s = float(np.cbrt(np.linalg.det(C[:3, :3])))
    out = np.eye(4)
    out[:3, :3] = (C[:3, :3] / s) @ c2w[:3, :3]
    out[:3, 3] = C[:3, :3] @ c2w[:3, 3] + C[:3, 3]
    return out


def _scale_matrix(s: float) -> np.ndarray:
    D = np.eye(4)
    D[:3, :3] *= s
    return D


def _median_depth(depth: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        v = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(v)) if v.size else float("nan")


def _depth_ratio(stored: np.ndarray, joint: np.ndarray) -> tuple[float, float]:
    """(median of stored / joint, median |ratio / median - 1|) over pixels valid in both (NaN when fewer than 10)."""
    a, b = stored, joint
    if a.shape != b.shape:
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        r = a[ok] / b[ok]
    if r.size < 10:
        return float("nan"), float("nan")
    m = float(np.median(r))
    return m, float(np.median(np.abs(r / m - 1.0)))


def _covisible_inliers(depth_a: np.ndarray, K_a: np.ndarray, c2w_a: np.ndarray, depth_b: np.ndarray,
                       K_b: np.ndarray, c2w_b: np.ndarray, stride: int, tol: float) -> float:
    """Fraction of a's valid (subsampled) pixels that project into b's image in front of it with a depth within
    ``tol`` (relative) of b's depth there."""
    H, W = depth_a.shape
    rr, cc = np.mgrid[0:H:stride, 0:W:stride]
    d = depth_a[rr, cc].astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return 0.0
    rr, cc, d = rr[ok], cc[ok], d[ok]
    y = (rr - K_a[1, 2]) / K_a[1, 1]
    x = (cc - K_a[0, 2] - K_a[0, 1] * y) / K_a[0, 0]
    X = np.stack([x * d, y * d, d], axis=1) @ c2w_a[:3, :3].T + c2w_a[:3, 3]
    w2c_b = invert_rigid(c2w_b)
    Xb = X @ w2c_b[:3, :3].T + w2c_b[:3, 3]
    z = Xb[:, 2]
    front = z > 1e-9
    u = np.full(len(z), -1.0)
    v = np.full(len(z), -1.0)
    u[front] = K_b[0, 0] * Xb[front, 0] / z[front] + K_b[0, 1] * Xb[front, 1] / z[front] + K_b[0, 2]
    v[front] = K_b[1, 1] * Xb[front, 1] / z[front] + K_b[1, 2]
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    Hb, Wb = depth_b.shape
    inside = front & (ui >= 0) & (ui < Wb) & (vi >= 0) & (vi < Hb)
    zb = np.full(len(z), np.nan)
    zb[inside] = depth_b[vi[inside], ui[inside]]
    with np.errstate(invalid="ignore"):
        good = inside & np.isfinite(zb) & (np.abs(z - zb) <= tol * np.abs(zb))
    return float(np.count_nonzero(good)) / float(len(z))


def _pose_disagreement(c2w_joint: np.ndarray, c2w_stored: np.ndarray, sigma: float, depth: float
                       ) -> tuple[float, float]:
    """Worst (rotation deg, translation / depth) between the place frames' poses relative to the anchor in the
    joint window (translations scaled by ``sigma``) and in the stored window."""
    worst_deg, worst_rel = 0.0, 0.0
    for k in range(1, len(c2w_joint)):
        rj = invert_rigid(c2w_joint[0]) @ c2w_joint[k]
        rs = invert_rigid(c2w_stored[0]) @ c2w_stored[k]
        cos = np.clip((np.trace(rj[:3, :3].T @ rs[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
        worst_deg = max(worst_deg, float(np.degrees(np.arccos(cos))))
        worst_rel = max(worst_rel, float(np.linalg.norm(sigma * rj[:3, 3] - rs[:3, 3])) / max(depth, 1e-12))
    return worst_deg, worst_rel


class LoopCloser:
    """Pose graph over windows + place recognition + verification (module docstring). ``with_scale``: Sim(3) graph
    (relative chains) or SE(3) (metric). ``counts``: places, candidates, verified, accepted, rejected_<reason>.
    Call :meth:`add_window` from one thread; :meth:`corrections` and :meth:`stats` from any."""

    def __init__(self, predictor: Predictor, config: LoopConfig | None = None, with_scale: bool = True):
        self.cfg = cfg = config or LoopConfig()
        self.predictor = predictor
        self.graph = PoseGraph(with_scale=with_scale, robust=cfg.robust)
        self.db = PlaceDatabase(cfg.min_similarity, cfg.min_gap_windows, cfg.top_k, cfg.centre_descriptors)
        self.places: dict[int, Place] = {}
        self.counts: Counter[str] = Counter()
        self._chained: dict[int, np.ndarray] = {}  # window -> its chained transform (window -> chained map)
        self._corrections: dict[int, np.ndarray] = {}
        self.accepted_edges: dict[tuple[int, int], np.ndarray] = {}  # (match, query) -> measured N_a^-1 N_b
        self._last_key: int | None = None
        self._cooldown_until = -1
        self._lock = threading.Lock()
        self.revision = 0  # changes whenever corrections of existing windows change (a loop was closed)
        self.last_timings: dict[str, float] = {}
        self.max_optimize_s = 0.0  # slowest graph update so far (a loop closure's)

    @property
    def with_scale(self) -> bool:
        return self.graph.with_scale

    # --- per window ---------------------------------------------------------------------------------------------

    def add_window(self, key: int, frames: list[Frame], pred: WindowPrediction, chain: ChainResult) -> LoopEvent:
        """Add window ``key`` (its frames, prediction and chaining result); may verify candidates and close a
        loop. Never raises on a failed verification (counted)."""
        event = LoopEvent()
        t0 = time.perf_counter()
        anchor, idx = self._anchor(frames, chain)
        self._add_node(key, pred, chain, anchor)
        place = None if idx is None else self._make_place(key, frames, pred, idx)
        candidates: list[Candidate] = []
        if place is not None:
            if self.cfg.loop_closure and key > self._cooldown_until:
                candidates = self.db.query(key, place.descriptor)
            self.db.add(key, place.descriptor)
            self.places[key] = place
            self.counts["places"] += 1
            self._bound_places()
        t1 = time.perf_counter()
        self.counts["candidates"] += len(candidates)
        for cand in candidates:
            ver = self.verify(cand)
            event.verifications.append(ver)
            self.counts["verified"] += 1
            if not ver.accepted:
                self.counts["rejected"] += 1
                self.counts[f"rejected_{ver.reason}"] += 1
                continue
            self.counts["accepted"] += 1
            noise = EdgeNoise(rot=self.cfg.loop_rot_sigma,
                              trans=self.cfg.loop_trans_sigma_rel * ver.median_depth * self._scale(cand.match),
                              scale=self.cfg.loop_scale_sigma)
            with self._lock:
                self.graph.add_edge(cand.match, cand.query, ver.transform, noise, loop=True)
                self.accepted_edges[(cand.match, cand.query)] = ver.transform
            self._cooldown_until = key + self.cfg.cooldown_windows
            break
        t2 = time.perf_counter()
        with self._lock:
            event.loop_closed = self.graph.optimize()
            self._refresh(None if event.loop_closed else [key])
        t3 = time.perf_counter()
        event.timings = {"detect_s": t1 - t0, "verify_s": t2 - t1, "optimize_s": t3 - t2}
        self.max_optimize_s = max(self.max_optimize_s, t3 - t2)
        self.last_timings = dict(event.timings)
        return event

    def _scale(self, key: int) -> float:
        T = self.graph.pose(key)
        return float(np.cbrt(np.linalg.det(T[:3, :3])))

    def _anchor(self, frames: list[Frame], chain: ChainResult) -> tuple[int, list[int] | None]:
        """(anchor index, place frame indices or None): the middle new first-camera frame and the frames after it;
        frame 0 and no place when the window has no new first-camera frame."""
        cam0 = [i for i, (f, cf) in enumerate(zip(frames, chain.frames)) if cf.is_new and f.camera == 0]
        if not cam0:
            return 0, None
        start = len(cam0) // 2 if len(cam0) >= self.cfg.place_frames else 0
        idx = cam0[start:start + max(1, self.cfg.place_frames)]
        return idx[0], idx

    def _add_node(self, key: int, pred: WindowPrediction, chain: ChainResult, anchor: int) -> None:
        """The node is the anchor camera: ``T_window c2w_anchor`` (a Sim(3) from the anchor's camera coordinates in
        window units to the map), so edges relate cameras, not the windows' arbitrary origins."""
        T = np.asarray(chain.transform, dtype=np.float64) @ invert_rigid(np.asarray(pred.w2c[anchor], np.float64))
        with self._lock:
            if self._last_key is None:
                self.graph.add_node(key, T)
            else:
                prev = self._last_key
                meas = np.linalg.inv(self._chained[prev]) @ T
                if not self.with_scale:  # metric chains: keep the edge rigid
                    s = float(np.cbrt(np.linalg.det(meas[:3, :3])))
                    meas[:3, :3] /= s
                self.graph.add_node(key, self.graph.pose(prev) @ meas)
                depth = _median_depth(pred.depth[anchor][::8, ::8]) * chain.scale
                if not np.isfinite(depth):
                    depth = 1.0
                if chain.chained:
                    noise = EdgeNoise(rot=max(self.cfg.seq_rot_sigma, chain.residual_rel),
                                      trans=max(self.cfg.seq_trans_sigma_rel * depth, chain.residual),
                                      scale=max(self.cfg.seq_scale_sigma, chain.residual_rel))
                else:  # a guess: keep the graph connected, let any loop edge move it freely
                    noise = EdgeNoise(rot=1.0, trans=10.0 * depth, scale=1.0)
                    self.counts["unchained_edges"] += 1
                self.graph.add_edge(prev, key, meas, noise)
            self._chained[key] = T
            self._last_key = key

    def _make_place(self, key: int, frames: list[Frame], pred: WindowPrediction, idx: list[int]) -> Place | None:
        stride = max(1, self.cfg.verify_stride)
        depth = np.ascontiguousarray(np.asarray(pred.depth[idx[0]], dtype=np.float32)[::stride, ::stride])
        if not np.isfinite(_median_depth(depth)):
            return None
        descriptors = getattr(pred, "descriptors", None)
        if descriptors is not None:
            descriptor = np.asarray(descriptors[idx[0]], dtype=np.float32)
            self.counts["descriptor_network"] += 1
        else:
            descriptor = image_descriptor(frames[idx[0]].rgb)
            self.counts["descriptor_image"] += 1
        step = max(1, self.cfg.place_image_step)
        hw = tuple(frames[idx[0]].rgb.shape[:2])
        stored = [replace(frames[i], pose_w2c=None, rgb=_subsample_rgb(frames[i].rgb, step)) for i in idx]
        c2w = invert_rigid(np.asarray(pred.w2c[idx], dtype=np.float64))
        return Place(key=key, frames=stored, c2w=c2w, depth=depth, descriptor=descriptor, hw=hw, image_step=step,
                     stride=stride)

    def _bound_places(self) -> None:
        """Past ``max_places``: forget every other place of the older half (keeps coverage, halves density)."""
        if len(self.places) <= self.cfg.max_places:
            return
        keys = sorted(self.places)
        drop = set(keys[: len(keys) // 2][1::2])
        for k in drop:
            del self.places[k]
        self.db.remove(drop)
        self.counts["places_thinned"] += len(drop)

    # --- verification -------------------------------------------------------------------------------------------

    def verify(self, cand: Candidate) -> Verification:
        """Run one window over the frames of places ``cand.match`` (a) and ``cand.query`` (b) and check it."""
        t0 = time.perf_counter()
        a, b = self.places.get(cand.match), self.places.get(cand.query)
        if a is None or b is None:
            return Verification(cand, "missing_place")
        if a.hw != b.hw:
            return Verification(cand, "size_mismatch")
        c0 = time.thread_time()
        try:
            pred = self.predictor.predict(a.full_frames() + b.full_frames())
        except Exception:  # noqa: BLE001 - a failed verification must not end the stream
            return Verification(cand, "predict_failed", seconds=time.perf_counter() - t0,
                                predict_cpu_s=time.thread_time() - c0)
        c1 = time.thread_time()
        out = self._check(cand, a, b, pred)
        out.seconds, out.predict_cpu_s = time.perf_counter() - t0, c1 - c0
        return out

    def _check(self, cand: Candidate, a: Place, b: Place, pred: WindowPrediction) -> Verification:
        cfg = self.cfg
        ia, ib = 0, len(a.frames)
        c2w_j = invert_rigid(np.asarray(pred.w2c, dtype=np.float64))
        stride = max(1, cfg.verify_stride)
        sa, ra = _depth_ratio(a.depth, pred.depth[ia][::a.stride, ::a.stride])
        sb, rb = _depth_ratio(b.depth, pred.depth[ib][::b.stride, ::b.stride])
        out = Verification(cand, "accepted")
        if not (np.isfinite(sa) and np.isfinite(sb) and sa > 0 and sb > 0):
            out.reason = "no_depth"
            return out
        out.depth_residual = max(ra, rb)
        out.scale_log = abs(float(np.log(sa / sb)))
        depth_a = _median_depth(a.depth)
        depth_b = _median_depth(b.depth)
        deg_a, rel_a = _pose_disagreement(c2w_j[ia:ib], a.c2w, sa, depth_a)
        deg_b, rel_b = _pose_disagreement(c2w_j[ib:], b.c2w, sb, depth_b)
        out.pose_deg, out.pose_rel = max(deg_a, deg_b), max(rel_a, rel_b)
        out.inlier_ratio = _covisible_inliers(pred.depth[ia], pred.K[ia], c2w_j[ia], pred.depth[ib], pred.K[ib],
                                              c2w_j[ib], stride, cfg.inlier_depth_tol)
        out.median_depth = depth_a
        if out.depth_residual > cfg.max_depth_residual:
            out.reason = "depth_residual"
        elif out.pose_deg > cfg.max_pose_deg or out.pose_rel > cfg.max_pose_rel:
            out.reason = "pose_disagreement"
        elif out.inlier_ratio < cfg.min_inlier_ratio:
            out.reason = "few_inliers"
        elif not self.with_scale and out.scale_log > cfg.max_scale_log:
            out.reason = "scale_disagreement"
        if out.reason != "accepted":
            return out
        # nodes are the anchor cameras: N_a^-1 N_b = D(sigma_a) w2c_a^joint c2w_b^joint D(1 / sigma_b)
        T = _scale_matrix(sa) @ invert_rigid(c2w_j[ia]) @ c2w_j[ib] @ _scale_matrix(1.0 / sb)
        if not self.with_scale:
            T[:3, :3] /= float(np.cbrt(np.linalg.det(T[:3, :3])))
        out.transform = T
        return out

    # --- results ------------------------------------------------------------------------------------------------

    def _refresh(self, keys: list[int] | None) -> None:
        """Recompute the corrections ``N_optimised N_chained^-1`` of ``keys`` (None: every window); bump ``revision``
        when an existing one moved."""
        moved = False
        for k in (self._chained if keys is None else keys):
            C = self.graph.pose(k) @ np.linalg.inv(self._chained[k])
            old = self._corrections.get(k)
            if old is not None and np.abs(C - old).max() > 1e-9 * max(1.0, np.abs(C).max()):
                moved = True
            self._corrections[k] = C
        if moved:
            self.revision += 1

    def chained_node(self, key: int) -> np.ndarray:
        """(4, 4) node ``key`` as chaining placed it (anchor camera -> chained map), before any correction."""
        with self._lock:
            return self._chained[int(key)].copy()

    def corrections(self) -> dict[int, np.ndarray]:
        """window -> (4, 4) Sim(3) taking its chained map coordinates to the optimised map (copies)."""
        with self._lock:
            return {k: v.copy() for k, v in self._corrections.items()}

    def correction(self, key: int) -> np.ndarray:
        with self._lock:
            C = self._corrections.get(int(key))
            return np.eye(4) if C is None else C.copy()

    def stats(self) -> dict[str, float]:
        """Counters and graph size (deterministic for a deterministic stream)."""
        with self._lock:
            out: dict[str, float] = {f"loop_{k}": v for k, v in self.counts.items()}
            out["graph_nodes"] = len(self.graph)
            out["graph_loop_edges"] = self.graph.n_loops
            out["graph_sequential_edges"] = self.graph.n_sequential
        return out

    def timing_stats(self) -> dict[str, float]:
        """The last window's detection / verification / optimisation times and the slowest optimisation (ms)."""
        with self._lock:
            out = {"graph_optimize_ms": 1000.0 * self.graph.last_optimize_s,
                   "graph_optimize_max_ms": 1000.0 * self.max_optimize_s}
            out.update({f"loop_{k[:-2]}_ms": 1000.0 * v for k, v in self.last_timings.items()})
        return out


def _subsample_rgb(rgb: np.ndarray, step: int) -> np.ndarray:
    """``rgb[::step, ::step]`` as a C-contiguous copy, moving whole 3-byte pixels (twice as fast as per channel)."""
    if step == 1:
        return np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    pixels = np.ascontiguousarray(rgb).reshape(h, w * 3).view(np.dtype((np.void, 3)))
    return np.ascontiguousarray(pixels[::step, ::step]).view(np.uint8).reshape(-(-h // step), -(-w // step), 3)


class PublishedPoses:
    """Poses already published (e.g. a path), each with its window and the correction it was published under, so
    that after a closed loop they can be moved to the new corrections: ``P_new = (C_new C_published^-1) P``
    (:func:`apply_sim3_to_pose`)."""

    def __init__(self) -> None:
        self._poses: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # stamp -> (window, C, pose)

    def __len__(self) -> int:
        return len(self._poses)

    def clear(self) -> None:
        self._poses.clear()

    def record(self, stamp_ns: int, window: int, correction: np.ndarray, pose: np.ndarray) -> None:
        self._poses[int(stamp_ns)] = (int(window), np.asarray(correction, np.float64), np.asarray(pose, np.float64))

    def forget(self, stamps_ns) -> None:
        """Stop tracking these poses (e.g. thinned out of the published path)."""
        for stamp in stamps_ns:
            self._poses.pop(int(stamp), None)

    def reanchor(self, corrections: dict[int, np.ndarray], tolerance: float = 1e-9) -> list[tuple[int, np.ndarray]]:
        """Move every recorded pose whose window's correction changed; returns the moved ``[(stamp, pose)]`` in
        stamp order (and records them under the new corrections). The change of each (window, old correction) is
        computed once: a window's poses share it."""
        moved = []
        deltas: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray] | None] = {}  # (window, C_old) -> change
        for stamp in sorted(self._poses):
            w, C_old, P = self._poses[stamp]
            key = (w, C_old.tobytes())
            if key not in deltas:
                C_new = corrections.get(w)
                if C_new is None or np.abs(C_new - C_old).max() <= tolerance * max(1.0, float(np.abs(C_new).max())):
                    deltas[key] = None
                else:
                    deltas[key] = (np.array(C_new, np.float64), C_new @ np.linalg.inv(C_old))
            change = deltas[key]
            if change is None:
                continue
            P_new = apply_sim3_to_pose(change[1], P)
            self._poses[stamp] = (w, change[0], P_new)  # the window's poses share the new correction array
            moved.append((stamp, P_new))
        return moved
