"""Initialise the DA3 backbone from a DINOv2 ViT of ``timm`` (paper §3.2: DA3 starts from a pretrained DINOv2).

timm's ``vit_{small,base,large,giant}_patch14_dinov2`` state dicts map one-to-one onto ``backbone.pretrained.*``:

=================================  =============================================  ==================================
timm key                           ours (under ``backbone.pretrained.``)          note
=================================  =============================================  ==================================
``cls_token``                      ``cls_token``
``pos_embed`` (1, 1+g*g, C)        ``pos_embed`` (1, 1+G*G, C)                    bicubic resize of the patch part
                                                                                  when g != G (G = img_size / 14)
``patch_embed.proj.{weight,bias}``  same
``blocks.i.norm1/norm2``           same
``blocks.i.attn.qkv / attn.proj``  same                                           q_norm/k_norm (blocks >= qknorm_start)
                                                                                  keep their init: DINOv2 has none
``blocks.i.ls1.gamma/ls2.gamma``   same (our LayerScale is ``ls*.gamma`` too)
``blocks.i.mlp.fc1/fc2``           ``mlp.fc1/fc2`` (MLP) or ``mlp.w12/w3`` (SwiGLU, giant: timm packs w1,w2 as fc1)
``norm``                           ``norm``
``reg_token`` (reg4 models)        -- (dropped: DA3 has no register tokens)
=================================  =============================================  ==================================

Only the first ``depth`` blocks are used when our ViT is shallower (e.g. reduced test configs). ``camera_token``,
the q/k norms, the heads and the camera modules keep their initialisation. Shapes are asserted key by key
(nanoGPT's ``from_pretrained``). The mapping is tested offline on timm's randomly initialised models
(``test/core/test_timm_init.py``: identical block outputs for a local layer).

With weights: ``init_backbone_from_timm(net, "vit_small_patch14_dinov2.lvd142m", pretrained=True)`` (timm
downloads them from the Hugging Face hub, or uses its cache / ``pretrained_cfg_overlay=dict(file=...)``).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TIMM_DINOV2", "map_timm_dinov2", "resize_pos_embed", "init_backbone_from_timm"]

TIMM_DINOV2 = {
    "da3-small": "vit_small_patch14_dinov2.lvd142m",
    "da3-base": "vit_base_patch14_dinov2.lvd142m",
    "da3-large": "vit_large_patch14_dinov2.lvd142m",
    "da3-giant": "vit_giant_patch14_dinov2.lvd142m",
}
"""timm DINOv2 model of each official any-view variant's backbone."""

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def resize_pos_embed(pos: torch.Tensor, grid: int, num_prefix: int = 1) -> torch.Tensor:
    """(1, P + g*g, C) -> (1, P + grid*grid, C): the patch part resized bicubically, prefix tokens kept."""
    g = int(math.isqrt(pos.shape[1] - num_prefix))
    if g == grid:
        return pos
    prefix, patch = pos[:, :num_prefix], pos[:, num_prefix:]
    patch = patch.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    return torch.cat((prefix, patch), dim=1)


def map_timm_dinov2(timm_state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Our ``backbone.pretrained.*`` tensors from a timm DINOv2 state dict (shapes checked against ``net``)."""
    ours = net.state_dict()
    vit = net.backbone.pretrained
    depth = len(vit.blocks)
    grid = vit.cfg.img_size // vit.cfg.patch_size
    swiglu = vit.cfg.ffn == "swiglu"
    num_prefix = 1 + (timm_state["reg_token"].shape[1] if "reg_token" in timm_state else 0)
    out: dict[str, torch.Tensor] = {}
    for key, value in timm_state.items():
        if key in ("reg_token", "mask_token"):
            continue
        if key == "pos_embed":
            value = resize_pos_embed(value, grid, num_prefix)
            if num_prefix > 1:  # drop register-token positions if timm stored any
                value = torch.cat((value[:, :1], value[:, num_prefix:]), dim=1)
        m = _BLOCK.match(key)
        if m:
            if int(m.group(1)) >= depth:
                continue
            rest = m.group(2)
            if swiglu:
                rest = rest.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
            key = f"blocks.{m.group(1)}.{rest}"
        target = f"backbone.pretrained.{key}"
        if target not in ours:
            raise KeyError(f"timm key {key!r} has no counterpart {target!r} in our network")
        if ours[target].shape != value.shape:
            raise ValueError(f"{target}: timm shape {tuple(value.shape)} != ours {tuple(ours[target].shape)}; "
                             "pick the timm model of the same width (TIMM_DINOV2)")
        out[target] = value.detach().clone()
    missing_blocks = [k for k in ours if k.startswith("backbone.pretrained.blocks.") and k not in out
                      and not re.search(r"\.(q_norm|k_norm)\.", k)]
    if missing_blocks:
        raise KeyError(f"timm model has fewer blocks than ours: {missing_blocks[:4]} ...")
    return out


@torch.no_grad()
def init_backbone_from_timm(net: nn.Module, model: str | nn.Module, pretrained: bool = True) -> list[str]:
    """Copy a timm DINOv2 (a model name, created with ``pretrained``, or a timm module) into ``net``'s ViT.

    Returns the list of keys that were set.
    """
    if isinstance(model, str):
        import timm

        model = timm.create_model(model, pretrained=pretrained, dynamic_img_size=False)
    mapped = map_timm_dinov2(model.state_dict(), net)
    state = net.state_dict()
    for k, v in mapped.items():
        state[k].copy_(v.to(state[k].dtype))
    return sorted(mapped)
