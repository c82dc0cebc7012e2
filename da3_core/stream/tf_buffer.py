"""A small, ROS-free transform buffer (the part of tf2 the reconstruct node needs for pose conditioning).

Transforms are edges ``parent -> child`` holding ``T_parent_child`` (4, 4): it maps points in ``child`` coordinates
to ``parent`` coordinates (the ``geometry_msgs/TransformStamped`` convention: header.frame_id = parent). Like tf2,
every frame has at most one parent (the newest edge into a child replaces an edge from another parent), so the
frames form a forest; a lookup walks both frames up to their closest common ancestor.

- Dynamic edges keep a bounded, stamp-sorted history (``cache_time_s`` behind the newest sample, at most
  ``max_samples``). A lookup at a stamp between two samples interpolates (linear translation, quaternion slerp); a
  stamp outside the history is served by the nearest end sample only within ``tolerance_ns``.
- Static edges (``/tf_static``) hold one transform valid at every stamp.

:meth:`TransformBuffer.lookup` raises :class:`TransformLookupError` (a ``LookupError``) whose ``reason`` is a short
code meant as a diagnostics counter key: ``unknown_frame``, ``no_path``, ``extrapolation``, ``too_many_hops``.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

from da3_core.geometry.rotations import quat_xyzw_to_rotation, rotation_to_quat_xyzw

__all__ = ["TransformBuffer", "TransformLookupError", "quat_xyzw_to_rotation", "interpolate_transform"]


class TransformLookupError(LookupError):
    """A lookup that cannot be served; ``reason`` is a short stable code, the message explains it."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    d = float(q0 @ q1)
    if d < 0.0:  # shortest arc
        q1, d = -q1, -d
    if d > 1.0 - 1e-12:
        q = q0 + a * (q1 - q0)
    else:
        theta = np.arccos(min(1.0, d))
        q = (np.sin((1.0 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_rotation(q)
    T[:3, 3] = t
    return T


def interpolate_transform(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """Rigid (4, 4) ``a`` of the way from ``T0`` to ``T1`` (linear translation, slerp rotation; a in [0, 1])."""
    q0, q1 = rotation_to_quat_xyzw(T0[:3, :3]), rotation_to_quat_xyzw(T1[:3, :3])
    return _matrix((1.0 - a) * T0[:3, 3] + a * T1[:3, 3], _slerp(q0, q1, a))


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: list[int] = field(default_factory=list)  # sorted; for a static edge: one entry (unused stamp)
    trans: list[np.ndarray] = field(default_factory=list)  # (3,)
    quats: list[np.ndarray] = field(default_factory=list)  # (4,) xyzw, unit


def _fmt_ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


class TransformBuffer:
    """Thread-safe transform history. ``cache_time_s``: history kept behind each edge's newest sample;
    ``max_samples``: at most this many samples per edge; ``max_hops``: longest walk from a frame to its root."""

    def __init__(self, cache_time_s: float = 10.0, max_samples: int = 1000, max_hops: int = 16):
        self.cache_ns = int(round(cache_time_s * 1e9))
        self.max_samples = max(2, int(max_samples))
        self.max_hops = int(max_hops)
        self._edges: dict[str, _Edge] = {}  # child -> edge from its parent
        self._lock = threading.RLock()

    # --- filling -----------------------------------------------------------------------------------------------------

    def add(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, static: bool = False) -> bool:
        """Record ``T_parent_child`` (4, 4) (or (3, 4)) at ``stamp_ns``. Returns False (nothing stored) for a sample
        older than the kept history. Raises ValueError for a self-loop or a non-finite / non-rigid transform."""
        if not parent or not child or parent == child:
            raise ValueError(f"transform {parent!r} -> {child!r}: frame names must be non-empty and differ")
        T = np.asarray(T, dtype=np.float64)
        if T.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(T)):
            raise ValueError(f"transform {parent!r} -> {child!r}: need a finite (4, 4) matrix, got shape {T.shape}")
        R = T[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
            raise ValueError(f"transform {parent!r} -> {child!r}: the rotation part is not a rotation")
        t, q = T[:3, 3].copy(), rotation_to_quat_xyzw(R)
        stamp_ns = int(stamp_ns)
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != bool(static):
                edge = self._edges[child] = _Edge(parent=parent, static=bool(static))  # re-parented: new history
            if edge.static:
                edge.stamps, edge.trans, edge.quats = [stamp_ns], [t], [q]
                return True
            if edge.stamps and stamp_ns < edge.stamps[-1] - self.cache_ns:
                return False
            i = bisect.bisect_left(edge.stamps, stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:  # same stamp: the newer message wins
                edge.trans[i], edge.quats[i] = t, q
            else:
                edge.stamps.insert(i, stamp_ns)
                edge.trans.insert(i, t)
                edge.quats.insert(i, q)
            oldest = edge.stamps[-1] - self.cache_ns
            drop = max(bisect.bisect_left(edge.stamps, oldest), len(edge.stamps) - self.max_samples)
            if drop > 0:
                del edge.stamps[:drop], edge.trans[:drop], edge.quats[:drop]
            return True

    def add_static(self, parent: str, child: str, T: np.ndarray) -> bool:
        """Record a transform valid at every stamp (``/tf_static``)."""
        return self.add(parent, child, 0, T, static=True)

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    # --- queries -----------------------------------------------------------------------------------------------------

    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent_of(self, frame: str) -> str | None:
        with self._lock:
            edge = self._edges.get(frame)
            return None if edge is None else edge.parent

    def __len__(self) -> int:
        """Number of edges."""
        with self._lock:
            return len(self._edges)

    def _chain(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]``."""
        chain = [frame]
        while chain[-1] in self._edges:
            if len(chain) > self.max_hops:
                raise TransformLookupError("too_many_hops", f"more than {self.max_hops} links above frame "
                                                            f"{frame!r} (a loop in the transform tree?)")
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _edge_at(self, child: str, stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        """``T_parent_child`` at ``stamp_ns``."""
        e = self._edges[child]
        if e.static:
            return _matrix(e.trans[0], e.quats[0])
        s = e.stamps
        i = bisect.bisect_left(s, stamp_ns)
        if i < len(s) and s[i] == stamp_ns:
            return _matrix(e.trans[i], e.quats[i])
        if 0 < i < len(s):
            a = (stamp_ns - s[i - 1]) / (s[i] - s[i - 1])
            return _matrix((1.0 - a) * e.trans[i - 1] + a * e.trans[i], _slerp(e.quats[i - 1], e.quats[i], a))
        j = 0 if i == 0 else len(s) - 1
        gap = abs(stamp_ns - s[j])
        if gap <= tolerance_ns:
            return _matrix(e.trans[j], e.quats[j])
        where = "before the oldest" if i == 0 else "after the newest"
        raise TransformLookupError("extrapolation", f"stamp {stamp_ns} ns is {_fmt_ms(gap)} {where} transform "
                                                    f"{e.parent!r} -> {child!r} ({len(s)} kept, tolerance "
                                                    f"{_fmt_ms(tolerance_ns)})")

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int, tolerance_ns: int = 0) -> np.ndarray:
        """``T_target_source`` (4, 4) float64 at ``stamp_ns``: maps points in ``source_frame`` coordinates to
        ``target_frame`` coordinates. ``tolerance_ns``: how far outside an edge's history the nearest sample is
        still used. Raises :class:`TransformLookupError`."""
        stamp_ns, tolerance_ns = int(stamp_ns), max(0, int(tolerance_ns))
        if target_frame == source_frame:
            return np.eye(4)
        with self._lock:
            known = self.frames()
            for name in (target_frame, source_frame):
                if name not in known:
                    raise TransformLookupError("unknown_frame", f"frame {name!r} is not in the transform tree "
                                                                f"(known: {', '.join(sorted(known)) or 'none'})")
            up_src, up_tgt = self._chain(source_frame), self._chain(target_frame)
            common = next((f for f in up_src if f in set(up_tgt)), None)
            if common is None:
                raise TransformLookupError("no_path", f"frames {target_frame!r} (root {up_tgt[-1]!r}) and "
                                                      f"{source_frame!r} (root {up_src[-1]!r}) are not connected")
            T_common_src = np.eye(4)
            for child in up_src[:up_src.index(common)]:  # T_parent_src = T_parent_child @ T_child_src
                T_common_src = self._edge_at(child, stamp_ns, tolerance_ns) @ T_common_src
            T_common_tgt = np.eye(4)
            for child in up_tgt[:up_tgt.index(common)]:
                T_common_tgt = self._edge_at(child, stamp_ns, tolerance_ns) @ T_common_tgt
        R, t = T_common_tgt[:3, :3], T_common_tgt[:3, 3]
        inv = np.eye(4)
        inv[:3, :3], inv[:3, 3] = R.T, -R.T @ t
        return inv @ T_common_src
