"""Matching supervision (beyond the DA3 paper): teach the global attention to find the same surface in other views.

A from-scratch ViT trained with DA3's losses alone does not learn to match content across views (the camera loss is
too indirect a signal: ``training/cross_view_probe.py`` and ``da3_core/assets/default/TRAINING.md``). The synthetic
renderer knows, for every patch of view j, where view i sees the same surface point
(:mod:`da3_core.train.correspondence`). We turn that into a cross-entropy on the *attention logits* of chosen global
blocks: for a query patch of view j and another view i that sees its point, the softmax of
``q_jn . k_im / sqrt(D)`` over the patches m of view i should put its mass on the (bilinear) target patches.

- Only the first ``heads`` heads of each chosen block are supervised; the others stay free for what the DA3 losses
  need. The queries and keys are the block's own (after QK-norm and RoPE), returned by the backbone when the network
  is called with ``match_layers`` (:class:`da3_core.models.backbone.CrossViewViT`); nothing is added to the network,
  so its state dict keeps the official layout.
- The logits are computed in float32 (also under bf16 autocast). ``over="view"``: per (sample, query view, patch,
  other view, supervised head) the loss is ``-sum_k w_k log softmax_view_i(logits)[index_k]``, averaged over the
  pairs that are seen (a matching problem per view pair). ``over="all"``: one softmax over the patches of *all*
  views, the query's own view included, as the attention itself normalises; the target spreads the query's mass
  equally over the views that see its point (bilinear inside each), so the supervised head learns to look away
  from its own view, at where its point went; averaged over the queries seen elsewhere, then over the samples.
"""

from __future__ import annotations

import math

import torch

from da3_core.train.correspondence import PatchMatches

__all__ = ["matching_cross_entropy"]


MATCH_SOFTMAX = ("view", "all")


def matching_cross_entropy(q: torch.Tensor, k: torch.Tensor, matches: PatchMatches, scale: float | None = None,
                           over: str = "view") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-view matching loss on query / key tokens.

    Args:
        q, k: (B, S, N, G, D) patch queries and keys of G supervised heads (in input view order).
        matches: targets of the same (B, S, N) patches (:func:`da3_core.train.correspondence.patch_correspondences`).
        scale: logit scale, default ``1 / sqrt(D)`` (the attention's own).
        over: ``"view"`` (softmax over each other view's patches) or ``"all"`` (over every view's patches).

    Returns:
        loss (0, still connected to ``q`` and ``k``, when nothing is seen), parts ``ce`` (the loss) and ``acc`` (the
        fraction of seen pairs whose top logit within view i is the target's heaviest patch), both detached.
    """
    if over not in MATCH_SOFTMAX:
        raise ValueError(f"over must be one of {MATCH_SOFTMAX}, got {over!r}")
    if q.shape != k.shape or q.ndim != 5:
        raise ValueError(f"q and k must both be (B, S, N, G, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    B, S, N, G, D = q.shape
    if matches.index.shape[:4] != (B, S, N, S):
        raise ValueError(f"matching targets {tuple(matches.index.shape)} do not fit tokens (B, S, N) = {(B, S, N)}; "
                         "build them at the network's input resolution and patch size")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    logits = torch.einsum("bjngd,bimgd->bgjnim", q.float(), k.float()) * scale  # (B, G, S_j, N, S_i, N)
    if over == "view":
        logp = torch.log_softmax(logits, dim=-1)
    else:
        logp = torch.log_softmax(logits.flatten(-2), dim=-1).unflatten(-1, (S, N))
    index = matches.index[:, None].expand(B, G, S, N, S, 4)
    picked = logp.gather(-1, index)  # (B, G, S_j, N, S_i, 4)
    nll = -(picked * matches.weight[:, None]).sum(-1)  # (B, G, S_j, N, S_i)
    zero = torch.zeros((), dtype=nll.dtype, device=nll.device)
    if over == "view":  # per sample: mean over its (head, query, other view) pairs that are seen
        valid = matches.valid[:, None].expand_as(nll)
        per_sample = torch.where(valid, nll, zero).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
    else:  # one target distribution per query: its mass split equally over the views that see the point
        seen_by = matches.valid.sum(-1)  # (B, S_j, N)
        per_query = torch.where(matches.valid[:, None], nll, zero).sum(-1) / seen_by.clamp_min(1)[:, None]
        queries = (seen_by > 0)[:, None].expand_as(per_query)
        per_sample = torch.where(queries, per_query, zero).flatten(1).sum(1) / queries.flatten(1).sum(1).clamp_min(1)
    # the mean over samples (a sample that sees nothing counts 0): data-parallel ranks with equal batch sizes then
    # average to exactly the single-process loss
    loss = per_sample.mean()
    valid = matches.valid[:, None].expand_as(nll)
    count = valid.sum().clamp_min(1)
    with torch.no_grad():
        best = matches.index.gather(-1, matches.weight.argmax(-1, keepdim=True)).squeeze(-1)  # (B, S_j, N, S_i)
        hit = (logits.argmax(-1) == best[:, None]) & valid
        acc = hit.sum() / count
    return loss, {"ce": loss.detach(), "acc": acc.detach()}
