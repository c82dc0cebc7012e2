"""DA3.from_pretrained: official-layout checkpoints load strictly; damaged or foreign files give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support.api_helpers import synthetic_images

from da3_core.api import DA3
from da3_core.registry import build_network
from da3_core.weights.loading import WeightsError, WeightsMismatchError, save_weights
from da3_core.weights.recipe import apply_recipe

VARIANT = "da3-small-reduced"  # 6-block golden test model: same key layout as da3-small, fast


@pytest.fixture(scope="module")
def recipe_net():
    return apply_recipe(build_network(VARIANT)).eval()


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, recipe_net):
    """Official layout: model.safetensors (``model.`` prefix, tied aliases dropped) + config.json with model_name."""
    folder = tmp_path_factory.mktemp("ckpt")
    save_weights(recipe_net, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_name": VARIANT, "config": {}}))
    return folder


def test_official_layout_file(checkpoint_dir):
    from safetensors import safe_open

    with safe_open(str(checkpoint_dir / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("model.") for k in keys)
    assert not any(k.startswith("model.head.scratch.output_conv2_aux.1.2") for k in keys)  # tied alias absent


def test_from_pretrained_folder_equals_network(checkpoint_dir, recipe_net):
    model = DA3.from_pretrained(checkpoint_dir, device="cpu")
    assert model.variant == VARIANT
    ours = model.network.state_dict()
    for key, value in recipe_net.state_dict().items():
        assert torch.equal(ours[key], value), key
    images = synthetic_images(2, 70, 98)
    a = model.predict(images, process_res=98)
    b = DA3.from_network(recipe_net, device="cpu").predict(images, process_res=98)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.extrinsics, b.extrinsics)


def test_from_pretrained_file_needs_variant(checkpoint_dir, tmp_path):
    bare = tmp_path / "weights.safetensors"
    bare.write_bytes((checkpoint_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="pass variant="):
        DA3.from_pretrained(bare, device="cpu")
    assert DA3.from_pretrained(bare, variant=VARIANT, device="cpu").variant == VARIANT
    with pytest.raises(ValueError, match="config.json names"):
        DA3.from_pretrained(checkpoint_dir, variant="da3-large", device="cpu")


def test_missing_checkpoint_explains_where_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        DA3.from_pretrained(tmp_path / "nowhere", device="cpu")
    assert "huggingface.co/depth-anything" in str(info.value) and "Nothing is downloaded" in str(info.value)


def test_truncated_file(checkpoint_dir, tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    data = (checkpoint_dir / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    (folder / "config.json").write_text(json.dumps({"model_name": VARIANT}))
    with pytest.raises(WeightsError, match="truncated"):
        DA3.from_pretrained(folder, device="cpu")


def test_foreign_safetensors(tmp_path):
    save_file({"encoder.layer.0.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": VARIANT}))
    with pytest.raises(WeightsMismatchError) as info:
        DA3.from_pretrained(tmp_path, device="cpu")
    assert "missing keys" in str(info.value) and "encoder.layer.0.weight" in str(info.value)


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="safetensors"):
        DA3.from_pretrained(tmp_path, variant=VARIANT, device="cpu")
