"""Where the reconstruction hangs in a robot's TF tree (REP-105), ROS-free.

A camera on a robot already has a parent: robot_state_publisher gives ``base_link -> camera_link ->
camera_optical_frame`` and odometry gives ``odom -> base_link``. tf2 keeps one parent per frame, so broadcasting
``map -> camera_optical_frame`` there would give the camera a second parent. Localisation nodes (slam_toolbox, AMCL,
robot_localization) publish the correction ``map -> odom`` instead; :class:`MapTfPlanner` does the same:

- ``map_to_camera``: a free camera (a bag of images, no TF): ``map -> <camera frame>`` = the camera's map pose.
- ``map_to_odom``: the camera frame has a parent. The node publishes ``map -> <root>`` only, where ``root`` is
  ``odom_frame`` when set (it must be an ancestor of the camera), else the top of the camera's chain (normally
  ``odom``). The correction at a frame's stamp is ``T(map <- root) = T(map <- camera) T(root <- camera)^-1`` with
  ``T(root <- camera)`` from the TF buffer (every edge of the chain, static and dynamic, composed at that stamp),
  stamped ``stamp + future_dating_ns`` as localisation nodes do, so that lookups at "now" do not extrapolate.
  :meth:`MapTfPlanner.republish` re-sends the newest correction stamped ``now + future_dating_ns`` (slam_toolbox's
  periodic map -> odom). Published stamps only ever increase: a correction older than the last one sent (its window
  came late) is skipped and counted (``map_tf_superseded``), so tf2 never gets two values for one stamp.
- ``auto`` (default): ``map_to_odom`` as soon as the camera frame has a parent in the buffer (from /tf or
  /tf_static), else ``map_to_camera``; the choice is made for each batch of outputs and switches at most once, from
  camera to odom (a parent that appears later), never back.

The node never gives a frame a second parent: ``map -> camera`` is never published once the camera has a parent,
and the node ignores transforms whose parent is the map frame when it builds its own buffer.

``pose`` / ``path`` are of ``base_frame`` (``pose_frame="auto"`` on a robot, when base_frame is an ancestor of the
camera) or of the camera: ``T(map <- base) = T(map <- camera) T(base <- camera)^-1``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.tf_buffer import TransformBuffer, TransformLookupError

__all__ = ["TF_MODES", "POSE_FRAMES", "StampedTransform", "TfOutputs", "MapTfPlanner", "ancestors"]

TF_MODES = ("auto", "map_to_odom", "map_to_camera")
POSE_FRAMES = ("auto", "base", "camera")


@dataclass(frozen=True)
class StampedTransform:
    """``T`` (4, 4) = T(parent <- child) at ``stamp_ns`` (a geometry_msgs/TransformStamped)."""

    parent: str
    child: str
    stamp_ns: int
    T: np.ndarray


@dataclass
class TfOutputs:
    """What to publish for a batch of delivered frames: ``transforms`` for /tf, ``poses`` (stamp_ns, T(map <- x))
    of the pose frame ``pose_child`` for ``pose`` / ``path``."""

    transforms: list[StampedTransform] = field(default_factory=list)
    poses: list[tuple[int, np.ndarray]] = field(default_factory=list)
    pose_child: str = ""


def ancestors(buffer: TransformBuffer, frame: str, max_hops: int = 64) -> list[str]:
    """``[parent, grandparent, ..., root]`` of ``frame`` in ``buffer`` (empty for a frame without a parent)."""
    out: list[str] = []
    parent = buffer.parent_of(frame)
    while parent is not None and parent not in out and len(out) < max_hops:
        out.append(parent)
        parent = buffer.parent_of(parent)
    return out


class MapTfPlanner:
    """Decides what the node broadcasts for its map frame and which pose it reports (module docstring).

    ``buffer``: the node's TF buffer (None: no TF input, always ``map_to_camera``); ``tolerance_ns``: how far an
    image stamp may lie outside an edge's history. ``counts``: ``map_tf_lookup_failed_<reason>``,
    ``pose_lookup_base_failed_<reason>``, ``odom_frame_not_ancestor``, ``tf_mode_switched``.
    """

    def __init__(self, map_frame: str, buffer: TransformBuffer | None = None, mode: str = "auto",
                 odom_frame: str = "", base_frame: str = "base_link", pose_frame: str = "auto",
                 future_dating_ns: int = 0, tolerance_ns: int = 0):
        if mode not in TF_MODES:
            raise ValueError(f"tf_mode must be one of {', '.join(TF_MODES)}, got {mode!r}")
        if pose_frame not in POSE_FRAMES:
            raise ValueError(f"pose_frame must be one of {', '.join(POSE_FRAMES)}, got {pose_frame!r}")
        self.map_frame, self.buffer, self.requested = map_frame, buffer, mode
        self.odom_frame, self.base_frame, self.pose_frame = odom_frame, base_frame, pose_frame
        self.future_dating_ns, self.tolerance_ns = int(future_dating_ns), int(tolerance_ns)
        self.counts: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Forget the mode and the latest correction (a new map)."""
        self.mode: str | None = None
        self.root: str | None = None
        self.latest: StampedTransform | None = None  # newest map -> root correction (by image stamp)
        self.last_sent_ns = -1  # stamp of the newest map -> root transform handed out

    # --- the tree ---------------------------------------------------------------------------------------------------

    def root_of(self, camera_frame: str) -> str | None:
        """The frame the map hangs above: ``odom_frame`` if it is an ancestor of the camera, else the top of the
        camera's chain; None for a camera frame without a parent."""
        if self.buffer is None:
            return None
        chain = [f for f in ancestors(self.buffer, camera_frame) if f != self.map_frame]
        if not chain:
            return None
        if self.odom_frame:
            if self.odom_frame in chain:
                return self.odom_frame
            self.counts["odom_frame_not_ancestor"] += 1
        return chain[-1]

    def decide(self, camera_frame: str) -> str:
        """The mode for this batch (module docstring); switches at most once, camera -> odom."""
        if self.requested == "map_to_camera" or self.buffer is None:
            self.mode = "map_to_camera"
            return self.mode
        root = self.root_of(camera_frame)
        if root is not None:
            if self.mode == "map_to_camera":
                self.counts["tf_mode_switched"] += 1
            elif self.root is not None and root != self.root:
                self.counts["tf_root_changed"] += 1
            self.mode, self.root = "map_to_odom", root
        elif self.requested == "map_to_odom":
            self.counts["map_tf_no_parent"] += 1  # asked for map -> odom, but the tree is not there (yet)
            self.mode = "map_to_odom"
        elif self.mode is None:
            self.mode = "map_to_camera"
        return self.mode

    def _lookup(self, target: str, source: str, stamp_ns: int, what: str) -> np.ndarray | None:
        try:
            return self.buffer.lookup(target, source, stamp_ns, self.tolerance_ns)
        except TransformLookupError as exc:
            self.counts[f"{what}_failed_{exc.reason}"] += 1
            return None

    def _pose_child(self, camera_frame: str) -> str:
        if self.pose_frame == "camera" or self.buffer is None:
            return camera_frame
        if self.base_frame in ancestors(self.buffer, camera_frame):
            return self.base_frame
        if self.pose_frame == "base":
            self.counts["base_frame_not_ancestor"] += 1
        return camera_frame

    # --- outputs ----------------------------------------------------------------------------------------------------

    def outputs(self, camera_frame: str, frames: list[tuple[int, np.ndarray]]) -> TfOutputs:
        """Transforms and poses for delivered frames of one camera: ``frames`` = [(stamp_ns, T(map <- camera))]."""
        mode = self.decide(camera_frame)
        out = TfOutputs(pose_child=camera_frame)
        if mode == "map_to_camera":
            out.transforms = [StampedTransform(self.map_frame, camera_frame, s, c2w) for s, c2w in frames]
            out.poses = list(frames)
        else:
            out.pose_child = self._pose_child(camera_frame)
            for s, c2w in frames:
                if self.root is not None:
                    T_root_cam = self._lookup(self.root, camera_frame, s, "map_tf_lookup")
                    if T_root_cam is not None:
                        tf = StampedTransform(self.map_frame, self.root, s + self.future_dating_ns,
                                              c2w @ invert_rigid(T_root_cam))
                        if self.latest is None or tf.stamp_ns >= self.latest.stamp_ns:
                            self.latest = tf
                        if tf.stamp_ns > self.last_sent_ns:
                            out.transforms.append(tf)
                            self.last_sent_ns = tf.stamp_ns
                        else:
                            self.counts["map_tf_superseded"] += 1
                if out.pose_child == camera_frame:
                    out.poses.append((s, c2w))
                    continue
                T_base_cam = self._lookup(out.pose_child, camera_frame, s, "pose_lookup_base")
                if T_base_cam is not None:
                    out.poses.append((s, c2w @ invert_rigid(T_base_cam)))
        return out

    def republish(self, now_ns: int) -> StampedTransform | None:
        """The newest map -> root correction stamped ``now_ns + future_dating_ns`` (what slam_toolbox publishes
        periodically), or None when there is none or a transform that new was already sent."""
        if self.mode != "map_to_odom" or self.latest is None:
            return None
        stamp = int(now_ns) + self.future_dating_ns
        if stamp <= self.last_sent_ns:
            return None
        self.last_sent_ns = stamp
        return StampedTransform(self.latest.parent, self.latest.child, stamp, self.latest.T)

