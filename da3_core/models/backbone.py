"""DINOv2 ViT with input-adaptive cross-view attention and camera tokens (paper §3.2).

Tokens of all views are kept as (B, S, N, C), N = 1 + h*w (token 0 is the class token, replaced by a camera token
from block ``alt_start`` on). The same transformer blocks attend either within each view ("local": the tokens
rearranged to (B*S, N, C)) or across all views ("global": (B, S*N, C)): blocks before ``alt_start`` are local, then
odd blocks are global and even blocks local. Nothing else in the blocks changes, so plain DINOv2 weights fit.

Details that official checkpoints depend on (see docs/architecture.md and the golden tests):
- the learned 37x37 position embedding is resized bicubically with the DINOv2 "+0.1" scale-factor offset;
- 2-D RoPE from ``rope_start``: local blocks use (row+1, col+1) for patches and (0, 0) for token 0, global blocks
  put every patch at (1, 1), so there is no positional signal across views;
- the reference view is moved first before block ``alt_start - 1`` (>= 3 views, no camera input) and the input
  order is restored on the outputs;
- each tapped layer gives cat([output of the latest local block, x]); the final LayerNorm normalises only the
  second half; token 0 of the tap (un-normalised) is the camera token read by the camera decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from da3_core.config import BackboneConfig
from da3_core.layers import Block, PatchEmbed, RopeTables, rope_tables
from da3_core.models.reference_view import (
    MIN_VIEWS_FOR_SELECTION,
    reference_first_order,
    reorder_views,
    restore_views,
    select_reference_view,
)


@dataclass
class BackboneOutput:
    features: list[torch.Tensor]  # per tapped layer: (B, S, h*w, feature_dim) patch tokens
    camera_tokens: list[torch.Tensor]  # per tapped layer: (B, S, feature_dim), un-normalised token 0
    ref_index: torch.Tensor | None  # (B,) reference view chosen by content, None when the order was kept
    # (B, S, h*w, G, D) patch queries / keys of the supervised heads of the ``match_layers`` (training only)
    match_q: torch.Tensor | None = None
    match_k: torch.Tensor | None = None
    # (B, S, h*w, L, C) patch tokens after each of the ``match_layers`` (training only: the displacement loss)
    match_x: torch.Tensor | None = None


def _grid_positions(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1 + h*w, 2) RoPE positions of one view for local blocks: token 0 at (0, 0), patch (r, c) at (r+1, c+1)."""
    rows = torch.arange(1, h + 1, device=device).repeat_interleave(w)
    cols = torch.arange(1, w + 1, device=device).repeat(h)
    patches = torch.stack((rows, cols), dim=-1)
    return torch.cat((torch.zeros(1, 2, dtype=torch.long, device=device), patches), dim=0)


def _flat_positions(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1 + h*w, 2) RoPE positions for global blocks: token 0 at (0, 0), every patch at (1, 1)."""
    pos = torch.ones(1 + h * w, 2, dtype=torch.long, device=device)
    pos[0] = 0
    return pos


class CrossViewViT(nn.Module):
    """The ViT itself (official key prefix ``backbone.pretrained``)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if cfg.has_camera_token:
            # index 0: reference view, index 1: every other view
            self.camera_token = nn.Parameter(torch.zeros(1, 2, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, c))
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, cfg.mlp_ratio, cfg.ffn, cfg.norm_eps, cfg.layer_scale_init,
                  qk_norm=0 <= cfg.qknorm_start <= i)
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c)  # eps 1e-5, unlike the blocks
        for layer in cfg.out_layers:
            if not 0 <= layer < cfg.depth:
                raise ValueError(f"out layer {layer} outside the {cfg.depth} blocks")

    # --- token preparation ------------------------------------------------------------------------------------
    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, 1 + h*w, C) position embedding for an h x w patch grid."""
        pos = self.pos_embed
        grid = int(math.isqrt(pos.shape[1] - 1))
        if h * w == grid * grid and h == w:
            return pos
        pos = pos.float()
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        patch_pos = F.interpolate(patch_pos, scale_factor=((h + off) / grid, (w + off) / grid), mode="bicubic",
                                  antialias=False)
        if patch_pos.shape[-2:] != (h, w):
            raise RuntimeError(f"position embedding resized to {tuple(patch_pos.shape[-2:])}, expected {(h, w)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def rope(self, h: int, w: int, num_views: int, device: torch.device,
             dtype: torch.dtype) -> tuple[RopeTables, RopeTables]:
        """RoPE tables for local blocks (N entries) and global blocks (S*N entries)."""
        head_dim = self.cfg.embed_dim // self.cfg.num_heads
        local = rope_tables(_grid_positions(h, w, device), head_dim, self.cfg.rope_freq, dtype)
        flat = rope_tables(_flat_positions(h, w, device), head_dim, self.cfg.rope_freq, dtype)
        glob = RopeTables(flat.cos.repeat(num_views, 1), flat.sin.repeat(num_views, 1))
        return local, glob

    # --- forward ------------------------------------------------------------------------------------------------
    def is_global_block(self, index: int) -> bool:
        """Whether block ``index`` attends across views."""
        return self.cfg.has_camera_token and index >= self.cfg.alt_start and index % 2 == 1

    def forward(self, x: torch.Tensor, cam_tokens: torch.Tensor | None = None,
                ref_view_strategy: str = "saddle_balanced", match_layers: tuple[int, ...] = (),
                match_heads: int = 1) -> BackboneOutput:
        """x: (B, S, 3, H, W) normalised images; cam_tokens: (B, S, C) from the camera encoder, or None.

        ``match_layers``: global blocks whose attention queries and keys (first ``match_heads`` heads, patch tokens,
        input view order) are returned as ``match_q`` / ``match_k`` for the matching loss (da3_core.train.matching),
        their output patch tokens as ``match_x`` (da3_core.train.displacement).
        """
        cfg = self.cfg
        for layer in match_layers:
            if not self.is_global_block(layer):
                raise ValueError(f"match layer {layer} is not a global (cross-view) block; global blocks are "
                                 f"{[i for i in range(cfg.depth) if self.is_global_block(i)]}")
        if not 1 <= match_heads <= cfg.num_heads:
            raise ValueError(f"match_heads must be in 1..{cfg.num_heads}, got {match_heads}")
        b, s, _, height, width = x.shape
        h, w = height // cfg.patch_size, width // cfg.patch_size
        c = cfg.embed_dim

        tokens = self.patch_embed(x.reshape(b * s, 3, height, width))  # (B*S, h*w, C)
        tokens = torch.cat((self.cls_token.expand(b * s, 1, c), tokens), dim=1)
        tokens = tokens + self.position_embedding(h, w)
        n = tokens.shape[1]
        x = tokens.reshape(b, s, n, c)
        local_x = x
        rope_local, rope_global = self.rope(h, w, s, x.device, x.dtype) if cfg.rope_start >= 0 else (None, None)

        alt = cfg.has_camera_token
        order: torch.Tensor | None = None
        ref_index: torch.Tensor | None = None
        taps: list[torch.Tensor] = []
        kept_q: list[torch.Tensor] = []
        kept_k: list[torch.Tensor] = []
        kept_x: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            use_rope = 0 <= cfg.rope_start <= i
            if alt and i == cfg.alt_start - 1 and s >= MIN_VIEWS_FOR_SELECTION and cam_tokens is None:
                ref_index = select_reference_view(x[:, :, 0], ref_view_strategy)
                order = reference_first_order(ref_index, s)
                x, local_x = reorder_views(x, order), reorder_views(local_x, order)
            if alt and i == cfg.alt_start:
                x, local_x = self._insert_camera_tokens(x, local_x, cam_tokens)
            if self.is_global_block(i):  # global: attend across all views
                keep: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if i in match_layers else None
                x = block(x.reshape(b, s * n, c), rope_global if use_rope else None, keep).reshape(b, s, n, c)
                if keep:
                    for t, kept in zip(keep[0], (kept_q, kept_k)):
                        t = t[:, :match_heads].unflatten(2, (s, n))[:, :, :, 1:].permute(0, 2, 3, 1, 4)
                        kept.append(restore_views(t, order) if order is not None else t)
                    t = x[:, :, 1:, None]
                    kept_x.append(restore_views(t, order) if order is not None else t)
            else:  # local: attend within each view
                x = block(x.reshape(b * s, n, c), rope_local if use_rope else None).reshape(b, s, n, c)
                local_x = x
            if i in cfg.out_layers:
                tap = torch.cat((local_x, x), dim=-1) if cfg.cat_token else x
                taps.append(restore_views(tap, order) if order is not None else tap)

        taps = [taps[sorted(cfg.out_layers).index(layer)] for layer in cfg.out_layers]
        camera_tokens = [t[:, :, 0] for t in taps]
        features = [self._normalise(t)[:, :, 1:] for t in taps]
        match_q = torch.cat(kept_q, dim=3) if kept_q else None
        match_k = torch.cat(kept_k, dim=3) if kept_k else None
        match_x = torch.cat(kept_x, dim=3) if kept_x else None
        return BackboneOutput(features=features, camera_tokens=camera_tokens, ref_index=ref_index, match_q=match_q,
                              match_k=match_k, match_x=match_x)

    def _insert_camera_tokens(self, x: torch.Tensor, local_x: torch.Tensor,
                              cam_tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace token 0 of every view by its camera token: given ones, or the learned reference/source pair."""
        b, s = x.shape[:2]
        if cam_tokens is None:
            ref = self.camera_token[:, :1].expand(b, 1, -1)
            src = self.camera_token[:, 1:].expand(b, s - 1, -1)
            cam_tokens = torch.cat((ref, src), dim=1)
        new_x = torch.cat((cam_tokens.to(x.dtype)[:, :, None], x[:, :, 1:]), dim=2)
        # the latest local output is the same tensor as x when the previous block was local: keep them together
        return new_x, (new_x if local_x is x else local_x)

    def _normalise(self, tap: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm on x (the second half when taps are cat([local_x, x]))."""
        c = self.cfg.embed_dim
        if not self.cfg.cat_token:
            return self.norm(tap)
        return torch.cat((tap[..., :c], self.norm(tap[..., c:])), dim=-1)


class Backbone(nn.Module):
    """Holds the ViT as ``pretrained``, the key layout of official checkpoints (``backbone.pretrained.*``)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.pretrained = CrossViewViT(cfg)

    def forward(self, x: torch.Tensor, cam_tokens: torch.Tensor | None = None,
                ref_view_strategy: str = "saddle_balanced", match_layers: tuple[int, ...] = (),
                match_heads: int = 1) -> BackboneOutput:
        return self.pretrained(x, cam_tokens, ref_view_strategy, match_layers, match_heads)
