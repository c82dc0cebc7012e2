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


def test_dense_and_sorted_grouping_give_the_per_voxel_weighted_means():
    """A compact batch (grouped through the dense table over its bounding box) and the same batch with a far point
    (a huge box: grouped by sorting) give the same voxels, in key order, with the weighted means of a plain
    per-point reference; points that are not finite or have no weight are left out."""
    rng = np.random.default_rng(3)
    pts = rng.normal(0.0, 0.7, (4000, 3))
    pts[::50] = np.nan
    cols = rng.integers(0, 256, (4000, 3)).astype(np.uint8)
    w = rng.uniform(0.1, 2.0, 4000)
    w[::77] = 0.0
    far = np.array([[4.0e3, -3.0e3, 2.0e3]])
    maps = {}
    for name, extra in (("dense", 0), ("sorted", 1)):
        vm = VoxelMap(0.1)
        vm.insert(np.concatenate([pts, far[:extra]]), np.concatenate([cols, cols[:extra]]),
                  np.concatenate([w, w[:extra] + 1.0]))
        maps[name] = vm
    ref: dict[tuple[int, int, int], list[float]] = {}
    for p, c, wi in zip(pts, cols, w):
        if not (np.all(np.isfinite(p)) and wi > 0):
            continue
        acc = ref.setdefault(tuple(np.floor(p / 0.1).astype(int)), [0.0] * 7)
        for j in range(3):
            acc[j] += wi * p[j]
            acc[3 + j] += wi * c[j]
        acc[6] += wi
    keys = sorted(ref)  # lexicographic (x, y, z) = the map's key order
    want_pts = np.array([[ref[k][j] / ref[k][6] for j in range(3)] for k in keys])
    want_cols = np.array([[round(ref[k][3 + j] / ref[k][6]) for j in range(3)] for k in keys])
    dense, sparse = maps["dense"], maps["sorted"]
    assert len(dense) == len(keys) and len(sparse) == len(keys) + 1
    far_at = int(np.flatnonzero(np.all(np.isclose(sparse.points(), far, atol=1e-3), axis=1))[0])
    rest = np.delete(np.arange(len(sparse)), far_at)
    for vm, sel in ((dense, np.arange(len(dense))), (sparse, rest)):
        np.testing.assert_allclose(vm.points()[sel], want_pts, atol=1e-5)
        assert np.abs(vm.colors()[sel].astype(int) - want_cols).max() <= 1
        np.testing.assert_allclose(vm.weights()[sel], [ref[k][6] for k in keys], rtol=1e-9)
