"""Our network against the live official one (PyPI ``depth-anything-3``), same recipe weights, inputs the golden
data do not cover: 4 and 5 views, a non-square 126 x 182 grid, random cameras, every reference-view strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.api_helpers import official_network, recipe_network

pytestmark = pytest.mark.reference

KEYS = ["depth", "depth_conf", "extrinsics", "intrinsics"]


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(2)
    return recipe_network("da3-small"), official_network("da3-small")


def _random_cameras(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    angles = torch.rand(n, 3, generator=g) * 0.6 - 0.3
    w2c = torch.eye(4).repeat(n, 1, 1)
    for i, (a, b, c) in enumerate(angles):
        rx = torch.tensor([[1, 0, 0], [0, torch.cos(a), -torch.sin(a)], [0, torch.sin(a), torch.cos(a)]])
        ry = torch.tensor([[torch.cos(b), 0, torch.sin(b)], [0, 1, 0], [-torch.sin(b), 0, torch.cos(b)]])
        rz = torch.tensor([[torch.cos(c), -torch.sin(c), 0], [torch.sin(c), torch.cos(c), 0], [0, 0, 1]])
        w2c[i, :3, :3] = rx @ ry @ rz
        w2c[i, :3, 3] = torch.rand(3, generator=g) - 0.5
    k = torch.tensor([[150.0, 0, 91], [0, 140.0, 63], [0, 0, 1]]).repeat(n, 1, 1)
    return w2c[None], k[None]


@pytest.mark.parametrize("views,strategy", [(4, "saddle_balanced"), (5, "saddle_sim_range"), (4, "middle"),
                                            (2, "saddle_balanced")])
@torch.inference_mode()
def test_unposed_windows_match_official(pair, views, strategy):
    ours, official = pair
    x = torch.randn(1, views, 3, 126, 182, generator=torch.Generator().manual_seed(views))
    a = ours(x, ref_view_strategy=strategy)
    b = official(x, None, None, [], False, False, strategy)
    for key in KEYS:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-4, atol=2e-5, err_msg=key)


@torch.inference_mode()
def test_pose_conditioned_window_matches_official(pair):
    ours, official = pair
    x = torch.randn(1, 4, 3, 126, 182, generator=torch.Generator().manual_seed(7))
    w2c, k = _random_cameras(4, seed=3)
    a = ours(x, extrinsics=w2c, intrinsics=k)
    b = official(x, w2c, k, [], False, False, "saddle_balanced")
    for key in KEYS:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-4, atol=2e-5, err_msg=key)
