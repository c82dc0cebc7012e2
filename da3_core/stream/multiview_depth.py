"""Multi-view depth refinement of a window: each view's depth corrected by a plane sweep against its neighbours in
the window, around the network's own depth. No ROS.

Why. A single view's depth from a small network is good in shape and poor in its low frequencies: on a robot that
drives up to a close box the embedded default's depth of that box is 30-80 % off, frame by frame. Once a window's
cameras agree with its depth's units (after the photometric refinement, or a pose-conditioned window, or a network
whose cameras and depth share one scale), its other views say where each textured pixel really is: the depth at
which the pixel's patch looks the same in the neighbours (classical multi-view stereo). The sweep searches only a
factor of the network's depth per pixel, so the network's shape stays where the images say nothing.

For each view ``r`` of a window:
1. Its neighbours: up to ``neighbours`` views of the same camera on each side of it in the window (time order), and
   (a rig: ``step_ns`` > 0) the views of the other cameras of its time step, whose pose relative to r is the
   calibrated mount's. In a window conditioned on given poses only the latter are used: the odometry's small errors
   between frames are parallax errors to the sweep (on the robots they made each frame's depth worse, AbsRel 0.171
   -> 0.190), while the cameras of one step are apart by their mounts.
2. For each of ``factors`` log-spaced factors f in [``min_factor``, ``max_factor``], r's pixels are moved to
   depth f x depth_r, projected into every neighbour, and the neighbour's grey image is sampled there. The cost of
   f at a pixel is 1 - ZNCC of the ``patch`` x ``patch`` patches of r and the warped neighbour, averaged over the
   neighbours that see the whole patch.
3. A pixel is *matched* where its best cost is below ``max_cost``, its patch has a grey-level spread of at least
   ``min_texture``, the best factor is not an end of the sweep and at least one neighbour saw it. Its log-factor is
   refined by a parabola through the best cost and its two neighbours.
4. The correction is smooth: the log-factors of the matched pixels are averaged in a ``smooth`` x ``smooth`` box
   (normalised convolution) and applied where matched pixels cover at least ``min_support`` of the box; elsewhere
   the view's median matched log-factor is applied (its depth keeps one scale with the corrected part). A view with
   fewer than ``min_matched`` of its valid pixels matched is left as it was.
Sky and invalid pixels (NaN) stay invalid.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.frame import Frame
from da3_core.stream.photometric import gray_at
from da3_core.stream.predictor import WindowPrediction

__all__ = ["MultiViewDepthConfig", "ViewCorrection", "MultiViewDepthRefiner", "box_filter", "neighbour_views",
           "parabola_offset", "patch_mean_var", "refine_view_depth", "step_views", "sweep_costs", "textured"]


@dataclass(frozen=True)
class MultiViewDepthConfig:
    """Knobs of :class:`MultiViewDepthRefiner` (module docstring)."""

    neighbours: int = 5  # views of the same camera used on each side of a view, nearest first
    factors: int = 17  # depth factors swept per pixel, log-spaced
    min_factor: float = 0.5
    max_factor: float = 2.0
    patch: int = 5  # side of the ZNCC patch (odd)
    max_cost: float = 0.5  # 1 - ZNCC above this: not matched
    min_texture: float = 0.02  # grey-level standard deviation (of [0, 1]) of a patch below this: not matched
    smooth: int = 21  # side of the box that averages the matched log-factors (odd)
    min_support: float = 0.05  # share of matched pixels in that box needed to use the local average
    min_matched: float = 0.02  # share of a view's valid pixels that must match for any correction

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.factors < 3:
            raise ValueError(f"neighbours = {self.neighbours}, factors = {self.factors}: use >= 1 and >= 3")
        if not 0.0 < self.min_factor < 1.0 < self.max_factor:
            raise ValueError(f"min_factor = {self.min_factor}, max_factor = {self.max_factor}: use 0 < min < 1 < max")
        if self.patch < 3 or self.patch % 2 == 0 or self.smooth < 1 or self.smooth % 2 == 0:
            raise ValueError(f"patch = {self.patch}, smooth = {self.smooth}: use odd sides (patch >= 3)")
        if not (0.0 < self.max_cost <= 2.0 and self.min_texture >= 0.0 and 0.0 < self.min_support <= 1.0
                and 0.0 <= self.min_matched <= 1.0):
            raise ValueError("max_cost in (0, 2], min_texture >= 0, min_support in (0, 1], min_matched in [0, 1]")

    @property
    def log_factors(self) -> np.ndarray:
        return np.linspace(np.log(self.min_factor), np.log(self.max_factor), self.factors)


@dataclass(frozen=True)
class ViewCorrection:
    """What the sweep did to one view: ``matched`` share of its valid pixels, ``median_factor`` of the matched
    pixels (1 when none), ``applied`` whether the depth changed."""

    matched: float
    median_factor: float
    applied: bool


def neighbour_views(cameras: list[int], index: int, per_side: int) -> list[int]:
    """Indices of up to ``per_side`` views of ``cameras[index]``'s camera on each side of ``index`` (window order),
    nearest first on each side."""
    same = [k for k, c in enumerate(cameras) if c == cameras[index]]
    at = same.index(index)
    before = same[max(0, at - per_side):at][::-1]
    after = same[at + 1:at + 1 + per_side]
    return before + after


def step_views(frames: list[Frame], index: int, step_ns: int) -> list[int]:
    """Indices of the views of other cameras than ``frames[index]``'s whose stamps are within ``step_ns`` of its
    (a rig's time step); none when ``step_ns`` <= 0."""
    if step_ns <= 0:
        return []
    f = frames[index]
    return [k for k, g in enumerate(frames)
            if g.camera != f.camera and abs(int(g.stamp_ns) - int(f.stamp_ns)) <= step_ns]


def box_filter(image: np.ndarray, side: int) -> np.ndarray:
    """Mean over the ``side`` x ``side`` box around each pixel (edges reflected)."""
    import cv2

    return cv2.blur(image, (side, side), borderType=cv2.BORDER_REFLECT)


def patch_mean_var(image: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (clipped at 0) of each ``patch`` x ``patch`` patch of ``image``."""
    mean = box_filter(image, patch)
    return mean, np.maximum(box_filter(image * image, patch) - mean * mean, 0.0)


def textured(gray: np.ndarray, patch: int, min_texture: float) -> np.ndarray:
    """(H, W) bool: the ``patch`` x ``patch`` patch around each pixel has a grey-level spread of >= ``min_texture``."""
    return np.sqrt(patch_mean_var(gray.astype(np.float32), patch)[1]) >= min_texture


def parabola_offset(lo: np.ndarray, mid: np.ndarray, hi: np.ndarray, min_curve: float = 1e-12) -> np.ndarray:
    """Offset, in grid steps from the middle sample, of the vertex of the parabola through three equally spaced
    costs (``lo``, ``mid``, ``hi``: arrays or scalars); 0 where their curvature is not above ``min_curve`` or they
    are not finite."""
    lo, mid, hi = (np.asarray(x, dtype=np.float64) for x in (lo, mid, hi))
    ok = np.isfinite(lo) & np.isfinite(mid) & np.isfinite(hi)
    lo, mid, hi = (np.where(ok, x, 0.0) for x in (lo, mid, hi))
    curve = lo - 2.0 * mid + hi
    ok &= curve > min_curve
    return np.where(ok, 0.5 * (lo - hi) / np.where(ok, curve, 1.0), 0.0)


def sweep_costs(gray_r: np.ndarray, depth_r: np.ndarray, K_r: np.ndarray, w2c_r: np.ndarray,
                others: list[tuple[np.ndarray, np.ndarray, np.ndarray]], log_factors: np.ndarray, patch: int
                ) -> np.ndarray:
    """(F, H, W) float32 cost 1 - ZNCC of view r's depth times exp(log_factors[f]) against the views ``others``
    ((gray, K, w2c) each), averaged over the views that see the whole patch; NaN where none does or r's depth is
    invalid. ``gray_*`` float32 (H, W) in [0, 1] (all views one size), poses world-to-camera in the units of
    ``depth_r``."""
    import cv2

    H, W = depth_r.shape
    ys, xs = np.mgrid[0:H, 0:W]
    rays = np.stack([(xs - K_r[0, 2]) / K_r[0, 0], (ys - K_r[1, 2]) / K_r[1, 1], np.ones((H, W))])
    rays = rays.reshape(3, -1).astype(np.float32)
    valid_r = np.isfinite(depth_r) & (depth_r > 0)
    d = np.where(valid_r, depth_r, 1.0).reshape(-1).astype(np.float32)
    g = gray_r.astype(np.float32)
    mean_r, var_r = patch_mean_var(g, patch)
    c2w_r = invert_rigid(np.asarray(w2c_r, dtype=np.float64))
    moves = [(gray.astype(np.float32), K, (np.asarray(w2c, dtype=np.float64) @ c2w_r).astype(np.float32))
             for gray, K, w2c in others]
    costs = np.full((len(log_factors), H, W), np.nan, dtype=np.float32)
    for i, lf in enumerate(log_factors):
        X = rays * (d * np.float32(np.exp(lf)))
        total = np.zeros((H, W), np.float32)
        seen = np.zeros((H, W), np.float32)
        for gray, K, T in moves:
            Xn = T[:3, :3] @ X + T[:3, 3:4]
            z = Xn[2]
            front = z > 1e-6
            zs = np.where(front, z, np.float32(1.0))
            u = np.where(front, np.float32(K[0, 0]) * Xn[0] / zs + np.float32(K[0, 2]), np.float32(-1e6))
            v = np.where(front, np.float32(K[1, 1]) * Xn[1] / zs + np.float32(K[1, 2]), np.float32(-1e6))
            u, v = u.reshape(H, W), v.reshape(H, W)
            warped = cv2.remap(gray, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
            inside = (warped >= 0).astype(np.float32)
            full = box_filter(inside, patch) > 1.0 - 1e-4  # the neighbour sees the whole patch
            w = np.where(inside > 0, warped, 0.0).astype(np.float32)
            mean_w, var_w = patch_mean_var(w, patch)
            cov = box_filter(g * w, patch) - mean_r * mean_w
            zncc = cov / np.sqrt(np.maximum(var_r * var_w, 1e-12))
            total += np.where(full, 1.0 - zncc, 0.0)
            seen += full
        costs[i] = np.where((seen > 0) & valid_r, total / np.maximum(seen, 1.0), np.nan)
    return costs


def refine_view_depth(gray_r: np.ndarray, depth_r: np.ndarray, K_r: np.ndarray, w2c_r: np.ndarray,
                      others: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      cfg: MultiViewDepthConfig | None = None) -> tuple[np.ndarray, ViewCorrection]:
    """View r's depth corrected by the sweep against ``others`` (see :func:`sweep_costs` for the arguments;
    module docstring for the rule), and what was done."""
    cfg = cfg or MultiViewDepthConfig()
    if gray_r.shape != depth_r.shape or any(g.shape != depth_r.shape for g, _, _ in others):
        raise ValueError(f"refine_view_depth: images and depth must share one shape, got {gray_r.shape}, "
                         f"{depth_r.shape}, {[g.shape for g, _, _ in others]}")
    valid = np.isfinite(depth_r) & (depth_r > 0)
    if not others or not valid.any():
        return depth_r, ViewCorrection(0.0, 1.0, False)
    lfs = cfg.log_factors
    costs = sweep_costs(gray_r, depth_r, K_r, w2c_r, others, lfs, cfg.patch)
    filled = np.where(np.isfinite(costs), costs, np.inf)
    best = np.argmin(filled, axis=0)
    c0 = np.take_along_axis(filled, best[None], 0)[0]
    inner = (best > 0) & (best < len(lfs) - 1)
    matched = valid & np.isfinite(c0) & (c0 < cfg.max_cost) & textured(gray_r, cfg.patch, cfg.min_texture) & inner
    share = float(matched.sum()) / float(valid.sum())
    if share < max(cfg.min_matched, 1e-12):
        return depth_r, ViewCorrection(share, 1.0, False)
    # sub-step: the parabola through the best cost and its two neighbours on the log-factor grid
    lo = np.take_along_axis(filled, np.clip(best - 1, 0, len(lfs) - 1)[None], 0)[0]
    hi = np.take_along_axis(filled, np.clip(best + 1, 0, len(lfs) - 1)[None], 0)[0]
    offset = np.where(matched, parabola_offset(lo, c0, hi, min_curve=1e-9), 0.0)
    step = float(lfs[1] - lfs[0])
    log_factor = (lfs[best] + np.clip(offset, -0.5, 0.5) * step).astype(np.float32)
    weight = matched.astype(np.float32)
    support = box_filter(weight, cfg.smooth)
    local = box_filter(np.where(matched, log_factor, 0.0).astype(np.float32), cfg.smooth) / np.maximum(support, 1e-6)
    median = float(np.median(log_factor[matched]))
    field = np.where(support >= cfg.min_support, local, median)
    out = np.where(valid, depth_r * np.exp(field), np.nan).astype(depth_r.dtype)
    return out, ViewCorrection(share, float(np.exp(median)), True)


class MultiViewDepthRefiner:
    """Refines the depth of every view of a window whose cameras agree with its depth's units (module docstring).
    ``counts``: views corrected / left (too few matched, no neighbour), windows refined / passed through."""

    def __init__(self, config: MultiViewDepthConfig | None = None):
        self.cfg = config or MultiViewDepthConfig()
        self.counts: Counter[str] = Counter()
        self.last: list[ViewCorrection] = []  # the last refined window's views
        self._lock = threading.Lock()

    def refine(self, frames: list[Frame], pred: WindowPrediction, views: list[int] | None = None,
               step_ns: int = 0) -> WindowPrediction:
        """``pred`` with the depth of ``views`` (default: all) corrected against their neighbours (module
        docstring; ``step_ns``: a rig's time-step tolerance, 0 for one camera). Returned unchanged when no view has
        a neighbour."""
        cameras = [f.camera for f in frames]
        neighbours = {r: ([] if pred.pose_conditioned else neighbour_views(cameras, r, self.cfg.neighbours))
                      + step_views(frames, r, step_ns) for r in (range(len(frames)) if views is None else views)}
        if not any(neighbours.values()):
            self.counts["windows_unchanged"] += 1
            return pred
        t0 = time.perf_counter()
        depth = np.array(pred.depth, copy=True)
        grays = [gray_at(f.rgb, pred.depth[k].shape) for k, f in enumerate(frames)]
        done: list[ViewCorrection] = []
        with self._lock:
            for r, near in neighbours.items():
                d = pred.depth[r] if pred.sky is None else np.where(pred.sky[r], np.nan, pred.depth[r])
                others = [(grays[n], pred.K[n], pred.w2c[n]) for n in near]
                refined, correction = refine_view_depth(grays[r], d.astype(np.float32), pred.K[r], pred.w2c[r], others,
                                                        self.cfg)
                if correction.applied:
                    depth[r] = np.where(np.isfinite(refined), refined, pred.depth[r])
                self.counts["views_corrected" if correction.applied else "views_left"] += 1
                done.append(correction)
            self.last = done
            self.counts["windows_refined"] += 1
        timings = dict(pred.timings)
        timings["depth_refine_s"] = time.perf_counter() - t0
        return replace(pred, depth=depth, timings=timings)
