"""TransformBuffer (ROS-free TF) against closed-form transform chains."""

import numpy as np
import pytest

from da3_core.stream.tf_buffer import TransformBuffer, TransformLookupError, interpolate_transform

S = 1_000_000_000  # 1 s in ns


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rigid(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def base_at(time_s: float) -> np.ndarray:
    """odom <- base_link: yaw 0.4 rad/s, 1 m/s along x (closed form, constant rates)."""
    return rigid(rot_z(0.4 * time_s), [1.0 * time_s, 0.2 * time_s, 0.0])


# base_link <- camera optical frame (static): x right, y down, z forward, 0.3 m up, 0.1 m ahead
CAM = rigid(rot_z(-np.pi / 2) @ rot_x(-np.pi / 2), [0.1, 0.0, 0.3])


def make_buffer(stamps_s=(0.0, 1.0, 2.0)) -> TransformBuffer:
    buf = TransformBuffer()
    buf.add_static("base_link", "camera_optical", CAM)
    for ts in stamps_s:
        buf.add("odom", "base_link", int(ts * S), base_at(ts))
    return buf


def test_two_links_compose_at_sample_stamps():
    buf = make_buffer()
    for ts in (0.0, 1.0, 2.0):
        T = buf.lookup("odom", "camera_optical", int(ts * S))
        np.testing.assert_allclose(T, base_at(ts) @ CAM, atol=1e-12)
        # the inverse direction and a lookup between siblings / from the child side
        np.testing.assert_allclose(buf.lookup("camera_optical", "odom", int(ts * S)), np.linalg.inv(base_at(ts) @ CAM),
                                   atol=1e-12)
        np.testing.assert_allclose(buf.lookup("base_link", "camera_optical", int(ts * S)), CAM, atol=1e-12)
    assert buf.frames() == {"odom", "base_link", "camera_optical"}
    np.testing.assert_array_equal(buf.lookup("odom", "odom", 0), np.eye(4))


def test_interpolation_midway_equals_closed_form():
    # constant yaw rate about a fixed axis + constant velocity: slerp / lerp are exact at any fraction
    buf = make_buffer()
    for ts in (0.5, 1.25, 1.9):
        T = buf.lookup("odom", "camera_optical", int(ts * S))
        np.testing.assert_allclose(T, base_at(ts) @ CAM, atol=1e-12)
    np.testing.assert_allclose(interpolate_transform(base_at(0.0), base_at(2.0), 0.5), base_at(1.0), atol=1e-12)


def test_shortest_arc_across_the_quaternion_sign_flip():
    buf = TransformBuffer()
    buf.add("odom", "base", 0, rigid(rot_z(np.pi - 0.1), [0, 0, 0]))
    buf.add("odom", "base", S, rigid(rot_z(-np.pi + 0.1), [0, 0, 0]))  # 0.2 rad further, across +-pi
    np.testing.assert_allclose(buf.lookup("odom", "base", S // 2)[:3, :3], rot_z(np.pi), atol=1e-12)


def test_tolerance_outside_the_history_and_extrapolation_errors():
    buf = make_buffer()
    # 30 ms after the newest sample: the newest sample, within a 50 ms tolerance
    T = buf.lookup("odom", "camera_optical", 2 * S + 30_000_000, tolerance_ns=50_000_000)
    np.testing.assert_allclose(T, base_at(2.0) @ CAM, atol=1e-12)
    with pytest.raises(TransformLookupError) as err:
        buf.lookup("odom", "camera_optical", 2 * S + 80_000_000, tolerance_ns=50_000_000)
    assert err.value.reason == "extrapolation" and "after the newest" in str(err.value)
    assert isinstance(err.value, LookupError)
    with pytest.raises(TransformLookupError) as err:
        buf.lookup("odom", "camera_optical", -S)
    assert err.value.reason == "extrapolation" and "before the oldest" in str(err.value)


def test_unknown_frame_and_no_path():
    buf = make_buffer()
    with pytest.raises(TransformLookupError) as err:
        buf.lookup("odom", "lidar", S)
    assert err.value.reason == "unknown_frame" and "'lidar'" in str(err.value)
    buf.add("map", "other_cam", S, np.eye(4))  # a second tree
    with pytest.raises(TransformLookupError) as err:
        buf.lookup("odom", "other_cam", S)
    assert err.value.reason == "no_path"


def test_static_and_dynamic_mix_on_a_longer_chain():
    # odom -> base (dynamic) -> mast (static) -> head (dynamic, 4 Hz pan) -> camera (static)
    buf = TransformBuffer()
    mast = rigid(np.eye(3), [0.0, 0.0, 1.0])
    buf.add_static("base", "mast", mast)
    buf.add_static("head", "camera", CAM)

    def head_at(ts):
        return rigid(rot_z(0.2 * ts), [0.05, 0.0, 0.0])

    for k in range(9):
        ts = k * 0.25
        buf.add("mast", "head", int(ts * S), head_at(ts))
    for ts in (0.0, 1.0, 2.0):
        buf.add("odom", "base", int(ts * S), base_at(ts))
    for ts in (0.1, 0.75, 1.6):
        np.testing.assert_allclose(buf.lookup("odom", "camera", int(ts * S)),
                                   base_at(ts) @ mast @ head_at(ts) @ CAM, atol=1e-12)
    # a sibling lookup through the common ancestor "mast" needs no odom sample at that stamp
    np.testing.assert_allclose(buf.lookup("base", "camera", int(5.0 * S), tolerance_ns=3 * S),
                               mast @ head_at(2.0) @ CAM, atol=1e-12)


def test_bounded_history_reparenting_and_bad_input():
    buf = TransformBuffer(cache_time_s=1.0, max_samples=5)
    for k in range(20):
        buf.add("odom", "base", k * 100_000_000, base_at(k * 0.1))
    with pytest.raises(TransformLookupError):  # 1.9 s newest, 5 samples kept: 1.5 .. 1.9
        buf.lookup("odom", "base", int(1.4 * S))
    np.testing.assert_allclose(buf.lookup("odom", "base", int(1.55 * S)), base_at(1.55), atol=1e-12)
    assert not buf.add("odom", "base", 0, np.eye(4))  # older than the kept history: dropped
    buf.add("world", "base", 2 * S, np.eye(4))  # a new parent replaces the edge (tf2 semantics)
    assert buf.parent_of("base") == "world" and len(buf) == 1
    with pytest.raises(ValueError):
        buf.add("a", "a", 0, np.eye(4))
    with pytest.raises(ValueError):
        buf.add("a", "b", 0, np.full((4, 4), np.nan))
    with pytest.raises(ValueError):
        buf.add("a", "b", 0, np.diag([2.0, 1.0, 1.0, 1.0]))


def test_loop_is_reported():
    buf = TransformBuffer(max_hops=16)
    buf.add("a", "b", 0, np.eye(4))
    buf.add("b", "c", 0, np.eye(4))
    buf.add("c", "a", 0, np.eye(4))
    buf.add("x", "y", 0, np.eye(4))
    with pytest.raises(TransformLookupError) as err:
        buf.lookup("x", "a", 0)
    assert err.value.reason == "too_many_hops"
