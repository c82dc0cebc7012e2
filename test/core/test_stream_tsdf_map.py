"""TsdfMap: confidence-weighted TSDF fusion of exact synthetic depth, checked against the scene's analytic truth.

References are independent of the map: the synthetic scene's signed distance function and ray-cast depth
(``da3_core.data.synthetic``), closed-form weighted means of planes, and Open3D's own PLY reader / ray caster.
open3d is a regular dependency (requirements/mapping.txt): if it does not import, these tests fail.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from da3_core.data.synthetic.camera import intrinsics_from_fov, look_at
from da3_core.data.synthetic.paths import orbit
from da3_core.data.synthetic.render import render
from da3_core.data.synthetic.scene import make_scene
from da3_core.eval.pointcloud_metrics import nearest_distances
from da3_core.stream.tsdf_map import TsdfConfig, TsdfMap, _motion_bound, _TorchOps

VOXEL = 0.05
HW = (72, 96)
FOV = 70.0


@pytest.fixture(scope="module")
def room():
    """The seed-0 synthetic room and 8 exact (oracle) views from an outward-looking orbit around its free centre."""
    scene = make_scene("room", seed=0)
    K = intrinsics_from_fov(HW, FOV)
    w2cs = orbit(scene.free_center, 0.3, 1.5, 8, outward=True, pitch_deg=10.0)
    frames = [render(scene, E, K, HW, normals=False, ids=False) for E in w2cs]
    return scene, K, frames


def _depth(frame) -> np.ndarray:
    d = frame.depth.astype(np.float32).copy()
    d[~np.isfinite(d)] = np.nan
    return d


def _surface_samples(scene, w2cs, depth_max: float, scale: int = 2) -> np.ndarray:
    """Dense points exactly on the surface the views see: every pixel of the views rendered at ``scale`` x the
    resolution, unprojected with the exact depth (up to ``depth_max``)."""
    hw = (HW[0] * scale, HW[1] * scale)
    K = intrinsics_from_fov(hw, FOV)
    pts = []
    for E in w2cs:
        f = render(scene, E, K, hw, normals=False, ids=False)
        v, u = np.mgrid[0 : hw[0], 0 : hw[1]]
        ok = np.isfinite(f.depth) & (f.depth <= depth_max)
        d = f.depth[ok].astype(np.float64)
        X = np.stack(((u[ok] - K[0, 2]) / K[0, 0] * d, (v[ok] - K[1, 2]) / K[1, 1] * d, d), -1)
        c2w = f.c2w
        pts.append(X @ c2w[:3, :3].T + c2w[:3, 3])
    return np.concatenate(pts)


def _f1(scene, vertices: np.ndarray, samples: np.ndarray, tol: float) -> tuple[float, float, float]:
    """(precision, recall, F1) at ``tol``: vertices' distance to the true surface (the scene's SDF) and the true
    surface samples' distance to the nearest vertex."""
    precision = float(np.mean(np.abs(scene.sdf(vertices.astype(np.float64))) < tol))
    recall = float(np.mean(nearest_distances(samples, vertices) < tol))
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def _integrate_all(m: TsdfMap, frames, poses=None) -> None:
    for i, f in enumerate(frames):
        c2w = f.c2w if poses is None else poses[i]
        m.integrate(i, _depth(f), np.ones(HW, np.float32), f.K, c2w, f.rgb)


def test_oracle_views_give_the_scene_surface_f1_at_2_voxels(room):
    scene, K, frames = room
    m = TsdfMap(TsdfConfig(voxel_size=VOXEL, depth_max=6.0))
    _integrate_all(m, frames)
    mesh = m.extract_mesh()
    assert len(mesh.vertices) > 5000 and len(mesh.faces) > 5000
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices)
    samples = _surface_samples(scene, [np.linalg.inv(f.c2w) for f in frames], 6.0)
    p, r, f1 = _f1(scene, mesh.vertices, samples, 2 * VOXEL)
    print(f"oracle TSDF, voxel {VOXEL} m, 8 views {HW[1]}x{HW[0]}: precision {p:.4f} recall {r:.4f} F1 {f1:.4f} "
          f"(vertices {len(mesh.vertices)}); stats {m.stats()}")
    assert f1 >= 0.9
    # and most vertices are far closer than the tolerance (the surface is in the right place, not just near it)
    assert np.median(np.abs(scene.sdf(mesh.vertices.astype(np.float64)))) < 0.2 * VOXEL
    s = m.stats()
    assert s["keyframes"] == 8 and s["voxel_blocks"] > 0 and s["integrate_ms_mean"] > 0


@pytest.mark.parametrize("every_n", [1, 3])
def test_oracle_pipeline_run_keyframes_fuse_onto_the_scene(every_n, tmp_path):
    """The streaming pipeline with the geometry oracle (exact depth, chained windows) and its TSDF map on: every
    ``every_n``-th new frame (map frame = the first camera's) is fused as it comes out, and the mesh is the scene's
    surface: F1 at 2 voxels >= 0.9 (every frame or every third); save_outputs writes it as map_mesh.ply."""
    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_core.stream.frame import Frame
    from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
    from da3_core.stream.predictor import OraclePredictor

    seq = SyntheticSequence.from_spec("kind=room,seed=0,frames=14,path=walk,size=168x126,fov=70")
    truth, frames = {}, []
    for i in range(len(seq)):
        f = seq.frame(i)
        truth[seq.stamp_ns(i)] = (f.depth.astype(np.float64), f.w2c, f.K)
        frames.append(Frame(stamp_ns=seq.stamp_ns(i), rgb=f.rgb, K=f.K.copy(), frame_id="cam", index=i))
    cfg = PipelineConfig(window_size=6, overlap=2, tsdf=True, tsdf_every_n_frames=every_n,
                         tsdf_map=TsdfConfig(voxel_size=0.04, depth_max=8.0))
    pipe = StreamPipeline(OraclePredictor(lambda fr: truth[fr.stamp_ns]), cfg)
    for f in frames:
        pipe.process(f)
    pipe.flush()
    tsdf = pipe.tsdf.map
    assert list(tsdf.keyframes) == [(seq.stamp_ns(i), 0) for i in range(0, len(seq), every_n)]
    st = pipe.stats()
    assert st["tsdf_integrated"] == st["tsdf_keyframes"] == len(tsdf.keyframes) and st["tsdf_dropped_frames"] == 0
    c2w0 = np.linalg.inv(truth[seq.stamp_ns(0)][1])  # map frame -> world
    v = tsdf.extract_mesh().vertices.astype(np.float64) @ c2w0[:3, :3].T + c2w0[:3, 3]
    samples = []
    for d, w2c, K in truth.values():
        vv, uu = np.mgrid[0 : d.shape[0] : 2, 0 : d.shape[1] : 2]
        z = d[vv, uu]
        ok = np.isfinite(z) & (z <= 8.0)
        X = np.stack(((uu[ok] - K[0, 2]) / K[0, 0] * z[ok], (vv[ok] - K[1, 2]) / K[1, 1] * z[ok], z[ok]), -1)
        c2w = np.linalg.inv(w2c)
        samples.append(X @ c2w[:3, :3].T + c2w[:3, 3])
    p, r, f1 = _f1(seq.scene, v, np.concatenate(samples), 2 * 0.04)
    print(f"oracle pipeline run, {len(tsdf.keyframes)} keyframes 168x126, voxel 0.04 m: precision {p:.4f} "
          f"recall {r:.4f} F1 {f1:.4f}")
    assert f1 >= 0.9 and p >= 0.95
    paths = pipe.save_outputs(tmp_path)
    saved = o3d.io.read_triangle_mesh(str(paths["mesh"]))
    assert paths["mesh"] == tmp_path / "map_mesh.ply" and len(saved.vertices) == len(v)
    pipe.reset()
    assert len(tsdf.keyframes) == 0 and tsdf.stats()["voxel_blocks"] == 0


def test_weighted_fusion_of_two_planes_is_the_weighted_mean_depth():
    """Two fronto-parallel planes z = 2.00 and z = 2.10 (within the truncation) with confidences 1 and 3: the TSDF
    is linear in z, so the fused zero crossing is exactly the weighted mean 2.075 (and 2.025 with the weights
    swapped); uniform weighting gives the plain mean 2.05."""
    K = np.array([[40.0, 0.0, 24.0], [0.0, 40.0, 18.0], [0.0, 0.0, 1.0]])
    hw = (37, 49)
    for mode, c1, c2, want in (("absolute", 1.0, 3.0, 2.075), ("absolute", 3.0, 1.0, 2.025),
                               ("uniform", 1.0, 3.0, 2.05)):
        m = TsdfMap(voxel_size=0.04, trunc=0.2, weight_mode=mode, conf_ref=1.0, color=False)
        m.integrate("a", np.full(hw, 2.0), np.full(hw, c1), K, np.eye(4))
        m.integrate("b", np.full(hw, 2.1), np.full(hw, c2), K, np.eye(4))
        v = m.extract_mesh().vertices
        central = np.abs(v[:, 0] / v[:, 2]) < 0.3  # away from the frustum's side faces
        central &= np.abs(v[:, 1] / v[:, 2]) < 0.3
        z = v[central, 2]
        assert len(z) > 50
        assert np.abs(z - want).max() < 1e-4, (mode, c1, c2, z.min(), z.max())


def test_confidence_to_weight_mapping():
    m = TsdfMap(voxel_size=0.05, weight_mode="relative", w_max=4.0, min_obs_weight=0.05)
    depth = np.full((4, 5), 2.0, np.float32)
    depth[0, 0] = np.nan
    conf = np.array([[9, 1, 2, 2, 2], [2, 2, 2, 2, 2], [2, 2, 2, 2, 100], [0.05, 2, 2, 2, 2]], np.float32)
    w = m._weights(depth, conf)
    assert w[0, 0] == 0  # invalid depth
    assert w[1, 1] == pytest.approx(1.0)  # the median confidence (2) -> weight 1
    assert w[0, 1] == pytest.approx(0.5)
    assert w[2, 4] == pytest.approx(4.0)  # clipped at w_max
    assert w[3, 0] == 0  # 0.025 < min_obs_weight
    np.testing.assert_allclose(m._weights(depth, 7.0 * conf), w, rtol=1e-6)  # scale-free
    a = TsdfMap(voxel_size=0.05, weight_mode="absolute", conf_ref=4.0)._weights(depth, conf)
    assert a[1, 1] == pytest.approx(0.5) and a[0, 1] == pytest.approx(0.25)


def _raycast_depth(mesh, E: np.ndarray, K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """z-depth where the rays of pixels ``uv`` (N, 2) of camera (E = w2c, K) first hit ``mesh`` (inf on a miss)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    d_cam = np.stack(((uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))), -1)
    R, t = E[:3, :3], E[:3, 3]
    origin = -R.T @ t
    d_world = d_cam @ R  # unnormalised (camera z = 1): the hit distance is the z-depth
    rays = np.concatenate((np.broadcast_to(origin, d_world.shape), d_world), -1).astype(np.float32)
    return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)


@pytest.mark.parametrize("corruption", ["+10cm", "+20%"])
def test_low_confidence_corruption_moves_the_surface_less(corruption):
    """Five views of the same wall region; in view 0 a patch's depth is corrupted. Integrated with that patch at
    low confidence the fused surface stays on the truth; at high confidence the same corruption moves it."""
    scene = make_scene("room", seed=0)
    hw = (60, 80)
    K = intrinsics_from_fov(hw, 60.0)
    target = np.array([3.0, 0.3, 1.2])
    eyes = [np.array([0.3, 0.0, 1.5]) + off for off in
            ([0, 0, 0], [0, 0.25, 0], [0, -0.25, 0], [0, 0, 0.2], [-0.2, 0.1, -0.15])]
    w2cs = [look_at(e[None], target[None])[0] for e in eyes]
    frames = [render(scene, E, K, hw, normals=False, ids=False) for E in w2cs]
    r0, r1, c0, c1 = 20, 40, 28, 52
    truth = frames[0].depth.astype(np.float64)
    assert np.all(np.isfinite(truth[r0:r1, c0:c1]))
    corrupt = truth.copy()
    if corruption == "+10cm":
        corrupt[r0:r1, c0:c1] += 0.10
    else:
        corrupt[r0:r1, c0:c1] *= 1.2

    def fused(patch_conf: float | None) -> float:
        """Median |depth error| of the fused mesh along view 0's rays inside the patch (2 pixels in from its edge)."""
        m = TsdfMap(voxel_size=0.04, depth_max=6.0)
        for i, f in enumerate(frames):
            conf = np.ones(hw, np.float32)
            d = _depth(f)
            if i == 0 and patch_conf is not None:
                d = corrupt.astype(np.float32)
                conf[r0:r1, c0:c1] = patch_conf
            m.integrate(i, d, conf, f.K, f.c2w)
        v, u = np.mgrid[r0 + 2 : r1 - 2, c0 + 2 : c1 - 2]
        hit = _raycast_depth(m.extract_mesh(), w2cs[0], K, np.stack((u.ravel(), v.ravel()), -1).astype(np.float64))
        return float(np.median(np.abs(hit - truth[v.ravel(), u.ravel()])))

    clean, low, high = fused(None), fused(0.1), fused(3.0)
    print(f"corruption {corruption}: surface displacement in the patch (median |dz|): clean {clean * 100:.2f} cm, "
          f"low confidence {low * 100:.2f} cm, high confidence {high * 100:.2f} cm")
    assert clean < 0.005  # exact depth fuses onto the truth
    assert high > 0.02  # the corruption does move the surface at high confidence (the test can fail) ...
    assert low < 0.25 * high and low < 0.01  # ... and much less at low confidence


def _perturb(c2w: np.ndarray, rng: np.random.Generator, deg: float, metres: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.radians(deg)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx
    T = c2w.copy()
    T[:3, :3] = R @ c2w[:3, :3]
    T[:3, 3] += metres * rng.normal(size=3) / np.sqrt(3)
    return T


def test_reintegrate_with_corrected_poses_restores_the_surface(room):
    scene, K, frames = room
    frames = frames[:5]
    rng = np.random.default_rng(1)
    true_poses = [f.c2w for f in frames]
    bad = [true_poses[0]] + [_perturb(T, rng, 3.0, 0.15) for T in true_poses[1:]]
    ref = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(ref, frames)
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(m, frames, bad)
    v_ref = ref.extract_mesh().vertices
    v_bad = m.extract_mesh().vertices
    err_bad = np.abs(scene.sdf(v_bad.astype(np.float64)))
    assert np.mean(err_bad > VOXEL) > 0.05  # the drifted poses do put surface in the wrong place
    n = m.reintegrate({i: T for i, T in enumerate(true_poses)})
    assert n == 5
    v_fix = m.extract_mesh().vertices
    assert len(v_fix) == len(v_ref)
    d = np.concatenate((nearest_distances(v_fix, v_ref), nearest_distances(v_ref, v_fix)))
    assert d.max() < 0.01 * VOXEL  # the same volume: the same surface
    s = m.stats()
    assert s["reintegrations"] == 1 and s["reintegrate_ms_last"] > 0
    # a pose dict with unknown keys is ignored unless strict
    assert m.reintegrate({"nope": np.eye(4)}) == 5
    with pytest.raises(ValueError, match="unknown keyframe"):
        m.reintegrate({"nope": np.eye(4)}, strict=True)


def test_update_poses_refuses_only_the_moved_keyframes(room):
    """Two of five keyframes integrated at drifted poses; update_poses with all five true poses de-integrates those
    two at their old poses and integrates them at the new ones: the surface is the one integrated with the true
    poses from the start (up to float rounding), and the three unmoved keyframes are not touched."""
    scene, K, frames = room
    frames = frames[:5]
    rng = np.random.default_rng(2)
    true_poses = {i: f.c2w for i, f in enumerate(frames)}
    drifted = [true_poses[0], true_poses[1], true_poses[2]] + [_perturb(true_poses[i], rng, 3.0, 0.15) for i in (3, 4)]
    ref = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(ref, frames)
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(m, frames, drifted)
    blocks_before = m.stats()["voxel_blocks"]
    assert m.update_poses(true_poses) == 2
    s = m.stats()
    assert s["reintegrations"] == 0 and s["pose_updates"] == 1 and s["update_keyframes_last"] == 2
    assert s["voxel_blocks"] >= blocks_before  # de-integrated blocks stay allocated (empty) until a rebuild
    v_ref, v = ref.extract_mesh().vertices, m.extract_mesh().vertices
    d = np.concatenate((nearest_distances(v, v_ref), nearest_distances(v_ref, v)))
    assert np.quantile(d, 0.999) < 0.02 * VOXEL and d.max() < 0.5 * VOXEL
    for i in range(5):
        np.testing.assert_array_equal(m.keyframes[i].c2w, true_poses[i])
    # a change below pose_tolerance (a quarter voxel of point motion) re-fuses nothing and keeps the fused pose
    nudged = true_poses[1].copy()
    nudged[0, 3] += 0.1 * VOXEL
    assert m.update_poses({1: nudged}) == 0
    np.testing.assert_array_equal(m.keyframes[1].c2w, true_poses[1])
    # when most keyframes moved, the whole volume is rebuilt (every given pose applied)
    moved = {i: _perturb(T, rng, 1.0, 0.05) for i, T in true_poses.items()}
    assert m.update_poses(moved) == 5 and m.stats()["reintegrations"] == 1
    for i in range(5):
        np.testing.assert_array_equal(m.keyframes[i].c2w, moved[i])


def _sim3(s: float, deg: float, t, axis=(0.3, -0.5, 0.8)) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    th = np.radians(deg)
    C = np.eye(4)
    C[:3, :3] = s * (np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx)
    C[:3, 3] = t
    return C


def test_sim3_corrections_move_and_scale_keyframes_into_the_map(room):
    """Keyframes given in a 'chained' frame that is off the map by a Sim(3) G (scale 1.25, 10 degrees, 0.4 m),
    with their depth in that frame's units: fused as they are, the surface is off; update_poses with the
    per-keyframe correction G (what a pose graph hands out) puts it on the scene; integrating with
    correction=G from the start gives the same volume."""
    scene, K, frames = room
    frames = frames[:4]
    G = _sim3(1.25, 10.0, [0.4, -0.2, 0.1])
    Ginv = np.linalg.inv(G)
    s = 1.25
    local = []
    for f in frames:  # the same views expressed in the chained frame: pose moved by G^-1, depth divided by s
        c2w = f.c2w
        T = np.eye(4)
        T[:3, :3] = (Ginv[:3, :3] * s) @ c2w[:3, :3]
        T[:3, 3] = Ginv[:3, :3] @ c2w[:3, 3] + Ginv[:3, 3]
        local.append((_depth(f) / s, T, f))
    ref = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(ref, frames)
    v_ref = ref.extract_mesh().vertices
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    direct = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    for i, (d, T, f) in enumerate(local):
        m.integrate(i, d, np.ones(HW), f.K, T, f.rgb)
        direct.integrate(i, d, np.ones(HW), f.K, T, f.rgb, correction=G)
    off = np.abs(scene.sdf(m.extract_mesh().vertices.astype(np.float64)))
    assert np.median(off) > 2 * VOXEL  # uncorrected: not on the scene
    # correcting one keyframe de- and re-integrates it alone; then all of them (a rebuild: most moved)
    assert m.update_poses(corrections={0: G}) == 1 and m.stats()["reintegrations"] == 0
    assert m.update_poses(corrections={i: G for i in range(4)}) == 4
    # the same surface: every reference vertex is reproduced, and all but a few of the corrected map's vertices
    # are reference vertices (poses equal up to float rounding can allocate a block more at the truncation edge,
    # which adds a little surface the reference lacks)
    for mm in (m, direct):
        v = mm.extract_mesh().vertices
        assert nearest_distances(v_ref, v).max() < 0.01 * VOXEL
        assert np.mean(nearest_distances(v, v_ref) < 0.01 * VOXEL) > 0.99
    with pytest.raises(ValueError, match="correction of keyframe 1"):
        m.update_poses(corrections={1: np.diag([1.0, 1.0, -1.0, 1.0])})
    with pytest.raises(ValueError, match="not a similarity"):
        m.integrate(9, *local[0][:1], np.ones(HW), K, local[0][1], correction=np.diag([1.0, 2.0, 1.0, 1.0]))


def test_motion_bound_is_the_largest_point_displacement():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, 3] = [0.3, 0.0, 0.4]
    assert _motion_bound(a, b, 2.0) == pytest.approx(0.5)
    c = np.eye(4)
    c[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # 90 degrees: a point at r moves r * sqrt(2)
    assert _motion_bound(a, c, 2.0) == pytest.approx(2.0 * np.sqrt(2.0))
    # and no point within the radius moves further (random points, random rigid change)
    rng = np.random.default_rng(0)
    d = _perturb(np.eye(4), rng, 20.0, 0.3)
    X = rng.normal(size=(2000, 3))
    X *= (1.5 * rng.random(2000) ** (1 / 3) / np.linalg.norm(X, axis=1))[:, None]
    moved = np.linalg.norm(X @ d[:3, :3].T + d[:3, 3] - X, axis=1)
    assert moved.max() <= _motion_bound(np.eye(4), d, 1.5) + 1e-12
    # with depth scales: points map as s R X + t
    moved = np.linalg.norm(1.3 * X @ d[:3, :3].T + d[:3, 3] - 0.9 * X, axis=1)
    assert moved.max() <= _motion_bound(np.eye(4), d, 1.5, 0.9, 1.3) + 1e-12
    assert moved.max() > 0.7 * _motion_bound(np.eye(4), d, 1.5, 0.9, 1.3)  # and it is not loose


def test_store_cap_subsamples_then_drops_the_oldest_keyframes(room):
    scene, K, frames = room
    full = HW[0] * HW[1] * 9 / 1e6  # MB per stored keyframe at full resolution
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0, max_store_mb=3.5 * full)
    _integrate_all(m, frames[:6])
    s = m.stats()
    assert s["store_mb"] <= 3.5 * full and s["subsampled_keyframes"] > 0 and s["dropped_keyframes"] == 0
    assert s["keyframes"] == 6
    # the running bookkeeping equals a recount of the stored arrays
    assert m.store_bytes == sum(kf.depth.nbytes + kf.weight.nbytes + (0 if kf.rgb is None else kf.rgb.nbytes)
                                for kf in m.keyframes.values())
    assert s["subsampled_keyframes"] == sum(kf.level > 0 for kf in m.keyframes.values())
    levels = [kf.level for kf in m.keyframes.values()]
    assert levels == sorted(levels, reverse=True)  # the oldest were halved first
    # a subsampled keyframe still re-integrates onto the surface (its K was scaled with it)
    m.reintegrate()
    v = m.extract_mesh().vertices
    assert np.mean(np.abs(scene.sdf(v.astype(np.float64))) < 2 * VOXEL) > 0.95
    tiny = TsdfMap(voxel_size=VOXEL, depth_max=6.0, max_store_mb=1e-3, min_store_width=48)
    _integrate_all(tiny, frames[:3])
    s = tiny.stats()
    assert s["dropped_keyframes"] == 3 and s["keyframes"] == 0 and s["voxel_blocks"] > 0


def test_save_mesh_ply_writes_a_readable_mesh(room, tmp_path):
    _, _, frames = room
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    _integrate_all(m, frames[:3])
    mesh = m.extract_mesh()
    path = tmp_path / "map_mesh.ply"
    n = m.save_mesh_ply(str(path))
    back = o3d.io.read_triangle_mesh(str(path))
    assert n == len(mesh.vertices) == len(back.vertices) > 1000
    assert len(back.triangles) == len(mesh.faces)
    # the same vertices (Open3D's extraction order varies between calls: match them up) with the same colours
    from scipy.spatial import cKDTree

    dist, match = cKDTree(mesh.vertices).query(np.asarray(back.vertices))
    assert dist.max() < 1e-6 and len(np.unique(match)) == len(mesh.vertices)
    assert back.has_vertex_colors()
    np.testing.assert_allclose(np.asarray(back.vertex_colors) * 255.0, mesh.colors[match], atol=0.6)
    # every face is a triangle of the same vertices (matched through the vertex correspondence)
    tri = np.asarray(back.triangles)
    np.testing.assert_array_equal(np.sort(match[tri], axis=1)[np.lexsort(np.sort(match[tri], axis=1).T)],
                                  np.sort(mesh.faces, axis=1)[np.lexsort(np.sort(mesh.faces, axis=1).T)])
    # an empty map still writes a valid (empty) PLY
    empty = tmp_path / "empty.ply"
    assert TsdfMap(voxel_size=VOXEL).save_mesh_ply(empty) == 0
    assert b"element vertex 0\n" in empty.read_bytes() and b"end_header\n" in empty.read_bytes()


def test_fused_colour_is_the_weighted_mean_colour():
    K = np.array([[40.0, 0.0, 24.0], [0.0, 40.0, 18.0], [0.0, 0.0, 1.0]])
    hw = (37, 49)
    m = TsdfMap(voxel_size=0.04, weight_mode="absolute")
    m.integrate(0, np.full(hw, 2.0), np.full(hw, 1.0), K, np.eye(4), np.full((*hw, 3), [200, 100, 0], np.uint8))
    m.integrate(1, np.full(hw, 2.0), np.full(hw, 3.0), K, np.eye(4), np.full((*hw, 3), [0, 100, 40], np.uint8))
    c = m.extract_mesh().colors
    assert np.abs(c.astype(int) - [50, 100, 30]).max() <= 1


def test_bad_input_is_refused_and_changes_nothing(room):
    _, K, frames = room
    f = frames[0]
    m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
    m.integrate("k0", _depth(f), np.ones(HW), K, f.c2w, f.rgb)
    before = m.extract_mesh().vertices.copy()
    blocks = m.stats()["voxel_blocks"]
    good = dict(depth=_depth(frames[1]), conf=np.ones(HW), K=K, c2w=frames[1].c2w, color=frames[1].rgb)
    nan_pose = f.c2w.copy()
    nan_pose[0, 3] = np.nan
    cases = [
        (dict(depth=np.ones(5)), "depth must be an"),
        (dict(conf=np.ones((10, 10))), "conf shape"),
        (dict(K=np.eye(2)), "K must be"),
        (dict(c2w=nan_pose), "c2w has non-finite"),
        (dict(c2w=np.diag([2.0, 1.0, 1.0, 1.0])), "not a rigid"),
        (dict(c2w=np.eye(3)), "c2w must be a"),
        (dict(color=np.zeros((*HW, 3), np.float32)), "uint8"),
        (dict(color=np.zeros((5, 5, 3), np.uint8)), "color shape"),
        (dict(depth=np.full(HW, np.nan)), "no valid pixel"),
        (dict(depth=np.full(HW, 100.0)), "no valid pixel"),  # all beyond depth_max
        (dict(conf=np.zeros(HW)), "percentile"),  # 'relative' weights need a positive reference confidence
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg):
            m.integrate("k1", **{**good, **bad})
    with pytest.raises(ValueError, match="already integrated"):
        m.integrate("k0", **good)
    with pytest.raises(ValueError, match="non-finite"):  # a bad pose in a batch: none of the batch is applied
        m.reintegrate({"k0": nan_pose})
    assert list(m.keyframes) == ["k0"] and m.stats()["voxel_blocks"] == blocks
    np.testing.assert_array_equal(m.keyframes["k0"].c2w, f.c2w)
    after = m.extract_mesh().vertices
    assert len(after) == len(before)
    assert nearest_distances(after, before).max() < 1e-6
    m.integrate("k1", **good)  # the map still works
    assert m.stats()["keyframes"] == 2
    m.reset()
    assert m.stats()["keyframes"] == 0 and m.stats()["voxel_blocks"] == 0 and len(m.extract_mesh().vertices) == 0
    m.integrate("k0", _depth(f), np.ones(HW), K, f.c2w, f.rgb)  # a key is new again after a reset
    assert len(m.extract_mesh().vertices) == len(before)


def test_torch_kernel_for_cuda_grids_matches_the_numpy_kernel(room):
    """A CUDA grid runs the same integration through torch (DLPack views); open3d-cpu has no CUDA, so the torch
    path is run here on CPU tensors and must give the numpy path's volume."""
    import torch

    _, _, frames = room
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        maps = []
        for torch_path in (False, True):
            m = TsdfMap(voxel_size=VOXEL, depth_max=6.0)
            if torch_path:
                m._xp = _TorchOps("cpu")
            for i, f in enumerate(frames[:3]):
                conf = np.linspace(0.5, 2.0, HW[0] * HW[1], dtype=np.float32).reshape(HW)
                m.integrate(i, _depth(f), conf, f.K, f.c2w, f.rgb)
            m.update_poses({1: _perturb(frames[1].c2w, np.random.default_rng(3), 2.0, 0.1)})
            maps.append(m.extract_mesh())
    finally:
        torch.set_num_threads(threads)
    a, b = maps
    assert len(a.vertices) == len(b.vertices) > 1000
    from scipy.spatial import cKDTree

    dist, match = cKDTree(a.vertices).query(b.vertices)
    assert dist.max() < 1e-5
    assert np.abs(a.colors[match].astype(int) - b.colors).max() <= 1


def test_config_is_validated():
    with pytest.raises(ValueError, match="voxel_size"):
        TsdfConfig(voxel_size=0.0)
    with pytest.raises(ValueError, match="weight_mode"):
        TsdfConfig(weight_mode="median")
    with pytest.raises(ValueError, match="trunc"):
        TsdfConfig(voxel_size=0.05, trunc=0.01)
    with pytest.raises(ValueError, match="device"):
        TsdfMap(device="tpu")
    # derived defaults follow an overridden voxel size (4 voxels of truncation, a quarter voxel of pose tolerance)
    c = TsdfMap(TsdfConfig(), voxel_size=0.02).config
    assert c.truncation == pytest.approx(0.08) and c.motion_tolerance == pytest.approx(0.005)
    assert TsdfConfig(voxel_size=0.02, trunc=0.1).truncation == pytest.approx(0.1)
    if not o3d.core.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            TsdfMap(device="cuda:0")
