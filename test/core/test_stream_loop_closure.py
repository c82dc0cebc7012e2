"""Loop closure on rendered sequences with the geometry oracle: drift injected per window (1 % scale, 0.5 degrees),
a 400-degree orbit that comes back to its start, three sequences that never revisit a place; plus the verification's
checks and the loop edge against the truth.

The oracle has no network, so places are described by the image stand-in descriptor
(:func:`~da3_core.stream.place_recognition.image_descriptor`) and verification windows are exact geometry (plus the
injected drift): these tests exercise the search, verification, graph and re-anchoring code, not the network's
ability to recognise places.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from da3_core.geometry.rigid import invert_rigid
from da3_core.stream.loop_closure import LoopConfig
from da3_core.stream.loop_scenarios import loop_sequence, no_revisit_sequences, run_sequence
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline
from da3_core.stream.place_recognition import Candidate, PlaceDatabase, image_descriptor
from da3_core.stream.pose_graph import relative_error
from da3_core.stream.predictor import OraclePredictor


@pytest.fixture(scope="module")
def loop_seq():
    return loop_sequence(240, 400.0, seed=0)


def test_loop_closure_cuts_drift_on_a_returning_orbit(loop_seq):
    """Must-show: >= 200 frames, 1 % scale and 0.5 degrees of drift per window; the loop is found and accepted and
    the ATE with loop closure is at most a third of the ATE without."""
    assert len(loop_seq.frames) >= 200
    plain = run_sequence(loop_seq, pose_graph=False, loop_closure=False)
    graph_only = run_sequence(loop_seq, pose_graph=True, loop_closure=False)
    closed = run_sequence(loop_seq, pose_graph=True, loop_closure=True)
    print(f"\nloop '{loop_seq.name}', {len(loop_seq.frames)} frames: ATE without loop closure {plain.ate:.4f} m, "
          f"pose graph without loops {graph_only.ate:.4f} m, with loop closure {closed.ate:.4f} m "
          f"(ratio {closed.ate / plain.ate:.3f}); loops: candidates {closed.candidates}, accepted {closed.accepted}, "
          f"rejected {closed.rejected}; graph {closed.stats['graph_nodes']} nodes, optimisation per window "
          f"{closed.stats['graph_optimize_ms']:.2f} ms (last), {closed.stats['graph_optimize_max_ms']:.2f} ms (max)")
    assert plain.ate > 0.05  # the injected drift really hurts
    assert graph_only.ate == pytest.approx(plain.ate, rel=1e-6)  # sequential edges alone change nothing
    assert closed.accepted >= 1 and closed.closed >= 1
    assert closed.ate <= plain.ate / 3


def test_metric_chain_closes_the_loop_with_an_se3_graph(loop_seq):
    """Metric windows (SE(3) chaining, Pose3 graph), 0.5 degrees of heading drift per window: the loop is accepted
    and the SE(3)-aligned ATE drops to at most a third."""
    plain = run_sequence(loop_seq, False, False, 0.0, 0.5, metric=True)
    closed = run_sequence(loop_seq, True, True, 0.0, 0.5, metric=True)
    print(f"\nmetric loop: ATE {plain.ate:.4f} m without, {closed.ate:.4f} m with loop closure "
          f"({closed.accepted} accepted)")
    assert closed.accepted >= 1 and closed.ate <= plain.ate / 3 and plain.ate > 0.01


def test_no_loop_is_accepted_on_sequences_that_never_revisit():
    """Must-show: zero accepted loops on three sequences that never come back; the similarity threshold is lowered
    to 0.5 so that look-alike candidates do reach verification (and are rejected there)."""
    rejected = 0
    for seq in no_revisit_sequences(120):
        out = run_sequence(seq, pose_graph=True, loop_closure=True, loop=LoopConfig(min_similarity=0.5))
        print(f"\nno revisit '{seq.name}': candidates {out.candidates}, accepted {out.accepted}, rejected "
              f"{out.rejected}, ATE {out.ate:.4f} m")
        assert out.accepted == 0
        rejected += out.rejected
    assert rejected > 0  # verification, not the descriptor threshold, kept them out


def test_image_descriptor_finds_the_same_place_again(loop_seq):
    """Frame 0 and the frame one full turn later (the 360-degree point) are more alike than frame 0 and frames
    half a turn away."""
    n = len(loop_seq.frames)
    per_deg = n / 400.0  # the orbit spreads n frames over 400 degrees
    d = [image_descriptor(f.rgb) for f in loop_seq.frames]
    again = int(round(360 * per_deg))
    opposite = [int(round(a * per_deg)) for a in (150, 180, 210)]
    assert float(d[0] @ d[again]) > 0.9
    assert all(float(d[0] @ d[again]) > float(d[0] @ d[k]) + 0.1 for k in opposite)
    db = PlaceDatabase(min_similarity=0.5, min_gap=5, top_k=1)
    for k in range(0, again, 6):
        db.add(k, d[k])
    best = db.query(again, d[again])
    assert best and best[0].match == 0
    assert db.query(3, d[3]) == []  # nothing older than the temporal gap


def _drift_free_pipeline(seq, loop=None):
    oracle = OraclePredictor(lambda f: seq.truth[f.stamp_ns], random_transform=True, seed=4)
    cfg = PipelineConfig(window_size=8, overlap=2, voxel_size=0.05, cloud_conf_percentile=None, keep_depth_frames=0,
                         pose_graph=True, loop_closure=True, loop=loop or LoopConfig())
    pipe = StreamPipeline(oracle, cfg)
    for f in seq.frames:
        pipe.process(f)
    pipe.flush()
    return pipe


def test_loop_edge_equals_the_exact_relative_pose(loop_seq):
    """Without drift chaining is exact, so an accepted loop edge must equal the chained relative pose of its two
    anchor cameras (an independent reference: the edge comes from a separate joint window in its own random
    frame), and the graph then moves nothing."""
    pipe = _drift_free_pipeline(loop_seq)
    loops = pipe.loops
    assert loops is not None and loops.counts["accepted"] >= 1
    for (a, b), T in loops.accepted_edges.items():
        expected = np.linalg.inv(loops.chained_node(a)) @ loops.chained_node(b)
        rot, trans, logs = relative_error(T, expected)
        assert rot < 1e-4 and trans < 1e-5 and logs < 1e-6
    assert loops.graph.n_loops == len(loops.accepted_edges)
    for C in loops.corrections().values():
        assert np.allclose(C, np.eye(4), atol=1e-6)


class _Distorting:
    """The oracle, then a non-uniform depth distortion on the frames after the first ``n`` (a network that got one
    place's geometry wrong) or a rotated second place frame."""

    def __init__(self, inner, n: int, mode: str):
        self.inner, self.n, self.mode = inner, n, mode

    def predict(self, frames):
        pred = self.inner.predict(frames)
        depth, w2c = pred.depth.copy(), pred.w2c.copy()
        if self.mode == "depth":
            ramp = np.linspace(0.7, 1.3, depth.shape[2], dtype=np.float32)
            depth[self.n:] *= ramp[None, None, :]
        elif self.mode == "pose":
            c2w = invert_rigid(w2c[-1])
            a = np.radians(10.0)
            R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
            c2w[:3, :3] = c2w[:3, :3] @ R
            w2c[-1] = invert_rigid(c2w)
        elif self.mode == "raise":
            raise RuntimeError("network failed")
        return replace(pred, depth=depth, w2c=w2c)


@pytest.mark.parametrize("mode,reason", [("depth", "depth_residual"), ("pose", "pose_disagreement"),
                                         ("raise", "predict_failed")])
def test_verification_rejects_inconsistent_windows(loop_seq, mode, reason):
    """The true loop of the orbit, verified by a predictor whose joint window disagrees with the stored places (or
    fails): rejected, with the reason counted, and the stream goes on."""
    pipe = _drift_free_pipeline(loop_seq)
    loops = pipe.loops
    (m, q), _ = next(iter(loops.accepted_edges.items()))
    oracle = OraclePredictor(lambda f: loop_seq.truth[f.stamp_ns], random_transform=True, seed=9)
    loops.predictor = _Distorting(oracle, len(loops.places[m].frames), mode)
    ver = loops.verify(Candidate(q, m, 1.0))
    assert not ver.accepted and ver.reason == reason
    loops.predictor = oracle
    again = loops.verify(Candidate(q, m, 1.0))
    assert again.accepted and again.inlier_ratio > 0.3 and again.depth_residual < 1e-4


def test_off_switches(loop_seq):
    """pose_graph off: no graph, results identical to the plain pipeline; loop_closure off: graph with sequential
    edges only, no candidates searched."""
    frames = loop_seq.frames[:60]
    truth = loop_seq.truth

    def run(**kw):
        oracle = OraclePredictor(lambda f: truth[f.stamp_ns], random_transform=True, seed=2)
        pipe = StreamPipeline(oracle, PipelineConfig(window_size=8, overlap=2, voxel_size=0.05,
                                                     cloud_conf_percentile=None, **kw))
        for f in frames:
            pipe.process(f)
        pipe.flush()
        return pipe

    plain, graph_only = run(), run(pose_graph=True, loop_closure=False)
    assert plain.loops is None and plain.submaps is None
    assert graph_only.loops is not None and graph_only.loops.counts["candidates"] == 0
    assert graph_only.stats()["graph_nodes"] == plain.stats()["windows"]
    np.testing.assert_allclose(graph_only.trajectory()[1], plain.trajectory()[1], atol=1e-9)


def test_published_poses_follow_a_new_correction():
    """A pose published under correction C_old moves to C_new C_old^-1 applied to it: equal to the chained pose
    moved by C_new directly (closed form)."""
    from da3_core.stream.loop_closure import PublishedPoses, apply_sim3_to_pose
    from da3_core.stream.predictor import sim3_matrix

    a = np.radians(30.0)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    chained = sim3_matrix(1.0, Rz.T, np.array([1.0, 2.0, 0.5]))
    C_old, C_new = sim3_matrix(1.1, Rz, np.array([0.2, 0, 0])), sim3_matrix(0.9, Rz.T, np.array([0, -1.0, 3.0]))
    poses = PublishedPoses()
    poses.record(5, 3, C_old, apply_sim3_to_pose(C_old, chained))
    poses.record(6, 4, np.eye(4), chained)
    moved = poses.reanchor({3: C_new, 4: np.eye(4)})
    assert [s for s, _ in moved] == [5]  # window 4's correction did not change
    np.testing.assert_allclose(moved[0][1], apply_sim3_to_pose(C_new, chained), atol=1e-12)
    assert poses.reanchor({3: C_new}) == []
    # many poses of one window share the change; forgotten poses are not moved
    C_later = sim3_matrix(1.2, Rz, np.array([0.0, 0.5, -1.0]))
    for k in range(10, 20):
        poses.record(k, 3, C_new, apply_sim3_to_pose(C_new, chained))
    poses.forget(range(10, 15))
    moved = poses.reanchor({3: C_later})
    assert [s for s, _ in moved] == [5, *range(15, 20)]
    for _, P in moved:
        np.testing.assert_allclose(P, apply_sim3_to_pose(C_later, chained), atol=1e-12)


def test_network_descriptor_is_pooled_from_the_backbone_of_the_same_forward(loop_seq):
    """The tiny embedded network: descriptors come out of the window's own forward (a hook on the backbone), are
    deterministic, equal the pooled backbone tokens of a separate network call, and (a weak check of what a
    descriptor is for, on this small model) a neighbouring view is closer than a view half a turn away."""
    from da3_core.weights.embedded import EMBEDDED_DEFAULT, embedded_default_available

    if not embedded_default_available():
        pytest.skip("embedded default weights not present")
    import torch

    from da3_core.api import DA3
    from da3_core.preprocess import preprocess
    from da3_core.stream.place_recognition import pool_tokens
    from da3_core.stream.predictor import DA3Predictor

    model = DA3.from_pretrained(EMBEDDED_DEFAULT, device="cpu")
    pred = DA3Predictor(model, process_res=140, descriptors=True)
    n = len(loop_seq.frames)
    frames = [loop_seq.frames[i] for i in (0, 1, n * 180 // 400, n * 200 // 400)]
    out = pred.predict(frames)
    again = pred.predict(frames)
    assert out.descriptors is not None and out.descriptors.shape[0] == 4
    np.testing.assert_array_equal(out.descriptors, again.descriptors)
    np.testing.assert_allclose(np.linalg.norm(out.descriptors, axis=1), 1.0, atol=1e-5)
    # independent reference: the backbone called directly on the same preprocessed window
    pre = preprocess([f.rgb for f in frames], np.stack([f.K for f in frames]), None, 140, "upper_bound_resize")
    backbone = next(m for m in model.network.modules() if type(m).__name__ == "Backbone")
    with torch.inference_mode():
        feats = backbone(pre.x, None, "first", (), 1).features[-1][0]
    if backbone.pretrained.cfg.cat_token:  # concatenated [local, global] tokens: the view-local half
        feats = feats[..., : feats.shape[-1] // 2]
    np.testing.assert_allclose(out.descriptors, pool_tokens(feats.float().numpy()), atol=1e-4)
    d = out.descriptors
    print(f"\ntiny network descriptor cosine: neighbour {d[0] @ d[1]:.4f}, half a turn away {d[0] @ d[2]:.4f} / "
          f"{d[0] @ d[3]:.4f}")
    assert d[0] @ d[1] > max(d[0] @ d[2], d[0] @ d[3])


def test_a_failing_graph_step_does_not_cost_the_window(loop_seq, monkeypatch):
    """An exception inside the loop closer is counted; the window is still delivered (uncorrected) and the graph
    restarts with the next window."""
    from da3_core.stream.loop_closure import LoopCloser

    calls = {"n": 0}
    original = LoopCloser.add_window

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoopCloser, "add_window", flaky)
    oracle = OraclePredictor(lambda f: loop_seq.truth[f.stamp_ns], random_transform=True, seed=2)
    pipe = StreamPipeline(oracle, PipelineConfig(window_size=8, overlap=2, voxel_size=0.05, pose_graph=True,
                                                 loop_closure=True))
    results = [r for r in (pipe.process(f) for f in loop_seq.frames[:50]) if r is not None]
    assert len(results) == 8 and pipe.stats()["loop_errors"] == 1
    assert pipe.stats()["graph_nodes"] == 5  # restarted at window 3: windows 3..7 are in the new graph
    assert len(pipe.trajectory()[0]) == 50  # every frame delivered


@pytest.mark.parametrize("h,w,step", [(378, 504, 2), (7, 5, 2), (9, 10, 3), (4, 4, 1)])
def test_place_images_are_the_strided_pixels(h, w, step):
    from da3_core.stream.loop_closure import _subsample_rgb

    rgb = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = _subsample_rgb(rgb, step)
    np.testing.assert_array_equal(out, rgb[::step, ::step])
    assert out.flags.c_contiguous and (step == 1 or not np.shares_memory(out, rgb))
