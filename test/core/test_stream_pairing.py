"""Image / intrinsics pairing by stamp, whichever arrives first."""

from __future__ import annotations

import numpy as np

from da3_core.stream.frame import Frame, FrameError
from da3_core.stream.pairing import IntrinsicsPairer


def _frame(stamp_ns: int) -> Frame:
    return Frame(stamp_ns=stamp_ns, rgb=np.zeros((4, 6, 3), np.uint8), K=None, frame_id="cam")


def _to_K(info, hw):
    if info == "bad":
        raise FrameError("bad_K", "NaN focal")
    return np.diag([info, info, 1.0])


def test_info_first_pairs_immediately():
    p = IntrinsicsPairer(_to_K, tolerance_s=0.01)
    assert p.add_info(1_000, 5.0, now_s=0.0) == []
    out = p.add_frame(_frame(1_000), now_s=0.0)
    assert len(out) == 1 and out[0].K[0, 0] == 5.0 and p.counts["paired"] == 1


def test_image_first_waits_for_its_info_and_keeps_order():
    p = IntrinsicsPairer(_to_K, tolerance_s=0.01, wait_s=0.5)
    p.add_info(0, 1.0, now_s=0.0)
    assert p.add_frame(_frame(100_000_000), now_s=0.0) == []  # its info (stamp 0.1 s) has not come yet
    assert p.add_frame(_frame(200_000_000), now_s=0.05) == []  # held behind the first
    out = p.add_info(100_000_000, 2.0, now_s=0.06)
    assert [f.stamp_ns for f in out] == [100_000_000] and out[0].K[0, 0] == 2.0
    out = p.add_info(200_000_000, 3.0, now_s=0.07)
    assert [f.K[0, 0] for f in out] == [3.0]


def test_first_frame_waits_for_the_first_info_but_cameras_without_info_stop_waiting():
    p = IntrinsicsPairer(_to_K, tolerance_s=0.01, wait_s=0.2, give_up_after=2)
    assert p.add_frame(_frame(5), now_s=0.0) == []  # the first CameraInfo may still come
    out = p.add_info(5, 4.0, now_s=0.1)
    assert len(out) == 1 and out[0].K[0, 0] == 4.0
    q = IntrinsicsPairer(_to_K, tolerance_s=0.01, wait_s=0.2, give_up_after=2)
    assert q.add_frame(_frame(1), now_s=0.0) == [] and len(q.poll(now_s=0.3)) == 1
    assert q.add_frame(_frame(2), now_s=0.3) == [] and len(q.poll(now_s=0.6)) == 1
    out = q.add_frame(_frame(3), now_s=0.6)  # two frames passed without any CameraInfo: no more waiting
    assert len(out) == 1 and out[0].K is None and q.counts["no_camera_info"] == 3


def test_wait_runs_out_without_the_matching_info():
    p = IntrinsicsPairer(_to_K, tolerance_s=0.01, wait_s=0.2)
    p.add_info(0, 1.0, now_s=0.0)
    assert p.add_frame(_frame(500_000_000), now_s=1.0) == []
    assert p.poll(now_s=1.1) == []
    out = p.poll(now_s=1.3)
    assert len(out) == 1 and out[0].K is None and p.counts["unpaired"] == 1


def test_bad_intrinsics_are_counted_and_the_frame_goes_on():
    p = IntrinsicsPairer(_to_K, tolerance_s=0.01)
    p.add_info(7, "bad", now_s=0.0)
    out = p.add_frame(_frame(7), now_s=0.0)
    assert out[0].K is None and p.counts["camera_info_bad_K"] == 1
