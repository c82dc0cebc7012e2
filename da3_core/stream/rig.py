"""Multi-camera rigs (ROS-free): time steps of N cameras, windows of K steps, alignment to the calibrated rig.

- :class:`RigWindow` groups frames of N cameras (``Frame.camera`` = 0..N-1) into *time steps*: frames whose stamps lie
  within ``tolerance_ns`` of a step's first frame form that step (one frame per camera). A step leaves when every
  camera has a frame in it, or, if a camera is missing, once another camera has delivered a frame more than
  ``wait_ns`` after the step (stream time): a camera that stops publishing degrades steps (counted as
  ``steps_degraded`` and ``missing_cam<k>``), it never blocks them. Frames older than the last step that left are
  dropped (``late_frames``), as is a second frame of one camera in one step (``duplicate_frames``).
  A window is ``steps`` consecutive steps (K x N views, the caller's view budget); consecutive windows share
  ``overlap_steps`` steps (what chaining aligns on). It has :class:`~da3_core.stream.window.SlidingWindow`'s interface
  (``push`` / ``flush`` / ``reset`` / ``tail_of`` / ``counts``), so :class:`~da3_core.stream.pipeline.StreamPipeline`
  runs it unchanged. Window frames are ordered step by step, cameras in index order within a step.
- :func:`align_to_rig`: a window predicted without known poses has the network's own scale. With the cameras'
  calibrated mounts (``Frame.mount`` = T(rig <- camera), metres) the predicted baselines between cameras of one step
  fix the scale (the median ratio of known to predicted baseline lengths over every pair of every step), and each
  step's cameras are then placed on the rigid rig: the rig pose of a step is the mean of what each camera says
  (rotation projected back onto SO(3)), and every camera of the step is put at that pose times its mount. The window
  comes out metric. The predicted baselines are only as good as the network's relative cameras, which on a rig's
  0.1 m baselines can be several times off; with ``scale_from="images"`` (the pipeline's ``pose_refine:
  photometric``) the scale is instead the depth factor that makes the cameras' images agree across the calibrated
  mounts (:func:`image_rig_scale`, a ZNCC sweep), which needs overlapping views and a depth right in shape.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.frame import Frame, FrameError
from da3_core.stream.predictor import WindowPrediction
from da3_core.stream.window import Window

__all__ = ["Step", "RigWindow", "align_to_rig", "image_rig_scale", "place_on_rig", "rig_scale"]


@dataclass
class Step:
    """One time step: ``stamp_ns`` of its first frame and at most one frame per camera."""

    stamp_ns: int
    frames: dict[int, Frame] = field(default_factory=dict)

    def ordered(self) -> list[Frame]:
        return [self.frames[k] for k in sorted(self.frames)]


class RigWindow:
    """Time steps of ``n_cameras`` cameras -> windows of ``steps`` steps sharing ``overlap_steps`` (module docstring).
    Not thread-safe (call from one thread, as :class:`~da3_core.stream.window.SlidingWindow`)."""

    def __init__(self, n_cameras: int, steps: int, overlap_steps: int = 1, tolerance_ns: int = 10_000_000,
                 wait_ns: int = 500_000_000):
        if n_cameras < 1:
            raise ValueError(f"a rig needs at least one camera, got {n_cameras}")
        if steps < 1 or not 0 <= overlap_steps < steps:
            raise ValueError(f"need steps >= 1 and 0 <= overlap_steps < steps, got {steps} and {overlap_steps}")
        self.n, self.steps, self.overlap_steps = int(n_cameras), int(steps), int(overlap_steps)
        self.tolerance_ns, self.wait_ns = int(tolerance_ns), int(wait_ns)
        self.counts: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        self._pending: list[Step] = []  # steps not yet complete, oldest first
        self._buffer: list[Step] = []  # steps of the next window (the previous window's overlap first)
        self._n_overlap = 0  # leading steps of _buffer shared with the previous window
        self._next_index = 0
        self._last_out_ns: int | None = None  # stamp of the newest step that left
        self._newest_ns: int | None = None
        self._ready: list[Window] = []  # complete windows not handed out yet

    # --- steps --------------------------------------------------------------------------------------------------

    def _add(self, frame: Frame) -> None:
        cam, t = int(frame.camera), int(frame.stamp_ns)
        if not 0 <= cam < self.n:
            raise FrameError("bad_camera", f"camera index {cam} outside the rig's 0..{self.n - 1}")
        if self._last_out_ns is not None and t <= self._last_out_ns + self.tolerance_ns:
            self.counts["late_frames"] += 1
            return
        self._newest_ns = t if self._newest_ns is None else max(self._newest_ns, t)
        for step in self._pending:
            if abs(t - step.stamp_ns) <= self.tolerance_ns:
                if cam in step.frames:
                    self.counts["duplicate_frames"] += 1
                    return
                step.frames[cam] = frame
                return
        self._pending.append(Step(t, {cam: frame}))
        self._pending.sort(key=lambda s: s.stamp_ns)

    def _ready_steps(self) -> list[Step]:
        out = []
        while self._pending:
            head = self._pending[0]
            complete = len(head.frames) == self.n
            timed_out = self._newest_ns is not None and self._newest_ns > head.stamp_ns + self.wait_ns
            if not (complete or timed_out):
                break
            self._pending.pop(0)
            self.counts["steps"] += 1
            if not complete:
                self.counts["steps_degraded"] += 1
                for k in range(self.n):
                    if k not in head.frames:
                        self.counts[f"missing_cam{k}"] += 1
            self._last_out_ns = max(f.stamp_ns for f in head.frames.values())
            out.append(head)
        return out

    # --- windows (SlidingWindow's interface) ------------------------------------------------------------------------

    def push(self, frame: Frame) -> Window | None:
        """Offer one frame of camera ``frame.camera``; returns a window when one is complete. Windows completed
        together (a late camera closing several steps at once) leave one per call, oldest first."""
        self.counts["pushed"] += 1
        self._add(frame)
        self._collect()
        return self._ready.pop(0) if self._ready else None

    def _collect(self) -> None:
        for step in self._ready_steps():
            self._buffer.append(step)
            if len(self._buffer) == self.steps:
                self._ready.append(self._emit())

    def _emit(self) -> Window:
        frames = [f for step in self._buffer for f in step.ordered()]
        n_overlap = sum(len(step.frames) for step in self._buffer[: self._n_overlap])
        win = Window(frames=frames, index=self._next_index, n_overlap=n_overlap)
        if any(len(step.frames) < self.n for step in self._buffer):
            self.counts["windows_degraded"] += 1
        self._next_index += 1
        self._buffer = self._buffer[len(self._buffer) - self.overlap_steps:] if self.overlap_steps else []
        self._n_overlap = len(self._buffer)
        self.counts["windows"] += 1
        return win

    def flush(self) -> Window | None:
        """End of stream: every pending step leaves (complete or not); returns the remaining windows one per call
        (the buffered steps form a last, shorter one), then None."""
        if self._pending:
            self._newest_ns = max(s.stamp_ns for s in self._pending) + self.wait_ns + 1
            self._collect()
        if self._ready:
            return self._ready.pop(0)
        if len(self._buffer) <= self._n_overlap:
            return None
        return self._emit()

    def tail_of(self, window: Window) -> list[Frame]:
        """The frames of ``window``'s last ``overlap_steps`` steps (what the next window shares)."""
        if not self.overlap_steps:
            return []
        stamps = sorted({f.stamp_ns for f in window.frames})
        keep: list[int] = []
        for s in reversed(stamps):  # group the window's stamps into steps (within the tolerance), newest first
            if not keep or keep[-1] - s > self.tolerance_ns:
                keep.append(s)
        first = sorted(keep)[-self.overlap_steps] if len(keep) >= self.overlap_steps else min(stamps)
        return [f for f in window.frames if f.stamp_ns >= first - self.tolerance_ns]

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._buffer) - self._n_overlap


# --- alignment to the calibrated rig ----------------------------------------------------------------------------------

def _steps_of(frames: list[Frame], tolerance_ns: int) -> list[list[int]]:
    """Indices of ``frames`` grouped into time steps (stamps within ``tolerance_ns`` of a step's first)."""
    order = sorted(range(len(frames)), key=lambda i: frames[i].stamp_ns)
    steps: list[list[int]] = []
    for i in order:
        if steps and frames[i].stamp_ns - frames[steps[-1][0]].stamp_ns <= tolerance_ns:
            steps[-1].append(i)
        else:
            steps.append([i])
    return steps


def rig_scale(frames: list[Frame], c2w: np.ndarray, tolerance_ns: int = 10_000_000) -> float | None:
    """Metres per prediction unit from the baselines: the median, over every pair of cameras of every time step, of
    the known baseline length (their mounts) over the predicted one; None without a baseline. Lengths, not vectors:
    a network whose relative directions are off still gets a scale, and :func:`align_to_rig` then puts the directions
    right with the rig."""
    ratios = []
    for step in _steps_of(frames, tolerance_ns):
        cams = [i for i in step if frames[i].mount is not None]
        for a in range(len(cams)):
            for b in range(a + 1, len(cams)):
                i, j = cams[a], cams[b]
                known = float(np.linalg.norm((invert_rigid(frames[i].mount) @ frames[j].mount)[:3, 3]))
                pred = float(np.linalg.norm(c2w[j, :3, 3] - c2w[i, :3, 3]))
                if known > 0.0 and pred > 1e-9 * max(1.0, known):
                    ratios.append(known / pred)
    return float(np.median(ratios)) if ratios else None


def image_rig_scale(frames: list[Frame], pred: WindowPrediction, tolerance_ns: int = 10_000_000,
                    initial: float = 1.0, span: float = 64.0, patch: int = 5, min_texture: float = 0.02,
                    min_contrast: float = 0.1, max_side: int = 96) -> float | None:
    """Metres per prediction unit from the images and the mounts: the factor on the predicted depth that makes each
    camera's image, moved by the calibrated (metric) transform to a camera of the same step, look like that
    camera's. Each step's cameras are compared with its middle camera (the middle one with its first neighbour);
    the cost of a factor is the mean 1 - ZNCC of ``patch`` x ``patch`` patches over the first camera's textured
    pixels that the second sees at some factor (unseen counts as uncorrelated, 1), averaged over the pairs.
    Factors 1/``span``-``span`` x ``initial`` are swept 1.26x apart; 9 more around the lowest cost and a parabola
    through the lowest of those refine it. It needs the cameras' views to overlap, not the network's relative
    cameras: a network whose cameras are off but whose depth is right in shape gets the metric scale. None when no
    pair sees enough texture in common, when the lowest cost is at an end of the sweep, or when it is not at least
    ``min_contrast`` (a share) below the cost of the farthest factor (everything far away looks alike from cameras
    a baseline apart: a minimum that does not beat that is no measurement). Images and depth are block-averaged
    until their long side is at most ``max_side`` (one factor for the window needs no more)."""
    from da3_core.stream.multiview_depth import parabola_offset, sweep_costs, textured
    from da3_core.stream.photometric import downsampled, gray_at

    views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # grey, depth (no sky), K at the working size
    texture: dict[int, np.ndarray] = {}  # the view's textured pixels
    pairs = []  # (camera view i, view j it is compared with)
    for step in _steps_of(frames, tolerance_ns):
        cams = [i for i in step if frames[i].mount is not None]
        if len(cams) < 2:
            continue
        middle = cams[len(cams) // 2]
        for i in cams:
            depth = pred.depth[i] if pred.sky is None else np.where(pred.sky[i], np.nan, pred.depth[i])
            views[i] = downsampled(gray_at(frames[i].rgb, depth.shape), depth.astype(np.float32), pred.K[i],
                                   max_side)
            texture[i] = textured(views[i][0], patch, min_texture)
        pairs += [(i, middle if i != middle else cams[cams.index(middle) - 1]) for i in cams]
    if not pairs:
        return None

    def cost(log_factors: np.ndarray) -> np.ndarray:
        total, used = np.zeros(len(log_factors)), 0
        for i, j in pairs:
            g, depth, K_i = views[i]
            other = [(views[j][0], views[j][2], invert_rigid(frames[j].mount))]
            costs = sweep_costs(g, depth, K_i, invert_rigid(frames[i].mount), other, np.log(initial) + log_factors,
                                patch)
            use = np.isfinite(costs).any(axis=0) & texture[i]
            if use.sum() < 64:
                continue
            total += np.where(np.isfinite(costs[:, use]), costs[:, use], 1.0).mean(axis=1)
            used += 1
        return total / used if used else np.full(len(log_factors), np.inf)

    half = max(1, int(np.ceil(np.log(span) / np.log(1.26))))
    coarse = np.linspace(-np.log(span), np.log(span), 2 * half + 1)
    c = cost(coarse)
    k = int(np.argmin(c))
    if not np.isfinite(c[k]) or k in (0, len(coarse) - 1) or c[k] > (1.0 - min_contrast) * c[-1]:
        return None  # the images do not say
    step = coarse[1] - coarse[0]
    fine = coarse[k] + np.linspace(-step, step, 9)
    c = cost(fine)
    k = int(np.clip(np.argmin(c), 1, len(fine) - 2))
    offset = float(np.clip(parabola_offset(c[k - 1], c[k], c[k + 1]), -1.0, 1.0))  # through the lowest and its two
    return float(initial * np.exp(fine[k] + offset * (fine[1] - fine[0])))


def _mean_rotation(Rs: list[np.ndarray]) -> np.ndarray:
    U, _, Vt = np.linalg.svd(np.sum(Rs, axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def align_to_rig(frames: list[Frame], pred: WindowPrediction, tolerance_ns: int = 10_000_000,
                 scale_from: str = "baselines", previous: float | None = None, max_jump: float = 2.0
                 ) -> tuple[WindowPrediction, float, str] | None:
    """The prediction in metres and on the rigid rig (module docstring), the scale applied and where it came from;
    None when the window has no two cameras with mounts in one step (nothing to measure a baseline with).
    ``scale_from``: "baselines" (the predicted baselines' lengths, :func:`rig_scale`) or "images"
    (:func:`image_rig_scale`, its sweep centred on ``previous`` (the last window's scale) within ``max_jump`` x of
    it, or else on the baselines' over 1/64-64x; where the images do not say, ``previous`` is kept, else the
    baselines' is used). Source: baselines | images | kept."""
    if scale_from not in ("baselines", "images"):
        raise ValueError(f"scale_from = {scale_from!r}: use 'baselines' or 'images'")
    c2w = invert_rigid(pred.w2c)
    s = rig_scale(frames, c2w, tolerance_ns)
    if s is None:
        return None
    source = "baselines"
    if scale_from == "images":
        seen = image_rig_scale(frames, pred, tolerance_ns, initial=previous or s,
                               span=max_jump if previous else 64.0)
        if seen is not None:
            s, source = seen, "images"
        elif previous is not None:
            s, source = previous, "kept"
    c2w = c2w.copy()
    c2w[:, :3, 3] *= s
    depth = (pred.depth * np.float32(s)).astype(np.float32)
    w2c = invert_rigid(place_on_rig(frames, c2w, tolerance_ns))
    return replace(pred, depth=depth, w2c=w2c, is_metric=True), float(s), source


def place_on_rig(frames: list[Frame], c2w: np.ndarray, tolerance_ns: int = 10_000_000) -> np.ndarray:
    """(S, 4, 4) c2w with each time step's cameras (those with mounts) on the rigid rig: the step's rig pose is the
    mean of what each of its cameras says (``c2w`` times the mount's inverse; rotation projected back onto SO(3)),
    and every camera of the step is put at that pose times its mount. Views without a mount keep their pose."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    for step in _steps_of(frames, tolerance_ns):
        cams = [i for i in step if frames[i].mount is not None]
        if not cams:
            continue
        rig = [c2w[i] @ invert_rigid(frames[i].mount) for i in cams]  # each camera's idea of the rig pose
        pose = np.eye(4)
        pose[:3, :3] = _mean_rotation([T[:3, :3] for T in rig])
        pose[:3, 3] = np.mean([T[:3, 3] for T in rig], axis=0)
        for i in cams:
            out[i] = pose @ frames[i].mount
    return out
