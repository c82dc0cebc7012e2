"""Sky handling of the models with a sky head (mono, metric, nested): sky pixels get a far, finite depth.

Quantiles are taken on at most 100,000 samples, drawn from the global torch RNG exactly as the official code
does (``randint`` for depth quantiles, ``randperm`` for the confidence median), so seeded runs agree with it.
"""

from __future__ import annotations

import torch

SKY_THRESHOLD = 0.3  # sky >= 0.3 is sky for depth handling; Prediction.sky uses >= 0.5
MAX_QUANTILE_SAMPLES = 100_000


def non_sky_mask(sky: torch.Tensor, threshold: float = SKY_THRESHOLD) -> torch.Tensor:
    return sky < threshold


def sample_with_replacement(values: torch.Tensor, max_samples: int = MAX_QUANTILE_SAMPLES) -> torch.Tensor:
    """Flat ``values``, or ``max_samples`` of them drawn with replacement when there are more."""
    if values.numel() <= max_samples:
        return values
    return values[torch.randint(0, values.numel(), (max_samples,), device=values.device)]


def sample_without_replacement(values: torch.Tensor, max_samples: int = MAX_QUANTILE_SAMPLES) -> torch.Tensor:
    """Flat ``values``, or a random subset of ``max_samples`` of them when there are more."""
    if values.numel() <= max_samples:
        return values
    return values.flatten()[torch.randperm(values.numel(), device=values.device)[:max_samples]]


def fill_sky(depth: torch.Tensor, keep: torch.Tensor, value: float | torch.Tensor,
             conf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Depth (and confidence, set to 1) of pixels outside ``keep`` replaced; returns new tensors."""
    depth = depth.masked_fill(~keep, float(value))
    if conf is not None:
        conf = conf.masked_fill(~keep, 1.0)
    return depth, conf


def clamp_mono_sky(depth: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Mono/metric models: sky depth := 99th percentile of non-sky depth (when both classes have > 10 pixels)."""
    keep = non_sky_mask(sky)
    if keep.sum() <= 10 or (~keep).sum() <= 10:
        return depth
    far = torch.quantile(sample_with_replacement(depth[keep]), 0.99)
    return fill_sky(depth, keep, far)[0]
