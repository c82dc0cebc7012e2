"""Parameter layout of the giant model's 3-D Gaussian head (``gs_head.*``) and adapter (``gs_adapter.*``).

da3-ros does not produce 3-D Gaussians. These modules exist only so that official giant / nested checkpoints load
with a strict key check; calling them raises :class:`NotImplementedError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from da3_core.models.heads.dpt_blocks import DPTTrunk, conv3x3, make_output_conv2

GS_UNSUPPORTED = ("3-D Gaussian output is not supported by da3-ros; "
                  "the parameters are kept so official giant checkpoints load strictly")


def _unsupported() -> NoReturn:
    raise NotImplementedError(GS_UNSUPPORTED)


class GaussianDPTHead(DPTTrunk):
    """Official GS-DPT layout: DPT trunk without token norm, ``output_conv1``, ``output_conv2`` (-> output_dim)
    and an ``images_merger`` (3 -> F/8 -> F/4 -> F/2 channels, 3x3 convs with GELU). Not runnable."""

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], output_dim: int = 38,
                 patch_size: int = 14) -> None:
        super().__init__(dim_in, features, out_channels, patch_size=patch_size, token_norm=False, pos_embed=True)
        half = features // 2
        self.output_dim = output_dim
        self.scratch.output_conv1 = conv3x3(features, half)
        self.scratch.output_conv2 = make_output_conv2(half, output_dim)
        self.images_merger = nn.Sequential(
            conv3x3(3, half // 4), nn.GELU(),
            conv3x3(half // 4, half // 2), nn.GELU(),
            conv3x3(half // 2, half), nn.GELU(),
        )

    def forward(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported()

    def _forward_frames(self, frames: list[torch.Tensor], grid: tuple[int, int],
                        image_hw: tuple[int, int]) -> NoReturn:
        _unsupported()


class GaussianAdapter(nn.Module):
    """Official GaussianAdapter layout: no parameters, one non-persistent buffer ``sh_mask`` ((sh_degree+1)^2,)
    that damps the view-dependent SH bands (1 for degree 0, ``0.1 * 0.25^l`` for degree l). Not runnable."""

    def __init__(self, sh_degree: int = 2, pred_color: bool = False, pred_offset_depth: bool = True,
                 pred_offset_xy: bool = True, gaussian_scale_min: float = 1e-5,
                 gaussian_scale_max: float = 30.0) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.pred_color = pred_color
        self.pred_offset_depth = pred_offset_depth
        self.pred_offset_xy = pred_offset_xy
        self.gaussian_scale_min = gaussian_scale_min
        self.gaussian_scale_max = gaussian_scale_max
        if not pred_color:
            damping = [1.0 if deg == 0 else 0.1 * 0.25**deg for deg in range(sh_degree + 1)]
            mask = torch.tensor([damping[deg] for deg in range(sh_degree + 1) for _ in range(2 * deg + 1)],
                                dtype=torch.float32)  # (d_sh,)
            self.register_buffer("sh_mask", mask, persistent=False)

    @property
    def d_sh(self) -> int:
        """SH coefficients per colour channel (1 when colours are predicted directly)."""
        return 1 if self.pred_color else (self.sh_degree + 1) ** 2

    @property
    def d_in(self) -> int:
        """Raw Gaussian channels the head must provide (without the opacity channel)."""
        return 2 * self.pred_offset_xy + 3 + 4 + 3 * self.d_sh + int(self.pred_offset_depth)

    def forward(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unsupported()
