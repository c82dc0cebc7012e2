"""Training targets for the any-view student: normalised depth, point maps, ray maps and camera encodings.

Paper §3.3: "all ground-truth signals are normalised by a common scale: the mean l2 norm of valid reprojected
point maps P". We build every target from the same three ground-truth inputs -- z-depth D (B, S, H, W), OpenCV
world-to-camera extrinsics ``w2c`` (B, S, 3|4, 4) and pixel intrinsics K (B, S, 3, 3) -- so they are consistent by
construction:

- the world frame is first re-expressed in camera 0 of each sample (``relative_to_first=True``, the same frame the
  official API uses for its input poses, facts §2.6); this is what makes the target gauge-free;
- ``points`` = world points of every valid depth pixel (``da3_core.geometry.points.depth_to_points``, integer-pixel
  convention), divided by ``scale`` = mean ||P|| over the valid pixels of all views of the sample;
- ``depth`` and the camera translations are divided by the same ``scale`` (rotations and focal lengths are scale
  free), so ``points == origin + depth * direction`` still holds after normalisation (paper §3.1, P = t + D d);
- ``ray`` is the official ray map (facts §2.2: ch0-2 direction ``d = R_c2w K^-1 p`` with camera-frame z = 1, ch3-5
  the camera centre) at the network's ray resolution (8x the patch grid by default);
- ``pose_enc`` is the 9-d camera encoding ``[t_c2w, q_c2w xyzw, fov_h, fov_w]`` (facts §2.4).

Ray maps live on ray-map cell centres, depth maps on integer pixels (see ``da3_core.geometry.ray_solver``). For a
pinhole camera the ray map is an *affine* function of the image coordinate, so :func:`resample_rays` (bilinear with
linear extrapolation at the border) moves a ray map onto the depth pixels exactly; :func:`points_from_depth_and_rays`
then gives ``P = t + D * d`` at depth resolution. The point loss uses the same function on the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from da3_core.geometry.points import depth_to_points
from da3_core.geometry.pose_encoding import cameras_to_encoding
from da3_core.geometry.ray_solver import cameras_to_rays
from da3_core.geometry.transforms import compose, invert_extrinsics, to_homogeneous

if TYPE_CHECKING:
    from da3_core.train.correspondence import PatchMatches

__all__ = [
    "Targets",
    "build_targets",
    "valid_depth_mask",
    "point_map_scale",
    "poses_relative_to_first",
    "ray_resolution",
    "resample_rays",
    "points_from_depth_and_rays",
]

MIN_SCALE = 1e-6
"""Lower clamp of the normalisation scale (a sample without valid pixels gets scale 1 instead)."""


@dataclass
class Targets:
    """Normalised ground truth of one batch (every tensor has leading dims (B, S) unless noted).

    Attributes:
        depth: (B, S, H, W) z-depth / scale; invalid pixels are 0 (use ``valid``).
        valid: (B, S, H, W) bool, finite positive depth inside the caller's mask.
        points: (B, S, H, W, 3) world points (camera-0 frame) / scale; invalid pixels are 0.
        ray: (B, S, h, w, 6) ray map (direction, origin / scale) at the ray resolution.
        ray_valid: (B, S, h, w) bool, cells of views whose camera is known (all True by default).
        pose_enc: (B, S, 9) ``[t_c2w / scale, q_c2w xyzw, fov_h, fov_w]``.
        w2c: (B, S, 4, 4) normalised world-to-camera (camera-0 frame, translation / scale).
        K: (B, S, 3, 3) pixel intrinsics (unchanged).
        scale: (B,) the normalisation scale that was divided out (metres per target unit).
        image_hw: (H, W).
        matches: cross-view patch correspondences for the matching loss (set by the training step when it is on;
            :func:`da3_core.train.correspondence.patch_correspondences`), else None.
        displacement: (target (B, S, N, 2), valid (B, S, N)) patch motions into the reference view for the
            displacement loss (:func:`da3_core.train.displacement.displacement_targets`), else None.
    """

    depth: torch.Tensor
    valid: torch.Tensor
    points: torch.Tensor
    ray: torch.Tensor
    ray_valid: torch.Tensor
    pose_enc: torch.Tensor
    w2c: torch.Tensor
    K: torch.Tensor
    scale: torch.Tensor
    image_hw: tuple[int, int]
    matches: PatchMatches | None = None
    displacement: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> Targets:
        """Copy with every tensor moved to ``device``."""
        return Targets(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                          for f in fields(self)})


def ray_resolution(image_hw: tuple[int, int], patch_size: int = 14, factor: int = 8) -> tuple[int, int]:
    """Ray-map size of the DualDPT aux head: ``factor`` x the patch grid (facts §2.2), e.g. 280x504 -> 160x288."""
    H, W = image_hw
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch_size}")
    return factor * (H // patch_size), factor * (W // patch_size)


def valid_depth_mask(depth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Finite, strictly positive depth (inside ``mask`` when given); same shape as ``depth``, bool."""
    valid = torch.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid = valid & mask.bool()
    return valid


def point_map_scale(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean l2 norm of the valid points of each sample (paper §3.3).

    Args:
        points: (B, ..., 3) points (any finite values where ``valid`` is False are ignored; NaN is allowed there).
        valid: (B, ...) bool.

    Returns:
        (B,) scale, clamped to >= ``MIN_SCALE``; 1 for a sample without valid points.
    """
    norms = torch.where(valid, torch.nan_to_num(points).norm(dim=-1), torch.zeros((), dtype=points.dtype,
                                                                                     device=points.device))
    count = valid.flatten(1).sum(1)
    mean = norms.flatten(1).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, mean.clamp_min(MIN_SCALE), torch.ones_like(mean))


def poses_relative_to_first(w2c: torch.Tensor) -> torch.Tensor:
    """Re-express (B, S, 3|4, 4) w2c in the frame of camera 0: ``w2c_i @ inv(w2c_0)``; returns (B, S, 4, 4)."""
    T = to_homogeneous(w2c)
    return compose(T, invert_extrinsics(T[:, :1]).expand_as(T))


def resample_rays(ray: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Ray map (..., h, w, C) on cell centres -> (..., H, W, C) on the integer pixels of the (H, W) image.

    Cell (i, j) sits at image coordinate ``((j + 0.5) W / w, (i + 0.5) H / h)`` and depth pixel (v, u) at ``(u, v)``
    (see ``da3_core.geometry.ray_solver`` / ``points``). The map is padded by one cell of linear extrapolation on each
    side and sampled bilinearly, so an affine ray field (every pinhole ray map) is reproduced exactly, including the
    border pixels that fall outside the outermost cell centres. Differentiable in ``ray``. Needs h, w >= 2.
    """
    *lead, h, w, C = ray.shape
    H, W = image_hw
    if h < 2 or w < 2:
        raise ValueError(f"resample_rays needs a ray map of at least 2x2 cells, got {h}x{w}")
    x = ray.reshape(-1, h, w, C).permute(0, 3, 1, 2)  # (N, C, h, w)
    x = torch.cat((2 * x[..., :1] - x[..., 1:2], x, 2 * x[..., -1:] - x[..., -2:-1]), -1)
    x = torch.cat((2 * x[..., :1, :] - x[..., 1:2, :], x, 2 * x[..., -1:, :] - x[..., -2:-1, :]), -2)
    # padded cell index of pixel u: j + 1 = u w / W + 0.5; align_corners=True maps index k to 2k / (n - 1) - 1
    u = torch.arange(W, dtype=ray.dtype, device=ray.device) * (w / W) + 0.5
    v = torch.arange(H, dtype=ray.dtype, device=ray.device) * (h / H) + 0.5
    gx = 2 * u / (w + 1) - 1
    gy = 2 * v / (h + 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)  # (H, W, 2) as (x, y)
    out = F.grid_sample(x, grid.expand(x.shape[0], H, W, 2), mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(*lead, H, W, C)


def points_from_depth_and_rays(depth: torch.Tensor, ray: torch.Tensor) -> torch.Tensor:
    """World points ``P = t + D * d`` (paper §3.1) at depth resolution.

    Args:
        depth: (..., H, W) z-depth.
        ray: (..., h, w, 6) ray map (direction, origin); resampled to (H, W) with :func:`resample_rays` when needed.

    Returns:
        (..., H, W, 3).
    """
    H, W = depth.shape[-2:]
    if ray.shape[-3:-1] != (H, W):
        ray = resample_rays(ray, (H, W))
    return ray[..., 3:6] + depth[..., None] * ray[..., 0:3]


def build_targets(depth: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None = None,
                  ray_hw: tuple[int, int] | None = None, patch_size: int = 14, relative_to_first: bool = True,
                  normalise: bool = True, pose_valid: torch.Tensor | None = None) -> Targets:
    """All student targets of a batch (paper §3.1 and §3.3).

    Args:
        depth: (B, S, H, W) ground-truth z-depth in metres; NaN / inf / <= 0 are invalid (sky, holes).
        w2c: (B, S, 3|4, 4) OpenCV world-to-camera.
        K: (B, S, 3, 3) intrinsics in pixels of the (H, W) image.
        mask: optional (B, S, H, W) bool of pixels to supervise (ANDed with valid depth).
        ray_hw: ray-map size; default ``8 x`` the patch grid (the DualDPT aux head's resolution).
        patch_size: ViT patch size (for the default ``ray_hw``).
        relative_to_first: express the world in camera 0's frame (recommended: removes the gauge freedom).
        normalise: divide by the mean point norm (paper §3.3); False keeps metres (scale = 1).
        pose_valid: optional (B, S) bool, views whose camera is known; other views get ``ray_valid`` False.

    Returns:
        :class:`Targets`. Targets are computed in float64 when the input is float64, else float32.
    """
    if depth.ndim != 4 or w2c.shape[:2] != depth.shape[:2] or K.shape != (*depth.shape[:2], 3, 3):
        raise ValueError(f"expected depth (B, S, H, W), w2c (B, S, 3|4, 4), K (B, S, 3, 3); got "
                         f"{tuple(depth.shape)}, {tuple(w2c.shape)}, {tuple(K.shape)}")
    dtype = torch.float64 if depth.dtype == torch.float64 else torch.float32
    depth, w2c, K = depth.to(dtype), to_homogeneous(w2c.to(dtype)), K.to(dtype)
    H, W = depth.shape[-2:]
    ray_hw = ray_hw or ray_resolution((H, W), patch_size)
    if relative_to_first:
        w2c = poses_relative_to_first(w2c)
    valid = valid_depth_mask(depth, mask)
    clean = torch.where(valid, depth, torch.zeros((), dtype=dtype, device=depth.device))
    points = depth_to_points(clean, w2c, K)
    scale = point_map_scale(points, valid) if normalise else torch.ones(depth.shape[0], dtype=dtype,
                                                                         device=depth.device)
    s4 = scale[:, None, None, None]
    points = torch.where(valid[..., None], points / s4[..., None], torch.zeros((), dtype=dtype, device=depth.device))
    w2c = w2c.clone()
    w2c[..., :3, 3] = w2c[..., :3, 3] / scale[:, None, None]
    ray = cameras_to_rays(w2c, K, (H, W), ray_hw)
    ray_valid = torch.ones(*ray.shape[:-1], dtype=torch.bool, device=ray.device)
    if pose_valid is not None:
        ray_valid = ray_valid & pose_valid.bool()[..., None, None]
    return Targets(depth=clean / s4, valid=valid, points=points, ray=ray, ray_valid=ray_valid,
                   pose_enc=cameras_to_encoding(w2c, K, (H, W)), w2c=w2c, K=K, scale=scale, image_hw=(H, W))
