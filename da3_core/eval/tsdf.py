"""TSDF fusion of depth maps + poses into a surface point cloud (the paper's reconstruction step, §6.1).

Uses open3d's legacy ``ScalableTSDFVolume`` (plain fusion, weight 1 per observation; the streaming map with
confidence weights is :mod:`da3_core.stream.tsdf_map`). open3d is a regular dependency: ``open3d-cpu==0.19.0`` in
``requirements/mapping.txt``, installed by ``make`` (0.20.0's legacy volume returned no points in our tests; the
0.19.0 wheel imports on Debian 12 without extra system packages). :func:`import_open3d` raises
:class:`TSDFUnavailable` saying how to reinstall it when it does not import (a venv built before it became a
dependency, or a broken install). Keep ``OMP_NUM_THREADS`` low on small machines (open3d's default thread count is
very slow on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TSDFUnavailable", "import_open3d", "open3d_available", "tsdf_fuse"]

OPEN3D_PIN = "open3d-cpu==0.19.0"


class TSDFUnavailable(RuntimeError):
    """open3d does not import (or is the wrong version); the message says how to reinstall it."""


def import_open3d():
    """The ``open3d`` module, or :class:`TSDFUnavailable` with an actionable message."""
    fix = (f"open3d is a regular dependency ({OPEN3D_PIN}, requirements/mapping.txt): rebuild the venv with "
           f"`make .venv` or pip install {OPEN3D_PIN}")
    try:
        import open3d as o3d
    except ImportError as exc:
        raise TSDFUnavailable(f"open3d does not import ({exc}); {fix}") from exc
    except OSError as exc:  # a shared library failing to load
        raise TSDFUnavailable(f"open3d failed to load a shared library ({exc}); {fix}") from exc
    if not hasattr(o3d, "pipelines") or not hasattr(o3d.pipelines.integration, "ScalableTSDFVolume"):
        raise TSDFUnavailable(f"this open3d ({getattr(o3d, '__version__', '?')}) has no "
                              f"pipelines.integration.ScalableTSDFVolume; {fix}")
    return o3d


def open3d_available() -> bool:
    """Whether :func:`import_open3d` succeeds."""
    try:
        import_open3d()
    except TSDFUnavailable:
        return False
    return True


def tsdf_fuse(depths: Sequence[np.ndarray] | np.ndarray, K: Sequence[np.ndarray] | np.ndarray,
              w2c: Sequence[np.ndarray] | np.ndarray, voxel: float, trunc: float | None = None,
              depth_max: float | None = None, colors: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Fuse N z-depth maps (H, W) with pixel K (3, 3) and OpenCV world-to-camera poses (4, 4) into a TSDF and return
    the (M, 3) float64 surface points (zero crossings, one per voxel edge, open3d ``extract_point_cloud``).

    Args:
        voxel: voxel size in depth units; ``trunc``: truncation distance (default 4 voxels);
        depth_max: ignore depth beyond this (default: the largest finite depth + 1 voxel).
        colors: optional (H, W, 3) uint8 images (only fused for the volume; the points are returned without colour).
    Non-finite / non-positive depth is ignored. Pixel (u, v) is at integer coordinates (the project convention and
    open3d's).
    """
    o3d = import_open3d()
    depths = [np.asarray(d, np.float32) for d in depths]
    if trunc is None:
        trunc = 4.0 * voxel
    if depth_max is None:
        finite = [d[np.isfinite(d) & (d > 0)] for d in depths]
        depth_max = max((float(f.max()) for f in finite if f.size), default=1.0) + voxel
    vol = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=float(voxel), sdf_trunc=float(trunc),
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8)
    for i, d in enumerate(depths):
        h, w = d.shape
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        col = np.zeros((h, w, 3), np.uint8) if colors is None else np.ascontiguousarray(colors[i], dtype=np.uint8)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(col), o3d.geometry.Image(np.ascontiguousarray(d)), depth_scale=1.0,
            depth_trunc=float(depth_max), convert_rgb_to_intensity=False)
        k = np.asarray(K[i], np.float64)
        intr = o3d.camera.PinholeCameraIntrinsic(int(w), int(h), k[0, 0], k[1, 1], k[0, 2], k[1, 2])
        T = np.eye(4)
        T[: np.asarray(w2c[i]).shape[0]] = np.asarray(w2c[i], np.float64)
        vol.integrate(rgbd, intr, T)
    return np.asarray(vol.extract_point_cloud().points, np.float64)
