"""DPT: the dense head of the monocular / metric models (depth + sky).

One fusion chain, no token LayerNorm and no positional embedding. After ``output_conv1`` the map is resized to
the image resolution and fed to two small heads: ``depth = exp(.)`` and ``sky = relu(.)`` (raw activations; the
sky post-processing lives in the network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from da3_core.models.heads.dpt_blocks import DPTTrunk, conv3x3, make_output_conv2


class DPTHead(DPTTrunk):
    """Mono/metric dense head.

    Args:
        dim_in: token width of the backbone features.
        features: fusion width.
        out_channels: widths of the four pyramid levels.
        output_dim: depth channels; must be 1 (the official mono/metric models have no confidence).
        patch_size: ViT patch size.

    ``forward(feats, image_hw, chunk_size=8)``: ``feats`` 4 x (B, S, N, dim_in); returns ``depth`` and ``sky``,
    both (B, S, H, W).
    """

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], output_dim: int = 1,
                 patch_size: int = 14) -> None:
        super().__init__(dim_in, features, out_channels, patch_size=patch_size, token_norm=False, pos_embed=False)
        if output_dim != 1:
            raise ValueError(f"DPTHead predicts a single depth channel (output_dim=1), got {output_dim}")
        half = features // 2
        self.scratch.output_conv1 = conv3x3(features, half)
        self.scratch.output_conv2 = make_output_conv2(half, output_dim)
        self.scratch.sky_output_conv2 = make_output_conv2(half, 1)

    def _forward_frames(self, frames: list[torch.Tensor], grid: tuple[int, int],
                        image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        sc = self.scratch
        fused = sc.fuse(sc.adapt(self._pyramid(frames, grid, image_hw)))  # (F, F, 8h, 8w)
        neck = self._to_image(sc.output_conv1(fused), grid)  # (F, F/2, H, W)
        depth = torch.exp(sc.output_conv2(neck)[:, 0])  # (F, H, W)
        sky = torch.relu(sc.sky_output_conv2(neck)[:, 0])  # (F, H, W)
        return {"depth": depth, "sky": sky}
