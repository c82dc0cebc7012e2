"""Submaps: the map's points kept per window, re-anchored when the pose graph moves the windows. No ROS.

Each window's map points are stored as they came out of chaining (the chained map frame, before any pose-graph
correction), with colours and weights. A window's correction ``C_w`` (4, 4) Sim(3) (from
:meth:`~da3_core.stream.loop_closure.LoopCloser.corrections`; identity without a graph) places them in the optimised
map: ``X = C_w X_chained``.

The published map is a :class:`~da3_core.stream.voxel_map.VoxelMap` assembled lazily by :meth:`SubmapStore.sync`
(the node calls it at its map-publish rate): submaps added since the last sync are inserted with their current
correction; when the correction of an already inserted submap changed (a loop was closed), the voxel map is rebuilt
from every submap. Per window the streaming path only appends arrays.

Memory is bounded by ``max_points`` stored points: past it, the oldest submaps lose every second point (repeatedly,
oldest first) until the total fits, and a submap down to a point or two is forgotten (so the number of submaps is
bounded too). Thinning does not rebuild the voxel map: it keeps the contributions of the dropped points until a
closed loop rebuilds it from the thinned submaps.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np

from da3_core.stream.voxel_map import VoxelMap

__all__ = ["Submap", "SubmapStore"]


@dataclass
class Submap:
    """One window's points: ``points`` (N, 3) float32 chained map frame, ``colors`` (N, 3) uint8, ``weights`` (N,)
    float32; ``applied`` the correction the voxel map holds them under (None: not inserted yet)."""

    key: int
    points: np.ndarray
    colors: np.ndarray
    weights: np.ndarray
    applied: np.ndarray | None = None
    corners: np.ndarray | None = None  # (8, 3) bounding-box corners (chained map frame), set when first inserted


def _transform(C: np.ndarray | None, pts: np.ndarray) -> np.ndarray:
    if C is None or np.abs(C - np.eye(4)).max() <= 1e-12 * max(1.0, float(np.abs(C[:3, 3]).max())):
        return pts  # identity up to the graph's rounding
    return (pts @ C[:3, :3].T.astype(np.float32) + C[:3, 3].astype(np.float32)).astype(np.float32)


def _corners(pts: np.ndarray) -> np.ndarray | None:
    """(8, 3) float64 corners of the bounding box of the finite points, None when there are none."""
    if not len(pts):
        return None
    rows = pts.T  # per coordinate row: numpy's reductions over axis 0 of (N, 3) are slow
    lo = np.array([r.min() for r in rows], np.float64)
    hi = np.array([r.max() for r in rows], np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):  # some non-finite point: ignore those
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: caught below
            lo = np.array([np.nanmin(r) for r in rows], np.float64)
            hi = np.array([np.nanmax(r) for r in rows], np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return None
    return np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i in (0, 1) for j in (0, 1)
                     for k in (0, 1)])


class SubmapStore:
    """Per-window points + the lazily assembled voxel map (module docstring). Thread-safe: the bookkeeping (add,
    corrections) takes a short lock; :meth:`sync` transforms and inserts outside it (under a map lock, which
    :meth:`snapshot` also takes), so a streaming thread adding submaps is not held up by the map's assembly."""

    def __init__(self, voxel_size: float, max_voxels: int = 2_000_000, max_points: int = 4_000_000,
                 move_tolerance: float | None = None):
        """``move_tolerance``: a changed correction re-anchors an inserted submap only when it moves some corner of
        the submap's bounding box by more than this (map units; default a quarter voxel)."""
        self.map = VoxelMap(voxel_size, max_voxels)
        self.max_points = int(max_points)
        self.move_tolerance = 0.25 * float(voxel_size) if move_tolerance is None else float(move_tolerance)
        self.submaps: dict[int, Submap] = {}
        self._corrections: dict[int, np.ndarray] = {}
        self._pending: list[int] = []
        self._dirty = False
        self.revision = 0  # changes whenever the assembled map would change (adds, re-anchoring, clear)
        self.n_points = 0
        self.n_rebuilds = 0
        self.n_thinned = 0
        self.n_forgotten = 0  # submaps thinned away entirely
        self._lock = threading.Lock()  # submaps, corrections, pending, dirty
        self._map_lock = threading.Lock()  # the voxel map
        self._rebuilding: threading.Thread | None = None
        self._epoch = 0  # bumped by clear(): a background rebuild of older contents is discarded

    @property
    def voxel_size(self) -> float:
        return self.map.voxel_size

    def __len__(self) -> int:
        return len(self.submaps)

    def clear(self) -> None:
        with self._map_lock, self._lock:
            self.submaps.clear()
            self._corrections.clear()
            self._pending.clear()
            self._dirty = False
            self.map.clear()
            self.n_points = 0
            self.revision += 1
            self._epoch += 1

    def add(self, key: int, points: np.ndarray, colors: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Store window ``key``'s points (chained map frame); a key seen before replaces its points. The arrays are
        kept as given (not copied) when they already have the stored dtypes: pass arrays nobody else changes."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        cols = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        w = np.ones(len(pts), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
        if len(cols) != len(pts) or len(w) != len(pts):
            raise ValueError(f"submap {key}: points {pts.shape}, colors {cols.shape}, weights {w.shape}")
        key = int(key)
        with self._lock:
            if key in self.submaps:
                self.n_points -= len(self.submaps[key].points)
                self._dirty = True
            self.submaps[key] = Submap(key, pts, cols, w)
            self.n_points += len(pts)
            self._pending.append(key)
            self.revision += 1
            if self.n_points > self.max_points:
                self._thin()

    def _thin(self) -> None:
        """Oldest submaps first: halve each (every second point) until the total fits; a submap left with a single
        point is forgotten. The voxel map keeps what it already holds (thinned points were valid observations: no
        rebuild just to remove them); a later rebuild assembles it from the thinned submaps."""
        for key in sorted(self.submaps):
            if self.n_points <= self.max_points:
                return
            sm = self.submaps[key]
            n0 = len(sm.points)
            if n0 < 4:  # halving would leave at most one point: forget the submap
                del self.submaps[key]
                self._corrections.pop(key, None)
                self.n_points -= n0
                self.n_thinned += n0
                self.n_forgotten += 1
                continue
            # copies, not views: a strided view would keep the whole original array alive (memory never freed)
            sm.points, sm.colors, sm.weights = (np.ascontiguousarray(a[::2]) for a in (sm.points, sm.colors,
                                                                                    sm.weights))
            self.n_points -= n0 - len(sm.points)
            self.n_thinned += n0 - len(sm.points)

    def set_corrections(self, corrections: dict[int, np.ndarray]) -> None:
        """New per-window corrections; an inserted submap whose points they move by more than ``move_tolerance``
        makes the next sync rebuild (smaller changes are applied at the next rebuild)."""
        with self._lock:
            for key, C in corrections.items():
                self._corrections[int(key)] = C
                sm = self.submaps.get(int(key))
                if sm is not None and self._moved(sm, C):
                    if not self._dirty:
                        self.revision += 1
                    self._dirty = True

    def _moved(self, sm: Submap, C: np.ndarray) -> bool:
        """Whether ``C`` moves the inserted submap ``sm`` by more than ``move_tolerance`` (under the lock)."""
        if sm.applied is None or sm.corners is None:
            return False
        moved = (sm.corners @ C[:3, :3].T + C[:3, 3]) - (sm.corners @ sm.applied[:3, :3].T + sm.applied[:3, 3])
        return float(np.abs(moved).max()) > self.move_tolerance

    @property
    def stale(self) -> bool:
        """The voxel map lags the submaps (a sync would change it)."""
        return self._dirty or bool(self._pending)

    def _take(self, rebuild: bool) -> list[tuple[Submap, np.ndarray | None]]:
        """The submaps to insert with the corrections to use (under the lock): all of them for a rebuild, else the
        pending ones."""
        keys = sorted(self.submaps) if rebuild else [k for k in self._pending if k in self.submaps]
        self._pending.clear()
        if rebuild:
            self._dirty = False
            self.n_rebuilds += 1
        return [(self.submaps[k], self._corrections.get(k)) for k in keys]

    def _insert(self, target: VoxelMap, work: list[tuple[Submap, np.ndarray | None]]) -> None:
        pts, cols, wts = [], [], []
        for sm, C in work:  # one insert for all: one sort and one merge with the map instead of one per window
            pts.append(_transform(C, sm.points))
            cols.append(sm.colors)
            wts.append(sm.weights)
        if pts:
            target.insert(np.concatenate(pts), np.concatenate(cols), np.concatenate(wts))

    def _applied(self, work: list[tuple[Submap, np.ndarray | None]]) -> None:
        """Record what the map now holds (under the lock); a submap corrected again meanwhile marks the map dirty."""
        for sm, C in work:
            sm.applied = np.eye(4) if C is None else C
            if sm.corners is None:
                sm.corners = _corners(sm.points)
            latest = self._corrections.get(sm.key)
            if latest is not None and latest is not C and self._moved(sm, latest):
                self._dirty = True
                self.revision += 1

    def sync(self, background: bool = False) -> VoxelMap:
        """Bring the voxel map up to date: insert pending submaps, or rebuild it from every submap after a
        re-anchoring. ``background=True`` (the node's map timer) runs a rebuild in a thread instead: the map keeps
        its last state until the rebuilt one replaces it (``revision`` changes then); pending submaps wait for it."""
        with self._map_lock:
            with self._lock:
                if self._rebuilding is not None:
                    return self.map  # a background rebuild is running: it or the next sync takes the pending ones
                rebuild = self._dirty
                if rebuild and background:
                    work, epoch = self._take(True), self._epoch
                    self._rebuilding = threading.Thread(target=self._rebuild, args=(work, epoch),
                                                        name="submap-rebuild", daemon=True)
                    self._rebuilding.start()
                    return self.map
                work = self._take(rebuild)
            if rebuild:
                self.map.clear()
            self._insert(self.map, work)
            with self._lock:
                self._applied(work)
            return self.map

    def _rebuild(self, work: list[tuple[Submap, np.ndarray | None]], epoch: int) -> None:
        fresh = VoxelMap(self.map.voxel_size, self.map.max_points)
        try:
            self._insert(fresh, work)
        finally:
            with self._map_lock, self._lock:
                if epoch == self._epoch:  # not cleared meanwhile: adopt the rebuilt state in place
                    revision = self.map.revision
                    self.map.__dict__.update(fresh.__dict__)  # references to self.map stay valid
                    self.map.revision = revision + 1
                    self._applied(work)
                    self.revision += 1
                self._rebuilding = None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background rebuild to finish."""
        t = self._rebuilding
        if t is not None:
            t.join(timeout)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(points (M, 3) float32, colors (M, 3) uint8) of the voxel map as last synced."""
        with self._map_lock:
            return self.map.points(), self.map.colors()

    def map_size(self) -> int:
        with self._map_lock:
            return len(self.map)
