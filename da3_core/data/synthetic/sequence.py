"""A timed synthetic camera sequence described by one short spec string, shared by publishers and oracles.

``SyntheticSequence.from_spec("kind=room,seed=3,frames=24,path=walk,size=504x378,fov=70,fps=10,t0=1.0")``
gives the same frames, stamps and ground truth in every process that parses the same spec: the feeder of a test,
the geometry-oracle predictor inside the node, and the bag writer.

``repeat=R`` plays the ``frames`` distinct frames R times in a row (stamps keep increasing; frame ``i`` shows camera
pose ``i % frames``): long soak runs from a few rendered frames, the renders cached on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from da3_core.data.synthetic.camera import intrinsics_from_fov
from da3_core.data.synthetic.paths import make_trajectory
from da3_core.data.synthetic.render import Frame, render
from da3_core.data.synthetic.scene import SCENE_KINDS, Scene, make_scene

_KEYS = ("kind", "seed", "frames", "path", "size", "fov", "fps", "t0", "repeat")


@dataclass(frozen=True)
class SequenceSpec:
    kind: str = "room"
    seed: int = 0
    frames: int = 24
    path: str = "walk"  # walk | orbit | auto
    width: int = 504
    height: int = 378
    fov_deg: float = 70.0
    fps: float = 10.0
    t0_s: float = 1.0  # stamp of frame 0
    repeat: int = 1  # the frames played this many times in a row

    @classmethod
    def parse(cls, spec: str) -> SequenceSpec:
        """``key=value`` pairs separated by commas; keys: kind, seed, frames, path, size (WxH), fov, fps, t0, repeat."""
        values: dict = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in _KEYS:
                raise ValueError(f"bad sequence spec item {item!r}: use key=value with keys {', '.join(_KEYS)}")
            if key == "size":
                w, _, h = value.lower().partition("x")
                values["width"], values["height"] = int(w), int(h)
            elif key in ("seed", "frames", "repeat"):
                values[key] = int(value)
            elif key in ("fov", "fps", "t0"):
                values[{"fov": "fov_deg", "fps": "fps", "t0": "t0_s"}[key]] = float(value)
            else:
                values[key] = value
        out = cls(**values)
        if out.kind not in SCENE_KINDS:
            raise ValueError(f"unknown scene kind {out.kind!r}; use one of {', '.join(SCENE_KINDS)}")
        if out.frames < 1 or out.repeat < 1 or out.width < 14 or out.height < 14 or out.fps <= 0:
            raise ValueError(f"sequence spec {spec!r}: need frames >= 1, repeat >= 1, size >= 14x14 and fps > 0")
        return out

    def to_string(self) -> str:
        text = (f"kind={self.kind},seed={self.seed},frames={self.frames},path={self.path},"
                f"size={self.width}x{self.height},fov={self.fov_deg:g},fps={self.fps:g},t0={self.t0_s:g}")
        return text + (f",repeat={self.repeat}" if self.repeat != 1 else "")


@dataclass
class SyntheticSequence:
    spec: SequenceSpec
    scene: Scene = field(init=False)
    K: np.ndarray = field(init=False)  # (3, 3) pixels
    w2c: np.ndarray = field(init=False)  # (frames, 4, 4) OpenCV world-to-camera of the distinct frames

    def __post_init__(self) -> None:
        s = self.spec
        self.scene = make_scene(s.kind, seed=s.seed)
        self.K = intrinsics_from_fov((s.height, s.width), s.fov_deg)
        self.w2c = make_trajectory(self.scene, s.frames, s.path, seed=s.seed)

    @classmethod
    def from_spec(cls, spec: str | SequenceSpec) -> SyntheticSequence:
        return cls(SequenceSpec.parse(spec) if isinstance(spec, str) else spec)

    def __len__(self) -> int:
        """Frames played: ``frames * repeat``."""
        return self.spec.frames * self.spec.repeat

    def pose_index(self, index: int) -> int:
        """Index of the distinct frame (camera pose, render) that frame ``index`` shows."""
        return index % self.spec.frames

    @property
    def hw(self) -> tuple[int, int]:
        return self.spec.height, self.spec.width

    def stamp_ns(self, index: int) -> int:
        return int(round(self.spec.t0_s * 1e9)) + int(round(index * 1e9 / self.spec.fps))

    def index_of(self, stamp_ns: int, tolerance_s: float = 1e-3) -> int:
        """Frame index whose stamp is within ``tolerance_s`` of ``stamp_ns``; KeyError otherwise."""
        i = int(round((stamp_ns - self.stamp_ns(0)) * self.spec.fps / 1e9))
        if 0 <= i < len(self) and abs(self.stamp_ns(i) - stamp_ns) <= tolerance_s * 1e9:
            return i
        raise KeyError(f"stamp {stamp_ns} ns is not a frame of sequence {self.spec.to_string()}")

    def frame(self, index: int) -> Frame:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is not in sequence {self.spec.to_string()} ({len(self)} frames)")
        return _render_cached(self.spec, self.pose_index(index))


@lru_cache(maxsize=64)
def _render_cached(spec: SequenceSpec, index: int) -> Frame:
    seq = _sequence_cached(spec)
    return render(seq.scene, seq.w2c[index], seq.K, seq.hw)


@lru_cache(maxsize=8)
def _sequence_cached(spec: SequenceSpec) -> SyntheticSequence:
    return SyntheticSequence(spec)
