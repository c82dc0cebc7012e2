"""VoxelMap: closed-form downsampling on a grid, weighted averages, bounded size, PLY output."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.stream.voxel_map import VoxelMap


def _grid(n, spacing, offset=0.0):
    g = np.arange(n) * spacing + offset
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def test_grid_points_one_per_voxel_and_means():
    vm = VoxelMap(voxel_size=1.0)
    # 4 points per voxel along x: x = k + {0.1, 0.3, 0.5, 0.7}, y, z at voxel centres (incl. negatives)
    centres = _grid(5, 1.0, -2.0) + 0.5
    pts = np.concatenate([centres + [d - 0.5, 0, 0] for d in (0.1, 0.3, 0.5, 0.7)])
    cols = np.concatenate([np.full((len(centres), 3), c, np.uint8) for c in (10, 20, 30, 40)])
    vm.insert(pts, cols)
    assert len(vm) == 125
    got = vm.points()[np.lexsort(vm.points().T[::-1])]
    want = (centres + [-0.1, 0, 0])[np.lexsort((centres + [-0.1, 0, 0]).T[::-1])]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(vm.colors() == 25)


def test_weighted_accumulation_across_inserts():
    vm = VoxelMap(0.5)
    vm.insert(np.array([[0.1, 0.1, 0.1]]), np.array([[0, 0, 0]], np.uint8), np.array([1.0]))
    vm.insert(np.array([[0.4, 0.1, 0.1], [np.nan, 0, 0]]), np.array([[200, 100, 0], [1, 1, 1]], np.uint8),
              np.array([3.0, 1.0]))
    assert len(vm) == 1
    np.testing.assert_allclose(vm.points()[0], [0.325, 0.1, 0.1], atol=1e-6)
    np.testing.assert_array_equal(vm.colors()[0], [150, 75, 0])
    assert vm.weights()[0] == 4.0


def test_bounded_size_drops_oldest():
    vm = VoxelMap(1.0, max_points=100)
    for k in range(5):
        vm.insert(_grid(4, 1.0, 10.0 * k) + 0.5)  # 64 new voxels each time
        assert len(vm) <= 100
    assert len(vm) == 100 and vm.n_evicted == 5 * 64 - 100
    kept = vm.points()
    assert np.all(kept[:, 0] >= 30.0)  # the newest (k=4) block is fully kept, rest from k=3
    assert np.sum(kept[:, 0] >= 40.0) == 64


def test_out_of_range_and_clear(tmp_path):
    vm = VoxelMap(0.01)
    vm.insert(np.array([[1e9, 0, 0], [0.0, 0.0, 0.0]]))
    assert len(vm) == 1 and vm.n_out_of_range == 1
    path = vm.save_ply(tmp_path / "m.ply")
    data = path.read_bytes()
    assert data.startswith(b"ply\nformat binary_little_endian 1.0\n") and b"element vertex 1\n" in data
    vm.clear()
    assert len(vm) == 0 and vm.points().shape == (0, 3)
    with pytest.raises(ValueError):
        VoxelMap(0.0)


def test_revision_changes_with_every_change_only():
    """The map is re-published only when its revision moved: every insert that adds points and every clear move
    it, an insert of nothing valid does not."""
    m = VoxelMap(0.1)
    seen = {m.revision}
    m.insert(np.array([[0.0, 0.0, 0.0]]))
    assert m.revision not in seen
    seen.add(m.revision)
    r = m.revision
    m.insert(np.array([[np.nan, 0.0, 0.0]]))
    m.insert(np.zeros((0, 3)))
    m.insert(np.array([[0.0, 0.0, 0.0]]), weights=np.array([0.0]))
    assert m.revision == r
    m.insert(np.array([[0.01, 0.0, 0.0]]))  # same voxel: the map still changed (its mean moved)
    assert m.revision not in seen
    seen.add(m.revision)
    m.clear()
    assert m.revision not in seen
