"""Ray maps <-> cameras (the DA3 ray head's camera parameterisation).

Ray-map convention (official, verified against ``utils/ray_utils.py``): a ray map has shape (B, S, h, w, 6) at its own
resolution (8x the patch grid for the DualDPT aux head). The image is described in a *normalised frame* spanning
[0, 2] x [0, 2] whatever its pixel size, with ray-map cell (i, j) at its centre ``x_n = (j + 0.5) * 2 / w``,
``y_n = (i + 0.5) * 2 / h``. Normalised intrinsics relate to pixel intrinsics of the (H, W) image by
``fx_n = 2 fx / W``, ``fy_n = 2 fy / H``, ``cx_n = 2 cx / W``, ``cy_n = 2 cy / H``.

- channels 0-2: direction ``d = R_c2w K_n^-1 [x_n, y_n, 1]^T`` (world frame, any positive scale; with this scale
  ``point = origin + depth * d`` for z-depth ``depth``),
- channels 3-5: ray origin = camera centre in the world frame.

Recovery (``rays_to_cameras``) follows the official ``get_extrinsic_from_camray`` / ``_process_ray_pose_estimation``:
weighted RANSAC DLT homography from the canonical (identity-K) rays to the predicted directions, then a QL
decomposition ``A = R_c2w L``. Note that the official QL step reads the principal point from the *bottom row* of the
lower-triangular L, while a pinhole camera gives ``A = R_c2w K_n^-1 K_I`` with an *upper*-triangular factor. Both
agree when the principal point is at the image centre (the case of the trained network, whose rays were made for this
decoder), but for off-centre principal points the official decoder is biased. ``decomposition="qr"`` decomposes
``A = R_c2w U`` (U upper triangular) instead and is the exact inverse of ``cameras_to_rays`` for any principal point;
the default ``"ql"`` reproduces the official results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .transforms import camera_centers, invert_extrinsics

__all__ = ["rays_to_cameras", "cameras_to_rays", "canonical_ray_grid", "RansacParams"]


@dataclass(frozen=True)
class RansacParams:
    """RANSAC settings; the defaults are the official ones (``utils/ray_utils.py``).

    ``refit_full_svd=True`` solves the final DLT with ``torch.linalg.svd(full_matrices=True)`` like the official code,
    which makes the result bitwise identical to it but allocates a (2M, 2M) U matrix (1 GiB for M = 8000 points in
    float32). The default thin SVD differs from it by ~1e-6 relative.
"""

    n_iter: int = 100  # hypotheses
    sample_size: int = 8  # points per hypothesis (DLT on 8 correspondences)
    candidate_ratio: float = 0.3  # hypotheses are drawn from the top 30% of points by confidence
    reproj_threshold: float = 0.2  # inlier if |H c - d| < threshold in z-normalised coordinates
    max_refit_points: int = 8000  # cap on the inliers used for the final fit
    refit_keep_ratio: float = 0.95  # above the cap: draw from the most confident 95% of inliers
    z_threshold: float = 1e-4  # rays with |z| <= this get weight 0 and are not z-normalised
    view_chunk: int = 2  # views scored at once (memory: chunk * n_iter * N * 3 values)
    refit_full_svd: bool = False


def canonical_ray_grid(h: int, w: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(h, w, 2) canonical ray coordinates ``(x_n - 1, y_n - 1)`` of the cell centres (identity K with principal point
    (1, 1) in the [0, 2] normalised frame; the ray itself is ``[x_n - 1, y_n - 1, 1]``).

    Built with ``linspace`` over the cell centres in ``dtype``; for float32 this is bitwise the official grid (which
    is always float32), float64 keeps full precision.
    """

    def centres(n: int) -> torch.Tensor:
        half_cell = 1.0 / n
        first = 1.0 - (1.0 - half_cell)  # centre of the first cell in the [0, 2] frame, as evaluated in double
        last = (1.0 - half_cell) + 1.0
        return torch.linspace(first, last, n, dtype=dtype, device=device) - 1.0

    yy, xx = torch.meshgrid(centres(h), centres(w), indexing="ij")
    return torch.stack((xx, yy), -1)


def _draw_permutation(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.randperm(n)``; with ``generator=None`` this is the same global-RNG call as the official code."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _weighted_dlt(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, full: bool = True) -> torch.Tensor:
    """Weighted DLT homography ``dst ~ H src``.

    Args:
        src, dst: (..., K, 2) correspondences (K >= 4).
        weight: (..., K) non-negative weights (each equation is scaled by sqrt(weight)).
        full: passed to ``torch.linalg.svd(full_matrices=...)`` (True for the small sample fits, as officially).

    Returns:
        (..., 3, 3) H with ``H[2, 2] = 1``.
    """
    sw = weight.sqrt()
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero = torch.zeros_like(x)
    # Residual of u (first K rows) and of v (next K rows) for h = H.flatten() (row major).
    rows_u = torch.stack((-x * sw, -y * sw, -sw, zero, zero, zero, x * u * sw, y * u * sw, u * sw), -1)
    rows_v = torch.stack((zero, zero, zero, -x * sw, -y * sw, -sw, x * v * sw, y * v * sw, v * sw), -1)
    system = torch.cat((rows_u, rows_v), -2)  # (..., 2K, 9)
    _, _, vh = torch.linalg.svd(system, full_matrices=full)
    H = vh[..., -1, :].reshape(*vh.shape[:-2], 3, 3)
    return H / H[..., 2:3, 2:3]


def _ransac_homographies(
    src: torch.Tensor,
    dst: torch.Tensor,
    weight: torch.Tensor,
    generator: torch.Generator | None,
    p: RansacParams,
) -> torch.Tensor:
    """Weighted RANSAC homography per view.

    Args:
        src, dst: (V, N, 2) canonical / predicted z-normalised ray coordinates.
        weight: (V, N) confidences (0 = ignore).

    Returns:
        (V, 3, 3) homographies fitted on the inliers of the best hypothesis.

    Random draws (in this order, matching the official code): ``n_iter`` x ``randperm(n_candidates)[:sample_size]``,
    shared by all views; then per view, when the best hypothesis has more than ``max_refit_points`` inliers, one
    ``randperm`` choosing which of them are used for the refit.
    """
    V, N, _ = src.shape
    device = src.device
    n_cand = max(p.sample_size, int(N * p.candidate_ratio))
    draws = torch.stack(
        [_draw_permutation(n_cand, device, generator)[: p.sample_size] for _ in range(p.n_iter)]
    )  # (n_iter, sample_size), indices into the candidate list
    ranked = torch.argsort(weight, dim=1, descending=True)  # (V, N)
    picks = ranked[:, :n_cand][:, draws]  # (V, n_iter, sample_size) point indices

    src_h = torch.cat((src, torch.ones_like(src[..., :1])), -1)  # (V, N, 3)
    best_masks = []
    for v0 in range(0, V, p.view_chunk):
        sl = slice(v0, min(v0 + p.view_chunk, V))
        c = sl.stop - sl.start
        view = torch.arange(c, device=device)[:, None, None]
        pick = picks[sl]  # (c, n_iter, sample_size)
        s_src = src[sl][view, pick].reshape(c * p.n_iter, p.sample_size, 2)
        s_dst = dst[sl][view, pick].reshape(c * p.n_iter, p.sample_size, 2)
        s_w = weight[sl][view, pick].reshape(c * p.n_iter, p.sample_size)
        hyps = _weighted_dlt(s_src, s_dst, s_w)  # (c * n_iter, 3, 3)
        pts = src_h[sl, None].expand(c, p.n_iter, N, 3).reshape(c * p.n_iter, N, 3)
        mapped = torch.bmm(pts, hyps.transpose(1, 2))
        mapped = (mapped[..., :2] / mapped[..., 2:3]).reshape(c, p.n_iter, N, 2)
        err = ((mapped - dst[sl, None]) ** 2).sum(-1).sqrt()  # (c, n_iter, N)
        inliers = err < p.reproj_threshold
        score = torch.where(inliers, weight[sl, None], torch.zeros((), dtype=weight.dtype, device=device)).sum(-1)
        best = score.argmax(-1)  # (c,) first hypothesis with the highest inlier weight
        best_masks.append(inliers[torch.arange(c, device=device), best])
    best_mask = torch.cat(best_masks)  # (V, N)

    fits = []
    for v in range(V):
        idx = best_mask[v].nonzero().squeeze(-1)
        if idx.numel() < 4:  # degenerate: no usable consensus, fit on the candidates instead
            idx = ranked[v, :n_cand]
        order = torch.argsort(weight[v, idx], descending=True)
        if order.numel() > p.max_refit_points:
            keep = max(int(order.numel() * p.refit_keep_ratio), p.max_refit_points)
            order = order[:keep][_draw_permutation(keep, device, generator)[: p.max_refit_points]]
        sel = idx[order]
        fits.append(_weighted_dlt(src[v, sel], dst[v, sel], weight[v, sel], full=p.refit_full_svd))
    return torch.stack(fits)


def _ql(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """QL decomposition ``A = Q L`` of (..., 3, 3), Q orthogonal, L lower triangular with non-negative diagonal.

    Uses the exchange matrix J (J J = I): QR of ``A J`` gives ``A = (Q' J)(J R' J)`` and ``J R' J`` is lower.
    """
    Q, Rq = torch.linalg.qr(A.flip(-1))  # A J = Q' R'
    Q, L = Q.flip(-1), Rq.flip(-1).flip(-2)
    return _positive_diagonal(Q, L)


def _qr(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """QR decomposition ``A = Q U`` of (..., 3, 3) with non-negative diagonal of the upper-triangular U."""
    Q, U = torch.linalg.qr(A)
    return _positive_diagonal(Q, U)


def _positive_diagonal(Q: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the signs of diag(T) into Q's columns: ``Q diag(s)`` and ``diag(s) T``, s = sign(diag(T))."""
    s = torch.sign(torch.diagonal(T, dim1=-2, dim2=-1))
    return Q * s[..., None, :], T * s[..., :, None]


def rays_to_cameras(
    ray: torch.Tensor,
    ray_conf: torch.Tensor | None,
    image_hw: tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    decomposition: Literal["ql", "qr"] = "ql",
    params: RansacParams | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras from a ray map (official weighted-RANSAC DLT homography + QL decomposition).

    Args:
        ray: (B, S, h, w, 6) ray map (directions ch 0-2, origins ch 3-5, world frame; module docstring).
        ray_conf: (B, S, h, w) non-negative confidences (None = all ones). Not modified.
        image_hw: (H, W) of the image the intrinsics are for (the ray map may have another resolution).
        generator: optional torch.Generator for the RANSAC draws. ``None`` uses the global torch RNG with the same
            call sequence as the official code, so that after the same ``torch.manual_seed`` the official result is
            reproduced.
        decomposition: "ql" (official, default) or "qr" (exact inverse of ``cameras_to_rays`` for any principal
            point; see the module docstring).
        params: RANSAC settings (default: the official ones, ``RansacParams``).

    Returns:
        w2c: (B, S, 3, 4) world-to-camera, OpenCV.
        K: (B, S, 3, 3) intrinsics in pixels of the (H, W) image.
    """
    p = params if params is not None else RansacParams()
    B, S, h, w, C = ray.shape
    if C != 6:
        raise ValueError(f"expected a (B, S, h, w, 6) ray map, got {tuple(ray.shape)}")
    H_img, W_img = image_hw
    if ray_conf is None:
        ray_conf = torch.ones(ray.shape[:-1], dtype=ray.dtype, device=ray.device)
    rays = ray.reshape(B * S, h * w, 6)
    conf = ray_conf.reshape(B * S, h * w).to(ray.dtype)

    canon = canonical_ray_grid(h, w, dtype=ray.dtype, device=ray.device).reshape(1, h * w, 2).expand(B * S, -1, -1)
    d = rays[..., :3]
    valid = d[..., 2].abs() > p.z_threshold  # canonical rays have z = 1
    dst = torch.where(valid[..., None], d[..., :2] / d[..., 2:3], d[..., :2])
    weight = torch.where(valid, conf, torch.zeros((), dtype=conf.dtype, device=conf.device))

    A = _ransac_homographies(canon, dst, weight, generator, p)
    A = torch.where((torch.linalg.det(A) < 0)[:, None, None], -A, A)

    if decomposition == "ql":
        R_c2w, L = _ql(A)
        L = L / L[:, 2:3, 2:3]
        f_norm = 1.0 / torch.stack((L[:, 0, 0], L[:, 1, 1]), -1)
        pp_norm = torch.stack((L[:, 2, 0], L[:, 2, 1]), -1) + 1.0
    elif decomposition == "qr":
        R_c2w, U = _qr(A)
        U = U / U[:, 2:3, 2:3]  # = K_n^-1 K_I = [[1/fx, 0, (1-cx)/fx], [0, 1/fy, (1-cy)/fy], [0, 0, 1]]
        f_norm = 1.0 / torch.stack((U[:, 0, 0], U[:, 1, 1]), -1)
        pp_norm = 1.0 - torch.stack((U[:, 0, 2], U[:, 1, 2]), -1) * f_norm
    else:
        raise ValueError(f"decomposition must be 'ql' or 'qr', got {decomposition!r}")

    # Camera centre: confidence-weighted mean of the origins (weights of rays with |z| <= z_threshold are 0, as in
    # the official code, whose in-place weight masking also reaches this average).
    centre = (rays[..., 3:] * weight[..., None]).sum(1) / weight.sum(-1, keepdim=True)

    c2w = torch.cat((R_c2w, centre[..., None]), -1)  # (V, 3, 4)
    w2c = invert_extrinsics(c2w).reshape(B, S, 3, 4)

    K = torch.zeros(B * S, 3, 3, dtype=ray.dtype, device=ray.device)
    K[:, 0, 0] = f_norm[:, 0] / 2 * W_img
    K[:, 1, 1] = f_norm[:, 1] / 2 * H_img
    K[:, 0, 2] = pp_norm[:, 0] * W_img * 0.5
    K[:, 1, 2] = pp_norm[:, 1] * H_img * 0.5
    K[:, 2, 2] = 1.0
    return w2c, K.reshape(B, S, 3, 3)


def cameras_to_rays(
    w2c: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int], ray_hw: tuple[int, int]
) -> torch.Tensor:
    """Ray map of pinhole cameras in the official ray-map convention (module docstring).

    Args:
        w2c: (..., 3, 4) or (..., 4, 4) world-to-camera, OpenCV (typically (B, S, ...)).
        K: (..., 3, 3) intrinsics in pixels of the (H, W) image.
        image_hw: (H, W) the intrinsics refer to.
        ray_hw: (h, w) of the ray map.

    Returns:
        (..., h, w, 6): ``d = R_c2w K_n^-1 [x_n, y_n, 1]`` (camera-frame z = 1, so ``origin + depth * d`` is the
        world point at z-depth ``depth``) and ``origin`` = camera centre.
    """
    H_img, W_img = image_hw
    h, w = ray_hw
    grid = canonical_ray_grid(h, w, dtype=w2c.dtype, device=w2c.device) + 1.0  # (h, w, 2) = (x_n, y_n)
    fx_n = (K[..., 0, 0] * 2 / W_img)[..., None, None]
    fy_n = (K[..., 1, 1] * 2 / H_img)[..., None, None]
    cx_n = (K[..., 0, 2] * 2 / W_img)[..., None, None]
    cy_n = (K[..., 1, 2] * 2 / H_img)[..., None, None]
    y_c = (grid[..., 1] - cy_n) / fy_n
    x_c = (grid[..., 0] - cx_n - K[..., 0, 1, None, None] * 2 / W_img * y_c) / fx_n
    d_cam = torch.stack((x_c, y_c, torch.ones_like(x_c)), -1)  # (..., h, w, 3)
    R_c2w = invert_extrinsics(w2c)[..., :3, :3]
    d_world = (d_cam.unsqueeze(-2) @ R_c2w[..., None, None, :, :].mT).squeeze(-2)
    origin = camera_centers(w2c)[..., None, None, :].expand(d_world.shape)
    return torch.cat((d_world, origin), -1)
