"""Network configuration: one frozen dataclass per sub-module, and presets for every official variant.

Only :func:`da3_core.registry.build_network` turns these into modules; modules take flat keyword
arguments (see ``docs/architecture.md``). Values are the official ones (``configs/*.yaml`` of
ByteDance-Seed/Depth-Anything-3 and the DINOv2 presets they name).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

FfnKind = Literal["mlp", "swiglu"]
HeadKind = Literal["dualdpt", "dpt"]


@dataclass(frozen=True)
class BackboneConfig:
    """DINOv2 ViT with input-adaptive cross-view attention (paper §3.2)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    ffn: FfnKind = "mlp"
    patch_size: int = 14
    img_size: int = 518  # learned pos_embed covers (img_size / patch_size)**2 patches + cls
    out_layers: tuple[int, ...] = (5, 7, 9, 11)
    alt_start: int = 4  # first block with alternating local/global attention; -1 disables
    qknorm_start: int = 4  # first block with LayerNorm on q and k; -1 disables
    rope_start: int = 4  # first block with 2-D RoPE; -1 disables
    rope_freq: float = 100.0
    cat_token: bool = True  # features to the head are cat([local_x, x]) (2C) instead of x (C)
    interpolate_offset: float = 0.1
    layer_scale_init: float = 1.0
    norm_eps: float = 1e-6  # block LayerNorms; the final norm is a plain LayerNorm (eps 1e-5)

    @property
    def feature_dim(self) -> int:
        return 2 * self.embed_dim if self.cat_token else self.embed_dim

    @property
    def has_camera_token(self) -> bool:
        return self.alt_start >= 0


@dataclass(frozen=True)
class HeadConfig:
    """DPT-style dense head: ``dualdpt`` (depth + ray) for any-view models, ``dpt`` (depth + sky) for mono/metric."""

    kind: HeadKind = "dualdpt"
    dim_in: int = 768
    features: int = 64
    out_channels: tuple[int, int, int, int] = (48, 96, 192, 384)
    output_dim: int = 2  # dualdpt: depth + conf; dpt: depth


@dataclass(frozen=True)
class CameraEncoderConfig:
    """Pose (9-d encoding) -> one camera token per view (paper §3.2, E_c)."""

    dim_out: int = 384
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    layer_scale_init: float = 0.01


@dataclass(frozen=True)
class CameraDecoderConfig:
    """Camera token (2C) -> 9-d pose encoding (paper §3.1, D_C)."""

    dim_in: int = 768


@dataclass(frozen=True)
class GaussianHeadConfig:
    """3-D Gaussian head of the giant model. Built so official checkpoints load strictly; not run."""

    dim_in: int = 3072
    features: int = 256
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    output_dim: int = 38
    sh_degree: int = 2


@dataclass(frozen=True)
class NetworkConfig:
    """One DA3 network: backbone + dense head (+ camera encoder/decoder, + Gaussian head)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    cam_enc: CameraEncoderConfig | None = field(default_factory=CameraEncoderConfig)
    cam_dec: CameraDecoderConfig | None = field(default_factory=CameraDecoderConfig)
    gs_head: GaussianHeadConfig | None = None
    is_metric: bool = False  # depth is focal-normalised metric depth (x f/300), see geometry.metric


@dataclass(frozen=True)
class NestedConfig:
    """Any-view network + metric network; depth and poses rescaled to metres (official NestedDepthAnything3Net)."""

    anyview: NetworkConfig
    metric: NetworkConfig


# --- DINOv2 presets: width, depth, heads only -------------------------------------------------------------------

VIT_PRESETS: dict[str, dict] = {
    "vits": dict(embed_dim=384, depth=12, num_heads=6),
    "vitb": dict(embed_dim=768, depth=12, num_heads=12),
    "vitl": dict(embed_dim=1024, depth=24, num_heads=16),
    "vitg": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}


def anyview_config(vit: str, out_layers: tuple[int, ...], alt_start: int, features: int,
                   out_channels: tuple[int, int, int, int], with_gs: bool = False) -> NetworkConfig:
    """Any-view model: ViT with camera token + DualDPT + camera encoder/decoder."""
    backbone = BackboneConfig(**VIT_PRESETS[vit], out_layers=out_layers, alt_start=alt_start,
                              qknorm_start=alt_start, rope_start=alt_start, cat_token=True)
    dim = backbone.embed_dim
    head = HeadConfig(kind="dualdpt", dim_in=2 * dim, features=features, out_channels=out_channels, output_dim=2)
    gs = GaussianHeadConfig(dim_in=2 * dim, features=features, out_channels=out_channels) if with_gs else None
    return NetworkConfig(backbone=backbone, head=head, cam_enc=CameraEncoderConfig(dim_out=dim),
                         cam_dec=CameraDecoderConfig(dim_in=2 * dim), gs_head=gs)


def mono_config(is_metric: bool) -> NetworkConfig:
    """Monocular ViT-L + DPT (+ sky) model; no cross-view attention, no camera modules."""
    backbone = BackboneConfig(**VIT_PRESETS["vitl"], out_layers=(4, 11, 17, 23), alt_start=-1, qknorm_start=-1,
                              rope_start=-1, cat_token=False)
    head = HeadConfig(kind="dpt", dim_in=1024, features=256, out_channels=(256, 512, 1024, 1024), output_dim=1)
    return NetworkConfig(backbone=backbone, head=head, cam_enc=None, cam_dec=None, is_metric=is_metric)


def reduced(cfg: NetworkConfig, depth: int, out_layers: tuple[int, ...], alt_start: int,
            cam_trunk_depth: int | None = None) -> NetworkConfig:
    """A smaller copy of ``cfg`` (fewer blocks), for tests and training experiments."""
    bb = replace(cfg.backbone, depth=depth, out_layers=out_layers, alt_start=alt_start, qknorm_start=alt_start,
                 rope_start=alt_start)
    enc = cfg.cam_enc
    if enc is not None and cam_trunk_depth is not None:
        enc = replace(enc, trunk_depth=cam_trunk_depth)
    return replace(cfg, backbone=bb, cam_enc=enc)
