"""From-scratch initialisation: the 2-D sine-cosine position embedding (closed form) and init_weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from da3_core.registry import build_network
from da3_core.train.init import init_weights, sincos_pos_embed_2d


def test_sincos_inner_products_depend_on_displacement_only() -> None:
    grid, dim = 9, 16
    e = sincos_pos_embed_2d(grid, dim, max_freq=0.4, min_freq=0.01).double().reshape(grid, grid, dim)
    w = np.exp(np.linspace(math.log(0.4), math.log(0.01), dim // 4))
    rng = np.random.default_rng(0)
    for _ in range(20):
        (i, j, k, m) = rng.integers(grid, size=4)
        # sin a sin b + cos a cos b = cos(a - b), per frequency and axis
        expect = np.cos(w * (i - k)).sum() + np.cos(w * (j - m)).sum()
        assert float(e[i, j] @ e[k, m]) == pytest.approx(expect, abs=1e-6)
    assert torch.allclose(e[2, 0, : dim // 2], e[2, 7, : dim // 2])  # first half: the row only
    assert torch.allclose(e[0, 3, dim // 2:], e[6, 3, dim // 2:])  # second half: the column only
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(4, 10)


def test_init_weights_sets_tokens_and_position_embedding() -> None:
    torch.manual_seed(0)
    net = build_network("da3-tiny")
    vit = net.backbone.pretrained
    init_weights(net)
    grid = math.isqrt(vit.pos_embed.shape[1] - 1)
    assert torch.equal(vit.pos_embed[0, 0], torch.zeros_like(vit.pos_embed[0, 0]))
    assert torch.allclose(vit.pos_embed[0, 1:], sincos_pos_embed_2d(grid, vit.pos_embed.shape[-1]))
    assert 0.01 < float(vit.camera_token.detach().std()) < 0.03 and 0.005 < float(vit.cls_token.detach().std()) < 0.04
    init_weights(net, "normal")
    assert 0.01 < float(vit.pos_embed.detach().std()) < 0.03
    with pytest.raises(ValueError, match="pos_embed init"):
        init_weights(net, "zeros")
