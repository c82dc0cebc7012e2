"""training/cross_view_probe.py: its pairs are exact patch shifts with the matching yaw targets, and it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training"))

import cross_view_probe as probe  # noqa: E402


def test_pairs_are_patch_shifts_with_matching_yaw() -> None:
    x, enc, shift = probe.shifted_pairs(6, (28, 56), 2, 5.0, torch.Generator().manual_seed(0))
    assert x.shape == (6, 2, 3, 28, 56) and enc.shape == (6, 2, 9)
    for b, s in enumerate(shift.tolist()):
        px = s * probe.PATCH
        first, second = x[b, 0], x[b, 1]
        if px >= 0:  # the second view's column c shows the first view's column c + px
            torch.testing.assert_close(second[..., : 56 - px], first[..., px:])
        else:
            torch.testing.assert_close(second[..., -px:], first[..., : 56 + px])
    torch.testing.assert_close(probe.predicted_yaw_deg(enc), shift.float() * 5.0, atol=1e-4, rtol=0)
    torch.testing.assert_close(enc[:, 0, 3:7], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(6, 4))
    assert set(shift.tolist()) <= {-2, -1, 0, 1, 2}


def test_shift_matches_point_at_the_patch_with_the_same_pixels() -> None:
    """Every matched pair of patches holds identical pixels (the independent check: the images themselves); patches
    whose content left the other view are unmatched; the weights are one-hot at the patch centre."""
    hw, P = (28, 70), probe.PATCH
    x, _, shift = probe.shifted_pairs(5, hw, 2, 5.0, torch.Generator().manual_seed(2))
    m = probe.shift_matches(shift, hw)
    patches = x.unfold(3, P, P).unfold(4, P, P)  # (B, 2, 3, h, w, P, P)
    patches = patches.permute(0, 1, 3, 4, 2, 5, 6).flatten(2, 3)  # (B, 2, N, 3, P, P)
    for b, s in enumerate(shift.tolist()):
        for j, i in ((0, 1), (1, 0)):
            valid = m.valid[b, j, :, i]
            assert int(valid.sum()) == 2 * (5 - abs(s))  # 2 rows x the columns still in view
            for n in valid.nonzero().flatten().tolist():
                assert float(m.weight[b, j, n, i].max()) == pytest.approx(1.0)
                target = int(m.index[b, j, n, i][m.weight[b, j, n, i].argmax()])
                torch.testing.assert_close(patches[b, i, target], patches[b, j, n], atol=0, rtol=0)
        assert not m.valid[b, 0, :, 0].any() and not m.valid[b, 1, :, 1].any()


def test_subpatch_pairs_shift_by_pixels_and_split_their_matches() -> None:
    """--subpatch: the second view is the first shifted by whole pixels (checked on the images), the yaw follows the
    shift in patches, and a patch's match is split bilinearly between the two patches it straddles."""
    hw, P = (28, 70), probe.PATCH
    x, enc, shift = probe.shifted_pairs(6, hw, 2, 5.0, torch.Generator().manual_seed(3), subpatch=True)
    px = torch.round(shift * P).long()
    assert torch.allclose(px.float(), shift * P, atol=1e-4) and (px.abs() <= 2 * P).all()
    assert (px % P != 0).any()  # some shifts are not whole patches
    torch.testing.assert_close(probe.predicted_yaw_deg(enc), shift * 5.0, atol=1e-3, rtol=0)
    m = probe.shift_matches(shift, hw)
    for b, s in enumerate(px.tolist()):
        first, second = x[b, 0], x[b, 1]
        if s >= 0:
            torch.testing.assert_close(second[..., : hw[1] - s], first[..., s:])
        else:
            torch.testing.assert_close(second[..., -s:], first[..., : hw[1] + s])
        frac = (s % P) / P  # weight on the right-hand patch of the straddled pair (view 2 -> view 1)
        for n in m.valid[b, 1, :, 0].nonzero().flatten().tolist():
            col = n % (hw[1] // P) + s // P
            w = dict.fromkeys(range(hw[0] // P * hw[1] // P), 0.0)
            for idx, wt in zip(m.index[b, 1, n, 0].tolist(), m.weight[b, 1, n, 0].tolist()):
                w[idx] += wt
            row = n // (hw[1] // P)
            left, right = row * (hw[1] // P) + col, row * (hw[1] // P) + col + 1
            if 0 <= col and col + 1 < hw[1] // P:
                assert w[left] == pytest.approx(1 - frac, abs=1e-5) and w[right] == pytest.approx(frac, abs=1e-5)


def test_scene_content_pairs_are_shifted_crops_of_rendered_scenes() -> None:
    """--content scenes: both views are crops of one pool image (a rendered scene, wide enough for every shift), the
    second shifted by the reported number of pixels; a pool of the wrong size is refused."""
    hw, P, max_shift = (28, 42), probe.PATCH, 1
    pool = probe.scene_pool(3, hw, max_shift, seed=5)
    assert pool.shape == (3, 3, 28, 42 + 2 * P) and pool.std() > 0.1  # real content, not a constant
    x, _, shift = probe.shifted_pairs(5, hw, max_shift, 5.0, torch.Generator().manual_seed(2), subpatch=True, pool=pool)
    for b, s in enumerate(torch.round(shift * P).long().tolist()):
        src = [i for i in range(3) if torch.equal(pool[i, ..., P:P + hw[1]], x[b, 0])]
        assert len(src) == 1  # the first view is the centre crop of one pool image
        torch.testing.assert_close(x[b, 1], pool[src[0], ..., P + s:P + s + hw[1]])
    grain = probe.scene_pool(3, hw, max_shift, seed=5, noise=0.5) - pool  # --scene-noise: the same scenes + grain
    assert grain.shape == pool.shape and 0.1 < grain.std() < 0.5 and grain[0].std() > 0.1
    with pytest.raises(ValueError, match="pool images must be 28x70"):
        probe.shifted_pairs(2, hw, max_shift, 5.0, torch.Generator(), pool=pool[..., :-1])


def test_matching_supervision_runs() -> None:
    rows = probe.main(["--steps", "2", "--eval-every", "2", "--size", "28", "42", "--threads", "1", "--max-shift", "1",
                       "--match-weight", "1"])
    assert 0.0 <= rows[-1]["match_acc"] <= 1.0


def test_displacement_targets_are_the_shift_in_patches() -> None:
    """--disp-weight: each patch's target is the pair's shift (view 2 -> view 1) or minus it (view 1 -> view 2), in
    patches, exactly where the matching targets see the patch; a short run reports the read-out's error."""
    from da3_core.train.displacement import displacement_targets

    hw = (28, 70)
    _, _, shift = probe.shifted_pairs(6, hw, 2, 5.0, torch.Generator().manual_seed(4), subpatch=True)
    centres = probe.patch_centres((2, 5), probe.PATCH)
    target, has = displacement_targets(*probe.shift_uv(shift, hw), centres, probe.PATCH)
    m = probe.shift_matches(shift, hw)
    assert torch.equal(has[:, 0], m.valid[:, 0, :, 1]) and torch.equal(has[:, 1], m.valid[:, 1, :, 0])
    for b, s in enumerate(shift.tolist()):
        torch.testing.assert_close(target[b, 1, has[b, 1], 0], torch.full((int(has[b, 1].sum()),), s))
        torch.testing.assert_close(target[b, 0, has[b, 0], 0], torch.full((int(has[b, 0].sum()),), -s))
    assert (target[..., 1] == 0).all()
    rows = probe.main(["--steps", "2", "--eval-every", "2", "--size", "28", "42", "--threads", "1", "--max-shift", "1",
                       "--subpatch", "--match-weight", "1", "--disp-weight", "1"])
    assert 0.0 <= rows[-1]["disp_l1"] < 10 and "match_acc" in rows[-1]


def test_predicted_yaw_ignores_quaternion_sign_and_norm() -> None:
    enc = torch.zeros(1, 2, 9)
    half = torch.deg2rad(torch.tensor(10.0)) / 2
    enc[0, 1, 4], enc[0, 1, 6] = -3 * torch.sin(half), -3 * torch.cos(half)  # -3 q: the same 10-degree yaw
    assert probe.predicted_yaw_deg(enc).item() == pytest.approx(10.0, abs=1e-4)


def test_probe_runs_and_reports() -> None:
    rows = probe.main(["--steps", "2", "--eval-every", "1", "--size", "28", "42", "--threads", "1", "--max-shift", "1"])
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["yaw_err"])) for r in rows)


def test_brighter_control_labels_the_brighter_view() -> None:
    x, enc, shift = probe.brighter_pairs(16, (28, 42), 3, 6.0, torch.Generator().manual_seed(1))
    brighter = x[:, 1].mean((1, 2, 3)) > x[:, 0].mean((1, 2, 3))
    assert torch.equal(shift, torch.where(brighter, 3, -3)) and 0 < int(brighter.sum()) < 16
    torch.testing.assert_close(probe.predicted_yaw_deg(enc), shift.float() * 6.0, atol=1e-4, rtol=0)
