"""A synthetic robot: a base driving through a synthetic scene with 1-3 rigidly mounted cameras and wheel-like
odometry (slip, drift, noise), with exact ground truth. ROS-free (numpy); the bag writer and the oracle use it.

One spec string describes everything, so every process that parses it (bag writer, the node's oracle, a test) sees
the same robot::

    robot:kind=room,seed=0,frames=30,size=168x126,fov=70,fps=10,t0=1,cameras=3,slip=0.25,slip_t=0.5-1.5,drift=2,noise=0

Keys: those of :class:`~da3_core.data.synthetic.sequence.SequenceSpec` (``path`` is always a walk) plus
- ``cameras`` (1-3): 1 = front; 2 = front-left / front-right; 3 = left / front / right (``baseline`` m apart
  sideways, 25 degrees apart in yaw), all pitched 8 degrees down, mounted ``mount_z`` m above base_link;
- odometry: ``slip`` (wheel slip: the odometry's travelled distance is (1 + slip) x the true one) during
  ``slip_t=A-B`` (seconds since the first image, default the whole run); ``drift`` (yaw drift, degrees per metre
  travelled); ``noise`` (relative standard deviation of each odometry step's translation, with the same in radians
  per metre for its yaw); ``odom_hz`` (odometry rate, a multiple of fps so every image stamp has an odometry sample).

Frames (REP-105 / REP-103): the world is ``world_gt`` (ground truth only); odometry is ``odom -> base_link`` (odom =
base_link at the first sample); the rig is static ``base_link -> cam{k}_link -> cam{k}_optical_frame`` (link: x
forward, z up; optical: x right, y down, z forward). Poses here are (4, 4) ``T(parent <- child)`` float64;
world-to-camera ``w2c`` (OpenCV) where noted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property, lru_cache

import numpy as np

from da3_core.geometry.rigid import invert_rigid

__all__ = ["ROBOT_PREFIX", "RobotSpec", "RobotSequence", "is_robot_spec", "OPTICAL_FROM_LINK", "ODOM_FRAME",
           "BASE_FRAME", "GT_WORLD_FRAME", "camera_frame", "camera_link"]

ROBOT_PREFIX = "robot:"
ODOM_FRAME, BASE_FRAME, GT_WORLD_FRAME = "odom", "base_link", "world_gt"
# optical axes (x right, y down, z forward) in link axes (x forward, y left, z up): columns = optical axes
OPTICAL_FROM_LINK = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
_ROBOT_KEYS = ("cameras", "baseline", "mount_z", "slip", "slip_t", "drift", "noise", "odom_hz")


def camera_frame(k: int) -> str:
    return f"cam{k}_optical_frame"


def camera_link(k: int) -> str:
    return f"cam{k}_link"


def is_robot_spec(spec: str) -> bool:
    return spec.strip().startswith(ROBOT_PREFIX)


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@dataclass(frozen=True)
class RobotSpec:
    sequence: str  # the SequenceSpec part (key=value, ...)
    cameras: int = 1
    baseline: float = 0.12
    mount_z: float = 0.5
    slip: float = 0.0
    slip_t: tuple[float, float] | None = None
    drift: float = 0.0
    noise: float = 0.0
    odom_hz: float = 0.0  # 0 = 2 x fps

    @classmethod
    def parse(cls, spec: str) -> RobotSpec:
        text = spec.strip()
        if text.startswith(ROBOT_PREFIX):
            text = text[len(ROBOT_PREFIX):]
        robot: dict = {}
        rest = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, _, value = item.partition("=")
            if key not in _ROBOT_KEYS:
                rest.append(item)
            elif key == "cameras":
                robot[key] = int(value)
            elif key == "slip_t":
                a, sep, b = value.partition("-")
                if not sep:
                    raise ValueError(f"robot spec: slip_t={value!r} must be START-END in seconds")
                robot[key] = (float(a), float(b))
            else:
                robot[key] = float(value)
        if any(item.startswith("path=") for item in rest):
            raise ValueError("robot spec: the base always drives a walk; leave 'path' out")
        out = cls(sequence=",".join(rest + ["path=walk"]), **robot)
        if not 1 <= out.cameras <= 3:
            raise ValueError(f"robot spec: cameras={out.cameras}; 1, 2 or 3 are available")
        if out.slip <= -1.0 or out.noise < 0 or out.baseline < 0:
            raise ValueError("robot spec: need slip > -1, noise >= 0, baseline >= 0")
        return out

    def to_string(self) -> str:
        items = [self.sequence.replace(",path=walk", "")]
        for f in fields(self)[1:]:
            v = getattr(self, f.name)
            if v is None:
                continue
            items.append(f"{f.name}={v[0]:g}-{v[1]:g}" if isinstance(v, tuple) else f"{f.name}={v:g}")
        return ROBOT_PREFIX + ",".join(items)


@dataclass
class CameraView:
    """One camera image of the robot: rgb, depth (metres, inf = sky), w2c (world), K, stamp."""

    rgb: np.ndarray
    depth: np.ndarray
    w2c: np.ndarray
    K: np.ndarray
    stamp_ns: int


class RobotSequence:
    """The robot of a :class:`RobotSpec` (see the module docstring)."""

    def __init__(self, spec: RobotSpec | str):
        from da3_core.data.synthetic.paths import make_trajectory
        from da3_core.data.synthetic.sequence import SequenceSpec, SyntheticSequence

        self.spec = RobotSpec.parse(spec) if isinstance(spec, str) else spec
        self.seq = SequenceSpec.parse(self.spec.sequence)
        s = self.seq
        self._timing = SyntheticSequence(s)  # the scene, K and image stamps of the sequence the robot drives through
        self.scene, self.K = self._timing.scene, self._timing.K
        walk_c2w = invert_rigid(make_trajectory(self.scene, s.frames, "walk", seed=s.seed, jitter=False))
        gaze = walk_c2w[:, :3, 2]
        self._yaw = np.unwrap(np.arctan2(gaze[:, 1], gaze[:, 0]))
        self._head = walk_c2w[:, :3, 3]  # rig centre: the walk's camera centre
        self.mounts = self._mounts()

    def __len__(self) -> int:
        return self.seq.frames

    @property
    def hw(self) -> tuple[int, int]:
        return self.seq.height, self.seq.width

    @property
    def n_cameras(self) -> int:
        return self.spec.cameras

    # --- time ---------------------------------------------------------------------------------------------------

    def stamp_ns(self, index: int) -> int:
        return self._timing.stamp_ns(index)

    def index_of(self, stamp_ns: int, tolerance_s: float = 1e-3) -> int:
        return self._timing.index_of(stamp_ns, tolerance_s)

    @property
    def odom_hz(self) -> float:
        return self.spec.odom_hz or 2.0 * self.seq.fps

    @cached_property
    def odom_stamps_ns(self) -> np.ndarray:
        """Odometry sample stamps: from the first to the last image stamp at ``odom_hz`` (image stamps included)."""
        per_frame = max(1, int(round(self.odom_hz / self.seq.fps)))
        n = (len(self) - 1) * per_frame + 1
        t0, dt = self.stamp_ns(0), 1e9 / (self.seq.fps * per_frame)
        return np.array([t0 + int(round(j * dt)) for j in range(n)], dtype=np.int64)

    # --- geometry -----------------------------------------------------------------------------------------------

    def _mounts(self) -> list[np.ndarray]:
        """T(base_link <- cam{k}_link) for every camera: yaw apart, baseline apart sideways, pitched down."""
        n, b = self.spec.cameras, self.spec.baseline
        layout = {1: [(0.0, 0.0)], 2: [(12.5, b / 2), (-12.5, -b / 2)], 3: [(25.0, b), (0.0, 0.0), (-25.0, -b)]}[n]
        pitch = np.radians(8.0)  # down: a positive rotation about the link's y axis (left) tilts x forward down
        out = []
        for yaw_deg, y in layout:
            R = _rot_z(np.radians(yaw_deg)) @ _rot_y(pitch)
            out.append(_pose(R, [0.05 if y == 0.0 else 0.0, y, self.spec.mount_z]))
        return out

    def base_in_world(self, index: int) -> np.ndarray:
        """True T(world_gt <- base_link) at image ``index``: the base under the walk's rig centre, heading its way."""
        head = self._head[index]
        return _pose(_rot_z(self._yaw[index]), [head[0], head[1], head[2] - self.spec.mount_z])

    def optical_in_base(self, k: int) -> np.ndarray:
        """T(base_link <- cam{k}_optical_frame) (static)."""
        return self.mounts[k] @ OPTICAL_FROM_LINK

    def camera_w2c(self, k: int, index: int) -> np.ndarray:
        """True world-to-camera (OpenCV) of camera ``k`` at image ``index``."""
        return invert_rigid(self.base_in_world(index) @ self.optical_in_base(k))

    def view(self, k: int, index: int) -> CameraView:
        rgb, depth = _render(self.spec, k, index)
        return CameraView(rgb=rgb, depth=depth, w2c=self.camera_w2c(k, index), K=self.K.copy(),
                          stamp_ns=self.stamp_ns(index))

    def camera_of(self, frame_id: str) -> int:
        for k in range(self.n_cameras):
            if frame_id == camera_frame(k):
                return k
        raise KeyError(f"frame {frame_id!r} is not a camera of {self.spec.to_string()} "
                       f"({', '.join(camera_frame(k) for k in range(self.n_cameras))})")

    # --- odometry -----------------------------------------------------------------------------------------------

    def true_base_at(self, stamp_ns: int) -> np.ndarray:
        """True T(world_gt <- base_link) at any stamp between the first and last image (interpolated)."""
        from da3_core.stream.tf_buffer import interpolate_transform

        x = (stamp_ns - self.stamp_ns(0)) * self.seq.fps / 1e9
        i = int(np.clip(np.floor(x), 0, len(self) - 1))
        if i >= len(self) - 1:
            return self.base_in_world(len(self) - 1)
        return interpolate_transform(self.base_in_world(i), self.base_in_world(i + 1), float(x - i))

    @cached_property
    def odometry(self) -> np.ndarray:
        """(M, 4, 4) T(odom <- base_link) at :attr:`odom_stamps_ns`: the true steps with slip, yaw drift and noise
        integrated from the identity (deterministic in the seed)."""
        sp = self.spec
        rng = np.random.default_rng([self.seq.seed, 11])
        stamps = self.odom_stamps_ns
        truth = [self.true_base_at(int(s)) for s in stamps]
        out = [np.eye(4)]
        t0 = self.stamp_ns(0)
        for j in range(1, len(stamps)):
            step = invert_rigid(truth[j - 1]) @ truth[j]  # true motion in the base frame
            dist = float(np.linalg.norm(step[:3, 3]))
            t_s = (stamps[j] - t0) / 1e9
            slipping = sp.slip_t is None or sp.slip_t[0] <= t_s <= sp.slip_t[1]
            trans = step[:3, 3] * ((1.0 + sp.slip) if slipping else 1.0)
            trans = trans * (1.0 + sp.noise * rng.normal()) if sp.noise else trans
            dyaw = np.radians(sp.drift) * dist + (sp.noise * dist * rng.normal() if sp.noise else 0.0)
            out.append(out[-1] @ _pose(_rot_z(dyaw) @ step[:3, :3], trans))
        return np.stack(out)

    def odom_at_image(self, index: int) -> np.ndarray:
        """T(odom <- base_link) at image ``index`` (an odometry sample)."""
        j = int(np.searchsorted(self.odom_stamps_ns, self.stamp_ns(index)))
        return self.odometry[j]

    def true_base_from_start(self, index: int) -> np.ndarray:
        """Ground truth T(base_link at the first image <- base_link at ``index``): what exact odometry reports."""
        return invert_rigid(self.base_in_world(0)) @ self.base_in_world(index)


@lru_cache(maxsize=192)
def _render(spec: RobotSpec, k: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    from da3_core.data.synthetic.render import render

    robot = _robot(spec)
    f = render(robot.scene, robot.camera_w2c(k, index), robot.K, robot.hw)
    return f.rgb, f.depth


@lru_cache(maxsize=8)
def _robot(spec: RobotSpec) -> RobotSequence:
    return RobotSequence(spec)

