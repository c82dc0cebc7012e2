"""Multi-head self-attention with optional QK-norm and 2-D RoPE (DA3 backbone and camera encoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from da3_core.layers.rope import RopeTables, apply_rope


class Attention(nn.Module):
    """Self-attention over (B, N, C) tokens; scaled-dot-product kernel from torch.

    ``qk_norm`` adds a LayerNorm (eps 1e-5) over the head dimension of queries and keys; ``rope`` tables, when
    given to ``forward``, rotate queries and keys after the norm.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False,
                 qk_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor, rope: RopeTables | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys (after QK-norm and RoPE) and values of (B, N, C) tokens, each (B, heads, N, D)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: RopeTables | None = None,
                keep_qk: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """``keep_qk``: when a list is given, the (q, k) pair of this call is appended to it (matching loss)."""
        b, n, c = x.shape
        q, k, v = self.qkv_heads(x, rope)
        if keep_qk is not None:
            keep_qk.append((q, k))
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))
