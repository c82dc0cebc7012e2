"""Binary little-endian PLY point clouds: ``x y z`` float32 + ``red green blue`` uint8 per vertex."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write (M, 3) points (any float, stored float32) and optional (M, 3) uint8 RGB colours (grey when None).

    Non-finite points are dropped. Returns the path.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        cols = np.full(pts.shape, 200, dtype=np.uint8)
    else:
        cols = np.asarray(colors)
        if cols.shape != pts.shape:
            raise ValueError(f"write_ply: colors {cols.shape} must match points {pts.shape}")
        if cols.dtype != np.uint8:
            raise TypeError(f"write_ply: colors must be uint8 RGB, got {cols.dtype}")
    keep = np.all(np.isfinite(pts), axis=1)
    pts, cols = pts[keep], cols[keep]
    vertices = np.empty(len(pts), dtype=_VERTEX)
    vertices["x"], vertices["y"], vertices["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    vertices["red"], vertices["green"], vertices["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by da3_core\n"
        f"element vertex {len(pts)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertices.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`write_ply`: ((M, 3) float32 points, (M, 3) uint8 colours)."""
    raw = Path(path).read_bytes()
    marker = b"end_header\n"
    end = raw.find(marker)
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    header = raw[: end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY (as written by write_ply) is supported")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    vertices = np.frombuffer(raw, dtype=_VERTEX, count=count, offset=end + len(marker))
    pts = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    cols = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1)
    return pts, cols
