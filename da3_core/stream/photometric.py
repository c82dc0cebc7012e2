"""Photometric refinement of a window: each view's pose and depth scale from direct image alignment on the
network's own depth (Open3D's RGB-D odometry). No ROS.

Why. A network whose views do not share one depth scale (the embedded default: per view its depth is good, but
each view's scale is no better than a constant guess, and its relative cameras are several degrees off on a robot's
small motions) makes the chained map grow or shrink window after window, because every window takes its scale from
the frames it shares with the last. The images themselves say how far the camera moved in the units of a view's
depth: warping view a into view b with a's depth fits the motion (as direct visual odometry does), and a's points
seen from b give b's depth its scale. That is classical geometry on the network's per-view depth, which is what the
network does well.

What, for the consecutive frames (a, b) of one camera in a window, in time order:
1. ``T_ab`` (a's camera to b's) by Open3D's colour-term RGB-D odometry (the photometric error of b's image at a's
   points moved by T, coarse to fine) from three starts: the motion prior (the camera's last pair's motion: a robot
   moves smoothly), no motion, and the network's own relative pose (the given one in a pose-conditioned window). Each
   result must stay within ``max_rotation_deg`` of the prior (of the given motion when there is one) and keep
   ``min_overlap`` of a's points in b's image; of those the one with the lowest photometric error wins. None
   passing: the prior is used (``coasted``).
2. b's depth scale: the median of (a's points' depth in b) / (b's predicted depth there).
A pair is aligned once: the frames a window shares with the previous one reuse that pair's motion (stored unit-free:
translation and b's median depth over a's median depth), so neighbouring windows agree on their shared frames.

Then, by kind of window:
- relative, one camera (the network's own cameras): the window's cameras become the chain of these motions from its
  first view (kept where the network put it), and its depths are rescaled view by view, so the chainer sees a window
  whose views agree in scale;
- conditioned on metric poses (odometry through TF), one camera or a rig: the given poses stay; each camera's depths
  get their per-view scales times the metres per unit that the given motion puts on the aligned one (the median over
  the camera's pairs that moved at least ``min_baseline_m``, were aligned, and point within ``max_direction_deg`` of
  the given motion; none: the camera's last value);
- a relative rig, once the pipeline has put it in metres and on its calibrated mounts (with this refinement on, the
  scale is read from the images across the mounts, :func:`da3_core.stream.rig.image_rig_scale`):
  :meth:`PhotometricRefiner.refine_rig` chains each camera's views as for one camera (the depth is metric, so the
  motions are), and every time step's cameras are put back on the rigid rig;
- a metric network's own cameras and windows with no two views of one camera are returned unchanged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.frame import Frame
from da3_core.stream.predictor import WindowPrediction

__all__ = ["RefineConfig", "PairMotion", "PhotometricRefiner", "align_pair", "block_average", "downsampled", "gray_at",
           "repeats_a_camera", "rotation_angle_deg"]


@dataclass(frozen=True)
class RefineConfig:
    """Knobs of :class:`PhotometricRefiner`."""

    max_rotation_deg: float = 6.0  # a pair's rotation may differ from the motion prior by at most this
    min_overlap: float = 0.3  # share of a's valid points that must land inside b's image
    iterations: tuple[int, ...] = (10, 5, 3)  # iterations per pyramid level, coarsest first (Open3D: 20, 10, 5)
    max_side: int = 192  # images and depths are block-averaged by an integer factor until their long side is <= this
    grid_step: int = 2  # pixel step of the points that score a motion and measure b's scale
    cache_size: int = 256  # pairs remembered (a window's shared frames reuse their pair's motion)
    min_baseline_m: float = 0.05  # pose-conditioned windows: pairs whose given cameras moved less set no metric scale
    max_direction_deg: float = 30.0  # ... nor pairs whose aligned motion points elsewhere than the given one

    def __post_init__(self) -> None:
        if not 0.0 < self.max_rotation_deg <= 180.0:
            raise ValueError(f"max_rotation_deg = {self.max_rotation_deg}: use a value in (0, 180]")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError(f"min_overlap = {self.min_overlap}: use a value in (0, 1]")
        if not self.iterations or any(int(n) < 1 for n in self.iterations):
            raise ValueError(f"iterations = {self.iterations}: one positive count per pyramid level")
        if self.grid_step < 1 or self.cache_size < 1 or self.max_side < 16:
            raise ValueError("grid_step and cache_size must be >= 1, max_side >= 16")


@dataclass(frozen=True)
class PairMotion:
    """One aligned pair, unit-free: ``R`` (3, 3) and ``t_rel`` (3,) of T(b <- a) with the translation over the median
    depth of a; ``scale_rel`` = b's rescaled median depth over a's; ``residual`` the mean absolute photometric error
    (grey levels in [0, 1]) of the motion; ``source``: velocity | identity | network | given | coasted."""

    R: np.ndarray
    t_rel: np.ndarray
    scale_rel: float
    residual: float
    source: str

    def transform(self, median_a: float) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t_rel * median_a
        return T


def repeats_a_camera(frames: list[Frame]) -> bool:
    """Whether some camera has at least two views among ``frames`` (a pair to align, a neighbour to sweep)."""
    cameras = [f.camera for f in frames]
    return len(cameras) > len(set(cameras))


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def gray_at(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 grey levels in [0, 1] of an RGB uint8 image, area-resized to ``shape`` (the depth's)."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if gray.shape != tuple(shape):
        gray = cv2.resize(gray, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return gray.astype(np.float32) / 255.0


def block_average(image: np.ndarray, step: int) -> np.ndarray:
    """Mean of each ``step`` x ``step`` block (the trailing rows / columns that fill no block are dropped); NaN where
    a block holds a NaN. Its pixel (v, u) is centred on the input's (step v + (step - 1) / 2, step u + ...)."""
    if step == 1:
        return image
    H, W = image.shape[0] // step * step, image.shape[1] // step * step
    blocks = image[:H, :W].reshape(H // step, step, W // step, step)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(image.dtype)


def downsampled(gray: np.ndarray, depth: np.ndarray, K: np.ndarray, max_side: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gray, depth, K) block-averaged by the smallest integer factor that brings the long side to <= ``max_side``
    (alignment cost grows with the pixels; the motion does not depend on them), K moved to the blocks' centres."""
    step = -(-max(depth.shape) // max_side)
    if step == 1:
        return gray, depth, K
    Ks = np.array(K, dtype=np.float64, copy=True)
    Ks[:2, :2] /= step
    Ks[:2, 2] = (Ks[:2, 2] - (step - 1) / 2.0) / step
    return block_average(gray, step), block_average(depth, step), Ks


class _Points:
    """a's valid pixels on a grid, unprojected with a's depth (camera a's frame)."""

    def __init__(self, depth_a: np.ndarray, K: np.ndarray, step: int):
        H, W = depth_a.shape
        ys, xs = np.mgrid[0:H:step, 0:W:step]
        z = depth_a[ys, xs]
        ok = np.isfinite(z) & (z > 0)
        self.ys, self.xs, z = ys[ok], xs[ok], z[ok].astype(np.float64)
        self.X = np.stack([(self.xs - K[0, 2]) / K[0, 0] * z, (self.ys - K[1, 2]) / K[1, 1] * z, z])
        self.K, self.H, self.W = K, H, W

    def project(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, z_b, inside) of the points moved by T(b <- a) into b's image."""
        Xb = T[:3, :3] @ self.X + T[:3, 3:4]
        z = Xb[2]
        front = z > 1e-9
        zs = np.where(front, z, 1.0)
        u = self.K[0, 0] * Xb[0] / zs + self.K[0, 2]
        v = self.K[1, 1] * Xb[1] / zs + self.K[1, 2]
        inside = front & (u >= 0) & (u <= self.W - 1) & (v >= 0) & (v <= self.H - 1)
        return u, v, z, inside


def _photometric_error(points: _Points, gray_a: np.ndarray, gray_b: np.ndarray, T: np.ndarray,
                       min_overlap: float) -> float:
    """Mean |b(warped) - a| over a's points that land in b; inf when fewer than ``min_overlap`` of them do."""
    u, v, _, inside = points.project(T)
    if inside.sum() < max(16, min_overlap * len(u)):
        return float("inf")
    sampled = _bilinear(gray_b, u[inside], v[inside])
    return float(np.mean(np.abs(sampled - gray_a[points.ys[inside], points.xs[inside]])))


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``image`` at the points (u, v), 0 <= u <= W - 1 and 0 <= v <= H - 1, interpolated bilinearly."""
    H, W = image.shape
    u0 = np.minimum(np.floor(u).astype(np.int64), W - 2)
    v0 = np.minimum(np.floor(v).astype(np.int64), H - 2)
    fu, fv = u - u0, v - v0
    top = image[v0, u0] * (1 - fu) + image[v0, u0 + 1] * fu
    bottom = image[v0 + 1, u0] * (1 - fu) + image[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def _depth_scale(points: _Points, depth_a: np.ndarray, depth_b: np.ndarray, T: np.ndarray) -> float:
    """The factor that puts b's depth in a's units: median of (a's points' depth in b) / (b's depth there); where
    too little of a (``points``, from ``depth_a``) lands on b's depth, the ratio of the two depths' medians."""
    u, v, z, inside = points.project(T)
    if inside.any():
        ui, vi = np.rint(u[inside]).astype(np.int64), np.rint(v[inside]).astype(np.int64)
        db = depth_b[vi, ui]
        ok = np.isfinite(db) & (db > 0)
        if ok.sum() >= 16:
            s = float(np.median(z[inside][ok] / db[ok]))
            if np.isfinite(s) and s > 0:
                return s
    return float(np.nanmedian(depth_a) / np.nanmedian(depth_b))


def _rgbd(gray: np.ndarray, depth: np.ndarray):
    import open3d as o3d

    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(np.ascontiguousarray(gray, dtype=np.float32)), o3d.geometry.Image(d), depth_scale=1.0,
        depth_trunc=float(np.finfo(np.float32).max), convert_rgb_to_intensity=False)


def align_pair(gray_a: np.ndarray, depth_a: np.ndarray, gray_b: np.ndarray, depth_b: np.ndarray, K: np.ndarray,
               starts: dict[str, np.ndarray], prior: np.ndarray, cfg: RefineConfig | None = None
               ) -> tuple[np.ndarray, float, float, str]:
    """Align view b to view a: (T(b <- a) in a's depth units, the factor for b's depth, photometric error, source).

    ``gray_*`` (H, W) float32 in [0, 1], ``depth_*`` (H, W) (NaN / <= 0 invalid; b's in any units), ``K`` the
    intrinsics of both at this size, ``starts`` named initial T(b <- a), ``prior`` the motion the result may not
    rotate away from by more than ``cfg.max_rotation_deg`` (default :class:`RefineConfig`). Raises ValueError on
    mismatched shapes."""
    import open3d as o3d

    cfg = cfg or RefineConfig()
    if not (gray_a.shape == depth_a.shape == gray_b.shape == depth_b.shape):
        raise ValueError(f"align_pair: images and depths must share one shape, got {gray_a.shape}, {depth_a.shape}, "
                         f"{gray_b.shape}, {depth_b.shape}")
    H, W = depth_a.shape
    points = _Points(depth_a, K, cfg.grid_step)
    intrinsic = o3d.camera.PinholeCameraIntrinsic(W, H, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    option = o3d.pipelines.odometry.OdometryOption(
        iteration_number_per_pyramid_level=o3d.utility.IntVector([int(n) for n in cfg.iterations]),
        depth_diff_max=float(np.finfo(np.float32).max), depth_min=1e-9, depth_max=float(np.finfo(np.float32).max))
    # the colour term uses b's depth only to say where b has a surface, so its units do not matter
    source, target = _rgbd(gray_a, depth_a), _rgbd(gray_b, depth_b)
    jacobian = o3d.pipelines.odometry.RGBDOdometryJacobianFromColorTerm()
    best: tuple[float, np.ndarray, str] | None = None
    for name, T0 in starts.items():
        ok, T, _ = o3d.pipelines.odometry.compute_rgbd_odometry(source, target, intrinsic, np.asarray(T0, float),
                                                                jacobian, option)
        if not ok or not np.all(np.isfinite(T)):
            continue
        if rotation_angle_deg(T[:3, :3] @ prior[:3, :3].T) > cfg.max_rotation_deg:
            continue
        err = _photometric_error(points, gray_a, gray_b, T, cfg.min_overlap)
        if np.isfinite(err) and (best is None or err < best[0]):
            best = (err, np.asarray(T, float), name)
    if best is None:
        T, name = np.asarray(prior, float), "coasted"
        err = _photometric_error(points, gray_a, gray_b, T, cfg.min_overlap)
    else:
        err, T, name = best
    return T, _depth_scale(points, depth_a, depth_b, T), err, name


class PhotometricRefiner:
    """Refines one-camera relative windows (module docstring); keeps the motion prior and the aligned pairs between
    windows. ``counts``: pairs aligned per source, pairs reused, windows refined / passed through."""

    def __init__(self, config: RefineConfig | None = None):
        self.cfg = config or RefineConfig()
        self.counts: Counter[str] = Counter()
        self._pairs: OrderedDict[tuple, PairMotion] = OrderedDict()
        self._prior: dict[int, PairMotion] = {}  # camera -> its last pair's motion (the motion prior)
        self._metres_per_unit: dict[int, float] = {}  # camera -> metres per depth unit (pose-conditioned windows)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._pairs.clear()
            self._prior.clear()
            self._metres_per_unit.clear()

    @staticmethod
    def applies_to(frames: list[Frame], pred: WindowPrediction) -> bool:
        """At least two views of one camera, and either relative with one camera (the network's own cameras) or
        conditioned on metric poses, any number of cameras (the given cameras set the scale, camera by camera); not a
        metric network's own cameras, nor a relative rig (its mounts set its scale: :meth:`refine_rig`)."""
        if not repeats_a_camera(frames):
            return False
        if pred.pose_conditioned:
            return pred.is_metric
        return not pred.is_metric and len({(f.camera, f.frame_id) for f in frames}) == 1

    def refine(self, frames: list[Frame], pred: WindowPrediction) -> WindowPrediction:
        """``pred`` with its cameras (relative windows) and per-view depth scales (all) from the images; unchanged
        where it does not apply."""
        if not self.applies_to(frames, pred):
            self.counts["windows_unchanged"] += 1
            return pred
        return self._refined(frames, pred, "windows_scaled_by_poses" if pred.pose_conditioned else "windows_refined")

    def refine_rig(self, frames: list[Frame], pred: WindowPrediction, tolerance_ns: int) -> WindowPrediction:
        """A relative rig window already in metres and on the rig (:func:`~da3_core.stream.rig.align_to_rig`): each
        camera's consecutive views aligned as in a one-camera window (motions in the metric depth's units, per-view
        depth scales relative to the camera's first view), then every time step's cameras put back on the rigid
        rig (the mean of what its cameras' chains say, :func:`~da3_core.stream.rig.place_on_rig`). Unchanged when
        no camera has two views, when a view has no depth, or when the alignment fails (counted)."""
        from da3_core.stream.rig import place_on_rig

        if not repeats_a_camera(frames):
            self.counts["windows_unchanged"] += 1
            return pred
        return self._refined(frames, pred, "rig_windows_refined",
                             lambda w2c: invert_rigid(place_on_rig(frames, invert_rigid(w2c), tolerance_ns)))

    def _refined(self, frames: list[Frame], pred: WindowPrediction, outcome: str,
                 finish: Callable[[np.ndarray], np.ndarray] | None = None) -> WindowPrediction:
        """:meth:`_refine` on a window it applies to, counted as ``outcome``; ``finish`` maps the refined w2c (a rig:
        back onto its mounts). Unchanged (counted) when a view has no depth or the alignment fails."""
        t0 = time.perf_counter()
        views = self._views(frames, pred)
        if not all(np.any(np.isfinite(d) & (d > 0)) for _, d, _ in views):
            self.counts["windows_without_depth"] += 1  # a view with no valid depth has no scale to carry
            return pred
        with self._lock:
            try:
                depth, w2c = self._refine(frames, pred, views)
            except (RuntimeError, ValueError, np.linalg.LinAlgError):  # the window goes on as the network gave it
                self.counts["windows_refine_failed"] += 1
                return pred
        if finish is not None:
            w2c = finish(w2c)
        self.counts[outcome] += 1
        timings = dict(pred.timings)
        timings["refine_s"] = time.perf_counter() - t0
        return replace(pred, depth=depth, w2c=w2c, timings=timings)

    def _views(self, frames: list[Frame], pred: WindowPrediction) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(grey, depth without sky, K) of every view at the working resolution (``max_side``)."""
        views = []
        for k, f in enumerate(frames):
            depth = pred.depth[k] if pred.sky is None else np.where(pred.sky[k], np.nan, pred.depth[k])
            views.append(downsampled(gray_at(f.rgb, depth.shape), depth.astype(np.float32), pred.K[k],
                                     self.cfg.max_side))
        return views

    def _refine(self, frames: list[Frame], pred: WindowPrediction, views: list) -> tuple[np.ndarray, np.ndarray]:
        """(depth, w2c) of the window. Each camera's views, in window order (time order), form a chain of pairs.
        Relative windows get the aligned cameras and per-view scales; windows conditioned on metric poses keep their
        poses, and each camera's depth gets its per-view scales times the metric scale that the given motion puts
        on the aligned one (:meth:`_metric_scale`)."""
        scales = np.ones(len(frames))
        given = pred.w2c if pred.pose_conditioned else None
        w2c = np.array(pred.w2c, dtype=np.float64, copy=True)
        for camera in dict.fromkeys(f.camera for f in frames):
            chain = [k for k, f in enumerate(frames) if f.camera == camera]
            pairs = []  # (aligned T(b <- a) in the chain's first view's units, the given one in metres, motion)
            for a, b in zip(chain[:-1], chain[1:]):
                depth_a = views[a][1] * scales[a]
                median_a = float(np.nanmedian(depth_a))
                motion = self._pair(frames, views, pred, a, b, scales[a], median_a, given)
                scales[b] = motion.scale_rel * median_a / float(np.nanmedian(views[b][1]))
                if given is None:
                    w2c[b] = motion.transform(median_a) @ w2c[a]
                else:
                    pairs.append((motion.transform(median_a), given[b] @ invert_rigid(given[a]), motion))
            if given is not None:
                scales[chain] *= self._metric_scale(camera, pairs)
        return (pred.depth * scales[:, None, None]).astype(pred.depth.dtype, copy=False), w2c

    def _pair(self, frames, views, pred, a, b, scale_a, median_a, given) -> PairMotion:
        """The pair's motion: remembered (the frames a window shares with the last), else aligned."""
        key = (frames[a].camera, int(frames[a].stamp_ns), int(frames[b].stamp_ns))
        motion = self._pairs.get(key)
        if motion is not None:
            self.counts["pairs_reused"] += 1
            self._pairs.move_to_end(key)
        else:
            motion = self._align(views[a], views[a][1] * scale_a, views[b], pred, a, b, scale_a, median_a, given,
                                 self._prior.get(frames[a].camera))
            self._pairs[key] = motion
            while len(self._pairs) > self.cfg.cache_size:
                self._pairs.popitem(last=False)
            self.counts[f"pairs_{motion.source}"] += 1
        self._prior[frames[a].camera] = motion
        return motion

    def _metric_scale(self, camera: int, pairs: list[tuple[np.ndarray, np.ndarray, PairMotion]]) -> float:
        """Metres per unit of a camera's rescaled depth: the median over its pairs of |given translation| /
        |aligned translation|, counting pairs whose given cameras moved at least ``min_baseline_m``, that were
        aligned (not coasted) and whose two motions point within ``max_direction_deg`` of each other; none counting:
        the camera's last value (1 before any: the network's own scale)."""
        ratios = []
        for T, given, motion in pairs:
            t, g = T[:3, 3], given[:3, 3]
            nt, ng = float(np.linalg.norm(t)), float(np.linalg.norm(g))
            if motion.source == "coasted" or ng < self.cfg.min_baseline_m or nt <= 0:
                continue
            if np.degrees(np.arccos(np.clip(t @ g / (nt * ng), -1.0, 1.0))) > self.cfg.max_direction_deg:
                continue
            ratios.append(ng / nt)
        if ratios:
            self._metres_per_unit[camera] = float(np.median(ratios))
        else:
            self.counts["scale_kept"] += 1
        return self._metres_per_unit.get(camera, 1.0)

    def _align(self, view_a, depth_a, view_b, pred, a, b, scale_a, median_a, given, last) -> PairMotion:
        own = pred.w2c[b] @ invert_rigid(pred.w2c[a])  # the network's motion, or the given one (metres)
        own[:3, 3] *= scale_a  # in a's rescaled units (the given cameras: as if the depth were metric)
        velocity = np.eye(4) if last is None else last.transform(median_a)
        starts = {"velocity": velocity, "identity": np.eye(4), "given" if given is not None else "network": own}
        if last is None:
            starts.pop("velocity")
        prior = own if given is not None else velocity  # the rotation limit is around the given motion when known
        gray_b, depth_b, _ = view_b
        T, s, err, source = align_pair(view_a[0], depth_a, gray_b, depth_b, view_a[2], starts, prior, self.cfg)
        scale_rel = s * float(np.nanmedian(depth_b)) / median_a
        return PairMotion(R=T[:3, :3].copy(), t_rel=T[:3, 3] / median_a, scale_rel=scale_rel, residual=err,
                          source=source)
