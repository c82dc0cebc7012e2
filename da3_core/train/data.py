"""Training datasets: synthetic scenes rendered on the fly, and readers for real multi-view data.

Every dataset item is a dict of tensors for S views of one scene at one resolution (H, W):

- ``images`` (S, 3, H, W) float32, ImageNet-normalised (``normalize=True``, ready for the network) or in [0, 1];
- ``depth`` (S, H, W) float32 z-depth in metres, NaN where unknown (sky, holes, sparse gaps);
- ``valid`` (S, H, W) bool = finite positive depth;
- ``w2c`` (S, 4, 4) float32 OpenCV world-to-camera; ``K`` (S, 3, 3) float32 pixels of the (H, W) image;
- ``index`` () int64; synthetic items also carry ``sky`` and ``objects`` (S, H, W) bool masks.

Pixel convention: image coordinate (u, v) is the *centre* of pixel (row v, col u) -- the project's integer-pixel
convention (``da3_core.geometry.points``). Readers convert from each format's own convention.

Items are addressed by an int index, or by a :data:`da3_core.train.batching.SampleKey` ``(index, H, W, S)`` as
produced by :class:`da3_core.train.batching.TokenBudgetBatchSampler`; the content depends only on that key (and the
dataset's seed), never on worker state, so loading is reproducible across workers and ranks.

Frame sources (:class:`FrameSource`: ``len(src)`` and ``src.load(i) -> RawView``):

- :class:`FolderScene` -- the generic format (see its docstring);
- :class:`TUMScene` -- TUM RGB-D (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``);
- :class:`ColmapScene` -- COLMAP text models (``cameras.txt``, ``images.txt``, optional ``points3D.txt`` for
  sparse depth).

:class:`ViewSetDataset` samples S frames of one source per item and resizes/crops them to (H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from da3_core.data.synthetic import SCENE_KINDS, Box, Sphere, intrinsics_from_fov, make_scene, make_trajectory, render
from da3_core.geometry.rigid import invert_rigid
from da3_core.geometry.rotations import quat_wxyz_to_rotation
from da3_core.preprocess import normalize_images
from da3_core.train.batching import PAPER_RESOLUTIONS, SampleKey

__all__ = [
    "RawView",
    "FrameSource",
    "resize_crop_view",
    "views_to_item",
    "SyntheticSceneDataset",
    "FolderScene",
    "TUMScene",
    "ColmapScene",
    "ViewSetDataset",
    "quat_wxyz_to_matrix",
]


# --- views ----------------------------------------------------------------------------------------------------------


@dataclass
class RawView:
    """One view in numpy: rgb (H, W, 3) uint8; depth (H, W) float32 metres (NaN = unknown); K (3, 3) and w2c (4, 4)
    float64; optional sky / objects (H, W) bool."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    w2c: np.ndarray
    sky: np.ndarray | None = None
    objects: np.ndarray | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[:2]


class FrameSource(Protocol):
    """A sequence of posed frames of one scene."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> RawView: ...


def resize_crop_view(view: RawView, out_hw: tuple[int, int]) -> RawView:
    """Resize ``view`` to cover ``out_hw`` (aspect kept), then centre-crop; intrinsics follow exactly.

    RGB uses area (down) / bilinear (up) interpolation; depth and masks use centre-aligned nearest neighbour, so
    depth values are never blended across edges (sparse depth may lose points when downscaling). With the
    integer-pixel convention a resize by (sx, sy) maps ``u -> sx (u + 0.5) - 0.5``, so ``fx' = sx fx`` and
    ``cx' = sx (cx + 0.5) - 0.5``; the crop subtracts its offset from the principal point.
    """
    H, W = view.hw
    Ho, Wo = out_hw
    s = max(Ho / H, Wo / W)
    Hr, Wr = max(Ho, round(H * s)), max(Wo, round(W * s))
    top, left = (Hr - Ho) // 2, (Wr - Wo) // 2
    sx, sy = Wr / W, Hr / H
    interp = cv2.INTER_AREA if sx < 1 and sy < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(view.rgb, (Wr, Hr), interpolation=interp)[top:top + Ho, left:left + Wo]
    rows = np.clip(np.floor((np.arange(Ho) + top + 0.5) / sy).astype(np.int64), 0, H - 1)
    cols = np.clip(np.floor((np.arange(Wo) + left + 0.5) / sx).astype(np.int64), 0, W - 1)

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[rows[:, None], cols[None, :]])

    K = view.K.astype(np.float64).copy()
    K[0] *= sx
    K[1] *= sy
    K[0, 2] = sx * (view.K[0, 2] + 0.5) - 0.5 - left
    K[1, 2] = sy * (view.K[1, 2] + 0.5) - 0.5 - top
    K[2] = (0.0, 0.0, 1.0)
    return replace(view, rgb=np.ascontiguousarray(rgb), depth=pick(view.depth), K=K, sky=pick(view.sky),
                   objects=pick(view.objects))


def views_to_item(views: Sequence[RawView], index: int, normalize: bool = True) -> dict[str, torch.Tensor]:
    """Stack S views of equal size into the item dict described in the module docstring."""
    rgb = np.stack([v.rgb for v in views])
    images = (normalize_images(rgb) if normalize
              else torch.from_numpy(rgb).permute(0, 3, 1, 2).to(torch.float32).div(255))
    depth = torch.from_numpy(np.stack([v.depth for v in views]).astype(np.float32))
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.full_like(depth, float("nan")))
    item = {
        "images": images,
        "depth": depth,
        "valid": torch.isfinite(depth),
        "w2c": torch.from_numpy(np.stack([v.w2c for v in views])).to(torch.float32),
        "K": torch.from_numpy(np.stack([v.K for v in views])).to(torch.float32),
        "index": torch.tensor(index, dtype=torch.int64),
    }
    for key in ("sky", "objects"):
        if all(getattr(v, key) is not None for v in views):
            item[key] = torch.from_numpy(np.stack([getattr(v, key) for v in views]))
    return item


def _key(item: int | SampleKey, default: SampleKey) -> SampleKey:
    if isinstance(item, (tuple, list)):
        index, H, W, S = (int(x) for x in item)
        return index, H, W, S
    return default


# --- synthetic ------------------------------------------------------------------------------------------------------


def default_sample_key(seed: int, index: int, resolutions, views: tuple[int, int]) -> SampleKey:
    """(index, H, W, S) drawn deterministically from (seed, index): one of ``resolutions``, S in [views]."""
    rng = np.random.default_rng([seed, index, 1])
    H, W = resolutions[int(rng.integers(len(resolutions)))]
    return index, H, W, int(rng.integers(views[0], views[1] + 1))


class SyntheticSceneDataset(Dataset):
    """Procedural scenes (``da3_core.data.synthetic``) rendered on the fly; exact depth, poses, sky and object masks.

    Item ``i`` is the scene ``make_scene(kind_i, seed_i)`` with ``(kind_i, seed_i)`` and -- for a plain int index --
    resolution and view count drawn from ``np.random.default_rng([seed, i])``; a :data:`SampleKey` fixes the
    resolution and view count instead. The camera path is ``make_trajectory(scene, S, path, seed_i)`` with a field of
    view drawn from ``fov_deg``. Everything is a pure function of (dataset seed, key).

    Args:
        num_samples: dataset length.
        resolutions: (H, W) buckets for int indices (scale with ``batching.scale_resolutions`` for small configs).
        views: inclusive (min, max) view count for int indices (paper §3.4: [2, 18]).
        kinds: scene kinds to draw from.
        seed: dataset seed.
        fov_deg: (min, max) horizontal field of view in degrees.
        path: trajectory kind (:data:`da3_core.data.synthetic.paths.TRAJECTORY_KINDS`): "auto" (orbit or walk),
            "orbit", "walk", "pan" (turning on the spot) or "mixed" (orbit, walk or pan).
        normalize: ImageNet-normalise the images.
        antialias: supersampling of the colour (1 = off; depth is always exact).
        path_frames: 0: the S views are spread over the whole camera path (wide baselines: with S = 2 an orbit's
            two views may be up to 300 degrees apart and see nothing in common); N > 0: the path is sampled at
            max(S, N) frames and the views are S consecutive ones from a random start (what a node's sliding
            window of keyframes sees: neighbouring views overlap).
        windows_per_scene: R > 1 makes items ``g R .. g R + R - 1`` windows of one scene and camera path (scene
            ``g``, each with its own random start), and each worker keeps the frames it rendered (at most
            ``cache_frames``), so a batch holding a whole group (``TokenBudgetBatchSampler(group=R)``) makes the
            scene once and renders each path frame once instead of R scenes and R x S frames. The content of an
            item stays a pure function of its key. Needs ``path_frames`` > 0.
        path_frames_max: > ``path_frames``: each scene's path has its own N, drawn uniformly from
            [``path_frames``, ``path_frames_max``] by the dataset seed and the scene (its windows share it), so the
            camera moves by different amounts between neighbouring views (a robot's 10 Hz keyframes move less than
            12 frames over a whole walk); 0 = always ``path_frames``.
    """

    def __init__(self, num_samples: int, resolutions: Sequence[tuple[int, int]] = PAPER_RESOLUTIONS,
                 views: tuple[int, int] = (2, 18), kinds: Sequence[str] = SCENE_KINDS, seed: int = 0,
                 fov_deg: tuple[float, float] = (50.0, 90.0), path: str = "auto", normalize: bool = True,
                 antialias: int = 1, path_frames: int = 0, windows_per_scene: int = 1,
                 cache_frames: int = 96, path_frames_max: int = 0) -> None:
        unknown = [k for k in kinds if k not in SCENE_KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown scene kinds {unknown}; use some of {SCENE_KINDS}")
        self.num_samples, self.resolutions, self.views = int(num_samples), tuple(resolutions), views
        self.kinds, self.seed, self.fov_deg, self.path = tuple(kinds), seed, fov_deg, path
        self.normalize, self.antialias = normalize, antialias
        if path_frames < 0:
            raise ValueError(f"path_frames must be >= 0 (0 = views spread over the whole path), got {path_frames}")
        self.path_frames = int(path_frames)
        if path_frames_max and not 0 < self.path_frames <= path_frames_max:
            raise ValueError(f"path_frames_max ({path_frames_max}) needs 0 < path_frames ({path_frames}) <= it "
                             f"(or 0: every path has path_frames frames)")
        self.path_frames_max = int(path_frames_max)
        if windows_per_scene < 1 or (windows_per_scene > 1 and not self.path_frames):
            raise ValueError(f"windows_per_scene must be >= 1 and needs path_frames > 0 (windows of one path), got "
                             f"{windows_per_scene} with path_frames {self.path_frames}")
        self.windows_per_scene, self.cache_frames = int(windows_per_scene), int(cache_frames)
        self._scenes: dict[tuple, tuple] = {}  # (group, n_path) -> (scene, w2cs); per worker process
        self._frames: dict[tuple, RawView] = {}  # (group, n_path, H, W, frame) -> rendered view; per worker

    def __len__(self) -> int:
        return self.num_samples

    def sample_key(self, index: int) -> SampleKey:
        """The (index, H, W, S) used for a plain int index."""
        return default_sample_key(self.seed, index, self.resolutions, self.views)

    def scene_spec(self, index: int) -> tuple[str, int, float]:
        """(kind, scene seed, horizontal fov in degrees) of item ``index`` (independent of H, W, S)."""
        rng = np.random.default_rng([self.seed, index, 0])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        return kind, int(rng.integers(2**31 - 1)), float(rng.uniform(*self.fov_deg))

    def frames_of_path(self, group: int) -> int:
        """N, the frames of scene ``group``'s camera path (before ``max(S, N)``)."""
        if not self.path_frames_max:
            return self.path_frames
        return int(np.random.default_rng([self.seed, group, 3]).integers(self.path_frames, self.path_frames_max + 1))

    def __getitem__(self, item: int | SampleKey) -> dict[str, torch.Tensor]:
        index, H, W, S = _key(item, self.sample_key(int(item)) if not isinstance(item, (tuple, list)) else None)
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        group = index // self.windows_per_scene
        kind, scene_seed, fov = self.scene_spec(group)
        K = intrinsics_from_fov((H, W), fov)
        n_path = max(S, self.frames_of_path(group))
        start = int(np.random.default_rng([self.seed, index, 2]).integers(n_path - S + 1))
        scene, w2cs = self._scene_and_path(group, kind, scene_seed, n_path)
        views = [self._frame(group, n_path, scene, w2cs[f], K, (H, W), f) for f in range(start, start + S)]
        return views_to_item(views, index, self.normalize)

    def _scene_and_path(self, group: int, kind: str, scene_seed: int, n_path: int) -> tuple:
        key = (group, n_path)
        if key in self._scenes:
            return self._scenes[key]
        for attempt in range(8):  # a scene without a collision-free path is replaced by a deterministic other
            scene = make_scene(kind, seed=scene_seed + attempt)
            try:
                w2cs = make_trajectory(scene, n_path, self.path, seed=scene_seed + attempt)
                break
            except RuntimeError:
                continue
        else:  # pragma: no cover - make_trajectory practically always succeeds
            raise RuntimeError(f"no camera path for synthetic scene group {group}")
        if self.windows_per_scene > 1:
            while len(self._scenes) >= 4:
                self._scenes.pop(next(iter(self._scenes)))
            self._scenes[key] = (scene, w2cs)
        return scene, w2cs

    def _frame(self, group: int, n_path: int, scene, w2c: np.ndarray, K: np.ndarray, hw: tuple[int, int],
               frame: int) -> RawView:
        key = (group, n_path, *hw, frame)
        if key in self._frames:
            return self._frames[key]
        f = render(scene, w2c, K, hw, antialias=self.antialias)
        objects = np.isin(f.ids, [i for i, p in enumerate(scene.primitives) if isinstance(p, (Box, Sphere))])
        depth = np.where(f.sky, np.nan, f.depth).astype(np.float32)
        view = RawView(f.rgb, depth, f.K, f.w2c, sky=f.sky.copy(), objects=objects)
        if self.windows_per_scene > 1:
            while len(self._frames) >= self.cache_frames:
                self._frames.pop(next(iter(self._frames)))
            self._frames[key] = view
        return view


# --- readers --------------------------------------------------------------------------------------------------------


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _read_depth_png(path: Path, scale: float) -> np.ndarray:
    """16-bit PNG -> float32 metres (value / scale); 0 -> NaN."""
    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.float32)
    if raw.ndim != 2:
        raise ValueError(f"{path}: depth PNG must be single-channel 16-bit, got shape {raw.shape}")
    return np.where(raw > 0, raw / scale, np.nan).astype(np.float32)


def _read_depth_npz(path: Path) -> np.ndarray:
    with np.load(path) as z:
        arr = z["depth"] if "depth" in z.files else z[z.files[0]]
    arr = np.asarray(arr, np.float32)
    return np.where(np.isfinite(arr) & (arr > 0), arr, np.nan).astype(np.float32)


def _data_lines(path: Path) -> list[str]:
    """Non-empty lines that are not ``#`` comments."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


quat_wxyz_to_matrix = quat_wxyz_to_rotation  # COLMAP / TUM-style scalar-first quaternions


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


class FolderScene:
    """Generic multi-view folder format (one scene per folder)::

        root/
          images/<name>.png|.jpg|.jpeg    frames, in sorted file-name order
          depth/<stem>.npz                z-depth in metres (array "depth", else the first array); <= 0/NaN/inf
                                          = unknown.   -- or --
          depth/<stem>.png                16-bit z-depth in millimetres (``depth_png_scale`` units per metre),
                                          0 = unknown. The depth folder (and any single file) is optional.
          intrinsics.txt                  "fx fy cx cy" (one line, shared) or one line per frame
                                          "<name or stem> fx fy cx cy"; pixels, integer-pixel convention
                                          (pixel (0, 0) has its centre at (0, 0)).
          poses.txt                       one line per frame "<name or stem> m00 m01 ... " with 12 (3x4) or 16 (4x4)
                                          row-major values; OpenCV axes (x right, y down, z forward).
                                          The convention is w2c unless the file contains a line
                                          "# convention: c2w" (or the constructor says otherwise).

    Depth must have the image's size. Frames missing from poses.txt raise ``KeyError`` at construction.
    """

    def __init__(self, root: str | Path, pose_convention: Literal["w2c", "c2w"] | None = None,
                 depth_png_scale: float = 1000.0) -> None:
        self.root = Path(root)
        self.images = sorted(p for p in (self.root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise FileNotFoundError(f"{self.root / 'images'}: no images")
        self.depth_png_scale = depth_png_scale
        pose_text = (self.root / "poses.txt").read_text()
        if pose_convention is None:
            pose_convention = "c2w" if "convention: c2w" in pose_text.replace("  ", " ").lower() else "w2c"
        self.pose_convention = pose_convention
        poses = {}
        for ln in _data_lines(self.root / "poses.txt"):
            name, *vals = ln.split()
            if len(vals) not in (12, 16):
                raise ValueError(f"poses.txt: {name}: expected 12 or 16 values, got {len(vals)}")
            T = np.eye(4)
            T[: len(vals) // 4] = np.asarray(vals, np.float64).reshape(-1, 4)
            poses[name] = T if pose_convention == "w2c" else invert_rigid(T)
        intr = [ln.split() for ln in _data_lines(self.root / "intrinsics.txt")]
        shared = _K(*map(float, intr[0])) if len(intr) == 1 and len(intr[0]) == 4 else None
        per_frame = {row[0]: _K(*map(float, row[1:5])) for row in intr if len(row) == 5}
        self.w2c, self.K = [], []
        for p in self.images:
            self.w2c.append(self._lookup(poses, p, "poses.txt"))
            self.K.append(shared if shared is not None else self._lookup(per_frame, p, "intrinsics.txt"))

    @staticmethod
    def _lookup(table: dict[str, np.ndarray], path: Path, what: str) -> np.ndarray:
        for key in (path.name, path.stem):
            if key in table:
                return table[key]
        raise KeyError(f"{what}: no entry for frame {path.name}")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> RawView:
        p = self.images[index]
        rgb = _read_rgb(p)
        depth = np.full(rgb.shape[:2], np.nan, np.float32)
        for suffix in (".npz", ".png"):
            dp = self.root / "depth" / (p.stem + suffix)
            if dp.exists():
                depth = _read_depth_npz(dp) if suffix == ".npz" else _read_depth_png(dp, self.depth_png_scale)
                break
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"{p.name}: depth {depth.shape} does not match the image {rgb.shape[:2]}")
        return RawView(rgb, depth, self.K[index].copy(), self.w2c[index].copy())


def _read_stamped(path: Path) -> list[tuple[float, list[str]]]:
    return [(float(ln.split()[0]), ln.split()[1:]) for ln in _data_lines(path)]


def _nearest_stamp(stamps: np.ndarray, t: float) -> int:
    i = int(np.searchsorted(stamps, t))
    cand = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    return min(cand, key=lambda j: abs(stamps[j] - t))


class TUMScene:
    """TUM RGB-D sequence (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats).

    ``rgb.txt`` / ``depth.txt``: "timestamp filename"; ``groundtruth.txt``: "timestamp tx ty tz qx qy qz qw", the
    camera-to-world pose of the optical centre (OpenCV axes). Each RGB frame is associated with the nearest depth
    frame and the nearest ground-truth pose, both within ``max_dt`` seconds (frames without both are dropped).
    Depth PNGs are 16-bit with ``depth_scale`` (5000) units per metre, 0 = unknown. TUM's principal point already uses
    the integer-pixel convention; the default intrinsics are the ROS-default ones of the dataset page
    (525, 525, 319.5, 239.5) -- pass the per-sensor calibration (freiburg1/2/3) for accuracy (images are used
    undistorted as stored).
    """

    DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)

    def __init__(self, root: str | Path, intrinsics: Sequence[float] = DEFAULT_INTRINSICS, max_dt: float = 0.02,
                 depth_scale: float = 5000.0) -> None:
        self.root = Path(root)
        self.K = _K(*intrinsics)
        self.depth_scale = depth_scale
        rgb = _read_stamped(self.root / "rgb.txt")
        depth = _read_stamped(self.root / "depth.txt")
        gt = _read_stamped(self.root / "groundtruth.txt")
        d_ts = np.array([t for t, _ in depth])
        g_ts = np.array([t for t, _ in gt])
        self.frames: list[tuple[float, Path, Path, np.ndarray]] = []
        for t, (name, *_) in rgb:
            if not len(d_ts) or not len(g_ts):
                break
            di, gi = _nearest_stamp(d_ts, t), _nearest_stamp(g_ts, t)
            if abs(d_ts[di] - t) > max_dt or abs(g_ts[gi] - t) > max_dt:
                continue
            tx, ty, tz, qx, qy, qz, qw = map(float, gt[gi][1][:7])
            c2w = _rigid(quat_wxyz_to_matrix((qw, qx, qy, qz)), np.array([tx, ty, tz]))
            self.frames.append((t, self.root / name, self.root / depth[di][1][0], invert_rigid(c2w)))

    def __len__(self) -> int:
        return len(self.frames)

    def timestamp(self, index: int) -> float:
        return self.frames[index][0]

    def load(self, index: int) -> RawView:
        _, rgb_path, depth_path, w2c = self.frames[index]
        return RawView(_read_rgb(rgb_path), _read_depth_png(depth_path, self.depth_scale), self.K.copy(), w2c.copy())


class ColmapScene:
    """COLMAP sparse text model (``cameras.txt``, ``images.txt``, optional ``points3D.txt``).

    Camera models: SIMPLE_PINHOLE, PINHOLE, and the pinhole part of SIMPLE_RADIAL, RADIAL and OPENCV (distortion is
    ignored: undistort first with ``colmap image_undistorter`` for accurate geometry). ``images.txt`` poses
    (QW QX QY QZ TX TY TZ) are world-to-camera. COLMAP puts the centre of pixel (0, 0) at (0.5, 0.5); we subtract
    0.5 from the principal point (integer-pixel convention). With ``points3D.txt`` (and ``sparse_depth=True``) each
    view's depth holds the camera-frame z of its observed 3-D points at the rounded keypoint pixels (NaN
    elsewhere); otherwise depth is all NaN (poses-only supervision).

    Args:
        root: folder with the text model.
        image_dir: folder of the images (default ``root/images``, else ``root/../images``).
        sparse_depth: build sparse depth from the 3-D points when ``points3D.txt`` exists.
    """

    _PINHOLE_PARAMS = {  # model -> indices of (fx, fy, cx, cy) in PARAMS (fx index reused for f)
        "SIMPLE_PINHOLE": (0, 0, 1, 2), "PINHOLE": (0, 1, 2, 3), "SIMPLE_RADIAL": (0, 0, 1, 2),
        "RADIAL": (0, 0, 1, 2), "OPENCV": (0, 1, 2, 3),
    }

    def __init__(self, root: str | Path, image_dir: str | Path | None = None, sparse_depth: bool = True) -> None:
        self.root = Path(root)
        if image_dir is None:
            image_dir = self.root / "images" if (self.root / "images").is_dir() else self.root.parent / "images"
        self.image_dir = Path(image_dir)
        self.cameras: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        for ln in _data_lines(self.root / "cameras.txt"):
            cid, model, w, h, *params = ln.split()
            if model not in self._PINHOLE_PARAMS:
                raise ValueError(f"cameras.txt: unsupported camera model {model}")
            p = [float(x) for x in params]
            fx, fy, cx, cy = (p[i] for i in self._PINHOLE_PARAMS[model])
            self.cameras[int(cid)] = (_K(fx, fy, cx - 0.5, cy - 0.5), (int(h), int(w)))
        lines = [ln.rstrip("\n") for ln in (self.root / "images.txt").read_text().splitlines()
                 if not ln.lstrip().startswith("#")]
        while lines and not lines[-1].strip():
            lines.pop()
        self.images: list[tuple[str, int, np.ndarray, np.ndarray]] = []  # name, camera id, w2c, points2d (N, 3)
        for head, pts in zip(lines[0::2], lines[1::2] + [""] * (len(lines[0::2]) - len(lines[1::2]))):
            f = head.split()
            if not f:
                continue
            q, t = [float(x) for x in f[1:5]], np.array([float(x) for x in f[5:8]])
            vals = np.array(pts.split(), np.float64).reshape(-1, 3) if pts.strip() else np.zeros((0, 3))
            self.images.append((f[9], int(f[8]), _rigid(quat_wxyz_to_matrix(q), t), vals))
        self.images.sort(key=lambda r: r[0])
        self.points3d: dict[int, np.ndarray] = {}
        if sparse_depth and (self.root / "points3D.txt").exists():
            for ln in _data_lines(self.root / "points3D.txt"):
                f = ln.split()
                self.points3d[int(f[0])] = np.array([float(x) for x in f[1:4]])

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> RawView:
        name, cid, w2c, pts2d = self.images[index]
        K, (h, w) = self.cameras[cid]
        rgb = _read_rgb(self.image_dir / name)
        if rgb.shape[:2] != (h, w):
            raise ValueError(f"{name}: image {rgb.shape[:2]} does not match camera {cid} size {(h, w)}")
        depth = np.full((h, w), np.nan, np.float32)
        for x, y, pid in pts2d:
            X = self.points3d.get(int(pid))
            if X is None:
                continue
            z = (w2c[:3, :3] @ X + w2c[:3, 3])[2]
            u, v = math.floor(x), math.floor(y)  # COLMAP pixel (u, v) spans [u, u + 1) x [v, v + 1)
            if z > 0 and 0 <= u < w and 0 <= v < h and not depth[v, u] <= z:  # keep the nearest point per pixel
                depth[v, u] = z
        return RawView(rgb, depth, K.copy(), w2c.copy())


# --- generic view-set dataset ---------------------------------------------------------------------------------------


class ViewSetDataset(Dataset):
    """Items of S frames from one of several :class:`FrameSource` s, resized/cropped to (H, W).

    Item ``i`` (deterministic in (seed, key)) uses source ``i mod len(sources)`` and, drawn from
    ``default_rng([seed, i])``, a window of ``S * stride`` consecutive frames at a random start (``stride`` uniform
    in [1, max_stride]) and S frames of it in temporal order (drawn with replacement -- repeated views -- when the
    source has fewer than S frames, so every item has exactly S views).

    Args:
        sources: frame sources (e.g. several :class:`TUMScene`).
        num_samples: dataset length (items are resampled, not enumerated).
        resolutions, views: as :class:`SyntheticSceneDataset` for plain int indices.
        max_stride: largest frame stride of a window.
        seed: dataset seed.
        normalize: ImageNet-normalise the images.
    """

    def __init__(self, sources: Sequence[FrameSource], num_samples: int,
                 resolutions: Sequence[tuple[int, int]] = PAPER_RESOLUTIONS, views: tuple[int, int] = (2, 18),
                 max_stride: int = 3, seed: int = 0, normalize: bool = True) -> None:
        if not sources or any(len(s) == 0 for s in sources):
            raise ValueError("ViewSetDataset needs at least one non-empty source")
        self.sources, self.num_samples = list(sources), int(num_samples)
        self.resolutions, self.views, self.max_stride = tuple(resolutions), views, max_stride
        self.seed, self.normalize = seed, normalize

    def __len__(self) -> int:
        return self.num_samples

    def sample_key(self, index: int) -> SampleKey:
        """The (index, H, W, S) used for a plain int index."""
        return default_sample_key(self.seed, index, self.resolutions, self.views)

    def frame_indices(self, index: int, views: int) -> tuple[int, list[int]]:
        """(source index, frame indices) of item ``index`` with ``views`` views."""
        rng = np.random.default_rng([self.seed, index, 0])
        si = index % len(self.sources)
        n = len(self.sources[si])
        stride = int(rng.integers(1, self.max_stride + 1))
        span = min(n, views * stride)
        start = int(rng.integers(0, n - span + 1))
        window = np.arange(start, start + span)
        return si, sorted(int(x) for x in rng.choice(window, views, replace=span < views))

    def __getitem__(self, item: int | SampleKey) -> dict[str, torch.Tensor]:
        index, H, W, S = _key(item, self.sample_key(int(item)) if not isinstance(item, (tuple, list)) else None)
        si, frames = self.frame_indices(index, S)
        views = [resize_crop_view(self.sources[si].load(f), (H, W)) for f in frames]
        return views_to_item(views, index, self.normalize)
