"""Streaming reconstruction core: window -> predictor -> chainer -> voxel map + trajectory. No ROS.

Two ways to drive it, through the same :meth:`StreamPipeline.run_window`:
- synchronous ``process(frame)`` / ``flush()`` (offline replay): every window runs, in order, nothing is dropped,
  the result is deterministic for a deterministic predictor;
- asynchronous ``start(on_result)`` + ``submit(frame)`` (live node): windows go to one
  :class:`~da3_core.stream.worker.InferenceWorker`; a window that waits while the worker is busy is replaced by the
  next one (latest wins, counted). A window whose overlap frames were never processed (its predecessor was dropped)
  is *rebased*: its overlap is replaced by the tail of the last processed window, so chaining still has shared
  frames.

Per-frame outputs are in the map frame (first camera = origin, see :mod:`da3_core.stream.chaining`).
Overlap frames are delivered once, by the first window containing them (``ChainedFrame.is_new``); the trajectory
keeps that first estimate. The window cloud and the map get points of the new frames only.

TSDF map (``tsdf``, off by default here; :mod:`da3_core.stream.tsdf_stream`): every ``tsdf_every_n_frames``-th new
frame is fused, with its chained pose and its window's pose-graph correction, into a confidence-weighted TSDF volume
(:class:`~da3_core.stream.tsdf_map.TsdfMap`); a closed loop moves the fused keyframes; synchronous runs fuse at once,
the live worker hands keyframes to a background thread. ``save_outputs`` then also writes ``map_mesh.ply``.

Saved outputs (:meth:`save_outputs`): ``map.ply`` (binary little-endian, x y z float32 + rgb uint8),
``trajectory.tum`` (``timestamp tx ty tz qx qy qz qw``: c2w in the map frame, stamp in seconds), and per-frame depth
for the last ``keep_depth_frames`` frames in ``depth/<stamp_ns>.npz`` (``depth`` float32 map units, NaN invalid;
``conf``; ``K``; ``c2w``; ``stamp_ns``; ``is_metric``) or, with ``depth_format="png16"``, ``depth/<stamp_ns>.png``
16-bit millimetres (depth in map units x 1000, 0 = invalid or beyond 65.535 map units).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.chaining import ChainedFrame, ChainResult, WindowChainer
from da3_core.stream.cloud import CloudBuilder
from da3_core.stream.drift import DriftMonitor, DriftSample
from da3_core.stream.frame import Frame, FrameError, validate_frame
from da3_core.stream.loop_closure import LoopCloser, LoopConfig, apply_sim3_to_pose
from da3_core.stream.multiview_depth import MultiViewDepthConfig, MultiViewDepthRefiner
from da3_core.stream.photometric import PhotometricRefiner, RefineConfig
from da3_core.stream.predictor import Predictor, WindowPrediction
from da3_core.stream.rig import align_to_rig
from da3_core.stream.submaps import SubmapStore
from da3_core.stream.tsdf_map import TsdfConfig
from da3_core.stream.tsdf_stream import TsdfIntegrator
from da3_core.stream.voxel_map import VoxelMap
from da3_core.stream.window import SlidingWindow, Window
from da3_core.stream.worker import InferenceWorker

__all__ = ["PipelineConfig", "WindowResult", "StreamPipeline", "tum_line", "format_stamp"]


@dataclass
class PipelineConfig:
    """All knobs (the node fills this from ROS parameters, replay from its CLI)."""

    window_size: int = 8
    overlap: int = 2
    min_interval_s: float = 0.0
    min_motion: float = 0.0  # grey levels (0..255), 0 disables
    voxel_size: float | None = 0.05  # map units; None: 1 % of the first window's median depth
    map_max_points: int = 2_000_000
    cloud_conf_percentile: float | None = 30.0  # keep pixels with conf >= this percentile (None: no filter)
    cloud_conf_threshold: float | None = None  # absolute conf threshold, applied instead when set
    cloud_stride: int = 1  # pixel subsampling of the window cloud
    map_stride: int = 4  # pixel subsampling of the points added to the voxel map (a multiple of cloud_stride is used)
    cloud_max_points: int | None = 300_000
    drop_sky: bool = True
    chain_mode: str = "auto"  # auto | sim3 | se3
    chain_robust: str | None = "irls"  # None | irls | ransac
    chain_correspondences: int = 8_000  # pixel samples per alignment (20,000 cost ~0.6 ms more per frame, #13)
    chain_conf_percentile: float | None = 20.0
    insert_unchained: bool = False  # put clouds of windows that could not be chained into the map anyway
    max_pending_windows: int = 1  # live mode: 1 = latest wins; more = queue windows (bag replay without drops)
    keep_depth_frames: int = 64  # per-frame depth kept for save_outputs (0 disables)
    map_origin: str = "first_camera"  # or "first_pose": the map starts at the first frame's known pose (chaining)
    drift_min_distance_m: float = 0.05  # drift monitor: windows whose odometry moved less are not compared
    drift_reference_windows: int = 3  # drift monitor: windows that set a relative estimate's scale
    seed: int = 0
    pose_graph: bool = False  # windows become nodes of a GTSAM pose graph (da3_core.stream.loop_closure)
    loop_closure: bool = False  # place recognition + verified loop edges (needs pose_graph)
    loop: LoopConfig = field(default_factory=LoopConfig)  # loop-closure knobs (its loop_closure flag is ignored)
    submaps: bool = False  # keep map points per window, assemble the voxel map lazily (always with pose_graph)
    submap_max_points: int = 4_000_000  # stored submap points before the oldest are thinned
    tsdf: bool = False  # fuse keyframes into a TSDF volume (da3_core.stream.tsdf_stream); needs open3d
    tsdf_every_n_frames: int = 6  # every n-th new frame is a TSDF keyframe
    tsdf_queue_size: int = 4  # live mode: keyframes waiting for the TSDF thread (more are dropped, counted)
    tsdf_map: TsdfConfig = field(default_factory=lambda: TsdfConfig(voxel_size=0.05, stride=2, block_count=2000))
    pose_refine: str = "off"  # "photometric": one-camera relative windows get their cameras and per-view depth
    # scales from direct image alignment on their depth before chaining, pose-conditioned windows their metric depth
    # scale, relative rig windows their metric scale from the images across the mounts and their motion from each
    # camera's frames (da3_core.stream.photometric, da3_core.stream.rig)
    refine: RefineConfig = field(default_factory=RefineConfig)  # its knobs
    depth_refine: str = "off"  # "multiview": each view's depth corrected by a plane sweep against its neighbours in
    # the window, after pose_refine (da3_core.stream.multiview_depth)
    multiview: MultiViewDepthConfig = field(default_factory=MultiViewDepthConfig)  # its knobs


@dataclass
class WindowResult:
    """Output of one window. ``frames``: every frame of the window (``is_new`` marks those not delivered before);
    ``points`` (M, 3) float32 map frame / ``colors`` (M, 3) uint8: confidence-filtered cloud of the new frames;
    ``transform`` (4, 4) window -> map Sim(3); ``timings`` seconds (predict_s, chain_s, cloud_s, map_s, total_s,
    overhead_s = total - predict; ``*_cpu_s``: the thread's CPU time of chaining, cloud, map and all but predict)."""

    window_index: int
    frames: list[ChainedFrame]
    points: np.ndarray
    colors: np.ndarray
    scale: float
    transform: np.ndarray
    residual: float
    residual_rel: float
    n_correspondences: int
    method: str
    chained: bool
    is_metric: bool
    rebased: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    drift: DriftSample | None = None  # odometry vs DA3 over this window (frames with known poses only)
    loop_closed: bool = False  # a loop edge was accepted: every earlier pose and the map moved (republish them)
    correction: np.ndarray | None = None  # (4, 4) pose-graph correction applied to frames / points (None: no graph)
    map_only_cloud: bool = False  # ``points`` hold only the map grid's points (nobody wanted the window cloud)

    @property
    def new_frames(self) -> list[ChainedFrame]:
        return [f for f in self.frames if f.is_new]


def format_stamp(stamp_ns: int) -> str:
    """Exact decimal seconds of an integer nanosecond stamp."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def tum_line(stamp_ns: int, c2w: np.ndarray) -> str:
    from da3_core.geometry.rotations import rotation_to_quat_xyzw

    q = rotation_to_quat_xyzw(c2w[:3, :3])
    return " ".join([format_stamp(int(stamp_ns)), *(f"{v:.9f}" for v in c2w[:3, 3]), *(f"{v:.9f}" for v in q)])


class StreamPipeline:
    def __init__(self, predictor: Predictor, config: PipelineConfig | None = None, window=None):
        """``window``: the window assembler (default a :class:`SlidingWindow` from the config; a
        :class:`~da3_core.stream.rig.RigWindow` for several cameras)."""
        self.cfg = cfg = config or PipelineConfig()
        self.predictor = predictor
        self.window = window if window is not None else SlidingWindow(cfg.window_size, cfg.overlap,
                                                                      cfg.min_interval_s, cfg.min_motion)
        self.chainer = WindowChainer(mode=cfg.chain_mode, max_correspondences=cfg.chain_correspondences,
                                     conf_percentile=cfg.chain_conf_percentile, robust=cfg.chain_robust,
                                     seed=cfg.seed, origin=cfg.map_origin)
        if cfg.pose_refine not in ("off", "photometric"):
            raise ValueError(f"pose_refine = {cfg.pose_refine!r}: use 'off' or 'photometric'")
        self.refiner = PhotometricRefiner(cfg.refine) if cfg.pose_refine == "photometric" else None
        if cfg.depth_refine not in ("off", "multiview"):
            raise ValueError(f"depth_refine = {cfg.depth_refine!r}: use 'off' or 'multiview'")
        self.depth_refiner = MultiViewDepthRefiner(cfg.multiview) if cfg.depth_refine == "multiview" else None
        self.map: VoxelMap | None = None if cfg.voxel_size is None else VoxelMap(cfg.voxel_size, cfg.map_max_points)
        self.submaps: SubmapStore | None = None  # created with the map when cfg.submaps or cfg.pose_graph
        self.loops: LoopCloser | None = None  # created at the first window when cfg.pose_graph
        self.cloud = CloudBuilder(cfg.cloud_stride, cfg.map_stride, cfg.cloud_conf_percentile, cfg.cloud_conf_threshold,
                                  cfg.cloud_max_points, cfg.drop_sky, cfg.seed)
        # False: windows build only the map grid's points (a live node whose window cloud nobody subscribes to)
        self.window_cloud_wanted = True
        self.drift = DriftMonitor(cfg.drift_min_distance_m, cfg.drift_reference_windows)
        self.rig_scale: float | None = None  # metres per network unit of the last window aligned to a rig
        self.counts: Counter[str] = Counter()
        self._lock = threading.RLock()  # chainer, map, trajectory, depth history
        self._window_lock = threading.Lock()  # the sliding window (callback thread vs reset)
        self._worker: InferenceWorker | None = None
        self._on_result: Callable[[WindowResult], None] | None = None
        self._trajectory: dict[int, np.ndarray] = {}  # stamp -> chained c2w (before pose-graph corrections)
        self._traj_window: dict[int, int] = {}  # stamp -> window index (its correction)
        self._depth: deque[tuple[int, ChainedFrame]] = deque(maxlen=max(0, cfg.keep_depth_frames))
        self._tail: list[Frame] = []
        self._epoch = 0
        self._loop_predict_cpu = 0.0
        self.is_metric: bool | None = None
        self.tsdf: TsdfIntegrator | None = None
        if cfg.tsdf:
            self.tsdf = TsdfIntegrator(cfg.tsdf_map, cfg.tsdf_every_n_frames, cfg.tsdf_queue_size,
                                       correction_of=self._window_correction, corrections=self._corrections)

    # --- synchronous (offline replay) ----------------------------------------------------------------------------

    def process(self, frame: Frame) -> WindowResult | None:
        """Push one frame; runs the window it completes (if any) right away. Raises FrameError on bad input."""
        window = self._push(frame)
        return None if window is None else self.run_window(window)

    def flush(self) -> WindowResult | None:
        """End of stream: run the remaining keyframes as final windows (a rig may hold several); returns the last
        result."""
        result = None
        while True:
            with self._window_lock:
                window = self.window.flush()
            if window is None:
                return result
            result = self.run_window(window)

    # --- asynchronous (live node) ---------------------------------------------------------------------------------

    def start(self, on_result: Callable[[WindowResult], None] | None = None,
              on_error: Callable[[BaseException, Window], None] | None = None) -> None:
        """Start the inference worker; ``on_result`` runs in the worker thread for each processed window."""
        if self._worker is not None:
            raise RuntimeError("pipeline worker already started")
        self._on_result = on_result
        if self.tsdf is not None:
            self.tsdf.background = True  # keyframes are fused in the TSDF thread, off the inference worker
        self._worker = InferenceWorker(self.run_window, self._deliver, on_error,
                                       max_pending=self.cfg.max_pending_windows)

    def _deliver(self, result: WindowResult | None) -> None:
        if result is not None and self._on_result is not None:
            self._on_result(result)

    def submit(self, frame: Frame) -> bool:
        """Never blocks on inference: push the frame; a completed window goes to the worker. Returns True when a
        window was handed over. Raises FrameError on bad input."""
        if self._worker is None:
            raise RuntimeError("call start() before submit(); use process() for synchronous processing")
        window = self._push(frame)
        if window is None:
            return False
        self._worker.submit(window)
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        if self.tsdf is not None:
            self.tsdf.stop(timeout)
        if self._worker is None:
            return True
        ok = self._worker.stop(timeout)
        self._worker = None
        return ok

    @property
    def worker(self) -> InferenceWorker | None:
        return self._worker

    # --- core ------------------------------------------------------------------------------------------------------

    def _push(self, frame: Frame) -> Window | None:
        try:
            validate_frame(frame)
            with self._window_lock:
                return self.window.push(frame)
        except FrameError as exc:
            self.counts[f"rejected_{exc.reason}"] += 1
            raise

    def _rebase(self, window: Window) -> tuple[Window, bool]:
        """Make the window's overlap the tail of the last processed window (needed after a dropped window)."""
        if window.n_overlap == 0 or not self._tail:
            return window, False
        tail_keys = [f.key for f in self._tail]
        if [f.key for f in window.overlap_frames] == tail_keys[-window.n_overlap:]:
            return window, False
        tail = self._tail[-window.n_overlap:]
        return Window(frames=tail + window.new_frames, index=window.index, n_overlap=len(tail)), True

    def run_window(self, window: Window) -> WindowResult | None:
        """Predict, chain, build the cloud, update map and trajectory. None if a reset happened meanwhile."""
        t0, c0 = time.perf_counter(), time.thread_time()
        with self._lock:
            epoch = self._epoch
            window, rebased = self._rebase(window)
        c_pred = time.thread_time()
        pred = self.predictor.predict(window.frames)
        c_pred = time.thread_time() - c_pred
        pred = self._to_rig(window, pred)
        if self.refiner is not None:
            pred = self.refiner.refine(window.frames, pred)
        with self._lock:
            if epoch != self._epoch:
                self.counts["stale_windows"] += 1
                return None
            c_chain = time.thread_time()
            chain = self.chainer.add(window.frames, pred, window.n_overlap)
            if self.depth_refiner is not None:
                chain.frames = self._refined_depth(window.frames, pred, chain)
            if self.is_metric is None:
                self.is_metric = chain.is_metric
            t1, c1 = time.perf_counter(), time.thread_time()
            new = [(f, cf) for f, cf in zip(window.frames, chain.frames) if cf.is_new]
            map_only = not self.window_cloud_wanted
            cloud = self.cloud.build([cf.depth for _, cf in new], [cf.conf for _, cf in new],
                                     [cf.sky for _, cf in new], [f.rgb for f, _ in new], [cf.K for _, cf in new],
                                     [cf.c2w for _, cf in new], window.index,
                                     map_only=map_only)
            t2, c2 = time.perf_counter(), time.thread_time()
            if chain.chained or self.cfg.insert_unchained:
                if self.map is None:
                    self.map = VoxelMap(self._auto_voxel(chain.frames), self.cfg.map_max_points)
                on_map = cloud.on_map
                if self._use_submaps:
                    if self.submaps is None:
                        self.submaps = SubmapStore(self.map.voxel_size, self.cfg.map_max_points,
                                                   self.cfg.submap_max_points)
                        self.map = self.submaps.map
                    self.submaps.add(window.index, cloud.points[on_map], cloud.colors[on_map], cloud.weights[on_map])
                else:
                    self.map.insert(cloud.points[on_map], cloud.colors[on_map], cloud.weights[on_map])
            t3, c3 = time.perf_counter(), time.thread_time()
            for _, cf in new:
                if cf.camera == 0:  # the trajectory is of the first (or only) camera
                    self._trajectory[cf.stamp_ns] = cf.c2w
                    self._traj_window[cf.stamp_ns] = window.index
                if self._depth.maxlen:
                    self._depth.append((window.index, cf))
            self._tail = self.window.tail_of(window)
            drift = self._drift(window, pred, chain)
            self.counts["windows"] += 1
            self.counts[f"chain_{chain.method}"] += 1
            self.counts["rebased"] += int(rebased)
        timings = dict(pred.timings)
        timings.update(chain.timings)
        frames, points, transform, loop_closed, correction = chain.frames, cloud.points, chain.transform, False, None
        c_loop = time.thread_time()
        if self.cfg.pose_graph:
            loop = self._loop_step(window, pred, chain, epoch)
            if loop is not None:
                C, loop_closed, loop_timings = loop
                timings.update(loop_timings)
                correction = C
                frames, points, transform = self._corrected(C, chain.frames, cloud.points, chain.transform)
        if self.tsdf is not None and (chain.chained or self.cfg.insert_unchained):
            t_tsdf = time.perf_counter()
            with self._lock:
                if epoch == self._epoch:  # uncorrected chained frames: the map applies the window's correction
                    if loop_closed:
                        self.tsdf.loop_closed()
                    self.tsdf.offer(window.index, window.frames, chain.frames)
            timings["tsdf_s"] = time.perf_counter() - t_tsdf
        c_pred += self._loop_predict_cpu
        self._loop_predict_cpu = 0.0
        timings.update(cloud_s=t2 - t1, map_s=t3 - t2, total_s=time.perf_counter() - t0, chain_cpu_s=c1 - c_chain,
                       cloud_cpu_s=c2 - c1, map_cpu_s=c3 - c2, loop_cpu_s=time.thread_time() - c_loop)
        timings["overhead_s"] = timings["total_s"] - timings.get("predict_s", 0.0) - timings.get("loop_verify_s", 0.0)
        timings["overhead_cpu_s"] = time.thread_time() - c0 - c_pred  # this thread's CPU outside predict
        return WindowResult(window_index=window.index, frames=frames, points=points, colors=cloud.colors,
                            scale=chain.scale, transform=transform, residual=chain.residual,
                            residual_rel=chain.residual_rel, n_correspondences=chain.n_correspondences,
                            method=chain.method, chained=chain.chained, is_metric=chain.is_metric, rebased=rebased,
                            timings=timings, drift=drift, loop_closed=loop_closed, correction=correction,
                            map_only_cloud=map_only)

    @property
    def _use_submaps(self) -> bool:
        return self.cfg.submaps or self.cfg.pose_graph

    def _loop_step(self, window: Window, pred: WindowPrediction, chain: ChainResult, epoch: int
                   ) -> tuple[np.ndarray, bool, dict[str, float]] | None:
        """Add the window to the pose graph (verifying loop candidates with the predictor, outside the pipeline
        lock); returns (this window's correction, loop closed, timings) or None after a reset."""
        with self._lock:
            if epoch != self._epoch:
                return None
            if self.loops is None:
                cfg = replace(self.cfg.loop, loop_closure=self.cfg.loop_closure)
                self.loops = LoopCloser(self.predictor, cfg, with_scale=self.chainer._with_scale(chain.is_metric))
            loops = self.loops
        try:
            event = loops.add_window(window.index, window.frames, pred, chain)
        except Exception:  # noqa: BLE001 - the graph must never cost the window: no correction, counted
            with self._lock:
                self.counts["loop_errors"] += 1
                self.loops = None if loops is self.loops else self.loops  # its state may be half-updated: restart
            return None
        with self._lock:
            if epoch != self._epoch or loops is not self.loops:
                return None
            # verification forwards count as prediction work, not host overhead
            self._loop_predict_cpu = sum(v.predict_cpu_s for v in event.verifications)
            if event.loop_closed:
                self.counts["loops_closed"] += 1
            if self.submaps is not None:
                self.submaps.set_corrections(loops.corrections() if event.loop_closed
                                             else {window.index: loops.correction(window.index)})
        timings = {"loop_detect_s": event.timings.get("detect_s", 0.0),
                   "loop_verify_s": event.timings.get("verify_s", 0.0),
                   "loop_optimize_s": event.timings.get("optimize_s", 0.0)}
        return loops.correction(window.index), event.loop_closed, timings

    @staticmethod
    def _corrected(C: np.ndarray, frames: list[ChainedFrame], points: np.ndarray, transform: np.ndarray
                   ) -> tuple[list[ChainedFrame], np.ndarray, np.ndarray]:
        """The window's frames, cloud and transform moved by its pose-graph correction ``C``."""
        if np.abs(C - np.eye(4)).max() <= 1e-12 * max(1.0, float(np.abs(C[:3, 3]).max())):
            return frames, points, transform  # rounding noise of the graph: nothing to move
        s = float(np.cbrt(np.linalg.det(C[:3, :3])))
        out = []
        for cf in frames:
            depth = cf.depth if abs(s - 1.0) < 1e-9 else (cf.depth * np.float32(s)).astype(np.float32)
            out.append(replace(cf, c2w=apply_sim3_to_pose(C, cf.c2w), depth=depth))
        pts = (points @ C[:3, :3].T.astype(np.float32) + C[:3, 3].astype(np.float32)).astype(np.float32)
        return out, pts, C @ transform

    @property
    def _step_ns(self) -> int:
        """A rig window's time-step tolerance (ns); 0 for a one-camera sliding window."""
        return getattr(self.window, "tolerance_ns", 0)

    def _to_rig(self, window: Window, pred: WindowPrediction) -> WindowPrediction:
        """An unconditioned window of several cameras with calibrated mounts, scaled to metres and placed on the
        rigid rig (:func:`~da3_core.stream.rig.align_to_rig`; with the photometric refinement the scale is read from
        the images across the mounts, else from the predicted baselines)."""
        if pred.pose_conditioned or len({f.camera for f in window.frames if f.mount is not None}) < 2:
            return pred
        scale_from = "images" if self.cfg.pose_refine == "photometric" else "baselines"
        aligned = align_to_rig(window.frames, pred, self._step_ns, scale_from,
                               previous=self.rig_scale if scale_from == "images" else None)
        with self._lock:
            self.counts["rig_aligned" if aligned is not None else "rig_unaligned"] += 1
            if aligned is not None:
                self.rig_scale = aligned[1]
                self.counts[f"rig_scale_{aligned[2]}"] += 1
        if aligned is None:
            return pred
        if self.refiner is None:
            return aligned[0]
        return self.refiner.refine_rig(window.frames, aligned[0], self._step_ns)

    def _drift(self, window: Window, pred: WindowPrediction, chain: ChainResult) -> DriftSample | None:
        """Drift sample of the window's first camera when all its frames carry a known (odometry) pose."""
        idx = [i for i, f in enumerate(window.frames) if f.frame_id == window.frames[0].frame_id]
        if len(idx) < 2 or any(window.frames[i].pose_w2c is None for i in idx):
            return None
        odometry = invert_rigid(np.stack([window.frames[i].pose_w2c for i in idx]))
        if not pred.pose_conditioned:
            estimate, metric, source = np.stack([chain.frames[i].c2w for i in idx]), chain.is_metric, "chained"
        elif pred.own_w2c is not None:
            estimate, metric, source = invert_rigid(pred.own_w2c[idx]), pred.own_is_metric, "own"
        else:  # the window's poses are the odometry's: nothing independent to compare
            self.counts["drift_unavailable_conditioned"] += 1
            return None
        stamps = [window.frames[i].stamp_ns for i in idx]
        sample = self.drift.update(window.index, stamps, estimate, metric, odometry, source)
        self.counts["drift_samples" if sample is not None else "drift_skipped_small_motion"] += 1
        return sample

    def _auto_voxel(self, frames: list[ChainedFrame]) -> float:
        with np.errstate(invalid="ignore"):
            med = float(np.nanmedian(np.stack([f.depth for f in frames])))
        return 0.01 * med if np.isfinite(med) and med > 0 else 0.05

    # --- state access (thread-safe) -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget window, chain, map and trajectory (counters are kept). Safe while the worker runs: a window in
        flight is discarded when it finishes."""
        with self._window_lock, self._lock:
            self.window.reset()
            self.chainer.reset()
            if self.refiner is not None:
                self.refiner.reset()
            self.rig_scale = None  # the next rig window measures its scale afresh
            if self.map is not None:
                self.map.clear()
            if self.submaps is not None:
                self.submaps.clear()
            if self.cfg.voxel_size is None:
                self.map, self.submaps = None, None
            self.loops = None
            self._trajectory.clear()
            self._traj_window.clear()
            self._depth.clear()
            self._tail = []
            self._epoch += 1
            self.is_metric = None
            self.drift.reset()
            if self.tsdf is not None:
                self.tsdf.reset()
            self.counts["resets"] += 1

    def map_revision(self) -> tuple[int, int]:
        """(reset epoch, map revision): changes whenever the map does (inserts, reset), so the map is published only
        when it moved on."""
        with self._lock:
            if self.submaps is not None:
                return self._epoch, self.submaps.revision
            return self._epoch, 0 if self.map is None else self.map.revision

    def map_snapshot(self, background_rebuild: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(points (M, 3) float32, colors (M, 3) uint8) of the accumulated map (with submaps: assembled now from
        the windows' points at their current pose-graph corrections; ``background_rebuild``: a full rebuild after a
        closed loop runs in a thread and this returns the map as it was, see
        :meth:`~da3_core.stream.submaps.SubmapStore.sync`)."""
        with self._lock:
            submaps = self.submaps
            if submaps is None:
                if self.map is None:
                    return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
                return self.map.points(), self.map.colors()
        submaps.sync(background=background_rebuild)  # outside the pipeline lock: the worker goes on meanwhile
        return submaps.snapshot()

    def _corrections(self) -> dict[int, np.ndarray]:
        return {} if self.loops is None else self.loops.corrections()

    def _window_correction(self, window: int) -> np.ndarray | None:
        """The window's current pose-graph correction (None without a graph)."""
        loops = self.loops
        return None if loops is None else loops.correction(window)

    def corrections(self) -> dict[int, np.ndarray]:
        """window -> (4, 4) current pose-graph correction (chained map -> optimised map); empty without a graph."""
        with self._lock:
            return self._corrections()

    def _refined_depth(self, frames: list[Frame], pred: WindowPrediction, chain: ChainResult) -> list[ChainedFrame]:
        """The chained frames with the new ones' depth corrected by the multi-view sweep (in map units: times the
        window's scale). The chainer keeps the network's depth (the next window aligns to it), so the refinement
        changes what is delivered (depth images, clouds, map), not the cameras."""
        new = [k for k, cf in enumerate(chain.frames) if cf.is_new]
        refined = self.depth_refiner.refine(frames, pred, views=new,
                                            step_ns=self._step_ns).depth
        s = np.float32(chain.scale)
        return [replace(cf, depth=np.multiply(refined[k], s, dtype=np.float32)) if cf.is_new else cf
                for k, cf in enumerate(chain.frames)]

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps_ns (N,) int64, c2w (N, 4, 4) float64) in stamp order, map frame (pose-graph corrected)."""
        with self._lock:
            stamps = sorted(self._trajectory)
            corr = self._corrections()
            poses = [self._trajectory[s] for s in stamps]
            if corr:
                poses = [P if (C := corr.get(self._traj_window[s])) is None else apply_sim3_to_pose(C, P)
                         for s, P in zip(stamps, poses)]
            return np.asarray(stamps, dtype=np.int64), np.stack(poses) if poses else np.zeros((0, 4, 4))

    def stats(self) -> dict[str, float]:
        """Flat counters for diagnostics: window gate/rejections, pipeline, worker, map size."""
        with self._window_lock:
            out: dict[str, float] = {f"window_{k}": v for k, v in self.window.counts.items()}
        with self._lock:
            out.update(self.counts)
            submaps = self.submaps
            out["map_points"] = 0 if self.map is None else len(self.map)
            out["trajectory_len"] = len(self._trajectory)
            loops = self.loops
        if submaps is not None:  # map_points: the map as last assembled (map_snapshot, the node's map timer)
            out.update(submaps=len(submaps), submap_points=submaps.n_points, submap_rebuilds=submaps.n_rebuilds,
                       map_points=submaps.map_size())
        if loops is not None:
            out.update(loops.stats())
        if self.tsdf is not None:
            out.update(self.tsdf.stats())
        if self._worker is not None:
            out.update({f"worker_{k}": v for k, v in self._worker.stats().items()})
        return out

    def tsdf_timings(self) -> dict[str, float]:
        """TSDF map timings (ms; empty without the TSDF map), see :meth:`TsdfIntegrator.timing_stats`."""
        return {} if self.tsdf is None else self.tsdf.timing_stats()

    def loop_timings(self) -> dict[str, float]:
        """Pose-graph / loop-closure timings of the last window (ms; empty without a graph)."""
        loops = self.loops
        return {} if loops is None else loops.timing_stats()

    def save_outputs(self, out_dir: str | Path, depth_format: str = "npz") -> dict[str, Path]:
        """Write map.ply, trajectory.tum, depth/ and, with ``tsdf``, map_mesh.ply (see the module docstring);
        returns paths by kind."""
        if depth_format not in ("npz", "png16"):
            raise ValueError(f"depth_format must be 'npz' or 'png16', got {depth_format!r}")
        from da3_core.export.ply import write_ply

        out = Path(out_dir)
        (out / "depth").mkdir(parents=True, exist_ok=True)
        pts, cols = self.map_snapshot()
        stamps, poses = self.trajectory()
        with self._lock:
            corr = self._corrections()
            frames = [cf if (C := corr.get(w)) is None else self._corrected(C, [cf], np.zeros((0, 3), np.float32),
                                                                             np.eye(4))[0][0]
                      for w, cf in self._depth]
            metric = bool(self.is_metric)
        paths = {"map": write_ply(out / "map.ply", pts, cols), "trajectory": out / "trajectory.tum",
                 "depth": out / "depth"}
        lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world in the map frame, OpenCV camera axes)"]
        lines += [tum_line(int(s), P) for s, P in zip(stamps, poses)]
        paths["trajectory"].write_text("\n".join(lines) + "\n")
        if self.tsdf is not None:
            paths["mesh"], _ = self.tsdf.save_mesh_ply(out / "map_mesh.ply")
        for cf in frames:
            name = f"{cf.stamp_ns}" if cf.camera == 0 else f"{cf.stamp_ns}_cam{cf.camera}"
            if depth_format == "npz":
                np.savez_compressed(out / "depth" / f"{name}.npz", depth=cf.depth, conf=cf.conf, K=cf.K,
                                    c2w=cf.c2w, stamp_ns=np.int64(cf.stamp_ns), is_metric=metric)
            else:
                from PIL import Image

                with np.errstate(invalid="ignore"):
                    mm = np.rint(cf.depth.astype(np.float64) * 1000.0)
                    mm[~np.isfinite(mm) | (mm <= 0) | (mm > 65535)] = 0
                Image.fromarray(mm.astype(np.uint16)).save(out / "depth" / f"{name}.png")
        return paths
