"""Metric depth from the focal-normalised output of DA3 metric models: ``metric = net * mean(fx, fy) / 300``."""

from __future__ import annotations

import torch

__all__ = ["CANONICAL_FOCAL", "metric_scale_factor", "apply_metric_scaling"]

CANONICAL_FOCAL = 300.0
"""Focal length (pixels) the metric model's depth is normalised to (official ``apply_metric_scaling``)."""


def metric_scale_factor(K: torch.Tensor, canonical_focal: float = CANONICAL_FOCAL) -> torch.Tensor:
    """Per-view factor ``(fx + fy) / 2 / canonical_focal``.

    Args:
        K: (..., 3, 3) intrinsics in pixels of the *processed* image (the one the depth belongs to).

    Returns:
        (...) scale factors.
    """
    return (K[..., 0, 0] + K[..., 1, 1]) / 2 / canonical_focal


def apply_metric_scaling(
    depth: torch.Tensor, K: torch.Tensor, canonical_focal: float = CANONICAL_FOCAL
) -> torch.Tensor:
    """Metric depth (..., H, W) from focal-normalised ``depth`` (..., H, W) and K (..., 3, 3) in pixels."""
    return depth * metric_scale_factor(K, canonical_focal)[..., None, None]
