"""Strict checkpoint loading: official file layout, tied aliases, and clear errors for anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support.golden import manifest

from da3_core import build_network
from da3_core.weights.loading import (
    WeightsError,
    WeightsMismatchError,
    load_state_dict_file,
    load_weights_strict,
    resolve_checkpoint,
    save_weights,
    stream_refine,
    stream_window,
)
from da3_core.weights.recipe import apply_recipe, recipe_value, state_dict_sha256

VARIANT = "da3-small-reduced"
REDUCED_SHA = "edb3e271a9f408687e1837fe303a3058b18d135fe2c4c7eee49908ccae11a98d"  # golden README §3


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory) -> Path:
    """Recipe weights written the way the official HF files are: ``model.`` prefix, tied aliases absent,
    alias map in the metadata -- built from the manifest alone, independently of our writer."""
    ref = manifest(VARIANT)
    aliases = ref["tied_aliases"]
    tensors = {"model." + e["key"]: torch.from_numpy(recipe_value(e["key"], e["shape"]))
               for e in ref["state_dict"] if e["key"] not in aliases}
    folder = tmp_path_factory.mktemp("DA3-SMALL-REDUCED")
    metadata = {"format": "pt", **{"model." + a: "model." + k for a, k in aliases.items()}}
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    (folder / "config.json").write_text(json.dumps({"model_name": VARIANT, "config": {}}))
    return folder


def test_official_layout_loads_strictly(official_folder):
    weights, variant = resolve_checkpoint(official_folder)
    assert weights.name == "model.safetensors" and variant == VARIANT
    state = load_state_dict_file(weights)
    assert all(k.startswith("model.") for k in state)
    assert len(state) == manifest(VARIANT)["hf_safetensors_expected_num_keys"]
    net = load_weights_strict(build_network(variant), state, str(weights))
    assert state_dict_sha256(net) == REDUCED_SHA  # every tensor, the 6 re-tied aliases included


def test_missing_unexpected_and_misshaped_keys_are_listed(official_folder):
    state = load_state_dict_file(official_folder / "model.safetensors")
    state.pop("model.head.projects.0.weight")
    state["model.head.extra.weight"] = torch.zeros(3)
    state["model.cam_dec.fc_t.bias"] = torch.zeros(4)
    with pytest.raises(WeightsMismatchError) as err:
        load_weights_strict(build_network(VARIANT), state, "test file")
    msg = str(err.value)
    assert "head.projects.0.weight" in msg and "head.extra.weight" in msg and "cam_dec.fc_t.bias" in msg
    assert err.value.missing == ["head.projects.0.weight"]
    assert err.value.unexpected == ["head.extra.weight"]


def test_wrong_variant_is_refused(official_folder):
    state = load_state_dict_file(official_folder / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        load_weights_strict(build_network("da3-small"), state)  # 12-block network, 6-block file


def test_truncated_file_is_reported(official_folder, tmp_path):
    data = (official_folder / "model.safetensors").read_bytes()
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict_file(cut)


def test_foreign_files_are_reported(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="safetensors"):
        load_state_dict_file(junk)
    foreign = tmp_path / "timm.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(WeightsMismatchError, match="unexpected keys"):
        load_weights_strict(build_network(VARIANT), load_state_dict_file(foreign))


def test_missing_checkpoint_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        resolve_checkpoint(tmp_path)


def test_our_writer_uses_the_official_layout_and_records_the_variant(tmp_path):
    net = apply_recipe(build_network(VARIANT))
    path = save_weights(net, tmp_path / "ours.safetensors", variant=VARIANT)
    state = load_state_dict_file(path)
    ref = manifest(VARIANT)
    kept = [e["key"] for e in ref["state_dict"] if e["key"] not in ref["tied_aliases"]]
    assert sorted(state) == sorted("model." + k for k in kept)
    assert resolve_checkpoint(path) == (path, VARIANT)
    reloaded = load_weights_strict(build_network(VARIANT), state)
    assert state_dict_sha256(reloaded) == REDUCED_SHA


def test_torch_checkpoint_with_model_entry(tmp_path):
    net = apply_recipe(build_network(VARIANT))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "step": 3}, path)
    reloaded = load_weights_strict(build_network(VARIANT), load_state_dict_file(path))
    assert state_dict_sha256(reloaded) == REDUCED_SHA
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="torch checkpoint"):
        load_state_dict_file(tmp_path / "bad.pt")


def test_stream_window_is_read_from_config_json_and_checked(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert stream_window(folder) is None  # no config.json
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-large"}))
    assert stream_window(folder) is None  # official checkpoints name no window
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-tiny", "stream_window": [5, 3]}))
    assert stream_window(folder) == (5, 3)
    assert stream_window(folder / "model.safetensors") == (5, 3)  # a weights file: the config.json beside it
    for bad in ([4, 4], [1, 0], [65, 2], [4], [4.0, 2], [True, 0], "4,2", [4, -1]):
        (folder / "config.json").write_text(json.dumps({"stream_window": bad}))
        with pytest.raises(WeightsError, match="stream_window"):
            stream_window(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json"):
        stream_window(folder)


def test_stream_refine_is_read_from_config_json_and_checked(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert stream_refine(folder) is None  # no config.json
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-large"}))
    assert stream_refine(folder) is None  # official checkpoints name none: the caller's default (off)
    for value in ("photometric", "off"):
        (folder / "config.json").write_text(json.dumps({"stream_refine": value}))
        assert stream_refine(folder) == value
        assert stream_refine(folder / "model.safetensors") == value
    for bad in ("Photometric", "on", True, 1, ["photometric"]):
        (folder / "config.json").write_text(json.dumps({"stream_refine": bad}))
        with pytest.raises(WeightsError, match="stream_refine.*config.json|config.json.*stream_refine"):
            stream_refine(folder)
