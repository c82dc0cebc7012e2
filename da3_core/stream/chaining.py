"""Chain per-window predictions into one map frame.

Map frame: the camera of the very first frame (OpenCV optical axes, z forward) is the map origin; map units are
the first window's units (metres for metric models). REP-103/105: ``map`` here is simply a fixed world frame;
nothing assumes z-up. With ``origin="first_pose"`` and a known pose on the first frame (``Frame.pose_w2c``, e.g.
odom -> camera from TF) the map instead coincides with that pose's frame at the start: the first camera's map pose is
its known pose (on a robot: map = odom at the first frame, z up as odom is, so map -> odom starts at identity).

Each later window is aligned by a Sim(3) ``X_map = s R X_win + t`` (SE(3), ``s = 1``, for metric predictions)
fitted with confidence-weighted Umeyama on 3-D correspondences: the same pixels of the frames shared with the
previous window, unprojected once with the previous window's (already map-frame) depth/pose and once with the new
window's. Correspondences are subsampled on a regular pixel grid, filtered for validity (finite positive depth,
not sky, confidence threshold) and optionally re-weighted robustly (Huber IRLS) or RANSAC'ed.

Fallbacks: too few valid correspondences but a shared frame -> align that frame's pose (scale from the ratio of
its median depths) ``method="pose"``; no shared frame at all -> the window cannot be chained (``chained=False``,
``method="none"``): its first camera is parked on the last known map pose at the last scale, only as a guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.geometry.sim3 import ransac_umeyama_sim3, umeyama_sim3
from da3_core.stream.frame import Frame
from da3_core.stream.predictor import WindowPrediction, sim3_matrix

__all__ = ["ChainedFrame", "ChainResult", "WindowChainer", "unproject_pixels"]


@dataclass
class ChainedFrame:
    """One frame of a chained window, everything in map units / the map frame.

    ``depth`` (H, W) float32 (NaN invalid), ``conf`` (H, W) float32, ``sky`` (H, W) bool or None, ``K`` (3, 3)
    float64, ``c2w`` / ``w2c`` (4, 4) float64 rigid poses in the map frame, ``is_new``: False for frames already
    delivered by the previous window (the overlap).
    """

    stamp_ns: int
    index: int
    frame_id: str
    depth: np.ndarray
    conf: np.ndarray
    sky: np.ndarray | None
    K: np.ndarray
    c2w: np.ndarray
    is_new: bool = True
    camera: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return int(self.stamp_ns), int(self.camera)

    @property
    def w2c(self) -> np.ndarray:
        return invert_rigid(self.c2w)


@dataclass
class ChainResult:
    """Result of :meth:`WindowChainer.add`.

    ``transform`` (4, 4) maps window points to map points (``s R X + t``); ``scale`` = s; ``residual`` weighted RMS
    3-D distance of the used correspondences after alignment (map units), ``residual_rel`` the same divided by their
    median distance to the camera; ``method`` in {"first", "points", "pose", "poses", "none"} ("poses": both
    windows were conditioned on given poses of one source frame, so the previous transform is reused).
    """

    frames: list[ChainedFrame]
    transform: np.ndarray
    scale: float
    residual: float = 0.0
    residual_rel: float = 0.0
    n_correspondences: int = 0
    method: str = "first"
    chained: bool = True
    is_metric: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def unproject_pixels(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, rows: np.ndarray, cols: np.ndarray
                     ) -> np.ndarray:
    """World points (N, 3) float64 of pixels (rows, cols) (integer pixel coordinates, ``depth_to_points``
    convention): ``c2w @ (d K^-1 [u, v, 1])``."""
    return unproject_pixels_as(np.float64, depth, K, c2w, rows, cols)


def unproject_pixels_as(dtype, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, rows: np.ndarray,
                        cols: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """:func:`unproject_pixels` computed in ``dtype`` (float32 for display clouds: about twice as fast);
    ``values``: the depths at (rows, cols) when the caller already has them (``depth`` is then not read)."""
    d = (depth[rows, cols] if values is None else values).astype(dtype)
    fx, fy, cx, cy, skew = (dtype(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]))
    y = (rows.astype(dtype) - cy) / fy
    x = (cols.astype(dtype) - cx - skew * y) / fx
    cam = np.stack([x * d, y * d, d], axis=1)
    return cam @ c2w[:3, :3].T.astype(dtype) + c2w[:3, 3].astype(dtype)


class WindowChainer:
    """Stateful aligner of successive window predictions (keeps only the previous window's frames).

    Args:
        mode: "auto" (Sim(3) for relative predictions, SE(3) for metric), "sim3" or "se3".
        max_correspondences: pixel samples per window alignment (spread over the shared frames).
        min_correspondences: fewer valid ones -> pose fallback.
        conf_percentile: drop correspondences whose confidence (min of both windows) is below this percentile of
            the valid ones (None keeps all); the remaining confidences are the Umeyama weights.
        robust: None, "irls" (Huber re-weighting, ``irls_iters`` passes) or "ransac".
    """

    def __init__(self, mode: str = "auto", max_correspondences: int = 20000, min_correspondences: int = 30,
                 conf_percentile: float | None = 20.0, robust: str | None = "irls", irls_iters: int = 3,
                 huber_k: float = 2.0, seed: int = 0, origin: str = "first_camera"):
        if origin not in ("first_camera", "first_pose"):
            raise ValueError(f"origin must be 'first_camera' or 'first_pose', got {origin!r}")
        self.origin = origin
        if mode not in ("auto", "sim3", "se3"):
            raise ValueError(f"mode must be auto, sim3 or se3, got {mode!r}")
        if robust not in (None, "irls", "ransac"):
            raise ValueError(f"robust must be None, 'irls' or 'ransac', got {robust!r}")
        self.mode, self.robust = mode, robust
        self.max_correspondences, self.min_correspondences = int(max_correspondences), int(min_correspondences)
        self.conf_percentile = conf_percentile
        self.irls_iters, self.huber_k, self.seed = int(irls_iters), float(huber_k), int(seed)
        self.reset()

    def reset(self) -> None:
        self._prev: dict[tuple[int, int], ChainedFrame] = {}  # previous window's frames by (stamp, camera)
        self._last: ChainedFrame | None = None
        self._last_scale = 1.0
        self._prev_transform: np.ndarray | None = None  # window -> map of the previous window
        self._prev_conditioned = False
        self.n_windows = 0
        self.is_metric: bool | None = None

    @property
    def initialized(self) -> bool:
        return self.n_windows > 0

    def _with_scale(self, is_metric: bool) -> bool:
        return self.mode == "sim3" or (self.mode == "auto" and not is_metric)

    def add(self, frames: list[Frame], pred: WindowPrediction, n_overlap: int | None = None) -> ChainResult:
        """Align one window (``frames`` with their prediction) to the map. ``n_overlap`` is informational: shared
        frames are found by stamp among the previous window's frames."""
        t0 = time.perf_counter()
        S = len(frames)
        if pred.depth.shape[0] != S or pred.w2c.shape[0] != S:
            raise ValueError(f"prediction has {pred.depth.shape[0]} views for {S} frames")
        c2w_win = np.stack([invert_rigid(E) for E in pred.w2c])
        shared = [i for i, f in enumerate(frames) if f.key in self._prev]
        if not self.initialized:
            T = invert_rigid(c2w_win[0])  # map := first camera
            if self.origin == "first_pose" and frames[0].pose_w2c is not None:  # map := the known pose's frame
                T = invert_rigid(frames[0].pose_w2c) @ T
            s, R, t = 1.0, T[:3, :3], T[:3, 3]
            res = ChainResult(frames=[], transform=sim3_matrix(s, R, t), scale=s, method="first")
            self.is_metric = bool(pred.is_metric)
        elif pred.pose_conditioned and self._prev_conditioned and self._prev_transform is not None:
            # both windows carry the given poses of one source frame (e.g. odom): the same transform maps them
            T = self._prev_transform
            s = float(np.cbrt(np.linalg.det(T[:3, :3])))
            res = ChainResult(frames=[], transform=T.copy(), scale=s, method="poses")
            R, t = T[:3, :3] / s, T[:3, 3]
        else:
            res = self._align(frames, pred, c2w_win, shared)
            s, R, t = res.scale, res.transform[:3, :3] / res.scale, res.transform[:3, 3]
        res.is_metric = bool(pred.is_metric)
        out = []
        for i, f in enumerate(frames):
            c2w = np.eye(4)
            c2w[:3, :3] = R @ c2w_win[i, :3, :3]
            c2w[:3, 3] = s * (R @ c2w_win[i, :3, 3]) + t
            depth = pred.depth[i] if s == 1.0 else np.multiply(pred.depth[i], np.float32(s), dtype=np.float32)
            sky = None if pred.sky is None else pred.sky[i]
            out.append(ChainedFrame(stamp_ns=int(f.stamp_ns), index=f.index, frame_id=f.frame_id, depth=depth,
                                    conf=pred.conf[i], sky=sky, K=np.asarray(pred.K[i], dtype=np.float64), c2w=c2w,
                                    is_new=f.key not in self._prev, camera=int(f.camera)))
        res.frames = out
        self._prev_transform = res.transform if res.chained else None
        self._prev_conditioned = bool(pred.pose_conditioned)
        self._prev = {cf.key: cf for cf in out}
        self._last = out[-1]
        self._last_scale = s if res.chained else self._last_scale
        self.n_windows += 1
        res.timings["chain_s"] = time.perf_counter() - t0
        return res

    # --- alignment ------------------------------------------------------------------------------------------------

    def _sample_grid(self, H: int, W: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, flat index) of the correspondence pixels (every ``step``-th, from step // 2), cached per
        shape."""
        cache = self.__dict__.setdefault("_grids", {})
        grid = cache.get((H, W, step))
        if grid is None:
            rr, cc = np.meshgrid(np.arange(step // 2, H, step), np.arange(step // 2, W, step), indexing="ij")
            rr, cc = rr.ravel(), cc.ravel()
            grid = cache[(H, W, step)] = (rr, cc, rr * W + cc)
        return grid

    def _correspondences(self, frames, pred, c2w_win, shared):
        """(src (N,3) window frame, dst (N,3) map frame, weights (N,), range (N,)) over the shared frames."""
        H, W = pred.depth.shape[1:]
        per_frame = max(1, self.max_correspondences // max(1, len(shared)))
        step = max(1, int(np.floor(np.sqrt(H * W / per_frame))))
        rr, cc, flat = self._sample_grid(H, W, step)

        def at(image: np.ndarray) -> np.ndarray:  # the grid's pixels (a flat take: faster than 2-D indexing)
            return np.ravel(image).take(flat)

        src, dst, wts, rng = [], [], [], []
        for i in shared:
            prev = self._prev[frames[i].key]
            if prev.depth.shape != (H, W):
                continue
            d_new, d_old = at(pred.depth[i]), at(prev.depth)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(d_new) & np.isfinite(d_old) & (d_new > 0) & (d_old > 0)
            if pred.sky is not None:
                ok &= ~at(pred.sky[i])
            if prev.sky is not None:
                ok &= ~at(prev.sky)
            c = np.minimum(at(pred.conf[i]), at(prev.conf)).astype(np.float64)
            ok &= np.isfinite(c) & (c > 0)
            r, k = rr[ok], cc[ok]
            d_old = d_old[ok]
            src.append(unproject_pixels_as(np.float64, pred.depth[i], pred.K[i], c2w_win[i], r, k, d_new[ok]))
            dst.append(unproject_pixels_as(np.float64, prev.depth, prev.K, prev.c2w, r, k, d_old))
            wts.append(c[ok])
            rng.append(d_old.astype(np.float64))
        if not src:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0)
        src, dst, wts, rng = np.concatenate(src), np.concatenate(dst), np.concatenate(wts), np.concatenate(rng)
        if self.conf_percentile is not None and len(wts):
            keep = wts >= np.percentile(wts, self.conf_percentile)
            src, dst, wts, rng = src[keep], dst[keep], wts[keep], rng[keep]
        return src, dst, wts, rng

    def _fit(self, src, dst, w, with_scale):
        if self.robust == "ransac":
            if not with_scale:  # ransac_umeyama_sim3 always fits a scale; use its inliers for the rigid refit
                _, _, _, inl = ransac_umeyama_sim3(src, dst, seed=self.seed)
                if inl is not None and inl.sum() >= 3:  # weights stay one per correspondence (0 = outlier)
                    return umeyama_sim3(src[inl], dst[inl], w[inl], with_scale=False), np.where(inl, w, 0.0)
                return umeyama_sim3(src, dst, w, with_scale=False), w
            s, R, t, inl = ransac_umeyama_sim3(src, dst, seed=self.seed)
            if inl is not None and inl.sum() >= 3:
                return umeyama_sim3(src[inl], dst[inl], w[inl]), np.where(inl, w, 0.0)
            return (s, R, t), w
        s, R, t = umeyama_sim3(src, dst, w, with_scale=with_scale)
        if self.robust == "irls":
            w_eff = w
            for _ in range(self.irls_iters):
                r = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
                sigma = 1.4826 * float(np.median(r))
                if sigma <= 1e-12 * max(1.0, float(np.median(np.abs(dst)))):
                    break
                huber = np.minimum(1.0, self.huber_k * sigma / np.maximum(r, 1e-300))
                w_eff = w * huber
                s, R, t = umeyama_sim3(src, dst, w_eff, with_scale=with_scale)
            return (s, R, t), w_eff
        return (s, R, t), w

    def _align(self, frames, pred, c2w_win, shared) -> ChainResult:
        with_scale = self._with_scale(bool(pred.is_metric))
        src, dst, w, rng = self._correspondences(frames, pred, c2w_win, shared)
        if len(src) >= max(3, self.min_correspondences):
            try:
                (s, R, t), w_used = self._fit(src, dst, w, with_scale)
            except ValueError:  # degenerate (e.g. all points on one line)
                pass
            else:
                r = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
                wn = w_used / max(float(w_used.sum()), 1e-300)
                rms = float(np.sqrt(wn @ (r * r)))
                return ChainResult(frames=[], transform=sim3_matrix(s, R, t), scale=float(s), residual=rms,
                                   residual_rel=rms / max(float(np.median(rng)), 1e-12),
                                   n_correspondences=len(src), method="points")
        if shared:  # pose of one shared frame: c2w_map = T c2w_win
            i = shared[len(shared) // 2]
            prev = self._prev[frames[i].key]
            s = 1.0
            if with_scale:
                with np.errstate(invalid="ignore"):
                    a, b = np.nanmedian(prev.depth), np.nanmedian(pred.depth[i])
                s = float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 and a > 0 else self._last_scale
            R = prev.c2w[:3, :3] @ c2w_win[i, :3, :3].T
            t = prev.c2w[:3, 3] - s * R @ c2w_win[i, :3, 3]
            return ChainResult(frames=[], transform=sim3_matrix(s, R, t), scale=s, n_correspondences=len(src),
                               method="pose")
        # nothing shared: park the window's first camera on the last known pose (a guess, flagged unchained)
        s = self._last_scale
        R = self._last.c2w[:3, :3] @ c2w_win[0, :3, :3].T
        t = self._last.c2w[:3, 3] - s * R @ c2w_win[0, :3, 3]
        return ChainResult(frames=[], transform=sim3_matrix(s, R, t), scale=s, method="none", chained=False)
