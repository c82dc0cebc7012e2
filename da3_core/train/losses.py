"""Student (any-view) losses of DA3, paper §3.3:

    L = L_D(D^, D) + L_M(R^, M) + L_P(D^ * d + t, P) + beta L_C(c^, v) + alpha L_grad(D^, D),  alpha = beta = 1.

Every loss takes predictions and (normalised, see :mod:`da3_core.train.targets`) targets plus a validity mask and
returns ``(scalar, parts)`` where ``parts`` is a dict of detached scalars for logging. Masks are sanitised: an element
only counts where the mask is True *and* prediction, target (and confidence) are finite; masked elements are replaced
by zeros *before* any arithmetic (``torch.where``), so NaN/inf in ignored pixels never reach the value or gradient.
An empty mask gives a loss of exactly 0 (connected to the graph, so ``backward`` still works).

Conventions chosen where the paper is silent (all documented defaults of :class:`StudentLossConfig`):

- Confidence-weighted L1 (paper §3.3, L_D): ``mean_p (c_p |D^_p - D_p| - lambda_c log c_p)`` with the network's
  confidence ``c = exp(x) + 1 >= 1``. ``lambda_c`` is not given in the paper; we use 0.2, the value DUSt3R uses for
  its identical confidence term (alpha in DUSt3R Eq. 4).
- Ray loss L_M: per cell the mean absolute error over the 6 channels, at the ray-map resolution (8x patch grid),
  optionally weighted by ``ray_conf`` with the same ``c e - lambda_c log c`` form (default on).
- Point loss L_P: points from the *predicted* depth and *predicted* rays, ``t^ + D^ d^``, at depth resolution (the ray
  map is resampled onto the depth pixels with :func:`da3_core.train.targets.resample_rays`, exact for pinhole ray
  fields), against the ground-truth points; per pixel the mean absolute error over x, y, z.
- Camera loss L_C on the 9-d encoding ``(t, q, f)``: L1 on t; L1 between the decoder's raw quaternion and the unit
  ground truth, taking the smaller of ``|q^ - q|`` and ``|q^ + q|`` (q and -q are the same rotation); L1 on the two
  FoVs in radians (the official encoding's "f"). The three parts are summed. The raw quaternion is not normalised
  before the loss: a norm-invariant loss lets |q^| grow without bound (every gradient step of a scale-invariant
  function lengthens the vector) and divides the rotation gradient by |q^| -- a from-scratch run reached |q^| ~ 5.
  The raw L1 also pulls |q^| to 1; inference normalises anyway (``quat_to_mat``).
- L_grad (Eq. 3): ``|dx D^ - dx D|_1 + |dy D^ - dy D|_1`` with forward differences; a difference is valid only when
  both of its pixels are valid; each direction is averaged over its valid pairs.

Beyond the paper, ``match_weight`` > 0 adds the matching loss L_match of :mod:`da3_core.train.matching` (a
cross-entropy on the attention logits of chosen global blocks against ground-truth patch correspondences), which
teaches a from-scratch network to match content across views; it needs ``targets.matches`` and the network's
``match_q`` / ``match_k`` outputs (call it with ``match_layers``). ``disp_weight`` > 0 adds the displacement loss of
:mod:`da3_core.train.displacement` (a read-out of the matched blocks' patch tokens must give each patch's motion into
the reference view); it needs ``targets.displacement`` and the ``match_disp`` output of
:class:`da3_core.train.displacement.WithDisplacementReadout`. ``view_scale_weight`` > 0 adds L_vscale
(:func:`view_scale_loss`): each view's mean log depth scale against the window's, what chaining windows needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from da3_core.geometry.pose_encoding import cameras_to_encoding
from da3_core.train.displacement import displacement_loss
from da3_core.train.matching import matching_cross_entropy
from da3_core.train.targets import Targets, points_from_depth_and_rays

__all__ = [
    "LossParts",
    "StudentLossConfig",
    "masked_mean",
    "confidence_l1",
    "depth_loss",
    "ray_loss",
    "point_loss",
    "camera_loss",
    "camera_spread",
    "gradient_loss",
    "view_scale_loss",
    "student_loss",
    "pose_encoding_from_outputs",
]

LossParts = dict[str, torch.Tensor]
DEFAULT_LAMBDA_C = 0.2


@dataclass(frozen=True)
class StudentLossConfig:
    """Weights of the student objective (paper §3.3; alpha = beta = 1) and the choices documented above."""

    alpha: float = 1.0  # L_grad
    beta: float = 1.0  # L_C
    depth_weight: float = 1.0  # L_D
    ray_weight: float = 1.0  # L_M
    point_weight: float = 1.0  # L_P
    lambda_c: float = DEFAULT_LAMBDA_C
    ray_conf: bool = True  # weight L_M by ray_conf
    point_conf: bool = False  # weight L_P by depth_conf
    match_weight: float = 0.0  # L_match (not in the paper, see the module notes); 0 = off
    match_softmax: str = "all"  # L_match's softmax: over all views' patches, or per other view ("view")
    camera_rot_weight: float = 1.0  # weight of L_C's quaternion part inside L_C (1 = the paper's plain sum)
    disp_weight: float = 0.0  # L_disp (not in the paper, see the module notes); 0 = off
    camera_t_relative: bool = False  # L_C's translation part per sample over its cameras' spread (see camera_loss)
    view_scale_weight: float = 0.0  # L_vscale (not in the paper, see view_scale_loss); 0 = off


def _zero_like(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


def _finite(*xs: torch.Tensor | None) -> torch.Tensor:
    """Elementwise AND of ``isfinite`` over the given tensors, reduced over a trailing channel dim if present."""
    out = None
    for x in xs:
        if x is None:
            continue
        f = torch.isfinite(x)
        out = f if out is None else out & f
    return out


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (same shape); 0 (still connected to ``values``) when the mask is empty.

    Masked-out elements are replaced by 0 before summing, so NaN / inf there do not propagate to value or gradient.
    """
    mask = mask & torch.isfinite(values)
    safe = torch.where(mask, values, _zero_like(values))
    return safe.sum() / mask.sum().clamp_min(1).to(values.dtype)


def confidence_l1(error: torch.Tensor, mask: torch.Tensor, conf: torch.Tensor | None = None,
                  lambda_c: float = DEFAULT_LAMBDA_C) -> tuple[torch.Tensor, LossParts]:
    """``mean(c e - lambda_c log c)`` over ``mask`` (plain ``mean(e)`` without ``conf``), paper §3.3.

    Args:
        error: (...) non-negative per-element error (e.g. |D^ - D|).
        mask: (...) bool.
        conf: (...) confidence > 0 (the network's is >= 1), or None.
        lambda_c: weight of the ``-log c`` regulariser.

    Returns:
        loss, parts ``{"l1": mean e, "conf_l1": mean c e, "log_conf": mean log c}`` (detached).
    """
    mask = mask.bool() & _finite(error, conf)
    if conf is not None:
        mask = mask & (conf > 0)
    zero = _zero_like(error)
    e = torch.where(mask, error, zero)
    n = mask.sum().clamp_min(1).to(error.dtype)
    l1 = e.sum() / n
    if conf is None:
        return l1, {"l1": l1.detach()}
    c = torch.where(mask, conf, torch.ones_like(conf))
    weighted = (c * e).sum() / n
    log_c = torch.where(mask, torch.log(c), zero).sum() / n
    loss = weighted - lambda_c * log_c
    return loss, {"l1": l1.detach(), "conf_l1": weighted.detach(), "log_conf": log_c.detach()}


def depth_loss(depth: torch.Tensor, depth_gt: torch.Tensor, mask: torch.Tensor, conf: torch.Tensor | None = None,
               lambda_c: float = DEFAULT_LAMBDA_C) -> tuple[torch.Tensor, LossParts]:
    """L_D (paper §3.3): confidence-weighted L1 of depth.

    Args:
        depth, depth_gt, mask, conf: (B, S, H, W) (any matching shape).
    """
    return confidence_l1((depth - depth_gt).abs(), mask & _finite(depth, depth_gt), conf, lambda_c)


def ray_loss(ray: torch.Tensor, ray_gt: torch.Tensor, mask: torch.Tensor | None = None,
             conf: torch.Tensor | None = None, lambda_c: float = DEFAULT_LAMBDA_C) -> tuple[torch.Tensor, LossParts]:
    """L_M (paper §3.3): per-cell mean |R^ - M| over the 6 channels, at ray resolution.

    Args:
        ray, ray_gt: (B, S, h, w, 6).
        mask: (B, S, h, w) bool or None (all cells).
        conf: (B, S, h, w) ray confidence or None.
    """
    err = (ray - ray_gt).abs()  # (B, S, h, w, 6)
    valid = torch.isfinite(err).all(-1)
    if mask is not None:
        valid = valid & mask.bool()
    err = torch.where(valid[..., None], err, _zero_like(err)).mean(-1)
    return confidence_l1(err, valid, conf, lambda_c)


def point_loss(depth: torch.Tensor, ray: torch.Tensor, points_gt: torch.Tensor, mask: torch.Tensor,
               conf: torch.Tensor | None = None, lambda_c: float = DEFAULT_LAMBDA_C) -> tuple[torch.Tensor, LossParts]:
    """L_P (paper §3.3): points ``t^ + D^ d^`` from the predicted depth and rays vs ground-truth points.

    Args:
        depth: (B, S, H, W) predicted depth.
        ray: (B, S, h, w, 6) predicted ray map (resampled to (H, W), see module docstring).
        points_gt: (B, S, H, W, 3).
        mask: (B, S, H, W) bool.
        conf: optional (B, S, H, W) confidence (e.g. depth_conf).
    """
    pts = points_from_depth_and_rays(torch.where(mask & torch.isfinite(depth), depth, _zero_like(depth)), ray)
    err = (pts - points_gt).abs()
    valid = mask.bool() & torch.isfinite(err).all(-1)
    err = torch.where(valid[..., None], err, _zero_like(err)).mean(-1)
    return confidence_l1(err, valid, conf, lambda_c)


MIN_CAMERA_SPREAD = 0.02
"""Floor of a sample's camera spread in :func:`camera_loss`'s relative translation part (normalised units: the
targets' mean point norm is 1; a walking window's spread is a median 0.14, its tenth percentile 0.03)."""


def camera_spread(t_gt: torch.Tensor, valid: torch.Tensor, floor: float = MIN_CAMERA_SPREAD) -> torch.Tensor:
    """(B,) mean distance of a sample's cameras from its reference camera (the one at the origin, not counted):
    ``sum_v |t_v| / (n_valid - 1)`` over the valid views, at least ``floor``. ``t_gt`` (B, S, 3), ``valid`` (B, S)."""
    dist = torch.where(valid, t_gt.norm(dim=-1), torch.zeros_like(t_gt[..., 0]))
    others = (valid.sum(-1) - 1).clamp(min=1)
    return (dist.sum(-1) / others).clamp(min=floor)


def camera_loss(enc: torch.Tensor, enc_gt: torch.Tensor, mask: torch.Tensor | None = None,
                eps: float = 1e-8, rot_weight: float = 1.0,
                t_relative: bool = False) -> tuple[torch.Tensor, LossParts]:
    """L_C (paper §3.3) on the 9-d encoding ``[t(3), q xyzw(4), fov_h, fov_w]``.

    ``L_C = mean_views(|t^ - t|_1) + w_q mean_views(min(|q^ - q|_1, |q^ + q|_1)) + mean_views(|f^ - f|_1)`` with
    the decoder's raw quaternion ``q^`` (not normalised: see the module notes), the unit ground truth ``q`` and
    ``w_q = rot_weight`` (1 in the paper). The parts also report, for logging, the mean rotation error in degrees
    (``rot_deg``, of the normalised ``q^``) next to that of identity rotations (``rot_deg_identity``): the rotation
    part of a window's poses is a few degrees, i.e. a few hundredths of L_C, so the loss alone does not show
    whether rotations are being learned.

    ``t_relative`` divides each sample's translation errors by its ground-truth :func:`camera_spread` (not in the
    paper). The plain L1 weighs a window's translation by its size: a window whose cameras are 0.05 apart (in units
    of the mean point norm) costs 0.05 when all its cameras are predicted at the origin, so the camera head can leave
    short baselines at "no motion" -- no direction -- and, given cameras, shrink their spread: the pose-conditioned
    metric scale is that spread's error. Relative, every window's translation costs about the same, and a spread
    wrong by a factor ``k`` costs ``|k - 1|`` whatever its size.

    Args:
        enc, enc_gt: (B, S, 9).
        mask: (B, S) bool of views with a known camera, or None.
        rot_weight: w_q.
        t_relative: divide the translation errors by the sample's camera spread (at least MIN_CAMERA_SPREAD).
    """
    valid = torch.isfinite(enc).all(-1) & torch.isfinite(enc_gt).all(-1)
    if mask is not None:
        valid = valid & mask.bool()
    enc = torch.where(valid[..., None], enc, _zero_like(enc) + 1.0)
    enc_gt = torch.where(valid[..., None], enc_gt, _zero_like(enc_gt) + 1.0)
    t_err = (enc[..., 0:3] - enc_gt[..., 0:3]).abs().sum(-1)
    if t_relative:
        t_err = t_err / camera_spread(enc_gt[..., 0:3].detach(), valid)[:, None]
    q = enc[..., 3:7]
    q_gt = F.normalize(enc_gt[..., 3:7], dim=-1, eps=eps)
    q_err = torch.minimum((q - q_gt).abs().sum(-1), (q + q_gt).abs().sum(-1))
    f_err = (enc[..., 7:9] - enc_gt[..., 7:9]).abs().sum(-1)
    lt, lq, lf = masked_mean(t_err, valid), masked_mean(q_err, valid), masked_mean(f_err, valid)
    with torch.no_grad():
        cos_pred = (F.normalize(q.float(), dim=-1, eps=eps) * q_gt.float()).sum(-1).abs().clamp(max=1.0)
        rot_deg = masked_mean(torch.rad2deg(2 * torch.acos(cos_pred)), valid)
        rot_deg_id = masked_mean(torch.rad2deg(2 * torch.acos(q_gt[..., 3].float().abs().clamp(max=1.0))), valid)
    parts = {"t": lt.detach(), "q": lq.detach(), "f": lf.detach(), "rot_deg": rot_deg, "rot_deg_identity": rot_deg_id}
    return lt + rot_weight * lq + lf, parts


def view_scale_loss(depth: torch.Tensor, depth_gt: torch.Tensor, mask: torch.Tensor,
                    eps: float = 1e-6) -> tuple[torch.Tensor, LossParts]:
    """L_vscale (not in the paper): every view's depth in the window's common units.

    Each view's scale is the log of its mean depth over its valid pixels, ``l_j`` predicted and ``g_j`` true; the loss
    is ``mean_j |(l_j - g_j) - mean_k (l_k - g_k)|`` over the valid views of samples with two or more of them: zero
    when the views' depths are right up to one factor for the whole window, whatever that factor. L_D already asks
    for it, but its L1 is spent mostly on each view's shape; a network that gets every view right only up to its
    own scale costs little there and drifts when the node chains windows
    (:func:`da3_core.eval.depth_metrics.view_scale_errors`).

    Args:
        depth, depth_gt, mask: (B, S, H, W).

    Returns:
        loss (0, still connected to ``depth``, when no sample has two valid views), no sub-parts.
    """
    m = mask.bool() & torch.isfinite(depth) & torch.isfinite(depth_gt)
    n = m.flatten(2).sum(-1)  # (B, S)
    zero = _zero_like(depth)
    mean_p = torch.where(m, depth, zero).flatten(2).sum(-1) / n.clamp_min(1).to(depth.dtype)
    mean_g = torch.where(m, depth_gt, zero).flatten(2).sum(-1) / n.clamp_min(1).to(depth.dtype)
    ok = (n > 0) & (mean_g > eps)  # (B, S) views with a scale
    r = torch.log(mean_p.clamp_min(eps)) - torch.log(mean_g.clamp_min(eps))
    r = torch.where(ok, r, torch.zeros_like(r))
    views = ok.sum(-1, keepdim=True)  # (B, 1)
    centred = r - r.sum(-1, keepdim=True) / views.clamp_min(1).to(r.dtype)
    use = ok & (views >= 2)
    loss = torch.where(use, centred.abs(), torch.zeros_like(centred)).sum() / use.sum().clamp_min(1).to(r.dtype)
    return loss, {}


def gradient_loss(depth: torch.Tensor, depth_gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
    """L_grad, paper Eq. 3: ``|dx D^ - dx D|_1 + |dy D^ - dy D|_1``.

    Forward differences along W (x) and H (y); a difference counts only when both pixels are valid. Each direction
    is the mean over its valid pairs.

    Args:
        depth, depth_gt, mask: (..., H, W).
    """
    valid = mask.bool() & _finite(depth, depth_gt)
    zero = _zero_like(depth)
    d = torch.where(valid, depth - depth_gt, zero)  # gradient of the difference = difference of gradients
    vx = valid[..., :, 1:] & valid[..., :, :-1]
    vy = valid[..., 1:, :] & valid[..., :-1, :]
    gx = masked_mean((d[..., :, 1:] - d[..., :, :-1]).abs(), vx)
    gy = masked_mean((d[..., 1:, :] - d[..., :-1, :]).abs(), vy)
    return gx + gy, {"grad_x": gx.detach(), "grad_y": gy.detach()}


def pose_encoding_from_outputs(outputs: Mapping[str, torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
    """(B, S, 9) encoding of the network's predicted cameras.

    Uses ``outputs["pose_enc"]`` when present (the raw camera-decoder output, which the network returns whenever
    its camera head ran), else re-encodes the decoded ``extrinsics`` / ``intrinsics`` with
    :func:`cameras_to_encoding` (ray-solved poses; differentiable, unit quaternion). Training on the raw output
    matters: the re-encoded quaternion hides the decoder's |q^|, whose growth damps the rotation gradient.
    """
    if "pose_enc" in outputs:
        return outputs["pose_enc"]
    return cameras_to_encoding(outputs["extrinsics"], outputs["intrinsics"], image_hw)


def student_loss(outputs: Mapping[str, torch.Tensor], targets: Targets,
                 cfg: StudentLossConfig | None = None) -> tuple[torch.Tensor, LossParts]:
    """Total student loss (paper §3.3) from the network outputs and :func:`da3_core.train.targets.build_targets`.

    Args:
        outputs: ``DA3Network.forward`` dict: ``depth`` (B,S,H,W), ``depth_conf``, ``ray`` (B,S,h,w,6), ``ray_conf``,
            and ``extrinsics``/``intrinsics`` or ``pose_enc`` (B,S,9) for L_C (skipped when absent or beta = 0).
        targets: normalised targets with the same (H, W) and ray resolution.
        cfg: weights and options (default :class:`StudentLossConfig`).

    Returns:
        total, parts with ``depth``, ``ray``, ``point``, ``camera``, ``grad`` (unweighted terms), ``total`` and the
        sub-parts of each term prefixed by its name (``depth/l1`` ...), all detached.
    """
    cfg = cfg or StudentLossConfig()
    parts: LossParts = {}
    depth, valid = outputs["depth"], targets.valid
    if depth.shape != targets.depth.shape:
        raise ValueError(f"predicted depth {tuple(depth.shape)} != target {tuple(targets.depth.shape)}")
    if outputs["ray"].shape != targets.ray.shape:
        raise ValueError(f"predicted ray map {tuple(outputs['ray'].shape)} != target {tuple(targets.ray.shape)} "
                         "(build the targets with the network's ray resolution)")
    terms: dict[str, tuple[float, tuple[torch.Tensor, LossParts]]] = {
        "depth": (cfg.depth_weight, depth_loss(depth, targets.depth, valid, outputs.get("depth_conf"), cfg.lambda_c)),
        "ray": (cfg.ray_weight, ray_loss(outputs["ray"], targets.ray, targets.ray_valid,
                                         outputs.get("ray_conf") if cfg.ray_conf else None, cfg.lambda_c)),
        "point": (cfg.point_weight, point_loss(depth, outputs["ray"], targets.points, valid,
                                               outputs.get("depth_conf") if cfg.point_conf else None, cfg.lambda_c)),
        "grad": (cfg.alpha, gradient_loss(depth, targets.depth, valid)),
    }
    if cfg.beta and ("pose_enc" in outputs or "extrinsics" in outputs):
        enc = pose_encoding_from_outputs(outputs, targets.image_hw)
        terms["camera"] = (cfg.beta, camera_loss(enc, targets.pose_enc, targets.ray_valid.flatten(2).any(-1),
                                                 rot_weight=cfg.camera_rot_weight,
                                                 t_relative=cfg.camera_t_relative))
    if cfg.view_scale_weight:
        terms["vscale"] = (cfg.view_scale_weight, view_scale_loss(depth, targets.depth, valid))
    if cfg.match_weight:
        if targets.matches is None or "match_q" not in outputs:
            raise ValueError("match_weight > 0 needs targets.matches (patch_correspondences) and the network's "
                             "match_q / match_k (call it with match_layers); set match_weight 0 to train without")
        terms["match"] = (cfg.match_weight, matching_cross_entropy(outputs["match_q"], outputs["match_k"],
                                                                   targets.matches, over=cfg.match_softmax))
    if cfg.disp_weight:
        if targets.displacement is None or "match_disp" not in outputs:
            raise ValueError("disp_weight > 0 needs targets.displacement (displacement_targets) and the match_disp "
                             "output (a network wrapped in WithDisplacementReadout, called with match_layers); set "
                             "disp_weight 0 to train without")
        terms["disp"] = (cfg.disp_weight, displacement_loss(outputs["match_disp"], *targets.displacement))
    total = _zero_like(depth)
    for name, (weight, (value, sub)) in terms.items():
        total = total + weight * value
        parts[name] = value.detach()
        parts.update({f"{name}/{k}": v for k, v in sub.items()})
    parts["total"] = total.detach()
    return total, parts
