"""Displacement supervision (da3_core.train.displacement): targets against closed-form geometry (a fronto-parallel
plane under translation moves each patch by its plane homography), the choice of view, the loss, the read-out, and
the training step's use of it (a network wrapped with its read-out, the FSDP2 refusal)."""

import pytest
import torch

from da3_core.train.correspondence import patch_centres, project_patch_centres
from da3_core.train.displacement import (
    DisplacementReadout,
    WithDisplacementReadout,
    displacement_loss,
    displacement_targets,
)

P = 14
H, W = 56, 84  # 4 x 6 patches
D = 3.0  # the plane Z = D in the first camera


def _K() -> torch.Tensor:
    from da3_core.data.synthetic import intrinsics_from_fov

    return torch.tensor(intrinsics_from_fov((H, W), 70.0), dtype=torch.float64)


def _homography(c: torch.Tensor, d: float) -> torch.Tensor:
    """Pixels of a camera -> pixels of one displaced by c (same orientation), both seeing a fronto-parallel plane at
    depth d from the first."""
    n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return _K() @ (torch.eye(3, dtype=torch.float64) - torch.outer(c, n) / d) @ torch.linalg.inv(_K())


def _apply(Hm: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    x = torch.cat((uv, torch.ones_like(uv[:, :1])), -1) @ Hm.T
    return x[:, :2] / x[:, 2:]


def _views(centres: list[torch.Tensor]):
    """One sample: cameras at the given centres, all looking down +Z at the plane Z = D."""
    w2c, depth = [], []
    for c in centres:
        T = torch.eye(4, dtype=torch.float64)
        T[:3, 3] = -c
        w2c.append(T)
        depth.append(torch.full((H, W), D - float(c[2]), dtype=torch.float64))
    S = len(centres)
    return torch.stack(depth)[None], torch.stack(w2c)[None], _K().expand(1, S, 3, 3)


def _inside(uv: torch.Tensor) -> torch.Tensor:
    return (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)


def test_targets_follow_the_plane_homography_into_the_preferred_view():
    cams = [torch.zeros(3, dtype=torch.float64), torch.tensor([0.5, 0.0, 0.2], dtype=torch.float64),
            torch.tensor([-0.3, 0.1, -0.4], dtype=torch.float64)]
    depth, w2c, K = _views(cams)
    uv, valid = project_patch_centres(depth, w2c, K, P)
    anchors = patch_centres((H // P, W // P), P, dtype=torch.float64)
    for into in (0, 2):
        target, has = displacement_targets(uv, valid, anchors, P, torch.tensor([into]))
        for j in range(3):
            # where view j's patches land in every other view (closed form), the preferred view first
            others = [into] + [i for i in range(3) if i not in (into, j)] if j != into else \
                [i for i in range(3) if i != j]
            want = torch.zeros(len(anchors), 2, dtype=torch.float64)
            seen = torch.zeros(len(anchors), dtype=torch.bool)
            for i in reversed(others):  # the first view that sees the point wins
                Hm = _homography(cams[i] - cams[j], D - float(cams[j][2]))
                land = _apply(Hm, anchors)
                ok = _inside(land)
                want[ok] = (land[ok] - anchors[ok]) / P
                seen |= ok
            assert 0 < seen.sum() and torch.equal(has[0, j], seen), (into, j)
            torch.testing.assert_close(target[0, j][seen], want[seen], atol=1e-9, rtol=0)
            assert (target[0, j][~seen] == 0).all()  # finite zeros where nothing sees the point


def test_target_is_minus_the_shift_of_a_sideways_step():
    """A sideways step by b metres moves a plane at depth D by -fx b / D pixels, the same for every patch."""
    b = 0.5
    depth, w2c, K = _views([torch.zeros(3, dtype=torch.float64), torch.tensor([b, 0.0, 0.0], dtype=torch.float64)])
    uv, valid = project_patch_centres(depth, w2c, K, P)
    target, has = displacement_targets(uv, valid, patch_centres((H // P, W // P), P, dtype=torch.float64), P)
    shift = float(-_K()[0, 0] * b / D / P)
    assert has[0, 0].sum() < has.shape[-1]  # the rightmost column leaves the image
    torch.testing.assert_close(target[0, 0, has[0, 0], 0], torch.full((int(has[0, 0].sum()),), shift,
                                                                        dtype=torch.float64))
    torch.testing.assert_close(target[0, 1, has[0, 1], 0], torch.full((int(has[0, 1].sum()),), -shift,
                                                                        dtype=torch.float64))
    assert (target[0, :, :, 1][has[0]].abs() < 1e-12).all()


def test_loss_is_the_masked_smooth_l1_and_ignores_unseen_patches():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 5, 2, generator=gen)
    valid = torch.rand(2, 3, 5, generator=gen) > 0.3
    pred = target[:, :, :, None].repeat(1, 1, 1, 2, 1)  # (B, S, N, L=2, 2)
    loss, parts = displacement_loss(pred, target, valid)
    assert loss == 0 and parts["l1"] == 0
    pred = pred.clone()
    pred[~valid] = 1e6  # unseen patches' predictions do not count
    pred[valid] += torch.tensor([0.5, -3.0])
    loss, parts = displacement_loss(pred.requires_grad_(), target, valid)
    # smooth L1 (beta 1): 0.5 * 0.5^2 for x, 3 - 0.5 for y; mean absolute error (0.5 + 3) / 2
    assert loss.item() == pytest.approx(0.125 + 2.5)
    assert parts["l1"].item() == pytest.approx(1.75)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all()


def test_readout_starts_at_zero_and_checks_its_input():
    readout = DisplacementReadout(8, layers=2)
    tokens = torch.randn(2, 3, 5, 2, 8)
    assert torch.equal(readout(tokens), torch.zeros(2, 3, 5, 2, 2))
    with pytest.raises(ValueError, match="L=2"):
        readout(tokens[:, :, :, :1])


def test_wrapped_network_adds_match_disp_and_its_state_dict_keeps_the_network_apart():
    from da3_core.registry import build_network

    torch.manual_seed(0)
    net = build_network("da3-tiny")
    model = WithDisplacementReadout(net, DisplacementReadout(192, 1))
    x = torch.randn(1, 2, 3, 42, 56)
    out = model(x, match_layers=(3,))
    assert out["match_x"].shape == (1, 2, 12, 1, 192) and out["match_disp"].shape == (1, 2, 12, 1, 2)
    assert "match_disp" not in model(x)  # no match layers, no read-out
    assert set(net.state_dict()) == {k[len("net."):] for k in model.state_dict() if k.startswith("net.")}


def test_trainer_refuses_the_readout_with_fsdp(tmp_path):
    from da3_core.train.loop import Trainer, load_config

    cfg = load_config(None, {"variant": "da3-tiny", "disp_weight": 1.0, "fsdp": True, "out_dir": str(tmp_path),
                             "num_workers": 0})
    with pytest.raises(ValueError, match="FSDP2"):
        Trainer(cfg)
