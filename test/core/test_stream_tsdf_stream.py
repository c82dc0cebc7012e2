"""TsdfIntegrator (the pipeline's TSDF wiring): keyframe selection, the background thread's bounded queue and drop
count, reset discarding queued work, and pose updates after a closed loop (the mesh moves by the correction)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from da3_core.stream.chaining import ChainedFrame
from da3_core.stream.tsdf_map import TsdfConfig
from da3_core.stream.tsdf_stream import TsdfIntegrator

HW = (24, 32)
K = np.array([[30.0, 0.0, 16.0], [0.0, 30.0, 12.0], [0.0, 0.0, 1.0]])


def _window(first: int, n: int, overlap: int = 0, sky_rows: int = 0):
    """Frames ``first - overlap .. first + n - 1`` seeing a fronto-parallel wall at z = 2 (the overlap not new)."""
    frames, chained = [], []
    for i in range(first - overlap, first + n):
        sky = None
        if sky_rows:
            sky = np.zeros(HW, bool)
            sky[:sky_rows] = True
        frames.append(SimpleNamespace(rgb=np.full((*HW, 3), 200, np.uint8)))
        chained.append(ChainedFrame(i, i, "cam", np.full(HW, 2.0, np.float32), np.ones(HW, np.float32), sky, K,
                                    np.eye(4), is_new=i >= first))
    return frames, chained


def _integrator(**kw) -> TsdfIntegrator:
    return TsdfIntegrator(TsdfConfig(voxel_size=0.05, depth_max=4.0, block_count=200), **kw)


def test_every_nth_new_frame_is_a_keyframe_and_sky_is_not_fused():
    t = _integrator(every_n_frames=3)
    for w, first in enumerate((0, 4, 8)):  # windows of 4 new frames (+ 2 overlap frames after the first)
        t.offer(w, *_window(first, 4, overlap=0 if w == 0 else 2, sky_rows=12))
    assert list(t.map.keyframes) == [(i, 0) for i in (0, 3, 6, 9)]
    assert t.window_of == {(0, 0): 0, (3, 0): 0, (6, 0): 1, (9, 0): 2}
    kf = t.map.keyframes[(0, 0)]
    assert np.all(kf.weight[:12] == 0) and np.all(kf.weight[12:] > 0)  # the sky half carries no weight
    v = t.map.extract_mesh().vertices
    assert len(v) > 0 and np.allclose(v[:, 2], 2.0, atol=0.01)
    assert v[:, 1].min() > -0.06 and v[:, 1].max() > 0.5  # only the lower half of the image (OpenCV: y down)


def test_background_queue_is_bounded_and_counts_drops():
    t = _integrator(every_n_frames=1, queue_size=2, background=True)
    with t._job_lock:  # hold the worker: it takes one keyframe and waits, two wait in the queue, the rest drop
        t.offer(0, *_window(0, 1))
        assert _wait(lambda: not t._queue)
        t.offer(1, *_window(1, 5))
        st = t.stats()
        assert st["tsdf_queued"] == 2 and st["tsdf_dropped_frames"] == 3
    assert t.wait_idle(10.0)
    assert list(t.map.keyframes) == [(0, 0), (1, 0), (2, 0)] and t.stats()["tsdf_integrated"] == 3
    assert t.timing_stats()["tsdf_worker_cpu_ms"] > 0
    t.stop()


def test_reset_discards_queued_keyframes():
    t = _integrator(every_n_frames=1, queue_size=4, background=True)
    with t._job_lock:
        t.offer(0, *_window(0, 1))
        assert _wait(lambda: not t._queue)
        t.offer(1, *_window(1, 3))
        resetter = threading.Thread(target=t.reset)
        resetter.start()
    resetter.join(10.0)
    assert t.wait_idle(10.0)
    assert len(t.map.keyframes) == 0 and t.map.stats()["voxel_blocks"] == 0 and not t.window_of
    t.offer(0, *_window(0, 1))  # the stream starts again: keys may repeat after a reset
    assert t.wait_idle(10.0) and list(t.map.keyframes) == [(0, 0)]
    t.stop()


def test_loop_closed_moves_the_fused_keyframes_by_their_window_correction():
    corrections: dict[int, np.ndarray] = {}
    t = _integrator(every_n_frames=1, background=True, correction_of=lambda w: corrections.get(w),
                    corrections=lambda: dict(corrections))
    t.offer(0, *_window(0, 2))
    t.offer(1, *_window(2, 2))
    assert t.wait_idle(10.0)
    z0 = np.median(t.map.extract_mesh().vertices[:, 2])
    C = np.eye(4)
    C[2, 3] = 0.5  # the graph moves both windows 0.5 m further away
    corrections.update({0: C, 1: C})
    t.loop_closed()
    assert t.wait_idle(10.0)
    assert t.map.stats()["pose_updates"] == 1
    z1 = np.median(t.map.extract_mesh().vertices[:, 2])
    assert abs(z0 - 2.0) < 0.01 and abs(z1 - 2.5) < 0.01, (z0, z1)
    t.offer(2, *_window(4, 1))  # a later keyframe is fused with its window's correction of the time (none)
    assert t.wait_idle(10.0) and np.allclose(t.map.keyframes[(4, 0)].correction, np.eye(4))
    t.stop()


def _wait(cond, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False
