"""A tiny analytic scene for the streaming tests: a camera inside a textured box room, closed-form depth.

Also imported by the other test_stream_* modules (``from test_stream_scene import ...``).
"""

from __future__ import annotations

import numpy as np

from da3_core.stream.frame import Frame

HALF = np.array([4.0, 3.0, 2.5])  # room half sizes (x, y, z), metres; world z up
HW = (24, 32)
K = np.array([[20.0, 0.0, 16.0], [0.0, 20.0, 12.0], [0.0, 0.0, 1.0]])


def look_at_w2c(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV w2c (4, 4): z forward, x right, y down."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world
    E = np.eye(4)
    E[:3, :3] = R
    E[:3, 3] = -R @ eye
    return E


def trajectory(n: int, seed: int = 0) -> list[np.ndarray]:
    """n w2c poses on a slow arc, looking around the room."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        a = 0.15 * i
        eye = np.array([1.2 * np.cos(a), 1.0 * np.sin(a), 0.2 * np.sin(0.5 * a)]) + rng.normal(0, 0.01, 3)
        target = eye + np.array([np.cos(a + 1.2), np.sin(a + 1.2), 0.1 * np.cos(a)])
        poses.append(look_at_w2c(eye, target))
    return poses


def render(w2c: np.ndarray, hw=HW, K_=K) -> tuple[np.ndarray, np.ndarray]:
    """(depth (H, W) float64 z-depth, rgb (H, W, 3) uint8) of the room's inner walls (integer pixel coords)."""
    H, W = hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_cam = np.stack([(u - K_[0, 2]) / K_[0, 0], (v - K_[1, 2]) / K_[1, 1], np.ones_like(u)], -1)  # z = 1
    R = w2c[:3, :3]
    o = -R.T @ w2c[:3, 3]
    d = rays_cam @ R  # world directions (rows: R^T r)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axis = (np.sign(d) * HALF - o) / d
    t_axis[~np.isfinite(t_axis) | (t_axis <= 0)] = np.inf
    depth = t_axis.min(-1)  # ray param = z-depth since rays_cam z = 1
    p = o + d * depth[..., None]
    checker = (np.floor(p[..., 0] * 2) + np.floor(p[..., 1] * 2) + np.floor(p[..., 2] * 2)) % 2
    rgb = np.stack([80 + 100 * checker + 10 * p[..., 0], 60 + 20 * p[..., 1] + 50 * checker, 120 + 15 * p[..., 2]], -1)
    return depth, np.clip(rgb, 0, 255).astype(np.uint8)


def make_frames(n: int, seed: int = 0, t0_ns: int = 1_000_000_000, dt_ns: int = 100_000_000):
    """Frames with known K plus the ground truth dict stamp -> (depth, w2c, K)."""
    frames, truth = [], {}
    for i, E in enumerate(trajectory(n, seed)):
        depth, rgb = render(E)
        stamp = t0_ns + i * dt_ns
        frames.append(Frame(stamp_ns=stamp, rgb=rgb, K=K.copy(), frame_id="cam_optical", index=i))
        truth[stamp] = (depth, E, K.copy())
    return frames, truth


def truth_fn(truth):
    return lambda f: truth[f.stamp_ns]


def test_scene_depth_is_consistent_between_views():
    frames, truth = make_frames(3)
    d0, E0, _ = truth[frames[0].stamp_ns]
    d1, E1, _ = truth[frames[1].stamp_ns]
    assert np.all(np.isfinite(d0)) and np.all(d0 > 0)
    # unproject view 0, project into view 1; where it lands inside, depth agrees with the rendered one
    v, u = np.mgrid[0 : HW[0], 0 : HW[1]].astype(float)
    X0 = np.stack([(u - K[0, 2]) / K[0, 0] * d0, (v - K[1, 2]) / K[1, 1] * d0, d0], -1)
    Xw = (X0 - E0[:3, 3]) @ E0[:3, :3]
    X1 = Xw @ E1[:3, :3].T + E1[:3, 3]
    uv = X1[..., :2] / X1[..., 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    ui, vi = np.rint(uv[..., 0]).astype(int), np.rint(uv[..., 1]).astype(int)
    ok = (ui >= 0) & (ui < HW[1]) & (vi >= 0) & (vi < HW[0])
    # nearest-pixel lookup: most reprojected points land on the same wall at nearly the same depth
    z_pred = X1[..., 2][ok]
    z_render = d1[vi[ok], ui[ok]]
    assert np.median(np.abs(z_pred - z_render) / z_render) < 0.05
