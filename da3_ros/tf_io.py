"""The reconstruct node's TF input and output (rclpy messages <-> the ROS-free buffer and planner).

:class:`TfListener` subscribes to ``/tf`` (volatile) and ``/tf_static`` (latched), both reliable as tf2's listener
does, and keeps them in a :class:`~da3_core.stream.tf_buffer.TransformBuffer` (no tf2_ros dependency). Transforms
whose parent is the node's map frame are never stored: they are the node's own output (or another localiser's), and a
node must not build its poses on what it publishes. :func:`transform_msgs` turns the planner's
:class:`~da3_core.stream.tf_tree.StampedTransform` list into a ``tf2_msgs/TFMessage``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_core.geometry.rigid import invert_rigid
from da3_core.geometry.rotations import quat_xyzw_to_rotation
from da3_core.stream.frame import Frame
from da3_core.stream.tf_buffer import TransformBuffer, TransformLookupError
from da3_core.stream.tf_tree import StampedTransform
from da3_ros.conversions import c2w_to_transform, ns_to_stamp, stamp_to_ns

__all__ = ["TfListener", "transform_msg_to_matrix", "transform_msgs", "TF_QOS", "TF_STATIC_QOS"]

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transform_msg_to_matrix(tf) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) ``T_parent_child``; ValueError for non-finite values or a quaternion whose
    norm is off 1 by more than 1 % (tf2 rejects those too)."""
    q = np.array([tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w], dtype=np.float64)
    t = np.array([tf.translation.x, tf.translation.y, tf.translation.z], dtype=np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or abs(np.linalg.norm(q) - 1.0) > 1e-2:
        raise ValueError(f"bad transform: translation {t.tolist()}, rotation xyzw {q.tolist()}")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = quat_xyzw_to_rotation(q), t
    return T


def transform_msgs(transforms: list[StampedTransform]) -> TFMessage:
    return TFMessage(transforms=[c2w_to_transform(t.T, Header(stamp=ns_to_stamp(t.stamp_ns), frame_id=t.parent),
                                                  t.child) for t in transforms])


class TfListener:
    """/tf + /tf_static -> ``buffer``. ``on_stored()`` runs after a message added at least one transform;
    ``counts``: ``tf_transforms_stored``, ``tf_transforms_ignored_map_frame``, ``tf_transforms_rejected``, and the
    frame annotations' ``<what>_ok`` / ``<what>_failed_<reason>``. ``tolerance_ns``: how far an image stamp may lie
    outside an edge's history (:meth:`TransformBuffer.lookup`)."""

    def __init__(self, node, map_frame: str, cache_time_s: float = 10.0, on_stored: Callable[[], None] | None = None,
                 tolerance_ns: int = 0):
        self.buffer = TransformBuffer(cache_time_s=cache_time_s)
        self.tolerance_ns = int(tolerance_ns)
        self.map_frame = map_frame
        self.on_stored = on_stored
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._logger = node.get_logger()
        node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS)
        node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), TF_STATIC_QOS)

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        ignored = rejected = stored = 0
        for t in msg.transforms:
            parent, child = t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/")
            if parent == self.map_frame:  # our own map -> camera / odom broadcast (or another localiser's)
                ignored += 1
                continue
            try:
                ok = self.buffer.add(parent, child, stamp_to_ns(t.header.stamp), transform_msg_to_matrix(t.transform),
                                     static=static)
            except ValueError as exc:
                rejected += 1
                self._logger.warning(f"ignored TF {parent!r} -> {child!r}: {exc}", throttle_duration_sec=5.0)
                continue
            stored += int(ok)
        with self._lock:
            self.counts["tf_transforms_stored"] += stored
            if ignored:
                self.counts["tf_transforms_ignored_map_frame"] += ignored
            if rejected:
                self.counts["tf_transforms_rejected"] += rejected
        if stored and self.on_stored is not None:
            self.on_stored()

    # --- what TF knows of an image ----------------------------------------------------------------------------------

    def has(self, target: str, frame: Frame) -> bool:
        """Whether T(target <- the frame's camera) is known at the frame's stamp, inside the history (its TF may come
        after the image). No tolerance here: an image that arrives before the odometry sample of its stamp waits for
        it instead of taking the previous sample; once its wait is over, :meth:`lookup` allows the tolerance."""
        try:
            self.buffer.lookup(target, frame.frame_id, frame.stamp_ns, 0)
        except TransformLookupError:
            return False
        return True

    def lookup(self, target: str, frame: Frame, what: str) -> np.ndarray | None:
        """T(target <- the frame's camera) at its stamp, or None; counted as ``<what>_ok`` / ``_failed_<reason>``."""
        try:
            T = self.buffer.lookup(target, frame.frame_id, frame.stamp_ns, self.tolerance_ns)
        except TransformLookupError as exc:
            with self._lock:
                self.counts[f"{what}_failed_{exc.reason}"] += 1
            self._logger.warning(f"{what}: none for the image at {frame.stamp_ns} ns ({frame.frame_id}): {exc}",
                                 throttle_duration_sec=5.0)
            return None
        with self._lock:
            self.counts[f"{what}_ok"] += 1
        return T

    def annotate(self, frame: Frame, pose_frame: str | None, mount_frame: str | None) -> Frame:
        """The frame with its known pose (``pose_w2c`` in ``pose_frame``, e.g. odom) and its mount on a rig
        (``mount`` = T(mount_frame <- camera)), where TF has them."""
        changes = {}
        if pose_frame is not None and (T := self.lookup(pose_frame, frame, "pose_lookup")) is not None:
            changes["pose_w2c"] = invert_rigid(T)
        if mount_frame is not None and (M := self.lookup(mount_frame, frame, "rig_mount")) is not None:
            changes["mount"] = M
        return replace(frame, **changes) if changes else frame

    def snapshot_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
