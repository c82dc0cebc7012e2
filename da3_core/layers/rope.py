"""2-D rotary position embedding (RoPE) for patch tokens.

The head dimension D is split in two halves: the first half is rotated by the token's row position, the second by
its column position. Within a half of size D/2, feature i is paired with feature i + D/4 and the pair is rotated
by ``pos * freq**(-2k/(D/2))`` (k = i mod D/4), as in the official DA3 / VGGT RoPE. Tables are built once per
forward for a grid and shared by every block, head and view.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RopeTables(NamedTuple):
    """Per-token cosine and sine, (N, D): multiply into (B, heads, N, D) queries and keys."""

    cos: torch.Tensor
    sin: torch.Tensor


def _axis_angles(positions: torch.Tensor, half_dim: int, freq: float) -> torch.Tensor:
    """(N,) integer positions -> (N, half_dim) angles, the two quarter-halves sharing the same frequencies."""
    inv_freq = 1.0 / (freq ** (torch.arange(0, half_dim, 2, device=positions.device).float() / half_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (N, half_dim / 2)
    return torch.cat((angles, angles), dim=-1)


def rope_tables(positions: torch.Tensor, head_dim: int, freq: float = 100.0,
                dtype: torch.dtype = torch.float32) -> RopeTables:
    """Tables for (N, 2) (row, col) integer positions and a head dimension divisible by 4."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    rows = _axis_angles(positions[:, 0], half, freq).to(dtype)
    cols = _axis_angles(positions[:, 1], half, freq).to(dtype)
    return RopeTables(cos=torch.cat((rows.cos(), cols.cos()), dim=-1), sin=torch.cat((rows.sin(), cols.sin()), dim=-1))


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> per half [a, b] -> [-b, a] (a, b of size D/4)."""
    q = x.unflatten(-1, (2, 2, x.shape[-1] // 4))  # (..., half, quarter, D/4)
    return torch.stack((-q[..., 1, :], q[..., 0, :]), dim=-2).flatten(-3)


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate (B, heads, N, D) queries or keys by the (N, D) tables."""
    return x * tables.cos + _rotate_pairs(x) * tables.sin
