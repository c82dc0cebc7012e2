"""Patch embedding: non-overlapping p x p patches -> tokens (DINOv2)."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """(N, 3, H, W) image -> (N, H/p * W/p, C) tokens, row-major over the patch grid."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 384) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}; "
                             "resize or crop it first (da3_core.preprocess does this)")
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, h*w, C)
