"""REP-105 over real DDS: a robot bag (odom -> base_link from drifting, noisy, slipping wheel odometry; base_link ->
cam0_link -> cam0_optical_frame on /tf_static) played with /clock to the node with its default TF parameters and the
geometry oracle.

- every child frame seen on /tf and /tf_static has exactly one parent (the node publishes map -> odom only);
- each map -> odom composed with the robot's own odom -> camera (the recorded odometry times the static mounts,
  computed here from the robot) equals the node's camera pose (1e-6);
- base_link in map (the node's path) equals the ground truth after aligning the first frame (1e-4).
Free cameras (no TF, map -> camera) are covered by test_reconstruct_node.py.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest
from node_helpers import NODE_MODULE, REPO, collector, diagnostics, node_params, pose_to_matrix, ros_process, stamp_ns
from support.processes import captured_process

# (test_reconstruct_node skips the module without the ROS wheels)
from test_reconstruct_node import stop_cleanly, wait_node_ready

from da3_ros import bags
from da3_ros.robot_sim import RobotSequence, camera_frame

pytestmark = pytest.mark.ros

SPEC = "robot:kind=room,seed=3,frames=14,size=84x63,fov=70,fps=10,t0=1,cameras=1,slip=0.1,drift=4,noise=0.02"
DATING_S = 0.1  # tf_future_dating_s default


def latched_tf_static(col):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    got = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    col.node.create_subscription(TFMessage, "/tf_static", got.append, qos)
    return got


def play(bag, env):
    cmd = [sys.executable, "-m", "da3_ros.bag_player", str(bag), "--clock", "--wait-subscribers", "20",
           "--start-delay", "1.0"]  # discovery completes on both sides before the first (volatile) image
    return captured_process(cmd, env, cwd=REPO)


def run_robot_bag(ros_env, tmp_path, spec: str, **overrides):
    """Play the robot bag of ``spec`` to the node (oracle, otherwise default TF parameters); returns the robot and the
    collector's messages: {tf, tf_static, window, path, drift, diagnostics}."""
    robot = RobotSequence(spec)
    bag = bags.write_robot_bag(spec, tmp_path / "robot.mcap")
    params = node_params(spec, use_sim_time=True, input_qos="reliable", input_queue_depth=50, max_pending_windows=16,
                         tf_wait_s=3.0, **overrides)  # a loaded machine may deliver /tf late: images wait for it
    remaps = {"image": "/cam0/image_raw", "camera_info": "/cam0/camera_info"}
    with collector(ros_env) as col, ros_process(NODE_MODULE, ros_env, tmp_path, "node", params=params,
                                                remaps=remaps) as node:
        static = latched_tf_static(col)
        wait_node_ready(col, node, topic="/cam0/image_raw", diagnostics_flowing=False)  # sim time: no /clock yet
        with play(bag, ros_env) as player:
            assert player.wait(120) == 0
        # sim time stops with the player (so do the node's timers: diagnostics are then the last ones sent); the
        # latched path is complete once every window is out (6 + 4 + 4 frames)
        col.wait_for(lambda: not node.alive() or (col.last("path") is not None
                                                  and len(col.last("path").poses) == len(robot)), 30.0)
        assert node.alive(), node.output()
        n = 0 if col.last("path") is None else len(col.last("path").poses)
        assert n >= len(robot) - 4, f"{n} poses\n{diagnostics(col)}\n{node.output()}\n{player.output}"
        col.wait_for(lambda: False, 0.5)  # the last re-published map -> odom
        out = {"tf": col.get("/tf"), "tf_static": list(static), "window": col.get("window"), "path": col.last("path"),
               "drift": col.get("drift"), "diagnostics": diagnostics(col)}
        stop_cleanly(node, signal.SIGINT, timeout=20.0)
    return robot, out


def one_parent_per_child(*tf_lists) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for msgs in tf_lists:
        for m in msgs:
            for t in m.transforms:
                parents.setdefault(t.child_frame_id, set()).add(t.header.frame_id)
    return parents


def test_robot_bag_gets_map_to_odom_and_base_link_poses(ros_env, tmp_path):
    robot, got = run_robot_bag(ros_env, tmp_path, SPEC)
    tf, tf_static, windows, path, diag = (got[k] for k in ("tf", "tf_static", "window", "path", "diagnostics"))
    cam = camera_frame(0)
    assert diag["tf_mode"] == "map_to_odom" and diag["map_tf_child"] == "odom", diag

    # 1. one parent per child frame over everything on /tf and /tf_static
    parents = one_parent_per_child(tf, tf_static)
    assert all(len(p) == 1 for p in parents.values()), parents
    assert parents["odom"] == {"map"} and parents["base_link"] == {"odom"} and parents[cam] == {"cam0_link"}, parents

    # 2. map -> odom o odom -> camera (the robot's own odometry and mounts) = the node's camera pose
    stamps = [stamp_ns(p.header.stamp) for p in path.poses]  # every frame the node received (nearly all)
    assert len(stamps) >= len(robot) - 4 and set(stamps) <= {robot.stamp_ns(i) for i in range(len(robot))}
    cam_pose = {}
    for w in windows:
        for s, p in zip(w.stamps, w.poses):
            cam_pose.setdefault(stamp_ns(s), pose_to_matrix(p.position, p.orientation))
    assert sorted(cam_pose) == stamps
    odom_cam = {robot.stamp_ns(i): robot.odom_at_image(i) @ robot.optical_in_base(0) for i in range(len(robot))}
    corrections = [(stamp_ns(t.header.stamp), pose_to_matrix(t.transform.translation, t.transform.rotation))
                   for m in tf for t in m.transforms if t.header.frame_id == "map"]
    assert len(corrections) >= 3
    dating = int(round(DATING_S * 1e9))
    exact = 0
    for stamp, T in corrections:
        # a correction stamped S was computed at an image stamped S - dating (sent with its window) or earlier (the
        # newest one, re-sent at "now" + dating): it must be exactly that image's
        errors = {s: float(np.abs(T @ odom_cam[s] - cam_pose[s]).max()) for s in stamps if s <= stamp - dating}
        assert errors and min(errors.values()) < 1e-6, (stamp, errors)
        exact += int(errors.get(stamp - dating, 1.0) < 1e-6)
    assert exact >= 1
    # the odometry drifts: the correction is far from the identity by the end (the check above is not vacuous)
    assert np.abs(corrections[-1][1] - np.eye(4)).max() > 0.05

    # 3. base_link in map = ground truth after aligning the first frame
    P = [pose_to_matrix(p.pose.position, p.pose.orientation) for p in path.poses]
    G = [robot.base_in_world(robot.index_of(s)) for s in stamps]
    A = P[0] @ np.linalg.inv(G[0])
    err = max(float(np.abs(A @ g - p).max()) for g, p in zip(G, P))
    assert err < 1e-4, err
    # map starts at odom's pose of the first frame: map -> odom is the identity there
    assert np.abs(P[0] - robot.odom_at_image(robot.index_of(stamps[0]))).max() < 1e-6


def test_odometry_conditioned_windows_and_drift_monitor(ros_env, tmp_path):
    """pose_source_frame:=odom through odom -> base_link -> cam0_link -> cam0_optical_frame: the node's poses are the
    odometry's (map = odom); the oracle's own (true) motion against it gives the injected wheel slip."""
    from da3_core.stream.drift import path_length

    slip = 0.25
    spec = SPEC.replace("slip=0.1,drift=4,noise=0.02", f"slip={slip},slip_t=0.41-1.4,drift=2,noise=0")
    robot, got = run_robot_bag(ros_env, tmp_path, spec, pose_source_frame="odom", oracle_mode="metric")
    path, windows, drift, diag = got["path"], got["window"], got["drift"], got["diagnostics"]
    assert diag["pose_source"] == "TF odom" and len(windows) >= 2, diag  # (diagnostics stop with the bag's /clock)
    stamps = [stamp_ns(p.header.stamp) for p in path.poses]
    for p, s in zip(path.poses, stamps):  # base_link in map = the odometry's base_link (map = odom)
        np.testing.assert_allclose(pose_to_matrix(p.pose.position, p.pose.orientation),
                                   robot.odom_at_image(robot.index_of(s)), atol=1e-6)
    for w in windows:
        for s, p in zip(w.stamps, w.poses):  # camera poses: odometry through the static mounts
            odom_cam = robot.odom_at_image(robot.index_of(stamp_ns(s))) @ robot.optical_in_base(0)
            np.testing.assert_allclose(pose_to_matrix(p.position, p.orientation), odom_cam, atol=1e-6)

    assert len(drift) == len(windows), (drift, diag)
    for d, w in zip(drift, windows):
        idx = [robot.index_of(stamp_ns(s)) for s in w.stamps]
        odo = np.stack([robot.odom_at_image(i) @ robot.optical_in_base(0) for i in idx])
        true = np.stack([robot.base_in_world(i) @ robot.optical_in_base(0) for i in idx])
        expected = path_length(odo) / path_length(true) - 1.0  # from the simulation, not from the node
        assert d.estimate_source == "own" and d.estimate_is_metric and d.header.frame_id == camera_frame(0)
        assert abs(d.slip - expected) < 1e-6, (d.slip, expected)
        if stamp_ns(w.stamps[0]) >= robot.stamp_ns(4):  # every step of this window slipped (0.4 s on)
            assert abs(d.slip - slip) <= 0.05 * slip, (d.slip, slip)
    assert any(abs(d.slip - slip) <= 0.05 * slip for d in drift)
