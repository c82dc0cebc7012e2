"""Deterministic synthetic weights ("recipe weights") for reproducible tests and benchmarks.

Every tensor is drawn from ``numpy.random.RandomState(crc32(key))`` (stream-stable across numpy versions), so
the same weights can be regenerated anywhere from the key names and shapes alone. The recipe is the one the
golden reference data in ``shared/golden`` was produced with (its README §3): matching it lets our network be
compared number for number with the official one without shipping any weights file.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

_CONV_TRANSPOSE = ("resize_layers.0.weight", "resize_layers.1.weight")  # [in, out, k, k] weights
_TOKENS = ("cls_token", "camera_token", "pos_embed", "register_tokens", "mask_token")


def recipe_value(key: str, shape: Iterable[int]) -> np.ndarray:
    """The recipe tensor for state-dict ``key`` (bare key, no ``model.`` prefix) of the given shape, float32."""
    shape = tuple(int(s) for s in shape)
    noise = np.random.RandomState(zlib.crc32(key.encode("utf-8"))).standard_normal(size=shape)
    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("cam_dec.fc_fov.0.bias"):
        value = 1.0 + 0.05 * noise
    elif leaf == "gamma":  # LayerScale
        value = 0.5 + 0.1 * noise
    elif leaf in _TOKENS:
        value = 0.5 * noise
    elif leaf == "bias":
        value = 0.05 * noise
    elif leaf == "weight" and len(shape) == 1:  # every 1-D weight is a LayerNorm weight
        value = 1.0 + 0.1 * noise
    elif leaf == "weight":
        if key.endswith(_CONV_TRANSPOSE):
            fan_in = shape[0] * int(np.prod(shape[2:]))
        else:
            fan_in = int(np.prod(shape[1:]))
        value = noise / math.sqrt(fan_in)
    else:
        raise ValueError(f"recipe has no rule for key {key!r}")
    return value.astype(np.float32)


@torch.no_grad()
def apply_recipe(model: nn.Module) -> nn.Module:
    """Overwrite every parameter and persistent buffer of ``model`` with its recipe value (in place).

    Tensors shared by several keys (tied parameters) are generated once, from the first key in state-dict order.
    """
    seen: set[int] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        value = torch.from_numpy(recipe_value(key, tensor.shape))
        tensor.data.copy_(value.to(dtype=tensor.dtype, device=tensor.device))
    return model


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over ``key + str(shape) + float32 C-order bytes`` for every state-dict entry (aliases included)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
