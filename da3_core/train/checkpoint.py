"""Training checkpoints: everything needed to continue *the same curve* after a kill.

A checkpoint ``ckpt_<step:08d>.pt`` in the run directory is one ``torch.save`` dict:

- ``model`` (bare network state dict), ``optimizer``, ``scheduler``, ``scaler`` (or None);
- ``rng``: python ``random``, numpy global, torch CPU and (when present) every CUDA device's state;
- ``data``: ``{"step", "epoch", "batch_in_epoch"}`` -- the next batch to draw (the batch sampler is a pure function
  of (seed, epoch), so this position determines the rest of the data stream);
- ``config`` (the resolved training config dict), ``model_args`` (variant name; on resume the saved architecture
  wins over the command line, as in nanoGPT), ``counters`` (NaN skips, ...), ``extra``.

Writes are atomic: the dict goes to ``<name>.tmp`` in the same directory, is flushed and fsynced, then renamed over
the final name (``os.replace``), so a kill at any moment leaves either the previous or the new checkpoint, never a
truncated one. Only the newest ``keep_last`` checkpoints are kept. Resume = :func:`latest_checkpoint` +
:func:`load_checkpoint` (restores every state above); a run killed between two checkpoints loses at most one interval.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "list_checkpoints", "model_state_dict"]

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Every global RNG state this project touches."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_sharded(model: nn.Module) -> bool:
    """True for an FSDP2 model (its parameters are DTensor shards)."""
    model = model.module if hasattr(model, "module") else model
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded, unwrapped) state dict on CPU. For an FSDP2 model this gathers the shards: a collective that
    every rank must call; rank 0 receives the tensors, the other ranks an empty dict."""
    model = model.module if hasattr(model, "module") else model
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state; for an FSDP2 model the full (gathered) state keyed by parameter name -- a collective
    like :func:`model_state_dict`."""
    model = model.module if hasattr(model, "module") else model
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run directory, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _NAME.match(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Any, data: dict[str, int], config: dict[str, Any],
                    model_args: dict[str, Any], counters: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, keep_last: int = 3,
                    model_state: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict[str, Any] | None = None) -> Path:
    """Atomically write ``ckpt_<step>.pt`` and prune to the newest ``keep_last``. Call on the master only.

    ``model_state`` / ``optimizer_state``: states gathered beforehand on every rank (:func:`model_state_dict`,
    :func:`optimizer_state_dict`); needed for FSDP2, whose gathering is a collective. Taken from the objects if None.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model_state if model_state is not None else model_state_dict(model),
        "optimizer": optimizer_state if optimizer_state is not None else optimizer_state_dict(model, optimizer),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "data": dict(data),
        "step": int(step),
        "config": dict(config),
        "model_args": dict(model_args),
        "counters": dict(counters or {}),
        "extra": dict(extra or {}),
    }
    final = run_dir / f"ckpt_{step:08d}.pt"
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    try:  # make the rename durable
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some filesystems
        pass
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: Any = None, restore_rng: bool = True,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``path`` and restore the given objects (strict model load); returns the checkpoint dict. An FSDP2 model
    (and its optimiser) is loaded from the full state by every rank, each keeping its own shard."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    bare = model.module if model is not None and hasattr(model, "module") else model
    if bare is not None and is_sharded(bare):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, strict=True)
        set_model_state_dict(bare, ckpt["model"], options=opts)
        if optimizer is not None:
            set_optimizer_state_dict(bare, optimizer, ckpt["optimizer"], options=opts)
    else:
        if bare is not None:
            bare.load_state_dict(ckpt["model"], strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return ckpt
