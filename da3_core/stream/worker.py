"""One inference thread behind a small mailbox: "latest wins" by default.

``submit(item)`` never blocks: it puts the item into the mailbox and returns. The mailbox holds at most
``max_pending`` items the worker has not started yet; when it is full, the oldest pending item is dropped (counted).
With the default ``max_pending=1`` a new window replaces the waiting one (live cameras: stay current); a larger
``max_pending`` queues windows instead (replaying a bag faster than the model runs, without losing windows).
Exceptions raised by ``process`` are caught, counted and reported through ``on_error``; the thread keeps running.
No ROS imports: the node wires ``on_result`` / ``on_error`` to its publishers and logger.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["InferenceWorker"]


class InferenceWorker:
    """Daemon thread running ``process(item)`` then ``on_result(result)`` for the latest submitted item.

    Counters (read with :meth:`stats`): submitted, processed, dropped, errors; last_process_s (time in
    ``process``), last_latency_s (submit -> result delivered).
    """

    def __init__(self, process: Callable[[Any], Any], on_result: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException, Any], None] | None = None, name: str = "da3-inference",
                 max_pending: int = 1):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._process, self._on_result, self._on_error = process, on_result, on_error
        self._cond = threading.Condition()
        self._pending: deque[tuple[Any, float]] = deque()
        self.max_pending = int(max_pending)
        self._busy = False
        self._stop = False
        self.submitted = self.processed = self.dropped = self.errors = 0
        self.last_process_s = self.last_latency_s = 0.0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over ``item``; returns False when a pending item had to be dropped for it (one drop counted) or the
        worker is stopped (the item is ignored), True otherwise."""
        with self._cond:
            if self._stop:
                return False
            self.submitted += 1
            dropped = len(self._pending) >= self.max_pending
            if dropped:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append((item, time.perf_counter()))
            self._cond.notify()
            return not dropped

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or bool(self._pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, t_submit = self._pending.popleft()
                self._busy = True
            try:
                t0 = time.perf_counter()
                result = self._process(item)
                self.last_process_s = time.perf_counter() - t0
                if self._on_result is not None:
                    self._on_result(result)
                self.last_latency_s = time.perf_counter() - t_submit
                with self._cond:
                    self.processed += 1
            except Exception as exc:  # the worker must survive anything process/on_result throws
                with self._cond:
                    self.errors += 1
                    self.last_error = exc
                if self._on_error is not None:
                    try:
                        self._on_error(exc, item)
                    except Exception:
                        pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running (for tests and offline shutdown); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (self._busy or self._pending) and not self._stop:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current item (a pending one is discarded); returns True if the thread ended in time."""
        with self._cond:
            self._stop = True
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped,
                    "errors": self.errors, "busy": float(self._busy), "pending": len(self._pending),
                    "last_process_s": self.last_process_s,
                    "last_latency_s": self.last_latency_s}
