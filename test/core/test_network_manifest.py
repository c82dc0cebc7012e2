"""Every variant's state dict, parameter count and LayerNorm eps equal the official manifests.

Networks are built on the meta device (no memory, no weights), so this covers the 1.7 B-parameter nested model in
a second. Reference: ``shared/golden/manifests/<variant>.json`` (read off the official code).
"""

from __future__ import annotations

import re

import pytest
import torch
from support.golden import manifest
from torch import nn

from da3_core import build_network, canonical_variant, list_variants
from da3_core.weights.loading import tied_aliases

ALL_VARIANTS = ["da3-small", "da3-base", "da3-large", "da3-giant", "da3metric-large", "da3mono-large",
                "da3nested-giant-large"]


def test_registry_lists_the_seven_official_variants():
    assert list_variants() == sorted(ALL_VARIANTS)


@pytest.mark.parametrize("name,expected", [
    ("DA3-LARGE-1.1", "da3-large"), ("depth-anything/DA3NESTED-GIANT-LARGE-1.1", "da3nested-giant-large"),
    ("depth-anything/DA3METRIC-LARGE", "da3metric-large"), ("da3-small", "da3-small"), ("DA3-GIANT-1.1", "da3-giant"),
])
def test_official_checkpoint_names_map_to_variants(name, expected):
    assert canonical_variant(name) == expected


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(KeyError, match="da3-small"):
        canonical_variant("da3-huge")


def _meta_network(variant: str) -> nn.Module:
    with torch.device("meta"):
        return build_network(variant)


@pytest.mark.parametrize("variant", ALL_VARIANTS + ["da3-small-reduced"])
def test_state_dict_layout_equals_manifest(variant):
    ref = manifest(variant)
    net = _meta_network(variant)
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    theirs = [(e["key"], e["shape"]) for e in ref["state_dict"]]
    assert ours == theirs  # same keys, same shapes, same order
    assert sum(p.numel() for p in net.parameters()) == ref["total_unique_parameters"]
    assert tied_aliases(net) == ref["tied_aliases"]
    official_file_keys = len(ours) - len(ref["tied_aliases"])
    assert official_file_keys == ref["hf_safetensors_expected_num_keys"]


def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\*", r"\d+") + "$")


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_layernorm_eps_equal_module_configs(variant):
    configs = manifest(variant)["module_configs"]
    patterns = [(_pattern(name), entries) for name, entries in configs.items()]
    checked = 0
    for name, module in _meta_network(variant).named_modules():
        if not isinstance(module, nn.LayerNorm):
            continue
        entries = [e for pat, es in patterns if pat.match(name) for e in es if e["type"] == "LayerNorm"]
        assert entries, f"{name} has no LayerNorm entry in the manifest"
        assert any(e["eps"] == module.eps and e["normalized_shape"] == list(module.normalized_shape)
                   for e in entries), f"{name}: eps {module.eps} not in {entries}"
        checked += 1
    assert checked > 0
