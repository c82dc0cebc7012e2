"""Multi-view depth refinement (da3_core.stream.multiview_depth) against closed-form geometry and rendered ground
truth: the sweep's cost is lowest at the true depth of a textured plane, a view whose depth is off by a factor (or
by a ramp) is brought back to the rendered truth, untextured and invalid pixels are left alone, in the pipeline
the refinement changes the delivered depth, not the cameras; and the same sweep across a rig's calibrated mounts
gives the rig's metric scale where the predicted baselines are wrong."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.frame import Frame
from da3_core.stream.multiview_depth import (
    MultiViewDepthConfig,
    MultiViewDepthRefiner,
    neighbour_views,
    parabola_offset,
    refine_view_depth,
    step_views,
    sweep_costs,
)
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.predictor import WindowPrediction
from da3_core.stream.rig import align_to_rig, image_rig_scale, rig_scale

pytest.importorskip("open3d")  # test_stream_photometric needs it
from test_stream_photometric import HW, K, mounted, rig_walk, walk  # noqa: E402  (rendered room walks)


def abs_rel(depth: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(depth) & np.isfinite(truth) & (truth > 0)
    return float(np.mean(np.abs(depth[ok] - truth[ok]) / truth[ok]))


def plane_view(cam_x: float, z: float = 2.0) -> np.ndarray:
    """Grey image of a textured fronto-parallel plane at depth ``z`` seen by a camera at (cam_x, 0, 0) looking down
    +z: pixel (u, v) sees the plane point X = cam_x + (u - cx) / fx * z, Y = (v - cy) / fy * z (closed form)."""
    v, u = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    X = cam_x + (u - K[0, 2]) / K[0, 0] * z
    Y = (v - K[1, 2]) / K[1, 1] * z
    tex = (np.sin(7.1 * X + 1.3) * np.cos(5.3 * Y) + 0.5 * np.sin(13.7 * X - 9.1 * Y) + 0.3 * np.cos(21.0 * X + 2.0))
    return (0.5 + 0.2 * tex).astype(np.float32)


def translated(cam_x: float) -> np.ndarray:
    E = np.eye(4)  # w2c of a camera at (cam_x, 0, 0)
    E[0, 3] = -cam_x
    return E


def test_neighbours_are_the_nearest_views_of_the_same_camera():
    cameras = [0, 1, 0, 1, 0, 0]
    assert neighbour_views(cameras, 2, 1) == [0, 4]
    assert neighbour_views(cameras, 2, 5) == [0, 4, 5]
    assert neighbour_views(cameras, 5, 2) == [4, 2]
    assert neighbour_views(cameras, 1, 2) == [3]
    assert neighbour_views([0], 0, 3) == []


def test_the_parabola_finds_the_vertex_of_sampled_quadratics():
    """Costs a (x - x0)^2 + c sampled at x = -1, 0, 1 put the vertex at x0 (closed form); flat, downward,
    too little curved or non-finite samples give 0."""
    x0 = np.array([0.3, -0.45, 0.0])
    a = np.array([2.0, 0.5, 1.0])
    cost = [a * (x - x0) ** 2 + 0.1 for x in (-1.0, 0.0, 1.0)]
    np.testing.assert_allclose(parabola_offset(*cost), x0, atol=1e-12)
    assert parabola_offset(1.0, 1.0, 1.0) == 0.0 and parabola_offset(0.0, 1.0, 0.0) == 0.0
    assert parabola_offset(np.inf, 0.0, 1.0) == 0.0
    barely = (1.0 + 1e-10, 1.0, 1.0)  # curvature 1e-10: a vertex half a step up, unless that is below min_curve
    assert parabola_offset(*barely) == pytest.approx(0.5, rel=1e-4)
    assert parabola_offset(*barely, min_curve=1e-9) == 0.0


def test_the_sweep_is_lowest_at_the_true_depth_of_a_plane():
    """A plane at 2 m seen from x = 0 and x = +-0.15 m: at every textured pixel inside the neighbours the cost is
    lowest at factor 1 of the true depth (an odd number of factors puts 1 on the grid), and a depth given 1.3x too
    far is found to be 1 / 1.3 of itself."""
    cfg = MultiViewDepthConfig(factors=21, min_factor=0.5, max_factor=2.0)
    others = [(plane_view(x), K, translated(x)) for x in (-0.15, 0.15)]
    truth = np.full(HW, 2.0, np.float32)
    costs = sweep_costs(plane_view(0.0), truth, K, translated(0.0), others, cfg.log_factors, cfg.patch)
    seen = np.isfinite(costs).all(axis=0)
    assert seen.mean() > 0.5
    best = cfg.log_factors[np.argmin(np.where(np.isfinite(costs), costs, np.inf), axis=0)]
    assert np.mean(np.abs(best[seen]) < 1e-9) > 0.98
    refined, info = refine_view_depth(plane_view(0.0), truth * 1.3, K, translated(0.0), others, cfg)
    assert info.applied and info.matched > 0.5
    assert info.median_factor == pytest.approx(1 / 1.3, rel=0.02)
    assert abs_rel(refined, truth) < 0.02


def test_untextured_and_invalid_pixels_are_left_alone():
    flat = np.full(HW, 0.5, np.float32)
    others = [(flat, K, translated(0.15))]
    depth = np.full(HW, 2.6, np.float32)
    out, info = refine_view_depth(flat, depth, K, translated(0.0), others)
    assert not info.applied and info.matched == 0.0 and out is depth
    holes = depth.copy()
    holes[:40] = np.nan  # sky / invalid
    out, info = refine_view_depth(plane_view(0.0), holes, K, translated(0.0), [(plane_view(0.15), K,
                                                                                 translated(0.15))])
    assert info.applied and np.isnan(out[:40]).all() and np.isfinite(out[40:]).all()
    with pytest.raises(ValueError, match="one shape"):
        refine_view_depth(plane_view(0.0), depth[:-1], K, translated(0.0), others)
    with pytest.raises(ValueError, match="odd"):
        MultiViewDepthConfig(patch=4)


def ramp(shape: tuple[int, int]) -> np.ndarray:
    """A network's low-frequency error: 0.75x at the left edge to 1.35x at the right."""
    return np.linspace(0.75, 1.35, shape[1], dtype=np.float32)[None, :].repeat(shape[0], 0)


class RampPredictor:
    """The true cameras (relative to the window's first) and the true depth times :func:`ramp`: right motion, depth
    right in shape only up to a smooth error."""

    def predict(self, frames: list[Frame]) -> WindowPrediction:
        _, depths, w2cs = walk()
        first = invert_rigid(w2cs[frames[0].index])
        depth = np.stack([depths[f.index] * ramp(HW) for f in frames])
        n = len(frames)
        return WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None,
                                w2c=np.stack([w2cs[f.index] @ first for f in frames]), K=np.stack([K] * n))


def test_a_window_of_rendered_views_gets_its_depth_back():
    """Six rendered views with their true cameras and depth bent by a 0.75-1.35x ramp: every view's depth comes
    back to within a few per cent of the truth; the views of another camera are not used."""
    frames, depths, _ = walk()
    pred = RampPredictor().predict(frames[:6])
    before = np.mean([abs_rel(pred.depth[k], depths[k]) for k in range(6)])
    refiner = MultiViewDepthRefiner()
    out = refiner.refine(frames[:6], pred)
    after = [abs_rel(out.depth[k], depths[k]) for k in range(6)]
    print(f"AbsRel {before:.3f} -> {np.round(after, 3)}")
    assert before > 0.12 and max(after) < 0.5 * before and np.mean(after) < 0.065
    assert refiner.counts["views_corrected"] == 6 and "depth_refine_s" in out.timings
    np.testing.assert_array_equal(out.w2c, pred.w2c)
    alone = [replace(f, camera=k) for k, f in enumerate(frames[:6])]  # six cameras, one view each
    assert refiner.refine(alone, pred) is pred
    conditioned = replace(pred, pose_conditioned=True)  # odometry's poses: left as they are
    assert refiner.refine(frames[:6], conditioned) is conditioned
    assert refiner.counts["windows_unchanged"] == 2


def test_the_pipeline_refines_the_delivered_depth_and_keeps_the_cameras():
    frames, depths, _ = walk()

    def run(depth_refine: str):
        cfg = PipelineConfig(window_size=6, overlap=3, voxel_size=0.1, cloud_conf_percentile=None,
                             depth_refine=depth_refine)
        pipe = StreamPipeline(RampPredictor(), cfg)
        delivered = {}
        for f in frames:
            result = pipe.process(f)
            for cf in result.new_frames if result is not None else ():
                delivered[cf.index] = cf.depth
        return pipe, delivered

    (off, depth_off), (on, depth_on) = run("off"), run("multiview")
    stamps_off, c2w_off = off.trajectory()
    stamps_on, c2w_on = on.trajectory()
    np.testing.assert_array_equal(stamps_off, stamps_on)
    np.testing.assert_allclose(c2w_on, c2w_off, atol=1e-9)
    assert sorted(depth_on) == sorted(depth_off) and len(depth_on) >= 9

    def scaled(d, g):
        ok = np.isfinite(d) & np.isfinite(g)
        return abs_rel(d * np.median(g[ok] / d[ok]), g)  # the chain's scale is the first window's

    err_off = np.mean([scaled(depth_off[i], depths[i]) for i in depth_off])
    err_on = np.mean([scaled(depth_on[i], depths[i]) for i in depth_on])
    print(f"delivered depth AbsRel off {err_off:.3f}, multiview {err_on:.3f}")
    assert err_on < 0.5 * err_off
    assert on.depth_refiner.counts["views_corrected"] == len(depth_on) and off.depth_refiner is None
    with pytest.raises(ValueError, match="depth_refine"):
        StreamPipeline(RampPredictor(), PipelineConfig(depth_refine="on"))


def test_a_rigs_images_give_its_metric_scale_where_the_predicted_baselines_are_wrong():
    """Two rendered cameras on a rig (25 deg and 0.12 m apart), two steps; the depth right up to a factor of
    1 / 3.7, the cameras the network's garbage (baselines anything): the images across the calibrated mounts give
    the scale to 2 %; where the images cannot say (no texture, or beyond 2x of the last window's scale) the last
    window's scale is kept, else the baselines' is used."""
    frames, depths, _ = rig_walk()
    mounts = [np.eye(4), invert_rigid(mounted(np.eye(4)))]  # T(rig <- camera)
    frames = [replace(f, mount=mounts[f.camera]) for f in frames[:4]]
    rng = np.random.default_rng(0)
    shaken = np.stack([np.eye(4)] * 4)
    shaken[:, :3, 3] = rng.normal(0.0, 0.5, (4, 3))
    depth = np.stack([depths[f.index] / np.float32(3.7) for f in frames])
    pred = WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None, w2c=shaken, K=np.stack([K] * 4))
    baselines = rig_scale(frames, np.linalg.inv(shaken), 1)
    assert abs(baselines / 3.7 - 1.0) > 0.3  # what the baselines say is far off
    assert image_rig_scale(frames, pred, 1, initial=baselines) == pytest.approx(3.7, rel=0.02)
    aligned, s, source = align_to_rig(frames, pred, 1, scale_from="images")
    assert source == "images" and s == pytest.approx(3.7, rel=0.02)
    for f, d in zip(frames, aligned.depth):
        assert np.nanmedian(d / depths[f.index]) == pytest.approx(1.0, rel=0.02)
    # a later window: the sweep stays within 2x of the last window's scale, and keeps that where the truth is beyond
    assert align_to_rig(frames, pred, 1, scale_from="images", previous=3.0)[2] == "images"
    assert align_to_rig(frames, pred, 1, scale_from="images", previous=1.2)[1:] == (1.2, "kept")
    blank = [replace(f, rgb=np.full_like(f.rgb, 128)) for f in frames]
    assert image_rig_scale(blank, pred, 1) is None
    assert align_to_rig(blank, pred, 1, scale_from="images", previous=2.5)[1:] == (2.5, "kept")
    assert align_to_rig(blank, pred, 1, scale_from="images")[1:] == (pytest.approx(baselines), "baselines")
    assert align_to_rig(frames, pred, 1)[1:] == (pytest.approx(baselines), "baselines")
    with pytest.raises(ValueError, match="scale_from"):
        align_to_rig(frames, pred, 1, scale_from="odometry")


def test_a_rigs_cameras_of_one_step_refine_each_other_even_on_given_poses():
    """Two rendered cameras of a rig, three steps, the true poses given (odometry-conditioned) and each view's
    depth 1.3x or 0.75x off: with the rig's step tolerance each view is swept against the other camera of its step
    (their relative pose is the mount's) and comes back to within a few per cent; the same camera's other steps are
    not used on given poses (a window of one camera on given poses stays unchanged)."""
    frames, depths, w2cs = rig_walk()
    window = frames[:6]
    depth = np.stack([depths[f.index] * np.float32(1.3 if k % 3 else 0.75) for k, f in enumerate(window)])
    pred = WindowPrediction(depth=depth, conf=np.ones_like(depth), sky=None, K=np.stack([K] * 6),
                            w2c=np.stack([w2cs[f.index] for f in window]), is_metric=True, pose_conditioned=True)
    assert step_views(window, 2, 1) == [3] and step_views(window, 2, 0) == []
    before = np.mean([abs_rel(pred.depth[k], depths[f.index]) for k, f in enumerate(window)])
    refiner = MultiViewDepthRefiner()
    out = refiner.refine(window, pred, step_ns=1)
    after = [abs_rel(out.depth[k], depths[f.index]) for k, f in enumerate(window)]
    print(f"AbsRel {before:.3f} -> {np.round(after, 3)}")
    assert before > 0.2 and max(after) < 0.25 * before
    assert refiner.counts["views_corrected"] == 6
    one_camera = [f for f in window if f.camera == 0]
    sub = replace(pred, depth=pred.depth[::2], conf=pred.conf[::2], K=pred.K[::2], w2c=pred.w2c[::2])
    assert refiner.refine(one_camera, sub, step_ns=1) is sub
