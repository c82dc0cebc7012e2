"""Aligning teacher (relative) depth to sparse / noisy metric depth, paper §4.2, Eq. 8:

    (s^, t^) = argmin_{s > 0, t} sum_p m_p (s D~_p + t - D_p)^2,    D_{T->M} = s^ D~ + t^,

solved with RANSAC least squares. The inlier threshold is "the mean absolute deviation from the residual median":
for a hypothesis with residuals ``r = s D~ + t - D``, ``tau = mean_p |r_p - median(r)|`` and a point is an inlier when
``|r_p| <= tau``. The hypothesis with the most inliers is refitted on its inliers (least squares, then the inlier
set and fit are refreshed ``refine_steps`` times). Outliers whose residual happens to fall inside the threshold stay
in the final least-squares fit, so with many gross outliers a small bias remains (< 1% at 30% outliers in the
tests); true inliers are all kept.

``s > 0``: a least-squares fit with ``s <= 0`` is rejected as a hypothesis; if the final fit still has ``s <= 0``
the constrained optimum lies on the boundary (s -> 0+) and the result is flagged ``ok=False``.

Degenerate input (fewer than ``min_points`` valid pixels, or a constant teacher depth on the valid pixels) does not
raise: the result is ``ok=False`` with a documented fallback -- identity ``(1, 0)`` without enough points, or the
scale-only median ratio ``median(D) / median(D~)`` (shift 0) for a constant but positive teacher depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Alignment", "RansacAlignConfig", "fit_scale_shift", "ransac_scale_shift", "align_depth"]


@dataclass(frozen=True)
class RansacAlignConfig:
    """RANSAC settings (the paper gives none besides the threshold rule; these are ours)."""

    n_iter: int = 100  # hypotheses
    sample_size: int = 4  # points per hypothesis (2 is the minimum; a few more resist noise)
    max_points: int = 20_000  # hypotheses are scored on at most this many random valid points
    min_points: int = 4  # fewer valid points -> fallback
    refine_steps: int = 2  # inlier-set refreshes after the RANSAC pick
    eps: float = 1e-12


@dataclass
class Alignment:
    """Result of :func:`ransac_scale_shift`.

    Attributes:
        scale, shift: floats; apply as ``scale * teacher + shift``.
        inliers: bool mask of the input's shape (False outside the valid mask).
        ok: False when a fallback was used or the constraint s > 0 was active.
        reason: "" when ok, else why.
    """

    scale: float
    shift: float
    inliers: torch.Tensor
    ok: bool
    reason: str = ""

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        """``scale * depth + shift``."""
        return depth * self.scale + self.shift


def fit_scale_shift(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
                    eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least squares ``y ~ s x + t`` along the last dim (closed form).

    Args:
        x, y: (..., N).
        weight: (..., N) non-negative, or None.

    Returns:
        s, t: (...) each; ``s = cov_w(x, y) / var_w(x)`` (0 when var_w(x) <= eps), ``t = mean_w(y) - s mean_w(x)``.
    """
    w = torch.ones_like(x) if weight is None else weight
    sw = w.sum(-1).clamp_min(eps)
    mx, my = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
    dx = x - mx[..., None]
    var = (w * dx * dx).sum(-1)
    cov = (w * dx * (y - my[..., None])).sum(-1)
    s = torch.where(var > eps, cov / var.clamp_min(eps), torch.zeros_like(var))
    return s, my - s * mx


def _inliers(res: torch.Tensor) -> torch.Tensor:
    """``|r| <= mean |r - median(r)|`` along the last dim (the paper's threshold)."""
    med = res.median(-1, keepdim=True).values
    tau = (res - med).abs().mean(-1, keepdim=True)
    return res.abs() <= tau


def ransac_scale_shift(teacher: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                       cfg: RansacAlignConfig | None = None,
                       generator: torch.Generator | None = None) -> Alignment:
    """Eq. 8 for one image.

    Args:
        teacher: (...) relative depth D~ (any shape, e.g. (H, W)).
        target: (...) metric depth D, same shape; NaN / inf / <= 0 are ignored.
        mask: (...) bool m_p, or None.
        cfg: RANSAC settings (default :class:`RansacAlignConfig`).
        generator: torch RNG for the hypotheses (deterministic when given).

    Returns:
        :class:`Alignment` (computed in float64).
    """
    cfg = cfg or RansacAlignConfig()
    valid = torch.isfinite(teacher) & torch.isfinite(target) & (target > 0)
    if mask is not None:
        valid = valid & mask.bool()
    x_all = teacher[valid].double()
    y_all = target[valid].double()
    n = x_all.numel()
    none = torch.zeros_like(valid)

    if n < max(cfg.min_points, 2):
        return Alignment(1.0, 0.0, none, False, f"only {n} valid points (need {max(cfg.min_points, 2)})")
    if (x_all.max() - x_all.min()) <= 1e-9 * x_all.abs().max().clamp_min(1.0):
        mx, my = x_all.median(), y_all.median()
        if mx > 0:
            return Alignment(float(my / mx), 0.0, valid.clone(), False, "constant teacher depth: median-ratio scale")
        return Alignment(1.0, 0.0, none, False, "constant non-positive teacher depth")

    device = x_all.device
    if n > cfg.max_points:
        sel = torch.randperm(n, generator=generator, device=generator.device if generator else None)[:cfg.max_points]
        sel = sel.to(device)
        x, y = x_all[sel], y_all[sel]
    else:
        x, y = x_all, y_all
    m = x.numel()
    k = min(cfg.sample_size, m)
    idx = torch.randint(0, m, (cfg.n_iter, k), generator=generator,
                        device=generator.device if generator else None).to(device)
    s, t = fit_scale_shift(x[idx], y[idx], eps=cfg.eps)  # (n_iter,)
    res = s[:, None] * x[None] + t[:, None] - y[None]  # (n_iter, m)
    score = _inliers(res).sum(-1)
    score = torch.where(s > 0, score, torch.full_like(score, -1))
    best = int(score.argmax())
    if score[best] < 0:  # every hypothesis had s <= 0: fall back to a plain least-squares start
        s_b, t_b = fit_scale_shift(x, y, eps=cfg.eps)
    else:
        s_b, t_b = s[best], t[best]

    inl = _inliers(s_b * x_all + t_b - y_all)
    for _ in range(cfg.refine_steps + 1):
        if inl.sum() < 2:
            break
        s_b, t_b = fit_scale_shift(x_all, y_all, inl.double(), eps=cfg.eps)
        inl = _inliers(s_b * x_all + t_b - y_all)
    ok, reason = True, ""
    if not s_b > 0:
        w = inl.double() if inl.sum() > 0 else torch.ones_like(x_all)
        s_b = torch.zeros((), dtype=torch.float64)
        t_b = (w * y_all).sum() / w.sum()
        ok, reason = False, "least-squares scale <= 0: constraint s > 0 active (scale = 0, shift = mean)"
    inliers = none.clone()
    inliers[valid] = inl
    return Alignment(float(s_b), float(t_b), inliers, ok, reason)


def align_depth(teacher: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                cfg: RansacAlignConfig | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[Alignment]]:
    """Align a batch of teacher depth maps (..., H, W) to metric depth, one fit per map (paper §4.2).

    Returns ``D_{T->M}`` (same shape as ``teacher``) and the per-map :class:`Alignment` list (row-major over the
    leading dims). Maps whose fit is not ``ok`` still get their fallback alignment applied; check ``ok``.
    """
    H, W = teacher.shape[-2:]
    flat_t = teacher.reshape(-1, H, W)
    flat_d = target.reshape(-1, H, W)
    flat_m = None if mask is None else mask.reshape(-1, H, W)
    results = [ransac_scale_shift(flat_t[i], flat_d[i], None if flat_m is None else flat_m[i], cfg, generator)
               for i in range(flat_t.shape[0])]
    out = torch.stack([r.apply(flat_t[i]) for i, r in enumerate(results)]).reshape(teacher.shape)
    return out, results
