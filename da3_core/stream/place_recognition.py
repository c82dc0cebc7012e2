"""Place recognition: per-keyframe descriptors and the candidate search of loop closure. No ROS.

Descriptors are unit vectors compared by cosine similarity (their dot product):

- :func:`pool_tokens`: the network's own descriptor, the mean of a view's L2-normalised backbone patch tokens
  (:class:`~da3_core.stream.predictor.DA3Predictor` with ``descriptors=True`` returns them from the window's forward,
  the one that also gives the geometry);
- :func:`image_descriptor`: a stand-in for predictors without a network (the geometry oracle of the tests): a
  block-averaged colour thumbnail plus a histogram of gradient orientations, each part zero-mean and normalised. It
  carries no learned invariance; it exists so the tests exercise the real search, verification and graph code.

:class:`PlaceDatabase` holds one descriptor per place (a window's anchor keyframe) and answers "which older places
look like this one", skipping the last ``min_gap`` places (a temporal window: neighbours always look alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["image_descriptor", "pool_tokens", "PlaceDatabase", "Candidate"]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 and np.isfinite(n) else np.zeros_like(v)


def image_descriptor(rgb: np.ndarray, grid: tuple[int, int] = (6, 8), orientation_bins: int = 8) -> np.ndarray:
    """(3 * gh * gw + gh * gw * bins,) float32 unit descriptor of an (H, W, 3) uint8 image (test stand-in),
    computed on the image strided down to at most 64 columns."""
    step = max(1, int(np.asarray(rgb).shape[1]) // 64)
    img = np.asarray(rgb)[::step, ::step].astype(np.float32)
    H, W = img.shape[:2]
    gh, gw = grid
    rows = np.minimum((np.arange(H) * gh) // max(H, 1), gh - 1)
    cols = np.minimum((np.arange(W) * gw) // max(W, 1), gw - 1)
    cell = (rows[:, None] * gw + cols[None, :]).ravel()
    n_cells = gh * gw
    counts = np.maximum(np.bincount(cell, minlength=n_cells), 1).astype(np.float32)
    colour = np.stack([np.bincount(cell, img[..., c].ravel(), n_cells) / counts for c in range(3)])
    colour -= colour.mean(axis=1, keepdims=True)
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy).ravel()
    ang = ((np.arctan2(gy, gx) % np.pi) / np.pi * orientation_bins).astype(np.int64).ravel() % orientation_bins
    hog = np.bincount(cell * orientation_bins + ang, mag, n_cells * orientation_bins)
    hog -= hog.mean()
    return _unit(np.concatenate([_unit(colour), _unit(hog)]))


def pool_tokens(tokens: np.ndarray) -> np.ndarray:
    """(S, D) float32 unit descriptors from (S, N, D) patch tokens: mean of the L2-normalised tokens per view."""
    t = np.asarray(tokens, dtype=np.float32)
    if t.ndim != 3:
        raise ValueError(f"tokens must be (S, N, D), got shape {t.shape}")
    t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    return np.stack([_unit(v) for v in t.mean(axis=1)])


@dataclass
class Candidate:
    """A loop candidate: ``query`` and ``match`` are place keys (window indices), ``similarity`` their cosine."""

    query: int
    match: int
    similarity: float


class PlaceDatabase:
    """Descriptors by place key (increasing ints). ``min_similarity``: candidates below are ignored; ``min_gap``:
    places fewer than this many keys before the query are never candidates; ``top_k``: at most this many returned,
    most similar first. ``centre``: compare descriptors after subtracting the mean of the stored ones (once there
    are at least 3): pooled network tokens share a large common component (cosines of 0.99 between unrelated views
    of the tiny network), which centring removes."""

    def __init__(self, min_similarity: float = 0.9, min_gap: int = 5, top_k: int = 1, centre: bool = False):
        self.min_similarity, self.min_gap, self.top_k = float(min_similarity), int(min_gap), int(top_k)
        self.centre = bool(centre)
        self.clear()

    def clear(self) -> None:
        self._keys: list[int] = []
        self._rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: int, descriptor: np.ndarray) -> None:
        """Store the unit descriptor of place ``key`` (keys must increase; a wrong length or a zero vector is
        ignored)."""
        d = _unit(descriptor)
        if self._rows and (d.shape != self._rows[0].shape):
            return
        if not np.any(d) or (self._keys and int(key) <= self._keys[-1]):
            return
        self._keys.append(int(key))
        self._rows.append(d)
        self._matrix = None

    def remove(self, keys: set[int]) -> None:
        """Forget the places in ``keys``."""
        kept = [(k, r) for k, r in zip(self._keys, self._rows) if k not in keys]
        self._keys = [k for k, _ in kept]
        self._rows = [r for _, r in kept]
        self._matrix = None

    def query(self, key: int, descriptor: np.ndarray) -> list[Candidate]:
        """Older places (key <= ``key - min_gap``) whose similarity reaches ``min_similarity``, best first."""
        d = _unit(descriptor)
        if not self._rows or d.shape != self._rows[0].shape or not np.any(d):
            return []
        if self._matrix is None:
            self._matrix = np.stack(self._rows)
        n = int(np.searchsorted(np.asarray(self._keys), int(key) - self.min_gap, side="right"))
        if n == 0:
            return []
        rows = self._matrix[:n]
        if self.centre and len(self._rows) >= 3:
            mean = self._matrix.mean(axis=0)
            rows = rows - mean
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            d = _unit(d - mean)
        sims = rows @ d
        order = np.argsort(-sims, kind="stable")[: self.top_k]
        return [Candidate(int(key), self._keys[i], float(sims[i])) for i in order if sims[i] >= self.min_similarity]
