"""Pose conditioning from TF, end to end: synthetic_camera also broadcasts the ground-truth TF odom -> camera at each
image stamp; the node (tiny untrained network, ``pose_source_frame:=odom``) looks it up for every image and conditions
the network on it. The API returns the given poses, so the node's poses are the odometry's: the camera has a parent
(odom), so the map starts at odom's pose of the first frame (map = odom here) and the node publishes only map -> odom
(the identity), never a second parent for the camera; windows are metric (TF is in metres), scale 1.
"""

import os
import signal
import time

import numpy as np
import pytest

try:
    import rclpy  # noqa: F401
    from da3_ros_interfaces.msg import WindowResult  # noqa: F401
except ImportError as exc:  # a venv without the ROS wheels; CI always has them
    if os.environ.get("CI"):
        raise
    pytest.skip(f"ROS 2 interfaces not importable ({exc}); run `make .venv`", allow_module_level=True)

from node_helpers import (
    CAMERA_MODULE,
    NODE_MODULE,
    collector,
    diagnostics,
    pose_to_matrix,
    ros_process,
    stamp_ns,
)
from test_reconstruct_node import stop_cleanly, wait_node_ready

from da3_core.data.synthetic.sequence import SyntheticSequence

pytestmark = pytest.mark.ros

SPEC = "kind=objects,seed=1,frames=7,size=168x126"
CAM = "tf_cam_optical"
WINDOW, OVERLAP = 4, 1


def prime_camera_info(col, seq, stamp: int) -> None:
    """One CameraInfo (at a stamp no image has) before the camera starts: a frame that arrives before any CameraInfo
    was ever seen leaves the pairing at once without K (and its window could not be conditioned), and the camera's
    first image and CameraInfo reach the node in either order."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from da3_ros.conversions import make_camera_info, ns_to_stamp

    pub = col.node.create_publisher(CameraInfo, "camera_info", QoSProfile(depth=1,
                                                                          reliability=ReliabilityPolicy.RELIABLE))
    assert col.wait_for(lambda: pub.get_subscription_count() >= 1, 10.0)
    h, w = seq.hw
    pub.publish(make_camera_info(seq.K, w, h, Header(stamp=ns_to_stamp(stamp), frame_id=CAM)))
    time.sleep(0.5)


def test_tf_pose_conditioning_tiny_network(ros_env, tmp_path):
    seq = SyntheticSequence.from_spec(SPEC)
    stamps = [seq.stamp_ns(i) for i in range(len(seq))]
    params = {"predictor": "da3", "process_res": 140, "device": "cpu", "window_size": WINDOW, "overlap": OVERLAP,
              "input_qos": "reliable", "input_queue_depth": 20, "max_pending_windows": 16, "diagnostics_rate_hz": 5.0,
              "pose_source_frame": "odom", "pose_tf_tolerance_s": 0.01}
    with collector(ros_env) as col, ros_process(NODE_MODULE, ros_env, tmp_path, "node", params=params) as node:
        wait_node_ready(col, node, timeout=60.0)
        prime_camera_info(col, seq, stamps[0] - 1_000_000_000)
        with ros_process(CAMERA_MODULE, ros_env, tmp_path, "camera",
                         params={"sequence": SPEC, "frame_id": CAM, "wait_for_subscribers": 1,
                                 "publish_tf_frame": "odom"}) as cam:
            def done():
                d = diagnostics(col) or {}
                return not node.alive() or (not cam.alive() and int(d.get("windows_out", "0")) >= 2
                                            and int(d.get("pose_lookup_ok", "0")) >= len(seq))
            ok = col.wait_for(done, 60.0)
        assert node.alive(), node.output()
        assert ok, f"no conditioned windows: {diagnostics(col)}\n{node.output()}\n{cam.output()}"
        diag = diagnostics(col)
        path = col.last("path")
        tf_msgs = col.get("/tf")
        stop_cleanly(node, signal.SIGTERM, timeout=20.0)

    log = node.stderr() + node.stdout()
    assert "pose conditioning from TF odom -> <image header frame_id>" in log, log[-3000:]
    # every image found its pose; both windows were conditioned; our own map -> camera broadcast was ignored
    assert int(diag["pose_lookup_ok"]) == int(diag["frames_in"]) == len(seq), diag
    assert not any(k.startswith("pose_lookup_failed") for k in diag), diag
    assert int(diag["windows_pose_conditioned"]) == 2 and diag["pose_source"] == "TF odom", diag
    assert int(diag["tf_transforms_ignored_map_frame"]) >= 1, diag
    assert diag["metric"] == "True" and diag["tf_mode"] == "map_to_odom" and diag["map_tf_child"] == "odom", diag
    ours = [t for m in tf_msgs for t in m.transforms if t.header.frame_id == "map"]
    assert ours and {t.child_frame_id for t in ours} == {"odom"}  # never map -> camera: it has a parent
    for t in ours:  # the poses are odometry's, so the correction map -> odom is the identity
        T = pose_to_matrix(t.transform.translation, t.transform.rotation)
        assert np.abs(T - np.eye(4)).max() < 1e-5, T

    windows = col.get("window")
    assert len(windows) == 2 and all(w.is_metric and w.scale == 1.0 for w in windows), windows
    # the node's poses are the odometry's (map = odom): the first window's are the given ones, later windows reuse the
    # first window's transform (both conditioned on the same source), so their poses are the given ones too
    path_stamps = [stamp_ns(p.header.stamp) for p in path.poses]
    assert path_stamps == stamps, path_stamps
    for p in path.poses:
        i = stamps.index(stamp_ns(p.header.stamp))
        T = pose_to_matrix(p.pose.position, p.pose.orientation)
        np.testing.assert_allclose(T, np.linalg.inv(seq.w2c[i]), atol=1e-5, err_msg=f"frame {i}")
