"""Strict loading of official DA3 checkpoints and of our own weights files.

Official ``model.safetensors`` files (the model pages of depth-anything/*) hold every key with the prefix
``model.`` and lack the 6 tied aliases of the any-view head (safetensors keeps one name per shared tensor):
both are handled here. Anything else that does not fit -- a missing, unexpected or mis-shaped key, a truncated
or foreign file -- raises an error that names it. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

OFFICIAL_PREFIX = "model."
WEIGHTS_FILENAMES = ("model.safetensors", "weights.safetensors")
VARIANT_METADATA_KEY = "da3_variant"


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the network."""


class WeightsMismatchError(WeightsError):
    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[str], source: str) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def listing(title: str, keys: list[str]) -> str:
            shown = "\n    ".join(keys[:20])
            more = f"\n    ... and {len(keys) - 20} more" if len(keys) > 20 else ""
            return f"\n  {title} ({len(keys)}):\n    {shown}{more}" if keys else ""

        super().__init__(
            f"weights in {source} do not fit the network:"
            + listing("missing keys", missing)
            + listing("unexpected keys", unexpected)
            + listing("shape mismatches", mismatched)
            + "\n  Check that the variant matches the checkpoint (pass variant=..., or keep config.json beside "
            "model.safetensors)."
        )


def resolve_checkpoint(path: str | Path) -> tuple[Path, str | None]:
    """(weights file, variant name or None) for a checkpoint folder or file.

    A folder must contain ``model.safetensors`` (official layout) and may contain ``config.json``
    (``{"model_name": "da3-large", ...}``); a file's variant comes from a ``config.json`` beside it or from its
    own safetensors metadata (our checkpoints).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}. Download an official checkpoint folder (model.safetensors + config.json) "
            "from the Depth Anything 3 model pages yourself; da3-ros never downloads weights at run time.")
    if path.is_dir():
        found = [path / name for name in WEIGHTS_FILENAMES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"checkpoint folder {path} has no {' or '.join(WEIGHTS_FILENAMES)}")
        weights, folder = found[0], path
    else:
        weights, folder = path, path.parent
    variant = _variant_from_config(folder / "config.json") or _variant_from_metadata(weights)
    return weights, variant


def _variant_from_config(config: Path) -> str | None:
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{config} is not valid JSON ({exc}); fix or remove it and pass variant=...") from exc
    name = data.get("model_name") or data.get("variant")
    return str(name) if name else None


STREAM_WINDOW_KEY = "stream_window"
"""config.json key of a checkpoint's recommended streaming window: ``[frames per window, frames shared]``."""


def stream_window(path: str | Path) -> tuple[int, int] | None:
    """The streaming window a checkpoint recommends, from ``config.json``'s ``stream_window`` (``[window, overlap]``,
    beside a weights file or in a checkpoint folder); None when it names none (official checkpoints: the caller's
    default). A model that cannot relate distant views well (the embedded default: its per-view depth scale and its
    camera spread degrade with the distance to the reference view) chains better in short windows."""
    value = _config_value(path, STREAM_WINDOW_KEY)
    config = _config_path(path)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in value)
            or not (2 <= value[0] <= 64 and 0 <= value[1] < value[0])):
        raise WeightsError(f"{config}: {STREAM_WINDOW_KEY} = {value!r} must be [window, overlap], two integers with "
                           "2 <= window <= 64 and 0 <= overlap < window (or leave it out)")
    return int(value[0]), int(value[1])


STREAM_REFINE_KEY = "stream_refine"
"""config.json key of a checkpoint's recommended window refinement (``"photometric"`` or ``"off"``)."""
STREAM_REFINE_CHOICES = ("photometric", "off")


def stream_refine(path: str | Path) -> str | None:
    """The window refinement a checkpoint recommends, from ``config.json``'s ``stream_refine``
    (:data:`STREAM_REFINE_CHOICES`, see :mod:`da3_core.stream.photometric`); None when it names none (official
    checkpoints: the caller's default, off). A model whose views disagree in depth scale (the embedded default)
    chains into a consistent map only when the images set each view's scale."""
    value = _config_value(path, STREAM_REFINE_KEY)
    if value is not None and value not in STREAM_REFINE_CHOICES:
        raise WeightsError(f"{_config_path(path)}: {STREAM_REFINE_KEY} = {value!r} must be one of "
                           f"{', '.join(repr(c) for c in STREAM_REFINE_CHOICES)} (or leave it out)")
    return value


def _config_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return (path if path.is_dir() else path.parent) / "config.json"


def _config_value(path: str | Path, key: str):
    """``key`` of the config.json beside a weights file or in a checkpoint folder; None without the file or key."""
    config = _config_path(path)
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get(key)
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise WeightsError(f"{config} is not a JSON object ({exc}); fix or remove it") from exc


def _variant_from_metadata(weights: Path) -> str | None:
    if weights.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(VARIANT_METADATA_KEY)
    except (SafetensorError, OSError, ValueError):
        return None  # reported properly when the file is loaded


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt`` checkpoint of ours (``{"model": state_dict, ...}``)."""
    path = Path(path)
    size = path.stat().st_size
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
            raise WeightsError(f"cannot read {path} as a torch checkpoint ({exc}); is the file complete?") from exc
        state = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path} holds no state dict (expected a dict of tensors or {{'model': ...}})")
        return state
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot read {path} ({size} bytes) as safetensors: {exc}. The file is truncated or not a safetensors "
            "file; download it again (check its size/sha256 against the model page).") from exc


def read_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(tensors, variant name or None) of a checkpoint folder, a ``.safetensors`` file or a training checkpoint of
    ``da3_core.train`` (``.pt``: the variant is its ``model_args``)."""
    source = Path(source).expanduser()
    if source.suffix in (".pt", ".pth") and source.is_file():
        try:  # our trainer's own file: it also holds RNG states and the config, so not weights-only
            obj = torch.load(source, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
            raise WeightsError(f"cannot read {source} as a torch checkpoint ({exc}); is the file complete?") from exc
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            return obj["model"], (obj.get("model_args") or {}).get("variant")
        return load_state_dict_file(source), None
    path, variant = resolve_checkpoint(source)
    return load_state_dict_file(path), variant


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """{alias key: first key} for state-dict entries that share one tensor (official: aux-head LayerNorm)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(tensor), key)
        if owner != key:
            aliases[key] = owner
    return aliases


def to_model_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the official ``model.`` prefix when every key carries it."""
    if state and all(k.startswith(OFFICIAL_PREFIX) for k in state):
        return {k[len(OFFICIAL_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise WeightsMismatchError unless ``state`` (bare keys, aliases optional) fits ``model`` exactly."""
    expected = model.state_dict()
    aliases = tied_aliases(model)
    missing = [k for k in expected if k not in state and k not in aliases]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(missing, unexpected, mismatched, source)
    for alias, owner in aliases.items():
        if alias in state and owner in state and not torch.equal(state[alias], state[owner]):
            raise WeightsError(f"{source}: tied keys {alias} and {owner} hold different values")


def load_weights_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> nn.Module:
    """Load official-layout or bare-key tensors into ``model``; every key must fit (tied aliases may be absent)."""
    state = to_model_keys(state)
    check_state_dict(model, state, source)
    aliases = tied_aliases(model)
    full = dict(state)
    for alias, owner in aliases.items():
        full.setdefault(alias, state[owner])
    model.load_state_dict(full, strict=True)
    return model


def save_weights(model: nn.Module, path: str | Path, variant: str | None = None, official_layout: bool = True) -> Path:
    """Write ``model`` as safetensors: official layout (``model.`` prefix, tied aliases dropped) by default, with
    the variant in the file's metadata so that :func:`resolve_checkpoint` finds it again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    aliases = tied_aliases(model)
    prefix = OFFICIAL_PREFIX if official_layout else ""
    tensors = {prefix + k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
               if k not in aliases}
    metadata = {"format": "pt"}
    if variant:
        metadata[VARIANT_METADATA_KEY] = variant
    save_file(tensors, str(path), metadata=metadata)
    return path
