"""InferenceWorker: latest wins (drops counted), survives exceptions, stops cleanly."""

from __future__ import annotations

import threading
import time

from da3_core.stream.worker import InferenceWorker


def test_latest_wins_and_drops_are_counted():
    gate = threading.Event()
    started = threading.Event()
    done = []

    def process(x):
        started.set()
        gate.wait(5)
        return x

    w = InferenceWorker(process, done.append)
    try:
        assert w.submit(0)
        assert started.wait(5)  # worker busy with 0
        assert w.submit(1)  # slot was empty: no drop
        assert not w.submit(2)  # replaces 1
        assert not w.submit(3)  # replaces 2
        gate.set()
        assert w.wait_idle(5)
        assert done == [0, 3]
        s = w.stats()
        assert s["dropped"] == 2 and s["processed"] == 2 and s["submitted"] == 4
    finally:
        assert w.stop(5)


def test_survives_exceptions():
    errors = []

    def process(x):
        if x == "bad":
            raise RuntimeError("boom")
        return x

    out = []
    w = InferenceWorker(process, out.append, lambda exc, item: errors.append((str(exc), item)))
    try:
        w.submit("bad")
        assert w.wait_idle(5)
        w.submit("good")
        assert w.wait_idle(5)
        assert out == ["good"] and errors == [("boom", "bad")] and w.errors == 1
        assert isinstance(w.last_error, RuntimeError)
    finally:
        assert w.stop(5)


def test_stop_is_clean_and_idempotent():
    w = InferenceWorker(lambda x: x)
    assert w.stop(2)
    assert not w._thread.is_alive()
    assert not w.submit(1)  # ignored after stop
    assert w.stop(1)


def test_a_bounded_queue_keeps_every_window_until_it_is_full():
    import threading

    gate = threading.Event()
    done = []

    def process(item):
        gate.wait(5.0)
        return item

    w = InferenceWorker(process, on_result=done.append, max_pending=3)
    try:
        assert w.submit(0)  # taken by the worker, which blocks on the gate
        deadline = time.monotonic() + 5.0
        while w.stats()["pending"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [w.submit(i) for i in (1, 2, 3)] == [True, True, True]  # queued, none dropped
        assert w.submit(4) is False  # full: the oldest pending (1) goes
        gate.set()
        assert w.wait_idle(5.0)
        assert done == [0, 2, 3, 4] and w.stats()["dropped"] == 1
    finally:
        gate.set()
        w.stop()
