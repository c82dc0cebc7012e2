"""Message conversions: image/CameraInfo/depth round trips and every rejection reason."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
import cv2  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from da3_core.stream.frame import FrameError  # noqa: E402
from da3_ros.conversions import (  # noqa: E402
    ConversionError,
    PathTrail,
    c2w_to_pose,
    c2w_to_transform,
    camera_info_to_K,
    compressed_to_rgb,
    conf_to_image_msg,
    depth_to_image_msg,
    image_msg_to_array,
    image_to_rgb,
    make_camera_info,
    make_path,
    ns_to_stamp,
    stamp_to_ns,
)

RGB = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
K = np.array([[50.0, 0, 3.5], [0, 55.0, 2.5], [0, 0, 1]])


def _img(arr, encoding, pad=0):
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    rows = np.zeros((h, w * ch + pad), np.uint8)
    rows[:, : w * ch] = arr.reshape(h, -1)
    return Image(height=h, width=w, encoding=encoding, step=w * ch + pad, data=rows.tobytes())


@pytest.mark.parametrize("encoding,make", [
    ("rgb8", lambda a: a), ("bgr8", lambda a: a[..., ::-1]),
    ("rgba8", lambda a: np.concatenate([a, np.full(a.shape[:2] + (1,), 9, np.uint8)], -1)),
    ("bgra8", lambda a: np.concatenate([a[..., ::-1], np.full(a.shape[:2] + (1,), 9, np.uint8)], -1)),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_round_trip(encoding, make, pad):
    out = image_to_rgb(_img(np.ascontiguousarray(make(RGB)), encoding, pad))
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.c_contiguous and out.flags.writeable


def test_mono8_and_copy_semantics():
    grey = RGB[..., 0].copy()
    out = image_to_rgb(_img(grey, "mono8"))
    assert out.shape == (5, 7, 3) and np.all(out == grey[..., None])
    msg = _img(RGB, "rgb8")
    out = image_to_rgb(msg)
    out[:] = 0
    assert bytes(msg.data) == RGB.tobytes()  # the message buffer is untouched


@pytest.mark.parametrize("kw,reason", [
    ({"width": 0}, "zero_size"), ({"height": 0}, "zero_size"), ({"width": 10000}, "too_large"),
    ({"encoding": "mono16"}, "unsupported_encoding"), ({"encoding": "yuv422"}, "unsupported_encoding"),
    ({"step": 20}, "step_mismatch"), ({"data": b"\x00" * 10}, "data_length_mismatch"),
])
def test_image_rejections(kw, reason):
    msg = _img(RGB, "rgb8")
    for k, v in kw.items():
        setattr(msg, k, v)
    with pytest.raises(ConversionError) as exc:
        image_to_rgb(msg)
    assert exc.value.reason == reason and isinstance(exc.value, FrameError)
    assert reason in str(exc.value)


def test_compressed():
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    out = compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(out, RGB)
    for msg, reason in [(CompressedImage(format="jpeg", data=b""), "empty_data"),
                        (CompressedImage(format="jpeg", data=b"not an image"), "decode_failed"),
                        (CompressedImage(format="16UC1; compressedDepth", data=png.tobytes()), "unsupported_format")]:
        with pytest.raises(ConversionError) as exc:
            compressed_to_rgb(msg)
        assert exc.value.reason == reason


def test_camera_info_round_trip_and_rejections():
    info = make_camera_info(K, 7, 5, Header(frame_id="cam"))
    assert info.distortion_model == "plumb_bob" and list(info.d) == [0.0] * 5
    np.testing.assert_array_equal(camera_info_to_K(info, (5, 7)), K)
    np.testing.assert_array_equal(camera_info_to_K(info, (5, 7), use_projection=True), K)
    binned = make_camera_info(K, 14, 10, Header())
    binned.binning_x = binned.binning_y = 2
    np.testing.assert_allclose(camera_info_to_K(binned, (5, 7))[:2, :2], K[:2, :2] / 2)
    cases = [(np.full(9, np.nan), (5, 7), "nonfinite_intrinsics"), (np.zeros(9), (5, 7), "bad_focal"),
             (K.copy(), (10, 14), "camera_info_size_mismatch")]
    neg = K.copy()
    neg[1, 1] = -1
    cases.append((neg, (5, 7), "bad_focal"))
    for k, hw, reason in cases:
        msg = make_camera_info(np.eye(3), 7, 5, Header())
        msg.k = np.asarray(k, float).reshape(-1).tolist()
        with pytest.raises(ConversionError) as exc:
            camera_info_to_K(msg, hw)
        assert exc.value.reason == reason


def test_depth_and_conf_messages():
    depth = np.array([[1.0, np.nan, -1.0], [0.0, 2.5, np.inf]], np.float32)
    sky = np.array([[False, False, False], [False, True, False]])
    msg = depth_to_image_msg(depth, Header(frame_id="cam"), invalid=sky)
    assert msg.encoding == "32FC1" and msg.step == 12 and msg.height == 2 and msg.width == 3
    back = image_msg_to_array(msg)
    assert back[0, 0] == 1.0 and np.isnan(back).sum() == 5
    conf = conf_to_image_msg(np.arange(6, dtype=np.float32).reshape(2, 3), Header())
    np.testing.assert_array_equal(image_msg_to_array(conf), np.arange(6).reshape(2, 3))
    with pytest.raises(ConversionError):
        depth_to_image_msg(np.zeros(3), Header())
    # the message owns its pixels (written straight into its buffer): later changes to the input do not reach it
    src = np.full((2, 3), 2.0)  # float64 in, 32FC1 out
    msg = depth_to_image_msg(src, Header())
    src[:] = 7.0
    np.testing.assert_array_equal(image_msg_to_array(msg), np.full((2, 3), 2.0, np.float32))


def test_pose_transform_path():
    a = 0.7
    c2w = np.eye(4)
    c2w[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    c2w[:3, 3] = [1, 2, 3]
    p = c2w_to_pose(c2w)
    assert (p.position.x, p.position.y, p.position.z) == (1, 2, 3)
    np.testing.assert_allclose([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w],
                               [0, 0, np.sin(a / 2), np.cos(a / 2)], atol=1e-12)
    tf = c2w_to_transform(c2w, Header(frame_id="map", stamp=ns_to_stamp(5_000_000_123)), "cam_optical")
    assert tf.child_frame_id == "cam_optical" and tf.header.frame_id == "map"
    assert stamp_to_ns(tf.header.stamp) == 5_000_000_123 and tf.transform.rotation.w == pytest.approx(np.cos(a / 2))
    path = make_path([1, 2], np.stack([c2w, np.eye(4)]), "map")
    assert len(path.poses) == 2 and stamp_to_ns(path.header.stamp) == 2 and path.poses[1].pose.orientation.w == 1
    bad = c2w.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConversionError) as exc:
        c2w_to_pose(bad)
    assert exc.value.reason == "nonfinite_pose"


def test_path_trail_equals_make_path_and_thins():
    """PathTrail (poses kept as published) against make_path built from the whole trajectory."""
    rng = np.random.default_rng(1)
    c2w = np.tile(np.eye(4), (10, 1, 1))
    c2w[:, :3, 3] = rng.normal(size=(10, 3))
    stamps = [1000 * (i + 1) for i in range(10)]

    def pose(i):
        return stamps[i], make_path([stamps[i]], c2w[i:i + 1], "map").poses[0]

    trail = PathTrail("map")
    trail.add("base_link", [pose(i) for i in (0, 1, 2, 5, 6)])
    trail.add("base_link", [pose(i) for i in (3, 4, 7, 8, 9)])  # out of order: inserted by stamp
    moved = c2w.copy()
    moved[4, :3, 3] += 1.0
    trail.add("base_link", [(stamps[4], make_path([stamps[4]], moved[4:5], "map").poses[0])])  # replaces stamp 4
    ref = make_path(stamps, moved, "map")
    got = trail.message()
    assert stamp_to_ns(got.header.stamp) == stamp_to_ns(ref.header.stamp) and len(got.poses) == 10
    for a, b in zip(got.poses, ref.poses):
        assert stamp_to_ns(a.header.stamp) == stamp_to_ns(b.header.stamp)
        assert (a.pose.position.x, a.pose.position.y, a.pose.position.z) == \
            (b.pose.position.x, b.pose.position.y, b.pose.position.z)
    thin = PathTrail("map", max_poses=4)
    thin.add("base_link", [pose(i) for i in range(10)])
    kept = [stamp_to_ns(p.header.stamp) for p in thin.message().poses]
    assert len(kept) <= 4 and kept[-1] == stamps[-1] and kept == sorted(kept)
    assert np.ptp(np.diff(kept)) == 0  # evenly spaced
    thin.add("cam_optical", [pose(0)])  # another child starts a new path
    assert [stamp_to_ns(p.header.stamp) for p in thin.message().poses] == [stamps[0]]


def test_path_trail_memory_is_bounded():
    """A long run keeps at most 4 * max_poses poses: every other one dropped (returned), the newest always kept, the
    message still at most max_poses poses in stamp order."""
    stamps = list(range(1, 1001))
    msgs = make_path(stamps, np.tile(np.eye(4), (len(stamps), 1, 1)), "map").poses
    trail, dropped = PathTrail("map", max_poses=5), []
    for s, msg in zip(stamps, msgs):
        dropped += trail.add("base_link", [(s, msg)])
        assert len(trail) <= 20
    kept = trail._stamps
    assert kept[-1] == stamps[-1] and sorted(kept + dropped) == stamps  # nothing lost track of
    got = [stamp_to_ns(p.header.stamp) for p in trail.message().poses]
    assert len(got) <= 5 and got == sorted(got) and got[-1] == stamps[-1]
