"""Displacement supervision (beyond the DA3 paper): patch tokens told, linearly, where their surface went.

The matching loss (:mod:`da3_core.train.matching`) teaches a global block's attention *where* each patch is seen in
another view, but the camera head still has to infer the motion from what that attention returns (the matched
patches' values). On noise textures a from-scratch network does; on crops of our rendered scenes it does not
(``training/cross_view_probe.py --content scenes``, ``da3_core/assets/default/TRAINING.md``). This loss makes the
motion explicit in the patch tokens: a training-only linear read-out of the tokens after the supervised block must
give each patch's image displacement, in patches, to where the other view sees the same surface point. The camera
token then only has to pool what the patches already say.

The read-out (:class:`DisplacementReadout`) lives outside the network, so the network's state dict keeps the
official layout; the trainer saves it with the optimizer state for exact resumption.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DisplacementReadout", "WithDisplacementReadout", "displacement_loss", "displacement_targets"]


class DisplacementReadout(nn.Module):
    """(B, S, N, L, C) patch tokens of L supervised blocks -> (B, S, N, L, out) displacements (patches, x then y;
    ``out`` 4: then the parallax's x and y, see :func:`displacement_targets`).

    One LayerNorm + linear map per block (the tokens are the un-normalised residual stream)."""

    def __init__(self, dim: int, layers: int = 1, out: int = 2) -> None:
        super().__init__()
        if out not in (2, 4):
            raise ValueError(f"out must be 2 (displacement) or 4 (displacement and parallax), got {out}")
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(dim, out) for _ in range(layers))
        for proj in self.proj:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 5 or tokens.shape[3] != len(self.proj):
            raise ValueError(f"tokens must be (B, S, N, L={len(self.proj)}, C), got {tuple(tokens.shape)}")
        return torch.stack([proj(norm(tokens[:, :, :, i].float()))
                            for i, (norm, proj) in enumerate(zip(self.norm, self.proj))], dim=3)


def displacement_targets(uv: torch.Tensor, valid: torch.Tensor, centres: torch.Tensor, patch_size: int,
                         into: torch.Tensor | None = None,
                         at_infinity: tuple[torch.Tensor, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch of view j, the displacement (in patches) to where one other view i sees its point.

    Args:
        uv: (B, S_j, N, S_i, 2) image coordinates of patch centres of view j in view i
            (:func:`da3_core.train.correspondence.project_patch_centres`).
        valid: (B, S_j, N, S_i) whether view i sees the point.
        centres: (N, 2) patch centres (:func:`da3_core.train.correspondence.patch_centres`).
        into: (B,) long, the view to prefer per sample (the reference view the network expresses its cameras in),
            or None for view 0.
        at_infinity: (uv_inf (B, S_j, N, S_i, 2), ahead (B, S_j, N, S_i)) from
            :func:`da3_core.train.correspondence.project_patch_directions`: adds the parallax, the displacement
            minus the one the rotation alone gives (``uv - uv_inf``, in patches), as two more target channels;
            a patch then counts only where its ray's direction is also ahead of the chosen view.

    Returns:
        target (B, S_j, N, 2), or (B, S_j, N, 4) with the parallax, and its validity (B, S_j, N): for each patch,
        the displacement into view ``into`` when that view sees the point, else into the first other view that
        does (so the reference view's own patches point at their first neighbour), as a two-view pair gives it.
    """
    B, S = uv.shape[:2]
    others = ~torch.eye(S, dtype=torch.bool, device=uv.device)[None, :, None, :]
    seen = valid & others
    if into is None:
        into = torch.zeros(B, dtype=torch.long, device=uv.device)
    if into.shape != (B,):
        raise ValueError(f"into must be (B,) = ({B},), got {tuple(into.shape)}")
    preferred = torch.arange(S, device=uv.device)[None] == into[:, None]  # (B, S_i)
    # score 2 for the preferred view, 1 for any other seeing view: argmax picks the preferred, else the first
    score = seen.to(torch.uint8) * (1 + preferred[:, None, None, :].to(torch.uint8))
    pick = score.argmax(-1)[..., None, None].expand(B, S, uv.shape[2], 1, 2)
    at = uv.gather(-2, pick).squeeze(-2)
    target = (at - centres.to(uv.dtype)) / patch_size
    has = seen.any(-1)
    if at_infinity is not None:
        uv_inf, ahead = at_infinity
        target = torch.cat((target, (at - uv_inf.to(uv.dtype).gather(-2, pick).squeeze(-2)) / patch_size), -1)
        has = has & ahead.gather(-1, pick[..., 0]).squeeze(-1)
    return torch.where(has[..., None], target, torch.zeros((), dtype=target.dtype, device=target.device)), has


def displacement_loss(pred: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Smooth-L1 (beta 1 patch, summed over the channels: x and y, and the parallax's x and y where given) between
    predicted (B, S, N, L, C) and target (B, S, N, C) displacements: per sample the mean over its valid patches and
    the L blocks, then the mean over samples (a sample with none counts 0), so data-parallel ranks with equal batch
    sizes average to the single-process loss. Parts: ``loss`` and ``l1`` (mean absolute error per coordinate of the
    displacement over all valid patches, in patches), plus ``parallax_l1`` (the same for the parallax) when C = 4;
    all detached."""
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"the read-out gives {pred.shape[-1]} channels but the targets have {target.shape[-1]}: "
                         "build both with or both without the parallax")
    err = F.smooth_l1_loss(pred.float(), target[:, :, :, None].float().expand_as(pred), reduction="none")
    mask = valid[..., None, None].expand_as(err)  # (B, S, N, L, C)
    zero = torch.zeros((), device=err.device)
    err = torch.where(mask, err, zero)
    per_sample = err.sum(-1).flatten(1).sum(1) / (mask[..., 0].flatten(1).sum(1).clamp_min(1))
    loss = per_sample.mean()
    parts = {"loss": loss.detach()}
    with torch.no_grad():
        absdiff = torch.where(mask, (pred.float() - target[:, :, :, None].float()).abs(), zero)
        count = mask[..., :2].sum().clamp_min(1)
        parts["l1"] = absdiff[..., :2].sum() / count
        if pred.shape[-1] == 4:
            parts["parallax_l1"] = absdiff[..., 2:].sum() / count
    return loss, parts


class WithDisplacementReadout(nn.Module):
    """The network and its training-only read-out as one module, so that DDP sees (and all-reduces) both; the
    network's own state dict, saved and exported as usual, stays in the official layout.

    Called like the network; when that returns ``match_x`` (it was called with ``match_layers``) the output also
    holds ``match_disp`` (B, S, N, L, 2 or 4), the read-out's displacements."""

    def __init__(self, net: nn.Module, readout: DisplacementReadout) -> None:
        super().__init__()
        self.net = net
        self.readout = readout

    def forward(self, x: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        out = self.net(x, **kwargs)
        if out.get("match_x") is not None:
            out["match_disp"] = self.readout(out["match_x"])
        return out
