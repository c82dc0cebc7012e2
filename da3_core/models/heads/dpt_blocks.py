"""Building blocks shared by the DPT-style dense heads (DualDPT, DPT, Gaussian DPT).

Everything here is written so that the module tree reproduces the official state-dict names
(``projects.*``, ``resize_layers.*``, ``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}[suffix]`` with
``resConfUnit1/2.conv1/2`` and ``out_conv``), while the code itself is independent.

Shapes: ``F`` is the number of frames processed together (``B * S`` or a chunk of it), ``h, w`` the patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# F.interpolate indexes with 32-bit integers on some backends; above this many output elements the batch is split.
_MAX_INTERP_ELEMENTS = 1_610_612_736
UV_EMBED_SCALE = 0.1  # the UV sin-cos embedding is added with this weight
UV_EMBED_BASE = 100.0  # frequency base of the UV sin-cos embedding


# --- positional embedding -------------------------------------------------------------------------------------------


def uv_grid(height: int, width: int, aspect: float, device: torch.device | None = None) -> torch.Tensor:
    """Centred UV coordinates of a ``height x width`` grid, normalised by the image diagonal.

    The grid covers ``[-ax, ax] x [-ay, ay]`` with ``(ax, ay) = (aspect, 1) / sqrt(aspect^2 + 1)`` shrunk by
    ``(n - 1) / n`` along each axis (cell centres). Returns ``(height, width, 2)`` float32, ``[..., 0]`` = u (x).
    """
    diag = math.sqrt(aspect * aspect + 1.0)
    half_u = (aspect / diag) * (width - 1) / width
    half_v = (1.0 / diag) * (height - 1) / height
    u = torch.linspace(-half_u, half_u, steps=width, dtype=torch.float32, device=device)  # (w,)
    v = torch.linspace(-half_v, half_v, steps=height, dtype=torch.float32, device=device)  # (h,)
    return torch.stack((u.expand(height, width), v[:, None].expand(height, width)), dim=-1)  # (h, w, 2)


def sincos_1d(coords: torch.Tensor, dim: int, base: float = UV_EMBED_BASE) -> torch.Tensor:
    """``[sin(c * f_k), cos(c * f_k)]`` with ``f_k = base^(-k / (dim/2))``, ``k < dim/2``: ``(M,) -> (M, dim)``."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even size, got {dim}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=coords.device) / float(half)  # (half,)
    freqs = 1.0 / torch.pow(base, exponent)  # (half,)
    angles = coords.reshape(-1, 1).float() * freqs[None, :]  # (M, half)
    return torch.cat((torch.sin(angles), torch.cos(angles)), dim=1)  # (M, dim)


def uv_embedding(height: int, width: int, channels: int, aspect: float,
                 device: torch.device | None = None) -> torch.Tensor:
    """UV sin-cos embedding of a feature map: u in the first ``channels/2`` channels, v in the rest.

    Returns ``(channels, height, width)`` float32 (unscaled).
    """
    if channels % 4:
        raise ValueError(f"UV embedding needs channels divisible by 4, got {channels}")
    grid = uv_grid(height, width, aspect, device).reshape(-1, 2)  # (h*w, 2)
    emb = torch.cat((sincos_1d(grid[:, 0], channels // 2), sincos_1d(grid[:, 1], channels // 2)), dim=1)  # (h*w, C)
    return emb.t().reshape(channels, height, width)  # (C, h, w)


def add_uv_embedding(x: torch.Tensor, image_hw: tuple[int, int], scale: float = UV_EMBED_SCALE) -> torch.Tensor:
    """``x + scale * uv_embedding`` for a feature map ``x`` (F, C, h, w); the aspect ratio is the image's W / H."""
    _, channels, height, width = x.shape
    aspect = float(image_hw[1]) / float(image_hw[0])
    emb = uv_embedding(height, width, channels, aspect, x.device) * scale  # (C, h, w)
    return x + emb.to(x.dtype)[None]


# --- resampling -----------------------------------------------------------------------------------------------------


def resize_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (F, C, h, w) -> (F, C, *size); splits huge batches."""
    size = (int(size[0]), int(size[1]))
    total = x.shape[0] * x.shape[1] * size[0] * size[1]
    if total <= _MAX_INTERP_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    pieces = x.chunk(total // _MAX_INTERP_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=True) for p in pieces], dim=0)


def conv3x3(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution, stride 1, 'same' padding."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=bias)


def conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    """1x1 convolution with bias."""
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0)


def make_projections(dim_in: int, out_channels: Sequence[int]) -> nn.ModuleList:
    """``projects.{0..3}``: 1x1 convs from the token width to each pyramid level's width."""
    return nn.ModuleList([conv1x1(dim_in, c) for c in out_channels])


def make_resize_layers(out_channels: Sequence[int]) -> nn.ModuleList:
    """``resize_layers.{0..3}``: bring the four levels to 4x, 2x, 1x and 1/2x the patch grid."""
    c0, c1, _, c3 = out_channels
    return nn.ModuleList([
        nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4, padding=0),  # x4
        nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2, padding=0),  # x2
        nn.Identity(),  # x1
        nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),  # /2 (ceil)
    ])


# --- fusion ---------------------------------------------------------------------------------------------------------


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (bias) at constant width."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(features, features)
        self.conv2 = conv3x3(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(x))  # (F, C, h, w); x itself is left untouched
        y = self.conv2(F.relu(y))
        return x + y


class FeatureFusionBlock(nn.Module):
    """One top-down fusion step: ``(top [+ RCU1(lateral)]) -> RCU2 -> bilinear upsample -> 1x1 out_conv``.

    ``with_lateral=False`` (the coarsest level, ``refinenet4``) has no ``resConfUnit1``.
    The upsampled size is ``size`` if given, else twice the input size (align_corners=True).
    """

    def __init__(self, features: int, with_lateral: bool = True) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features) if with_lateral else None
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = conv1x1(features, features)

    def forward(self, top: torch.Tensor, lateral: torch.Tensor | None = None,
                size: Sequence[int] | None = None) -> torch.Tensor:
        y = top  # (F, C, h, w)
        if lateral is not None:
            if self.resConfUnit1 is None:
                raise ValueError("this fusion block was built without a lateral input")
            y = y + self.resConfUnit1(lateral)
        y = self.resConfUnit2(y)
        if size is None:
            size = (2 * y.shape[-2], 2 * y.shape[-1])
        y = resize_bilinear(y, size)  # (F, C, *size)
        return self.out_conv(y)


class DPTScratch(nn.Module):
    """The official ``scratch`` container: level adapters ``layer{1..4}_rn`` plus named fusion chains.

    Heads attach their output convolutions to it as further attributes, so that parameter names are
    ``scratch.output_conv1`` etc.
    """

    def __init__(self, in_channels: Sequence[int], features: int) -> None:
        super().__init__()
        for level, c_in in enumerate(in_channels, start=1):
            self.add_module(f"layer{level}_rn", conv3x3(c_in, features, bias=False))

    def add_fusion_chain(self, features: int, suffix: str = "") -> None:
        """Register ``refinenet1{suffix}`` .. ``refinenet4{suffix}`` (finest first, as in the official order)."""
        for level in (1, 2, 3, 4):
            self.add_module(f"refinenet{level}{suffix}", FeatureFusionBlock(features, with_lateral=level != 4))

    def adapt(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Apply ``layer{i}_rn`` to the four resized levels -> four maps with ``features`` channels."""
        return [getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1)]

    def fuse(self, adapted: Sequence[torch.Tensor], suffix: str = "") -> torch.Tensor:
        """Run one fusion chain coarse-to-fine; returns (F, features, 8h, 8w) (twice the finest level)."""
        l1, l2, l3, l4 = adapted  # (F, C, 4h, 4w), (F, C, 2h, 2w), (F, C, h, w), (F, C, h/2, w/2)
        y = getattr(self, f"refinenet4{suffix}")(l4, size=l3.shape[-2:])  # (F, C, h, w)
        y = getattr(self, f"refinenet3{suffix}")(y, l3, size=l2.shape[-2:])  # (F, C, 2h, 2w)
        y = getattr(self, f"refinenet2{suffix}")(y, l2, size=l1.shape[-2:])  # (F, C, 4h, 4w)
        return getattr(self, f"refinenet1{suffix}")(y, l1)  # (F, C, 8h, 8w)


def make_output_conv2(c_in: int, c_out: int, hidden: int = 32) -> nn.Sequential:
    """``[3x3 conv c_in->hidden, ReLU, 1x1 conv hidden->c_out]`` (keys ``0`` and ``2``)."""
    return nn.Sequential(conv3x3(c_in, hidden), nn.ReLU(inplace=True), conv1x1(hidden, c_out))


# --- shared trunk ---------------------------------------------------------------------------------------------------


class DPTTrunk(nn.Module):
    """Common front of every DPT head: tokens -> 4-level pyramid -> adapters -> main fusion chain.

    Registers, in this order: ``norm`` (only with ``token_norm``), ``projects``, ``resize_layers`` and ``scratch``
    (with ``layer{1..4}_rn`` and ``refinenet{1..4}``). Subclasses implement :meth:`_forward_frames` and may add
    modules to ``scratch``.

    ``forward(feats, image_hw, chunk_size)`` flattens the views, runs :meth:`_forward_frames` on chunks of at most
    ``chunk_size`` frames (``None`` or ``<= 0``: all at once; 8 like the official heads, to bound memory) and
    restores (B, S). Frames are independent, so chunking changes results only by float rounding (CPU convolution
    kernels depend on the batch size; measured <= 1e-5 relative).
    """

    # Memory layout of the token maps fed to the projections. It does not change the maths, but convolution
    # kernels differ between layouts in the last bits; each head keeps the layout of its official counterpart
    # so that results agree bitwise on the same backend.
    channels_last_tokens: bool = False

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], patch_size: int = 14,
                 token_norm: bool = False, pos_embed: bool = False) -> None:
        super().__init__()
        if len(out_channels) != 4:
            raise ValueError(f"DPT heads take exactly 4 pyramid widths, got {tuple(out_channels)}")
        self.dim_in = dim_in
        self.features = features
        self.patch_size = patch_size
        self.pos_embed = pos_embed
        self.norm = nn.LayerNorm(dim_in) if token_norm else None
        self.projects = make_projections(dim_in, out_channels)
        self.resize_layers = make_resize_layers(out_channels)
        self.scratch = DPTScratch(out_channels, features)
        self.scratch.add_fusion_chain(features)

    # -- public ---------------------------------------------------------------------------------------------------
    def forward(self, feats: Sequence[torch.Tensor], image_hw: Sequence[int],
                chunk_size: int | None = 8) -> dict[str, torch.Tensor]:
        """``feats``: 4 tensors (B, S, N, dim_in) of patch tokens (N = h*w, h = H/patch, w = W/patch)."""
        if len(feats) != 4:
            raise ValueError(f"expected 4 feature levels, got {len(feats)}")
        height, width = int(image_hw[0]), int(image_hw[1])
        grid = (height // self.patch_size, width // self.patch_size)
        batch, views, tokens, dim = feats[0].shape
        if tokens != grid[0] * grid[1] or dim != self.dim_in:
            raise ValueError(f"features {tuple(feats[0].shape)} do not match image {height}x{width} "
                             f"(patch {self.patch_size}: {grid[0]}x{grid[1]} tokens) and dim_in {self.dim_in}")
        frames = [f.reshape(batch * views, tokens, dim) for f in feats]  # 4 x (B*S, N, C)
        total = batch * views
        if chunk_size is None or chunk_size <= 0 or chunk_size >= total:
            out = self._forward_frames(frames, grid, (height, width))
        else:
            parts = [self._forward_frames([f[s:s + chunk_size] for f in frames], grid, (height, width))
                     for s in range(0, total, chunk_size)]
            out = {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}
        return {k: v.reshape(batch, views, *v.shape[1:]) for k, v in out.items()}

    # -- helpers for subclasses -----------------------------------------------------------------------------------
    def _forward_frames(self, frames: list[torch.Tensor], grid: tuple[int, int],
                        image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _pyramid(self, frames: Sequence[torch.Tensor], grid: tuple[int, int],
                 image_hw: tuple[int, int]) -> list[torch.Tensor]:
        """Tokens (F, N, C) x 4 -> [(F, c0, 4h, 4w), (F, c1, 2h, 2w), (F, c2, h, w), (F, c3, h/2, w/2)]."""
        h, w = grid
        weight_dtype = self.projects[0].weight.dtype
        levels = []
        for tokens, project, resize in zip(frames, self.projects, self.resize_layers, strict=True):
            x = tokens.to(weight_dtype)
            if self.norm is not None:
                x = self.norm(x)  # (F, N, C)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)  # (F, C, h, w), a channels-last view
            if not self.channels_last_tokens:
                x = x.contiguous()
            x = project(x)  # (F, c_i, h, w)
            if self.pos_embed:
                x = add_uv_embedding(x, image_hw)
            levels.append(resize(x))
        return levels

    def _to_image(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Bilinear (align_corners) resize of (F, C, 8h, 8w) to the processed image size (patch * grid)."""
        return resize_bilinear(x, (grid[0] * self.patch_size, grid[1] * self.patch_size))
