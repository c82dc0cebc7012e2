"""Confidence-weighted TSDF map of DA3 keyframes (Open3D voxel blocks; ROS-free).

What it holds: an Open3D tensor ``VoxelBlockGrid`` with three per-voxel attributes, ``tsdf`` (truncated signed
distance / truncation, in [-1, 1], positive in front of the surface), ``weight`` (the summed observation weights)
and ``color`` (weighted mean RGB, 0-255, float32), plus the keyframes that went into it (depth, per-pixel weight,
colour, intrinsics, camera-to-world pose) so the volume can be rebuilt with new poses after a pose-graph
optimisation (:meth:`TsdfMap.reintegrate`).

Weighted fusion, and why it is done here rather than by Open3D: ``VoxelBlockGrid.integrate`` (and the legacy
``ScalableTSDFVolume``) add a fixed weight of 1 per observation; there is no per-pixel weight input. So Open3D only
allocates the voxel blocks (``compute_unique_block_coordinates`` + the block hash map) and extracts the mesh /
points (marching cubes, ``extract_triangle_mesh``); the integration itself is ours: every voxel of the frame's
blocks is projected into the image (nearest pixel, integer-pixel convention: pixel (u, v) sees image point (u, v)),
its projective signed distance ``sdf = depth(u, v) - z`` is truncated to ``tsdf = min(1, sdf / trunc)`` (voxels with
``sdf < -trunc``, i.e. far behind the surface, are left alone) and fused as a weighted running mean::

    W' = W + w(u, v);   T' = (W T + w tsdf) / W';   C' = (W C + w rgb) / W'

with ``w(u, v)`` from the pixel's confidence (below). The arithmetic works on the grid's own memory without copies:
numpy on a CPU grid (single-threaded: it adds no threads to a busy machine), torch through DLPack on a CUDA grid
where Open3D is built with CUDA (``device="cuda:0"``; the ``open3d-cpu`` wheel we install has none, so there it is
refused with a clear error; the torch kernel is tested on CPU tensors against the numpy one). ``test_stream_tsdf_map``
checks that this is a real weighted fusion: a corrupted patch moves the surface much less at low confidence.

Confidence -> weight (:attr:`TsdfConfig.weight_mode`):

- ``"relative"`` (default): ``w = clip(conf / P, 0, w_max)`` with ``P`` the ``conf_percentile`` (default the
  median) of the frame's valid confidences (on an even subsample of at most ~20,000 of them). Scale-free (DA3's
  confidence, ``1 + exp(x)``, has no fixed scale across checkpoints), a typical pixel gets weight 1; a frame that is
  bad everywhere is not down-weighted.
- ``"absolute"``: ``w = clip(conf / conf_ref, 0, w_max)``.
- ``"uniform"``: ``w = 1`` on every valid pixel (plain TSDF fusion; the confidence is ignored).

Pixels with ``w < min_obs_weight``, non-finite or non-positive depth or depth beyond ``depth_max`` are not
integrated. The mesh / points keep voxels with fused weight >= ``mesh_min_weight`` (default 0.5: a surface seen
once by a pixel of at least half the frame's median confidence is kept, one seen once at lower confidence is not
until more views confirm it).

Keyframe store (bounded): each keyframe is stored at the integration resolution (the input subsampled by
``stride``) as depth float32 + weight float16 + RGB uint8 (9 bytes/pixel; 504x378 at stride 1: 1.7 MB). The
integration itself reads the stored arrays, so a re-integration with unchanged poses reproduces the volume
exactly. When the store exceeds ``max_store_mb``, the oldest keyframe still at the finest stored level is
subsampled by 2 (pixel (u, v) of the half image is pixel (2u, 2v) of the full one, so ``K`` becomes
``diag(1/2, 1/2, 1) K``), repeatedly, down to ``min_store_width`` pixels wide; beyond that the oldest keyframes are
dropped (their data stay in the volume until the next re-integration, which then loses them;
``stats()["dropped_keyframes"]`` counts them). A re-integration uses the stored resolution, so after subsampling the
rebuilt surface is slightly coarser than the original one.

Pose changes: a keyframe is fused at its camera-to-world pose moved by an optional per-keyframe Sim(3)
``correction`` (its depth times the correction's scale), so a pose graph's per-window Sim(3) corrections can be
given as they are. :meth:`TsdfMap.reintegrate` rebuilds the whole volume from the store (cost: one integration per
keyframe); :meth:`TsdfMap.update_poses` re-fuses only the keyframes whose new pose moves one of their points by more
than ``pose_tolerance``: each is de-integrated at its old pose (the exact inverse of the weighted mean above, up to
float rounding) and integrated at the new one, falling back to a rebuild when most keyframes moved.

Threads: every public method holds one lock, so a worker thread may run ``reintegrate`` / ``update_poses`` while
another integrates (it waits). Open3D's block allocation and marching cubes use OpenMP: set ``OMP_NUM_THREADS=1``
on small machines (on this 2-core machine with other busy processes, 2 threads made integration ~5x slower).

Open3D's marching cubes returns the vertices in a different order on each call; compare meshes as point sets.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TsdfConfig", "TsdfKeyframe", "TsdfMap", "TsdfMesh", "WEIGHT_MODES", "write_mesh_ply"]

WEIGHT_MODES = ("relative", "absolute", "uniform")
_PERCENTILE_SAMPLES = 20000  # the 'relative' reference percentile is taken over at most about this many pixels


@dataclass
class TsdfConfig:
    """TSDF map parameters (lengths in the depth's units, metres).

    voxel_size: voxel edge. trunc: truncation distance (default ``None``: 4 voxels). depth_max: ignore depth beyond
    this. block_resolution: voxels per block edge (Open3D block = ``block_resolution**3`` voxels).
    block_count: initial number of blocks of the hash map (it grows when more are needed; 10,000 blocks of 8^3 voxels
    take about 100 MB). device: ``"cpu"`` or ``"cuda:N"`` (the latter needs an Open3D built with CUDA).
    weight_mode / conf_percentile / conf_ref / w_max / min_obs_weight: the confidence -> weight mapping (module
    docstring). mesh_min_weight: fused weight a voxel needs to be meshed / returned as a point.
    stride: keyframes are subsampled by this before integration and storage (1 = full resolution).
    max_store_mb: cap on the stored keyframes (MB); min_store_width: the narrowest a stored keyframe is subsampled
    to before the oldest keyframes are dropped. color: fuse RGB (frames without colour count as mid grey).
    pose_tolerance: :meth:`TsdfMap.update_poses` re-fuses a keyframe only when its new pose would move one of its
    points by more than this (default ``None``: a quarter voxel). rebuild_fraction: when more than this share of the
    keyframes moved, ``update_poses`` rebuilds the whole volume instead (de- plus re-integration costs two fusions).
    """

    voxel_size: float = 0.04
    trunc: float | None = None
    depth_max: float = 8.0
    block_resolution: int = 8
    block_count: int = 10000
    device: str = "cpu"
    weight_mode: str = "relative"
    conf_percentile: float = 50.0
    conf_ref: float = 1.0
    w_max: float = 4.0
    min_obs_weight: float = 0.05
    mesh_min_weight: float = 0.5
    stride: int = 1
    max_store_mb: float = 512.0
    min_store_width: int = 32
    color: bool = True
    pose_tolerance: float | None = None
    rebuild_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(f"TsdfConfig.voxel_size must be a positive length, got {self.voxel_size}")
        if not (np.isfinite(self.truncation) and self.truncation >= self.voxel_size):
            raise ValueError(f"TsdfConfig.trunc must be >= voxel_size ({self.voxel_size}), got {self.trunc}")
        if not (np.isfinite(self.depth_max) and self.depth_max > 0):
            raise ValueError(f"TsdfConfig.depth_max must be positive, got {self.depth_max}")
        if self.block_resolution < 2 or self.block_count < 1:
            raise ValueError("TsdfConfig.block_resolution must be >= 2 and block_count >= 1")
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"TsdfConfig.weight_mode {self.weight_mode!r}: use one of {', '.join(WEIGHT_MODES)}")
        if not 0.0 < self.conf_percentile <= 100.0:
            raise ValueError(f"TsdfConfig.conf_percentile must be in (0, 100], got {self.conf_percentile}")
        if not (self.conf_ref > 0 and self.w_max > 0 and self.min_obs_weight >= 0 and self.mesh_min_weight >= 0):
            raise ValueError("TsdfConfig: conf_ref and w_max must be > 0, min_obs_weight and mesh_min_weight >= 0")
        if self.stride < 1 or self.min_store_width < 2 or not self.max_store_mb > 0:
            raise ValueError("TsdfConfig: stride must be >= 1, min_store_width >= 2 and max_store_mb > 0")
        if not self.motion_tolerance >= 0 or not 0.0 <= self.rebuild_fraction <= 1.0:
            raise ValueError("TsdfConfig: pose_tolerance must be >= 0 and rebuild_fraction in [0, 1]")

    @property
    def truncation(self) -> float:
        """The truncation distance in use: ``trunc``, or 4 voxels when it is None."""
        return 4.0 * self.voxel_size if self.trunc is None else float(self.trunc)

    @property
    def motion_tolerance(self) -> float:
        """The pose tolerance in use: ``pose_tolerance``, or a quarter voxel when it is None."""
        return 0.25 * self.voxel_size if self.pose_tolerance is None else float(self.pose_tolerance)


@dataclass
class TsdfKeyframe:
    """One stored keyframe: depth (h, w) float32 metres (NaN = not integrated), weight (h, w) float16 (the
    per-pixel observation weight, 0 = not integrated), rgb (h, w, 3) uint8 or None, K (3, 3) float64 of this
    (possibly subsampled) image, c2w (4, 4) float64 OpenCV camera-to-world, correction (4, 4) float64 Sim(3) moving
    the keyframe's world into the map (identity by default; e.g. its window's pose-graph correction): the keyframe is
    fused at the rigid pose :meth:`fused_pose` with its depth times the correction's scale. radius: the largest
    distance of its points from the camera centre, before the correction's scale (bounds how far a pose change
    moves them); level: times it was halved; fused_level: the level of the data now in the volume (None: not in it;
    a keyframe subsampled after its fusion cannot be de-integrated exactly)."""

    depth: np.ndarray
    weight: np.ndarray
    rgb: np.ndarray | None
    K: np.ndarray
    c2w: np.ndarray
    radius: float = 0.0
    level: int = 0
    fused_level: int | None = None
    correction: np.ndarray = field(default_factory=lambda: np.eye(4))

    def fused_pose(self) -> tuple[np.ndarray, float]:
        """(rigid (4, 4) camera-to-world in the map, depth scale): ``correction`` applied to ``c2w``."""
        return _apply_sim3(self.correction, self.c2w)

    @property
    def nbytes(self) -> int:
        return self.depth.nbytes + self.weight.nbytes + (0 if self.rgb is None else self.rgb.nbytes)


@dataclass
class TsdfMesh:
    """vertices (V, 3) float32 world, faces (F, 3) int32 vertex indices, colors (V, 3) uint8 (or None)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None


@dataclass
class _Timing:
    """Running timing figures (milliseconds) for :meth:`TsdfMap.stats`."""

    integrate_ms_last: float | None = None
    integrate_ms_sum: float = 0.0
    integrations: int = 0
    reintegrate_ms: float | None = None
    reintegrations: int = 0
    update_ms: float | None = None
    updates: int = 0
    update_keyframes: int = 0
    mesh_ms: float | None = None


def _o3d():
    import open3d as o3d

    return o3d


def _check_pose(name: str, T: Any) -> np.ndarray:
    """(4, 4) float64 rigid transform or ValueError naming what is wrong."""
    T = np.asarray(T, np.float64)
    if T.shape == (3, 4):
        T = np.vstack((T, [0.0, 0.0, 0.0, 1.0]))
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) (or (3, 4)) camera-to-world matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} has non-finite entries")
    R = T[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(R) - 1.0) > 1e-4:
        raise ValueError(f"{name} is not a rigid transform (its rotation block is not orthonormal with det +1)")
    if np.abs(T[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9:
        raise ValueError(f"{name}: last row must be [0, 0, 0, 1]")
    return T


def _halve(kf: TsdfKeyframe) -> TsdfKeyframe:
    """The keyframe subsampled by 2 (every other pixel; no averaging across depth edges)."""
    S = np.diag([0.5, 0.5, 1.0])
    return TsdfKeyframe(np.ascontiguousarray(kf.depth[::2, ::2]), np.ascontiguousarray(kf.weight[::2, ::2]),
                        None if kf.rgb is None else np.ascontiguousarray(kf.rgb[::2, ::2]), S @ kf.K, kf.c2w,
                        kf.radius, kf.level + 1, kf.fused_level, kf.correction)


def _motion_bound(a: np.ndarray, b: np.ndarray, radius: float, sa: float = 1.0, sb: float = 1.0) -> float:
    """Largest displacement of a camera point X (``|X| <= radius``) mapped to the world as ``s R X + t`` by the
    camera-to-world poses a and b with depth scales sa and sb: ``|t_b - t_a| + |sb - sa| radius + sa 2 sin(theta /
    2) radius``, theta the angle of ``R_b R_a^T``."""
    dR = b[:3, :3] @ a[:3, :3].T
    cos = np.clip((np.trace(dR) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos))
    return float(np.linalg.norm(b[:3, 3] - a[:3, 3]) + abs(sb - sa) * radius + sa * 2.0 * np.sin(theta / 2.0) * radius)


def _check_sim3(name: str, C: Any) -> np.ndarray:
    """(4, 4) float64 similarity transform (s R, t; s > 0) or ValueError naming what is wrong."""
    C = np.asarray(C, np.float64)
    if C.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) Sim(3) matrix, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError(f"{name} has non-finite entries")
    det = np.linalg.det(C[:3, :3])
    if not det > 0:
        raise ValueError(f"{name} is not a similarity (its linear block has determinant {det:g})")
    s = float(np.cbrt(det))
    R = C[:3, :3] / s
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.abs(C[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9:
        raise ValueError(f"{name} is not a similarity transform (s R, t) with last row [0, 0, 0, 1]")
    return C


def _apply_sim3(C: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, float]:
    """The rigid camera pose after moving the world by the Sim(3) ``C`` (rotation ``R_C R``, centre ``C(centre)``)
    and C's scale (the factor on the camera's depths)."""
    s = float(np.cbrt(np.linalg.det(C[:3, :3])))
    out = np.eye(4)
    out[:3, :3] = (C[:3, :3] / s) @ c2w[:3, :3]
    out[:3, 3] = C[:3, :3] @ c2w[:3, 3] + C[:3, 3]
    return out, s


def write_mesh_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
                   colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY of a triangle mesh: vertices (V, 3) float (written as float32), faces (F, 3) int
    indices, colors (V, 3) uint8 or None. Written to ``path + '.tmp'`` and renamed, so readers never see half a file."""
    vertices = np.asarray(vertices, np.float32).reshape(-1, 3)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("write_mesh_ply: face indices out of range")
    vdtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        if len(colors) != len(vertices):
            raise ValueError(f"write_mesh_ply: {len(colors)} colours for {len(vertices)} vertices")
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(len(vertices), vdtype)
    for j, name in enumerate("xyz"):
        vert[name] = vertices[:, j]
    if colors is not None:
        for j, name in enumerate(("red", "green", "blue")):
            vert[name] = colors[:, j]
    face = np.empty(len(faces), [("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = faces
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in vdtype)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment da3-ros TSDF mesh\nelement vertex {len(vert)}\n{props}"
              f"element face {len(face)}\nproperty list uchar int vertex_indices\nend_header\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vert.tobytes())
        f.write(face.tobytes())
    os.replace(tmp, path)


class _NumpyOps:
    """The array operations of the integration kernel on a CPU grid: numpy views of Open3D's memory (no copies).
    numpy's elementwise and indexing operations run on the calling thread only, so integration adds no threads (torch
    here was 20-50x slower whenever its thread pool competed with other busy processes for the cores)."""

    @staticmethod
    def view(t) -> np.ndarray:
        return t.numpy()

    @staticmethod
    def asarray(a: np.ndarray) -> np.ndarray:
        return a

    where = staticmethod(np.where)

    @staticmethod
    def rint_int(a: np.ndarray) -> np.ndarray:
        return np.rint(a).astype(np.int64)

    @staticmethod
    def f64(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64)

    @staticmethod
    def f32(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)


class _TorchOps:
    """The same operations in torch on the grid's device (DLPack views of Open3D's memory), for a CUDA grid."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.device = torch, device

    def view(self, t):
        import torch.utils.dlpack as tdl

        return tdl.from_dlpack(t.to_dlpack())

    def asarray(self, a: np.ndarray):
        return self.torch.as_tensor(a, device=self.device)

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def rint_int(self, a):
        return self.torch.round(a).long()

    def f64(self, a):
        return a.to(self.torch.float64)

    def f32(self, a):
        return a.to(self.torch.float32)


class TsdfMap:
    """A confidence-weighted TSDF volume of keyframes that can be re-integrated with new poses.

    ``integrate(key, depth, conf, K, c2w, color, correction)`` fuses one keyframe and stores it;
    ``update_poses(poses, corrections=...)`` moves keyframes to optimised camera-to-world poses and / or Sim(3)
    corrections (re-fusing the ones that moved), ``reintegrate(...)`` rebuilds the whole volume from the stored
    keyframes; ``extract_mesh()`` /
    ``extract_points()`` / ``save_mesh_ply(path)`` read the surface; ``stats()`` gives the diagnostics.
    """

    def __init__(self, config: TsdfConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = TsdfConfig(**overrides)
        elif overrides:
            config = TsdfConfig(**{**config.__dict__, **overrides})
        self.config = config
        o3d = _o3d()
        kind, _, num = config.device.lower().partition(":")
        if kind not in ("cpu", "cuda") or not (num or "0").isdigit():
            raise ValueError(f"TsdfConfig.device={config.device!r}: use 'cpu' or 'cuda:N'")
        if kind == "cuda" and not o3d.core.cuda.is_available():
            raise ValueError(f"TsdfConfig.device={config.device!r}, but this Open3D ({o3d.__version__}) has no CUDA "
                             "(the open3d-cpu wheel); use device='cpu'")
        self._device = o3d.core.Device(f"{kind.upper()}:{int(num or 0)}")
        self._xp: _NumpyOps | _TorchOps = _NumpyOps() if kind == "cpu" else _TorchOps(f"cuda:{int(num or 0)}")
        self.keyframes: OrderedDict[Hashable, TsdfKeyframe] = OrderedDict()
        self.dropped_keyframes = 0
        self._clear_store_index()
        self._timing = _Timing()
        self._lock = threading.RLock()
        self._vbg = self._new_grid()

    # ------------------------------------------------------------------ volume

    def _new_grid(self):
        o3d = _o3d()
        c = self.config
        f32 = o3d.core.float32
        return o3d.t.geometry.VoxelBlockGrid(["tsdf", "weight", "color"], [f32, f32, f32], [[1], [1], [3]],
                                             voxel_size=float(c.voxel_size), block_resolution=int(c.block_resolution),
                                             block_count=int(c.block_count), device=self._device)

    def _fuse(self, kf: TsdfKeyframe, sign: int = 1) -> bool:
        """Integrate (``sign`` +1) or de-integrate (-1: the exact inverse of the weighted mean, for a keyframe fused
        before at the same pose and data) one stored keyframe at its pose; False when nothing was integrated."""
        o3d = _o3d()
        c = self.config
        xp = self._xp
        pose, scale = kf.fused_pose()
        depth0 = np.where(kf.weight > 0, kf.depth, 0.0).astype(np.float32)
        if scale != 1.0:
            depth0 = (depth0 * np.float32(scale)).astype(np.float32)
        depth0[depth0 > c.depth_max] = 0.0
        if not np.any(depth0 > 0):
            return False
        w2c = np.linalg.inv(pose)
        img = o3d.t.geometry.Image(o3d.core.Tensor(depth0, device=self._device))
        blocks = self._vbg.compute_unique_block_coordinates(
            img, o3d.core.Tensor(kf.K, o3d.core.float64), o3d.core.Tensor(w2c, o3d.core.float64), 1.0,
            float(c.depth_max), float(c.truncation / c.voxel_size))
        if blocks.shape[0] == 0:
            return False
        hashmap = self._vbg.hashmap()
        _, new = hashmap.activate(blocks)  # may grow (and move) the attribute buffers: find the indices afterwards
        buf, _ = hashmap.find(blocks)
        coords, flat = self._vbg.voxel_coordinates_and_flattened_indices(buf)
        idx = xp.view(flat).reshape(-1)
        tsdf_a, weight_a, color_a = (xp.view(self._vbg.attribute(n)).reshape(-1, ch)
                                     for n, ch in (("tsdf", 1), ("weight", 1), ("color", 3)))
        fresh_blocks = xp.view(new.to(o3d.core.uint8)).reshape(-1) > 0
        if bool(fresh_blocks.any()):  # freshly activated blocks start empty
            fresh = idx.reshape(-1, c.block_resolution**3)[fresh_blocks].reshape(-1)
            tsdf_a[fresh] = 0.0
            weight_a[fresh] = 0.0
            color_a[fresh] = 0.0
        X = xp.view(coords)
        x, y, z = (xp.f64(X[:, j]) for j in range(3))
        R, t, K = w2c[:3, :3], w2c[:3, 3], kf.K
        # camera coordinates, written out (no BLAS call, so no extra threads)
        xc = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0]
        yc = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1]
        zc = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]
        h, w = kf.depth.shape
        front = zc > 1e-9
        zs = xp.where(front, zc, 1.0)
        u = xp.rint_int((K[0, 0] * xc + K[0, 1] * yc) / zs + K[0, 2])
        v = xp.rint_int(K[1, 1] * yc / zs + K[1, 2])
        inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx, zc = idx[inside], zc[inside]
        pix = v[inside] * w + u[inside]
        D = xp.f64(xp.asarray(depth0.reshape(-1))[pix])
        Wp = xp.asarray(kf.weight.astype(np.float32).reshape(-1))[pix]
        sdf = D - zc
        keep = (D > 0) & (Wp > 0) & (sdf >= -c.truncation)
        vi, pix, sdf, Wp = idx[keep], pix[keep], sdf[keep], Wp[keep]
        tsdf_obs = xp.f32((sdf / c.truncation).clip(max=1.0))
        W_old = weight_a[vi, 0]
        Wp = Wp * float(sign)
        W_new = W_old + Wp
        gone = W_new <= 1e-4  # de-integrated down to (rounding residue of) nothing: back to an unobserved voxel
        W_safe = xp.where(gone, 1.0, W_new)
        tsdf_a[vi, 0] = xp.where(gone, 0.0, (tsdf_a[vi, 0] * W_old + tsdf_obs * Wp) / W_safe)
        if c.color:
            if kf.rgb is None:
                rgb = xp.asarray(np.full((len(Wp), 3), 128.0, np.float32))
            else:
                rgb = xp.f32(xp.asarray(kf.rgb.reshape(-1, 3))[pix])
            mixed = (color_a[vi] * W_old[:, None] + rgb * Wp[:, None]) / W_safe[:, None]
            color_a[vi] = xp.where(gone[:, None], 0.0, mixed)
        weight_a[vi, 0] = xp.where(gone, 0.0, W_new)
        kf.fused_level = kf.level if sign > 0 else None
        return True

    # ------------------------------------------------------------------ input

    def _weights(self, depth: np.ndarray, conf: np.ndarray | None) -> np.ndarray:
        """Per-pixel observation weights (float32, 0 = not integrated) from the confidence (module docstring)."""
        c = self.config
        valid = np.isfinite(depth) & (depth > 0) & (depth <= c.depth_max)
        if conf is not None:
            valid &= np.isfinite(conf)
        if not valid.any():
            raise ValueError("depth has no valid pixel (finite, > 0, <= depth_max, finite confidence): nothing to "
                             "integrate")
        if c.weight_mode == "uniform" or conf is None:
            w = np.ones(depth.shape, np.float32)
        else:
            if c.weight_mode == "relative":
                vals = conf[valid]
                vals = vals[:: max(1, vals.size // _PERCENTILE_SAMPLES)]  # an even subsample keeps this cheap
                ref = float(np.percentile(vals, c.conf_percentile)) if vals.size else 0.0
                if not ref > 0:
                    raise ValueError(f"confidence: the {c.conf_percentile:g}th percentile of the valid pixels' "
                                     f"confidence is {ref:g}; the 'relative' weight mode needs a positive one")
            else:
                ref = c.conf_ref
            with np.errstate(invalid="ignore"):
                w = np.clip(conf / ref, 0.0, c.w_max).astype(np.float32)
        w = np.where(valid & (w >= c.min_obs_weight), w, 0.0).astype(np.float32)
        return w

    def _prepare(self, depth: Any, conf: Any, K: Any, c2w: Any, color: Any) -> TsdfKeyframe:
        """Validate one keyframe's inputs and build its stored form (ValueError naming the problem)."""
        depth = np.asarray(depth, np.float32)
        if depth.ndim != 2 or min(depth.shape) < 2:
            raise ValueError(f"depth must be an (H, W) array, got shape {depth.shape}")
        if conf is not None:
            conf = np.asarray(conf, np.float32)
            if conf.shape != depth.shape:
                raise ValueError(f"conf shape {conf.shape} does not match depth shape {depth.shape}")
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a finite (3, 3) intrinsic matrix with positive focal lengths, got {K!r}")
        c2w = _check_pose("c2w", c2w)
        if color is not None:
            color = np.asarray(color)
            if color.shape != (*depth.shape, 3):
                raise ValueError(f"color shape {color.shape} does not match depth shape {depth.shape} (+ 3 channels)")
            if color.dtype != np.uint8:
                raise ValueError(f"color must be uint8 RGB, got dtype {color.dtype}")
        s = self.config.stride
        if s > 1:
            depth = depth[::s, ::s]
            conf = None if conf is None else conf[::s, ::s]
            color = None if color is None else color[::s, ::s]
            K = np.diag([1.0 / s, 1.0 / s, 1.0]) @ K
        weight = self._weights(depth, conf)
        if not np.any(weight > 0):
            raise ValueError("depth has no valid pixel (finite, > 0, <= depth_max, with weight >= min_obs_weight): "
                             "nothing to integrate")
        v, u = np.nonzero(weight > 0)
        d = depth[v, u].astype(np.float64)
        x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0]
        y = (v - K[1, 2]) / K[1, 1]
        radius = float(np.max(d * np.sqrt(1.0 + x * x + y * y)))
        return TsdfKeyframe(np.where(weight > 0, depth, np.nan).astype(np.float32), weight.astype(np.float16),
                            None if color is None or not self.config.color else np.ascontiguousarray(color),
                            K, c2w, radius)

    # ------------------------------------------------------------------ API

    def integrate(self, key: Hashable, depth: Any, conf: Any, K: Any, c2w: Any, color: Any = None,
                  correction: Any = None) -> None:
        """Fuse one keyframe and store it under ``key`` (new keys only).

        depth (H, W) metres z-depth (NaN / inf / <= 0 = invalid); conf (H, W) confidence (higher is better; None =
        uniform weights); K (3, 3) pixels; c2w (4, 4) OpenCV camera-to-world; color (H, W, 3) uint8 or None;
        correction: optional (4, 4) Sim(3) from the frame of ``c2w`` / ``depth`` into the map (the keyframe is fused
        at the corrected pose with its depth scaled by the correction's scale; see :meth:`update_poses`).
        Raises ValueError (and changes nothing) on bad input or a key already integrated.
        """
        kf = self._prepare(depth, conf, K, c2w, color)
        if correction is not None:
            kf.correction = _check_sim3("correction", correction)
        with self._lock:
            if key in self.keyframes:
                raise ValueError(f"keyframe {key!r} is already integrated; give new poses through update_poses() "
                                 "or reintegrate()")
            t0 = time.perf_counter()
            self._fuse(kf)
            ms = (time.perf_counter() - t0) * 1e3
            self._timing.integrate_ms_last = ms
            self._timing.integrate_ms_sum += ms
            self._timing.integrations += 1
            self.keyframes[key] = kf
            self._index_add(key, kf)
            self._enforce_store_cap()

    def reset(self) -> None:
        """Forget everything: an empty volume and store (the configuration and the cumulative timings stay)."""
        with self._lock:
            self.keyframes.clear()
            self.dropped_keyframes = 0
            self._clear_store_index()
            self._vbg = self._new_grid()

    def _checked(self, poses: Mapping[Hashable, Any] | None, corrections: Mapping[Hashable, Any] | None,
                 strict: bool, what: str) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
        """key -> (new c2w, new correction) for the known keys given in either mapping (the other keeps the stored
        value), each checked (ValueError naming the key) before anything changes."""
        poses, corrections = dict(poses or {}), dict(corrections or {})
        unknown = [k for k in (*poses, *corrections) if k not in self.keyframes]
        if unknown and strict:
            raise ValueError(f"{what}: unknown keyframe keys {unknown[:5]!r}{' ...' if len(unknown) > 5 else ''}")
        out = {}
        for k in dict.fromkeys((*poses, *corrections)):
            if k not in self.keyframes:
                continue
            kf = self.keyframes[k]
            T = _check_pose(f"pose of keyframe {k!r}", poses[k]) if k in poses else kf.c2w
            C = _check_sim3(f"correction of keyframe {k!r}", corrections[k]) if k in corrections else kf.correction
            out[k] = (T, C)
        return out

    def _rebuild(self) -> int:
        self._vbg = self._new_grid()
        for kf in self.keyframes.values():
            kf.fused_level = None
        return sum(self._fuse(kf) for kf in self.keyframes.values())

    def reintegrate(self, poses: Mapping[Hashable, Any] | None = None, strict: bool = False,
                    corrections: Mapping[Hashable, Any] | None = None) -> int:
        """Rebuild the whole volume from the stored keyframes, with ``poses`` (key -> (4, 4) camera-to-world)
        and / or ``corrections`` (key -> (4, 4) Sim(3), as in :meth:`integrate`) replacing the stored ones of those
        keys (others keep theirs). Unknown keys are ignored (``strict=True``: ValueError). Everything is checked
        before anything changes. Returns the number of keyframes integrated. Blocks the map for ~ one integration
        per keyframe: call it from a worker thread on a long run."""
        with self._lock:
            checked = self._checked(poses, corrections, strict, "reintegrate")
            t0 = time.perf_counter()
            for k, (T, C) in checked.items():
                self.keyframes[k].c2w, self.keyframes[k].correction = T, C
            n = self._rebuild()
            self._timing.reintegrate_ms = (time.perf_counter() - t0) * 1e3
            self._timing.reintegrations += 1
            return n

    def update_poses(self, poses: Mapping[Hashable, Any] | None = None, strict: bool = False,
                     corrections: Mapping[Hashable, Any] | None = None) -> int:
        """Move keyframes after a pose-graph optimisation, re-fusing only those that moved. ``poses``: key -> new
        (4, 4) camera-to-world; ``corrections``: key -> new (4, 4) Sim(3) correction (as in :meth:`integrate`;
        e.g. every keyframe's window correction after a loop closure); either may be given. A keyframe whose new
        pose / correction would move one of its points by more than ``pose_tolerance`` is de-integrated as fused
        and integrated anew; the others keep their old values (so the volume and the stored poses always agree,
        within the tolerance of the given ones). When more than ``rebuild_fraction`` of the keyframes moved, or a
        moved keyframe was subsampled by the store cap since it was fused (its old contribution cannot be removed
        exactly), the whole volume is rebuilt instead (every given value applied). Returns the number of keyframes
        (re-)fused; unknown keys as :meth:`reintegrate`."""
        with self._lock:
            checked = self._checked(poses, corrections, strict, "update_poses")
            t0 = time.perf_counter()
            tol = self.config.motion_tolerance
            moved = {}
            for k, (T, C) in checked.items():
                kf = self.keyframes[k]
                (a, sa), (b, sb) = kf.fused_pose(), _apply_sim3(C, T)
                if _motion_bound(a, b, kf.radius, sa, sb) > tol:
                    moved[k] = (T, C)
            exact = all(self.keyframes[k].fused_level == self.keyframes[k].level for k in moved)
            if moved and (not exact or len(moved) > self.config.rebuild_fraction * len(self.keyframes)):
                for k, (T, C) in checked.items():
                    self.keyframes[k].c2w, self.keyframes[k].correction = T, C
                n = self._rebuild()
                self._timing.reintegrate_ms = (time.perf_counter() - t0) * 1e3
                self._timing.reintegrations += 1
            else:
                for k, (T, C) in moved.items():
                    kf = self.keyframes[k]
                    if kf.fused_level is not None:
                        self._fuse(kf, -1)
                    kf.c2w, kf.correction = T, C
                    self._fuse(kf)
                n = len(moved)
            self._timing.update_ms = (time.perf_counter() - t0) * 1e3
            self._timing.updates += 1
            self._timing.update_keyframes = n
            return n

    def extract_mesh(self) -> TsdfMesh:
        """The zero-level surface (marching cubes over voxels with weight >= ``mesh_min_weight``)."""
        t0 = time.perf_counter()
        with self._lock:
            if self._vbg.hashmap().size() == 0:  # Open3D refuses an empty grid
                return TsdfMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                                np.zeros((0, 3), np.uint8) if self.config.color else None)
            mesh = self._vbg.extract_triangle_mesh(self._o3d_weight_threshold)
        self._timing.mesh_ms = (time.perf_counter() - t0) * 1e3
        if "positions" not in mesh.vertex:
            return TsdfMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                            np.zeros((0, 3), np.uint8) if self.config.color else None)
        verts = mesh.vertex.positions.cpu().numpy().astype(np.float32)
        faces = (mesh.triangle.indices.cpu().numpy().astype(np.int32) if "indices" in mesh.triangle
                 else np.zeros((0, 3), np.int32))
        colors = None
        if self.config.color and "colors" in mesh.vertex:
            colors = self._to_uint8(mesh.vertex.colors.cpu().numpy())
        return TsdfMesh(verts, faces, colors)

    def extract_points(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Surface points (N, 3) float32 and their colours (N, 3) uint8 or None: the mesh's vertices, i.e. the
        zero crossings on voxel edges (Open3D's ``extract_point_cloud`` misses crossings that fall exactly on a
        voxel, e.g. a plane at a multiple of the voxel size, which marching cubes keeps)."""
        m = self.extract_mesh()
        return m.vertices, m.colors

    @property
    def _o3d_weight_threshold(self) -> float:
        """Open3D keeps voxels with weight strictly above its threshold; ours is inclusive (weight >= min)."""
        return max(float(self.config.mesh_min_weight) - 1e-6, 0.0)

    @staticmethod
    def _to_uint8(c: np.ndarray) -> np.ndarray:
        """Extracted colours are our 0-255 means divided by 255 by Open3D; back to uint8."""
        return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)

    def save_mesh_ply(self, path: str | os.PathLike) -> int:
        """Write the mesh as a binary little-endian PLY (float32 x, y, z, uchar red, green, blue when colour is on;
        faces as uchar-counted int32 index lists), through a temporary file renamed into place; an empty map gives
        a valid PLY with no vertices. Returns the vertex count."""
        m = self.extract_mesh()
        write_mesh_ply(path, m.vertices, m.faces, m.colors)
        return len(m.vertices)

    # the store's bookkeeping, kept up to date so that a long run's per-keyframe cost does not grow with the store
    def _clear_store_index(self) -> None:
        self._store_bytes = 0
        self._n_subsampled = 0
        self._halvable: dict[int, OrderedDict[Hashable, None]] = {}  # level -> keys that can still be halved

    def _index_add(self, key: Hashable, kf: TsdfKeyframe) -> None:
        self._store_bytes += kf.nbytes
        self._n_subsampled += kf.level > 0
        if kf.depth.shape[1] // 2 >= self.config.min_store_width:
            self._halvable.setdefault(kf.level, OrderedDict())[key] = None

    def _index_remove(self, key: Hashable, kf: TsdfKeyframe) -> None:
        self._store_bytes -= kf.nbytes
        self._n_subsampled -= kf.level > 0
        keys = self._halvable.get(kf.level)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._halvable[kf.level]

    @property
    def store_bytes(self) -> int:
        """Bytes held by the stored keyframes' arrays."""
        return self._store_bytes

    def _enforce_store_cap(self) -> None:
        """Past ``max_store_mb``: halve the oldest keyframe of the finest level that is still wider than
        ``2 * min_store_width``; when none is, drop the oldest keyframe."""
        cap = self.config.max_store_mb * 1e6
        while self._store_bytes > cap and self.keyframes:
            if self._halvable:
                target = next(iter(self._halvable[min(self._halvable)]))
                old = self.keyframes[target]
                new = self.keyframes[target] = _halve(old)
                self._index_remove(target, old)
                self._index_add(target, new)
            else:  # every keyframe is as small as allowed: drop the oldest
                key, old = self.keyframes.popitem(last=False)
                self._index_remove(key, old)
                self.dropped_keyframes += 1

    def stats(self) -> dict[str, float | int | None]:
        """Diagnostics: keyframes stored / subsampled / dropped, store MB, voxel blocks (allocated, capacity),
        integration ms (last, mean), full re-integration ms (last) and count, mesh extraction ms (last), pose
        updates (count, ms of the last, keyframes it re-fused)."""
        with self._lock:
            return self._stats()

    def _stats(self) -> dict[str, float | int | None]:
        t = self._timing
        hm = self._vbg.hashmap()
        return {
            "keyframes": len(self.keyframes),
            "subsampled_keyframes": self._n_subsampled,
            "dropped_keyframes": self.dropped_keyframes,
            "store_mb": self.store_bytes / 1e6,
            "voxel_blocks": int(hm.size()),
            "block_capacity": int(hm.capacity()),
            "integrate_ms_last": t.integrate_ms_last,
            "integrate_ms_mean": t.integrate_ms_sum / t.integrations if t.integrations else None,
            "reintegrate_ms_last": t.reintegrate_ms,
            "reintegrations": t.reintegrations,
            "mesh_ms_last": t.mesh_ms,
            "pose_updates": t.updates,
            "update_ms_last": t.update_ms,
            "update_keyframes_last": t.update_keyframes,
        }
