"""One inference thread behind a single-slot mailbox ("latest wins").

``submit(item)`` never blocks: it puts the item into the slot and returns. If the slot still holds an item the
worker has not started yet (it is busy with an earlier one), that pending item is replaced and counted as dropped.
Exceptions raised by ``process`` are caught, counted and reported through ``on_error``; the thread keeps running.
No ROS imports: the node wires ``on_result`` / ``on_error`` to its publishers and logger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["InferenceWorker"]


class InferenceWorker:
    """Daemon thread running ``process(item)`` then ``on_result(result)`` for the latest submitted item.

    Counters (read with :meth:`stats`): submitted, processed, dropped, errors; last_process_s (time in
    ``process``), last_latency_s (submit -> result delivered).
    """

    def __init__(self, process: Callable[[Any], Any], on_result: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException, Any], None] | None = None, name: str = "da3-inference"):
        self._process, self._on_result, self._on_error = process, on_result, on_error
        self._cond = threading.Condition()
        self._slot: tuple[Any, float] | None = None
        self._busy = False
        self._stop = False
        self.submitted = self.processed = self.dropped = self.errors = 0
        self.last_process_s = self.last_latency_s = 0.0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over ``item``; returns False when it replaced a pending item (one drop counted) or the worker is
        stopped (the item is ignored), True otherwise."""
        with self._cond:
            if self._stop:
                return False
            self.submitted += 1
            replaced = self._slot is not None
            if replaced:
                self.dropped += 1
            self._slot = (item, time.perf_counter())
            self._cond.notify()
            return not replaced

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._slot is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, t_submit = self._slot
                self._slot = None
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
            while (self._busy or self._slot is not None) and not self._stop:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the current item (a pending one is discarded); returns True if the thread ended in time."""
        with self._cond:
            self._stop = True
            self._slot = None
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped,
                    "errors": self.errors, "busy": float(self._busy), "last_process_s": self.last_process_s,
                    "last_latency_s": self.last_latency_s}
