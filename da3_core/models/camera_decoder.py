"""Camera decoder D_C: camera token of the last tapped layer -> 9-d pose encoding (paper §3.1)."""

from __future__ import annotations

import torch
from torch import nn


class CameraDecoder(nn.Module):
    """(B, S, 2C) camera tokens -> (B, S, 9) = [t (3), quaternion xyzw (4, unnormalised), fov_h, fov_w] of c2w."""

    def __init__(self, dim_in: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_in), nn.ReLU())
        self.fc_t = nn.Linear(dim_in, 3)
        self.fc_qvec = nn.Linear(dim_in, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim_in, 2), nn.ReLU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(tokens).float()
        return torch.cat((self.fc_t(feat), self.fc_qvec(feat), self.fc_fov(feat)), dim=-1)
