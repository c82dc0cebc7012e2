"""ROS 2 interfaces of da3-ros: da3_ros_interfaces (WindowResult, SaveMap) and tf2_msgs/TFMessage.

Round trips go between two processes over loopback DDS: a peer subprocess (ros_peers.py) publishes or serves,
this test subscribes or calls in its own rclpy context. Each test has its own ROS_DOMAIN_ID (`ros_env`).
"""

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

try:
    import rclpy
    from da3_ros_interfaces.msg import WindowResult
    from da3_ros_interfaces.srv import SaveMap
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from tf2_msgs.msg import TFMessage
except ImportError as exc:  # a venv without the ROS wheels; CI always has them (make .venv builds the interfaces)
    if os.environ.get("CI"):
        raise
    pytest.skip(f"ROS 2 interfaces not importable ({exc}); run `make .venv`", allow_module_level=True)

from ros_peers import SAVE_MAP_SERVICE, TF_TOPIC, WINDOW_TOPIC, make_tf_message, make_window_result
from support.processes import captured_process

pytestmark = pytest.mark.ros

PEERS = Path(__file__).with_name("ros_peers.py")
TIMEOUT_S = 20.0
UPSTREAM_TFMESSAGE_HASH_PREFIX = "RIHS01_e369d0f0"  # tf2_msgs/msg/TFMessage of ROS 2 Jazzy/Kilted


def peer(role, env):
    """Run a ros_peers.py role in a subprocess; stop it with SIGINT (then SIGKILL) on exit."""
    return captured_process([sys.executable, str(PEERS), role, "--timeout", str(TIMEOUT_S + 10)], env)


@contextlib.contextmanager
def local_node(name, env):
    """An rclpy node in this process, in its own context on the test's domain."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]), signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def receive_one(msg_type, topic, role, env):
    """Subscribe in this process while a peer process publishes; return the first message received."""
    received = []
    with peer(role, env) as proc, local_node("da3_test_subscriber", env) as (node, executor):
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(msg_type, topic, received.append, qos)
        deadline = time.monotonic() + TIMEOUT_S
        while not received and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    assert received, f"no {msg_type.__name__} within {TIMEOUT_S} s; peer output:\n{proc.output}"
    return received[0]


def test_interface_fields():
    assert WindowResult.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "stamps": "sequence<builtin_interfaces/Time>",
        "poses": "sequence<geometry_msgs/Pose>",
        "frame_ids": "sequence<string>",
        "intrinsics": "sequence<double>",
        "width": "uint32",
        "height": "uint32",
        "scale": "float",
        "is_metric": "boolean",
        "model_variant": "string",
        "inference_time_s": "float",
        "total_latency_s": "float",
        "window_index": "uint32",
        "frames_dropped": "uint32",
    }
    assert SaveMap.Request.get_fields_and_field_types() == {"output_dir": "string"}
    assert SaveMap.Response.get_fields_and_field_types() == {
        "success": "boolean",
        "message": "string",
        "map_path": "string",
        "trajectory_path": "string",
        "num_points": "uint32",
        "num_frames": "uint32",
    }
    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    from da3_ros_interfaces.msg import DriftReport

    assert DriftReport.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "window_index": "uint32", "duration_s": "double",
        "odometry_distance_m": "double", "estimate_distance": "double", "estimate_is_metric": "boolean",
        "distance_ratio": "double", "estimate_source": "string", "scale": "double", "slip": "double",
        "rotation_drift_deg": "double", "translation_drift_m": "double"}


def test_tf_message_type_hash_matches_upstream():
    from ament_index_python.packages import get_package_share_directory

    description = Path(get_package_share_directory("tf2_msgs")) / "msg" / "TFMessage.json"
    hashes = json.loads(description.read_text())["type_hashes"]
    own = next(h["hash_string"] for h in hashes if h["type_name"] == "tf2_msgs/msg/TFMessage")
    assert own.startswith(UPSTREAM_TFMESSAGE_HASH_PREFIX), own


def test_window_result_round_trip(ros_env):
    got = receive_one(WindowResult, WINDOW_TOPIC, "pub-window", ros_env)
    expected = make_window_result()
    assert got.header.frame_id == "map"
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1700000000, 123456789)
    assert [s.nanosec for s in got.stamps] == [23456789, 73456789, 123456789]
    assert len(got.poses) == 3 and got.poses[2].position.z == 3.5 and got.poses[1].orientation.w == 0.8
    assert list(got.intrinsics) == list(expected.intrinsics) and len(got.intrinsics) == 27
    assert (got.width, got.height, got.scale, got.is_metric) == (640, 480, 0.5, True)
    assert got.model_variant == "da3nested-giant-large"
    assert (got.inference_time_s, got.total_latency_s) == (0.25, 0.75)
    assert (got.window_index, got.frames_dropped) == (7, 2)
    assert got == expected


def test_tf_message_round_trip(ros_env):
    got = receive_one(TFMessage, TF_TOPIC, "pub-tf", ros_env)
    assert [t.child_frame_id for t in got.transforms] == ["camera_optical_frame", "camera_link"]
    assert got.transforms[1].transform.translation.x == 2.0
    assert got == make_tf_message()


def test_save_map_service_round_trip(ros_env):
    with peer("save-map-server", ros_env) as proc, local_node("da3_test_client", ros_env) as (node, executor):
        client = node.create_client(SaveMap, SAVE_MAP_SERVICE)
        assert client.wait_for_service(timeout_sec=TIMEOUT_S), "SaveMap service did not appear"

        def call(output_dir):
            future = client.call_async(SaveMap.Request(output_dir=output_dir))
            executor.spin_until_future_complete(future, timeout_sec=TIMEOUT_S)
            assert future.done(), f"no SaveMap response; peer alive: {proc.poll() is None}"
            return future.result()

        ok = call("/tmp/da3_maps/run1/")
        failed = call("")
    assert ok.success and ok.message == "saved to /tmp/da3_maps/run1"
    assert (ok.map_path, ok.trajectory_path) == ("/tmp/da3_maps/run1/map.ply", "/tmp/da3_maps/run1/trajectory.tum")
    assert (ok.num_points, ok.num_frames) == (123456, 42)
    assert not failed.success and failed.message == "output_dir is empty" and failed.map_path == ""
