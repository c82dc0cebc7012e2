"""ROS message <-> numpy conversions for the reconstruction node (no rclpy.node; messages only).

Every rejection raises :class:`ConversionError` (a :class:`da3_core.stream.frame.FrameError`) whose ``reason`` is a
short code meant as a diagnostics counter key, e.g. ``unsupported_encoding``, ``step_mismatch``.
Conventions: images are RGB uint8 (H, W, 3); depth images are 32FC1 z-depth with NaN for invalid (REP-118);
poses are OpenCV optical-frame camera-to-world (4, 4) matrices, turned into xyzw quaternions only here.
"""

from __future__ import annotations

import array
import bisect
import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from da3_core.geometry.rotations import rotation_to_quat_xyzw
from da3_core.stream.frame import MAX_SIDE, FrameError, check_image_size, check_intrinsics

__all__ = ["ConversionError", "ENCODINGS", "image_to_rgb", "compressed_to_rgb", "camera_info_to_K",
           "depth_to_image_msg", "conf_to_image_msg", "make_camera_info", "stamp_to_ns", "ns_to_stamp",
           "c2w_to_pose", "c2w_to_pose_stamped", "c2w_to_transform", "make_path", "PathTrail", "image_msg_to_array",
           "window_result_msg", "drift_report_msg"]

# encoding -> (channels, channel order to get RGB)
ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]), "bgra8": (4, [2, 1, 0]),
             "mono8": (1, [0, 0, 0]), "8UC3": (3, [0, 1, 2]), "8UC1": (1, [0, 0, 0])}
_KNOWN_UNSUPPORTED = {"mono16": "16-bit grey images are not supported; publish mono8 or rgb8",
                      "16UC1": "16-bit depth is not a colour image", "32FC1": "float depth is not a colour image"}


class ConversionError(FrameError):
    """A message that cannot be converted; ``reason`` is the counter key, ``detail`` the explanation."""


def _buffer(data) -> np.ndarray:
    """uint8 view of a message's ``data`` (array.array, bytes, list) without a copy when possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _check_header_size(width: int, height: int, max_side: int) -> None:
    try:
        check_image_size(int(width), int(height), max_side)
    except FrameError as exc:
        raise ConversionError(exc.reason, exc.detail) from None


def image_to_rgb(msg: Image, max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB (a copy, C-contiguous).

    Reasons: zero_size, too_large, unsupported_encoding, step_mismatch (step < width * channels),
    data_length_mismatch (len(data) != step * height).
    """
    w, h, step = int(msg.width), int(msg.height), int(msg.step)
    _check_header_size(w, h, max_side)
    enc = msg.encoding
    if enc not in ENCODINGS:
        hint = _KNOWN_UNSUPPORTED.get(enc, f"supported: {', '.join(ENCODINGS)}")
        raise ConversionError("unsupported_encoding", f"encoding {enc!r}: {hint}")
    ch, order = ENCODINGS[enc]
    if step < w * ch:
        raise ConversionError("step_mismatch", f"step {step} < width {w} x {ch} bytes ({enc})")
    buf = _buffer(msg.data)
    if buf.size != step * h:
        raise ConversionError("data_length_mismatch", f"data has {buf.size} bytes, step x height = {step * h}")
    img = buf.reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if ch == 3 and order == [0, 1, 2]:
        return np.array(img, dtype=np.uint8, order="C", copy=True)  # never alias the message buffer
    return np.ascontiguousarray(img[..., order])  # fancy indexing copies


def compressed_to_rgb(msg: CompressedImage, max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg / png) -> (H, W, 3) uint8 RGB via OpenCV.

    Reasons: unsupported_format (compressedDepth), empty_data, decode_failed, zero_size, too_large.
    """
    import cv2

    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ConversionError("unsupported_format", f"format {msg.format!r} is a depth stream, not a colour image")
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ConversionError("empty_data", "compressed image has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError("decode_failed", f"OpenCV could not decode {buf.size} bytes (format {msg.format!r})")
    _check_header_size(bgr.shape[1], bgr.shape[0], max_side)
    return np.ascontiguousarray(bgr[..., ::-1])


def camera_info_to_K(msg: CameraInfo, image_hw: tuple[int, int] | None = None, use_projection: bool = False
                     ) -> np.ndarray:
    """CameraInfo -> (3, 3) float64 K in pixels of the image the node receives.

    ``use_projection``: take fx, fy, cx, cy from P (rectified images, ``image_rect``) instead of K (raw images).
    Binning and ROI are applied (K describes the full-resolution sensor). With ``image_hw`` the (binned / cropped)
    CameraInfo size must equal the image size.
    Reasons: camera_info_size_mismatch, nonfinite_intrinsics, bad_focal, bad_principal_point, bad_intrinsics_shape.
    """
    if use_projection:
        P = np.asarray(msg.p, dtype=np.float64)
        K = np.array([[P[0], P[1], P[2]], [P[4], P[5], P[6]], [0.0, 0.0, 1.0]]) if P.size == 12 else P
    else:
        K = np.asarray(msg.k, dtype=np.float64)
    try:
        K = check_intrinsics(K)
    except FrameError as exc:
        raise ConversionError(exc.reason, exc.detail) from None
    K = K.copy()
    roi = msg.roi
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    width, height = int(msg.width), int(msg.height)
    if roi.width > 0 and roi.height > 0:
        K[0, 2] -= roi.x_offset
        K[1, 2] -= roi.y_offset
        width, height = int(roi.width), int(roi.height)
    if bx > 1 or by > 1:
        K[0] /= bx
        K[1] /= by
        width, height = width // bx, height // by
    if image_hw is not None:
        H, W = int(image_hw[0]), int(image_hw[1])
        if (width, height) != (W, H):
            raise ConversionError("camera_info_size_mismatch",
                                  f"CameraInfo is {width}x{height} (after binning/ROI), the image is {W}x{H}")
        try:
            check_intrinsics(K, W, H)
        except FrameError as exc:
            raise ConversionError(exc.reason, exc.detail) from None
    return K


def image_msg_to_array(msg: Image) -> np.ndarray:
    """32FC1 Image -> (H, W) float32 (for tests and tools; honours ``is_bigendian``)."""
    if msg.encoding != "32FC1":
        raise ConversionError("unsupported_encoding", f"expected 32FC1, got {msg.encoding!r}")
    buf = _buffer(msg.data)
    if int(msg.step) < 4 * int(msg.width) or buf.size != int(msg.step) * int(msg.height):
        raise ConversionError("data_length_mismatch", "32FC1 data does not match width/height/step")
    dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
    rows = buf.reshape(int(msg.height), int(msg.step))[:, : 4 * int(msg.width)]
    return np.ascontiguousarray(rows).view(dt).astype(np.float32)


def _float_buffer(h: int, w: int) -> tuple[array.array, np.ndarray]:
    """A message data buffer for an (H, W) float32 image and a writable view of it: pixels are written straight into
    the buffer (no intermediate copy)."""
    data = array.array("B", bytes(1)) * (4 * h * w)
    return data, np.frombuffer(data, dtype=np.float32).reshape(h, w)


def _float_image(data: array.array, h: int, w: int, header: Header) -> Image:
    # check_fields: the data setter then keeps the array.array as it is (without it, rclpy copies it)
    msg = Image(header=header, height=h, width=w, encoding="32FC1", is_bigendian=sys.byteorder == "big", step=4 * w,
                check_fields=True)
    msg.data = data
    return msg


def depth_to_image_msg(depth: np.ndarray, header: Header, invalid: np.ndarray | None = None) -> Image:
    """(H, W) depth -> 32FC1 Image (REP-118): non-finite, non-positive and ``invalid`` (e.g. sky) pixels -> NaN."""
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ConversionError("bad_depth_shape", f"depth must be (H, W), got {d.shape}")
    data, out = _float_buffer(*d.shape)
    np.copyto(out, d, casting="unsafe")
    with np.errstate(invalid="ignore"):
        bad = out <= 0  # NaN compares False and stays NaN
        bad |= out == np.inf
    if invalid is not None:
        bad |= np.asarray(invalid, dtype=bool)
    out[bad] = np.nan
    return _float_image(data, *d.shape, header)


def conf_to_image_msg(conf: np.ndarray, header: Header) -> Image:
    """(H, W) confidence -> 32FC1 Image (values as they are; NaN where unknown)."""
    c = np.asarray(conf)
    if c.ndim != 2:
        raise ConversionError("bad_conf_shape", f"conf must be (H, W), got {c.shape}")
    data, out = _float_buffer(*c.shape)
    np.copyto(out, c, casting="unsafe")
    return _float_image(data, *c.shape, header)


def make_camera_info(K: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """CameraInfo for an undistorted image of ``width`` x ``height`` with pixel K (plumb_bob, zero distortion)."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header, width=int(width), height=int(height), distortion_model="plumb_bob",
                      d=[0.0] * 5, k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(),
                      p=P.reshape(-1).tolist())


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _quat_and_t(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.asarray(c2w, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)):
        raise ConversionError("bad_pose_shape", f"pose must be (4, 4) or (3, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ConversionError("nonfinite_pose", "pose contains NaN or inf")
    U, _, Vt = np.linalg.svd(T[:3, :3])  # nearest rotation (guards against accumulated drift)
    R = U @ Vt
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()
    if a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g) < 0:  # det(R), in Python floats
        raise ConversionError("bad_rotation", "pose rotation has a negative determinant (reflection)")
    return rotation_to_quat_xyzw(R), T[:3, 3]


def c2w_to_pose(c2w: np.ndarray) -> Pose:
    """(4, 4) camera-to-world -> geometry_msgs/Pose (position = camera centre, orientation xyzw)."""
    q, t = _quat_and_t(c2w)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def c2w_to_pose_stamped(c2w: np.ndarray, header: Header) -> PoseStamped:
    return PoseStamped(header=header, pose=c2w_to_pose(c2w))


def c2w_to_transform(c2w: np.ndarray, header: Header, child_frame_id: str) -> TransformStamped:
    """TF ``header.frame_id`` (map) -> ``child_frame_id`` (camera optical frame) from a camera-to-map pose."""
    q, t = _quat_and_t(c2w)
    tf = TransformStamped(header=header, child_frame_id=child_frame_id)
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (float(v) for v in t)
    r = tf.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return tf


def make_path(stamps_ns, c2w: np.ndarray, frame_id: str) -> Path:
    """nav_msgs/Path of camera poses (N, 4, 4) in ``frame_id`` stamped per pose; the Path header carries the last
    stamp."""
    poses = [c2w_to_pose_stamped(P, Header(stamp=ns_to_stamp(int(s)), frame_id=frame_id))
             for s, P in zip(stamps_ns, c2w)]
    last = int(stamps_ns[-1]) if len(poses) else 0
    return Path(header=Header(stamp=ns_to_stamp(last), frame_id=frame_id), poses=poses)


class PathTrail:
    """nav_msgs/Path of a growing trajectory without rebuilding it: PoseStamped messages are kept as they are
    published (``add``) and ``message`` lists them (at most ``max_poses``, thinned evenly over the kept poses when
    there are more, the newest always included), so a long run does not make each path message slower to build.

    Memory is bounded too: past ``4 * max_poses`` kept poses every other one is dropped (the newest kept), so the
    older part of a very long path gets coarser; ``add`` returns the stamps it dropped."""

    def __init__(self, frame_id: str, max_poses: int = 0):
        self.frame_id, self.max_poses = frame_id, int(max_poses)
        self.child = ""
        self._poses: list[PoseStamped] = []
        self._stamps: list[int] = []

    def clear(self) -> None:
        self._poses, self._stamps = [], []

    def __len__(self) -> int:
        return len(self._poses)

    def add(self, child: str, poses: list[tuple[int, PoseStamped]]) -> list[int]:
        """Poses ``[(stamp_ns, PoseStamped)]`` of frame ``child`` (another child starts a new path); a stamp already
        in the path replaces its pose. Returns the stamps dropped to bound memory (usually none)."""
        if poses and child != self.child:
            self.clear()
            self.child = child
        for stamp, msg in poses:
            if not self._stamps or stamp > self._stamps[-1]:
                self._stamps.append(stamp)
                self._poses.append(msg)
                continue
            i = bisect.bisect_left(self._stamps, stamp)
            if i < len(self._stamps) and self._stamps[i] == stamp:
                self._poses[i] = msg
            else:
                self._stamps.insert(i, stamp)
                self._poses.insert(i, msg)
        if not self.max_poses or len(self._poses) <= 4 * self.max_poses:
            return []
        first = (len(self._poses) - 1) % 2  # every other one, counted back from the newest
        dropped = self._stamps[1 - first::2]
        self._stamps, self._poses = self._stamps[first::2], self._poses[first::2]
        return dropped

    def message(self) -> Path:
        poses = self._poses
        if self.max_poses and len(poses) > self.max_poses:
            step = -(-len(poses) // self.max_poses)
            poses = poses[-1::-step][::-1]  # every step-th, counted back from the newest
        last = self._stamps[-1] if self._stamps else 0
        return Path(header=Header(stamp=ns_to_stamp(last), frame_id=self.frame_id), poses=list(poses))


def window_result_msg(res, header: Header, variant: str, now_ns: int, frames_dropped: int):
    """da3_ros_interfaces/WindowResult of a pipeline :class:`~da3_core.stream.pipeline.WindowResult`."""
    from da3_ros_interfaces.msg import WindowResult

    msg = WindowResult(header=header)
    msg.stamps = [ns_to_stamp(f.stamp_ns) for f in res.frames]
    msg.poses = [c2w_to_pose(f.c2w) for f in res.frames]
    msg.frame_ids = [f.frame_id for f in res.frames]
    msg.intrinsics = np.concatenate([f.K.reshape(-1) for f in res.frames]).astype(float).tolist()
    msg.height, msg.width = (int(v) for v in res.frames[0].depth.shape)
    msg.scale = float(res.scale)
    msg.is_metric = bool(res.is_metric)
    msg.model_variant = variant
    msg.inference_time_s = float(res.timings.get("predict_s", 0.0))
    msg.total_latency_s = float((now_ns - res.frames[-1].stamp_ns) / 1e9)
    msg.window_index = int(res.window_index)
    msg.frames_dropped = int(frames_dropped)
    return msg


def drift_report_msg(d, frame_id: str):
    """da3_ros_interfaces/DriftReport of a :class:`~da3_core.stream.drift.DriftSample`."""
    from da3_ros_interfaces.msg import DriftReport

    return DriftReport(header=Header(stamp=ns_to_stamp(d.stamp_ns), frame_id=frame_id), window_index=d.window_index,
                       duration_s=d.duration_s, odometry_distance_m=d.odometry_distance_m,
                       estimate_distance=d.estimate_distance, estimate_is_metric=d.estimate_is_metric,
                       distance_ratio=d.distance_ratio, estimate_source=d.estimate_source, scale=d.scale,
                       slip=d.slip, rotation_drift_deg=d.rotation_drift_deg,
                       translation_drift_m=d.translation_drift_m)
