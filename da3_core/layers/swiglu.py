"""SwiGLU feed-forward network (DINOv2 ViT-g): w3(silu(x W1) * (x W2)), W1 and W2 fused in ``w12``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_features(mlp_hidden: int) -> int:
    """DINOv2's hidden width for a SwiGLU that replaces an MLP of width ``mlp_hidden``: 2/3 of it, rounded up to 8."""
    return (int(mlp_hidden * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)
