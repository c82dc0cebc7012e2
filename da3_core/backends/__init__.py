"""Ways to run a DA3 network besides the eager torch module (``DA3(..., backend=...)``):

- ``torch``: the eager module (default);
- ``torch_graph``: one window shape captured for launch-free replay (CUDA graph, or torch.compile on the CPU),
  other shapes eager and counted (:mod:`da3_core.backends.compiled`);
- ``onnxruntime``: exported ONNX graphs on ONNX Runtime (CPU, CUDA, TensorRT) (:mod:`da3_core.backends.onnx_runtime`).

All three share the split of :mod:`da3_core.backends.split` (fixed graph + host tail), so their outputs agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

BACKENDS = ("torch", "torch_graph", "onnxruntime")

__all__ = ["BACKENDS", "wrap_network", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Where graphs exported on demand (and TensorRT engines) go: ``$DA3_CACHE`` or ``~/.cache/da3_ros``."""
    import os

    return Path(os.environ.get("DA3_CACHE", Path.home() / ".cache" / "da3_ros")).expanduser()


def wrap_network(network: nn.Module, backend: str, device: torch.device, variant: str = "",
                 onnx: Sequence[str | Path] = (), cache_dir: str | Path | None = None,
                 providers: Sequence[str] | None = None, capture_mode: str = "auto") -> nn.Module:
    """``network`` run by ``backend`` (see the module docstring). For ``onnxruntime``: ``onnx`` exported files or
    folders; windows they do not cover are exported from ``network`` into ``cache_dir`` (default
    :func:`default_cache_dir`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return network
    if backend == "torch_graph":
        from da3_core.backends.compiled import CapturedNetwork

        return CapturedNetwork(network, None, capture_mode)
    from da3_core.backends.onnx_runtime import OnnxRuntimeNetwork

    return OnnxRuntimeNetwork(onnx, source=network, variant=variant, cache_dir=cache_dir or default_cache_dir(),
                              device=device, providers=providers)
