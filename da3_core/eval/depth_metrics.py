"""Depth accuracy: AbsRel and delta < 1.25 after the alignment the paper uses for the model's depth kind.

Alignment modes: ``median`` (one scale = median(gt) / median(pred), relative models), ``scale_shift``
(least-squares s, t on valid pixels, affine-invariant models), ``none`` (metric models). Only pixels with finite,
positive ground truth (and prediction) count; sky (inf) is therefore excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

AlignMode = Literal["median", "scale_shift", "none"]


@dataclass(frozen=True)
class DepthScores:
    abs_rel: float  # mean |pred - gt| / gt
    delta1: float  # fraction with max(pred/gt, gt/pred) < 1.25
    scale: float  # alignment applied: aligned = scale * pred + shift
    shift: float
    num_pixels: int


def valid_depth_mask(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)


def align_depth(pred: np.ndarray, gt: np.ndarray, mode: AlignMode, mask: np.ndarray) -> tuple[float, float]:
    """(scale, shift) mapping ``pred`` onto ``gt`` over ``mask`` (all views of a window share them)."""
    p, g = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
    if mode == "none":
        return 1.0, 0.0
    if mode == "median":
        return float(np.median(g) / np.median(p)), 0.0
    if mode == "scale_shift":
        a = np.stack([p, np.ones_like(p)], axis=1)
        (s, t), *_ = np.linalg.lstsq(a, g, rcond=None)
        return float(s), float(t)
    raise ValueError(f"unknown alignment {mode!r}; use median, scale_shift or none")


def depth_scores(pred: np.ndarray, gt: np.ndarray, mode: AlignMode = "median") -> DepthScores:
    """Scores of ``pred`` against ``gt`` (same shape, e.g. (N, H, W)); NaN scores if no pixel is valid."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mask = valid_depth_mask(gt, pred)
    if not mask.any():
        return DepthScores(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    s, t = align_depth(pred, gt, mode, mask)
    p = s * pred[mask].astype(np.float64) + t
    g = gt[mask].astype(np.float64)
    ratio = np.maximum(p / g, g / np.maximum(p, 1e-12))
    ratio[p <= 0] = np.inf
    return DepthScores(abs_rel=float(np.mean(np.abs(p - g) / g)), delta1=float(np.mean(ratio < 1.25)), scale=s,
                       shift=t, num_pixels=int(mask.sum()))


def view_scale_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """How far each view's depth scale strays from the window's common one: (S,) factors >= 1.

    ``pred`` / ``gt``: (S, H, W) depth of the S views of one window. View j's scale is ``median(gt_j) /
    median(pred_j)`` over its valid pixels; its error is ``exp(|log s_j - median_k log s_k|)``, 1 when every view's
    depth is in the same units (a network that gets each view's depth right only up to its own scale drifts when
    windows are chained: the map grows or shrinks by the spread of these factors). Views without valid pixels: NaN.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"need (S, H, W) prediction and ground truth of one shape, got {pred.shape} and {gt.shape}")
    logs = np.full(pred.shape[0], np.nan)
    for j in range(pred.shape[0]):
        ok = valid_depth_mask(gt[j], pred[j])
        if ok.any():
            logs[j] = np.log(np.median(gt[j][ok].astype(np.float64)) / np.median(pred[j][ok].astype(np.float64)))
    if np.isnan(logs).all():
        return logs
    return np.exp(np.abs(logs - np.nanmedian(logs)))
