"""Predictors: the network behind a small interface, plus a geometry oracle for tests.

``Predictor.predict(frames) -> WindowPrediction``: depth, confidence, sky, cameras of one window, in that window's
own coordinate frame (each window has its own origin and, for relative models, its own scale; chaining them into a
map frame is :mod:`da3_core.stream.chaining`'s job).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from da3_core.models.reference_view import WINDOW_REF_VIEW
from da3_core.stream.frame import Frame

__all__ = ["WindowPrediction", "Predictor", "DA3Predictor", "OraclePredictor", "random_sim3", "sim3_matrix"]


@dataclass
class WindowPrediction:
    """One window's prediction, S frames of H x W (input resolution).

    Fields:
        depth: (S, H, W) float32 z-depth in window units (metres when ``is_metric``); NaN = invalid.
        conf: (S, H, W) float32 confidence (higher is better).
        sky: (S, H, W) bool sky mask or None.
        w2c: (S, 4, 4) float64 world-to-camera (OpenCV) in the window's own frame.
        K: (S, 3, 3) float64 intrinsics in input pixels.
        is_metric: depth and translations are in metres (pose-conditioned windows: when the given poses are).
        timings: seconds per stage (e.g. ``{"predict_s": ...}``).
        pose_conditioned: ``w2c`` are the given (known) poses, in the pose source's frame (e.g. odom).
        own_w2c: (S, 4, 4) the predictor's own estimate of the cameras (in its own window frame) when ``w2c`` are the
            given poses and it has one (the oracle: the true motion), else None; ``own_is_metric``: it is in metres.
            The drift monitor compares it with the given (odometry) poses.
        descriptors: (S, D) float32 unit place descriptors pooled from the network's backbone tokens of this forward
            (``DA3Predictor(descriptors=True)``), else None.
    """

    depth: np.ndarray
    conf: np.ndarray
    sky: np.ndarray | None
    w2c: np.ndarray
    K: np.ndarray
    is_metric: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    pose_conditioned: bool = False
    own_w2c: np.ndarray | None = None
    own_is_metric: bool = False
    descriptors: np.ndarray | None = None


class Predictor(Protocol):
    def predict(self, frames: list[Frame]) -> WindowPrediction: ...


class DA3Predictor:
    """Wrap a :class:`da3_core.api.DA3` model (anything with its ``predict`` signature).

    ``ref_view="first"`` makes each window's frame the camera of its first frame (deterministic, unlike the
    content-based default). Known K is passed when *every* frame of the window has one (the API then reports it and,
    for metric models, scales with the real focal length). Models without poses (mono / metric-only) are rejected.

    Pose conditioning: when every frame also carries a known pose (``Frame.pose_w2c``, e.g. from TF odom -> camera)
    and ``use_known_poses``, the window goes to the network with ``extrinsics`` (w2c) and ``intrinsics``; the API
    returns the given poses (``align_to_input_ext_scale``) with depth in their units, so the window's frame is the
    pose source's frame (odom) and ``is_metric = pose_is_metric`` (True for TF: REP-103 metres). Windows whose given
    camera centres all lie within ``min_pose_baseline`` of their mean (pose units, default 2 cm: a standing robot,
    whose Sim(3) of predicted onto given centres is undefined) or exactly on one line (the API's Umeyama refuses
    them) run unconditioned.
    ``counts``: windows ``pose_conditioned`` / ``pose_unconditioned_<why>``.

    ``descriptors=True`` (loop closure): a forward hook on the network's backbone keeps the last tapped layer's patch
    tokens of each view (their view-local half when the backbone concatenates local and global tokens) and
    :func:`~da3_core.stream.place_recognition.pool_tokens` turns them into ``WindowPrediction.descriptors``; the
    backbone restores the input view order, so row i is frame i. Backends without a torch backbone (ONNX Runtime,
    captured graphs) give None (counted ``descriptors_unavailable``).
    """

    def __init__(self, model: Any, process_res: int = 504, ref_view: str = WINDOW_REF_VIEW, use_ray_pose: bool = False,
                 use_known_intrinsics: bool = True, use_known_poses: bool = True, pose_is_metric: bool = True,
                 min_pose_baseline: float = 0.02, descriptors: bool = False, **predict_kwargs: Any):
        self.model = model
        self.use_known_poses = bool(use_known_poses)
        self.pose_is_metric = bool(pose_is_metric)
        self.min_pose_baseline = float(min_pose_baseline)
        self.counts: Counter[str] = Counter()
        self.process_res = int(process_res)
        self.ref_view = ref_view
        self.use_ray_pose = bool(use_ray_pose)
        self.use_known_intrinsics = bool(use_known_intrinsics)
        self.predict_kwargs = predict_kwargs
        self._tokens: Any = None
        self._hooked = self._hook_backbone() if descriptors else False

    def _hook_backbone(self) -> bool:
        """Register the descriptor hook on the first module of class ``Backbone``; False when there is none."""
        network = getattr(self.model, "network", None)
        modules = network.named_modules() if hasattr(network, "named_modules") else []
        for _, module in modules:
            if type(module).__name__ == "Backbone":
                cfg = getattr(getattr(module, "pretrained", module), "cfg", None)  # the ViT's BackboneConfig
                local_half = bool(getattr(cfg, "cat_token", False))

                def keep(_module, _inputs, output, local_half=local_half):
                    feats = output.features[-1]
                    if local_half:
                        feats = feats[..., : feats.shape[-1] // 2]
                    self._tokens = feats[0].detach().float().cpu().numpy()

                module.register_forward_hook(keep)
                return True
        return False

    def predict(self, frames: list[Frame]) -> WindowPrediction:
        t0 = time.perf_counter()
        known = self.use_known_intrinsics and all(f.K is not None for f in frames)
        K_in = np.stack([f.K for f in frames]).astype(np.float64) if known else None
        kwargs = dict(self.predict_kwargs)
        w2c_in = self._known_poses(frames, known)
        if w2c_in is not None:  # pose-conditioned: the given poses come back, depth in their units
            kwargs.update(extrinsics=w2c_in, align_to_input_ext_scale=True)
        self._tokens = None
        pred = self.model.predict([f.rgb for f in frames], intrinsics=K_in, process_res=self.process_res,
                                  ref_view=self.ref_view, use_ray_pose=self.use_ray_pose, **kwargs)
        descriptors = None
        if self._hooked:
            tokens, self._tokens = self._tokens, None
            if tokens is not None and len(tokens) == len(frames):
                from da3_core.stream.place_recognition import pool_tokens

                descriptors = pool_tokens(tokens)
            else:
                self.counts["descriptors_unavailable"] += 1
        if pred.extrinsics is None:
            raise RuntimeError("the model predicts no camera poses (mono / metric-only variant); streaming "
                               "reconstruction needs an any-view or nested model")
        K = pred.intrinsics if pred.intrinsics is not None else K_in
        if K is None:
            raise RuntimeError("the model predicts no intrinsics and the frames carry none")
        depth = np.asarray(pred.depth, dtype=np.float32)
        conf = np.ones_like(depth) if pred.conf is None else np.asarray(pred.conf, dtype=np.float32)
        sky = None if pred.sky is None else np.asarray(pred.sky, dtype=bool)
        w2c = np.asarray(pred.extrinsics, dtype=np.float64)
        if w2c.shape[-2:] == (3, 4):
            w2c = np.concatenate([w2c, np.broadcast_to([[[0.0, 0.0, 0.0, 1.0]]], (len(w2c), 1, 4))], axis=1)
        is_metric, given = bool(pred.is_metric), False
        if w2c_in is not None and getattr(pred, "depth_units", "input_extrinsics") == "input_extrinsics":
            is_metric, given = self.pose_is_metric, True  # outputs in the given poses' units and frame
        return WindowPrediction(depth=depth, conf=conf, sky=sky, w2c=w2c, K=np.asarray(K, dtype=np.float64),
                                is_metric=is_metric, timings={"predict_s": time.perf_counter() - t0},
                                pose_conditioned=given, descriptors=descriptors)

    def _known_poses(self, frames: list[Frame], known_K: bool) -> np.ndarray | None:
        """(S, 4, 4) float64 given w2c when the window can be pose-conditioned, else None (counted why not)."""
        if not self.use_known_poses:
            return None
        have = sum(f.pose_w2c is not None for f in frames)
        why = None
        if have == 0:
            why = "no_poses"
        elif have < len(frames):
            why = "missing_poses"
        elif not known_K:
            why = "no_intrinsics"
        if why is None:
            w2c = np.stack([np.asarray(f.pose_w2c, dtype=np.float64).reshape(4, 4) for f in frames])
            R, t = w2c[:, :3, :3], w2c[:, :3, 3]
            centres = -np.einsum("sji,sj->si", R, t)  # -R^T t
            spread = centres - centres.mean(axis=0)
            sv = np.linalg.svd(spread, compute_uv=False) if len(frames) > 1 else np.zeros(1)
            if not np.all(np.isfinite(w2c)):
                why = "nonfinite_poses"
            elif float(np.linalg.norm(spread, axis=1).max(initial=0.0)) < self.min_pose_baseline:
                why = "small_baseline"
            elif len(frames) >= 3 and sv[1] <= 1e-9 * max(1.0, sv[0]):
                why = "collinear_poses"
        if why is not None:
            if have:
                self.counts[f"pose_unconditioned_{why}"] += 1
            return None
        self.counts["pose_conditioned"] += 1
        return w2c


def sim3_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) float64 ``[[s R, t], [0, 1]]``: maps points ``X -> s R X + t``."""
    T = np.eye(4)
    T[:3, :3] = s * np.asarray(R, dtype=np.float64)
    T[:3, 3] = t
    return T


def random_sim3(rng: np.random.Generator, with_scale: bool = True, max_translation: float = 2.0
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """A random (s, R, t): s log-uniform in [0.2, 5] (1 without scale), R uniform (QR of a Gaussian)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.diag(r))
    if np.linalg.det(R) < 0:
        R[:, 0] = -R[:, 0]
    s = float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))) if with_scale else 1.0
    return s, R, rng.uniform(-max_translation, max_translation, size=3)


TruthFn = Callable[[Frame], tuple[np.ndarray, np.ndarray, np.ndarray]]


class OraclePredictor:
    """Ground-truth "network": ``truth(frame) -> (depth (H, W), w2c (4, 4) world, K (3, 3))``.

    - ``window_frame="first"`` re-expresses each window in its first frame's camera coordinates (like a network
      with ``ref_view="first"``); ``"world"`` keeps the truth's world frame.
    - ``random_transform=True`` then moves each window by a random, known Sim(3) ``X -> s R X + t`` (scale fixed at
      1 when ``is_metric``), recorded in ``applied`` as (4, 4) matrices; depth scales by ``s``.
    - ``conf_fn(frame, depth) -> (H, W)`` sets the confidence (default all ones); ``sky_fn`` likewise a bool mask.
    - ``use_known_poses=True``: a window whose frames all carry a known pose (``Frame.pose_w2c``) is pose-conditioned
      as the network's API does it: the given poses come back (``pose_conditioned``, metres when ``pose_is_metric``)
      with the true depth, and the truth's own poses (as above) go to ``own_w2c``.
    """

    def __init__(self, truth: TruthFn, window_frame: str = "first", random_transform: bool = False,
                 is_metric: bool = False, seed: int = 0, conf_fn: Callable | None = None,
                 sky_fn: Callable | None = None, use_known_poses: bool = False, pose_is_metric: bool = True):
        if window_frame not in ("first", "world"):
            raise ValueError(f"window_frame must be 'first' or 'world', got {window_frame!r}")
        self.truth = truth
        self.window_frame = window_frame
        self.random_transform = bool(random_transform)
        self.is_metric = bool(is_metric)
        self.rng = np.random.default_rng(seed)
        self.conf_fn, self.sky_fn = conf_fn, sky_fn
        self.use_known_poses, self.pose_is_metric = bool(use_known_poses), bool(pose_is_metric)
        self.counts: Counter[str] = Counter()
        self.applied: list[np.ndarray] = []

    def predict(self, frames: list[Frame]) -> WindowPrediction:
        t0 = time.perf_counter()
        depth, w2c, K, conf, sky = [], [], [], [], []
        for f in frames:
            d, E, k = self.truth(f)
            d = np.asarray(d, dtype=np.float32)
            depth.append(d)
            w2c.append(np.asarray(E, dtype=np.float64))
            K.append(np.asarray(k, dtype=np.float64))
            conf.append(np.ones_like(d) if self.conf_fn is None else np.asarray(self.conf_fn(f, d), np.float32))
            if self.sky_fn is not None:
                sky.append(np.asarray(self.sky_fn(f, d), dtype=bool))
        depth_a, w2c_a = np.stack(depth), np.stack(w2c)
        true_depth = depth_a
        if self.window_frame == "first":
            w2c_a = w2c_a @ np.linalg.inv(w2c_a[0])  # world := first camera: w2c_i' = w2c_i c2w_0
        T = np.eye(4)
        if self.random_transform:
            s, R, t = random_sim3(self.rng, with_scale=not self.is_metric)
            T = sim3_matrix(s, R, t)
            # X'' = s R X + t  =>  X_cam'' = s X_cam = R_i R^T (X'' - t) + s t_i
            moved = np.empty_like(w2c_a)
            moved[:, :3, :3] = w2c_a[:, :3, :3] @ R.T
            moved[:, :3, 3] = s * w2c_a[:, :3, 3] - moved[:, :3, :3] @ t
            moved[:, 3] = [0.0, 0.0, 0.0, 1.0]
            w2c_a, depth_a = moved, (depth_a * np.float32(s)).astype(np.float32)
        self.applied.append(T)
        common = dict(conf=np.stack(conf), sky=np.stack(sky) if sky else None, K=np.stack(K))
        if self.use_known_poses and all(f.pose_w2c is not None for f in frames):
            self.counts["pose_conditioned"] += 1
            given = np.stack([np.asarray(f.pose_w2c, dtype=np.float64).reshape(4, 4) for f in frames])
            return WindowPrediction(depth=true_depth, w2c=given, is_metric=self.pose_is_metric, pose_conditioned=True,
                                    own_w2c=w2c_a, own_is_metric=self.is_metric and not self.random_transform,
                                    timings={"predict_s": time.perf_counter() - t0}, **common)
        return WindowPrediction(depth=depth_a, w2c=w2c_a, is_metric=self.is_metric,
                                timings={"predict_s": time.perf_counter() - t0}, **common)
