"""Displacement supervision (da3_core.train.displacement): targets against closed-form geometry (a fronto-parallel
plane under translation moves each patch by its plane homography), the choice of view, the loss, the read-out, and
the training step's use of it (a network wrapped with its read-out, the FSDP2 refusal)."""

import pytest
import torch

from da3_core.train.correspondence import patch_centres, project_patch_centres, project_patch_directions
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


def _turned(yaw_deg: float, centre: torch.Tensor) -> torch.Tensor:
    """w2c of a camera at ``centre`` turned by ``yaw_deg`` about its y axis (OpenCV: x right, y down, z ahead)."""
    a = torch.deg2rad(torch.tensor(yaw_deg, dtype=torch.float64))
    R = torch.tensor([[torch.cos(a), 0.0, -torch.sin(a)], [0.0, 1.0, 0.0], [torch.sin(a), 0.0, torch.cos(a)]],
                     dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def _parallax_targets(depth, w2c, K, into: int = 0):
    uv, valid = project_patch_centres(depth, w2c, K, P)
    anchors = patch_centres((H // P, W // P), P, dtype=torch.float64)
    at_inf = project_patch_directions(w2c, K, (H // P, W // P), P)
    return displacement_targets(uv, valid, anchors, P, torch.tensor([into]), at_inf), anchors


def test_parallax_of_a_pure_rotation_is_zero_at_any_depth():
    """Turning on the spot moves every pixel by K R K^-1, whatever its depth: all of the motion is rotation."""
    gen = torch.Generator().manual_seed(3)
    depth = 1.0 + 4.0 * torch.rand(1, 2, H, W, generator=gen, dtype=torch.float64)  # any depth
    w2c = torch.stack([torch.eye(4, dtype=torch.float64), _turned(8.0, torch.zeros(3, dtype=torch.float64))])[None]
    K = _K().expand(1, 2, 3, 3)
    (target, has), anchors = _parallax_targets(depth, w2c, K)
    assert target.shape == (1, 2, len(anchors), 4) and has[0, 1].sum() > 0
    Hinf = _K() @ w2c[0, 0, :3, :3] @ w2c[0, 1, :3, :3].T @ torch.linalg.inv(_K())  # view 1 -> view 0
    want = (_apply(Hinf, anchors) - anchors) / P
    torch.testing.assert_close(target[0, 1, has[0, 1], :2], want[has[0, 1]], atol=1e-9, rtol=0)
    assert (target[0][has[0]][:, 2:].abs() < 1e-9).all()


def test_parallax_of_a_pure_translation_is_the_whole_motion_and_follows_the_plane():
    """Without rotation the point at infinity stays put, so the parallax equals the displacement: the plane
    homography's motion, which shrinks with the depth (here the baseline-to-depth ratio doubles with the step)."""
    anchors = patch_centres((H // P, W // P), P, dtype=torch.float64)
    sizes = []
    for b in (0.2, 0.4):
        c = torch.tensor([b, 0.05, 0.1], dtype=torch.float64)
        depth, w2c, K = _views([torch.zeros(3, dtype=torch.float64), c])
        (target, has), _ = _parallax_targets(depth, w2c, K)
        want = (_apply(_homography(-c, D - float(c[2])), anchors) - anchors) / P  # view 1 -> view 0
        ok = has[0, 1]
        torch.testing.assert_close(target[0, 1, ok, 2:], want[ok], atol=1e-9, rtol=0)
        torch.testing.assert_close(target[0, 1, ok, 2:], target[0, 1, ok, :2], atol=1e-12, rtol=0)
        sizes.append(target[0, 1, ok, 2].abs().mean())
    assert float(sizes[1] / sizes[0]) == pytest.approx(2.0, rel=0.1)


def test_parallax_of_a_turn_and_a_step_is_the_plane_minus_the_infinite_homography():
    """Camera 1 turned and stepped: a patch lands at H_plane p in view 0, its direction at H_inf p; the parallax is the
    difference, and a ray whose direction is behind view 0 does not count."""
    c = torch.tensor([0.4, 0.0, -0.3], dtype=torch.float64)
    w2c1 = _turned(-6.0, c)
    R1 = w2c1[:3, :3]
    n1 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # a plane fronto-parallel to camera 1, D ahead of it
    # camera 0's depth of that plane: along the ray r (z = 1), n1 . R1 (z r - c) = D
    rays = torch.cat((patch_centres((H, W), 1, dtype=torch.float64), torch.ones(H * W, 1, dtype=torch.float64)), -1)
    r0 = rays @ torch.linalg.inv(_K()).T
    depth0 = ((D + n1 @ R1 @ c) / (r0 @ R1.T @ n1)).reshape(H, W)
    depth = torch.stack([depth0, torch.full((H, W), D, dtype=torch.float64)])[None]
    w2c = torch.stack([torch.eye(4, dtype=torch.float64), w2c1])[None]
    K = _K().expand(1, 2, 3, 3)
    (target, has), anchors = _parallax_targets(depth, w2c, K)
    Kinv = torch.linalg.inv(_K())
    # camera 1 -> camera 0: X0 = R1^T X1 + c, and on the plane n1 . X1 = D
    Hinf = _K() @ R1.T @ Kinv
    Hplane = _K() @ (R1.T + torch.outer(c, n1) / D) @ Kinv
    ok = has[0, 1]
    assert ok.sum() > 0
    want = (_apply(Hplane, anchors) - _apply(Hinf, anchors)) / P
    torch.testing.assert_close(target[0, 1, ok, 2:], want[ok], atol=1e-8, rtol=0)
    torch.testing.assert_close(target[0, 1, ok, :2], (_apply(Hplane, anchors)[ok] - anchors[ok]) / P, atol=1e-8,
                               rtol=0)
    # a direction behind view 0 (its camera turned round): the patch's parallax is undefined, so it does not count
    uv_inf, ahead = project_patch_directions(w2c, K, (H // P, W // P), P)
    behind = ahead.clone()
    behind[0, 1, :3, 0] = False
    (t2, has2) = displacement_targets(*project_patch_centres(depth, w2c, K, P), anchors, P, torch.tensor([0]),
                                      (uv_inf, behind))
    assert not has2[0, 1, :3].any() and torch.equal(has2[0, 1, 3:], has[0, 1, 3:])


def test_parallax_readout_and_loss_report_both_parts():
    readout = DisplacementReadout(8, layers=1, out=4)
    assert readout(torch.randn(1, 2, 3, 1, 8)).shape == (1, 2, 3, 1, 4)
    with pytest.raises(ValueError, match="out must be 2"):
        DisplacementReadout(8, out=3)
    target = torch.zeros(1, 2, 3, 4)
    valid = torch.ones(1, 2, 3, dtype=torch.bool)
    pred = torch.zeros(1, 2, 3, 1, 4)
    pred[..., 0] = 0.5
    pred[..., 3] = -2.0
    loss, parts = displacement_loss(pred, target, valid)
    assert loss.item() == pytest.approx(0.125 + 1.5)  # smooth L1 summed over the four channels
    assert parts["l1"].item() == pytest.approx(0.25) and parts["parallax_l1"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="parallax"):
        displacement_loss(pred[..., :2], target, valid)


def test_trainer_refuses_to_resume_a_readout_of_other_width(tmp_path):
    from da3_core.train.loop import Trainer, load_config

    base = {"variant": "da3-tiny", "out_dir": str(tmp_path), "num_workers": 0, "views": [2, 2],
            "resolutions": [[42, 56]], "token_budget": 24, "max_steps": 1, "eval_interval": 0, "ckpt_interval": 1,
            "progress": False, "threads": 1}
    Trainer(load_config(None, base)).fit()
    with pytest.raises(ValueError, match="disp_parallax"):
        Trainer(load_config(None, {**base, "disp_parallax": True, "resume": True, "max_steps": 2}))
