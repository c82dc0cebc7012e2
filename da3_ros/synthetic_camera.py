"""synthetic_camera: publishes a rendered synthetic sequence as a camera driver would (Image + CameraInfo).

Stamps are the sequence's own (``SyntheticSequence.stamp_ns``), so a node with the geometry oracle or a test can look
the ground truth up by stamp. ``rate_scale`` speeds playback up (2.0 = twice the sequence fps); ``loop`` restarts
at the end (with stamps continuing by the sequence length); ``publish_clock`` also publishes /clock for
``use_sim_time`` consumers; ``wait_for_subscribers`` holds the first frame until that many subscribers matched.
``publish_tf_frame`` (opt-in, '' = off), e.g. ``odom``: also broadcasts the ground-truth camera pose as TF
``<publish_tf_frame> -> <frame_id>`` on /tf at each image stamp, before the image (the sequence's world frame plays
odom: the transform is the frame's camera-to-world).
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from da3_core.data.synthetic.sequence import SyntheticSequence
from da3_ros.conversions import c2w_to_transform, make_camera_info, ns_to_stamp


def rgb_image_msg(rgb, header: Header) -> Image:
    h, w, _ = rgb.shape
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w, data=rgb.tobytes())


class SyntheticCamera(Node):
    def __init__(self) -> None:
        super().__init__("synthetic_camera")
        self.declare_parameter("sequence", "kind=room,seed=0,frames=24,size=504x378")
        self.declare_parameter("frame_id", "camera_optical_frame")
        self.declare_parameter("rate_scale", 1.0)
        self.declare_parameter("loop", False)
        self.declare_parameter("reliable", True)
        self.declare_parameter("publish_clock", False)
        # start the sequence only once image and camera_info each have this many subscribers (0 = at once); without
        # it, frames published before DDS discovery matched the consumer are lost (reliable or not)
        self.declare_parameter("wait_for_subscribers", 0)
        self.declare_parameter("publish_tf_frame", "")
        self.seq = SyntheticSequence.from_spec(self.get_parameter("sequence").value)
        self.frame_id = self.get_parameter("frame_id").value
        self.loop = bool(self.get_parameter("loop").value)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if self.get_parameter("reliable").value
                         else ReliabilityPolicy.BEST_EFFORT)
        self.pub_image = self.create_publisher(Image, "image", qos)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos)
        self.tf_frame = str(self.get_parameter("publish_tf_frame").value)
        tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)  # tf2's broadcaster QoS
        self.pub_tf = self.create_publisher(TFMessage, "/tf", tf_qos) if self.tf_frame else None
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if self.get_parameter("publish_clock").value \
            else None
        self.index = 0
        self.wait_for_subscribers = int(self.get_parameter("wait_for_subscribers").value)
        period = 1.0 / (self.seq.spec.fps * float(self.get_parameter("rate_scale").value))
        self.timer = self.create_timer(period, self._tick)
        self.done = False

    def _tick(self) -> None:
        need = self.wait_for_subscribers
        pubs = [self.pub_image, self.pub_info] + ([self.pub_tf] if self.pub_tf is not None else [])
        if self.index == 0 and need > 0 and min(p.get_subscription_count() for p in pubs) < need:
            return
        n = len(self.seq)
        if self.index >= n and not self.loop:
            self.done = True
            return
        i = self.index % n
        stamp_ns = self.seq.stamp_ns(i) + (self.index // n) * int(round(n * 1e9 / self.seq.spec.fps))
        frame = self.seq.frame(i)
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=self.frame_id)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)))
        if self.pub_tf is not None:
            c2w = np.linalg.inv(self.seq.w2c[self.seq.pose_index(i)])
            self.pub_tf.publish(TFMessage(transforms=[c2w_to_transform(c2w, Header(stamp=header.stamp,
                                                                                    frame_id=self.tf_frame),
                                                                       self.frame_id)]))
        h, w = self.seq.hw
        self.pub_info.publish(make_camera_info(frame.K, w, h, header))
        self.pub_image.publish(rgb_image_msg(frame.rgb, header))
        self.index += 1


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SyntheticCamera()
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
