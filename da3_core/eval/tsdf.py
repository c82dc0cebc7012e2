"""TSDF fusion of depth maps + poses into a surface point cloud (the paper's reconstruction step, §6.1).

Uses open3d's ``ScalableTSDFVolume`` (``pip install -r requirements/eval.txt``: ``open3d-cpu==0.19.0``; 0.20.0's
legacy volume returned no points in our tests). open3d is optional: :func:`open3d_available` says whether it imports,
and :func:`import_open3d` raises :class:`TSDFUnavailable` with the fix (e.g. Debian's ``libusb-1.0-0``, which the
open3d wheel links against). Keep ``OMP_NUM_THREADS`` low on small machines (open3d's default thread count is
very slow on 2 cores).
"""

from __future__ import annotations

import ctypes.util
from collections.abc import Sequence

import numpy as np

__all__ = ["TSDFUnavailable", "import_open3d", "open3d_available", "tsdf_fuse"]

OPEN3D_PIN = "open3d-cpu==0.19.0"


class TSDFUnavailable(RuntimeError):
    """open3d (or a system library it needs) is missing; the message says how to install it."""


def import_open3d():
    """The ``open3d`` module, or :class:`TSDFUnavailable` with an actionable message."""
    try:
        import open3d as o3d
    except ImportError as exc:
        text = str(exc)
        if "libusb" in text:
            raise TSDFUnavailable(
                f"open3d is installed but cannot load libusb-1.0 ({text}); install the system library: "
                "sudo apt-get install libusb-1.0-0 (Debian/Ubuntu)") from exc
        if ctypes.util.find_library("usb-1.0") is None:
            hint = " (it also needs the system library libusb-1.0-0: sudo apt-get install libusb-1.0-0)"
        else:
            hint = ""
        raise TSDFUnavailable(f"TSDF fusion needs open3d: pip install {OPEN3D_PIN} (or -r requirements/eval.txt)"
                              f"{hint}; import failed: {text}") from exc
    except OSError as exc:  # a shared library failing to load
        raise TSDFUnavailable(f"open3d failed to load a shared library ({exc}); on Debian/Ubuntu: sudo apt-get "
                              "install libusb-1.0-0") from exc
    if not hasattr(o3d, "pipelines") or not hasattr(o3d.pipelines.integration, "ScalableTSDFVolume"):
        raise TSDFUnavailable(f"this open3d ({getattr(o3d, '__version__', '?')}) has no "
                              f"pipelines.integration.ScalableTSDFVolume; install {OPEN3D_PIN}")
    return o3d


def open3d_available() -> bool:
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
