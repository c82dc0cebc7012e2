"""Submaps: the lazily assembled map equals per-window inserts, a known correction moves exactly its submap's points,
memory stays bounded, and on the drifting orbit the loop-closed map lies closer to the true surfaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_stream_scene import make_frames, truth_fn

from da3_core.geometry.rigid import invert_rigid
from da3_core.geometry.sim3 import umeyama_sim3
from da3_core.stream.loop_scenarios import DriftingPredictor, loop_sequence
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.predictor import OraclePredictor, sim3_matrix
from da3_core.stream.submaps import SubmapStore
from da3_core.stream.tsdf_map import TsdfConfig
from da3_core.stream.voxel_map import VoxelMap


def _pipe(frames, truth, **kw):
    cfg = PipelineConfig(window_size=4, overlap=2, voxel_size=0.1, cloud_conf_percentile=None, **kw)
    pipe = StreamPipeline(OraclePredictor(truth_fn(truth), random_transform=True, seed=5), cfg)
    for f in frames:
        pipe.process(f)
    pipe.flush()
    return pipe


def test_lazy_submap_map_equals_per_window_inserts():
    frames, truth = make_frames(14)
    direct, lazy = _pipe(frames, truth), _pipe(frames, truth, submaps=True)
    assert direct.submaps is None and lazy.submaps is not None and len(lazy.submaps) == 6
    rev = lazy.map_revision()
    a, b = direct.map_snapshot(), lazy.map_snapshot()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert lazy.map_revision() == rev  # assembling does not count as a change
    assert lazy.stats()["map_points"] == direct.stats()["map_points"] > 0


def test_a_correction_moves_exactly_its_submap():
    rng = np.random.default_rng(0)
    store = SubmapStore(voxel_size=0.01)
    p0 = rng.uniform(0, 1, (200, 3)).astype(np.float32)
    p1 = rng.uniform(5, 6, (200, 3)).astype(np.float32)  # far apart: voxels never shared
    cols = np.full((200, 3), 100, np.uint8)
    store.add(0, p0, cols)
    store.add(1, p1, cols)
    before = store.sync().points().copy()
    rev = store.revision
    a = math.radians(20.0)
    C = sim3_matrix(1.2, np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]),
                    np.array([0.5, -1.0, 2.0]))
    store.set_corrections({0: np.eye(4), 1: C})
    assert store.revision != rev and store.stale
    after = store.sync().points()
    ref = VoxelMap(0.01)
    ref.insert(p0, cols)
    ref.insert(p1 @ C[:3, :3].T.astype(np.float32) + C[:3, 3].astype(np.float32), cols)
    np.testing.assert_allclose(after, ref.points(), atol=1e-5)
    assert store.n_rebuilds == 1 and not np.allclose(np.sort(after, axis=0), np.sort(before, axis=0))
    store.set_corrections({0: np.eye(4), 1: C})  # unchanged: no rebuild
    assert not store.stale
    nudge = sim3_matrix(1.0, np.eye(3), np.array([1e-4, 0.0, 0.0]))  # moves points far less than a voxel
    store.set_corrections({0: nudge, 1: C})
    assert not store.stale


def test_memory_is_bounded_by_thinning_the_oldest():
    store = SubmapStore(voxel_size=0.05, max_points=1000)
    for k in range(6):
        store.add(k, np.random.default_rng(k).uniform(0, 1, (300, 3)), np.zeros((300, 3), np.uint8))
    assert store.n_points <= 1000 and store.n_thinned > 0
    assert len(store.submaps[5].points) == 300  # the newest keeps everything

    def held(a: np.ndarray) -> int:  # bytes kept alive by an array (a view keeps its whole base)
        return (a.base if a.base is not None else a).nbytes

    # the memory held is that of the kept points, not of everything ever added (views of thinned arrays would be)
    assert sum(held(a) for sm in store.submaps.values() for a in (sm.points, sm.colors, sm.weights)) \
        <= 1000 * (12 + 3 + 4)
    with pytest.raises(ValueError):
        store.add(9, np.zeros((3, 3)), np.zeros((2, 3), np.uint8))
    # a long run: thinning inserted submaps never forces a rebuild (the voxel map keeps what it holds), and the
    # submaps themselves stay few (those down to a point are forgotten)
    store.sync()
    for k in range(10, 200):
        store.add(k, np.random.default_rng(k).uniform(0, 1, (300, 3)), np.zeros((300, 3), np.uint8))
        store.sync()
    assert store.n_rebuilds == 0 and store.n_forgotten > 0 and len(store.submaps) < 20 and store.n_points <= 1000


def _map_error(pipe, seq, points: np.ndarray | None = None) -> float:
    """Median distance (metres) of the map's points (or ``points``, map frame), aligned to the truth by the
    trajectory's Sim(3), to the true surface points (every frame's true depth unprojected, 2-pixel grid)."""
    from scipy.spatial import cKDTree

    stamps, c2w = pipe.trajectory()
    gt = np.stack([invert_rigid(seq.truth[int(s)][1]) for s in stamps])
    s, R, t = umeyama_sim3(c2w[:, :3, 3], gt[:, :3, 3])
    pts = (pipe.map_snapshot()[0] if points is None else points).astype(np.float64) @ (s * R).T + t
    true = []
    for depth, w2c, K in seq.truth.values():
        v, u = np.mgrid[0:depth.shape[0]:2, 0:depth.shape[1]:2]
        d = depth[v, u].astype(np.float64)
        ok = np.isfinite(d)
        X = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * d[ok], (v[ok] - K[1, 2]) / K[1, 1] * d[ok], d[ok]], 1)
        true.append((X - w2c[:3, 3]) @ w2c[:3, :3])
    return float(np.median(cKDTree(np.concatenate(true)).query(pts)[0]))


def test_loop_closed_map_is_closer_to_the_truth():
    """Point map and TSDF mesh alike: the loop closure's corrections move them onto the true surfaces (the TSDF's
    keyframes, fused with their window's correction of the time, are re-fused by ``update_poses``)."""
    seq = loop_sequence(240, 400.0, seed=0)
    errors, mesh_errors = {}, {}
    for closed in (False, True):
        oracle = OraclePredictor(lambda f: seq.truth[f.stamp_ns], random_transform=True, seed=1)
        cfg = PipelineConfig(window_size=8, overlap=2, voxel_size=0.02, cloud_conf_percentile=None,
                             keep_depth_frames=0, pose_graph=True, loop_closure=closed, tsdf=True,
                             tsdf_every_n_frames=6, tsdf_map=TsdfConfig(voxel_size=0.05, depth_max=20.0))
        pipe = StreamPipeline(DriftingPredictor(oracle, 0.01, 0.5, 2), cfg)
        for i, f in enumerate(seq.frames):
            pipe.process(f)
            if i % 24 == 0:
                pipe.map_snapshot()  # as the node's map timer does: the map is assembled along the way
        pipe.flush()
        errors[closed] = _map_error(pipe, seq)
        mesh_errors[closed] = _map_error(pipe, seq, pipe.tsdf.map.extract_mesh().vertices)
        st = pipe.stats()
        assert st["tsdf_keyframes"] == 40 and st["tsdf_pose_updates"] == (1 if closed else 0)
        if closed:
            assert st["submap_rebuilds"] >= 1 and st["loops_closed"] >= 1
    print(f"\nmap median error to the true surfaces: {errors[False]:.4f} m without loop closure, "
          f"{errors[True]:.4f} m with; TSDF mesh {mesh_errors[False]:.4f} m / {mesh_errors[True]:.4f} m")
    assert errors[True] < 0.5 * errors[False]
    assert mesh_errors[True] < 0.5 * mesh_errors[False]


def test_background_rebuild_swaps_in_the_re_anchored_map(monkeypatch):
    """sync(background=True) after a re-anchoring returns at once with the old map; when the thread is done the map
    (same object) holds exactly what a synchronous rebuild gives, and the revision moved on."""
    rng = np.random.default_rng(1)
    cols = np.full((300, 3), 50, np.uint8)
    parts = [rng.uniform(3 * k, 3 * k + 1, (300, 3)).astype(np.float32) for k in range(3)]
    C = sim3_matrix(1.0, np.eye(3), np.array([0.0, 0.0, 0.7]))

    def build(background):
        store = SubmapStore(voxel_size=0.02)
        for k, p in enumerate(parts):
            store.add(k, p, cols)
        store.sync()
        store.set_corrections({1: C})
        return store, store.sync(background=background)

    ref_store, _ = build(False)
    import threading

    release = threading.Event()
    insert = SubmapStore._insert

    def gated(self, target, work):  # hold the background thread until the old map has been looked at
        if threading.current_thread().name == "submap-rebuild":
            release.wait(10.0)
        insert(self, target, work)

    monkeypatch.setattr(SubmapStore, "_insert", gated)
    store, same = build(True)
    rev = store.revision
    old = same.points().copy()
    assert store.sync() is same  # while rebuilding: no second rebuild, the old map stays
    release.set()
    store.wait(10.0)
    assert same is store.map and store.revision != rev and not store.stale
    np.testing.assert_allclose(store.snapshot()[0], ref_store.snapshot()[0], atol=1e-6)
    assert not np.array_equal(np.sort(old, axis=0), np.sort(store.snapshot()[0], axis=0))
