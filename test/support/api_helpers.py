"""Helpers shared by the API / CLI tests: the official network as a live reference behind our network contract."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn


def official_network(variant: str = "da3-small") -> nn.Module:
    """The official ``DepthAnything3Net`` with recipe weights (skips when the official package is not installed)."""
    pytest.importorskip("depth_anything_3")
    pytest.importorskip("addict")
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    from da3_core.weights.recipe import apply_recipe

    return apply_recipe(create_object(load_config(MODEL_REGISTRY[variant]))).eval()


class OfficialNetAdapter(nn.Module):
    """Official network behind our contract: ``forward(x, extrinsics, intrinsics, ref_view_strategy, use_ray_pose)``
    returning a plain dict with the official names."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, extrinsics=None, intrinsics=None, ref_view_strategy="saddle_balanced", use_ray_pose=False):
        out = self.net(x, extrinsics, intrinsics, [], False, use_ray_pose, ref_view_strategy)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def recipe_network(variant: str = "da3-small") -> nn.Module:
    """Our network with the deterministic recipe weights (the golden data were produced with the same weights)."""
    from da3_core.registry import build_network
    from da3_core.weights.recipe import apply_recipe

    return apply_recipe(build_network(variant)).eval()


def official_input_processor():
    """The official ``InputProcessor`` class (its module imports imageio only for an unrelated helper)."""
    pytest.importorskip("depth_anything_3")
    pytest.importorskip("torchvision")
    try:
        import imageio  # noqa: F401
    except ImportError:
        sys.modules.setdefault("imageio", types.ModuleType("imageio"))
    from depth_anything_3.utils.io.input_processor import InputProcessor

    return InputProcessor


def synthetic_images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """n smooth-plus-noise RGB uint8 images of size h x w."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for i in range(n):
        base = np.stack([np.sin(xx / (7 + i) + yy / 13), np.cos(yy / (5 + i)), np.sin((xx + yy) / 17 + i)], -1)
        img = (base * 90 + 128 + rng.normal(0, 8, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
        img[h // 4: h // 2, w // 3: w // 2] = (200, 40 * i % 255, 60)
        out.append(img)
    return out
