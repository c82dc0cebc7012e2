"""SlidingWindow: sizes, overlap, keyframe gates, stamp rejection, flush, reset."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.stream.frame import Frame, FrameError, validate_frame
from da3_core.stream.window import SlidingWindow


def _frame(i, value=0, hw=(8, 10), dt_ns=100_000_000):
    return Frame(stamp_ns=1_000 + i * dt_ns, rgb=np.full((*hw, 3), value, np.uint8), index=i)


@pytest.mark.parametrize("size,overlap", [(4, 0), (4, 1), (4, 3), (1, 0), (5, 2)])
def test_window_sizes_and_overlap(size, overlap):
    sw = SlidingWindow(size, overlap)
    wins = [w for w in (sw.push(_frame(i)) for i in range(20)) if w is not None]
    stride = size - overlap
    assert len(wins) == 1 + (20 - size) // stride
    for k, w in enumerate(wins):
        assert len(w) == size and w.index == k
        assert [f.index for f in w.frames] == list(range(k * stride, k * stride + size))
        assert w.n_overlap == (0 if k == 0 else overlap)
        if k:
            assert [f.index for f in w.overlap_frames] == [f.index for f in wins[k - 1].frames[size - overlap:]]


def test_flush_emits_remaining_keyframes_once():
    sw = SlidingWindow(4, 2)
    wins = [w for w in (sw.push(_frame(i)) for i in range(7)) if w is not None]
    assert [[f.index for f in w.frames] for w in wins] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    last = sw.flush()
    assert [f.index for f in last.frames] == [4, 5, 6] and last.n_overlap == 2 and last.new_frames[0].index == 6
    assert sw.flush() is None
    short = SlidingWindow(4, 2)
    short.push(_frame(0))
    w = short.flush()
    assert len(w) == 1 and w.n_overlap == 0


def test_interval_gate():
    sw = SlidingWindow(2, 0, min_interval_s=0.25)
    for i in range(10):
        sw.push(_frame(i))  # 0.1 s apart -> keyframes at 0, 3, 6, 9
    assert sw.counts["keyframes"] == 4 and sw.counts["skipped_interval"] == 6


def test_motion_gate():
    sw = SlidingWindow(2, 0, min_motion=5.0)
    values = [0, 1, 2, 10, 11, 30]  # grey level jumps: keyframes at 0, 10, 30
    out = [sw.push(_frame(i, v)) for i, v in enumerate(values)]
    assert sw.counts["keyframes"] == 3 and sw.counts["skipped_motion"] == 3
    assert [f.index for f in out[3].frames] == [0, 3]


def test_out_of_order_duplicate_and_size_change_rejected():
    sw = SlidingWindow(3, 1)
    sw.push(_frame(5))
    for frame, reason in [(_frame(5), "duplicate_stamp"), (_frame(4), "out_of_order"),
                          (_frame(6, hw=(9, 10)), "size_changed")]:
        with pytest.raises(FrameError) as exc:
            sw.push(frame)
        assert exc.value.reason == reason and sw.counts[reason] == 1
    assert sw.push(_frame(6)) is None and sw.pending == 2


def test_reset_forgets_history():
    sw = SlidingWindow(2, 1)
    sw.push(_frame(5))
    sw.reset()
    sw.push(_frame(1))  # earlier stamp accepted after reset
    w = sw.push(_frame(2))
    assert w.index == 0 and w.n_overlap == 0


def test_bad_arguments_and_frames():
    for kw in ({"size": 0}, {"size": 3, "overlap": 3}, {"size": 3, "overlap": -1}, {"min_interval_s": -1}):
        with pytest.raises(ValueError):
            SlidingWindow(**kw)
    bad = [(Frame(-1, np.zeros((4, 4, 3), np.uint8)), "bad_stamp"),
           (Frame(1, np.zeros((4, 4), np.uint8)), "bad_image_shape"),
           (Frame(1, np.zeros((4, 4, 3), np.float32)), "bad_image_dtype"),
           (Frame(1, np.zeros((0, 4, 3), np.uint8)), "zero_size"),
           (Frame(1, np.zeros((4, 4, 3), np.uint8), K=np.full((3, 3), np.nan)), "nonfinite_intrinsics"),
           (Frame(1, np.zeros((4, 4, 3), np.uint8), K=np.diag([0.0, 1.0, 1.0])), "bad_focal")]
    for frame, reason in bad:
        with pytest.raises(FrameError) as exc:
            validate_frame(frame)
        assert exc.value.reason == reason
