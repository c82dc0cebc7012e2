"""Photometric window refinement (da3_core.stream.photometric) against rendered ground truth: the true motion and
depth scale of a pair, the rotation limit, a window whose views disagree in scale and whose cameras are unknown,
shared frames reusing their pair, windows it leaves alone, and the pipeline's trajectory with and without it."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

pytest.importorskip("open3d")

from da3_core.data.synthetic import intrinsics_from_fov, make_scene, make_trajectory, render  # noqa: E402
from da3_core.eval.pose_metrics import absolute_trajectory_error  # noqa: E402
from da3_core.geometry.rigid import invert_rigid  # noqa: E402
from da3_core.stream.frame import Frame  # noqa: E402
from da3_core.stream.photometric import (  # noqa: E402
    PhotometricRefiner,
    RefineConfig,
    align_pair,
    block_average,
    downsampled,
    gray_at,
    rotation_angle_deg,
)
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline  # noqa: E402
from da3_core.stream.predictor import WindowPrediction  # noqa: E402

HW = (126, 168)
K = intrinsics_from_fov(HW, 70.0)
N = 14


@lru_cache(maxsize=1)
def walk() -> tuple[list[Frame], list[np.ndarray], list[np.ndarray]]:
    """A room walked in small steps (a robot's: about 0.1-0.3 m and a few degrees per frame): frames, true depth,
    true w2c."""
    scene = make_scene("room", seed=1)
    w2cs = make_trajectory(scene, 26, "walk", seed=1, jitter=False)[:N]
    frames, depths = [], []
    for i, E in enumerate(w2cs):
        r = render(scene, E, K, HW, normals=False, ids=False)
        frames.append(Frame(stamp_ns=1_000_000_000 + i * 100_000_000, rgb=r.rgb, K=K.copy(), frame_id="cam", index=i))
        depths.append(np.where(np.isfinite(r.depth), r.depth, np.nan).astype(np.float32))
    return frames, depths, [np.asarray(E, float) for E in w2cs]


class ScaleForgettingPredictor:
    """The true depth, each view at its own random scale, and every camera at the origin: a network that gets each
    view's depth right up to a factor and has not learned the motion."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.factors: list[np.ndarray] = []

    def predict(self, frames: list[Frame]) -> WindowPrediction:
        _, depths, _ = walk()
        f = np.exp(self.rng.uniform(np.log(0.5), np.log(2.0), len(frames))).astype(np.float32)
        self.factors.append(f)
        depth = np.stack([depths[fr.index] * c for fr, c in zip(frames, f)])
        n = len(frames)
        return WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None, w2c=np.tile(np.eye(4), (n, 1, 1)),
                                K=np.stack([K] * n))


def relative(w2c_a: np.ndarray, w2c_b: np.ndarray) -> np.ndarray:
    return w2c_b @ invert_rigid(w2c_a)


def test_a_pair_gives_the_true_motion_and_the_depth_scale():
    frames, depths, w2cs = walk()
    a, b = 5, 6
    T_true = relative(w2cs[a], w2cs[b])
    assert 0.05 < np.linalg.norm(T_true[:3, 3]) < 0.5  # a robot's step, not a jump
    T, scale, err, source = align_pair(gray_at(frames[a].rgb, HW), depths[a], gray_at(frames[b].rgb, HW),
                                       depths[b] * 2.5, K, {"identity": np.eye(4)}, np.eye(4))
    assert source == "identity"
    # 126 x 168 pixels: a few tenths of a degree and a few per cent of the step (the scale is far tighter)
    assert rotation_angle_deg(T[:3, :3] @ T_true[:3, :3].T) < 0.3
    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.1 * np.linalg.norm(T_true[:3, 3])
    assert scale == pytest.approx(1 / 2.5, rel=0.01)  # b's depth was given 2.5x too large
    assert 0 <= err < 0.05


def test_a_motion_beyond_the_rotation_limit_is_not_taken():
    frames, depths, w2cs = walk()
    a, b = 5, 6
    T_true = relative(w2cs[a], w2cs[b])
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    prior = np.eye(4)
    prior[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # 20 degrees from anything the images can say
    T, scale, _, source = align_pair(gray_at(frames[a].rgb, HW), depths[a], gray_at(frames[b].rgb, HW), depths[b], K,
                                     {"identity": np.eye(4), "true": T_true}, prior, RefineConfig(max_rotation_deg=6.0))
    assert source == "coasted"
    np.testing.assert_array_equal(T, prior)
    assert np.isfinite(scale) and scale > 0
    # within the limit the same starts are taken
    _, _, _, source = align_pair(gray_at(frames[a].rgb, HW), depths[a], gray_at(frames[b].rgb, HW), depths[b], K,
                                 {"identity": np.eye(4)}, T_true, RefineConfig(max_rotation_deg=6.0))
    assert source == "identity"


def check_window(frames: list[Frame], pred: WindowPrediction, out: WindowPrediction, w2cs: list[np.ndarray],
                 depths: list[np.ndarray]) -> None:
    """Every view in one depth scale (true / refined the same factor for all) and the cameras the truth's in it."""
    factors = np.array([np.nanmedian(out.depth[k] / depths[f.index]) for k, f in enumerate(frames)])
    np.testing.assert_allclose(factors / factors[0], 1.0, rtol=0.02)
    for k in range(1, len(frames)):
        T_true = relative(w2cs[frames[0].index], w2cs[frames[k].index])
        T = relative(out.w2c[0], out.w2c[k])
        assert rotation_angle_deg(T[:3, :3] @ T_true[:3, :3].T) < 0.5
        t_true = factors[0] * T_true[:3, 3]
        assert np.linalg.norm(T[:3, 3] - t_true) < 0.15 * np.linalg.norm(t_true)


def test_a_window_whose_views_disagree_in_scale_is_made_consistent():
    frames, depths, w2cs = walk()
    window = frames[2:6]
    predictor = ScaleForgettingPredictor(seed=1)
    pred = predictor.predict(window)
    assert np.ptp(np.log(predictor.factors[0])) > 0.3  # the views really disagree
    refiner = PhotometricRefiner()
    out = refiner.refine(window, pred)
    check_window(window, pred, out, w2cs, depths)
    np.testing.assert_array_equal(out.w2c[0], pred.w2c[0])  # the first view stays where the network put it
    np.testing.assert_array_equal(out.depth[0], pred.depth[0])
    assert "refine_s" in out.timings and refiner.counts["windows_refined"] == 1
    assert sum(v for k, v in refiner.counts.items() if k.startswith("pairs_")) == 3


def test_shared_frames_reuse_their_pair():
    frames, depths, w2cs = walk()
    predictor = ScaleForgettingPredictor(seed=2)
    refiner = PhotometricRefiner()
    first = refiner.refine(frames[0:4], predictor.predict(frames[0:4]))
    second = refiner.refine(frames[2:6], predictor.predict(frames[2:6]))
    assert refiner.counts["pairs_reused"] == 1  # frames 2 -> 3
    check_window(frames[2:6], None, second, w2cs, depths)
    # the shared pair has one motion and one scale ratio in both windows (in each window's own units)
    T1, T2 = relative(first.w2c[2], first.w2c[3]), relative(second.w2c[0], second.w2c[1])
    np.testing.assert_allclose(T1[:3, :3], T2[:3, :3], atol=1e-12)
    u1, u2 = np.nanmedian(first.depth[2]), np.nanmedian(second.depth[0])
    np.testing.assert_allclose(T1[:3, 3] / u1, T2[:3, 3] / u2, rtol=1e-6)  # float32 depth medians
    np.testing.assert_allclose(np.nanmedian(first.depth[3]) / u1, np.nanmedian(second.depth[1]) / u2, rtol=1e-6)
    refiner.reset()
    refiner.refine(frames[2:6], predictor.predict(frames[2:6]))
    assert refiner.counts["pairs_reused"] == 1  # forgotten


def test_windows_it_does_not_apply_to_pass_through():
    frames, _, _ = walk()
    pred = ScaleForgettingPredictor().predict(frames[:3])
    refiner = PhotometricRefiner()
    for other in (replace(pred, is_metric=True), replace(pred, pose_conditioned=True)):
        assert refiner.refine(frames[:3], other) is other
    two_cameras = [frames[0], replace(frames[1], camera=1), frames[2]]
    assert refiner.refine(two_cameras, pred) is pred
    blind = replace(pred, depth=np.concatenate([pred.depth[:1] * np.nan, pred.depth[1:]]))
    assert refiner.refine(frames[:3], blind) is blind
    assert refiner.counts["windows_unchanged"] == 3 and refiner.counts["windows_without_depth"] == 1
    with pytest.raises(ValueError, match="max_rotation_deg"):
        RefineConfig(max_rotation_deg=0.0)
    with pytest.raises(ValueError, match="pose_refine"):
        StreamPipeline(ScaleForgettingPredictor(), PipelineConfig(pose_refine="on"))


def test_the_pipeline_chains_a_scale_forgetting_network_into_the_true_path():
    """Windows of 4 sharing 2 from a network that forgets each view's scale and the motion: without refinement the
    chained path is far off (a drifting scale, cameras on a spot); with it the path is the truth's up to Sim(3)."""
    frames, _, w2cs = walk()

    def run(refine: str) -> float:
        cfg = PipelineConfig(window_size=4, overlap=2, voxel_size=0.1, cloud_conf_percentile=None, pose_refine=refine)
        pipe = StreamPipeline(ScaleForgettingPredictor(seed=3), cfg)
        for f in frames:
            pipe.process(f)
        stamps, c2w = pipe.trajectory()
        index = {f.stamp_ns: f.index for f in frames}
        gt = np.stack([w2cs[index[int(s)]] for s in stamps])
        extent = np.ptp(np.stack([invert_rigid(E)[:3, 3] for E in gt]), axis=0).max()
        return absolute_trajectory_error(np.stack([invert_rigid(c) for c in c2w]), gt).ate_rmse / extent

    off, on = run("off"), run("photometric")
    print(f"ATE / extent: off {off:.4f}, photometric {on:.4f}")
    assert on < 0.02 and off > 5 * on


def test_downsampling_keeps_the_rays_of_the_blocks():
    """Block-averaged by 3, a block's pixel is the ray through its pixels' mean position (closed form: an image whose
    value is its column, another its row); a NaN spoils only its block; small images stay as they are."""
    H, W = 30, 42
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = np.ones((H, W), np.float32)
    depth[4, 7] = np.nan
    Kf = np.array([[50.0, 0, 20.5], [0, 50.0, 14.0], [0, 0, 1]])
    gray_c, depth_s, Ks = downsampled(cols, depth, Kf, max_side=14)
    gray_r = block_average(rows, 3)
    assert gray_c.shape == depth_s.shape == (10, 14)
    v, u = np.mgrid[0:10, 0:14]
    full = np.stack([gray_c.ravel(), gray_r.ravel(), np.ones(gray_c.size)])  # each block's mean pixel, full size
    small = Ks @ np.linalg.inv(Kf) @ full
    np.testing.assert_allclose(small[0], u.ravel(), atol=1e-5)
    np.testing.assert_allclose(small[1], v.ravel(), atol=1e-5)
    assert np.isnan(depth_s[1, 2]) and np.isfinite(depth_s).sum() == depth_s.size - 1
    same = downsampled(cols, depth, Kf, max_side=42)
    assert same[0] is cols and same[2] is Kf


def mounted(E: np.ndarray, yaw_deg: float = 25.0, side_m: float = 0.12) -> np.ndarray:
    """w2c of a second camera on the same rig: turned by ``yaw_deg`` and ``side_m`` to the side of the first."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    M = np.eye(4)  # T(cam1 <- cam0)
    M[:3, :3] = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
    M[:3, 3] = M[:3, :3] @ np.array([-side_m, 0.0, 0.0])
    return M @ E


@lru_cache(maxsize=1)
def rig_walk() -> tuple[list[Frame], list[np.ndarray], list[np.ndarray]]:
    """Two cameras on the walk's rig, steps 0-7: frames (step by step, cameras in index order), depth, w2c."""
    frames0, depths0, w2cs0 = walk()
    scene = make_scene("room", seed=1)
    frames, depths, w2cs = [], [], []
    for i in range(8):
        E1 = mounted(w2cs0[i])
        r = render(scene, E1, K, HW, normals=False, ids=False)
        frames += [replace(frames0[i], index=len(frames)),
                   replace(frames0[i], rgb=r.rgb, frame_id="cam1", camera=1, index=len(frames) + 1)]
        depths += [depths0[i], np.where(np.isfinite(r.depth), r.depth, np.nan).astype(np.float32)]
        w2cs += [w2cs0[i], E1]
    return frames, depths, w2cs


def conditioned(frames: list[Frame], depths: list[np.ndarray], w2cs: list[np.ndarray], factors) -> WindowPrediction:
    """A window conditioned on the true metric poses whose depth misses the truth by a factor per view (the
    network's conditioned scale)."""
    depth = np.stack([depths[f.index] * np.float32(c) for f, c in zip(frames, factors)])
    return WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None, K=np.stack([K] * len(frames)),
                            w2c=np.stack([w2cs[f.index] for f in frames]), is_metric=True, pose_conditioned=True)


def test_a_window_conditioned_on_metric_poses_gets_metric_depth():
    """The given cameras keep their poses; every view's depth, 0.6-1.7x off, comes out in metres (within the
    alignment's few per cent), camera by camera on a rig; a window whose given cameras do not move keeps the last
    scale."""
    frames, depths, w2cs = walk()
    factors = [1.6, 0.7, 1.2, 1.7]
    window = frames[4:8]
    pred = conditioned(window, depths, w2cs, factors)
    refiner = PhotometricRefiner()
    out = refiner.refine(window, pred)
    np.testing.assert_array_equal(out.w2c, pred.w2c)
    errors = [np.nanmedian(out.depth[k] / depths[f.index]) for k, f in enumerate(window)]
    np.testing.assert_allclose(errors, 1.0, rtol=0.06)
    assert refiner.counts["windows_scaled_by_poses"] == 1
    # the robot stands still: nothing to measure, the last metres per unit are kept
    still = [replace(frames[7], stamp_ns=frames[7].stamp_ns + k) for k in range(1, 4)]
    held = refiner.refine(still, conditioned(still, depths, w2cs, [1.6, 1.6, 1.6]))
    assert refiner.counts["scale_kept"] == 1
    # its first view is 1.6x off as the first window's first view was: the kept metres per unit put it where that was
    np.testing.assert_allclose(np.nanmedian(held.depth[0] / depths[7]), errors[0], rtol=1e-5)

    rig_frames, rig_depths, rig_w2cs = rig_walk()
    window = rig_frames[6:12]  # steps 3, 4, 5 of both cameras
    factors = [1.5, 0.6, 1.3, 0.8, 1.1, 1.7]
    out = PhotometricRefiner().refine(window, conditioned(window, rig_depths, rig_w2cs, factors))
    errors = [np.nanmedian(out.depth[k] / rig_depths[f.index]) for k, f in enumerate(window)]
    np.testing.assert_allclose(errors, 1.0, rtol=0.08)


def test_a_relative_rig_gets_its_metric_path_from_the_images():
    """Two rendered cameras on a rig and a network that gives each window its own scale (0.3-0.54x, its views within
    5 % of it) and garbage cameras (baselines anything): with the photometric refinement the pipeline reads the
    metric scale across the calibrated mounts and the motion from each camera's frames, and the path comes out in
    metres (SE(3) alignment, no scale); with it off the scale comes from the garbage baselines and the path is far
    off."""
    from da3_core.stream.rig import RigWindow

    frames, _, w2cs = rig_walk()
    mounts = [np.eye(4), invert_rigid(mounted(np.eye(4)))]  # T(rig <- camera)
    frames = [replace(f, mount=mounts[f.camera]) for f in frames]

    class RigForgetting(ScaleForgettingPredictor):
        def predict(self, window: list[Frame]) -> WindowPrediction:
            _, depths, _ = rig_walk()
            f = 0.4 * np.exp(self.rng.uniform(-0.3, 0.3) + self.rng.uniform(-0.05, 0.05, len(window)))
            depth = np.stack([depths[fr.index] * np.float32(c) for fr, c in zip(window, f)])
            garbage = np.tile(np.eye(4), (len(window), 1, 1))
            garbage[:, :3, 3] = self.rng.normal(0.0, 0.3, (len(window), 3))
            return WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None, w2c=garbage,
                                    K=np.stack([K] * len(window)))

    def run(refine: str) -> tuple[float, StreamPipeline]:
        cfg = PipelineConfig(window_size=6, overlap=2, voxel_size=0.1, cloud_conf_percentile=None, pose_refine=refine)
        pipe = StreamPipeline(RigForgetting(seed=2), cfg, window=RigWindow(2, steps=3, overlap_steps=1))
        for f in frames:
            pipe.process(f)
        stamps, c2w = pipe.trajectory()
        index = {f.stamp_ns: f.index for f in frames if f.camera == 0}
        gt = np.stack([w2cs[index[int(s)]] for s in stamps])
        extent = np.ptp(np.stack([invert_rigid(E)[:3, 3] for E in gt]), axis=0).max()
        ate = absolute_trajectory_error(np.stack([invert_rigid(c) for c in c2w]), gt, with_scale=False).ate_rmse
        return ate / extent, pipe

    (off, _), (on, pipe) = run("off"), run("photometric")
    print(f"metric ATE / extent: off {off:.3f}, photometric {on:.3f}")
    assert pipe.is_metric and pipe.counts["rig_scale_images"] >= 2
    assert pipe.refiner.counts["rig_windows_refined"] >= 2
    assert on < 0.05 and off > 4 * on
    assert pipe.rig_scale is not None
    pipe.reset()  # a new start measures its scale afresh (not within 2x of the old one)
    assert pipe.rig_scale is None
