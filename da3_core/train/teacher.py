"""Monocular teacher (paper §4.1) and its losses (Eq. 4-7).

Model: a plain ViT backbone + DPT decoder predicting *exponential* depth (``depth = exp(x)``, relative,
scale-shift-invariant), a sky mask and an object mask. It reuses the project's :class:`Backbone` and the mono
:class:`DPTHead` (the official DA3-Mono layout, so official mono weights load into ``backbone.*`` / ``head.*``
with only the new object branch ``head.scratch.obj_output_conv2`` missing); the object branch has the sky
branch's form (3x3 conv, ReLU, 1x1 conv, ReLU).

Losses (paper Eq. 7): ``L_T = alpha L_grad + L_gl + L_N + L_sky + L_obj`` with alpha = 0.5:

- ``L_gl`` global-local scale-shift-invariant loss: the prediction is aligned to the ground truth by least squares
  (scale and shift, closed form, differentiable) on the whole image ("global") and, separately, on every crop of a
  ``l x l`` grid for each level ``l`` in ``local_levels`` ("local"); each term is the mean absolute error of the
  aligned prediction divided by the mean ground-truth depth of the region (so the loss is scale free).
  ``L_gl = global + mean(local crops)``. Crops with fewer than ``min_crop_valid`` valid pixels are skipped.
- ``L_grad`` (Eq. 3) on the globally aligned prediction, both sides divided by the mean ground-truth depth.
- ``L_N`` distance-weighted normal loss (Eq. 4-6). Our reading (the summary we design from does not reproduce the
  equations): points are unprojected from the globally aligned predicted depth and from the ground truth with K;
  at each pixel the four neighbour triangles (right, down), (down, left), (left, up), (up, right) give unit normals
  ``n_i = normalize((P_a - P) x (P_b - P))`` (Eq. 4), averaged with weights ``w_i = 1 / (|P_a - P| + |P_b - P|)``
  (distance weighting: triangles spanning a depth discontinuity count little, Eq. 5), ``n = normalize(sum w_i n_i)``;
  the loss is ``mean_p (1 - <n^_p, n_p>)`` over pixels with a valid centre and at least one valid triangle (Eq. 6;
  1 - cos instead of the angle keeps the gradient finite at zero error).
- ``L_sky``, ``L_obj``: mean squared error of the sky / object outputs against {0, 1} masks (all pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from da3_core.config import BackboneConfig, HeadConfig, NetworkConfig, mono_config
from da3_core.geometry.points import depth_to_camera_points
from da3_core.models.backbone import Backbone
from da3_core.models.heads.dpt import DPTHead
from da3_core.models.heads.dpt_blocks import make_output_conv2
from da3_core.train.losses import LossParts, gradient_loss, masked_mean

__all__ = [
    "TeacherHead",
    "TeacherNetwork",
    "teacher_config",
    "tiny_teacher_config",
    "TeacherLossConfig",
    "ssi_align",
    "ssi_loss",
    "global_local_loss",
    "surface_normals",
    "normal_loss",
    "mask_mse",
    "teacher_loss",
]


# --- model ----------------------------------------------------------------------------------------------------------


class TeacherHead(DPTHead):
    """Mono DPT head + an object-mask branch. Outputs ``depth`` (exp), ``sky`` (ReLU), ``object`` (ReLU),
    each (B, S, H, W)."""

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], patch_size: int = 14) -> None:
        super().__init__(dim_in, features, out_channels, 1, patch_size)
        self.scratch.obj_output_conv2 = make_output_conv2(features // 2, 1)

    def _forward_frames(self, frames: list[torch.Tensor], grid: tuple[int, int],
                        image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        sc = self.scratch
        fused = sc.fuse(sc.adapt(self._pyramid(frames, grid, image_hw)))  # (F, F, 8h, 8w)
        neck = self._to_image(sc.output_conv1(fused), grid)  # (F, F/2, H, W)
        return {
            "depth": torch.exp(sc.output_conv2(neck)[:, 0]),
            "sky": torch.relu(sc.sky_output_conv2(neck)[:, 0]),
            "object": torch.relu(sc.obj_output_conv2(neck)[:, 0]),
        }


def teacher_config() -> NetworkConfig:
    """Teacher config: the DA3-Mono layout (``mono_config``: DINOv2 ViT-L + DPT, paper §4.1)."""
    return mono_config(is_metric=False)


def tiny_teacher_config(embed_dim: int = 32, depth: int = 4, num_heads: int = 2, features: int = 16) -> NetworkConfig:
    """A tiny teacher for tests / smoke runs (same structure as the mono model)."""
    base = mono_config(is_metric=False)
    bb = replace(base.backbone, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                 out_layers=tuple(range(depth - 4, depth)) if depth >= 4 else (0,) * (4 - depth) + tuple(range(depth)))
    head = HeadConfig(kind="dpt", dim_in=embed_dim, features=features,
                      out_channels=(features // 2, features, 2 * features, 2 * features), output_dim=1)
    return replace(base, backbone=bb, head=head)


class TeacherNetwork(nn.Module):
    """Monocular teacher (paper §4.1): ``forward(x)`` with x (B, 3, H, W) or (B, S, 3, H, W) ImageNet-normalised,
    H, W multiples of the patch size; returns ``depth`` (relative, > 0), ``sky``, ``object`` with x's leading dims
    and (H, W). No sky post-processing (training outputs)."""

    def __init__(self, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or teacher_config()
        bb: BackboneConfig = cfg.backbone
        if bb.has_camera_token or cfg.head.kind != "dpt" or bb.feature_dim != cfg.head.dim_in:
            raise ValueError("the teacher needs a mono config: alt_start = -1, a 'dpt' head with dim_in = feature_dim")
        self.cfg = cfg
        self.patch_size = bb.patch_size
        self.backbone = Backbone(bb)
        h = cfg.head
        self.head = TeacherHead(h.dim_in, h.features, h.out_channels, self.patch_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        single = x.ndim == 4
        if single:
            x = x[:, None]
        if x.ndim != 5 or x.shape[2] != 3 or x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"teacher input must be (B, [S,] 3, H, W) with H, W multiples of {self.patch_size}, "
                             f"got {tuple(x.shape)}")
        feats = self.backbone(x)
        out = self.head(list(feats.features), x.shape[-2:])
        return {k: v[:, 0] for k, v in out.items()} if single else out


# --- losses ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherLossConfig:
    """Weights of Eq. 7 (alpha = 0.5) and the global-local crop grid."""

    alpha: float = 0.5
    gl_weight: float = 1.0
    normal_weight: float = 1.0
    sky_weight: float = 1.0
    object_weight: float = 1.0
    local_levels: tuple[int, ...] = (2, 4)
    min_crop_valid: int = 16
    eps: float = 1e-6


def ssi_align(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
              eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares scale and shift of ``pred`` onto ``gt`` per map, over the last two dims.

    Args:
        pred, gt, mask: (..., H, W); invalid/non-finite entries are ignored.

    Returns:
        aligned ``s pred + t`` (..., H, W), s (...), t (...). Differentiable in ``pred``.
    """
    valid = mask.bool() & torch.isfinite(pred) & torch.isfinite(gt)
    w = valid.to(pred.dtype)
    p = torch.where(valid, pred, torch.zeros_like(pred))
    g = torch.where(valid, gt, torch.zeros_like(gt))
    n = w.sum((-2, -1)).clamp_min(1)
    mp, mg = p.sum((-2, -1)) / n, g.sum((-2, -1)) / n
    dp = (p - mp[..., None, None]) * w
    var = (dp * dp).sum((-2, -1))
    cov = (dp * (g - mg[..., None, None])).sum((-2, -1))
    s = torch.where(var > eps * eps, cov / var.clamp_min(eps * eps), torch.zeros_like(var))
    t = mg - s * mp
    return s[..., None, None] * pred + t[..., None, None], s, t


def ssi_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, min_valid: int = 2,
             eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-shift-invariant L1 per map: ``mean|s pred + t - gt| / mean(gt)`` over valid pixels.

    Args:
        pred, gt, mask: (..., H, W).
        min_valid: maps with fewer valid pixels get loss 0 and ``used`` False.

    Returns:
        loss (...) per map, used (...) bool.
    """
    valid = mask.bool() & torch.isfinite(pred) & torch.isfinite(gt) & (gt > 0)
    aligned, _, _ = ssi_align(pred, gt, valid, eps)
    n = valid.sum((-2, -1))
    err = torch.where(valid, (aligned - gt).abs(), torch.zeros_like(pred)).sum((-2, -1))
    mean_gt = torch.where(valid, gt, torch.zeros_like(gt)).sum((-2, -1)) / n.clamp_min(1)
    used = n >= min_valid
    loss = torch.where(used, err / n.clamp_min(1) / mean_gt.clamp_min(eps), torch.zeros_like(err))
    return loss, used


def _crops(x: torch.Tensor, level: int) -> torch.Tensor:
    """(N, H, W) -> (N * level^2, H // level, W // level) non-overlapping grid crops (trailing pixels dropped)."""
    N, H, W = x.shape
    h, w = H // level, W // level
    x = x[:, : h * level, : w * level].reshape(N, level, h, level, w)
    return x.permute(0, 1, 3, 2, 4).reshape(N * level * level, h, w)


def global_local_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, levels: Sequence[int] = (2, 4),
                      min_crop_valid: int = 16, eps: float = 1e-6) -> tuple[torch.Tensor, LossParts]:
    """L_gl: SSI loss on the full image plus the mean SSI loss over the local crops (module docstring).

    Args:
        pred, gt, mask: (..., H, W).
    """
    H, W = pred.shape[-2:]
    p, g, m = pred.reshape(-1, H, W), gt.reshape(-1, H, W), mask.reshape(-1, H, W)
    glob, used = ssi_loss(p, g, m, eps=eps)
    glob = masked_mean(glob, used)
    local_sum, local_n = torch.zeros_like(glob), 0
    for lv in levels:
        if H // lv < 2 or W // lv < 2:
            continue
        loss, used = ssi_loss(_crops(p, lv), _crops(g, lv), _crops(m, lv), min_valid=min_crop_valid, eps=eps)
        local_sum = local_sum + torch.where(used, loss, torch.zeros_like(loss)).sum()
        local_n += int(used.sum())
    local = local_sum / max(local_n, 1)
    return glob + local, {"global": glob.detach(), "local": local.detach()}


def surface_normals(points: torch.Tensor, valid: torch.Tensor,
                    eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance-weighted average of the four neighbour-triangle normals (Eq. 4-5, module docstring).

    Args:
        points: (..., H, W, 3) points (camera or world frame).
        valid: (..., H, W) bool.

    Returns:
        normals (..., H, W, 3) unit (0 where invalid), normal_valid (..., H, W) bool (border pixels: only their
        inner triangles count).
    """
    P = torch.where(valid[..., None], points, torch.zeros_like(points))
    pad_p = F.pad(P.movedim(-1, -3), (1, 1, 1, 1)).movedim(-3, -1)  # (..., H+2, W+2, 3)
    pad_v = F.pad(valid.to(torch.uint8), (1, 1, 1, 1)).bool()
    H, W = valid.shape[-2:]

    def shifted(dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (pad_p[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W, :], pad_v[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W])

    right, down, left, up = shifted(0, 1), shifted(1, 0), shifted(0, -1), shifted(-1, 0)
    acc = torch.zeros_like(P)
    count = torch.zeros_like(valid)
    for (pa, va), (pb, vb) in ((right, down), (down, left), (left, up), (up, right)):
        a, b = pa - P, pb - P
        tri_valid = valid & va & vb
        n = torch.cross(a, b, dim=-1)
        norm = n.norm(dim=-1, keepdim=True)
        tri_valid = tri_valid & (norm[..., 0] > eps)
        dist = a.norm(dim=-1) + b.norm(dim=-1)
        wgt = torch.where(tri_valid, 1.0 / dist.clamp_min(eps), torch.zeros_like(dist))
        unit = torch.where(tri_valid[..., None], n / norm.clamp_min(eps), torch.zeros_like(n))
        acc = acc + wgt[..., None] * unit
        count = count | tri_valid
    out_norm = acc.norm(dim=-1, keepdim=True)
    count = count & (out_norm[..., 0] > eps)
    normals = torch.where(count[..., None], acc / out_norm.clamp_min(eps), torch.zeros_like(acc))
    return normals, count


def normal_loss(points: torch.Tensor, points_gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
    """L_N (Eq. 6): ``mean_p (1 - <n^_p, n_p>)`` of the distance-weighted normals of predicted and GT points.

    Args:
        points, points_gt: (..., H, W, 3); mask: (..., H, W) bool (validity of both).
    """
    valid = mask.bool() & torch.isfinite(points).all(-1) & torch.isfinite(points_gt).all(-1)
    n_pred, v_pred = surface_normals(points, valid)
    n_gt, v_gt = surface_normals(points_gt, valid)
    both = v_pred & v_gt
    loss = masked_mean(1.0 - (n_pred * n_gt).sum(-1), both)
    return loss, {"normal": loss.detach()}


def mask_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of a mask output against a {0, 1} (bool or float) target, over ``mask`` or all pixels."""
    m = torch.ones_like(pred, dtype=torch.bool) if mask is None else mask.bool()
    return masked_mean((pred - target.to(pred.dtype)) ** 2, m & torch.isfinite(target.to(pred.dtype)))


def teacher_loss(outputs: Mapping[str, torch.Tensor], depth_gt: torch.Tensor, K: torch.Tensor,
                 sky: torch.Tensor | None = None, objects: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None,
                 cfg: TeacherLossConfig | None = None) -> tuple[torch.Tensor, LossParts]:
    """Eq. 7: ``L_T = alpha L_grad + L_gl + L_N + L_sky + L_obj`` (alpha = 0.5).

    Args:
        outputs: teacher outputs ``depth`` (B, H, W) (or (B, S, H, W)), ``sky``, ``object``.
        depth_gt: same shape, metres or any positive scale; NaN / inf / <= 0 invalid.
        K: (..., 3, 3) intrinsics of the depth map (for the normal loss).
        sky, objects: {0, 1} masks or None (the term is skipped).
        mask: optional extra validity mask for the depth terms.
        cfg: weights (default :class:`TeacherLossConfig`).

    Returns:
        total, parts (``gl``, ``gl/global``, ``gl/local``, ``grad``, ``normal``, ``sky``, ``object``, ``total``).
    """
    cfg = cfg or TeacherLossConfig()
    pred = outputs["depth"]
    valid = torch.isfinite(depth_gt) & (depth_gt > 0)
    if mask is not None:
        valid = valid & mask.bool()
    if sky is not None:
        valid = valid & ~sky.bool()
    gt = torch.where(valid, depth_gt, torch.ones_like(depth_gt))
    parts: LossParts = {}
    l_gl, sub = global_local_loss(pred, gt, valid, cfg.local_levels, cfg.min_crop_valid, cfg.eps)
    aligned, _, _ = ssi_align(pred, gt, valid, cfg.eps)
    n = valid.sum((-2, -1), keepdim=True).clamp_min(1)
    mean_gt = (torch.where(valid, gt, torch.zeros_like(gt)).sum((-2, -1), keepdim=True) / n).clamp_min(cfg.eps)
    l_grad, _ = gradient_loss(aligned / mean_gt, gt / mean_gt, valid)
    l_n, _ = normal_loss(depth_to_camera_points(aligned, K), depth_to_camera_points(gt, K), valid)
    total = cfg.gl_weight * l_gl + cfg.alpha * l_grad + cfg.normal_weight * l_n
    parts.update(gl=l_gl.detach(), grad=l_grad.detach(), normal=l_n.detach())
    parts.update({f"gl/{k}": v for k, v in sub.items()})
    if sky is not None and "sky" in outputs:
        l_sky = mask_mse(outputs["sky"], sky)
        total = total + cfg.sky_weight * l_sky
        parts["sky"] = l_sky.detach()
    if objects is not None and "object" in outputs:
        l_obj = mask_mse(outputs["object"], objects)
        total = total + cfg.object_weight * l_obj
        parts["object"] = l_obj.detach()
    parts["total"] = total.detach()
    return total, parts
