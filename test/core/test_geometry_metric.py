"""Metric scaling: hand-computed values and the official apply_metric_scaling."""

from __future__ import annotations

import pytest
import torch

from da3_core.geometry.metric import apply_metric_scaling, metric_scale_factor


def make_K(fx: float, fy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, 252.0], [0.0, fy, 140.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_scale_factor_hand_values():
    K = torch.stack((make_K(300, 300), make_K(600, 300), make_K(450.5, 149.5)))
    torch.testing.assert_close(metric_scale_factor(K), torch.tensor([1.0, 1.5, 1.0], dtype=torch.float64))


def test_apply_per_view():
    K = torch.stack((make_K(300, 300), make_K(600, 600), make_K(150, 150))).reshape(1, 3, 3, 3)
    depth = torch.arange(24, dtype=torch.float64).reshape(1, 3, 2, 4)
    out = apply_metric_scaling(depth, K)
    torch.testing.assert_close(out[0, 0], depth[0, 0])
    torch.testing.assert_close(out[0, 1], depth[0, 1] * 2)
    torch.testing.assert_close(out[0, 2], depth[0, 2] / 2)
    # any leading dims, e.g. a single (H, W) map
    torch.testing.assert_close(apply_metric_scaling(depth[0, 1], K[0, 1]), depth[0, 1] * 2)


def test_matches_official():
    alignment = pytest.importorskip("depth_anything_3.utils.alignment")
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 3, 14, 28, generator=g)
    K = torch.eye(3).repeat(2, 3, 1, 1)
    K[..., 0, 0] = 200 + 400 * torch.rand(2, 3, generator=g)
    K[..., 1, 1] = 200 + 400 * torch.rand(2, 3, generator=g)
    torch.testing.assert_close(apply_metric_scaling(depth, K), alignment.apply_metric_scaling(depth, K), atol=0, rtol=0)
