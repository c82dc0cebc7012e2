"""Reference-view selection for multi-view windows (official DA3 strategies).

The any-view backbone puts the chosen reference view first before the cross-view layers (it receives the learned
"reference" camera token, and its camera becomes the world frame), then restores the input order. ``first`` and
``middle`` are deterministic; ``saddle_balanced`` and ``saddle_sim_range`` choose by the content of the views'
class tokens.
"""

from __future__ import annotations

from typing import Literal

import torch

RefViewStrategy = Literal["first", "middle", "saddle_balanced", "saddle_sim_range"]
REF_VIEW_STRATEGIES: tuple[str, ...] = ("first", "middle", "saddle_balanced", "saddle_sim_range")
MIN_VIEWS_FOR_SELECTION = 3  # with fewer views the order is kept as given
# Streaming windows (the node's keyframes, in time order): the oldest view is the reference, deterministic and the
# frame a window shares with the previous one. The node, its predictor, the embedded default's training and its
# held-out evaluation all use this one value (the official API's default stays ``saddle_balanced``).
WINDOW_REF_VIEW = "first"


def _unit_range(metric: torch.Tensor) -> torch.Tensor:
    """Min-max normalise (B, S) scores per batch element to [0, 1]."""
    lo = metric.amin(dim=1, keepdim=True)
    hi = metric.amax(dim=1, keepdim=True)
    return (metric - lo) / (hi - lo + 1e-8)


def select_reference_view(cls_tokens: torch.Tensor, strategy: str = "saddle_balanced") -> torch.Tensor:
    """Index (B,) of the reference view chosen from (B, S, C) class tokens."""
    b, s, _ = cls_tokens.shape
    if strategy not in REF_VIEW_STRATEGIES:
        raise ValueError(f"unknown reference-view strategy {strategy!r}; use one of {', '.join(REF_VIEW_STRATEGIES)}")
    if s <= 1 or strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=cls_tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=cls_tokens.device)

    norms = cls_tokens.norm(dim=-1)  # (B, S)
    unit = cls_tokens / norms[..., None]
    similarity = unit @ unit.transpose(1, 2) - torch.eye(s, device=unit.device)  # (B, S, S), diagonal zeroed
    if strategy == "saddle_sim_range":
        spread = similarity.amax(dim=-1) - similarity.amin(dim=-1)
        return spread.argmax(dim=1)
    # saddle_balanced: the view closest to the middle of the batch on similarity, token norm and token variance
    mean_similarity = similarity.sum(dim=-1) / (s - 1)
    scores = [_unit_range(mean_similarity), _unit_range(norms), _unit_range(unit.var(dim=-1))]
    balance = sum((m - 0.5).abs() for m in scores)
    return balance.argmin(dim=1)


def reference_first_order(ref_index: torch.Tensor, num_views: int) -> torch.Tensor:
    """(B, S) view permutation [ref, 0, 1, ..., ref-1, ref+1, ...]: the reference first, the others in order."""
    views = torch.arange(num_views, device=ref_index.device).expand(ref_index.shape[0], -1)
    ref = ref_index[:, None]
    order = torch.where((views > 0) & (views <= ref), views - 1, views)
    order[:, 0] = ref_index
    return order


def reorder_views(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Gather views of (B, S, ...) ``x`` by a (B, S) permutation."""
    batch = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[batch, order]


def restore_views(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`reorder_views` for the same permutation."""
    return reorder_views(x, torch.argsort(order, dim=1))
