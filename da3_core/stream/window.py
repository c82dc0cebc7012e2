"""Sliding window of keyframes: ``push(frame) -> Window | None``.

A window holds ``size`` keyframes; consecutive windows share ``overlap`` frames (the last ``overlap`` keyframes of
one window are the first ``overlap`` of the next), so a new window is emitted every ``size - overlap`` keyframes.
The shared frames are what :mod:`da3_core.stream.chaining` aligns on.

Keyframe gate (each enabled gate must pass, both relative to the last keyframe):
- ``min_interval_s``: at least this much stream time since the last keyframe (0 disables);
- ``min_motion``: mean absolute difference of downsampled grey images, in grey levels 0..255 (0 disables).
Frames failing a gate are skipped (counted), not errors. Out-of-order / duplicate stamps and frames whose size
differs from the frames already buffered raise :class:`~da3_core.stream.frame.FrameError` (counted too).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from da3_core.stream.frame import Frame, FrameError

__all__ = ["Window", "SlidingWindow", "grey_thumbnail", "image_motion"]


@dataclass
class Window:
    """``frames`` (oldest first), running ``index`` (0 = first window) and ``n_overlap``: how many leading frames
    are shared with the previous window (0 for the first window, and for a final partial window without overlap)."""

    frames: list[Frame]
    index: int
    n_overlap: int = 0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def overlap_frames(self) -> list[Frame]:
        return self.frames[: self.n_overlap]

    @property
    def new_frames(self) -> list[Frame]:
        return self.frames[self.n_overlap:]

    @property
    def stamps_ns(self) -> list[int]:
        return [f.stamp_ns for f in self.frames]


def grey_thumbnail(rgb: np.ndarray, width: int = 64) -> np.ndarray:
    """(h, w) float32 grey image of ``rgb`` (H, W, 3) uint8 subsampled by striding to about ``width`` columns."""
    step = max(1, rgb.shape[1] // width)
    small = rgb[::step, ::step].astype(np.float32)
    return small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def image_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (grey levels); inf when their shapes differ."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.mean(np.abs(a - b)))


class SlidingWindow:
    """Keyframe gate + window assembly. Not thread-safe: call from one thread (the image callback)."""

    def __init__(self, size: int = 8, overlap: int = 2, min_interval_s: float = 0.0, min_motion: float = 0.0,
                 thumbnail_width: int = 64):
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        if not 0 <= overlap < size:
            raise ValueError(f"overlap must be in [0, size) = [0, {size}), got {overlap}")
        if min_interval_s < 0 or min_motion < 0:
            raise ValueError("min_interval_s and min_motion must be >= 0")
        self.size, self.overlap = int(size), int(overlap)
        self.min_interval_ns = int(round(min_interval_s * 1e9))
        self.min_motion = float(min_motion)
        self.thumbnail_width = int(thumbnail_width)
        self.counts: Counter[str] = Counter()
        self.reset()

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def reset(self) -> None:
        """Forget all buffered frames and the stamp / keyframe history (counters are kept)."""
        self._buffer: list[Frame] = []  # the previous window's tail (overlap) + new keyframes
        self._n_overlap = 0
        self._next_index = 0
        self._last_stamp: int | None = None
        self._last_key_stamp: int | None = None
        self._last_thumb: np.ndarray | None = None
        self.last_decision = ""

    def _gate(self, frame: Frame) -> tuple[bool, np.ndarray | None]:
        """Return (is keyframe, thumbnail or None) and set ``last_decision``."""
        if self._last_key_stamp is not None and frame.stamp_ns - self._last_key_stamp < self.min_interval_ns:
            self.last_decision = "skipped_interval"
            return False, None
        thumb = None
        if self.min_motion > 0:
            thumb = grey_thumbnail(frame.rgb, self.thumbnail_width)
            if self._last_thumb is not None and image_motion(thumb, self._last_thumb) < self.min_motion:
                self.last_decision = "skipped_motion"
                return False, None
        self.last_decision = "keyframe"
        return True, thumb

    def push(self, frame: Frame) -> Window | None:
        """Offer one frame; returns a full :class:`Window` when this keyframe completes one, else None.

        Raises FrameError with reason ``duplicate_stamp``, ``out_of_order`` or ``size_changed``.
        """
        self.counts["pushed"] += 1
        if self._last_stamp is not None and frame.stamp_ns <= self._last_stamp:
            reason = "duplicate_stamp" if frame.stamp_ns == self._last_stamp else "out_of_order"
            self.counts[reason] += 1
            self.last_decision = reason
            raise FrameError(reason, f"stamp {frame.stamp_ns} ns after {self._last_stamp} ns")
        if self._buffer and self._buffer[-1].hw != frame.hw:
            self.counts["size_changed"] += 1
            self.last_decision = "size_changed"
            raise FrameError("size_changed", f"frame is {frame.hw}, the window holds {self._buffer[-1].hw} frames; "
                                             "reset the pipeline to change the image size")
        self._last_stamp = int(frame.stamp_ns)
        is_key, thumb = self._gate(frame)
        if not is_key:
            self.counts[self.last_decision] += 1
            return None
        self.counts["keyframes"] += 1
        self._last_key_stamp = int(frame.stamp_ns)
        if thumb is not None:
            self._last_thumb = thumb
        self._buffer.append(frame)
        if len(self._buffer) < self.size:
            return None
        return self._emit()

    def _emit(self) -> Window:
        win = Window(frames=list(self._buffer), index=self._next_index, n_overlap=self._n_overlap)
        self._next_index += 1
        self._buffer = self._buffer[len(self._buffer) - self.overlap:] if self.overlap else []
        self._n_overlap = len(self._buffer)
        self.counts["windows"] += 1
        return win

    def tail_of(self, window: Window) -> list[Frame]:
        """The frames of ``window`` the next window shares (its last ``overlap`` frames)."""
        return window.frames[len(window.frames) - self.overlap:] if self.overlap else []

    def flush(self) -> Window | None:
        """End of stream: emit the buffered keyframes not yet part of any window as a final (shorter) window,
        with the usual overlap prefix; None when every keyframe has already been emitted."""
        if len(self._buffer) <= self._n_overlap:
            return None
        return self._emit()

    @property
    def pending(self) -> int:
        """Keyframes buffered that no emitted window contains yet."""
        return len(self._buffer) - self._n_overlap
