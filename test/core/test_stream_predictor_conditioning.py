"""DA3Predictor's pose-conditioned path (known w2c + K on every frame) and the chaining of conditioned windows."""

import numpy as np
import pytest
from test_stream_scene import make_frames

from da3_core.stream.chaining import WindowChainer
from da3_core.stream.predictor import DA3Predictor


class _ConditionedFake:
    """Stands in for da3_core.api.DA3 and behaves like its conditioned path: with extrinsics (and
    align_to_input_ext_scale) the given poses come back, ``depth_units == "input_extrinsics"``, ``is_metric`` False
    (the API does not know the poses' units). Depth: the truth (by image identity) when given, else ones."""

    def __init__(self, depth_by_image=None):
        self.calls = []
        self.depth_by_image = depth_by_image or {}

    def predict(self, images, intrinsics=None, process_res=504, ref_view="saddle_balanced", use_ray_pose=False,
                extrinsics=None, align_to_input_ext_scale=True):
        from da3_core.api import Prediction

        self.calls.append({"K": intrinsics, "extrinsics": extrinsics, "align": align_to_input_ext_scale})
        n, (h, w) = len(images), images[0].shape[:2]
        depth = np.stack([self.depth_by_image.get(id(im), np.ones((h, w))) for im in images]).astype(np.float32)
        if extrinsics is not None:
            return Prediction(depth=depth, conf=None, sky=None, extrinsics=np.asarray(extrinsics),
                              intrinsics=intrinsics,
                              is_metric=False, depth_units="input_extrinsics")
        E = np.tile(np.eye(4), (n, 1, 1))
        E[:, 0, 3] = np.arange(n)  # predicted: some other frame
        return Prediction(depth=depth, conf=None, sky=None, extrinsics=E, intrinsics=intrinsics, is_metric=False)


def posed_frames(n, seed=0):
    frames, truth = make_frames(n, seed=seed)
    for f in frames:
        f.pose_w2c = truth[f.stamp_ns][1].copy()  # the truth's world plays odom
    return frames, truth


def test_conditioned_window_passes_w2c_and_K_and_reports_metric():
    frames, _ = posed_frames(4)
    model = _ConditionedFake()
    pred = DA3Predictor(model, process_res=280).predict(frames)
    call = model.calls[0]
    np.testing.assert_array_equal(call["extrinsics"], np.stack([f.pose_w2c for f in frames]))
    assert call["extrinsics"].shape == (4, 4, 4) and call["extrinsics"].dtype == np.float64
    np.testing.assert_array_equal(call["K"], np.stack([f.K for f in frames]))
    assert call["align"] is True
    np.testing.assert_array_equal(pred.w2c, np.stack([f.pose_w2c for f in frames]))
    assert pred.is_metric and pred.pose_conditioned  # TF odometry: metres (REP-103)
    relative = DA3Predictor(model, pose_is_metric=False)
    assert not relative.predict(frames).is_metric  # e.g. monocular-SLAM poses: their own units
    assert relative.counts == {"pose_conditioned": 1}


@pytest.mark.parametrize("change, why", [
    ("one_pose_missing", "missing_poses"),
    ("one_K_missing", "no_intrinsics"),
    ("standing_still", "small_baseline"),
    ("straight_line", "collinear_poses"),
    ("disabled", None),
])
def test_unconditioned_fallbacks(change, why):
    frames, _ = posed_frames(4)
    kwargs = {}
    if change == "one_pose_missing":
        frames[2].pose_w2c = None
    elif change == "one_K_missing":
        frames[1].K = None
    elif change == "standing_still":
        for f in frames:
            f.pose_w2c = frames[0].pose_w2c.copy()
            f.pose_w2c[:3, 3] += 1e-4 * np.random.default_rng(0).normal(size=3)  # odometry jitter
    elif change == "straight_line":
        for k, f in enumerate(frames):
            f.pose_w2c = frames[0].pose_w2c.copy()
            f.pose_w2c[:3, 3] -= f.pose_w2c[:3, :3] @ np.array([0.0, 0.3 * k, 0.0])  # centre moves along world y
    else:
        kwargs["use_known_poses"] = False
    model = _ConditionedFake()
    predictor = DA3Predictor(model, **kwargs)
    if change == "one_K_missing":  # the fake predicts no K: give it one so the unconditioned call succeeds
        model.predict = _with_K(model.predict, frames[0].K)
    pred = predictor.predict(frames)
    assert model.calls[0]["extrinsics"] is None
    assert not pred.is_metric and not pred.pose_conditioned  # the network's own (relative) units
    assert predictor.counts == ({f"pose_unconditioned_{why}": 1} if why else {})


def _with_K(predict, K):
    def wrapped(images, intrinsics=None, **kw):
        out = predict(images, intrinsics=intrinsics, **kw)
        out.intrinsics = np.broadcast_to(K, (len(images), 3, 3)).copy()
        return out
    return wrapped


def test_windows_without_any_pose_are_not_counted():
    frames, _ = make_frames(3)
    predictor = DA3Predictor(_ConditionedFake())
    predictor.predict(frames)
    assert predictor.counts == {}


def test_conditioned_metric_windows_chain_se3_with_the_odom_transform():
    """Windows conditioned on odometry are in the odom frame, metric: the chainer aligns later windows with SE(3)
    (scale 1) and recovers the same odom -> map transform as the first window (map = the first camera)."""
    frames, truth = posed_frames(14)
    model = _ConditionedFake({id(f.rgb): truth[f.stamp_ns][0] for f in frames})
    predictor = DA3Predictor(model)
    chainer = WindowChainer()  # auto: SE(3) for metric windows
    w2c0 = truth[frames[0].stamp_ns][1]
    window, overlap = 6, 2
    starts = range(0, len(frames) - overlap, window - overlap)
    for k, s in enumerate(starts):
        win = frames[s:s + window]
        res = chainer.add(win, predictor.predict(win), overlap)
        assert res.is_metric and res.scale == 1.0 and res.method == ("first" if k == 0 else "poses")
        np.testing.assert_allclose(res.transform, w2c0, atol=1e-9)  # X_map = w2c_0 X_odom for every window
        for f, cf in zip(win, res.frames):
            np.testing.assert_allclose(cf.c2w, w2c0 @ np.linalg.inv(f.pose_w2c), atol=1e-9)
    assert predictor.counts == {"pose_conditioned": len(starts)}


def test_tiny_network_conditioned_returns_the_given_poses():
    """The real API path (untrained reduced network, tiny input): the given poses come back exactly."""
    from da3_core.api import DA3
    from da3_core.registry import build_network
    from da3_core.weights.recipe import apply_recipe

    model = DA3.from_network(apply_recipe(build_network("da3-small-reduced")), variant="da3-small-reduced",
                             device="cpu")
    assert model.supports_pose_conditioning
    frames, _ = posed_frames(4)
    predictor = DA3Predictor(model, process_res=56)
    pred = predictor.predict(frames)
    np.testing.assert_allclose(pred.w2c, np.stack([f.pose_w2c for f in frames]), atol=1e-12)
    assert pred.is_metric and predictor.counts == {"pose_conditioned": 1}
    assert pred.depth.shape == (4, *frames[0].hw) and np.isfinite(pred.depth).any()
    frames[0].pose_w2c = None
    assert not predictor.predict(frames).is_metric  # unconditioned: the untrained network's relative units
