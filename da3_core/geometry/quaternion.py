"""Quaternion <-> rotation matrix conversions, xyzw (scalar-last) order as in the official DA3 pose encoding."""

from __future__ import annotations

import torch

__all__ = ["quat_xyzw_to_matrix", "matrix_to_quat_xyzw"]


def quat_xyzw_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a (not necessarily unit) quaternion.

    Args:
        q: (..., 4) quaternion ``[x, y, z, w]``. It is *not* normalised beforehand: the products are scaled by
            ``2 / |q|^2``, which is the rotation of ``q / |q|``. This is the official DA3 behaviour, so raw
            camera-decoder outputs can be passed directly (numerics agree with the official ``quat_to_mat``).

    Returns:
        (..., 3, 3) rotation matrix (for q = 0 the result is NaN, as in the official code).
    """
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = x * w, y * w, z * w
    row0 = torch.stack((1 - s * (yy + zz), s * (xy - wz), s * (xz + wy)), -1)
    row1 = torch.stack((s * (xy + wz), 1 - s * (xx + zz), s * (yz - wx)), -1)
    row2 = torch.stack((s * (xz - wy), s * (yz + wx), 1 - s * (xx + yy)), -1)
    return torch.stack((row0, row1, row2), -2)


def matrix_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion of a rotation matrix (Shepperd's method: all four branches, picked per element).

    Args:
        R: (..., 3, 3) rotation matrix.

    Returns:
        (..., 4) unit quaternion ``[x, y, z, w]`` with the sign chosen so that ``w >= 0`` (for ``w == 0`` the first
        non-zero of x, y, z is made positive), i.e. a canonical representative of ``{q, -q}``.
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) rotation matrices, got {tuple(R.shape)}")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]

    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 (each derived from the diagonal); the largest one gives a well-conditioned branch.
    four_sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1
    )
    branch = four_sq.argmax(-1, keepdim=True)  # (..., 1)
    big = torch.gather(four_sq, -1, branch).clamp_min(0).sqrt().squeeze(-1)  # 2 * |component|, >= 1
    d_zy, d_xz, d_yx = m21 - m12, m02 - m20, m10 - m01  # 4*w*x, 4*w*y, 4*w*z
    s_xy, s_xz, s_yz = m10 + m01, m02 + m20, m21 + m12  # 4*x*y, 4*x*z, 4*y*z
    # Each candidate is 4*c*[x, y, z, w] for its pivot component c; with big = 2|c| dividing by 2*big gives q.
    cand_w = torch.stack((d_zy, d_xz, d_yx, big * big), -1)
    cand_x = torch.stack((big * big, s_xy, s_xz, d_zy), -1)
    cand_y = torch.stack((s_xy, big * big, s_yz, d_xz), -1)
    cand_z = torch.stack((s_xz, s_yz, big * big, d_yx), -1)
    cands = torch.stack((cand_w, cand_x, cand_y, cand_z), -2)  # (..., 4 branches, 4)
    idx = branch.unsqueeze(-1).expand(*branch.shape[:-1], 1, 4)
    q = torch.gather(cands, -2, idx).squeeze(-2) / (2 * big).unsqueeze(-1)
    q = q / q.norm(dim=-1, keepdim=True)
    return _canonical_sign(q)


def _canonical_sign(q: torch.Tensor) -> torch.Tensor:
    """Flip q (..., 4) xyzw so that the first non-zero of (w, x, y, z) is positive."""
    order = torch.stack((q[..., 3], q[..., 0], q[..., 1], q[..., 2]), -1)
    nonzero = order != 0
    first = nonzero.to(torch.uint8).argmax(-1)  # index of the first non-zero (0 when all are zero)
    lead = torch.gather(order, -1, first.unsqueeze(-1))
    return torch.where(lead < 0, -q, q)
