"""Exports of a :class:`da3_core.api.Prediction`: npz, PLY point cloud, colourised depth PNGs, cameras (JSON + TUM)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from da3_core.export.cameras import rotation_to_quat_xyzw, write_cameras_json, write_tum
from da3_core.export.depth_vis import COLORMAP, apply_colormap, colorize_depth, save_depth_png
from da3_core.export.npz import load_npz, save_npz
from da3_core.export.ply import write_ply

__all__ = ["COLORMAP", "apply_colormap", "colorize_depth", "export_prediction", "load_npz", "rotation_to_quat_xyzw",
           "save_depth_png", "save_npz", "write_cameras_json", "write_ply", "write_tum"]


def export_prediction(prediction: Any, out_dir: str | Path, conf_percentile: float | None = 40.0,
                      max_points: int | None = 1_000_000, names: Sequence[str] | None = None,
                      timestamps: Sequence[float] | None = None) -> dict[str, Path]:
    """Write ``results.npz``, ``points.ply`` (confidence-filtered), ``depth/XXXX.png``, ``cameras.json`` and
    ``trajectory.tum`` (the last three need cameras) into ``out_dir``; returns the written paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"npz": save_npz(out / "results.npz", prediction)}
    for i in range(len(prediction.depth)):
        valid = None if prediction.sky is None else ~prediction.sky[i]
        save_depth_png(out / "depth" / f"{i:04d}.png", prediction.depth[i], valid)
    written["depth"] = out / "depth"
    if prediction.extrinsics is not None and prediction.intrinsics is not None:
        pts, cols = prediction.point_cloud(conf_percentile=conf_percentile, max_points=max_points)
        written["ply"] = write_ply(out / "points.ply", pts, cols)
        hw = prediction.depth.shape[1:]
        written["cameras"] = write_cameras_json(out / "cameras.json", prediction.extrinsics, prediction.intrinsics,
                                                hw, names, extra={"is_metric": bool(prediction.is_metric),
                                                                  "depth_units": prediction.depth_units})
        written["trajectory"] = write_tum(out / "trajectory.tum", prediction.extrinsics, timestamps)
    return written
