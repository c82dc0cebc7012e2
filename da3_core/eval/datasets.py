"""Evaluation datasets: adapters that turn each supported layout into scenes of frames with ground truth.

``load_dataset("KIND:PATH_OR_SPEC", max_frames=None, views=None, intrinsics=None) -> list[EvalScene]``

Every :class:`EvalFrame` has ``rgb`` (H, W, 3) uint8 and, when the dataset has them, ``depth`` (H, W) float32 metres
(NaN = unknown), ``K`` (3, 3) pixels of ``rgb`` (integer-pixel convention) and ``w2c`` (4, 4) OpenCV
world-to-camera. Kinds (layouts in ``docs/evaluation.md``):

- ``synthetic:SPEC[;SPEC…]`` -- :class:`~da3_core.data.synthetic.sequence.SyntheticSequence` specs (exact depth, sky =
  NaN, exact poses);
- ``tum:PATH`` -- a TUM RGB-D sequence (``rgb.txt``, ``depth.txt``, optional ``groundtruth.txt``; a folder of
  sequences gives one scene each), or a flat folder of ``N.png`` + ``N_depth.png`` (depth only). Intrinsics: the
  freiburg1/2/3 calibration when the path names it (fr1/freiburg1 …), else ``intrinsics``, else TUM's defaults;
- ``7scenes:PATH`` -- ``seq-XX/frame-XXXXXX.{color.png,depth.png,pose.txt}`` (depth mm, 0 and 65535 invalid; pose
  camera-to-world); every folder holding such frames is one scene; K 585, 585, 320, 240 unless ``intrinsics``;
- ``scannet:PATH`` -- ScanNet-style ``color/ depth/ pose/ intrinsic/`` (depth mm; poses camera-to-world 4x4, frames
  with non-finite poses dropped; colour resized to the depth size, with ``intrinsic_depth.txt``);
- ``colmap:PATH`` -- a COLMAP text model (``PATH``, ``PATH/sparse/0`` or ``PATH/sparse``), sparse depth from
  ``points3D.txt`` (:class:`~da3_core.train.data.ColmapScene`);
- ``folder:PATH`` -- the generic format of :class:`~da3_core.train.data.FolderScene` (a folder of such folders gives
  one scene each);
- ``bag:PATH`` -- a rosbag2 (sqlite3 / MCAP) with a colour image topic, optional CameraInfo and the ground-truth
  topics of :func:`da3_ros.bags.find_gt_topics` (depth Image 32FC1 m / 16UC1 mm, PoseStamped camera-to-world).

``max_frames`` keeps that many frames per scene, evenly spaced; ``views`` then splits each scene into consecutive
chunks of that many views, each evaluated as its own scene (``name#k``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["EvalFrame", "EvalScene", "DATASET_KINDS", "load_dataset", "parse_dataset_spec", "TUM_INTRINSICS"]

DATASET_KINDS = ("synthetic", "tum", "7scenes", "scannet", "colmap", "folder", "bag")
TUM_INTRINSICS = {  # https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats (fx, fy, cx, cy)
    "fr1": (517.3, 516.5, 318.6, 255.3), "fr2": (520.9, 521.0, 325.1, 249.7), "fr3": (535.4, 539.2, 320.1, 247.6)}
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)


@dataclass
class EvalFrame:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) float32 metres, NaN unknown
    K: np.ndarray | None = None  # (3, 3) float64
    w2c: np.ndarray | None = None  # (4, 4) float64

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[:2]


@dataclass
class EvalScene:
    name: str
    dataset: str
    frames: list[EvalFrame]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_depth(self) -> bool:
        return all(f.depth is not None for f in self.frames)

    @property
    def has_poses(self) -> bool:
        return all(f.w2c is not None for f in self.frames)

    @property
    def has_intrinsics(self) -> bool:
        return all(f.K is not None for f in self.frames)


# --- helpers --------------------------------------------------------------------------------------------------------

def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _inv(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def select_indices(n: int, max_frames: int | None) -> list[int]:
    """``max_frames`` evenly spaced indices of ``range(n)`` (all when None or >= n), first and last included."""
    if max_frames is None or max_frames >= n:
        return list(range(n))
    if max_frames <= 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _read_depth_u16(path: Path, units_per_m: float, invalid_max: bool = False) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.float64)
    if raw.ndim != 2:
        raise ValueError(f"{path}: depth must be a single-channel 16-bit image, got shape {raw.shape}")
    bad = (raw <= 0) | ((raw >= 65535) if invalid_max else False)
    return np.where(bad, np.nan, raw / units_per_m).astype(np.float32)


def _from_source(src, names: Sequence[str], kind: str, scene: str, max_frames: int | None,
                 depth_known: bool = True) -> EvalScene:
    """Frames of a :class:`da3_core.train.data.FrameSource` (only the selected indices are loaded)."""
    frames = []
    for i in select_indices(len(src), max_frames):
        v = src.load(i)
        depth = v.depth if depth_known else None
        frames.append(EvalFrame(names[i], v.rgb, depth, np.asarray(v.K, np.float64), np.asarray(v.w2c, np.float64)))
    return EvalScene(scene, kind, frames)


def _subdirs_with(root: Path, test: Callable[[Path], bool]) -> list[Path]:
    if test(root):
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_dir() and test(p))


# --- adapters -------------------------------------------------------------------------------------------------------

def _synthetic(spec: str, max_frames: int | None, intrinsics) -> list[EvalScene]:
    from da3_core.data.synthetic.sequence import SyntheticSequence

    scenes = []
    for one in filter(None, (s.strip() for s in spec.split(";"))):
        seq = SyntheticSequence.from_spec(one)
        frames = []
        for i in select_indices(len(seq), max_frames):
            fr = seq.frame(i)
            depth = np.where(np.isfinite(fr.depth) & (fr.depth > 0), fr.depth, np.nan).astype(np.float32)
            frames.append(EvalFrame(f"{i:04d}", fr.rgb, depth, np.asarray(fr.K, np.float64),
                                    np.asarray(fr.w2c, np.float64)))
        scenes.append(EvalScene(seq.spec.to_string(), "synthetic", frames))
    return scenes


def _tum_intrinsics(path: Path, intrinsics) -> tuple[float, float, float, float]:
    if intrinsics is not None:
        return tuple(float(x) for x in intrinsics)
    m = re.search(r"(?:fr|freiburg)([123])", str(path.resolve()).lower())
    return TUM_INTRINSICS[f"fr{m.group(1)}"] if m else (525.0, 525.0, 319.5, 239.5)


def _tum(path: Path, max_frames: int | None, intrinsics) -> list[EvalScene]:
    from da3_core.train.data import TUMScene, _nearest_stamp, _read_stamped

    seqs = _subdirs_with(path, lambda p: (p / "rgb.txt").is_file())
    scenes = []
    for root in seqs:
        kvals = _tum_intrinsics(root, intrinsics)
        name = root.name if root == path else str(root.relative_to(path))
        if (root / "groundtruth.txt").is_file():
            src = TUMScene(root, intrinsics=kvals)
            names = [f"{src.timestamp(i):.6f}" for i in range(len(src))]
            scenes.append(_from_source(src, names, "tum", name, max_frames))
            continue
        rgb, depth = _read_stamped(root / "rgb.txt"), _read_stamped(root / "depth.txt")
        d_ts = np.array([t for t, _ in depth])
        pairs = [(t, f[0], depth[j][1][0]) for t, f in rgb
                 if len(d_ts) and abs(d_ts[j := _nearest_stamp(d_ts, t)] - t) <= 0.02]
        frames = [EvalFrame(f"{t:.6f}", _read_rgb(root / r), _read_depth_u16(root / d, 5000.0), _K(*kvals))
                  for t, r, d in (pairs[i] for i in select_indices(len(pairs), max_frames))]
        scenes.append(EvalScene(name, "tum", frames))
    if scenes:
        return scenes
    # flat pair layout (N.png + N_depth.png), e.g. the slambook2 fr2/desk pair
    images = sorted(p for p in path.glob("*.png") if not p.stem.endswith("_depth")
                    and (path / f"{p.stem}_depth.png").is_file())
    if not images:
        raise FileNotFoundError(f"tum:{path}: no rgb.txt (TUM sequence) and no N.png + N_depth.png pairs")
    kvals = _tum_intrinsics(path, intrinsics)
    frames = [EvalFrame(p.stem, _read_rgb(p), _read_depth_u16(path / f"{p.stem}_depth.png", 5000.0), _K(*kvals))
              for p in (images[i] for i in select_indices(len(images), max_frames))]
    return [EvalScene(path.name, "tum", frames)]


def _seven_scenes(path: Path, max_frames: int | None, intrinsics) -> list[EvalScene]:
    seqs = _subdirs_with(path, lambda p: any(p.glob("frame-*.color.png")))
    if not seqs:
        raise FileNotFoundError(f"7scenes:{path}: no frame-XXXXXX.color.png files")
    K = _K(*(intrinsics if intrinsics is not None else SEVEN_SCENES_INTRINSICS))
    scenes = []
    for root in seqs:
        stems = sorted(p.name[: -len(".color.png")] for p in root.glob("frame-*.color.png"))
        frames = []
        for i in select_indices(len(stems), max_frames):
            s = stems[i]
            c2w = np.loadtxt(root / f"{s}.pose.txt").reshape(4, 4)
            dp = root / f"{s}.depth.png"
            depth = _read_depth_u16(dp, 1000.0, invalid_max=True) if dp.is_file() else None
            frames.append(EvalFrame(s, _read_rgb(root / f"{s}.color.png"), depth, K.copy(),
                                    _inv(c2w) if np.all(np.isfinite(c2w)) else None))
        name = root.name if root == path else str(root.relative_to(path.parent))
        scenes.append(EvalScene(name, "7scenes", frames))
    return scenes


def _read_matrix(path: Path) -> np.ndarray:
    return np.loadtxt(path).reshape(4, 4) if path.is_file() else None


def _scannet(path: Path, max_frames: int | None, intrinsics) -> list[EvalScene]:
    import cv2

    roots = _subdirs_with(path, lambda p: (p / "color").is_dir() and (p / "pose").is_dir())
    if not roots:
        raise FileNotFoundError(f"scannet:{path}: no scene with color/ and pose/ folders")
    scenes = []
    for root in roots:
        def num(p: Path) -> tuple[int, str]:
            return (int(p.stem), p.stem) if p.stem.isdigit() else (1 << 62, p.stem)

        colors = sorted((p for p in (root / "color").iterdir() if p.suffix.lower() in (".jpg", ".png")), key=num)
        keep = []
        for p in colors:
            T = _read_matrix(root / "pose" / f"{p.stem}.txt")
            if T is not None and np.all(np.isfinite(T)):
                keep.append((p, T))
        kc = _read_matrix(root / "intrinsic" / "intrinsic_color.txt")
        kd = _read_matrix(root / "intrinsic" / "intrinsic_depth.txt")
        frames = []
        for i in select_indices(len(keep), max_frames):
            p, c2w = keep[i]
            rgb = _read_rgb(p)
            dp = root / "depth" / f"{p.stem}.png"
            depth = _read_depth_u16(dp, 1000.0) if dp.is_file() else None
            if intrinsics is not None:
                K = _K(*intrinsics)
            elif kc is None and kd is None:
                raise FileNotFoundError(f"scannet:{root}: no intrinsic/intrinsic_color.txt; pass --intrinsics")
            else:
                K = (kc if kc is not None else kd)[:3, :3].astype(np.float64).copy()
            if depth is not None and depth.shape != rgb.shape[:2]:
                h, w = depth.shape
                if intrinsics is None and kd is not None:
                    K = kd[:3, :3].astype(np.float64).copy()
                else:
                    K[0] *= w / rgb.shape[1]
                    K[1] *= h / rgb.shape[0]
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            frames.append(EvalFrame(p.stem, rgb, depth, K, _inv(c2w)))
        scenes.append(EvalScene(root.name, "scannet", frames))
    return scenes


def _colmap(path: Path, max_frames: int | None, intrinsics) -> list[EvalScene]:
    from da3_core.train.data import ColmapScene

    for model in (path, path / "sparse" / "0", path / "sparse"):
        if (model / "cameras.txt").is_file() and (model / "images.txt").is_file():
            break
    else:
        raise FileNotFoundError(f"colmap:{path}: no cameras.txt + images.txt in it, sparse/0 or sparse (export the "
                                "model as text: colmap model_converter --output_type TXT)")
    image_dir = path / "images" if (path / "images").is_dir() else None
    src = ColmapScene(model, image_dir=image_dir)
    names = [r[0] for r in src.images]
    return [_from_source(src, names, "colmap", path.name, max_frames)]


def _folder(path: Path, max_frames: int | None, intrinsics) -> list[EvalScene]:
    from da3_core.train.data import FolderScene

    roots = _subdirs_with(path, lambda p: (p / "images").is_dir() and (p / "poses.txt").is_file())
    if not roots:
        raise FileNotFoundError(f"folder:{path}: no folder with images/ and poses.txt (see docs/evaluation.md)")
    scenes = []
    for root in roots:
        src = FolderScene(root)
        scenes.append(_from_source(src, [p.stem for p in src.images], "folder",
                                   root.name if root == path else str(root.relative_to(path)), max_frames,
                                   depth_known=(root / "depth").is_dir()))
    return scenes


def _bag(path: Path, max_frames: int | None, intrinsics, tolerance_s: float = 0.02) -> list[EvalScene]:
    import cv2

    from da3_ros import bags
    from da3_ros.conversions import camera_info_to_K, compressed_to_rgb, image_to_rgb, stamp_to_ns
    from da3_ros.replay import _gt_depth_array, _pose_to_c2w, nearest_within

    info = bags.bag_info(path)
    image_topic = bags.find_image_topic(info)
    info_topic = bags.find_camera_info_topic(info, image_topic)
    gt = bags.find_gt_topics(info)
    convert = compressed_to_rgb if info.topics[image_topic].msgtype == bags.COMPRESSED else image_to_rgb
    stamps: list[int] = []
    for _topic, _, msg in bags.read_messages(path, [image_topic]):
        stamps.append(stamp_to_ns(msg.header.stamp))
    wanted = {stamps[i] for i in select_indices(len(stamps), max_frames)}
    images: dict[int, np.ndarray] = {}
    infos: list[tuple[int, np.ndarray, tuple[int, int]]] = []
    poses: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}
    topics = [t for t in (image_topic, info_topic, gt.get("pose"), gt.get("depth"), gt.get("tf")) if t]
    for topic, _, msg in bags.read_messages(path, topics):
        if topic == image_topic:
            s = stamp_to_ns(msg.header.stamp)
            if s in wanted and s not in images:
                images[s] = convert(msg)
        elif topic == info_topic:
            infos.append((stamp_to_ns(msg.header.stamp), msg))
        elif topic == gt.get("pose"):
            poses[stamp_to_ns(msg.header.stamp)] = _pose_to_c2w(msg.pose.position, msg.pose.orientation)
        elif topic == gt.get("depth"):
            d = _gt_depth_array(msg)
            if d is not None:
                if msg.encoding in ("16UC1", "mono16"):
                    d[d >= 65.535 - 1e-6] = np.nan  # 65535 mm = invalid (7-Scenes)
                depths[stamp_to_ns(msg.header.stamp)] = d
        elif "pose" not in gt:
            for tf in msg.transforms:
                if tf.child_frame_id == bags.GT_CAMERA_FRAME:
                    poses[stamp_to_ns(tf.header.stamp)] = _pose_to_c2w(tf.transform.translation, tf.transform.rotation)
    tol = tolerance_s * 1e9
    info_st = np.array(sorted(s for s, _ in infos), np.int64)
    info_by = dict(infos)
    pose_st = np.array(sorted(poses), np.int64)
    depth_st = np.array(sorted(depths), np.int64)
    frames = []
    for s in sorted(images):
        rgb = images[s]
        h, w = rgb.shape[:2]
        if intrinsics is not None:
            K = _K(*intrinsics)
        else:
            j = nearest_within(info_st, s, tol) if len(info_st) else None
            K = camera_info_to_K(info_by[int(info_st[j])], (h, w)) if j is not None else None
        j = nearest_within(pose_st, s, tol) if len(pose_st) else None
        w2c = _inv(poses[int(pose_st[j])]) if j is not None else None
        j = nearest_within(depth_st, s, tol) if len(depth_st) else None
        depth = depths[int(depth_st[j])] if j is not None else None
        if depth is not None and depth.shape != (h, w):
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        frames.append(EvalFrame(str(s), rgb, depth, None if K is None else np.asarray(K, np.float64), w2c))
    return [EvalScene(Path(info.path).name, "bag", frames)]


_ADAPTERS = {"tum": _tum, "7scenes": _seven_scenes, "scannet": _scannet, "colmap": _colmap, "folder": _folder,
             "bag": _bag}


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in DATASET_KINDS or not rest:
        raise ValueError(f"dataset {spec!r}: use KIND:PATH (or synthetic:SPEC) with KIND one of "
                         f"{', '.join(DATASET_KINDS)}")
    return kind, rest


def split_views(scene: EvalScene, views: int | None) -> list[EvalScene]:
    """Consecutive chunks of ``views`` frames (the last chunk keeps the remainder, merged if it has one frame)."""
    if views is None or views >= len(scene):
        return [scene]
    if views < 2:
        raise ValueError("--views must be at least 2")
    chunks = [scene.frames[a:a + views] for a in range(0, len(scene), views)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        tail = chunks.pop()
        chunks[-1] = chunks[-1] + tail
    return [EvalScene(f"{scene.name}#{k}", scene.dataset, c) for k, c in enumerate(chunks)]


def load_dataset(spec: str, max_frames: int | None = None, views: int | None = None,
                 intrinsics: Sequence[float] | None = None) -> list[EvalScene]:
    """Scenes of the dataset ``KIND:PATH`` (see the module docstring)."""
    kind, rest = parse_dataset_spec(spec)
    if kind == "synthetic":
        scenes = _synthetic(rest, max_frames, intrinsics)
    else:
        path = Path(rest).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"dataset {spec!r}: {path} does not exist")
        scenes = _ADAPTERS[kind](path, max_frames, intrinsics)
    scenes = [s for s in scenes if len(s)]
    if not scenes:
        raise ValueError(f"dataset {spec!r}: no frames found")
    return [c for s in scenes for c in split_views(s, views)]
