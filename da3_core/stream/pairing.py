"""Approximate-time pairing of frames with camera intrinsics messages (image + CameraInfo), ROS-free.

Cameras publish an image and its CameraInfo with the same stamp, but they may arrive in either order. A frame
waits (at most ``wait_s``, in arrival time) for an intrinsics message within ``tolerance_s`` of its stamp; frames
leave in arrival order, so a waiting frame holds back the ones behind it (the window needs increasing stamps). A
frame whose wait runs out leaves without K (counted as ``unpaired``, or ``no_camera_info`` while no intrinsics were
ever seen). Once ``give_up_after`` frames have passed without any intrinsics message at all, frames stop waiting (a
camera without CameraInfo costs no latency). An optional ``ready(frame)`` condition (the node: "its TF pose is
available") makes frames wait for that too, within the same deadline.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from da3_core.stream.frame import Frame, FrameError

ToK = Callable[[Any, tuple[int, int]], np.ndarray]  # (intrinsics message, image (H, W)) -> K; raises FrameError


@dataclass
class _Waiting:
    frame: Frame
    deadline: float


class IntrinsicsPairer:
    def __init__(self, to_K: ToK, tolerance_s: float = 0.02, wait_s: float = 0.2, keep: int = 64,
                 give_up_after: int = 10, ready: Callable[[Frame], bool] | None = None) -> None:
        self.to_K = to_K
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.wait_s = float(wait_s)
        self.keep = int(keep)
        self.give_up_after = int(give_up_after)
        self.ready = ready  # optional extra condition (e.g. its TF pose has arrived) a frame waits for too
        self._frames_without_info = 0
        self.counts: Counter[str] = Counter()
        self._stamps: list[int] = []
        self._infos: dict[int, Any] = {}
        self._waiting: deque[_Waiting] = deque()
        self._lock = threading.Lock()

    def add_info(self, stamp_ns: int, info: Any, now_s: float) -> list[Frame]:
        """Record an intrinsics message; returns the frames that are now ready, in order."""
        with self._lock:
            if stamp_ns not in self._infos:
                bisect.insort(self._stamps, stamp_ns)
            self._infos[stamp_ns] = info
            while len(self._stamps) > self.keep:
                self._infos.pop(self._stamps.pop(0))
            return self._release(now_s)

    def add_frame(self, frame: Frame, now_s: float) -> list[Frame]:
        """Queue a frame (K filled in when paired); returns the frames that are now ready, in order."""
        with self._lock:
            self._waiting.append(_Waiting(frame, now_s + self.wait_s))
            return self._release(now_s)

    def poll(self, now_s: float) -> list[Frame]:
        """Frames whose wait ran out (call periodically)."""
        with self._lock:
            return self._release(now_s)

    def _match(self, stamp_ns: int) -> Any | None:
        i = bisect.bisect_left(self._stamps, stamp_ns)
        best = min((s for s in self._stamps[max(0, i - 1): i + 1]), key=lambda s: abs(s - stamp_ns), default=None)
        if best is None or abs(best - stamp_ns) > self.tolerance_ns:
            return None
        return self._infos[best]

    def _release(self, now_s: float) -> list[Frame]:
        out: list[Frame] = []
        while self._waiting:
            head = self._waiting[0]
            info = self._match(head.frame.stamp_ns)
            expect_info = bool(self._stamps) or self._frames_without_info < self.give_up_after
            waiting = (info is None and expect_info) or (self.ready is not None and not self.ready(head.frame))
            if waiting and now_s < head.deadline:
                break  # its intrinsics (or what ``ready`` waits for) may still come
            self._waiting.popleft()
            K = None
            if info is not None:
                try:
                    K = self.to_K(info, head.frame.rgb.shape[:2])
                    self.counts["paired"] += 1
                except FrameError as exc:
                    self.counts[f"camera_info_{exc.reason}"] += 1
            else:
                if not self._stamps:
                    self._frames_without_info += 1
                self.counts["no_camera_info" if not self._stamps else "unpaired"] += 1
            out.append(replace(head.frame, K=K))
        return out

    def __len__(self) -> int:
        return len(self._waiting)
