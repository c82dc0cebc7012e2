"""Input preprocessing identical to the official Depth Anything 3 ``InputProcessor``.

Pipeline per view (official facts, ``shared/docs/official-da3-facts.md`` §1.5):

1. RGB uint8 image (array, PIL image or path).
2. Boundary resize: ``upper_bound_*`` scales the longest side to ``process_res``, ``lower_bound_*`` the shortest;
   each side becomes ``max(1, round(side * scale))`` (Python rounding); OpenCV ``INTER_AREA`` when shrinking,
   ``INTER_CUBIC`` when enlarging; no resize when the bound side already equals ``process_res``.
3. Patch divisibility (14): ``*_resize`` rounds each side to the nearest multiple (ties up) with a second small
   resize (cubic if either side grows, else area); ``*_crop`` floors each side and centre-crops
   (offset ``(old - new) // 2``).
4. Intrinsics follow: a resize multiplies the first row of K by ``w_new / w_old`` and the second by
   ``h_new / h_old``; a crop subtracts the offsets from cx, cy. Done in the dtype of the given K (float32 K stays
   float32, as in the official code), so the processed K equals the official one bit for bit.
5. Views of different processed sizes are centre-cropped to the smallest height and width (K adjusted).
6. ImageNet normalisation computed exactly like torchvision ``ToTensor`` + ``Normalize`` in float32.

Besides the network input, :func:`preprocess` returns per view a :class:`ViewTransform`: the affine map between
input-image and processed-image pixel coordinates, which :mod:`da3_core.api` uses to bring outputs back to the
input resolution. Coordinates there use the *pixel-corner* convention of the official intrinsics handling: pixel
``i`` covers ``[i, i + 1)``, so a resize by ``s`` maps ``u -> s * u`` and K's first row scales by ``s`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESS_RES_METHODS = ("upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop")

ImageLike = np.ndarray | Image.Image | str | Path


@dataclass(frozen=True)
class ViewTransform:
    """Affine map from input-image to processed-image pixel coordinates (pixel-corner convention), per axis:

    ``u_proc = scale_x * u_in + offset_x``, ``v_proc = scale_y * v_in + offset_y``.

    The same map takes intrinsics K_in (input pixels) to K_proc = M @ K_in with
    ``M = [[scale_x, 0, offset_x], [0, scale_y, offset_y], [0, 0, 1]]``.
    """

    input_hw: tuple[int, int]
    processed_hw: tuple[int, int]
    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    @property
    def matrix(self) -> np.ndarray:
        """M (3, 3) float64: input pixels -> processed pixels."""
        return np.array([[self.scale_x, 0.0, self.offset_x], [0.0, self.scale_y, self.offset_y], [0.0, 0.0, 1.0]])

    def resized(self, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> ViewTransform:
        """This map followed by a resize of the processed image from ``old_hw`` to ``new_hw``."""
        fx, fy = new_hw[1] / old_hw[1], new_hw[0] / old_hw[0]
        return ViewTransform(self.input_hw, new_hw, self.scale_x * fx, self.scale_y * fy,
                             self.offset_x * fx, self.offset_y * fy)

    def cropped(self, top: int, left: int, new_hw: tuple[int, int]) -> ViewTransform:
        """This map followed by a crop of the processed image starting at (top, left)."""
        return ViewTransform(self.input_hw, new_hw, self.scale_x, self.scale_y,
                             self.offset_x - left, self.offset_y - top)

    def intrinsics_to_input(self, K_proc: np.ndarray) -> np.ndarray:
        """K (…, 3, 3) in processed pixels -> K in input pixels (float64): ``M^-1 @ K``."""
        return np.linalg.inv(self.matrix) @ np.asarray(K_proc, dtype=np.float64)

    def intrinsics_to_processed(self, K_in: np.ndarray) -> np.ndarray:
        """K (…, 3, 3) in input pixels -> K in processed pixels (float64): ``M @ K``."""
        return self.matrix @ np.asarray(K_in, dtype=np.float64)


@dataclass
class Preprocessed:
    """Output of :func:`preprocess` for N views.

    - ``x``: (1, N, 3, h, w) float32, ImageNet-normalised RGB, h and w multiples of 14 (the network input).
    - ``intrinsics``: (N, 3, 3) float32 tensor in processed pixels, or None (official ``InputProcessor`` output).
    - ``extrinsics``: (N, 4, 4) float32 tensor, the given world-to-camera matrices padded to 4x4, or None.
    - ``input_extrinsics``: the same as validated (N, 4, 4) float64 numpy array, or None.
    - ``images``: the N input images as (H_i, W_i, 3) uint8 RGB arrays (after loading paths / PIL images).
    - ``processed_images``: (N, h, w, 3) uint8, the resized/cropped RGB images before normalisation.
    - ``transforms``: one :class:`ViewTransform` per view (input pixels -> processed pixels).
    """

    x: torch.Tensor
    intrinsics: torch.Tensor | None
    extrinsics: torch.Tensor | None
    images: list[np.ndarray]
    processed_images: np.ndarray
    transforms: list[ViewTransform]
    input_extrinsics: np.ndarray | None = None

    @property
    def input_hw(self) -> list[tuple[int, int]]:
        return [t.input_hw for t in self.transforms]

    @property
    def processed_hw(self) -> tuple[int, int]:
        return tuple(self.x.shape[-2:])


# --- validation ---------------------------------------------------------------------------------------------------


def _as_image_list(images: object) -> list:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 3:
            return [images]
        raise ValueError(f"images: got one array of shape {images.shape}; pass a list of (H, W, 3) uint8 RGB arrays "
                         "or one (N, H, W, 3) uint8 array")
    if isinstance(images, torch.Tensor):
        raise TypeError("images: got a torch.Tensor; pass (H, W, 3) uint8 numpy arrays (e.g. t.cpu().numpy()), "
                        "PIL images or file paths")
    if isinstance(images, (list, tuple)):
        return list(images)
    raise TypeError(f"images: expected a list of (H, W, 3) uint8 arrays, PIL images or paths, "
                    f"got {type(images).__name__}")


def load_image(item: ImageLike, index: int = 0) -> np.ndarray:
    """One image as a contiguous (H, W, 3) uint8 RGB array; clear errors for anything else."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"image {index}: file {str(path)!r} does not exist; check the path")
        try:
            with Image.open(path) as img:
                return np.ascontiguousarray(np.asarray(img.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise ValueError(f"image {index}: cannot read {str(path)!r} as an image ({exc}); pass a PNG/JPEG file "
                             "or an (H, W, 3) uint8 array") from exc
    if isinstance(item, Image.Image):
        return np.ascontiguousarray(np.asarray(item.convert("RGB")))
    if isinstance(item, torch.Tensor):
        raise TypeError(f"image {index}: got a torch.Tensor; pass an (H, W, 3) uint8 numpy array (tensor.numpy())")
    if not isinstance(item, np.ndarray):
        raise TypeError(f"image {index}: unsupported type {type(item).__name__}; pass an (H, W, 3) uint8 RGB array, "
                        "a PIL image or a file path")
    if item.dtype != np.uint8:
        raise TypeError(f"image {index}: dtype {item.dtype}, expected uint8 RGB in 0..255; convert float images with "
                        "(img * 255).round().clip(0, 255).astype(np.uint8)")
    if item.ndim != 3:
        raise ValueError(f"image {index}: shape {item.shape}, expected (H, W, 3) RGB; for grayscale pass "
                         "np.repeat(img[..., None], 3, axis=-1)")
    if item.shape[2] != 3:
        raise ValueError(f"image {index}: {item.shape[2]} channels (shape {item.shape}), expected 3 (RGB); drop alpha "
                         "with img[..., :3], convert BGR (OpenCV) with img[..., ::-1]")
    if item.shape[0] < 1 or item.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {item.shape}")
    return np.ascontiguousarray(item)


def validate_intrinsics(intrinsics: object, n: int) -> np.ndarray:
    """(N, 3, 3) or one (3, 3) K for all views -> (N, 3, 3) float array (float32 kept, everything else float64)."""
    K = np.asarray(intrinsics)
    if K.dtype == object or not (np.issubdtype(K.dtype, np.number)):
        raise TypeError(f"intrinsics: expected a numeric (N, 3, 3) array, got dtype {K.dtype}")
    if K.dtype != np.float32:
        K = K.astype(np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (n, 3, 3))
    if K.ndim != 3 or K.shape[1:] != (3, 3):
        raise ValueError(f"intrinsics: shape {K.shape}, expected (N, 3, 3) pixel intrinsics (one per image) or (3, 3)")
    if K.shape[0] != n:
        raise ValueError(f"intrinsics: {K.shape[0]} matrices for {n} images; pass one (3, 3) K per image")
    if not np.all(np.isfinite(K)):
        raise ValueError("intrinsics: contain NaN or inf; pass finite pixel intrinsics [[fx,0,cx],[0,fy,cy],[0,0,1]]")
    bad = np.nonzero((K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0))[0]
    if bad.size:
        raise ValueError(f"intrinsics: non-positive focal length in view(s) {bad.tolist()} "
                         f"(fx={K[bad[0], 0, 0]}, fy={K[bad[0], 1, 1]}); K must be in pixels with fx, fy > 0")
    if not np.allclose(K[:, 2], [0.0, 0.0, 1.0]):
        raise ValueError("intrinsics: last row must be [0, 0, 1] (a pinhole K in pixels)")
    return np.array(K)  # writable copy


def validate_extrinsics(extrinsics: object, n: int) -> np.ndarray:
    """(N, 4, 4) or (N, 3, 4) world-to-camera -> (N, 4, 4) float64; rejects non-finite / non-rigid rotations."""
    E = np.asarray(extrinsics)
    if E.dtype == object or not np.issubdtype(E.dtype, np.number):
        raise TypeError(f"extrinsics: expected a numeric (N, 4, 4) array, got dtype {E.dtype}")
    E = E.astype(np.float64)
    if E.ndim != 3 or E.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"extrinsics: shape {E.shape}, expected (N, 4, 4) or (N, 3, 4) world-to-camera matrices")
    if E.shape[0] != n:
        raise ValueError(f"extrinsics: {E.shape[0]} matrices for {n} images; pass one world-to-camera pose per image")
    if not np.all(np.isfinite(E)):
        raise ValueError("extrinsics: contain NaN or inf; pass finite world-to-camera matrices")
    if E.shape[1] == 3:
        E = np.concatenate([E, np.broadcast_to(np.array([[[0.0, 0.0, 0.0, 1.0]]]), (n, 1, 4))], axis=1)
    R = E[:, :3, :3]
    ortho = np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = np.nonzero((ortho > 1e-3) | (det < 0))[0]
    if bad.size:
        raise ValueError(f"extrinsics: view(s) {bad.tolist()} do not hold a rotation (R R^T != I or det < 0); pass "
                         "rigid OpenCV world-to-camera matrices [R | t]")
    if not np.allclose(E[:, 3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError("extrinsics: last row of a 4x4 pose must be [0, 0, 0, 1]")
    return E


def validate_process_res(process_res: object, method: str) -> int:
    if isinstance(process_res, bool) or not isinstance(process_res, (int, np.integer)):
        raise TypeError(f"process_res: expected an int (e.g. 504), got {type(process_res).__name__}")
    if process_res < PATCH_SIZE:
        raise ValueError(f"process_res={process_res}: must be at least {PATCH_SIZE} (the patch size); typical 504")
    if method not in PROCESS_RES_METHODS:
        raise ValueError(f"process_res_method={method!r}: choose one of {', '.join(PROCESS_RES_METHODS)}")
    return int(process_res)


# --- geometry of one view ----------------------------------------------------------------------------------------


def _nearest_multiple(x: int, p: int) -> int:
    down = (x // p) * p
    up = down + p
    return up if (up - x) <= (x - down) else down


def _cv2_resize(img: np.ndarray, w: int, h: int, enlarge: bool) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)


def _scale_K(K: np.ndarray | None, old_wh: tuple[int, int], new_wh: tuple[int, int]) -> np.ndarray | None:
    if K is None:
        return None
    K = K.copy()
    K[0] *= new_wh[0] / float(old_wh[0])
    K[1] *= new_wh[1] / float(old_wh[1])
    return K


def _shift_K(K: np.ndarray | None, left: int, top: int) -> np.ndarray | None:
    if K is None:
        return None
    K = K.copy()
    K[0, 2] -= left
    K[1, 2] -= top
    return K


def process_view(img: np.ndarray, K: np.ndarray | None, process_res: int, method: str
                 ) -> tuple[np.ndarray, np.ndarray | None, ViewTransform]:
    """Resize/crop one (H, W, 3) uint8 image and its K (processed pixels out); see the module docstring."""
    h0, w0 = img.shape[:2]
    tf = ViewTransform((h0, w0), (h0, w0))
    bound = max(w0, h0) if method.startswith("upper") else min(w0, h0)
    if bound != process_res:
        s = process_res / float(bound)
        w1, h1 = max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))
        img = _cv2_resize(img, w1, h1, enlarge=s > 1.0)
        K = _scale_K(K, (w0, h0), (w1, h1))
        tf = tf.resized((h0, w0), (h1, w1))
    h1, w1 = img.shape[:2]
    if method.endswith("resize"):
        w2, h2 = max(1, _nearest_multiple(w1, PATCH_SIZE)), max(1, _nearest_multiple(h1, PATCH_SIZE))
        if (w2, h2) != (w1, h1):
            img = _cv2_resize(img, w2, h2, enlarge=(w2 > w1) or (h2 > h1))
            K = _scale_K(K, (w1, h1), (w2, h2))
            tf = tf.resized((h1, w1), (h2, w2))
    else:
        w2, h2 = (w1 // PATCH_SIZE) * PATCH_SIZE, (h1 // PATCH_SIZE) * PATCH_SIZE
        if (w2, h2) != (w1, h1):
            left, top = (w1 - w2) // 2, (h1 - h2) // 2
            img = img[top:top + h2, left:left + w2]
            K = _shift_K(K, left, top)
            tf = tf.cropped(top, left, (h2, w2))
    if img.shape[0] < PATCH_SIZE or img.shape[1] < PATCH_SIZE or img.shape[0] % PATCH_SIZE or img.shape[1] % PATCH_SIZE:
        raise ValueError(f"image of size {w0}x{h0} (WxH) becomes {img.shape[1]}x{img.shape[0]} at process_res="
                         f"{process_res} ({method}): too thin for the {PATCH_SIZE}-pixel patch grid; crop it to a less "
                         "extreme aspect ratio or raise process_res")
    return np.ascontiguousarray(img), K, tf


def normalize_images(images_u8: np.ndarray) -> torch.Tensor:
    """(N, h, w, 3) uint8 -> (N, 3, h, w) float32, ``(u8 / 255 - mean) / std`` in float32 (torchvision order)."""
    t = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (t - mean) / std


def preprocess(
    images: Sequence[ImageLike] | np.ndarray,
    intrinsics: np.ndarray | None = None,
    extrinsics: np.ndarray | None = None,
    process_res: int = 504,
    process_res_method: str = "upper_bound_resize",
) -> Preprocessed:
    """Official-identical preprocessing of N views (see the module docstring).

    Args:
        images: list of (H, W, 3) uint8 RGB arrays, PIL images or paths (or one (N, H, W, 3) uint8 array).
        intrinsics: (N, 3, 3) pixel K of the *input* images, or one (3, 3) for all, or None.
        extrinsics: (N, 4, 4) / (N, 3, 4) OpenCV world-to-camera, or None.
        process_res: target of the bound side (default 504).
        process_res_method: one of :data:`PROCESS_RES_METHODS`.
    Raises:
        TypeError / ValueError / FileNotFoundError with a message naming the problem and the fix.
    """
    items = _as_image_list(images)
    if not items:
        raise ValueError("images: empty list; pass at least one (H, W, 3) uint8 RGB image")
    process_res = validate_process_res(process_res, process_res_method)
    imgs = [load_image(item, i) for i, item in enumerate(items)]
    n = len(imgs)
    Ks = validate_intrinsics(intrinsics, n) if intrinsics is not None else None
    Es = validate_extrinsics(extrinsics, n) if extrinsics is not None else None

    proc, proc_K, tfs = [], [], []
    for i, img in enumerate(imgs):
        p, k, tf = process_view(img, None if Ks is None else Ks[i], process_res, process_res_method)
        proc.append(p)
        proc_K.append(k)
        tfs.append(tf)

    sizes = {p.shape[:2] for p in proc}
    if len(sizes) > 1:  # centre-crop every view to the smallest height and width
        hm, wm = min(s[0] for s in sizes), min(s[1] for s in sizes)
        for i, p in enumerate(proc):
            top, left = (p.shape[0] - hm) // 2, (p.shape[1] - wm) // 2
            proc[i] = np.ascontiguousarray(p[top:top + hm, left:left + wm])
            proc_K[i] = _shift_K(proc_K[i], left, top)
            tfs[i] = tfs[i].cropped(top, left, (hm, wm))

    processed = np.stack(proc)
    x = normalize_images(processed)[None]
    K_t = torch.from_numpy(np.stack(proc_K)).float() if Ks is not None else None
    E_t = torch.from_numpy(Es).float() if Es is not None else None
    return Preprocessed(x=x, intrinsics=K_t, extrinsics=E_t, images=imgs, processed_images=processed, transforms=tfs,
                        input_extrinsics=Es)
