"""Peer processes for the ROS interface tests: a publisher or a service server in its own process.

Run as ``python ros_peers.py ROLE --timeout SECONDS``; the environment (ROS_DOMAIN_ID, discovery range,
log dir) comes from the ``ros_env`` fixture. The expected messages are built here and imported by the tests,
so both sides agree on the values. Float32 fields use exactly representable values (0.25, 0.5, ...).
"""

import argparse
import sys
import time

WINDOW_TOPIC = "da3_test/window_result"
TF_TOPIC = "da3_test/tf"
SAVE_MAP_SERVICE = "da3_test/save_map"


def make_window_result():
    from builtin_interfaces.msg import Time
    from da3_ros_interfaces.msg import WindowResult
    from geometry_msgs.msg import Pose

    msg = WindowResult()
    msg.header.stamp = Time(sec=1700000000, nanosec=123456789)
    msg.header.frame_id = "map"
    msg.stamps = [Time(sec=1700000000, nanosec=n) for n in (23456789, 73456789, 123456789)]
    poses = []
    for i in range(3):
        p = Pose()
        p.position.x, p.position.y, p.position.z = 0.1 * i, -0.2 * i, 1.5 + i
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (
            0.0,
            0.0,
            0.6 * (i % 2),
            0.8 if i % 2 else 1.0,
        )
        poses.append(p)
    msg.poses = poses
    msg.intrinsics = [v for i in range(3) for v in (500.0 + i, 0.0, 320.5, 0.0, 501.25 + i, 240.75, 0.0, 0.0, 1.0)]
    msg.width, msg.height = 640, 480
    msg.scale = 0.5
    msg.is_metric = True
    msg.model_variant = "da3nested-giant-large"
    msg.inference_time_s = 0.25
    msg.total_latency_s = 0.75
    msg.window_index = 7
    msg.frames_dropped = 2
    return msg


def make_tf_message():
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    transforms = []
    for i, child in enumerate(("camera_optical_frame", "camera_link")):
        t = TransformStamped()
        t.header.stamp = Time(sec=42, nanosec=1000 * (i + 1))
        t.header.frame_id = "map"
        t.child_frame_id = child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = 1.0 + i, -2.0, 0.5
        t.transform.rotation.x, t.transform.rotation.y = 0.5, -0.5
        t.transform.rotation.z, t.transform.rotation.w = 0.5, -0.5
        transforms.append(t)
    return TFMessage(transforms=transforms)


def save_map_response(request, response):
    """What the test server answers: every response field derived from the request."""
    base = request.output_dir.rstrip("/")
    response.success = bool(base)
    response.message = f"saved to {base}" if base else "output_dir is empty"
    response.map_path = f"{base}/map.ply" if base else ""
    response.trajectory_path = f"{base}/trajectory.tum" if base else ""
    response.num_points = 123456 if base else 0
    response.num_frames = 42 if base else 0
    return response


def _publish(node, msg_type, topic, msg, deadline):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    pub = node.create_publisher(msg_type, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    # Publish until stopped or timeout: the subscriber may discover us late.
    while time.monotonic() < deadline and rclpy.ok():
        try:
            pub.publish(msg)
        except Exception:  # context shut down by a signal between ok() and publish()
            break
        time.sleep(0.05)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["pub-window", "pub-tf", "save-map-server"])
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import ExternalShutdownException

    deadline = time.monotonic() + args.timeout
    try:
        with rclpy.init():
            node = rclpy.create_node(f"da3_test_{args.role.replace('-', '_')}")
            print("ready", flush=True)
            if args.role == "pub-window":
                from da3_ros_interfaces.msg import WindowResult

                _publish(node, WindowResult, WINDOW_TOPIC, make_window_result(), deadline)
            elif args.role == "pub-tf":
                from tf2_msgs.msg import TFMessage

                _publish(node, TFMessage, TF_TOPIC, make_tf_message(), deadline)
            else:
                from da3_ros_interfaces.srv import SaveMap

                node.create_service(SaveMap, SAVE_MAP_SERVICE, save_map_response)
                while time.monotonic() < deadline:
                    rclpy.spin_once(node, timeout_sec=0.1)
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
