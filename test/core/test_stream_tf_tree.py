"""MapTfPlanner (REP-105, ROS-free): map -> camera for a free camera, only map -> odom on a robot, poses of base_link.

References are built here from the edge matrices directly (products of the robot's transforms), not through the
buffer's lookup."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.predictor import random_sim3, sim3_matrix
from da3_core.stream.tf_buffer import TransformBuffer
from da3_core.stream.tf_tree import MapTfPlanner, ancestors

MS = 1_000_000
CAM = "cam_optical"


def rigid(rng) -> np.ndarray:
    _, R, t = random_sim3(rng, with_scale=False)
    return sim3_matrix(1.0, R, t)


@pytest.fixture
def robot():
    """odom -> base_link (dynamic, samples every 50 ms), base_link -> cam_link -> cam_optical (static)."""
    rng = np.random.default_rng(3)
    buf = TransformBuffer()
    odom_base = {s: rigid(rng) for s in range(0, 1000 * MS, 50 * MS)}
    for s, T in odom_base.items():
        buf.add("odom", "base_link", s, T)
    base_link, link_opt = rigid(rng), rigid(rng)
    buf.add_static("base_link", "cam_link", base_link)
    buf.add_static("cam_link", CAM, link_opt)
    return buf, odom_base, base_link @ link_opt


def parents(*edge_lists) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for edges in edge_lists:
        for parent, child in edges:
            out.setdefault(child, set()).add(parent)
    return out


def test_free_camera_gets_map_to_camera():
    planner = MapTfPlanner("map", TransformBuffer())
    rng = np.random.default_rng(0)
    frames = [(s * MS, rigid(rng)) for s in (100, 200)]
    out = planner.outputs(CAM, frames)
    assert planner.mode == "map_to_camera" and out.pose_child == CAM
    assert [(t.parent, t.child, t.stamp_ns) for t in out.transforms] == [("map", CAM, 100 * MS), ("map", CAM, 200 * MS)]
    for t, (_, c2w) in zip(out.transforms, frames):
        np.testing.assert_array_equal(t.T, c2w)
    assert [s for s, _ in out.poses] == [100 * MS, 200 * MS]
    assert planner.republish(300 * MS) is None  # nothing to re-date without map -> odom


def test_robot_gets_only_map_to_odom_and_base_poses(robot):
    buf, odom_base, base_cam = robot
    planner = MapTfPlanner("map", buf, future_dating_ns=100 * MS)
    rng = np.random.default_rng(1)
    stamps = [100 * MS, 150 * MS, 400 * MS]  # on odometry samples
    frames = [(s, rigid(rng)) for s in stamps]
    out = planner.outputs(CAM, frames)
    assert planner.mode == "map_to_odom" and planner.root == "odom"
    assert {(t.parent, t.child) for t in out.transforms} == {("map", "odom")}
    assert [t.stamp_ns for t in out.transforms] == [s + 100 * MS for s in stamps]
    for t, (s, c2w) in zip(out.transforms, frames):
        # map -> odom composed with the robot's own odom -> camera (edge product) is the camera's map pose
        np.testing.assert_allclose(t.T @ odom_base[s] @ base_cam, c2w, atol=1e-12)
    assert out.pose_child == "base_link"
    for (_, T_map_base), (_, c2w) in zip(out.poses, frames):
        np.testing.assert_allclose(T_map_base, c2w @ invert_rigid(base_cam), atol=1e-12)
    # exactly one parent per child frame: the robot's edges plus what the node publishes
    robot_edges = [(buf.parent_of(c), c) for c in ("base_link", "cam_link", CAM)]
    assert all(len(p) == 1 for p in parents(robot_edges, [(t.parent, t.child) for t in out.transforms]).values())
    assert [s for s, _ in out.poses] == stamps  # every delivered frame's pose, in order
    # periodic re-publication: the newest correction, stamped now + future dating, never older than the last one
    again = planner.republish(1000 * MS)
    assert again.stamp_ns == 1100 * MS and again.child == "odom"
    np.testing.assert_array_equal(again.T, out.transforms[-1].T)
    assert planner.republish(300 * MS) is None
    # published stamps only increase: a late window's corrections older than what was sent are skipped, counted
    late = planner.outputs(CAM, [(450 * MS, rigid(rng)), (950 * MS, rigid(rng)), (1050 * MS, frames[0][1])])
    assert [t.stamp_ns for t in late.transforms] == [] and planner.counts["map_tf_superseded"] == 2
    assert planner.counts["map_tf_lookup_failed_extrapolation"] == 1  # 1050 ms: after the odometry's history
    assert len(late.poses) == 3  # the poses are reported all the same (base <- camera is static)


def test_interpolated_odometry_between_samples(robot):
    buf, odom_base, base_cam = robot
    planner = MapTfPlanner("map", buf)
    c2w = rigid(np.random.default_rng(2))
    out = planner.outputs(CAM, [(125 * MS, c2w)])  # halfway between two odometry samples
    T_odom_cam = buf.lookup("odom", CAM, 125 * MS)
    np.testing.assert_allclose(out.transforms[0].T @ T_odom_cam, c2w, atol=1e-12)


def test_auto_switches_once_from_camera_to_odom_and_counts_it():
    buf = TransformBuffer()
    planner = MapTfPlanner("map", buf, tolerance_ns=5 * MS)
    c2w = np.eye(4)
    assert planner.outputs(CAM, [(0, c2w)]).transforms[0].child == CAM
    buf.add_static("base_link", CAM, np.eye(4))
    buf.add("odom", "base_link", 0, np.eye(4))
    out = planner.outputs(CAM, [(MS, c2w)])
    assert planner.mode == "map_to_odom" and [t.child for t in out.transforms] == ["odom"]
    assert planner.counts["tf_mode_switched"] == 1


def test_forced_modes_and_odom_frame_choice(robot):
    buf, _, _ = robot
    forced = MapTfPlanner("map", buf, mode="map_to_camera")
    assert forced.outputs(CAM, [(100 * MS, np.eye(4))]).transforms[0].child == CAM
    missing = MapTfPlanner("map", TransformBuffer(), mode="map_to_odom")
    assert missing.outputs(CAM, [(0, np.eye(4))]).transforms == [] and missing.counts["map_tf_no_parent"] == 1
    mid = MapTfPlanner("map", buf, odom_frame="base_link")  # an ancestor: the map hangs above it
    assert mid.outputs(CAM, [(100 * MS, np.eye(4))]).transforms[0].child == "base_link"
    wrong = MapTfPlanner("map", buf, odom_frame="nowhere")
    assert wrong.root_of(CAM) == "odom" and wrong.counts["odom_frame_not_ancestor"] == 1
    camera_pose = MapTfPlanner("map", buf, pose_frame="camera")
    assert camera_pose.outputs(CAM, [(100 * MS, np.eye(4))]).pose_child == CAM
    assert ancestors(buf, CAM) == ["cam_link", "base_link", "odom"]
    with pytest.raises(ValueError, match="tf_mode"):
        MapTfPlanner("map", buf, mode="odom")


def test_failed_lookups_are_counted_not_raised(robot):
    buf, _, _ = robot
    planner = MapTfPlanner("map", buf, tolerance_ns=10 * MS)
    out = planner.outputs(CAM, [(5000 * MS, np.eye(4))])  # long after the odometry history
    assert out.transforms == [] and planner.counts["map_tf_lookup_failed_extrapolation"] == 1
    assert len(out.poses) == 1 and not planner.counts["pose_lookup_base_failed_extrapolation"]  # static: found
