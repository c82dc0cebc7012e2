"""Camera paths: orbit, smooth walk-through, hand-held jitter, and scene-aware trajectories.

All poses are OpenCV world-to-camera (N, 4, 4) float64 in the +z-up world of :mod:`scene`.
"""

from __future__ import annotations

import numpy as np

from da3_core.data.synthetic.camera import camera_centers, look_at, rotvec_to_matrix
from da3_core.data.synthetic.scene import Scene

__all__ = ["orbit", "walkthrough", "pan", "handheld_jitter", "make_trajectory", "path_clearance", "TRAJECTORY_KINDS"]

TRAJECTORY_KINDS = ("auto", "orbit", "walk", "pan", "mixed")


def orbit(
    center,
    radius: float,
    height: float,
    n: int,
    *,
    start_deg: float = 0.0,
    arc_deg: float = 360.0,
    target=None,
    outward: bool = False,
    pitch_deg: float = 0.0,
) -> np.ndarray:
    """Cameras on a horizontal circle (centre ``center`` (3,) xy, radius, z = ``height``).

    They look at ``target`` (default: ``center``), or, with ``outward=True``, away from the centre (horizontal
    gaze, pitched down by ``pitch_deg``). ``n`` poses spread over ``arc_deg`` degrees from ``start_deg``
    (a full circle does not repeat its first pose). Returns (n, 4, 4) w2c.
    """
    center = np.asarray(center, np.float64)
    full = abs(arc_deg) >= 360.0
    a = np.radians(start_deg + np.linspace(0.0, arc_deg, n, endpoint=not full or n == 1))
    eyes = np.stack((center[0] + radius * np.cos(a), center[1] + radius * np.sin(a), np.full(n, height)), -1)
    if outward:
        p = np.radians(pitch_deg)
        radial = np.stack((np.cos(a), np.sin(a), np.zeros(n)), -1)
        tgt = eyes + np.cos(p) * radial - np.sin(p) * np.array([0.0, 0.0, 1.0])
    else:
        tgt = np.broadcast_to(np.asarray(center if target is None else target, np.float64), eyes.shape)
    return look_at(eyes, tgt)


def _catmull_rom(points: np.ndarray, samples_per_segment: int = 64) -> np.ndarray:
    """Dense (M, 3) uniform Catmull-Rom curve through ``points`` (K, 3) (passes through every point)."""
    P = np.concatenate((points[:1], points, points[-1:]))
    s = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(P) - 2):
        p0, p1, p2, p3 = P[i - 1], P[i], P[i + 1], P[i + 2]
        out.append(
            0.5
            * ((2 * p1) + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * s**3)
        )
    out.append(points[-1:])
    return np.concatenate(out)


def walkthrough(waypoints, n: int, *, look_ahead: float = 1.0, pitch_deg: float = 5.0, focus=None) -> np.ndarray:
    """Smooth walk through ``waypoints`` (K >= 2, 3), ``n`` poses evenly spaced in arc length.

    Each camera looks towards the path point ``look_ahead`` metres further on (the path is extended straight
    past its end), that heading smoothed along the path (Gaussian over ``look_ahead`` metres), horizontally and
    pitched down by ``pitch_deg``. With ``focus`` (3,) given, cameras instead turn towards that point's
    horizontal direction (same pitch). Returns (n, 4, 4) w2c.
    """
    wp = np.asarray(waypoints, np.float64)
    curve = _catmull_rom(wp)
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    keep = np.concatenate(([True], seg > 1e-12))
    curve = curve[keep]
    s = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))))
    tail = curve[-1] - curve[-2]
    tail /= np.linalg.norm(tail)

    def at(q):
        q = np.asarray(q)
        pos = np.stack([np.interp(np.minimum(q, s[-1]), s, curve[:, k]) for k in range(3)], -1)
        return pos + np.maximum(q - s[-1], 0.0)[:, None] * tail

    q = np.linspace(0.0, s[-1], n)
    eyes = at(q)
    # heading towards the point look_ahead further on, smoothed along the path (Gaussian, sigma = look_ahead)
    dense = np.linspace(0.0, s[-1], 512)
    g = at(dense + look_ahead) - at(dense)
    yaw = np.unwrap(np.arctan2(g[:, 1], g[:, 0]))
    step = dense[1] - dense[0] if s[-1] > 0 else 1.0
    sig = max(look_ahead / step, 1e-6)
    k = np.exp(-0.5 * (np.arange(-int(3 * sig) - 1, int(3 * sig) + 2) / sig) ** 2)
    pad = len(k) // 2
    yaw = np.convolve(np.pad(yaw, pad, mode="edge"), k / k.sum(), mode="valid")
    yq = np.interp(q, dense, yaw)
    if focus is not None:
        f = np.asarray(focus, np.float64)
        yq = np.arctan2(f[1] - eyes[:, 1], f[0] - eyes[:, 0])
    gaze = np.stack((np.cos(yq), np.sin(yq), np.zeros(n)), -1)
    p = np.radians(pitch_deg)
    return look_at(eyes, eyes + np.cos(p) * gaze - np.sin(p) * np.array([0.0, 0.0, 1.0]))


def pan(eye, n: int, *, yaw_deg: tuple[float, float], pitch_deg: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A camera standing at ``eye`` (3,) and turning: ``n`` poses whose heading goes linearly from ``yaw_deg[0]`` to
    ``yaw_deg[1]`` (degrees from +x, counter-clockwise seen from above) and whose downward pitch goes from
    ``pitch_deg[0]`` to ``pitch_deg[1]``. Every pose has the same centre, so neighbouring views differ by a pure
    rotation (a homography). Returns (n, 4, 4) w2c."""
    eye = np.asarray(eye, np.float64)
    yaw = np.radians(np.linspace(yaw_deg[0], yaw_deg[1], n))
    pitch = np.radians(np.linspace(pitch_deg[0], pitch_deg[1], n))
    gaze = np.stack((np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)), -1)
    eyes = np.broadcast_to(eye, gaze.shape)
    return look_at(eyes, eyes + gaze)


def _smooth_unit_noise(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """(n, dims) smooth noise, each row's norm <= 1 (sum of random low-frequency sinusoids)."""
    x = np.linspace(0.0, 1.0, n)[:, None]
    out = np.zeros((n, dims))
    for _ in range(3):
        f = rng.uniform(0.3, 2.5, dims)
        out += rng.normal(size=dims) * np.sin(2 * np.pi * f * x + rng.uniform(0, 2 * np.pi, dims))
    return out / max(np.linalg.norm(out, axis=1).max(), 1e-12)


def handheld_jitter(w2cs: np.ndarray, seed: int = 0, rot_deg: float = 1.0, trans: float = 0.02) -> np.ndarray:
    """Add smooth hand-held shake to poses (N, 4, 4) w2c.

    Each pose becomes ``[dR | dt] @ w2c`` with dR a rotation of at most ``rot_deg`` degrees and |dt| <= ``trans``
    metres (so each camera centre moves by at most ``trans`` and its orientation by at most ``rot_deg``).
    The perturbation varies smoothly along the sequence and is deterministic in ``seed``.
    """
    w2cs = np.asarray(w2cs, np.float64)
    rng = np.random.default_rng(seed)
    n = len(w2cs)
    rv = _smooth_unit_noise(rng, n, 3) * np.radians(rot_deg)
    dt = _smooth_unit_noise(rng, n, 3) * trans
    D = np.tile(np.eye(4), (n, 1, 1))
    D[:, :3, :3] = rotvec_to_matrix(rv)
    D[:, :3, 3] = dt
    return D @ w2cs


def path_clearance(scene: Scene, w2cs: np.ndarray) -> np.ndarray:
    """Signed distance (N,) from each camera centre to the nearest surface (> 0: in free space)."""
    return scene.sdf(camera_centers(np.asarray(w2cs)))


def _orbit_for(scene: Scene, n: int, rng: np.random.Generator) -> np.ndarray:
    h = rng.uniform(*scene.camera_z)
    arc = rng.uniform(60.0, 300.0) * rng.choice([-1.0, 1.0])
    start = rng.uniform(0.0, 360.0)
    if scene.kind == "room":
        r = rng.uniform(0.2, 0.7) * scene.free_radius
        return orbit(
            scene.free_center, r, h, n, start_deg=start, arc_deg=arc, outward=True, pitch_deg=rng.uniform(0.0, 20.0)
        )
    half = np.min(scene.bounds[1, :2] - scene.bounds[0, :2]) / 2
    r = rng.uniform(min(6.0, half - 1.0), min(10.0, half))
    tgt = scene.free_center + [0.0, 0.0, rng.uniform(-0.3, 0.3)]
    return orbit(scene.free_center, r, h, n, start_deg=start, arc_deg=arc, target=tgt)


def _walk_for(scene: Scene, n: int, rng: np.random.Generator, margin: float) -> np.ndarray | None:
    """Random free waypoints, 1.5-4 m apart, turning at most 70 degrees at each, joined by a smooth walk."""
    lo, hi = scene.bounds
    want = int(rng.integers(3, 6))
    pts, heading = [], None
    for _ in range(300):
        if not pts:
            p = rng.uniform(lo, hi)
        else:
            yaw = rng.uniform(0, 2 * np.pi) if heading is None else heading + np.radians(rng.uniform(-70, 70))
            p = pts[-1] + rng.uniform(1.5, 4.0) * np.array([np.cos(yaw), np.sin(yaw), 0.0])
        p[2] = rng.uniform(*scene.camera_z)
        if np.all((p >= lo) & (p <= hi)) and scene.sdf(p)[0] > margin + 0.2:
            if pts:
                heading = np.arctan2(p[1] - pts[-1][1], p[0] - pts[-1][0])
            pts.append(p)
            if len(pts) == want:
                break
    if len(pts) < 2:
        return None
    wp = np.array(pts)
    kw = dict(look_ahead=rng.uniform(0.8, 2.0), pitch_deg=rng.uniform(0.0, 15.0))
    w2cs = walkthrough(wp, n, **kw)
    if scene.kind != "room" and rng.random() < 0.5:  # look at the objects, unless the walk passes too close
        d = np.linalg.norm(camera_centers(w2cs)[:, :2] - scene.free_center[:2], axis=1)
        if d.min() > 3.0:
            w2cs = walkthrough(wp, n, focus=scene.free_center, **kw)
    return w2cs


def _pan_for(scene: Scene, n: int, rng: np.random.Generator, margin: float) -> np.ndarray | None:
    """Stand at a random free point and turn 40-120 degrees (either way), pitch drifting within 0-25 degrees down."""
    lo, hi = scene.bounds
    for _ in range(300):
        p = rng.uniform(lo, hi)
        p[2] = rng.uniform(*scene.camera_z)
        if scene.sdf(p)[0] > margin + 0.2:
            break
    else:
        return None
    if scene.kind != "room" and rng.random() < 0.5:  # outdoors: start facing the objects half the time
        d = scene.free_center[:2] - p[:2]
        start = np.degrees(np.arctan2(d[1], d[0]))
    else:
        start = rng.uniform(0.0, 360.0)
    sweep = rng.uniform(40.0, 120.0) * rng.choice([-1.0, 1.0])
    return pan(p, n, yaw_deg=(start - sweep / 2, start + sweep / 2), pitch_deg=tuple(rng.uniform(0.0, 25.0, 2)))


def make_trajectory(
    scene: Scene,
    n: int,
    kind: str = "auto",
    seed: int = 0,
    *,
    jitter: bool = True,
    rot_deg: float = 1.5,
    trans: float = 0.03,
    margin: float = 0.3,
    max_tries: int = 100,
) -> np.ndarray:
    """A collision-free camera path (n, 4, 4) w2c for ``scene``, deterministic in (scene, kind, seed).

    ``kind``: ``"orbit"`` (rooms: around the free centre looking outward; outdoors: around the objects looking
    at them), ``"walk"`` (smooth walk through random free waypoints), ``"pan"`` (standing still and turning 40-120
    degrees: neighbouring views differ by a rotation only), ``"auto"`` (orbit or walk, by seed) or ``"mixed"``
    (orbit, walk or pan, by seed). Every camera
    centre (after optional hand-held jitter) is at least ``margin`` metres from every surface, inside
    ``scene.bounds``; raises RuntimeError if no such path is found in ``max_tries`` attempts.
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"unknown trajectory kind {kind!r}; use one of {TRAJECTORY_KINDS}")
    rng = np.random.default_rng([seed, scene.seed, 7])
    for _ in range(max_tries):
        if kind == "auto":
            k = ("orbit", "walk")[int(rng.integers(2))]
        elif kind == "mixed":
            k = ("orbit", "walk", "pan")[int(rng.integers(3))]
        else:
            k = kind
        if k == "orbit":
            w2cs = _orbit_for(scene, n, rng)
        elif k == "walk":
            w2cs = _walk_for(scene, n, rng, margin)
        else:
            w2cs = _pan_for(scene, n, rng, margin)
        if w2cs is None:
            continue
        if jitter:
            w2cs = handheld_jitter(w2cs, int(rng.integers(2**31)), rot_deg, trans)
        c = camera_centers(w2cs)
        inside = np.all((c >= scene.bounds[0] - 1e-9) & (c <= scene.bounds[1] + 1e-9))
        if inside and np.all(path_clearance(scene, w2cs) > margin):
            return w2cs
    raise RuntimeError(f"no collision-free {kind} path found for scene {scene.kind}/{scene.seed}")
