"""RANSAC scale/shift alignment of teacher depth (paper §4.2, Eq. 8)."""

import pytest
import torch

from da3_core.train.alignment import align_depth, fit_scale_shift, ransac_scale_shift


def test_fit_scale_shift_closed_form():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    y = torch.tensor([1.0, 3.0, 5.0, 7.0], dtype=torch.float64)
    s, t = fit_scale_shift(x, y)
    assert (s.item(), t.item()) == pytest.approx((2.0, 1.0))


def _scene(outlier_ratio: float, seed: int = 0, n: int = 3000, noise: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    teacher = 1.0 + 4.0 * torch.rand(n, generator=g, dtype=torch.float64)
    target = 2.5 * teacher + 0.7 + noise * torch.randn(n, generator=g, dtype=torch.float64)
    out = torch.rand(n, generator=g) < outlier_ratio
    target[out] = 0.1 + 20.0 * torch.rand(int(out.sum()), generator=g, dtype=torch.float64)
    return teacher, target, out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_scale_and_shift_with_30_percent_outliers(seed):
    teacher, target, out = _scene(0.3, seed)
    res = ransac_scale_shift(teacher, target, generator=torch.Generator().manual_seed(seed))
    assert res.ok
    # outliers that happen to fall inside the paper's threshold stay in the final fit: a small bias remains
    # (depths span 3.2..13.2 here, so a 0.03 shift error is < 1% of the depth)
    assert res.scale == pytest.approx(2.5, rel=1e-2)
    assert res.shift == pytest.approx(0.7, abs=3e-2)
    assert res.inliers[~out].float().mean() > 0.99  # every true inlier kept
    plain_s, _ = fit_scale_shift(teacher, target)
    assert abs(plain_s.item() - 2.5) > 0.1  # plain least squares is visibly biased by the outliers


def test_noisy_inliers_and_mask():
    teacher, target, out = _scene(0.3, 4, noise=0.01)
    mask = torch.ones_like(teacher, dtype=torch.bool)
    mask[:100] = False
    target[:100] = float("nan")  # masked and invalid
    res = ransac_scale_shift(teacher, target, mask, generator=torch.Generator().manual_seed(0))
    assert res.scale == pytest.approx(2.5, rel=1e-2) and res.shift == pytest.approx(0.7, abs=4e-2)
    assert not res.inliers[:100].any()


def test_degenerate_inputs_fall_back():
    x = torch.ones(10, dtype=torch.float64)
    res = ransac_scale_shift(x, torch.full_like(x, 3.0))  # constant teacher: median-ratio scale
    assert not res.ok and res.scale == pytest.approx(3.0) and res.shift == 0.0
    res = ransac_scale_shift(torch.arange(3.0), torch.arange(3.0) + 1, min_pts_mask := torch.tensor([1, 0, 0]) > 0)
    assert not res.ok and (res.scale, res.shift) == (1.0, 0.0) and "valid" in res.reason
    assert min_pts_mask.sum() == 1
    empty = ransac_scale_shift(torch.rand(5, 5), torch.full((5, 5), float("nan")))
    assert not empty.ok and (empty.scale, empty.shift) == (1.0, 0.0) and not empty.inliers.any()
    anti = torch.linspace(1, 5, 50, dtype=torch.float64)
    res = ransac_scale_shift(anti, 10 - anti, generator=torch.Generator().manual_seed(0))  # s < 0 not allowed
    assert not res.ok and res.scale == 0.0 and res.shift == pytest.approx(7.0)


def test_align_depth_batch():
    teacher = 1 + torch.rand(2, 8, 9, dtype=torch.float64)
    target = torch.stack((2 * teacher[0] + 1, 0.5 * teacher[1]))
    aligned, results = align_depth(teacher, target, generator=torch.Generator().manual_seed(0))
    assert len(results) == 2 and all(r.ok for r in results)
    torch.testing.assert_close(aligned, target)
