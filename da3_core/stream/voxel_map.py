"""Accumulated map cloud with voxel-hash downsampling and bounded memory (vectorised numpy, no per-point Python).

Each occupied voxel keeps weighted sums of position and colour, a total weight and the insert counter of its last
update. ``points()`` / ``colors()`` are the weighted means. Past ``max_points`` voxels, the least recently updated
ones are dropped first (lowest weight among equally old ones).

Keys: voxel indices ``floor(p / voxel_size)`` packed into one int64 (21 bits per axis, offset 2^20), so the map
spans +-2^20 voxels per axis (+-52 km at 5 cm); points beyond are ignored and counted in ``n_out_of_range``.
The state is kept sorted by key; an insert costs O(N log N) for the N new points plus O(M) to merge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["VoxelMap"]

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def _pack(idx: np.ndarray) -> np.ndarray:
    """(N, 3) int64 voxel indices in [-2^20, 2^20) -> (N,) int64 keys."""
    u = idx + _OFFSET
    return (u[:, 0] << (2 * _BITS)) | (u[:, 1] << _BITS) | u[:, 2]


class VoxelMap:
    def __init__(self, voxel_size: float = 0.05, max_points: int = 2_000_000):
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.clear()

    def clear(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._xyz = np.zeros((0, 3), np.float64)  # weighted sums
        self._rgb = np.zeros((0, 3), np.float64)
        self._w = np.zeros(0, np.float64)
        self._tick = np.zeros(0, np.int64)
        self._counter = 0
        self.n_out_of_range = 0
        self.n_evicted = 0

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def insert(self, points: np.ndarray, colors: np.ndarray | None = None, weights: np.ndarray | None = None) -> int:
        """Add (N, 3) points with (N, 3) uint8 colours (grey when None) and (N,) positive weights (1 when None).

        Non-finite points and non-positive weights are ignored. Returns the number of voxels afterwards.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cols = np.full(pts.shape, 200.0) if colors is None else np.asarray(colors, dtype=np.float64).reshape(-1, 3)
        w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if cols.shape != pts.shape or w.shape != (len(pts),):
            raise ValueError(f"insert: points {pts.shape}, colors {cols.shape}, weights {w.shape} do not match")
        ok = np.all(np.isfinite(pts), axis=1) & np.isfinite(w) & (w > 0)
        idx = np.floor(pts[ok] / self.voxel_size)
        inside = np.all((idx >= -_OFFSET) & (idx < _OFFSET), axis=1)
        self.n_out_of_range += int((~inside).sum())
        sel = np.flatnonzero(ok)[inside]
        if sel.size == 0:
            return len(self)
        self._counter += 1
        keys = _pack(idx[inside].astype(np.int64))
        wk = w[sel]
        ukeys, inv = np.unique(keys, return_inverse=True)
        n = len(ukeys)
        sw = np.bincount(inv, weights=wk, minlength=n)
        sxyz = np.stack([np.bincount(inv, weights=wk * pts[sel, j], minlength=n) for j in range(3)], axis=1)
        srgb = np.stack([np.bincount(inv, weights=wk * cols[sel, j], minlength=n) for j in range(3)], axis=1)
        # merge with the sorted state
        pos = np.searchsorted(self._keys, ukeys)
        hit = np.zeros(n, bool)
        inb = pos < len(self._keys)
        hit[inb] = self._keys[pos[inb]] == ukeys[inb]
        hp = pos[hit]
        self._xyz[hp] += sxyz[hit]
        self._rgb[hp] += srgb[hit]
        self._w[hp] += sw[hit]
        self._tick[hp] = self._counter
        miss = ~hit
        if miss.any():
            ins = pos[miss]
            self._keys = np.insert(self._keys, ins, ukeys[miss])
            self._xyz = np.insert(self._xyz, ins, sxyz[miss], axis=0)
            self._rgb = np.insert(self._rgb, ins, srgb[miss], axis=0)
            self._w = np.insert(self._w, ins, sw[miss])
            self._tick = np.insert(self._tick, ins, np.full(int(miss.sum()), self._counter, np.int64))
        if len(self._keys) > self.max_points:
            self._evict()
        return len(self)

    def _evict(self) -> None:
        order = np.lexsort((-self._w, -self._tick))  # newest first, then heaviest
        keep = np.sort(order[: self.max_points])  # sorted positions keep the key order
        self.n_evicted += len(self._keys) - len(keep)
        self._keys, self._xyz, self._rgb = self._keys[keep], self._xyz[keep], self._rgb[keep]
        self._w, self._tick = self._w[keep], self._tick[keep]

    def points(self) -> np.ndarray:
        """(M, 3) float32 weighted mean position per voxel (key order)."""
        return (self._xyz / self._w[:, None]).astype(np.float32)

    def colors(self) -> np.ndarray:
        """(M, 3) uint8 weighted mean colour per voxel."""
        return np.clip(np.rint(self._rgb / self._w[:, None]), 0, 255).astype(np.uint8)

    def weights(self) -> np.ndarray:
        """(M,) float64 accumulated weight per voxel."""
        return self._w.copy()

    def save_ply(self, path: str | Path) -> Path:
        """Binary little-endian PLY (x y z float32, red green blue uint8) via :func:`da3_core.export.write_ply`."""
        from da3_core.export.ply import write_ply

        return write_ply(path, self.points(), self.colors())
