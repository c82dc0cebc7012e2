"""Keyframes of a chained stream into a :class:`~da3_core.stream.tsdf_map.TsdfMap` (ROS-free).

:class:`TsdfIntegrator` sits between the streaming pipeline and the TSDF map:

- **which frames**: every ``every_n_frames``-th newly delivered frame (counted over the stream, the first one
  included) is a keyframe; the others are not integrated (one fusion costs ~10-14 ms of CPU at 504x378, stride 1).
- **what is fused**: the frame's *chained* depth / confidence / K / camera-to-world (``ChainedFrame`` before any
  pose-graph correction), sky pixels set to NaN, the input image's colour, and the current pose-graph correction of
  its window (a Sim(3), fetched when the keyframe is fused, not when it was offered). The map remembers
  key -> window, so after a closed loop :meth:`loop_closed` moves every stored keyframe to its window's new
  correction (:meth:`TsdfMap.update_poses`, re-fusing the ones that moved).
- **where it runs**: ``background=False`` (offline replay): right away, in the caller's thread, deterministic.
  ``background=True`` (live node): in one worker thread with a bounded queue of ``queue_size`` keyframes; a keyframe
  offered while the queue is full is dropped and counted (``tsdf_dropped_frames``); a pose update after a closed loop
  is never dropped (pending updates coalesce into one). Fusions and updates run with the calling thread's OpenMP
  thread count at 1 (:func:`single_omp_thread`; the count is per thread: torch's threads elsewhere keep theirs), so
  Open3D's block allocation adds no threads to a busy machine.
- **reset**: :meth:`reset` empties the queue and the map; a job already taken by the worker finishes first and is
  discarded when it belongs to the previous epoch.

Diagnostics (:meth:`stats`, never waiting for a running job): the map's ``stats()`` as of the last job, prefixed
``tsdf_`` plus ``tsdf_queued``, ``tsdf_offered``,
``tsdf_dropped_frames``, ``tsdf_errors`` and ``tsdf_worker_cpu_ms`` (the worker's thread CPU time so far).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.stream.tsdf_map import TsdfConfig, TsdfMap

__all__ = ["TsdfIntegrator", "TsdfJob", "single_omp_thread"]


def _gomp():
    """GNU OpenMP, the runtime Open3D's wheel links (by soname: the copy already loaded, e.g. torch's); None."""
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        name = ctypes.util.find_library("gomp")
        try:
            return ctypes.CDLL(name) if name else None
        except OSError:
            return None


@contextlib.contextmanager
def single_omp_thread():
    """Run the block with the calling thread's OpenMP thread count at 1, then restore it. OpenMP's count is per
    thread, so torch's intra-op threads elsewhere are untouched. Seen here (2 busy cores, torch's libgomp loaded
    first): Open3D's parallel regions in a 2-thread team made each block-allocation call ~7 ms instead of ~0.02 ms."""
    lib = _gomp()
    if lib is None:
        yield
        return
    before = int(lib.omp_get_max_threads())
    lib.omp_set_num_threads(1)
    try:
        yield
    finally:
        lib.omp_set_num_threads(before)


@dataclass
class TsdfJob:
    """One keyframe waiting to be fused: chained (uncorrected) depth with sky as NaN, its window's index."""

    key: Hashable
    window: int
    depth: np.ndarray
    sky: np.ndarray | None
    conf: np.ndarray | None
    K: np.ndarray
    c2w: np.ndarray
    rgb: np.ndarray | None
    epoch: int


class TsdfIntegrator:
    """Keyframe selection, background fusion and pose updates for a :class:`TsdfMap` (module docstring).

    ``correction_of(window)``: the window's current (4, 4) Sim(3) pose-graph correction, or None (no graph);
    ``corrections()``: every window's current correction (after a closed loop).
    """

    def __init__(self, config: TsdfConfig | None = None, every_n_frames: int = 6, queue_size: int = 4,
                 background: bool = False,
                 correction_of: Callable[[int], np.ndarray | None] | None = None,
                 corrections: Callable[[], dict[int, np.ndarray]] | None = None) -> None:
        if every_n_frames < 1 or queue_size < 1:
            raise ValueError("TsdfIntegrator: every_n_frames and queue_size must be >= 1")
        self.map = TsdfMap(config)
        self.every_n_frames = int(every_n_frames)
        self.queue_size = int(queue_size)
        self.background = background
        self._correction_of = correction_of
        self._corrections = corrections
        self.window_of: dict[Hashable, int] = {}
        self.counts: Counter[str] = Counter()
        self._seen = 0  # new frames offered since the last reset (keyframe selection)
        self._epoch = 0
        self._queue: deque[TsdfJob] = deque()
        self._update_pending = False
        self._busy = False
        self._cond = threading.Condition()
        self._job_lock = threading.Lock()  # one job at a time; reset waits for the running one
        self._thread: threading.Thread | None = None
        self._stop = False
        self._worker_cpu_s = 0.0
        self._map_stats = self.map.stats()  # refreshed after each job: stats() never waits for a long pose update

    # ------------------------------------------------------------------ input

    def offer(self, window: int, frames: Sequence[Any], chained: Sequence[Any]) -> int:
        """Offer a window's frames (``frames``: the input frames with ``rgb``; ``chained``: the matching
        ``ChainedFrame`` objects, uncorrected). New frames are counted and every ``every_n_frames``-th becomes a
        keyframe. Returns the number of keyframes taken (queued or fused)."""
        jobs = []
        with self._cond:
            epoch = self._epoch
            for f, cf in zip(frames, chained):
                if not cf.is_new:
                    continue
                take = self._seen % self.every_n_frames == 0
                self._seen += 1
                if take:
                    jobs.append((f, cf))
        taken = 0
        for f, cf in jobs:
            rgb = getattr(f, "rgb", None)
            if rgb is not None and rgb.shape[:2] != cf.depth.shape:
                rgb = None  # colour of another resolution: fuse without colour rather than resample
            job = TsdfJob(cf.key, int(window), cf.depth, cf.sky, cf.conf, cf.K, cf.c2w, rgb, epoch)
            self.counts["offered"] += 1
            if not self.background:
                self._run_job(job)
                taken += 1
                continue
            with self._cond:
                if len(self._queue) >= self.queue_size:
                    self.counts["dropped_frames"] += 1
                    continue
                self._queue.append(job)
                self._ensure_thread()
                self._cond.notify()
            taken += 1
        return taken

    def loop_closed(self) -> None:
        """Every window's correction may have changed: move the stored keyframes (now, or in the worker)."""
        if not self.background:
            self._run_update(self._epoch)
            return
        with self._cond:
            self._update_pending = True
            self._ensure_thread()
            self._cond.notify()

    # ------------------------------------------------------------------ work

    def _run_job(self, job: TsdfJob) -> None:
        with self._job_lock:
            if job.epoch != self._epoch:
                return
            C = None if self._correction_of is None else self._correction_of(job.window)
            depth = job.depth if job.sky is None else np.where(job.sky, np.float32(np.nan), job.depth)
            try:
                with single_omp_thread():
                    self.map.integrate(job.key, depth, job.conf, job.K, job.c2w, job.rgb, correction=C)
            except ValueError:  # nothing valid to fuse, a repeated key: counted, never fatal
                self.counts["errors"] += 1
                return
            self.window_of[job.key] = job.window
            self.counts["integrated"] += 1
            self._map_stats = self.map.stats()

    def _run_update(self, epoch: int) -> None:
        if self._corrections is None:
            return
        with self._job_lock:
            if epoch != self._epoch:
                return
            corr = self._corrections()
            eye = np.eye(4)
            self.window_of = {k: w for k, w in self.window_of.items() if k in self.map.keyframes}  # drop forgotten
            by_key = {k: corr.get(w, eye) for k, w in self.window_of.items()}
            with single_omp_thread():
                self.map.update_poses(corrections=by_key)
            self._map_stats = self.map.stats()

    def _ensure_thread(self) -> None:
        """Start the worker (call with the condition held)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="tsdf-integrate", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._queue and not self._update_pending:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft() if self._queue else None
                update = job is None and self._update_pending
                if update:
                    self._update_pending = False
                epoch = self._epoch
                self._busy = True
            c0 = time.thread_time()
            try:
                if job is not None:
                    self._run_job(job)
                elif update:
                    self._run_update(epoch)
            except Exception:  # noqa: BLE001 - the map must never take the worker down
                self.counts["errors"] += 1
            finally:
                with self._cond:
                    self._worker_cpu_s += time.thread_time() - c0
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and no job or update runs; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._update_pending or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker thread (queued keyframes stay queued; a later offer restarts it)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def reset(self) -> None:
        """Forget the queue, the keyframes and the map (counters stay)."""
        with self._job_lock:
            with self._cond:
                self._epoch += 1
                self._queue.clear()
                self._update_pending = False
                self._seen = 0
            self.window_of.clear()
            self.map.reset()
            self._map_stats = self.map.stats()

    # ------------------------------------------------------------------ output

    def save_mesh_ply(self, path: str | os.PathLike, wait_s: float = 10.0) -> tuple[Path, int]:
        """Write the mesh (after the queued keyframes, waiting at most ``wait_s``); (path, vertex count)."""
        if self.background:
            self.wait_idle(wait_s)
        with single_omp_thread():
            return Path(path), self.map.save_mesh_ply(path)

    def stats(self) -> dict[str, float]:
        """Counters, prefixed ``tsdf_`` (deterministic for a synchronous run): the map's keyframes / store / blocks /
        re-integrations / pose updates and the integrator's offered / integrated / dropped / queued / errors."""
        out = {f"tsdf_{k}": float(v) for k, v in self._map_stats.items() if v is not None and "_ms" not in k}
        with self._cond:
            out.update(tsdf_queued=float(len(self._queue)))
            out.update({f"tsdf_{k}": float(v) for k, v in self.counts.items()})
        out.setdefault("tsdf_dropped_frames", 0.0)
        return out

    def timing_stats(self) -> dict[str, float]:
        """Timings (ms), prefixed ``tsdf_``: integration (last, mean), re-integration, pose update and mesh extraction
        (last), and the worker thread's CPU time so far (``tsdf_worker_cpu_ms``)."""
        out = {f"tsdf_{k}": float(v) for k, v in self._map_stats.items() if v is not None and "_ms" in k}
        out["tsdf_worker_cpu_ms"] = 1e3 * self._worker_cpu_s
        return out
