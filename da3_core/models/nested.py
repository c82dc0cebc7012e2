"""Nested DA3 (any-view giant + metric large): any-view geometry rescaled to metres (official nested model).

1. The any-view network gives depth, confidence, poses and predicted intrinsics.
2. The metric network's focal-normalised depth is turned into metres with the predicted focal (x f / 300), or
   with the known focal when intrinsics alone are given (our extension).
3. One least-squares scale s = <metric, depth> / <depth, depth> over confident (>= median confidence among
   non-sky), non-sky pixels with metric > 0.01 and depth > 0.001 rescales depth and camera translations.
4. Sky pixels get min(99th percentile of non-sky depth, 200 m) and confidence 1.
"""

from __future__ import annotations

import torch
from torch import nn

from da3_core.config import NestedConfig
from da3_core.geometry.metric import apply_metric_scaling
from da3_core.models.da3 import DA3Network
from da3_core.models.sky import fill_sky, non_sky_mask, sample_with_replacement, sample_without_replacement

SKY_DEPTH_CAP_M = 200.0


class NestedDA3Network(nn.Module):
    def __init__(self, cfg: NestedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size = cfg.anyview.backbone.patch_size
        self.da3 = DA3Network(cfg.anyview)
        self.da3_metric = DA3Network(cfg.metric)

    def forward(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                use_ray_pose: bool = False) -> dict[str, torch.Tensor]:
        """As :meth:`DA3Network.forward`. Beyond the official: intrinsics given *without* extrinsics are not used for
        conditioning but as the focal length of the metric scale (the official always uses the predicted focal)."""
        focal_k = intrinsics if extrinsics is None else None
        cond_k = intrinsics if extrinsics is not None else None
        out = self.da3(x, extrinsics, cond_k, ref_view_strategy, use_ray_pose)
        return align_to_metric(out, self.da3_metric(x), focal_k)


def align_to_metric(out: dict[str, torch.Tensor], metric: dict[str, torch.Tensor],
                    focal_k: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Steps 2-4 of the module docstring on the any-view outputs ``out`` and the metric network's ``metric`` (depth,
    sky); ``focal_k`` (B, S, 3, 3) known intrinsics for the metric scale, None for the predicted ones."""
    if focal_k is not None and focal_k.shape != out["intrinsics"].shape:
        raise ValueError(f"intrinsics must be (B, S, 3, 3) = {tuple(out['intrinsics'].shape)}, "
                         f"got {tuple(focal_k.shape)}")
    metric_depth = apply_metric_scaling(metric["depth"], focal_k if focal_k is not None else out["intrinsics"])
    keep = non_sky_mask(metric["sky"])
    if keep.sum() <= 10:
        raise RuntimeError("nested metric alignment: fewer than 10 non-sky pixels in the window")

    median_conf = torch.quantile(sample_without_replacement(out["depth_conf"][keep]), 0.5)
    align = keep & (out["depth_conf"] >= median_conf) & (metric_depth > 1e-2) & (out["depth"] > 1e-3)
    pred, target = out["depth"][align], metric_depth[align]
    scale = torch.dot(target, pred) / torch.dot(pred, pred).clamp_min(1e-12)

    depth = out["depth"] * scale
    w2c = out["extrinsics"].clone()
    w2c[..., :3, 3] = w2c[..., :3, 3] * scale
    far = torch.quantile(sample_with_replacement(depth[keep]), 0.99).clamp(max=SKY_DEPTH_CAP_M)
    depth, conf = fill_sky(depth, keep, far, out["depth_conf"])
    out.update(depth=depth, depth_conf=conf, extrinsics=w2c, sky=metric["sky"],
               scale_factor=scale.detach().reshape(()), is_metric=torch.tensor(True))
    return out
