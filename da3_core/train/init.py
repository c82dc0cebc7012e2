"""From-scratch initialisation of a DA3 network for training (no pretrained DINOv2 at hand).

- Tokens (``cls_token``, ``camera_token``): truncated normal, std 0.02 (DINOv2's choice).
- ``pos_embed``: a fixed-pattern 2-D sine-cosine embedding (MAE / MoCo v3 start their from-scratch ViTs this way)
  instead of noise. The parameter stays learnable and keeps the official layout; what changes is that every patch
  knows where it is from step 0. Cross-view attention in DA3's global blocks carries no relative position (all
  patches share one RoPE position there), so the network reads camera motion from where matched content sits in
  each view, i.e. from this absolute embedding -- with a random one that has to be learned first, and a from-scratch
  run of under an hour on a CPU did not get there.

The embedding is laid out on the checkpoint's own grid (37 x 37 for 518 px) and resized bicubically, without
antialiasing, to the input's patch grid (``CrossViewViT.position_embedding``). Its frequencies therefore stop at
``max_freq`` radians per cell (periods of >= 15 cells): small inputs (6-8 patches a side, 5x fewer cells) still see
the pattern instead of aliasing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sincos_pos_embed_2d", "init_weights"]


def sincos_pos_embed_2d(grid: int, dim: int, max_freq: float = 0.4, min_freq: float = 0.01) -> torch.Tensor:
    """(grid * grid, dim) embedding: half the channels encode the row, half the column.

    Each half holds ``dim // 4`` sine-cosine pairs with log-spaced angular frequencies from ``max_freq`` down to
    ``min_freq`` (radians per grid cell); cell (i, j) of the row-major grid is ``[sin(i w), cos(i w), sin(j w),
    cos(j w)]`` over the frequencies ``w``. Needs ``dim`` divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine embedding needs a width divisible by 4, got {dim}")
    n = dim // 4
    freqs = torch.exp(torch.linspace(math.log(max_freq), math.log(min_freq), n, dtype=torch.float64))
    pos = torch.arange(grid, dtype=torch.float64)
    ang = pos[:, None] * freqs[None]  # (grid, n)
    axis = torch.cat((ang.sin(), ang.cos()), dim=1)  # (grid, 2n) for one axis
    rows = axis[:, None, :].expand(grid, grid, 2 * n)
    cols = axis[None, :, :].expand(grid, grid, 2 * n)
    return torch.cat((rows, cols), dim=-1).reshape(grid * grid, dim).float()


def init_weights(model: nn.Module, pos_embed: str = "sincos") -> None:
    """Initialise the ViT's parameters that the modules leave at zero (see the module docstring).

    ``pos_embed``: ``"sincos"`` (default) or ``"normal"`` (truncated normal, std 0.02, like the tokens).
    """
    if pos_embed not in ("sincos", "normal"):
        raise ValueError(f"unknown pos_embed init {pos_embed!r}; use 'sincos' or 'normal'")
    vit = model.backbone.pretrained
    for name in ("cls_token", "camera_token") + (("pos_embed",) if pos_embed == "normal" else ()):
        p = getattr(vit, name, None)
        if p is not None:
            nn.init.trunc_normal_(p, std=0.02)
    if pos_embed == "normal":
        return
    pos = vit.pos_embed
    grid = math.isqrt(pos.shape[1] - 1)
    with torch.no_grad():
        pos[0, 0].zero_()  # the class token's slot
        pos[0, 1:] = sincos_pos_embed_2d(grid, pos.shape[-1]).to(pos.dtype)
