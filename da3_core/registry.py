"""Variant registry: official names -> configs -> modules.

``build_network("da3-large")`` is the only place a config becomes an ``nn.Module``. Checkpoint names of the
official model pages (``DA3-LARGE-1.1``, ``depth-anything/DA3NESTED-GIANT-LARGE``) resolve to the same configs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from da3_core.config import NestedConfig, NetworkConfig, anyview_config, mono_config, reduced

AnyConfig = NetworkConfig | NestedConfig

_VARIANTS: dict[str, Callable[[], AnyConfig]] = {}
_HIDDEN: set[str] = set()


def register_variant(name: str, hidden: bool = False) -> Callable[[Callable[[], AnyConfig]], Callable[[], AnyConfig]]:
    """Decorator: record a config factory under ``name``. Hidden variants build but are not listed."""

    def wrap(fn: Callable[[], AnyConfig]) -> Callable[[], AnyConfig]:
        if name in _VARIANTS:
            raise ValueError(f"variant {name!r} registered twice")
        _VARIANTS[name] = fn
        if hidden:
            _HIDDEN.add(name)
        return fn

    return wrap


def canonical_variant(name: str) -> str:
    """Map an official checkpoint name to its registered variant: ``depth-anything/DA3-LARGE-1.1`` -> ``da3-large``."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    if key.endswith("-1.1"):
        key = key[: -len("-1.1")]
    if key not in _VARIANTS:
        raise KeyError(f"unknown DA3 variant {name!r}; known variants: {', '.join(list_variants())}")
    return key


def list_variants() -> list[str]:
    """Names of the official variants, sorted."""
    return sorted(n for n in _VARIANTS if n not in _HIDDEN)


def get_config(name: str) -> AnyConfig:
    return _VARIANTS[canonical_variant(name)]()


def build_network(variant: str | AnyConfig) -> nn.Module:
    """Build a network from a variant name or a config. Weights are random (see ``DA3.from_pretrained``)."""
    from da3_core.models.da3 import DA3Network
    from da3_core.models.nested import NestedDA3Network

    cfg = get_config(variant) if isinstance(variant, str) else variant
    if isinstance(cfg, NestedConfig):
        return NestedDA3Network(cfg)
    if isinstance(cfg, NetworkConfig):
        return DA3Network(cfg)
    raise TypeError(f"build_network takes a variant name or a config, not {type(variant).__name__}")


# --- official variants (configs/*.yaml of the official repository) -----------------------------------------------


@register_variant("da3-small")
def _da3_small() -> NetworkConfig:
    return anyview_config("vits", (5, 7, 9, 11), alt_start=4, features=64, out_channels=(48, 96, 192, 384))


@register_variant("da3-base")
def _da3_base() -> NetworkConfig:
    return anyview_config("vitb", (5, 7, 9, 11), alt_start=4, features=128, out_channels=(96, 192, 384, 768))


@register_variant("da3-large")
def _da3_large() -> NetworkConfig:
    return anyview_config("vitl", (11, 15, 19, 23), alt_start=8, features=256, out_channels=(256, 512, 1024, 1024))


@register_variant("da3-giant")
def _da3_giant() -> NetworkConfig:
    return anyview_config("vitg", (19, 27, 33, 39), alt_start=13, features=256, out_channels=(256, 512, 1024, 1024),
                          with_gs=True)


@register_variant("da3metric-large")
def _da3_metric_large() -> NetworkConfig:
    return mono_config(is_metric=True)


@register_variant("da3mono-large")
def _da3_mono_large() -> NetworkConfig:
    return mono_config(is_metric=False)


@register_variant("da3nested-giant-large")
def _da3_nested() -> NestedConfig:
    return NestedConfig(anyview=_da3_giant(), metric=_da3_metric_large())


@register_variant("da3-small-reduced", hidden=True)
def _da3_small_reduced() -> NetworkConfig:
    """6-block da3-small with a 1-block camera encoder: the golden test model (golden/README.md §2)."""
    return reduced(_da3_small(), depth=6, out_layers=(2, 3, 4, 5), alt_start=2, cam_trunk_depth=1)


@register_variant("da3-tiny", hidden=True)
def _da3_tiny() -> NetworkConfig:
    """6-block, 192-wide any-view model (3 heads of 64, DualDPT features 32, 1-block camera encoder): the embedded
    default, trained on CPU on synthetic scenes (``da3_core/assets/default/TRAINING.md``)."""
    cfg = anyview_config("vits", (2, 3, 4, 5), alt_start=2, features=32, out_channels=(24, 48, 96, 192))
    bb = replace(cfg.backbone, embed_dim=192, num_heads=3, depth=6)
    return replace(cfg, backbone=bb, head=replace(cfg.head, dim_in=2 * 192),
                   cam_enc=replace(cfg.cam_enc, dim_out=192, trunk_depth=1, num_heads=4),
                   cam_dec=replace(cfg.cam_dec, dim_in=2 * 192))
