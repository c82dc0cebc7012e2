"""Held-out synthetic benchmark: depth AbsRel / delta1 and pose AUC@30 of a network against trivial baselines.

Scenes come from :class:`da3_core.train.data.SyntheticSceneDataset` with a seed no training run uses by default
(``eval_seed`` 10000 vs ``data_seed`` 0: every scene is generated from ``(seed, index)``, so the held-out scenes are
different procedural scenes of the same three kinds). :func:`heldout_keys` fixes resolution and view count per item.

Two protocols (:data:`PROTOCOLS`, the dataset's ``path_frames``):

- ``window`` (12): the S views are consecutive frames of a 12-frame camera path -- a sliding window of keyframes,
  what the ROS node gives the network; neighbouring views overlap. The headline protocol.
- ``spread`` (0): the S views are spread over the whole path; with S = 2 an orbit's two views can be up to 300
  degrees apart and see nothing in common, so relative pose is mostly guesswork (a stress test).

Scores of one prediction set (all items pooled):

- depth: :func:`da3_core.eval.depth_metrics.depth_scores` per item (median alignment shared by the views of the
  item, sky / unknown pixels excluded), averaged over items -> ``abs_rel`` (lower is better), ``delta1`` (higher);
- pose (:func:`da3_core.eval.pose_metrics.relative_pose_errors`, non-symmetric): for every view pair (i, j) of an
  item, the relative rotation error (angle of ``R_ij^pred R_ij^gt^T``) and
  the relative translation-direction error (angle between the predicted and true ``t_ij``, the position of camera j
  in camera i's frame, direction only, so the unknown scale does not matter); a pair's error is the max of the two;
  ``pose_auc30`` = :func:`pose_auc` = the area under the accuracy-vs-threshold curve from 0 to 30 degrees,
  normalised to [0, 1] (the VGGT / DA3 "AUC@30" protocol). A translation of (near) zero length has no direction:
  its error is 180 degrees (the identity-pose baseline therefore scores 0 translation accuracy).
- the translation's sign: ``trans_flip_frac``, the fraction of pairs whose direction error exceeds 90 degrees (the
  predicted motion points backwards; a random direction: 0.5), and the sign-folded scores the VGGT / DA3 benchmark
  code reports (``min(a, 180 - a)``, a vanished translation 90 degrees): ``trans_err_folded_median`` (a random
  direction: 60 degrees) and ``pose_auc30_folded``. The network sees no view order, so the sign of a small motion
  has to come from the images (what grows, what shrinks); the strict scores above are the headline.
- the views' common depth scale: ``view_scale_err`` (median) / ``view_scale_err_p90`` over all views of all items of
  :func:`da3_core.eval.depth_metrics.view_scale_errors`, the factor by which a view's own depth scale misses the
  window's (1 = consistent). A window-wise median alignment hides it; a chain of windows does not (each new window's
  scale comes from the views it shares with the last, so the map drifts by it). ``cam_dist_err`` / ``_p90``: the
  same for the cameras (:func:`da3_core.eval.pose_metrics.camera_distance_errors`: each view's predicted distance from
  view 0, the window's first, against the window's common scale; two-view items have one distance and no spread,
  so they do not count).

Pose-conditioned (:func:`evaluate_conditioned`): the same items with their true cameras given, as the node gives
odometry; depth put into the given cameras' metres by the API's scale and scored without median scaling (metric
AbsRel / delta1), with ``scale_err``, the factor by which that scale misses. A network whose conditioned camera head
does not reproduce the given cameras' spread gets a wrong metric scale here, whatever its relative depth.

Baselines: ``constant_depth`` (every pixel the same depth), ``identity_poses`` (all cameras at the origin, no
rotation), and ``untrained`` (the same architecture with the trainer's from-scratch initialisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from da3_core.eval.depth_metrics import AlignMode, depth_scores, valid_depth_mask, view_scale_errors
from da3_core.eval.pose_metrics import camera_distance_errors, relative_pose_errors
from da3_core.geometry.rigid import as_4x4

__all__ = ["PROTOCOLS", "heldout_keys", "pose_auc", "score_predictions", "evaluate_network",
           "evaluate_conditioned", "baseline_scores", "benchmark_table", "CONDITIONED_COLUMNS",
           "DIRECTION_COLUMNS", "VIEW_SCALE_COLUMNS"]

EVAL_HW: tuple[tuple[int, int], ...] = ((126, 168), (126, 126), (112, 168))
EVAL_VIEWS = (2, 6)
PROTOCOLS: dict[str, int] = {"window": 12, "spread": 0}
"""Held-out protocols: name -> ``path_frames`` of :class:`da3_core.train.data.SyntheticSceneDataset`."""


def heldout_keys(n: int, seed: int = 10_000, resolutions: Sequence[tuple[int, int]] = EVAL_HW,
                 views: tuple[int, int] = EVAL_VIEWS) -> list[tuple[int, int, int, int]]:
    """``n`` fixed (index, H, W, S) keys of the held-out set (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 99])
    out = []
    for i in range(n):
        H, W = resolutions[int(rng.integers(len(resolutions)))]
        out.append((i, H, W, int(rng.integers(views[0], views[1] + 1))))
    return out


def pose_auc(errors_deg: np.ndarray, max_deg: float = 30.0, steps: int = 301) -> float:
    """Area under accuracy(threshold) for thresholds 0..``max_deg``, normalised to [0, 1] (1 = every error is 0)."""
    errors = np.asarray(errors_deg, np.float64).ravel()
    if errors.size == 0:
        return float("nan")
    thr = np.linspace(0.0, max_deg, steps)
    acc = (errors[None, :] < thr[:, None]).mean(1)
    return float(np.trapezoid(acc, thr) / max_deg)


def score_predictions(items: Sequence[dict[str, np.ndarray]], align: AlignMode = "median") -> dict[str, float]:
    """Pooled scores of ``items``: dicts with ``depth``/``gt_depth`` (S, H, W) and ``w2c``/``gt_w2c`` (S, 4, 4);
    ``align``: the depth alignment per item ("median" for relative depth, "none" for metric)."""
    absrel, d1, rots, trans, folded, vscale, cdist = [], [], [], [], [], [], []
    for it in items:
        ds = depth_scores(it["depth"], it["gt_depth"], align)
        vscale.append(view_scale_errors(it["depth"], it["gt_depth"]))
        cdist.append(camera_distance_errors(it["w2c"], it["gt_w2c"], ref=0))
        absrel.append(ds.abs_rel)
        d1.append(ds.delta1)
        pe = relative_pose_errors(it["w2c"], it["gt_w2c"], symmetric=False)
        rots.append(pe.rot_deg)
        trans.append(pe.trans_deg)
        folded.append(relative_pose_errors(it["w2c"], it["gt_w2c"], symmetric=True).trans_deg)
    r, t, f = np.concatenate(rots), np.concatenate(trans), np.concatenate(folded)
    return {"abs_rel": float(np.nanmean(absrel)), "delta1": float(np.nanmean(d1)),
            "pose_auc30": pose_auc(np.maximum(r, t)), "rot_err_median": float(np.median(r)),
            "trans_err_median": float(np.median(t)), "trans_flip_frac": float(np.mean(t > 90.0)),
            "trans_err_folded_median": float(np.median(f)), "pose_auc30_folded": pose_auc(np.maximum(r, f)),
            "view_scale_err": _nan_stat(np.concatenate(vscale), 50),
            "view_scale_err_p90": _nan_stat(np.concatenate(vscale), 90),
            "cam_dist_err": _nan_stat(np.concatenate(cdist), 50),
            "cam_dist_err_p90": _nan_stat(np.concatenate(cdist), 90)}


def _nan_stat(values: np.ndarray, percentile: float) -> float:
    """A percentile over the finite values (NaN when none: e.g. two-view items have one distance, no spread)."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, percentile)) if finite.size else float("nan")


def _load(keys: Sequence[tuple[int, int, int, int]], seed: int, path_frames: int) -> list[dict[str, torch.Tensor]]:
    from da3_core.train.data import SyntheticSceneDataset

    ds = SyntheticSceneDataset(max(k[0] for k in keys) + 1, seed=seed, path_frames=path_frames)
    return [ds[k] for k in keys]


_CACHE: dict[tuple, list[dict[str, torch.Tensor]]] = {}


def heldout_items(keys: Sequence[tuple[int, int, int, int]], seed: int,
                  path_frames: int = 0) -> list[dict[str, torch.Tensor]]:
    """Rendered held-out items (cached per process; ``path_frames`` as in ``SyntheticSceneDataset``)."""
    ck = (tuple(keys), seed, path_frames)
    if ck not in _CACHE:
        _CACHE.clear()
        _CACHE[ck] = _load(keys, seed, path_frames)
    return _CACHE[ck]


@torch.no_grad()
def evaluate_network(net: nn.Module, keys: Sequence[tuple[int, int, int, int]], seed: int = 10_000,
                     device: torch.device | str = "cpu",
                     ref_view_strategy: str = "saddle_balanced", path_frames: int = 0,
                     use_ray_pose: bool = False) -> dict[str, float]:
    """Scores of an any-view network on the held-out items (un-posed input; camera-decoder poses, or with
    ``use_ray_pose`` the poses solved from its ray maps)."""
    net.eval()
    preds = []
    for item in heldout_items(keys, seed, path_frames):
        out = net(item["images"][None].to(device), ref_view_strategy=ref_view_strategy, use_ray_pose=use_ray_pose)
        w2c = out["extrinsics"][0].float().cpu().numpy()
        preds.append({"depth": out["depth"][0].float().cpu().numpy(), "gt_depth": item["depth"].numpy(),
                      "w2c": w2c, "gt_w2c": item["w2c"].numpy()})
    return score_predictions(preds)


@torch.no_grad()
def evaluate_conditioned(net: nn.Module, keys: Sequence[tuple[int, int, int, int]], seed: int = 10_000,
                         device: torch.device | str = "cpu", ref_view_strategy: str = "saddle_balanced",
                         path_frames: int = 0) -> dict[str, float]:
    """Scores of a pose-conditioned network: the ground-truth cameras given, as the node gives odometry.

    Each item goes in with its true cameras (normalised as the API does) and intrinsics; its depth is put into the
    given cameras' metres by the API's scale (:func:`da3_core.geometry.sim3.given_pose_scale`, the Umeyama of the
    given onto the predicted camera centres) -- so the depth scores are metric, without median scaling, and measure
    what the node's odometry-conditioned windows get. ``scale_err``: the median over items of the factor
    ``exp(|log(median(depth / gt))|)`` by which that scale misses (1 = exact); ``rot_err_median`` /
    ``trans_err_median``: how far the predicted cameras are from the given ones (relative rotation, translation
    direction).
    """
    from da3_core.api import normalize_input_extrinsics
    from da3_core.geometry.sim3 import given_pose_scale

    net.eval()
    preds, factors = [], []
    for item in heldout_items(keys, seed, path_frames):
        gt_w2c = item["w2c"].double()
        ex = normalize_input_extrinsics(gt_w2c[None]).float().to(device)
        out = net(item["images"][None].to(device), extrinsics=ex, intrinsics=item["K"][None].float().to(device),
                  ref_view_strategy=ref_view_strategy)
        w2c = as_4x4(out["extrinsics"][0].double().cpu().numpy())
        s = given_pose_scale(w2c, gt_w2c.numpy())
        depth = out["depth"][0].double().cpu().numpy() / (s if s else float("nan"))
        gt = item["depth"].double().numpy()
        ok = valid_depth_mask(gt, depth)
        factors.append(float(np.exp(abs(np.log(np.median(depth[ok] / gt[ok]))))) if ok.any() else float("inf"))
        preds.append({"depth": depth, "gt_depth": gt, "w2c": w2c, "gt_w2c": gt_w2c.numpy()})
    sc = score_predictions(preds, align="none")
    return {"abs_rel": sc["abs_rel"], "delta1": sc["delta1"], "scale_err": float(np.median(factors)),
            "rot_err_median": sc["rot_err_median"], "trans_err_median": sc["trans_err_median"]}


def baseline_scores(keys: Sequence[tuple[int, int, int, int]], seed: int = 10_000,
                    path_frames: int = 0) -> dict[str, dict[str, float]]:
    """Constant depth + identity poses (the depth baseline's poses and the pose baseline's depth are the same
    trivial guess, so one prediction set gives both rows)."""
    preds = []
    for item in heldout_items(keys, seed, path_frames):
        S, H, W = item["depth"].shape
        preds.append({"depth": np.ones((S, H, W), np.float32), "gt_depth": item["depth"].numpy(),
                      "w2c": np.tile(np.eye(4, dtype=np.float32), (S, 1, 1)), "gt_w2c": item["w2c"].numpy()})
    s = score_predictions(preds)
    return {"constant_depth": {k: s[k] for k in ("abs_rel", "delta1", "view_scale_err", "view_scale_err_p90")},
            "identity_poses": {k: s[k] for k in ("pose_auc30", "rot_err_median", *DIRECTION_COLUMNS)}}


BENCHMARK_COLUMNS = ("abs_rel", "delta1", "pose_auc30", "rot_err_median", "trans_err_median")
CONDITIONED_COLUMNS = ("abs_rel", "delta1", "scale_err", "rot_err_median", "trans_err_median")
VIEW_SCALE_COLUMNS = ("view_scale_err", "view_scale_err_p90", "cam_dist_err", "cam_dist_err_p90")
DIRECTION_COLUMNS = ("trans_err_median", "trans_flip_frac", "trans_err_folded_median", "pose_auc30_folded")


def benchmark_table(rows: dict[str, dict[str, float]], cols: Sequence[str] = BENCHMARK_COLUMNS) -> str:
    """Plain-text table of score rows (missing entries shown as '-')."""
    widths = [max(18, len(c) + 2) for c in cols]
    head = f"{'model':<22}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))
    lines = [head, "-" * len(head)]
    for name, sc in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{sc[c]:>{w}.4f}" if c in sc else f"{'-':>{w}}"
                                             for c, w in zip(cols, widths)))
    return "\n".join(lines)
