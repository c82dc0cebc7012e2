"""Camera exports: a JSON file with per-frame K / w2c / image size, and a TUM trajectory of c2w poses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from da3_core.geometry.rigid import invert_rigid
from da3_core.geometry.rotations import quat_xyzw_to_rotation, rotation_to_quat_xyzw


def write_cameras_json(path: str | Path, extrinsics: np.ndarray, intrinsics: np.ndarray,
                       image_hw: tuple[int, int] | Sequence[tuple[int, int]], names: Sequence[str] | None = None,
                       extra: dict | None = None) -> Path:
    """JSON ``{"convention": ..., "frames": [{"name", "width", "height", "K", "w2c", "c2w"}, ...]}``.

    ``extrinsics`` (N, 3|4, 4) OpenCV world-to-camera, ``intrinsics`` (N, 3, 3) pixels of the ``image_hw`` grid.
    """
    n = len(extrinsics)
    hw = [tuple(image_hw)] * n if np.ndim(image_hw) == 1 else [tuple(x) for x in image_hw]
    frames = []
    for i in range(n):
        c2w = invert_rigid(np.asarray(extrinsics[i], dtype=np.float64))
        w2c = np.linalg.inv(c2w)
        frames.append({
            "name": names[i] if names is not None else f"{i:04d}",
            "height": int(hw[i][0]), "width": int(hw[i][1]),
            "K": np.asarray(intrinsics[i], dtype=np.float64).tolist(),
            "w2c": w2c.tolist(), "c2w": c2w.tolist(),
        })
    doc = {"convention": "OpenCV camera axes (x right, y down, z forward); w2c maps world to camera; K in pixels",
           "frames": frames}
    if extra:
        doc.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_tum(path: str | Path, extrinsics: np.ndarray, timestamps: Sequence[float] | None = None) -> Path:
    """TUM trajectory: one line ``timestamp tx ty tz qx qy qz qw`` per frame, the camera-to-world pose
    (camera centre and orientation in the world frame). Timestamps default to the frame index."""
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV camera axes)"]
    for i, E in enumerate(np.asarray(extrinsics, dtype=np.float64)):
        c2w = invert_rigid(E)
        q = rotation_to_quat_xyzw(c2w[:3, :3])
        ts = float(timestamps[i]) if timestamps is not None else float(i)
        lines.append(" ".join(f"{v:.9f}" for v in (ts, *c2w[:3, 3], *q)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory: (timestamps (N,) float64 seconds, c2w (N, 4, 4) float64); '#' lines are comments."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    if any(len(r) != 8 for r in rows):
        raise ValueError(f"{path}: TUM lines need 8 values 'timestamp tx ty tz qx qy qz qw'")
    vals = np.array(rows, dtype=np.float64).reshape(-1, 8)
    c2w = np.tile(np.eye(4), (len(vals), 1, 1))
    if len(vals):
        c2w[:, :3, :3] = np.stack([quat_xyzw_to_rotation(q) for q in vals[:, 4:8]])
    c2w[:, :3, 3] = vals[:, 1:4]
    return vals[:, 0], c2w
