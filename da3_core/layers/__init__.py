"""Transformer building blocks, one concept per file."""

from da3_core.layers.attention import Attention
from da3_core.layers.block import Block
from da3_core.layers.layer_scale import LayerScale
from da3_core.layers.mlp import Mlp
from da3_core.layers.patch_embed import PatchEmbed
from da3_core.layers.rope import RopeTables, apply_rope, rope_tables
from da3_core.layers.swiglu import SwiGLUFFN

__all__ = ["Attention", "Block", "LayerScale", "Mlp", "PatchEmbed", "RopeTables", "SwiGLUFFN", "apply_rope",
           "rope_tables"]
