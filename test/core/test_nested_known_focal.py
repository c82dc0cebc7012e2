"""Nested model: known intrinsics alone set the metric focal (beyond the official, which uses the predicted one).

Closed form: metric depth = raw * f / 300 and the alignment scale s = <metric, depth> / <depth, depth> is linear in
the metric depth, so multiplying every view's focal by c multiplies s by exactly c (same masks, same RNG draws).
A tiny nested network (reduced any-view + 4-block ViT-S mono/metric) with recipe weights keeps it fast.
"""

from __future__ import annotations

import pytest
import torch

from da3_core import build_network, get_config
from da3_core.config import BackboneConfig, HeadConfig, NestedConfig, NetworkConfig
from da3_core.weights.recipe import apply_recipe


@pytest.fixture(scope="module")
def tiny_nested() -> torch.nn.Module:
    metric = NetworkConfig(
        backbone=BackboneConfig(depth=4, out_layers=(0, 1, 2, 3), alt_start=-1, qknorm_start=-1, rope_start=-1,
                                cat_token=False),
        head=HeadConfig(kind="dpt", dim_in=384, features=64, out_channels=(48, 96, 192, 384), output_dim=1),
        cam_enc=None, cam_dec=None, is_metric=True)
    cfg = NestedConfig(anyview=get_config("da3-small-reduced"), metric=metric)
    return apply_recipe(build_network(cfg)).eval()


@torch.inference_mode()
def test_known_focal_scales_the_metric_alignment_linearly(tiny_nested):
    x = torch.randn(1, 2, 3, 70, 112, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    pred = tiny_nested(x)
    known = pred["intrinsics"].clone()
    known[..., :2, :] *= 1.7  # focal (and principal point) x 1.7 per view
    torch.manual_seed(0)
    with_k = tiny_nested(x, intrinsics=known)
    ratio = float(with_k["scale_factor"]) / float(pred["scale_factor"])
    assert ratio == pytest.approx(1.7, rel=1e-5)
    torch.testing.assert_close(with_k["depth"], pred["depth"] * 1.7, rtol=1e-4, atol=1e-6)
    assert bool(with_k["is_metric"])


def test_intrinsics_without_extrinsics_are_refused_by_plain_networks():
    net = build_network("da3-small-reduced")
    x = torch.zeros(1, 1, 3, 28, 28)
    with pytest.raises(ValueError, match="both extrinsics and intrinsics"):
        net(x, intrinsics=torch.eye(3).expand(1, 1, 3, 3))
