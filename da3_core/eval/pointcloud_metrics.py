"""Point-cloud reconstruction metrics (paper §6.2): accuracy, completeness, Chamfer distance, precision / recall / F1.

Definitions (``pred`` = reconstructed points in ground-truth units and frame, ``gt`` = ground-truth points):

- accuracy = mean over ``pred`` of the distance to the nearest ``gt`` point;
- completeness = mean over ``gt`` of the distance to the nearest ``pred`` point;
- Chamfer distance = (accuracy + completeness) / 2 (the DTU convention the paper reports, in ground-truth units);
- precision@d = fraction of ``pred`` within ``d`` of ``gt``; recall@d = fraction of ``gt`` within ``d`` of ``pred``;
  F1@d = 2 P R / (P + R) (0 when both are 0).

Nearest neighbours are exact. ``scipy.spatial.cKDTree`` is used when scipy is importable (it is not a project
dependency); otherwise :func:`nearest_distances` uses a numpy voxel hash (sorted cell keys, shells of neighbouring
cells searched until the nearest point found is provably the nearest, coarser grids for far-away queries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CloudScores", "nearest_distances", "cloud_scores", "voxel_downsample", "subsample"]


@dataclass(frozen=True)
class CloudScores:
    threshold: float
    accuracy: float
    completeness: float
    chamfer: float
    precision: float
    recall: float
    f1: float
    num_pred: int
    num_gt: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _clean(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return p[np.all(np.isfinite(p), axis=1)]


def _shell_offsets(r: int) -> np.ndarray:
    """Integer cell offsets with Chebyshev norm exactly ``r``."""
    rng = np.arange(-r, r + 1)
    g = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3)
    return g[np.abs(g).max(1) == r]


def _voxel_nn(query: np.ndarray, ref: np.ndarray, cell: float, shells: int = 2, max_pairs: int = 4_000_000
              ) -> np.ndarray:
    """Exact nearest distances by a voxel hash of cell size ``cell`` (far queries: coarser grid or brute force)."""
    out = np.full(len(query), np.inf)
    lo = np.minimum(query.min(0), ref.min(0))
    qc = np.floor((query - lo) / cell).astype(np.int64)
    rc = np.floor((ref - lo) / cell).astype(np.int64)
    dims = np.maximum(qc.max(0), rc.max(0)) + 2 * shells + 3
    span = float(np.prod(dims.astype(np.float64)))
    if span > 2**62 or len(ref) <= 64:  # degenerate grid: brute force in chunks
        return _brute_nn(query, ref, max_pairs)

    def key(c: np.ndarray) -> np.ndarray:
        c = c + shells + 1
        return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]

    rkeys = key(rc)
    order = np.argsort(rkeys, kind="stable")
    keys, refs = rkeys[order], ref[order]
    todo = np.arange(len(query))
    for r in range(shells + 1):
        for off in _shell_offsets(r):
            k = key(qc[todo] + off)
            start = np.searchsorted(keys, k, "left")
            n = np.searchsorted(keys, k, "right") - start
            sel = n > 0
            qi_all, st_all, n_all = todo[sel], start[sel], n[sel]
            # chunk so that the candidate pairs stay bounded
            csum = np.cumsum(n_all)
            a = 0
            while a < len(qi_all):
                b = int(np.searchsorted(csum, (csum[a - 1] if a else 0) + max_pairs, "right"))
                b = max(b, a + 1)
                qi, st, nn = qi_all[a:b], st_all[a:b], n_all[a:b]
                rep = np.repeat(np.arange(len(qi)), nn)
                ri = np.repeat(st - np.cumsum(nn) + nn, nn) + np.arange(int(nn.sum()))
                d2 = np.sum((query[qi[rep]] - refs[ri]) ** 2, axis=1)
                best = np.minimum.reduceat(d2, np.cumsum(nn) - nn)  # candidates of one query are contiguous
                out[qi] = np.minimum(out[qi], np.sqrt(best))
                a = b
        # points in unsearched cells are at least r * cell away from the query
        todo = todo[out[todo] > r * cell]
        if not len(todo):
            return out
    if len(todo) * 4 < len(query):  # a few far-away queries: refine on a coarser grid
        out[todo] = np.minimum(out[todo], _voxel_nn(query[todo], ref, cell * 4.0, shells, max_pairs))
    else:
        out[todo] = np.minimum(out[todo], _brute_nn(query[todo], ref, max_pairs))
    return out


def _brute_nn(query: np.ndarray, ref: np.ndarray, max_pairs: int) -> np.ndarray:
    """Exact by |q|^2 + |r|^2 - 2 q.r in chunks (BLAS), re-checked on the argmin pair."""
    out = np.empty(len(query))
    mu = ref.mean(0)
    r = ref - mu
    r2 = np.sum(r * r, axis=1)
    step = max(1, max_pairs // max(1, len(ref)))
    for a in range(0, len(query), step):
        q = query[a:a + step] - mu
        j = np.argmin(r2[None, :] - 2.0 * (q @ r.T), axis=1)
        out[a:a + step] = np.linalg.norm(q - r[j], axis=1)
    return out


def nearest_distances(query: np.ndarray, ref: np.ndarray, method: str = "auto") -> np.ndarray:
    """(M,) distance of each ``query`` point (M, 3) to its nearest ``ref`` point (N, 3); inf if ``ref`` is empty.

    ``method``: "auto" (cKDTree when scipy is importable, else voxel hash), "kdtree", "voxel" or "brute".
    """
    query = np.asarray(query, np.float64).reshape(-1, 3)
    ref = np.asarray(ref, np.float64).reshape(-1, 3)
    if len(query) == 0:
        return np.zeros(0)
    if len(ref) == 0:
        return np.full(len(query), np.inf)
    if method in ("auto", "kdtree"):
        try:
            from scipy.spatial import cKDTree
        except ImportError:
            if method == "kdtree":
                raise
        else:
            return cKDTree(ref).query(query, k=1)[0].astype(np.float64)
    if method == "brute":
        return _brute_nn(query, ref, 4_000_000)
    ext = np.ptp(ref, axis=0)
    # cell ~ mean spacing of points on a surface spanning the bounding box (a few points per occupied cell)
    area = max(ext[0] * ext[1] + ext[1] * ext[2] + ext[0] * ext[2], 1e-18)
    cell = max(float(np.sqrt(4.0 * area / len(ref))), float(ext.max()) * 1e-6, 1e-9)
    return _voxel_nn(query, ref, cell)


def voxel_downsample(points: np.ndarray, voxel: float) -> np.ndarray:
    """One point (the centroid) per occupied voxel of size ``voxel``; finite points only; order by voxel key."""
    p = _clean(points)
    if len(p) == 0 or voxel <= 0:
        return p
    c = np.floor((p - p.min(0)) / voxel).astype(np.int64)
    _, inv, counts = np.unique(c, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    out = np.zeros((len(counts), 3))
    np.add.at(out, inv, p)
    return out / counts[:, None]


def subsample(points: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Finite points, at most ``max_points`` of them (uniform, seeded, order kept)."""
    p = _clean(points)
    if max_points is not None and len(p) > max_points:
        p = p[np.sort(np.random.default_rng(seed).choice(len(p), max_points, replace=False))]
    return p


def cloud_scores(pred: np.ndarray, gt: np.ndarray, threshold: float, method: str = "auto") -> CloudScores:
    """Accuracy, completeness, Chamfer and precision / recall / F1 at ``threshold`` (see the module docstring).

    Non-finite points are dropped; with an empty cloud every score is NaN.
    """
    p, g = _clean(pred), _clean(gt)
    if len(p) == 0 or len(g) == 0:
        nan = float("nan")
        return CloudScores(float(threshold), nan, nan, nan, nan, nan, nan, len(p), len(g))
    d_pg = nearest_distances(p, g, method)
    d_gp = nearest_distances(g, p, method)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    prec, rec = float(np.mean(d_pg <= threshold)), float(np.mean(d_gp <= threshold))
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return CloudScores(float(threshold), acc, comp, (acc + comp) / 2, prec, rec, f1, len(p), len(g))
