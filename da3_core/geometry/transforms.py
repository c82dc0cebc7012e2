"""Rigid transforms on extrinsics matrices (batched over leading dims)."""

from __future__ import annotations

import torch

__all__ = ["invert_extrinsics", "to_homogeneous", "compose", "relative_pose", "camera_centers"]


def to_homogeneous(T: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) or (..., 4, 4) rigid transform -> (..., 4, 4) with bottom row [0, 0, 0, 1] (4x4 returned as is)."""
    if T.shape[-2:] == (4, 4):
        return T
    if T.shape[-2:] != (3, 4):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4), got {tuple(T.shape)}")
    bottom = torch.zeros(*T.shape[:-2], 1, 4, dtype=T.dtype, device=T.device)
    bottom[..., 0, 3] = 1
    return torch.cat((T, bottom), -2)


def invert_extrinsics(T: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid transform ``[R | t]``: ``[R^T | -R^T t]`` (w2c <-> c2w).

    Numerically the same as the official ``affine_inverse`` (transpose, not a general matrix inverse), which is what
    the official camera decoder / ray-pose paths use to turn c2w into w2c.

    Args:
        T: (..., 3, 4) or (..., 4, 4) rigid transform.

    Returns:
        Same shape as ``T``; a 4x4 input keeps its bottom row.
    """
    if T.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4), got {tuple(T.shape)}")
    Rt = T[..., :3, :3].mT
    top = torch.cat((Rt, -(Rt @ T[..., :3, 3:])), -1)
    return torch.cat((top, T[..., 3:, :]), -2)


def compose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Rigid composition ``A @ B`` (apply B first) for (..., 3|4, 4) inputs; returns (..., 4, 4)."""
    return to_homogeneous(A) @ to_homogeneous(B)


def relative_pose(w2c_a: torch.Tensor, w2c_b: torch.Tensor) -> torch.Tensor:
    """Transform from camera a to camera b, ``w2c_b @ inv(w2c_a)``; inputs (..., 3|4, 4), output (..., 4, 4)."""
    return compose(w2c_b, invert_extrinsics(to_homogeneous(w2c_a)))


def camera_centers(w2c: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, ``-R^T t``, of (..., 3|4, 4) w2c; returns (..., 3)."""
    R, t = w2c[..., :3, :3], w2c[..., :3, 3:]
    return -(R.mT @ t).squeeze(-1)
