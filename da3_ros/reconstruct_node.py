"""reconstruct: camera images in; metric or relative depth, camera poses (TF, pose, path) and clouds out.

Images (and CameraInfo, paired by stamp) become frames; a sliding window of frames goes to one inference worker
thread (latest wins when it is busy, drops counted); each window's cameras are chained into the ``map`` frame and its
points are added to a voxel map (with ``submaps`` / ``pose_graph``: kept per window, the map cloud assembled at the
map-publish rate). With ``pose_graph`` and ``loop_closure`` (:mod:`da3_core.stream.loop_closure`) windows are
nodes of a pose graph; when a loop is closed, the window's TF and poses already carry the new correction, the path
is re-anchored at once and the map cloud on its next publish. With ``tsdf`` (on by default) every
``tsdf_every_n_frames``-th frame is fused into a TSDF volume in a background thread (:mod:`da3_core.stream.tsdf_stream`;
moved with the pose graph after a closed loop) and ``~/save_map`` also writes its mesh, ``map_mesh.ply``. All outputs
carry the source image's stamp. The
pipeline itself is ROS-free (:mod:`da3_core.stream`); this node converts messages, declares parameters and
publishes.

Topics (relative: remap them): in ``image`` (or ``image/compressed``), ``camera_info``; out ``depth`` (32FC1,
REP-118, NaN invalid), ``confidence``, ``depth/camera_info``, ``pose``, ``path``, ``window_cloud``, ``map_cloud``,
``window`` (da3_ros_interfaces/WindowResult), ``/tf``, ``/diagnostics``. Services ``~/reset``, ``~/save_map``.

TF (REP-105, :mod:`da3_core.stream.tf_tree`): the node reads ``/tf`` and ``/tf_static`` (:mod:`da3_ros.tf_io`).
When the camera frame has a parent there (a robot: odom -> base_link -> ... -> camera), it publishes only the
correction map -> odom (the top of the camera's chain, or ``odom_frame``), future-dated by ``tf_future_dating_s``
and re-published at ``map_tf_rate_hz``, and ``pose`` / ``path`` are of ``base_frame``; the map starts at odom's
pose of the first frame. A free camera (no TF) gets map -> camera, the map being its first pose. The node never gives
a frame a second parent (``tf_mode`` forces either). Transforms whose parent is ``map_frame`` are never used.

Pose conditioning (``pose_source_frame``, e.g. ``odom``; off by default): the node looks up
``T(pose_source_frame <- camera optical frame)`` through the TF chain at each image stamp (within
``pose_tf_tolerance_s`` of the history, interpolated inside it) once the image left the CameraInfo pairing; the frame
carries ``w2c = inv(T)`` and a window whose frames all have a pose and a K is pose-conditioned (its poses are the
given ones, depth in their units: metres when ``pose_source_metric``). Lookups are counted in the diagnostics
(``pose_lookup_ok``, ``pose_lookup_failed_<reason>``), as are conditioned windows.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter, deque

import numpy as np
import rclpy
from da3_ros_interfaces.msg import DriftReport
from da3_ros_interfaces.msg import WindowResult as WindowResultMsg
from da3_ros_interfaces.srv import SaveMap
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from da3_core.stream.frame import Frame, FrameError
from da3_core.stream.loop_closure import PublishedPoses
from da3_core.stream.pipeline import StreamPipeline, WindowResult
from da3_core.stream.tf_tree import MapTfPlanner, TfOutputs
from da3_ros.camera_io import CameraIO
from da3_ros.conversions import (
    PathTrail,
    c2w_to_pose_stamped,
    drift_report_msg,
    ns_to_stamp,
    window_result_msg,
)
from da3_ros.lazy_publish import listened
from da3_ros.output_root import OutsideRootError, resolve_output_dir
from da3_ros.params import (
    PARAMS,
    camera_namespaces,
    check_value,
    checked_values,
    descriptor,
    pipeline_config,
    resource_errors,
    rig_window,
    uses_tf,
)
from da3_ros.pointcloud import points_to_pointcloud2
from da3_ros.process_setup import limit_malloc_arenas
from da3_ros.tf_io import TfListener, transform_msgs

TF_CACHE_S = 10.0  # TF history kept per edge (pose conditioning, map -> odom)


class ParameterError(ValueError):
    pass


def _qos(reliable: bool, depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class ReconstructNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("reconstruct", **kwargs)
        for p in PARAMS:
            try:
                self.declare_parameter(p.name, p.default, descriptor(p))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # an override outside the descriptor's range / of the wrong type: name the parameter and what is
                # allowed, and exit with code 2 like the other parameter errors (not a traceback)
                override = getattr(self, "_parameter_overrides", {}).get(p.name)
                message = check_value(p.name, override.value) if override is not None else None
                raise ParameterError(message or str(exc)) from None
        # window_size 0 / overlap -1 become the weights' recommended window here (self.values holds what runs)
        self.values, errors = checked_values({p.name: self.get_parameter(p.name).value for p in PARAMS})
        errors = errors or resource_errors(self.values)
        if errors:
            raise ParameterError("; ".join(errors))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        from da3_ros.predictors import make_predictor

        try:
            predictor, self.model_text, self.variant = make_predictor(self.values)
        except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load: one line naming the parameter
            detail = " ".join(str(exc).split())
            raise ParameterError(f"parameter 'weights' = {self.values['weights']!r} did not load "
                                 f"({type(exc).__name__}: {detail}); pass an official DA3 checkpoint folder or file, "
                                 "or '' for the embedded default") from None
        v = self.values
        self.camera_names = camera_namespaces(v)  # [''] for one camera
        self.pipeline = StreamPipeline(predictor, pipeline_config(v), window=rig_window(v))
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=100)
        self._input_times: deque[float] = deque(maxlen=100)
        self._closing = False
        self._tf_lock = threading.Lock()
        self.pose_source = v["pose_source_frame"]
        if hasattr(predictor, "use_known_poses"):  # frames carry their odom poses on a robot: condition only if asked
            predictor.use_known_poses = bool(self.pose_source)
            predictor.pose_is_metric = bool(v["pose_source_metric"])  # units of the conditioned windows

        # outputs: per-frame products reliable with a short history; the map and the path latched for late RViz
        # a window delivers up to window_size - overlap frames in one burst: a shallower reliable history would drop
        # the oldest of them before a subscriber acknowledged them
        out, self.map_frame = _qos(True, max(5, v["window_size"])), v["map_frame"]
        self.path = PathTrail(self.map_frame, v["path_max_poses"])
        self._path_poses = PublishedPoses()  # what the path holds, re-anchored after a closed loop
        self._map_revision: tuple[int, int] | None = None
        self._path_stale = False  # the path changed while nobody listened (sent when a subscriber appears)
        self.pub_pose = self.create_publisher(PoseStamped, "pose", _qos(True, max(10, v["window_size"])))
        self.pub_path = self.create_publisher(PathMsg, "path", _qos(True, 1, latched=True))
        self.pub_window_cloud = self.create_publisher(PointCloud2, "window_cloud", _qos(True, 2))
        self.pub_map = self.create_publisher(PointCloud2, "map_cloud", _qos(True, 1, latched=True))
        self.pub_window = self.create_publisher(WindowResultMsg, "window", _qos(True, 10))
        self.pub_drift = self.create_publisher(DriftReport, "drift", _qos(True, 10))
        self.pub_tf = self.create_publisher(TFMessage, "/tf", _qos(True, 100))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", _qos(True, 10))

        # TF first (a camera that waits for the image subscription then finds it too)
        self._tf_tolerance_ns = int(round(v["pose_tf_tolerance_s"] * 1e9))
        self._tf = TfListener(self, self.map_frame, TF_CACHE_S, on_stored=self._on_tf_stored,
                              tolerance_ns=self._tf_tolerance_ns) if uses_tf(v) else None
        self.tf_plan = MapTfPlanner(self.map_frame, None if self._tf is None else self._tf.buffer, v["tf_mode"],
                                    v["odom_frame"], v["base_frame"], v["pose_frame"],
                                    int(round(v["tf_future_dating_s"] * 1e9)), self._tf_tolerance_ns)

        # inputs (and per-camera outputs) of each camera: sensor-data QoS by default (camera drivers publish best
        # effort)
        in_qos = _qos(True, v["input_queue_depth"]) if v["input_qos"] == "reliable" else QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=v["input_queue_depth"], reliability=ReliabilityPolicy.BEST_EFFORT)
        self.cameras = [CameraIO(self, k, name, v, in_qos, out, self._submit, self._reject, self._publish,
                                 ready=self._pose_ready if self._tf is not None else None)
                        for k, name in enumerate(self.camera_names)]
        if v["use_camera_info"]:  # wall-clock timer: frames waiting for a CameraInfo leave even when /clock stops
            self.create_timer(0.05, self._poll_pairs, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SaveMap, "~/save_map", self._on_save_map)
        self._map_timer = self.create_timer(1.0 / v["map_publish_rate_hz"], self._publish_map)
        self._diag_timer = self.create_timer(1.0 / v["diagnostics_rate_hz"], self._publish_diagnostics)
        if self._tf is not None and v["publish_tf"] and v["map_tf_rate_hz"] > 0:
            self.create_timer(1.0 / v["map_tf_rate_hz"], self._republish_map_tf)
        self.pipeline.start(on_result=self._on_window, on_error=self._on_worker_error)
        self.get_logger().info(f"reconstruct: {self.model_text}; window {v['window_size']} (overlap {v['overlap']}); "
                               f"pose_refine {v['pose_refine']}; depth_refine {v['depth_refine']}; "
                               f"camera_info {'on' if v['use_camera_info'] else 'off'}")
        camera = v["camera_frame"] or "<image header frame_id>"
        self.get_logger().info(f"pose conditioning from TF {self.pose_source} -> {camera} (tolerance "
                               f"{v['pose_tf_tolerance_s']:g} s, {'metric' if v['pose_source_metric'] else 'relative'})"
                               if self.pose_source else "pose conditioning off (pose_source_frame '')")

    # --- parameters --------------------------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            message = check_value(p.name, p.value)
            if message:
                return SetParametersResult(successful=False, reason=message)
        for p in params:
            if p.name == "map_publish_rate_hz":
                self._map_timer.timer_period_ns = int(1e9 / p.value)
            elif p.name == "diagnostics_rate_hz":
                self._diag_timer.timer_period_ns = int(1e9 / p.value)
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self.counts[f"rejected_{reason}"] += 1
        self.get_logger().warning(f"dropped input ({reason}): {detail}", throttle_duration_sec=5.0)

    def _poll_pairs(self) -> None:
        for cam in self.cameras:
            cam.poll()

    def _on_tf_stored(self) -> None:
        self._poll_pairs()  # frames waiting for their pose can go now

    def _known_pose_frame(self, camera_frame: str) -> str | None:
        """The frame a camera's known pose is looked up in: the pose source, else (on a robot) the top of the
        camera's TF chain (the map then starts at its pose); None for a free camera."""
        return self.pose_source or self.tf_plan.root_of(camera_frame)

    def _pose_ready(self, frame: Frame) -> bool:
        """Whether TF already has the camera pose at the frame's stamp; a free camera (no parent) never waits."""
        target = self._known_pose_frame(frame.frame_id)
        return target is None or self._tf.has(target, frame)

    def _submit(self, frames: list[Frame]) -> None:
        for frame in frames:
            if self._tf is not None:  # its pose (odom / pose source) and, in a rig, its mount on the rig
                frame = self._tf.annotate(frame, self._known_pose_frame(frame.frame_id),
                                          self.values["base_frame"] if len(self.cameras) > 1 else None)
            try:
                self.pipeline.submit(frame)
            except FrameError as exc:
                self._reject(exc.reason, str(exc))
                continue
            with self._lock:
                self.counts["frames_in"] += 1
                self._input_times.append(time.monotonic())

    # --- outputs (worker thread) -----------------------------------------------------------------------------------
    def _publish(self, pub, msg) -> None:
        if self._closing or not self.context.ok():  # shutting down (the worker may still finish a window)
            return
        try:
            pub.publish(msg)
        except Exception as exc:  # noqa: BLE001 - context shutting down / writer blocked
            self.counts["publish_errors"] += 1
            self.get_logger().warning(f"publish on {pub.topic_name} failed: {exc}", throttle_duration_sec=5.0)

    def _on_window(self, res: WindowResult) -> None:
        new = res.new_frames
        if not res.chained:
            self.get_logger().warning(f"window {res.window_index} could not be chained to the map ({res.method}); "
                                      "its poses are a guess and its points are kept out of the map",
                                      throttle_duration_sec=5.0)
        for cf in new:
            self.cameras[cf.camera].publish_frame(cf)
            latency = self.get_clock().now().nanoseconds - cf.stamp_ns
            with self._lock:
                self._latency.append(latency / 1e9)
        if new:
            plan = self._plan_tf(new)
            poses = [(stamp, c2w_to_pose_stamped(T, Header(stamp=ns_to_stamp(stamp), frame_id=self.map_frame)))
                     for stamp, T in plan.poses]
            if listened(self.pub_pose):
                for _, msg in poses:
                    self._publish(self.pub_pose, msg)
            if self.values["publish_tf"] and plan.transforms:
                self._publish(self.pub_tf, transform_msgs(plan.transforms))
            last = Header(stamp=ns_to_stamp(new[-1].stamp_ns), frame_id=self.map_frame)
            wanted = listened(self.pub_window_cloud)
            self.pipeline.window_cloud_wanted = wanted  # the next windows build the whole cloud only if it is
            if len(res.points) and wanted and not res.map_only_cloud:
                self._publish(self.pub_window_cloud, points_to_pointcloud2(res.points, res.colors, last))
            with self._tf_lock:  # the path: the poses of the first camera present (a new pose frame starts anew)
                if plan.pose_child != self.path.child:
                    self._path_poses.clear()
                self._path_poses.forget(self.path.add(plan.pose_child, poses))
                if res.correction is not None:
                    for stamp, T in plan.poses:
                        self._path_poses.record(stamp, res.window_index, res.correction, T)
                if res.loop_closed:
                    self._reanchor_path()
            self._publish_path()
            if listened(self.pub_window):
                worker = self.pipeline.worker
                self._publish(self.pub_window, window_result_msg(res, last, self.variant,
                                                                 self.get_clock().now().nanoseconds,
                                                                 worker.dropped if worker is not None else 0))
        if res.drift is not None and listened(self.pub_drift):
            self._publish(self.pub_drift, drift_report_msg(res.drift, new[0].frame_id if new else ""))
        with self._lock:
            self.counts["windows_out"] += 1
            self.counts["frames_out"] += len(new)

    def _reanchor_path(self) -> None:
        """After a closed loop: every path pose moves with its window's new correction (call with the TF lock)."""
        moved = self._path_poses.reanchor(self.pipeline.corrections())
        moved_msgs = [(stamp, c2w_to_pose_stamped(T, Header(stamp=ns_to_stamp(stamp), frame_id=self.map_frame)))
                      for stamp, T in moved]
        self._path_poses.forget(self.path.add(self.path.child, moved_msgs))
        with self._lock:
            self.counts["path_reanchored"] += 1

    def _plan_tf(self, new: list) -> TfOutputs:
        """map -> odom (robot) or map -> camera, and the poses of base_link or the camera, for delivered frames. The
        pose and path come from the first camera present (camera 0 unless it dropped out); in a rig without a TF tree
        every camera gets its own map -> camera."""
        by_camera: dict[int, list] = {}
        for cf in new:
            by_camera.setdefault(cf.camera, []).append(cf)
        with self._tf_lock:
            out = TfOutputs()
            for n, cam in enumerate(sorted(by_camera)):
                frames = by_camera[cam]
                plan = self.tf_plan.outputs(frames[0].frame_id, [(cf.stamp_ns, cf.c2w) for cf in frames])
                if n == 0:
                    out.poses, out.pose_child = plan.poses, plan.pose_child
                if n == 0 or self.tf_plan.mode == "map_to_camera":
                    out.transforms += plan.transforms
        return out

    def _republish_map_tf(self) -> None:
        if self.tf_plan.mode != "map_to_odom":  # nothing to re-send (a free camera, or not decided yet)
            return
        with self._tf_lock:
            tf = self.tf_plan.republish(self.get_clock().now().nanoseconds)
        if tf is not None:
            self._publish(self.pub_tf, transform_msgs([tf]))

    def _on_worker_error(self, exc: BaseException, window) -> None:
        with self._lock:
            self.counts["inference_errors"] += 1
        self.get_logger().error(f"inference failed on window {getattr(window, 'index', '?')}: "
                                f"{type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _publish_path(self) -> None:
        """The path (latched): published when someone listens, else left stale for the map timer to send once a
        subscriber appears (a path of ``path_max_poses`` poses takes milliseconds to convert)."""
        if not listened(self.pub_path):
            self._path_stale = True
            return
        with self._tf_lock:
            path = self.path.message()
            self._path_stale = False
        self._publish(self.pub_path, path)

    def _publish_map(self) -> None:
        """Map timer: the map cloud when it changed and someone listens (nobody listening: the map is not even
        assembled, its revision stays unpublished until a subscriber appears); a stale path too."""
        if self._path_stale:
            self._publish_path()
        if not listened(self.pub_map):
            return
        revision = self.pipeline.map_revision()
        if revision == self._map_revision:  # unchanged since the last publish (the topic is latched)
            return
        self._map_revision = revision
        pts, cols = self.pipeline.map_snapshot(background_rebuild=True)  # a re-anchoring never stalls the executor
        if len(pts):
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.map_frame)
            self._publish(self.pub_map, points_to_pointcloud2(pts, cols, header))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            counts = dict(self.counts)
            lat = list(self._latency)
            times = list(self._input_times)
        for cam in self.cameras:  # summed over the cameras
            for key, n in cam.pairing_counts().items():
                counts[key] = counts.get(key, 0) + n
        if self._tf is not None:
            counts.update(self._tf.snapshot_counts())
        with self._tf_lock:
            counts.update(self.tf_plan.counts)
            tf_mode, tf_root = self.tf_plan.mode, self.tf_plan.root
        stats = self.pipeline.stats()
        stats.update({k: round(v, 3) for k, v in self.pipeline.loop_timings().items()})
        stats.update({k: round(v, 3) for k, v in self.pipeline.tsdf_timings().items()})
        drift = self.pipeline.drift.latest
        if drift is not None:  # the newest window's odometry check and the worst slip so far
            counts.update(drift_slip=f"{drift.slip:.4f}", drift_rotation_deg=f"{drift.rotation_drift_deg:.3f}",
                          drift_max_abs_slip=f"{self.pipeline.drift.max_abs_slip:.4f}")
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0
        pose_counts = dict(getattr(self.pipeline.predictor, "counts", {}))
        if self.pipeline.refiner is not None:  # photometric refinement: windows refined / unchanged, pairs by source
            counts.update({f"refine_{k}": n for k, n in self.pipeline.refiner.counts.items()})
        if self.pipeline.depth_refiner is not None:  # multi-view depth: views corrected / left, windows
            counts.update({f"depth_refine_{k}": n for k, n in self.pipeline.depth_refiner.counts.items()})
        values = {"model": self.model_text, "input_rate_hz": f"{rate:.2f}",
                  "pose_source": f"TF {self.pose_source}" if self.pose_source else "off",
                  "tf_mode": tf_mode or "undecided", "map_tf_child": (tf_root or "<camera>") if tf_mode else "",
                  **{f"windows_{k}": str(n) for k, n in sorted(pose_counts.items())},
                  "latency_p50_s": f"{np.median(lat):.3f}" if lat else "n/a",
                  "metric": str(self.pipeline.is_metric), **{k: str(v) for k, v in sorted(counts.items())},
                  **{k: str(v) for k, v in sorted(stats.items())}}
        rejected = sum(v for k, v in counts.items() if k.startswith("rejected_"))
        level = DiagnosticStatus.WARN if rejected or counts.get("inference_errors") else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: reconstruction", hardware_id="da3_ros",
                                  message=f"{counts.get('frames_in', 0)} frames in, {rejected} rejected, "
                                          f"{int(stats.get('worker_dropped', 0))} windows dropped",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._publish(self.pub_diag, DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                     status=[status]))

    # --- services ------------------------------------------------------------------------------------------------
    def _on_reset(self, request, response):
        self.pipeline.reset()
        with self._tf_lock:
            self.tf_plan.reset()
            self.path.clear()
            self._path_poses.clear()
        response.success, response.message = True, "window, chain, map and trajectory cleared"
        return response

    def _on_save_map(self, request, response):
        try:  # only below save_map_root: any DDS participant may call this service
            out = resolve_output_dir(self.values["save_map_root"], request.output_dir)
        except OutsideRootError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().warning(str(exc))
            return response
        try:
            written = self.pipeline.save_outputs(out)
        except Exception as exc:  # noqa: BLE001 - report, never crash
            response.success, response.message = False, f"saving to {out} failed: {type(exc).__name__}: {exc}"
            return response
        pts, _ = self.pipeline.map_snapshot()
        stamps, _ = self.pipeline.trajectory()
        response.success = True
        mesh = " and the TSDF mesh (map_mesh.ply)" if "mesh" in written else ""
        response.message = f"saved {len(pts)} map points and {len(stamps)} poses{mesh} to {out}"
        response.map_path, response.trajectory_path = str(written.get("map", "")), str(written.get("trajectory", ""))
        response.num_points, response.num_frames = len(pts), len(stamps)
        return response

    def close(self) -> None:
        self._closing = True
        self.pipeline.stop(timeout=10.0)
        with self._lock:
            counts = dict(self.counts)
        stats = {k: v for k, v in self.pipeline.stats().items() if not k.startswith("worker_last")}
        summary = ", ".join(f"{k}={int(v) if float(v).is_integer() else round(float(v), 3)}"
                            for k, v in sorted({**counts, **stats}.items()))
        if self.context.ok():
            self.get_logger().info(f"shutting down: {summary}")
        else:  # after SIGINT/SIGTERM the context is gone (no /rosout): plain stderr
            print(f"[reconstruct] shutting down: {summary}", file=sys.stderr, flush=True)


def make_executor(kind: str):
    """The node's executor: rclpy's C++ events executor (least Python per callback) where this rclpy has it, else a
    single- or multi-threaded one. Inference and publishing run in the pipeline's worker thread either way."""
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:  # an rclpy without it (before Jazzy): the single-threaded executor does the same job
            return SingleThreadedExecutor()
        return EventsExecutor()
    return SingleThreadedExecutor() if kind == "single_threaded" else MultiThreadedExecutor(num_threads=2)


def spin(executor, context) -> None:
    """Run callbacks until shutdown. The events executor is driven by ``spin_once``: its ``spin()`` in the pip Kilted
    wheels (rclpy 9.1.2) busy-loops at 100 % CPU without ever running a timer."""
    if isinstance(executor, (SingleThreadedExecutor, MultiThreadedExecutor)):
        executor.spin()
        return
    while context.ok():
        executor.spin_once(timeout_sec=0.2)


def main(args: list[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread starts: bounded memory on long runs (da3_ros/process_setup.py)
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = ReconstructNode()
        executor = make_executor(node.values["executor"])
        executor.add_node(node)
        spin(executor, node.context)
    except ParameterError as exc:
        print(f"[reconstruct] invalid parameters: {exc}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a terminal reaches the whole process group and ros2 launch forwards it again: a second SIGINT
        # while shutting down must not interrupt the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
