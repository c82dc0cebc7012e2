"""Point-cloud metrics against closed-form cases, and the exact numpy nearest-neighbour search."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.eval.pointcloud_metrics import cloud_scores, nearest_distances, voxel_downsample


def _grid(spacing=0.1, n=8):
    g = np.stack(np.meshgrid(*(np.arange(n) * spacing,) * 2, [0.0, spacing]), -1).reshape(-1, 3)
    return g


@pytest.mark.parametrize("method", ["voxel", "brute", "auto"])
def test_shifted_grid_chamfer_equals_the_shift_and_f1_steps_at_the_threshold(method):
    g = _grid()
    d = 0.03
    s = cloud_scores(g + [d, 0, 0], g, threshold=0.05, method=method)
    assert s.accuracy == pytest.approx(d) and s.completeness == pytest.approx(d) and s.chamfer == pytest.approx(d)
    assert s.precision == s.recall == s.f1 == 1.0
    far = cloud_scores(g + [0, 0, 0.04], g, threshold=0.02, method=method)  # off the two sheets' gap (0.1)
    assert far.chamfer == pytest.approx(0.04) and far.f1 == 0.0
    assert cloud_scores(g, g, 0.01, method).chamfer == 0.0


def test_voxel_nearest_neighbours_are_exact_including_far_queries():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (3000, 3))
    ref[:, 2] = 0.2 * ref[:, 0] ** 2  # a surface
    q = np.concatenate([ref[:500] + rng.normal(0, 0.01, (500, 3)), rng.normal(0.5, 3.0, (50, 3))])
    brute = np.sqrt(((q[:, None] - ref[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_distances(q, ref, "voxel"), brute, atol=1e-12)


def test_empty_or_nonfinite_clouds_and_voxel_downsample():
    g = _grid()
    assert np.isnan(cloud_scores(np.full((3, 3), np.nan), g, 0.1).f1)
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.01, 0.01], [0.5, 0.5, 0.5], [np.nan, 0, 0]])
    out = voxel_downsample(pts, 0.1)
    assert len(out) == 2 and np.allclose(out[0], [0.02, 0.01, 0.01])
