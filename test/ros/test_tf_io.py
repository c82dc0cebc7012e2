"""TfListener without DDS (a stand-in node): an image waits for the TF sample of its own stamp, the map frame's
transforms are never stored, and a frame is annotated with its pose and rig mount."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tf2_msgs.msg", reason="needs the generated tf2_msgs (make .venv)")

from da3_core.stream.frame import Frame  # noqa: E402
from da3_ros.tf_io import TfListener  # noqa: E402

MS = 1_000_000


class StandInNode:
    def create_subscription(self, *args, **kwargs):
        return None

    def get_logger(self):
        class Quiet:
            def warning(self, *args, **kwargs):
                pass
        return Quiet()


def moved(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def test_readiness_needs_the_sample_of_the_stamp_and_annotation_uses_the_tolerance():
    tf = TfListener(StandInNode(), "map", tolerance_ns=60 * MS)
    tf.buffer.add("odom", "base_link", 0, moved(0.0))
    tf.buffer.add("odom", "base_link", 50 * MS, moved(1.0))
    tf.buffer.add_static("base_link", "cam", moved(0.5))
    early = Frame(stamp_ns=100 * MS, rgb=np.zeros((2, 2, 3), np.uint8), frame_id="cam")
    assert not tf.has("odom", early)  # its odometry sample (100 ms) has not arrived: wait, do not take 50 ms
    late = tf.annotate(early, "odom", "base_link")  # the wait is over: the nearest sample within the tolerance
    np.testing.assert_allclose(np.linalg.inv(late.pose_w2c)[0, 3], 1.5)
    np.testing.assert_allclose(late.mount, moved(0.5))
    tf.buffer.add("odom", "base_link", 100 * MS, moved(2.0))
    assert tf.has("odom", early)
    np.testing.assert_allclose(np.linalg.inv(tf.annotate(early, "odom", None).pose_w2c)[0, 3], 2.5)
    assert tf.snapshot_counts()["pose_lookup_ok"] == 2 and tf.snapshot_counts()["rig_mount_ok"] == 1
    free = Frame(stamp_ns=0, rgb=early.rgb, frame_id="other_cam")
    assert tf.annotate(free, "odom", None).pose_w2c is None
    assert tf.snapshot_counts()["pose_lookup_failed_unknown_frame"] == 1


def test_transforms_from_the_map_frame_are_never_stored():
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    tf = TfListener(StandInNode(), "map")
    ours, robot = TransformStamped(), TransformStamped()
    ours.header.frame_id, ours.child_frame_id = "map", "odom"  # what the node itself publishes
    robot.header.frame_id, robot.child_frame_id = "odom", "base_link"
    for t in (ours, robot):
        t.transform.rotation.w = 1.0
    tf._on_tf(TFMessage(transforms=[ours, robot]), static=False)
    assert tf.buffer.parent_of("odom") is None and tf.buffer.parent_of("base_link") == "odom"
    assert tf.snapshot_counts() == {"tf_transforms_stored": 1, "tf_transforms_ignored_map_frame": 1}
