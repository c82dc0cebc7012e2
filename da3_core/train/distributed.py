"""Distributed data parallel from the ``torchrun`` environment (nanoGPT style: one ``if`` on ``RANK``).

``torchrun --nproc_per_node N training/train.py ...`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (and
``MASTER_ADDR`` / ``MASTER_PORT``); without them training is single-process. Backend: ``nccl`` on CUDA, ``gloo`` on
CPU. Only rank 0 (the *master*) logs, evaluates and writes checkpoints; every rank reads checkpoints on resume.

Data sharding: :class:`da3_core.train.batching.TokenBudgetBatchSampler` takes ``rank`` / ``world_size`` and gives
every rank a disjoint slice of the same step plan (same resolution and view count on all ranks, so the per-rank
batches line up) -- the DistributedSampler equivalent.

DDP averages gradients over ranks, so one DDP step on N ranks with per-rank batch B equals one single-process step on
the concatenated N*B batch whenever the per-rank losses are means over equally many elements (all-valid pixels; the
test in ``test/core/test_train_ddp.py`` checks this to 1e-6). With masked pixels the per-rank means are weighted
slightly differently from a global mean -- the usual DDP semantics.

FSDP (big models, e.g. da3-giant): :func:`wrap_model` with ``fsdp=True`` shards every transformer block and the
rest of the model with ``torch.distributed.fsdp.fully_shard`` (FSDP2, PyTorch >= 2.6). Checkpoints then need the
full state dict gathered on rank 0 (``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
``full_state_dict=True, cpu_offload=True``); :mod:`da3_core.train.checkpoint` does this when the model is sharded.
Gathering FSDP2 shards is a collective, so every rank takes part in writing a checkpoint or the final export
(``Trainer.save`` / ``fit``); the optimiser state is gathered too. The tests run both with 2 gloo CPU processes
(gradients equal single-process ones; the gathered state equals the unsharded one; a ``torchrun`` FSDP2 run writes
full checkpoints and a loadable export). Known gap: *resuming* an FSDP2 run fails on the DualDPT head's tied
auxiliary LayerNorm parameters (FSDP2 shards one of the two names only, and loading the full state then mixes
tensors and DTensors); FSDP2 on CUDA has not been run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "wrap_model", "unwrap_model", "all_reduce_mean"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its device, and whether it is the master (rank 0)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    ddp: bool = False

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Read the torchrun variables and initialise the process group (gloo on CPU, nccl on CUDA).

    ``device``: "auto" (CUDA when available), "cpu" or "cuda". Without ``RANK`` in the environment returns a
    single-process :class:`DistInfo`.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if "RANK" not in os.environ:
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, ddp=world > 1)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool = False) -> nn.Module:
    """DDP (or FSDP2 with ``fsdp=True``) around ``model`` when running distributed; the model itself otherwise.

    ``find_unused_parameters=True``: pose conditioning (paper §3.2) uses the camera encoder on some steps and the
    learned camera tokens on the others, so each step leaves some parameters without a gradient.
    """
    if not info.ddp:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.backbone.pretrained.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside a DDP wrapper (FSDP2 modules are their own network)."""
    return model.module if hasattr(model, "module") else model


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a no-op single-process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= dist.get_world_size()
    return x
