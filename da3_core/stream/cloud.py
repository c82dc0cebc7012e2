"""Window cloud: the confidence-filtered, subsampled map-frame points of a window's new frames, in a few whole-window
numpy passes (no per-point Python, no per-frame temporaries beyond the strided views).

Per window: the new frames' depth / confidence / sky / RGB on the ``stride`` grid are stacked once; one mask (finite
positive depth, finite confidence, not sky, confidence >= threshold) selects the pixels; their unit-depth rays come
from a grid cached per (K, image size, stride), so unprojection is three multiplies and a rotation per point,
written straight into the output. The threshold is ``conf_threshold`` or the ``conf_percentile`` of the valid
confidences of the pixels on the map grid (on an even subsample of at most about 20,000 of them), so the map's
points are the same whether the full window cloud or only the map's points are built (``map_only``; below
``max_points``). ``on_map`` marks the points on the coarser ``map_stride`` grid (a multiple of ``stride``) that feed
the voxel map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CloudBuilder", "WindowCloud"]

_PERCENTILE_SAMPLES = 20_000
AUTO_MAP_COLUMNS = 64  # map_stride=0: about this many map points across an image


class WindowCloud:
    """``points`` (N, 3) float32 map frame, ``colors`` (N, 3) uint8, ``weights`` (N,) float32 (confidence),
    ``on_map`` (N,) bool."""

    __slots__ = ("points", "colors", "weights", "on_map")

    def __init__(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray, on_map: np.ndarray):
        self.points, self.colors, self.weights, self.on_map = points, colors, weights, on_map

    @classmethod
    def empty(cls) -> WindowCloud:
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32),
                   np.zeros(0, bool))

    def __len__(self) -> int:
        return int(self.points.shape[0])


class CloudBuilder:
    """Builds :class:`WindowCloud` s; keeps the ray grids of the cameras it has seen (a handful)."""

    def __init__(self, stride: int = 1, map_stride: int = 4, conf_percentile: float | None = 30.0,
                 conf_threshold: float | None = None, max_points: int | None = None, drop_sky: bool = True,
                 seed: int = 0):
        self.stride = max(1, int(stride))
        # a multiple of the stride; 0 = auto per image width (map_stride_for)
        self.map_stride = 0 if int(map_stride) <= 0 else self.stride * max(1, -(-int(map_stride) // self.stride))
        self.conf_percentile, self.conf_threshold = conf_percentile, conf_threshold
        self.max_points, self.drop_sky, self.seed = max_points, bool(drop_sky), int(seed)
        self._rays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._grid: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (hw, stride, map stride) -> pixel tables

    def rays(self, K: np.ndarray, hw: tuple[int, int], stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) (h*w,) float32 unit-depth ray coordinates of the strided pixel grid of an image of ``hw``:
        ``y = (v - cy) / fy``, ``x = (u - cx - skew y) / fx`` at integer pixels (u, v) = (col, row) * stride
        (``stride``: default the cloud's)."""
        st = self.stride if stride is None else int(stride)
        key = (np.asarray(K, np.float64).tobytes(), hw, st)
        hit = self._rays.get(key)
        if hit is None:
            if len(self._rays) >= 16:  # cameras whose K changes all the time: keep the cache bounded
                self._rays.clear()
            f32 = np.float32
            fx, fy, cx, cy, skew = (f32(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]))
            rows = np.arange(0, hw[0], st, dtype=f32)[:, None]
            cols = np.arange(0, hw[1], st, dtype=f32)[None, :]
            y = np.broadcast_to((rows - cy) / fy, (rows.size, cols.size))
            x = (cols - cx - skew * y) / fx
            hit = (np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(y).reshape(-1))
            self._rays[key] = hit
        return hit

    def map_stride_for(self, width: int) -> int:
        """The map grid's stride for images ``width`` pixels wide: ``map_stride``, or with 0 (auto) the multiple of
        the cloud stride closest to giving the map about ``AUTO_MAP_COLUMNS`` points across the image (8 at 504 px
        with stride 4, 4 up to 383 px)."""
        if self.map_stride:
            return self.map_stride
        return self.stride * max(1, round(width / (AUTO_MAP_COLUMNS * self.stride)))

    def _pixel_tables(self, hw: tuple[int, int], st: int, ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel of the ``st``-strided grid of an image of ``hw``: its full-resolution flat index, and whether it
        is on the map grid (stride ``ms``)."""
        tables = self._grid.get((hw, st, ms))
        if tables is None:
            k = ms // st
            rows, cols = np.arange(0, hw[0], st), np.arange(0, hw[1], st)
            full = (rows[:, None] * hw[1] + cols[None, :]).reshape(-1)
            grid = ((np.arange(rows.size) % k == 0)[:, None] & (np.arange(cols.size) % k == 0)[None, :]).reshape(-1)
            tables = (full, grid)
            self._grid[(hw, st, ms)] = tables
        return tables

    def build(self, depth: Sequence[np.ndarray], conf: Sequence[np.ndarray], sky: Sequence[np.ndarray | None],
              rgb: Sequence[np.ndarray], K: Sequence[np.ndarray], c2w: Sequence[np.ndarray],
              window_index: int = 0, map_only: bool = False) -> WindowCloud:
        """The cloud of S frames: depth / conf (H, W) float32 (map units), sky (H, W) bool or None, rgb (H, W, 3)
        uint8, K (3, 3) and c2w (4, 4) map-frame poses. Frames of other sizes than the first are skipped.
        ``map_only``: only the points on the map grid (exactly the ``on_map`` points of the full cloud, in the same
        order), for when nobody wants the window cloud itself."""
        if not depth:
            return WindowCloud.empty()
        ms = self.map_stride_for(depth[0].shape[1])
        st = ms if map_only else self.stride
        k_map = ms // st  # the map grid within this one
        hw = depth[0].shape
        keep = [i for i, d in enumerate(depth) if d.shape == hw]
        D = np.stack([depth[i][::st, ::st] for i in keep])  # (S, h, w) float32, contiguous
        C = np.stack([conf[i][::st, ::st] for i in keep]).astype(np.float32, copy=False)
        n_pix = D.shape[1] * D.shape[2]
        with np.errstate(invalid="ignore"):
            mask = (D > 0) & (D < np.inf) & (np.abs(C) < np.inf)  # NaN compares False: finite positive depth
        if self.drop_sky and any(sky[i] is not None for i in keep):
            for j, i in enumerate(keep):
                if sky[i] is not None:
                    mask[j] &= ~sky[i][::st, ::st]
        thr = self.conf_threshold
        if thr is None and self.conf_percentile is not None:  # from the map grid's pixels: the same either way
            valid_conf = C[:, ::k_map, ::k_map][mask[:, ::k_map, ::k_map]]
            if valid_conf.size:
                sample = valid_conf[:: max(1, valid_conf.size // _PERCENTILE_SAMPLES)]  # an even subsample
                thr = float(np.percentile(sample, self.conf_percentile))
        if thr is not None:
            with np.errstate(invalid="ignore"):
                mask &= C >= np.float32(thr)
        idx = np.flatnonzero(mask)  # (N,) sorted: frame by frame, row-major
        if idx.size == 0:
            return WindowCloud.empty()
        d = D.reshape(-1)[idx]
        weights = C.reshape(-1)[idx]
        bounds = np.searchsorted(idx, np.arange(len(keep) + 1) * n_pix)
        xyz = np.empty((3, idx.size), np.float32)  # rows: contiguous writes; returned as the (N, 3) view xyz.T
        colors = np.empty((idx.size, 3), np.uint8)
        on_map = np.empty(idx.size, bool)
        full_of, grid = self._pixel_tables(hw, st, ms)
        rgb3 = np.dtype((np.void, 3))
        for j, i in enumerate(keep):
            a, b = bounds[j], bounds[j + 1]
            if a == b:
                continue
            local = idx[a:b] - j * n_pix  # strided pixel index within the frame
            z = d[a:b]
            R = np.asarray(c2w[i], np.float64)
            rx, ry = self.rays(K[i], hw, st)
            for k in range(3):  # X_map[k] = (R[k] . (x, y, 1)) * z + t[k]; the ray term once per grid pixel
                ray_k = (np.float32(R[k, 0]) * rx + np.float32(R[k, 1]) * ry) + np.float32(R[k, 2])
                col = xyz[k, a:b]
                np.take(ray_k, local, out=col)
                col *= z
                col += np.float32(R[k, 3])
            image = np.ascontiguousarray(rgb[i]).reshape(-1).view(rgb3)  # pixels as 3-byte items (no copy)
            np.take(image, full_of[local], out=colors[a:b].reshape(-1).view(rgb3))
            np.take(grid, local, out=on_map[a:b])
        pts = xyz.T
        if self.max_points is not None and idx.size > self.max_points:
            rng = np.random.default_rng(self.seed + window_index)
            sel = np.sort(rng.choice(idx.size, size=int(self.max_points), replace=False))
            pts, colors, weights, on_map = pts[sel], colors[sel], weights[sel], on_map[sel]
        return WindowCloud(pts, colors, weights, on_map)
