"""One camera frame as the streaming pipeline sees it, plus input checks with short reason codes.

No ROS here: ``da3_ros.conversions`` turns messages into :class:`Frame` and raises the same kind of error
(:class:`FrameError`, whose ``reason`` is a short code meant to be used as a diagnostics counter key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_SIDE", "Frame", "FrameError", "check_image_size", "check_intrinsics", "validate_frame"]

MAX_SIDE = 8192  # largest accepted image side in pixels (a 8192 x 8192 RGB frame is already 200 MB)


class FrameError(ValueError):
    """Rejected input. ``reason``: short stable code (counter key), ``detail``: human-readable explanation."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Frame:
    """One image of the stream.

    Fields:
        stamp_ns: acquisition time in integer nanoseconds (the source message's header stamp).
        rgb: (H, W, 3) uint8 RGB, C-contiguous.
        K: (3, 3) float64 pixel intrinsics of ``rgb`` (from CameraInfo), or None when unknown.
        frame_id: camera optical frame name of the source message (OpenCV axes: x right, y down, z forward).
        index: running index assigned by the producer (-1 = unassigned).
        pose_w2c: (4, 4) float64 known world-to-camera pose (OpenCV axes) in the pose-conditioning world frame
            (e.g. odom, from TF), or None when unknown. With a known K on every frame of a window, the network is
            conditioned on these poses (:class:`da3_core.stream.predictor.DA3Predictor`) when conditioning is on.
        camera: index of the camera in a rig (0 for a single camera); a frame is identified by (stamp_ns, camera).
        mount: (4, 4) float64 T(rig <- camera optical frame), the camera's calibrated pose on its rig (metres, e.g.
            base_link <- optical from /tf_static), or None; windows of several cameras with mounts are aligned to the
            known rig (:mod:`da3_core.stream.rig`).
    """

    stamp_ns: int
    rgb: np.ndarray
    K: np.ndarray | None = None
    frame_id: str = ""
    index: int = -1
    pose_w2c: np.ndarray | None = None
    camera: int = 0
    mount: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int]:
        """(stamp_ns, camera): what tells frames apart (cameras of a rig share stamps)."""
        return int(self.stamp_ns), int(self.camera)

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def check_image_size(width: int, height: int, max_side: int = MAX_SIDE) -> None:
    """Raise ``zero_size`` / ``too_large`` for unusable image dimensions."""
    if width <= 0 or height <= 0:
        raise FrameError("zero_size", f"image is {width}x{height}")
    if width > max_side or height > max_side:
        raise FrameError("too_large", f"image is {width}x{height}, the largest accepted side is {max_side}")


def check_intrinsics(K, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Validate a pixel K and return it as (3, 3) float64.

    Reasons: ``bad_intrinsics_shape``, ``nonfinite_intrinsics`` (NaN / inf), ``bad_focal`` (fx or fy <= 0),
    ``bad_principal_point`` (cx, cy outside [-W, 2W] x [-H, 2H], a sign of K belonging to another image size).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.size != 9:
        raise FrameError("bad_intrinsics_shape", f"K has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise FrameError("nonfinite_intrinsics", "K contains NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FrameError("bad_focal", f"fx={K[0, 0]:g}, fy={K[1, 1]:g} must be > 0 (uncalibrated camera?)")
    if width is not None and height is not None:
        cx, cy = K[0, 2], K[1, 2]
        if not (-width <= cx <= 2 * width and -height <= cy <= 2 * height):
            raise FrameError("bad_principal_point", f"cx={cx:g}, cy={cy:g} do not fit a {width}x{height} image")
    return K


def validate_frame(frame: Frame, max_side: int = MAX_SIDE) -> Frame:
    """Check a :class:`Frame` (stamp, image dtype/shape/size, K); returns it (K converted to float64)."""
    if not isinstance(frame.stamp_ns, int | np.integer) or frame.stamp_ns < 0:
        raise FrameError("bad_stamp", f"stamp_ns={frame.stamp_ns!r} must be a non-negative integer")
    rgb = frame.rgb
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise FrameError("bad_image_shape", f"rgb must be (H, W, 3), got {shape}")
    if rgb.dtype != np.uint8:
        raise FrameError("bad_image_dtype", f"rgb must be uint8, got {rgb.dtype}")
    check_image_size(rgb.shape[1], rgb.shape[0], max_side)
    if frame.K is not None:
        frame.K = check_intrinsics(frame.K, rgb.shape[1], rgb.shape[0])
    return frame
