"""Accumulated map cloud with voxel-hash downsampling and bounded memory (vectorised numpy, no per-point Python).

Each occupied voxel keeps weighted sums of position and colour, a total weight and the insert counter of its last
update. ``points()`` / ``colors()`` are the weighted means. Past ``max_points`` voxels, the least recently updated
ones are dropped first (lowest weight among equally old ones).

Keys: voxel indices ``floor(p / voxel_size)`` packed into one int64 (21 bits per axis, offset 2^20), so the map
spans +-2^20 voxels per axis (+-52 km at 5 cm); points beyond are ignored and counted in ``n_out_of_range``.
The state is kept sorted by key, the sums of each voxel in one (M, 8) row (x, y, z, r, g, b weighted sums, weight,
tick); an insert groups the N new points by voxel (through a dense occupancy table over their bounding box, O(N +
cells), or by sorting their keys when the box is huge, O(N log N)), sums them per voxel with ``bincount`` (one pass
per column) and merges with one row insert (O(M) memory moves).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["VoxelMap"]

_BITS = 21
_OFFSET = 1 << (_BITS - 1)


_DENSE_CELLS = 1 << 21  # voxel grouping by a dense table over the batch's bounding box up to this many cells


def _pack(u: np.ndarray) -> np.ndarray:
    """(3, M) non-negative voxel indices -> (M,) int64 keys (x major, then y, then z: the keys' sort order)."""
    return (u[0] << (2 * _BITS)) | (u[1] << _BITS) | u[2]


def _group_voxels(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Group points by voxel: (sorted unique keys (V,), voxel number of each point (M,), order). ``order`` is None
    when ``group`` follows the points as given, else the permutation of the points ``group`` refers to.

    A batch whose bounding box has at most ``max(4 M, _DENSE_CELLS)`` voxels (a camera's view at map resolution) is
    grouped through a dense occupancy table over that box, O(M + cells), in input order; others by sorting the keys,
    O(M log M). Both give the same voxels in key order (x, y, z lexicographic)."""
    m = u.shape[1]
    lo = np.array([r.min() for r in u])  # per row: numpy's axis reductions over (3, M) are several times slower
    span = np.array([r.max() for r in u]) - lo + 1
    cells = int(span[0]) * int(span[1]) * int(span[2])
    if cells <= max(4 * m, _DENSE_CELLS):
        ck = (u[0] - lo[0]) * span[1]
        ck += u[1] - lo[1]
        ck *= span[2]
        ck += u[2] - lo[2]
        occupied = np.zeros(cells, bool)
        occupied[ck] = True
        cell = np.flatnonzero(occupied)  # ascending compact index = ascending key
        rank = np.empty(cells, np.int64)  # only the occupied cells are written and read: no pass over the box
        rank[cell] = np.arange(cell.size)
        group = rank[ck]
        z = cell % span[2]
        cell //= span[2]
        v = np.stack([cell // span[1] + lo[0], cell % span[1] + lo[1], z + lo[2]])
        return _pack(v), group, None
    keys = _pack(u)
    order = np.argsort(keys)  # deterministic for given input; sums within a voxel follow this order
    keys = keys[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    return keys[first], np.cumsum(first) - 1, order


class VoxelMap:
    def __init__(self, voxel_size: float = 0.05, max_points: int = 2_000_000):
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.revision = 0  # never repeats: changes with every insert and clear
        self.clear()

    def clear(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._rows = np.zeros((0, 8), np.float64)  # weighted sums x y z r g b, weight, tick
        self._counter = 0
        self.revision += 1
        self.n_out_of_range = 0
        self.n_evicted = 0

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def insert(self, points: np.ndarray, colors: np.ndarray | None = None, weights: np.ndarray | None = None) -> int:
        """Add (N, 3) points with (N, 3) uint8 colours (grey when None) and (N,) positive weights (1 when None).

        Non-finite points and non-positive weights are ignored. Returns the number of voxels afterwards.
        """
        pts = np.asarray(points).reshape(-1, 3)
        n = len(pts)
        cols = np.full((n, 3), 200.0) if colors is None else np.asarray(colors).reshape(-1, 3)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if cols.shape != pts.shape or w.shape != (n,):
            raise ValueError(f"insert: points {pts.shape}, colors {cols.shape}, weights {w.shape} do not match")
        # column-wise (rows of (3, N) arrays): numpy's reductions over a length-3 axis are slow
        idx = np.floor(pts.T.astype(np.float64) / self.voxel_size)  # (3, N); NaN / inf stay non-finite
        with np.errstate(invalid="ignore"):
            inside = (idx[0] >= -_OFFSET) & (idx[0] < _OFFSET)  # False for non-finite coordinates
            for axis in (1, 2):
                inside &= (idx[axis] >= -_OFFSET) & (idx[axis] < _OFFSET)
            ok = (w > 0) & (w < np.inf)
        finite = np.isfinite(idx[0]) & np.isfinite(idx[1]) & np.isfinite(idx[2])
        self.n_out_of_range += int(np.count_nonzero(~inside & ok & finite))
        sel = np.flatnonzero(inside & ok)
        if sel.size == 0:
            return len(self)
        self._counter += 1
        self.revision += 1
        u = (idx if sel.size == n else idx[:, sel]).astype(np.int64)  # (3, M) voxel indices, offset to >= 0
        u += _OFFSET
        ukeys, group, order = _group_voxels(u)
        rows = sel if order is None else sel[order]  # the points in the order of ``group``
        if order is None and sel.size == n:
            rows = None  # every point, in input order: no gathers
        wk = w if rows is None else w[rows]
        n_vox = len(ukeys)
        sums = np.empty((n_vox, 7), np.float64)  # weighted x y z r g b, weight
        P, C = pts.T, cols.T
        for j in range(3):
            pj, cj = (P[j], C[j]) if rows is None else (P[j, rows], C[j, rows])
            sums[:, j] = np.bincount(group, weights=wk * pj, minlength=n_vox)
            sums[:, 3 + j] = np.bincount(group, weights=wk * cj, minlength=n_vox)
        sums[:, 6] = np.bincount(group, weights=wk, minlength=n_vox)
        # merge with the sorted state
        pos = np.searchsorted(self._keys, ukeys)
        hit = np.zeros(len(ukeys), bool)
        inb = pos < len(self._keys)
        hit[inb] = self._keys[pos[inb]] == ukeys[inb]
        hp = pos[hit]
        self._rows[hp, :7] += sums[hit]
        self._rows[hp, 7] = self._counter
        miss = ~hit
        if miss.any():
            new_rows = np.empty((int(miss.sum()), 8), np.float64)
            new_rows[:, :7] = sums[miss]
            new_rows[:, 7] = self._counter
            self._keys = np.insert(self._keys, pos[miss], ukeys[miss])
            self._rows = np.insert(self._rows, pos[miss], new_rows, axis=0)
        if len(self._keys) > self.max_points:
            self._evict()
        return len(self)

    def _evict(self) -> None:
        order = np.lexsort((-self._rows[:, 6], -self._rows[:, 7]))  # newest first, then heaviest
        keep = np.sort(order[: self.max_points])  # sorted positions keep the key order
        self.n_evicted += len(self._keys) - len(keep)
        self._keys, self._rows = self._keys[keep], self._rows[keep]

    def points(self) -> np.ndarray:
        """(M, 3) float32 weighted mean position per voxel (key order)."""
        return (self._rows[:, :3] / self._rows[:, 6:7]).astype(np.float32)

    def colors(self) -> np.ndarray:
        """(M, 3) uint8 weighted mean colour per voxel."""
        return np.clip(np.rint(self._rows[:, 3:6] / self._rows[:, 6:7]), 0, 255).astype(np.uint8)

    def weights(self) -> np.ndarray:
        """(M,) float64 accumulated weight per voxel."""
        return self._rows[:, 6].copy()

    def save_ply(self, path: str | Path) -> Path:
        """Binary little-endian PLY (x y z float32, red green blue uint8) via :func:`da3_core.export.write_ply`."""
        from da3_core.export.ply import write_ply

        return write_ply(path, self.points(), self.colors())
