"""DualDPT: the dense head of the any-view models (depth + confidence, and a ray map + confidence).

Two independent fusion chains share the token pyramid: the main chain ends at the image resolution and predicts
``depth = exp(c0)`` and ``depth_conf = exp(c1) + 1``; the auxiliary chain stays at 8x the patch grid and predicts a
6-channel ray map (direction ``d`` in channels 0-2, origin in 3-5, linear) and ``ray_conf = exp(c6) + 1``.
The UV sin-cos embedding (x0.1) is added after every projection, after the full-resolution upsampling and
on the auxiliary map before its last block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from da3_core.models.heads.dpt_blocks import DPTTrunk, add_uv_embedding, conv1x1, conv3x3, make_output_conv2

RAY_CHANNELS = 6
AUX_LEVELS = 4  # the official head keeps per-level aux weights for 4 levels; only the last one is used
AUX_HIDDEN = 32


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (F, C, h, w) map (a plain LayerNorm on channels-last data)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.permute(0, 2, 3, 1))  # (F, h, w, C)
        return y.permute(0, 3, 1, 2)  # (F, C, h, w)


class AuxOutputBlock(nn.Module):
    """Final aux projection ``conv3x3 -> LayerNorm(channels) -> ReLU -> conv1x1``.

    Sub-modules are named ``0``, ``2`` and ``5`` to match the official state-dict keys
    (``output_conv2_aux.{level}.{0,2,5}``). The LayerNorm is passed in so that all levels can share one.
    """

    def __init__(self, c_in: int, c_out: int, norm: ChannelLayerNorm, hidden: int = AUX_HIDDEN) -> None:
        super().__init__()
        self.add_module("0", conv3x3(c_in, hidden))
        self.add_module("2", norm)
        self.add_module("5", conv1x1(hidden, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, "0")(x)  # (F, hidden, h, w)
        x = torch.relu(getattr(self, "2")(x))
        return getattr(self, "5")(x)  # (F, c_out, h, w)


def make_aux_neck(features: int) -> nn.Sequential:
    """``output_conv1_aux.{level}``: five 3x3 convs F -> F/2 -> F -> F/2 -> F -> F/2, no activations."""
    half = features // 2
    widths = [features, half, features, half, features, half]
    return nn.Sequential(*[conv3x3(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])


class DualDPTHead(DPTTrunk):
    """Any-view dense head.

    Args:
        dim_in: token width of the backbone features (2 x ViT width with ``cat_token``).
        features: fusion width.
        out_channels: widths of the four pyramid levels.
        output_dim: main-branch channels (depth + confidence); must be 2.
        patch_size: ViT patch size.

    ``forward(feats, image_hw, chunk_size=8)``: ``feats`` 4 x (B, S, N, dim_in) patch tokens; returns
    ``depth`` (B,S,H,W), ``depth_conf`` (B,S,H,W), ``ray`` (B,S,8h,8w,6), ``ray_conf`` (B,S,8h,8w).
    """

    channels_last_tokens = True

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], output_dim: int = 2,
                 patch_size: int = 14) -> None:
        super().__init__(dim_in, features, out_channels, patch_size=patch_size, token_norm=True, pos_embed=True)
        if output_dim != 2:
            raise ValueError(f"DualDPTHead predicts depth + confidence (output_dim=2), got {output_dim}")
        half = features // 2
        sc = self.scratch
        sc.output_conv1 = conv3x3(features, half)
        sc.output_conv2 = make_output_conv2(half, output_dim)
        sc.add_fusion_chain(features, suffix="_aux")
        sc.output_conv1_aux = nn.ModuleList([make_aux_neck(features) for _ in range(AUX_LEVELS)])
        shared_norm = ChannelLayerNorm(AUX_HIDDEN)  # one Parameter pair under four keys (official tie)
        sc.output_conv2_aux = nn.ModuleList(
            [AuxOutputBlock(half, RAY_CHANNELS + 1, shared_norm) for _ in range(AUX_LEVELS)])

    def _forward_frames(self, frames: list[torch.Tensor], grid: tuple[int, int],
                        image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        sc = self.scratch
        adapted = sc.adapt(self._pyramid(frames, grid, image_hw))

        # main branch: depth + confidence at the image resolution
        main = sc.output_conv1(sc.fuse(adapted))  # (F, F/2, 8h, 8w)
        main = add_uv_embedding(self._to_image(main, grid), image_hw)  # (F, F/2, H, W)
        logits = sc.output_conv2(main)  # (F, 2, H, W)
        depth = torch.exp(logits[:, 0])  # (F, H, W)
        depth_conf = torch.exp(logits[:, 1]) + 1.0

        # aux branch: ray map at 8x the patch grid. Official also evaluates the necks of levels 0-2 and
        # discards them; they cannot change the result, so only the last level runs here.
        aux = sc.output_conv1_aux[-1](sc.fuse(adapted, suffix="_aux"))  # (F, F/2, 8h, 8w)
        aux = sc.output_conv2_aux[-1](add_uv_embedding(aux, image_hw))  # (F, 7, 8h, 8w)
        aux = aux.permute(0, 2, 3, 1)  # (F, 8h, 8w, 7)
        return {
            "depth": depth,
            "depth_conf": depth_conf,
            "ray": aux[..., :RAY_CHANNELS],  # (F, 8h, 8w, 6)
            "ray_conf": torch.exp(aux[..., RAY_CHANNELS]) + 1.0,  # (F, 8h, 8w)
        }
