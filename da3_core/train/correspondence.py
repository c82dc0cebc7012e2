"""Cross-view patch correspondences from ground-truth depth and cameras: the targets of the matching loss.

For every patch of view j we take its *centre* (image coordinates ``(c p + (p - 1) / 2, r p + (p - 1) / 2)`` of
patch (r, c), p = patch size), unproject it with the ground-truth depth of the pixel nearest to it (pixel
``(r p + p // 2, c p + p // 2)``: for an even p the centre lies between pixels), and project that surface point into
every other view i of the same sample. The point counts as seen by view i when

- the centre pixel has a valid depth (finite, > 0);
- it lies in front of camera i (z > 0) and projects inside view i's image (image coordinates in
  ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``, the project's integer-pixel convention, ``da3_core.geometry.points``);
- it is not occluded there: view i's own depth at the nearest pixel agrees with the projected z within
  ``occlusion_tol`` (relative), the usual depth test.

:func:`project_patch_centres` returns the continuous image coordinates in view i and that validity;
:func:`bilinear_patch_targets` turns coordinates into a distribution over view i's patches (the four patch centres
around the point, bilinear weights; a point beyond the outermost centres goes to the nearest ones), which is what
:mod:`da3_core.train.matching` supervises. Everything is batched tensor code: it runs on the model's device with no
host round trip, and nothing here needs gradients.

Coordinates: patch (r, c) covers pixels ``u in [c p, c p + p - 1]``, so its centre is at ``u = c p + (p - 1) / 2``
and the continuous patch column of an image coordinate u is ``(u - (p - 1) / 2) / p`` (rows alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from da3_core.geometry.transforms import invert_extrinsics, to_homogeneous

__all__ = [
    "matches_into_view",
    "PatchMatches",
    "intrinsics_inverse",
    "patch_centres",
    "project_patch_centres",
    "project_patch_directions",
    "bilinear_patch_targets",
    "patch_matches",
    "patch_correspondences",
]

DEFAULT_OCCLUSION_TOL = 0.05


@dataclass
class PatchMatches:
    """Where each patch of view j is seen in view i (shapes (B, S_j, N, S_i, ...), N = h * w patches per view).

    Attributes:
        index: (B, S, N, S, 4) long, the four patches of view i around the point (row-major patch indices).
        weight: (B, S, N, S, 4) float, their bilinear weights (sum 1 where ``valid``, 0 elsewhere).
        valid: (B, S, N, S) bool, the point is seen by view i (never for i == j).
    """

    index: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor


def patch_centres(grid_hw: tuple[int, int], patch_size: int, device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h * w, 2) image coordinates (u, v) of each patch's centre, patches in row-major order."""
    h, w = grid_hw
    half = (patch_size - 1) / 2
    rows = torch.arange(h, device=device, dtype=dtype) * patch_size + half
    cols = torch.arange(w, device=device, dtype=dtype) * patch_size + half
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((u.reshape(-1), v.reshape(-1)), -1)


def intrinsics_inverse(K: torch.Tensor) -> torch.Tensor:
    """K^-1 of (..., 3, 3) pinhole intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]] in closed form: no solver
    (``torch.linalg.inv`` checks its result on the host, one device sync per call on a GPU)."""
    fx, fy, s, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1], K[..., 0, 2], K[..., 1, 2]
    inv = torch.zeros_like(K)
    inv[..., 0, 0] = 1 / fx
    inv[..., 0, 1] = -s / (fx * fy)
    inv[..., 0, 2] = (s * cy - cx * fy) / (fx * fy)
    inv[..., 1, 1] = 1 / fy
    inv[..., 1, 2] = -cy / fy
    inv[..., 2, 2] = 1
    return inv


def _centre_rays(w2c: torch.Tensor, K: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, dt: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch centres (N, 2), their rays (B, S, N, 3) with z = 1, each view's intrinsics K (B, S, 3, 3) and the
    relative transforms camera j -> camera i (B, S_j, S_i, 4, 4), all in ``dt``."""
    T, K = to_homogeneous(w2c.to(dt)), K.to(dt)
    centres = patch_centres(grid_hw, patch_size, w2c.device, dt)  # (N, 2)
    pix = torch.cat((centres, torch.ones_like(centres[:, :1])), -1)  # (N, 3) homogeneous image coordinates
    rays = pix @ intrinsics_inverse(K).mT  # (B, S, N, 3), z = 1
    return centres, rays, K, T[:, None] @ invert_extrinsics(T)[:, :, None]


def _into_views(rel: torch.Tensor, K: torch.Tensor, v_j: torch.Tensor, points: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectors (B, S_j, N, 3) of camera j into every camera i: points (rotated and translated) or directions (rotated
    only). Returns their image coordinates (B, S_j, N, S_i, 2), z in camera i and whether z > 0."""
    v_i = torch.einsum("zjixy,zjny->zjnix", rel[..., :3, :3], v_j)  # (B, S_j, N, S_i, 3)
    if points:
        v_i = v_i + rel[:, :, None, :, :3, 3]
    z = v_i[..., 2]
    x = torch.einsum("zixy,zjniy->zjnix", K, v_i)
    front = z > 1e-9
    return x[..., :2] / torch.where(front, z, torch.ones_like(z))[..., None], z, front


def project_patch_centres(depth: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, patch_size: int = 14,
                          occlusion_tol: float = DEFAULT_OCCLUSION_TOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates in every view of every patch centre.

    Args:
        depth: (B, S, H, W) ground-truth z-depth (NaN / inf / <= 0 = unknown), H and W multiples of ``patch_size``.
        w2c: (B, S, 3|4, 4) OpenCV world-to-camera (any common world frame and scale).
        K: (B, S, 3, 3) intrinsics in pixels of the (H, W) image.
        occlusion_tol: relative depth difference above which the point is hidden in view i.

    Returns:
        uv: (B, S_j, N, S_i, 2) image coordinates (u, v) in view i of the centre of patch n of view j.
        valid: (B, S_j, N, S_i) bool (see the module docstring); False on the diagonal i == j.
    """
    B, S, H, W = depth.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch_size}")
    dt = torch.float64 if depth.dtype == torch.float64 else torch.float32
    depth = depth.to(dt)
    centres, rays, K, rel = _centre_rays(w2c, K, (H // patch_size, W // patch_size), patch_size, dt)
    pixels = (centres + 0.5).floor().long()  # the pixel nearest to each centre (the lower-right one on a tie)
    d = depth[:, :, pixels[:, 1], pixels[:, 0]]  # (B, S, N)
    ok = torch.isfinite(d) & (d > 0)
    d = torch.where(ok, d, torch.ones((), dtype=dt, device=d.device))
    uv, z, front = _into_views(rel, K, rays * d[..., None], points=True)  # the surface points, camera j frame
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < H - 0.5)
    # depth test at the nearest pixel of view i
    col = torch.round(uv[..., 0]).clamp(0, W - 1).long()
    row = torch.round(uv[..., 1]).clamp(0, H - 1).long()
    flat = depth.reshape(B, 1, 1, S, H * W).expand(B, S, col.shape[2], S, H * W)
    seen = flat.gather(-1, (row * W + col)[..., None]).squeeze(-1)  # (B, S_j, N, S_i)
    visible = torch.isfinite(seen) & (seen > 0) & ((seen - z).abs() <= occlusion_tol * z.abs())
    not_self = ~torch.eye(S, dtype=torch.bool, device=depth.device)[None, :, None, :]
    valid = ok[..., None] & front & inside & visible & not_self
    return uv, valid


def project_patch_directions(w2c: torch.Tensor, K: torch.Tensor, grid_hw: tuple[int, int],
                             patch_size: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates in every view of the point at infinity on each patch centre's ray: where the patch would go
    under the rotation alone (the infinite homography ``K_i R_ij K_j^-1``), so that ``uv - uv_inf`` of
    :func:`project_patch_centres` is the parallax, the part of the motion that the translation causes.

    Args:
        w2c: (B, S, 3|4, 4) OpenCV world-to-camera; K: (B, S, 3, 3) intrinsics; grid_hw: the (h, w) patch grid.

    Returns:
        uv_inf (B, S_j, N, S_i, 2) and ``ahead`` (B, S_j, N, S_i) bool: the direction points in front of camera i
        (elsewhere uv_inf is meaningless). No depth is needed.
    """
    dt = torch.float64 if w2c.dtype == torch.float64 else torch.float32
    _, rays, K, rel = _centre_rays(w2c, K, grid_hw, patch_size, dt)
    uv_inf, _, ahead = _into_views(rel, K, rays, points=False)
    return uv_inf, ahead


def bilinear_patch_targets(uv: torch.Tensor, valid: torch.Tensor, grid_hw: tuple[int, int],
                           patch_size: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution over an (h, w) patch grid for image coordinates ``uv`` (..., 2).

    Returns ``index`` (..., 4) long row-major patch indices and ``weight`` (..., 4) bilinear weights of the four patch
    centres around each point (clamped to the grid, so a point between the border and the outermost centre goes
    to the outermost ones); weights are 0 where ``valid`` is False. The weighted mean of the four centres is the
    point itself wherever it lies between centres.
    """
    h, w = grid_hw
    half = (patch_size - 1) / 2
    x = ((uv[..., 0] - half) / patch_size).clamp(0, w - 1)
    y = ((uv[..., 1] - half) / patch_size).clamp(0, h - 1)
    x0 = x.floor().clamp(max=max(w - 2, 0))
    y0 = y.floor().clamp(max=max(h - 2, 0))
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    index = torch.stack((y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1), -1)
    weight = torch.stack(((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx), -1)
    weight = torch.where(valid[..., None], weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    return index, weight.float()


def patch_matches(uv: torch.Tensor, valid: torch.Tensor, image_hw: tuple[int, int], patch_size: int) -> PatchMatches:
    """Matching targets from :func:`project_patch_centres`' output (:func:`bilinear_patch_targets`)."""
    H, W = image_hw
    with torch.no_grad():
        index, weight = bilinear_patch_targets(uv, valid, (H // patch_size, W // patch_size), patch_size)
    return PatchMatches(index=index, weight=weight, valid=valid)


def patch_correspondences(depth: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, patch_size: int = 14,
                          occlusion_tol: float = DEFAULT_OCCLUSION_TOL) -> PatchMatches:
    """Matching targets of a batch: :func:`project_patch_centres` then :func:`patch_matches`."""
    with torch.no_grad():
        uv, valid = project_patch_centres(depth, w2c, K, patch_size, occlusion_tol)
    return patch_matches(uv, valid, tuple(depth.shape[-2:]), patch_size)


def matches_into_view(matches: PatchMatches, view: torch.Tensor | None) -> PatchMatches:
    """The targets restricted to one view per sample: where each patch is seen in view ``view[b]`` (the reference
    view the network expresses its cameras and rays in), nothing elsewhere. ``view``: (B,) long in input view order,
    or None for view 0 (the network kept the input order). The reference view's own patches get no target."""
    B, S = matches.valid.shape[:2]
    if view is None:
        view = torch.zeros(B, dtype=torch.long, device=matches.valid.device)
    if view.shape != (B,):
        raise ValueError(f"view must be (B,) = ({B},), got {tuple(view.shape)}")
    keep = torch.arange(S, device=view.device)[None] == view[:, None]  # (B, S_i)
    valid = matches.valid & keep[:, None, None, :]
    weight = torch.where(valid[..., None], matches.weight, torch.zeros((), dtype=matches.weight.dtype,
                                                                       device=matches.weight.device))
    return PatchMatches(index=matches.index, weight=weight, valid=valid)
