"""Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(ffn(norm2(x)))."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from da3_core.layers.attention import Attention
from da3_core.layers.layer_scale import LayerScale
from da3_core.layers.mlp import Mlp
from da3_core.layers.rope import RopeTables
from da3_core.layers.swiglu import SwiGLUFFN, swiglu_hidden_features


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, ffn: Literal["mlp", "swiglu"] = "mlp",
                 norm_eps: float = 1e-6, layer_scale_init: float = 1.0, qk_norm: bool = False) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if ffn == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden)
        elif ffn == "swiglu":
            self.mlp = SwiGLUFFN(dim, swiglu_hidden_features(hidden))
        else:
            raise ValueError(f"unknown ffn {ffn!r}; use 'mlp' or 'swiglu'")
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor, rope: RopeTables | None = None,
                keep_qk: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """``keep_qk``: collects the attention's (q, k) (see :meth:`Attention.forward`)."""
        x = x + self.ls1(self.attn(self.norm1(x), rope, keep_qk))
        return x + self.ls2(self.mlp(self.norm2(x)))
