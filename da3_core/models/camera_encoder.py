"""Camera encoder E_c: known cameras -> one token per view (paper §3.2, "camera condition injection").

Each view's (w2c, K) becomes the 9-d pose encoding (t, q, fov of the camera-to-world pose), an MLP lifts it to the
token width, and a small transformer trunk lets the views' tokens attend to each other before they replace the
class token of every view at the backbone's first cross-view block.
"""

from __future__ import annotations

import torch
from torch import nn

from da3_core.geometry.pose_encoding import cameras_to_encoding
from da3_core.layers import Block, Mlp


class CameraEncoder(nn.Module):
    def __init__(self, dim_out: int, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0,
                 layer_scale_init: float = 0.01) -> None:
        super().__init__()
        # registration order = official state-dict order
        self.trunk = nn.Sequential(*(Block(dim_out, num_heads, mlp_ratio, norm_eps=1e-5,
                                           layer_scale_init=layer_scale_init) for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_out)
        self.trunk_norm = nn.LayerNorm(dim_out)
        self.pose_branch = Mlp(9, dim_out // 2, dim_out)

    def forward(self, w2c: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """w2c (B, S, 3|4, 4) OpenCV world-to-camera, intrinsics (B, S, 3, 3) pixels -> tokens (B, S, dim_out)."""
        encoding = cameras_to_encoding(w2c, intrinsics, image_hw)  # (B, S, 9)
        tokens = self.token_norm(self.pose_branch(encoding))
        return self.trunk_norm(self.trunk(tokens))  # the trunk attends across the S views of each batch element
