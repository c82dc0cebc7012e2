"""The official 9-d camera encoding ``[t_c2w (3), q_c2w xyzw (4), fov_h, fov_w]`` <-> (w2c, K).

The camera decoder predicts this encoding of the camera-to-world pose; the camera encoder consumes it (it inverts
the given w2c to c2w first). FoVs are in radians for the processed image of size (H, W); the principal point is
implicitly the image centre.
"""

from __future__ import annotations

import torch

from .quaternion import matrix_to_quat_xyzw, quat_xyzw_to_matrix
from .transforms import invert_extrinsics

__all__ = ["encoding_to_cameras", "cameras_to_encoding", "TAN_HALF_FOV_MIN"]

TAN_HALF_FOV_MIN = 1e-6
"""Lower clamp of tan(fov/2) when decoding (a zero FoV gives focal = (size/2) / 1e-6, as in the official code)."""


def encoding_to_cameras(enc: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the 9-d pose encoding into cameras.

    Args:
        enc: (..., 9) ``[t_c2w(3), q_c2w xyzw(4) (any norm), fov_h, fov_w]``.
        image_hw: (H, W) of the processed image, in pixels.

    Returns:
        w2c: (..., 3, 4) world-to-camera, OpenCV.
        K: (..., 3, 3) pixels; ``fx = (W/2) / max(tan(fov_w/2), 1e-6)``, ``fy`` likewise with H, principal point
        at ``(W/2, H/2)``.
    """
    H, W = image_hw
    R_c2w = quat_xyzw_to_matrix(enc[..., 3:7])
    c2w = torch.cat((R_c2w, enc[..., 0:3, None]), -1)
    w2c = invert_extrinsics(c2w)

    fy = (H / 2.0) / torch.tan(enc[..., 7] / 2.0).clamp_min(TAN_HALF_FOV_MIN)
    fx = (W / 2.0) / torch.tan(enc[..., 8] / 2.0).clamp_min(TAN_HALF_FOV_MIN)
    K = torch.zeros(*enc.shape[:-1], 3, 3, dtype=enc.dtype, device=enc.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = W / 2
    K[..., 1, 2] = H / 2
    K[..., 2, 2] = 1
    return w2c, K


def cameras_to_encoding(w2c: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Encode cameras as the camera encoder does (w2c is inverted to c2w, then translated/rotated/FoV-encoded).

    Args:
        w2c: (..., 3, 4) or (..., 4, 4) world-to-camera, OpenCV.
        K: (..., 3, 3) pixels of the (H, W) image (only fx, fy are used: the encoding has no principal point).
        image_hw: (H, W) in pixels.

    Returns:
        (..., 9) ``[t_c2w, q_c2w xyzw (unit, w >= 0), fov_h, fov_w]``, same dtype as ``w2c``.
    """
    H, W = image_hw
    c2w = invert_extrinsics(w2c)
    quat = matrix_to_quat_xyzw(c2w[..., :3, :3])
    fov_h = 2 * torch.atan((H / 2) / K[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / K[..., 0, 0])
    return torch.cat((c2w[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]), -1)
