"""DA3Network: backbone + dense head + camera encoder/decoder, with the official output names.

Numerics follow the official network (checked against its outputs in test/core/test_golden_network.py). The
camera encoder and all heads run in float32 even under autocast, as the official does.
"""

from __future__ import annotations

import torch
from torch import nn

from da3_core.config import NetworkConfig
from da3_core.geometry.pose_encoding import encoding_to_cameras
from da3_core.geometry.ray_solver import rays_to_cameras
from da3_core.models.backbone import Backbone, BackboneOutput
from da3_core.models.camera_decoder import CameraDecoder
from da3_core.models.camera_encoder import CameraEncoder
from da3_core.models.heads.dpt import DPTHead
from da3_core.models.heads.dual_dpt import DualDPTHead
from da3_core.models.heads.gaussian import GaussianAdapter, GaussianDPTHead
from da3_core.models.reference_view import REF_VIEW_STRATEGIES
from da3_core.models.sky import clamp_mono_sky


class DA3Network(nn.Module):
    """One DA3 network. ``forward`` returns a dict:

    - ``depth`` (B, S, H, W); ``sky`` (B, S, H, W) for models with a sky head (mono / metric)
    - any-view models: ``depth_conf`` (B, S, H, W) >= 1, ``ray`` (B, S, 8h, 8w, 6) (direction, origin),
      ``ray_conf`` (B, S, 8h, 8w), ``extrinsics`` (B, S, 3, 4) OpenCV world-to-camera of the window's reference
      frame, ``intrinsics`` (B, S, 3, 3) pixels of the processed image, ``ref_index`` (B,) or absent.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size = cfg.backbone.patch_size
        self.backbone = Backbone(cfg.backbone)
        h = cfg.head
        if h.kind == "dualdpt":
            self.head: nn.Module = DualDPTHead(h.dim_in, h.features, h.out_channels, h.output_dim, self.patch_size)
        elif h.kind == "dpt":
            self.head = DPTHead(h.dim_in, h.features, h.out_channels, h.output_dim, self.patch_size)
        else:
            raise ValueError(f"unknown head kind {h.kind!r}")
        if cfg.backbone.feature_dim != h.dim_in:
            raise ValueError(f"head dim_in {h.dim_in} != backbone feature width {cfg.backbone.feature_dim}")
        self.cam_dec = CameraDecoder(cfg.cam_dec.dim_in) if cfg.cam_dec is not None else None
        e = cfg.cam_enc
        self.cam_enc = (CameraEncoder(e.dim_out, e.trunk_depth, e.num_heads, e.mlp_ratio, e.layer_scale_init)
                        if e is not None else None)
        if cfg.gs_head is not None:
            g = cfg.gs_head
            self.gs_head = GaussianDPTHead(g.dim_in, g.features, g.out_channels, g.output_dim)
            self.gs_adapter = GaussianAdapter(sh_degree=g.sh_degree)

    @property
    def is_anyview(self) -> bool:
        return self.cfg.head.kind == "dualdpt"

    def forward(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                use_ray_pose: bool = False, match_layers: tuple[int, ...] = (),
                match_heads: int = 1, sky_fill: bool = True) -> dict[str, torch.Tensor]:
        """x: (B, S, 3, H, W) ImageNet-normalised, H and W multiples of 14. Optional known cameras (both or none):
        extrinsics (B, S, 3|4, 4) OpenCV world-to-camera, intrinsics (B, S, 3, 3) in pixels of ``x``.
        ``match_layers`` / ``match_heads`` (training): also return ``match_q`` / ``match_k`` (B, S, h*w, G, D), the
        attention queries and keys of those global blocks' first heads (da3_core.train.matching), and ``match_x``
        (B, S, h*w, L, C), the blocks' output patch tokens (da3_core.train.displacement).
        ``sky_fill=False`` returns the sky model's raw depth (no data-dependent sky clamp), for fixed graphs whose host
        side applies :func:`~da3_core.models.sky.clamp_mono_sky` (da3_core.backends.split)."""
        self._check_inputs(x, extrinsics, intrinsics, ref_view_strategy, use_ray_pose)
        height, width = x.shape[-2:]
        cam_tokens = None
        if extrinsics is not None and self.cam_enc is not None:
            with torch.autocast(device_type=x.device.type, enabled=False):
                cam_tokens = self.cam_enc(extrinsics.float(), intrinsics.float(), (height, width))
        feats: BackboneOutput = self.backbone(x, cam_tokens, ref_view_strategy, tuple(match_layers), match_heads)

        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.head([f.float() for f in feats.features], (height, width))
            if self.is_anyview:
                if use_ray_pose:
                    w2c, k = rays_to_cameras(out["ray"], out["ray_conf"], (height, width))
                else:
                    pose_enc = self.cam_dec(feats.camera_tokens[-1].float())
                    w2c, k = encoding_to_cameras(pose_enc, (height, width))
                    out["pose_enc"] = pose_enc  # raw (t, q, fov): what the camera loss trains
                out["extrinsics"], out["intrinsics"] = w2c, k
                if feats.ref_index is not None:
                    out["ref_index"] = feats.ref_index
        if "sky" in out and sky_fill:
            out["depth"] = clamp_mono_sky(out["depth"], out["sky"])
        if feats.match_q is not None:
            out["match_q"], out["match_k"], out["match_x"] = feats.match_q, feats.match_k, feats.match_x
        return out

    def _check_inputs(self, x: torch.Tensor, extrinsics: torch.Tensor | None, intrinsics: torch.Tensor | None,
                      ref_view_strategy: str, use_ray_pose: bool) -> None:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"images must be (B, S, 3, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"images must be a normalised float tensor, got {x.dtype}; use da3_core.preprocess")
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} is not a multiple of {p}; "
                             "resize or crop it (da3_core.preprocess does this)")
        if (extrinsics is None) != (intrinsics is None):
            raise ValueError("camera conditioning needs both extrinsics and intrinsics (the official network "
                             "ignores one without the other); pass both or neither")
        if extrinsics is not None:
            b, s = x.shape[:2]
            if extrinsics.shape[:2] != (b, s) or extrinsics.shape[-1] != 4 or extrinsics.shape[-2] not in (3, 4):
                raise ValueError(f"extrinsics must be (B, S, 3|4, 4) = ({b}, {s}, 4, 4), got {tuple(extrinsics.shape)}")
            if intrinsics.shape != (b, s, 3, 3):
                raise ValueError(f"intrinsics must be (B, S, 3, 3) = ({b}, {s}, 3, 3), got {tuple(intrinsics.shape)}")
            # data-dependent: checked eagerly; graph backends check on the host (da3_core.backends.split)
            if not torch.compiler.is_compiling() and not (torch.isfinite(extrinsics).all()
                                                         and torch.isfinite(intrinsics).all()):
                raise ValueError("extrinsics/intrinsics contain NaN or inf; pass finite cameras or none")
            if self.cam_enc is None:
                raise ValueError("this variant has no camera encoder (mono/metric): it cannot take camera inputs")
        if ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ValueError(f"unknown ref_view_strategy {ref_view_strategy!r}; use one of "
                             f"{', '.join(REF_VIEW_STRATEGIES)}")
        if use_ray_pose and not self.is_anyview:
            raise ValueError("use_ray_pose needs an any-view model (it has no ray head)")
