"""PointCloud2 packing: layout, round trip, NaN filtering, RViz rgb convention."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from da3_ros.pointcloud import pointcloud2_to_points, points_to_pointcloud2  # noqa: E402


def test_round_trip_and_layout():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(1000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    msg = points_to_pointcloud2(xyz, rgb, Header(frame_id="map"))
    assert msg.point_step == 16 and msg.row_step == 16 * 1000 and msg.height == 1 and msg.width == 1000
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1)]
    assert msg.is_dense and len(msg.data) == 16000 and msg.header.frame_id == "map"
    xyz2, rgb2 = pointcloud2_to_points(msg)
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)


def test_rgb_packing_matches_pcl_convention():
    msg = points_to_pointcloud2(np.zeros((1, 3), np.float32), np.array([[0x12, 0x34, 0x56]], np.uint8), Header())
    packed = np.frombuffer(msg.data, dtype=np.uint32 if not msg.is_bigendian else ">u4")[3]
    assert packed == 0x00123456


def test_nan_points_removed_and_empty_cloud():
    xyz = np.array([[0, 0, 1], [np.nan, 0, 0], [1, 2, np.inf], [3, 4, 5]], np.float64)
    rgb = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], np.uint8)
    msg = points_to_pointcloud2(xyz, rgb, Header())
    xyz2, rgb2 = pointcloud2_to_points(msg)
    assert msg.width == 2 and msg.is_dense
    np.testing.assert_array_equal(rgb2, rgb[[0, 3]])
    np.testing.assert_array_equal(xyz2, xyz[[0, 3]].astype(np.float32))
    empty = points_to_pointcloud2(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), Header())
    assert empty.width == 0 and len(empty.data) == 0
    white = pointcloud2_to_points(points_to_pointcloud2(np.ones((2, 3), np.float32), None, Header()))[1]
    assert np.all(white == 255)
    with pytest.raises(ValueError):
        points_to_pointcloud2(np.zeros((3, 2)), None, Header())
    with pytest.raises(ValueError):
        points_to_pointcloud2(np.zeros((3, 3)), np.zeros((3, 3), np.float32), Header())
