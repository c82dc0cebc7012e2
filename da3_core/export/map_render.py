"""A picture of a reconstruction for people: coloured point splats (z-buffered, numpy) + camera path(s) (PIL).

- :func:`render_points`: pinhole splat of (N, 3) points with (N, 3) uint8 colours for a given OpenCV ``w2c`` / ``K``;
  pixel (u, v) = rint(K X) (integer pixel centres, as in ``da3_core.geometry.points``); the nearest point wins.
- :func:`auto_view`: an oblique top-down virtual camera framing the robust (2-98 %) bounds of the points and
  cameras. "Up" is the mean camera up (-y of the OpenCV camera axes) of the path, else the cloud's flattest axis.
- :func:`render_map`: both, plus the estimated path (polyline, camera frusta, start / end dots), an optional
  second path (ground truth, another colour) and a small legend. :func:`save_map_png` writes it.
Deterministic: same inputs, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["look_at", "auto_view", "project", "render_points", "render_map", "save_map_png"]

PATH_COLOR = (255, 64, 32)
GT_COLOR = (40, 200, 60)
BACKGROUND = (24, 24, 28)


def look_at(eye, target, up) -> np.ndarray:
    """(4, 4) OpenCV world-to-camera of a camera at ``eye`` looking at ``target`` (x right, y down, z forward)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # right = down x forward = forward x up
    if np.linalg.norm(x) < 1e-9:  # looking along up: any right vector
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def project(points: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) float pixel coordinates and (N,) camera z of world points."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cam = P @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ np.asarray(K, dtype=np.float64).T)[:, :2] / z[:, None]
    return uv, z


def render_points(points: np.ndarray, colors: np.ndarray | None, w2c: np.ndarray, K: np.ndarray,
                  size: tuple[int, int], radius: int = 1, background=BACKGROUND
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Splat points into a (H, W, 3) uint8 image of ``size`` = (W, H); returns (image, z-buffer (H, W), inf where
    empty). Each point covers a (2 radius - 1)² square (radius 1: one pixel); the nearest point per pixel wins
    (ties: the lower index)."""
    W, H = int(size[0]), int(size[1])
    img = np.empty((H, W, 3), np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    zbuf = np.full((H, W), np.inf)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cols = np.full((len(pts), 3), 220, np.uint8) if colors is None else np.asarray(colors, np.uint8).reshape(-1, 3)
    uv, z = project(pts, w2c, K)
    ok = np.isfinite(z) & (z > 1e-6) & np.all(np.isfinite(uv), axis=1)
    u, v = np.rint(uv[ok, 0]).astype(np.int64), np.rint(uv[ok, 1]).astype(np.int64)
    z, cols, idx = z[ok], cols[ok], np.nonzero(ok)[0]
    r = max(1, int(radius)) - 1
    offs = [(du, dv) for dv in range(-r, r + 1) for du in range(-r, r + 1)]
    us = np.concatenate([u + du for du, _ in offs])
    vs = np.concatenate([v + dv for _, dv in offs])
    zs, ids, cs = np.tile(z, len(offs)), np.tile(idx, len(offs)), np.tile(cols, (len(offs), 1))
    inside = (us >= 0) & (us < W) & (vs >= 0) & (vs < H)
    us, vs, zs, ids, cs = us[inside], vs[inside], zs[inside], ids[inside], cs[inside]
    if len(us):
        pix = vs * W + us
        order = np.lexsort((ids, zs, pix))  # by pixel, then nearest, then index
        pix, zs, cs = pix[order], zs[order], cs[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        img.reshape(-1, 3)[pix[first]] = cs[first]
        zbuf.reshape(-1)[pix[first]] = zs[first]
    return img, zbuf


def _robust_bounds(P: np.ndarray, lo: float = 2.0, hi: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    return np.percentile(P, lo, axis=0), np.percentile(P, hi, axis=0)


def auto_view(points: np.ndarray, path_c2w: np.ndarray | None = None, size: tuple[int, int] = (960, 720),
              elevation_deg: float = 55.0, fov_deg: float = 50.0, margin: float = 1.1
              ) -> tuple[np.ndarray, np.ndarray]:
    """(w2c (4, 4), K (3, 3)) of an oblique top-down view framing the points and camera centres."""
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    P = P[np.all(np.isfinite(P), axis=1)]
    path = None if path_c2w is None or len(path_c2w) == 0 else np.asarray(path_c2w, dtype=np.float64)
    parts = [P] + ([path[:, :3, 3]] if path is not None else [])
    allp = np.concatenate(parts) if sum(len(p) for p in parts) else np.zeros((1, 3))
    lo, hi = _robust_bounds(allp)
    if path is not None:
        lo, hi = np.minimum(lo, path[:, :3, 3].min(0)), np.maximum(hi, path[:, :3, 3].max(0))
    centre = 0.5 * (lo + hi)
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    if path is not None:
        up = -path[:, :3, 1].mean(0)
        fwd = path[0, :3, 2]
    else:
        X = allp - allp.mean(0)
        _, _, Vt = np.linalg.svd(X[:: max(1, len(X) // 20000)], full_matrices=False) if len(X) >= 3 else \
            (None, None, np.eye(3))
        up, fwd = Vt[-1], Vt[0]
    if np.linalg.norm(up) < 1e-9:
        up = np.array([0.0, -1.0, 0.0])
    up = up / np.linalg.norm(up)
    fwd = fwd - up * (fwd @ up)
    if np.linalg.norm(fwd) < 1e-9:
        fwd = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 0.0, 1.0])
    fwd = fwd / np.linalg.norm(fwd)
    W, H = int(size[0]), int(size[1])
    f = 0.5 * min(W, H) / np.tan(np.radians(fov_deg) / 2)
    dist = margin * radius / np.tan(np.radians(fov_deg) / 2)
    el = np.radians(elevation_deg)
    eye = centre + dist * (np.cos(el) * -fwd + np.sin(el) * up)
    K = np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    return look_at(eye, centre, up), K


def _draw_path(draw, c2w: np.ndarray, w2c: np.ndarray, K: np.ndarray, color, scale: float, frusta: int) -> None:
    centres = c2w[:, :3, 3]
    uv, z = project(centres, w2c, K)
    ok = z > 1e-6
    pts = [(float(a), float(b)) for (a, b), good in zip(uv, ok) if good]
    if len(pts) >= 2:
        draw.line(pts, fill=color, width=2)
    n = len(c2w)
    step = max(1, n // max(1, frusta)) if frusta else 0
    if step:
        corners = np.array([[-1, -0.75, 1.5], [1, -0.75, 1.5], [1, 0.75, 1.5], [-1, 0.75, 1.5]]) * 0.5 * scale
        for i in list(range(0, n, step)) + [n - 1]:
            world = corners @ c2w[i, :3, :3].T + c2w[i, :3, 3]
            cuv, cz = project(np.vstack([c2w[i, :3, 3], world]), w2c, K)
            if np.any(cz <= 1e-6) or not np.all(np.isfinite(cuv)):
                continue
            c = [tuple(map(float, p)) for p in cuv]
            for k in range(1, 5):
                draw.line([c[0], c[k]], fill=color, width=1)
            draw.line([c[1], c[2], c[3], c[4], c[1]], fill=color, width=1)
    for i, rad in ((0, 5), (n - 1, 3)):
        if n and ok[i]:
            x, y = uv[i]
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=color)


def render_map(points: np.ndarray, colors: np.ndarray | None = None, path_c2w: np.ndarray | None = None,
               gt_c2w: np.ndarray | None = None, size: tuple[int, int] = (960, 720), view=None, radius: int = 2,
               legend: bool = True, frusta: int = 12, title: str = "") -> np.ndarray:
    """(H, W, 3) uint8 picture: the cloud splatted from ``view`` = (w2c, K) (default :func:`auto_view`), the path
    (N, 4, 4) camera-to-world in :data:`PATH_COLOR` with ``frusta`` camera pyramids, ``gt_c2w`` (already in the
    points' frame) in :data:`GT_COLOR`, and a legend."""
    from PIL import Image, ImageDraw

    path = None if path_c2w is None or len(path_c2w) == 0 else np.asarray(path_c2w, dtype=np.float64)
    gt = None if gt_c2w is None or len(gt_c2w) == 0 else np.asarray(gt_c2w, dtype=np.float64)
    w2c, K = view if view is not None else auto_view(points, path, size)
    img, _ = render_points(points, colors, w2c, K, size, radius=radius)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    ref = np.concatenate([P[np.all(np.isfinite(P), axis=1)]] + ([path[:, :3, 3]] if path is not None else []))
    extent = float(np.linalg.norm(np.subtract(*_robust_bounds(ref)[::-1]))) if len(ref) else 1.0
    scale = 0.04 * max(extent, 1e-3)
    if gt is not None:
        _draw_path(draw, gt, w2c, K, GT_COLOR, scale, 0)
    if path is not None:
        _draw_path(draw, path, w2c, K, PATH_COLOR, scale, frusta)
    if legend:
        lines = ([(title, (235, 235, 235))] if title else []) + [(f"map: {len(P)} points", (235, 235, 235))]
        if path is not None:
            lines.append((f"estimated path ({len(path)} cameras)", PATH_COLOR))
        if gt is not None:
            lines.append(("ground truth (aligned)", GT_COLOR))
        for k, (text, col) in enumerate(lines):
            draw.text((8, 6 + 14 * k), text, fill=col)
    return np.asarray(pil)


def save_map_png(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None, **kwargs) -> Path:
    """:func:`render_map` to a PNG file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_map(points, colors, **kwargs)).save(path)
    return path
