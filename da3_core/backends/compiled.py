"""Launch-free inference for one fixed window shape (``backend="torch_graph"``).

:class:`CapturedNetwork` runs the eager network's fixed-shape part (:class:`~da3_core.backends.split.GraphNetwork`)
as one captured graph for the window it was warmed up with:

- on CUDA (``mode="cuda_graph"``, the default there): a CUDA graph. The first call of the window shape (or
  :meth:`da3_core.api.DA3.warm_up`) runs the network three times on a side stream and captures the fourth call into
  static input and output buffers; later calls copy the inputs in and replay the graph: one launch instead of
  hundreds of kernel launches from Python. The capture records the autocast state of that first call (the API's
  precision), so every replay runs the same kernels.
- elsewhere (``mode="compile"``, the default on the CPU; also available on CUDA): ``torch.compile`` of the graph
  with ``dynamic=False`` (``mode="reduce-overhead"`` on CUDA, inductor's default on the CPU).

A call with another window (views, height, width, camera inputs) or, where it matters, another reference-view
strategy runs the eager network instead and is counted (``counts["fallback_shape"]``, ``fallback_ref_view``);
the host tail (:func:`~da3_core.backends.split.finish`) is shared, so outputs equal the eager network's up to the
kernels' rounding.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from da3_core.backends.split import GraphNetwork, GraphSpec, SplitNetwork

__all__ = ["CapturedNetwork", "CAPTURE_MODES"]

CAPTURE_MODES = ("auto", "cuda_graph", "compile")
_WARMUP_RUNS = 3


class CapturedNetwork(SplitNetwork):
    """``network`` with its window ``spec`` captured (see the module docstring); other windows run eagerly.
    ``spec=None``: the first call's window (and reference-view strategy) becomes the captured one.

    Counters (``counts``): ``captures``, ``graph_runs``, ``eager_runs``, ``fallback_shape``, ``fallback_ref_view``.
    """

    def __init__(self, network: nn.Module, spec: GraphSpec | None = None, mode: str = "auto"):
        super().__init__(network.cfg)
        if mode not in CAPTURE_MODES:
            raise ValueError(f"capture mode {mode!r}: one of {', '.join(CAPTURE_MODES)}")
        self.network = network
        self.spec = spec
        self.mode = mode
        self.graph = GraphNetwork(network, spec) if spec is not None else None
        self.counts: Counter[str] = Counter()
        self._runner: Any = None  # compiled module, or (CUDAGraph, static inputs, static outputs)

    def _resolved_mode(self, device: torch.device) -> str:
        if self.mode != "auto":
            if self.mode == "cuda_graph" and device.type != "cuda":
                raise ValueError("capture mode 'cuda_graph' needs a CUDA device; use mode 'compile' (or 'auto')")
            return self.mode
        return "cuda_graph" if device.type == "cuda" else "compile"

    def _capture(self, inputs: list[torch.Tensor]) -> None:
        mode = self._resolved_mode(inputs[0].device)
        if mode == "compile":
            opts = {"mode": "reduce-overhead"} if inputs[0].device.type == "cuda" else {}
            self._runner = torch.compile(self.graph, dynamic=False, fullgraph=False, **opts)
            self._runner(*inputs)  # compile now (the warm-up), not in the first timed call
        else:
            static_in = [t.clone() for t in inputs]
            stream = torch.cuda.Stream(device=inputs[0].device)
            stream.wait_stream(torch.cuda.current_stream(inputs[0].device))
            with torch.cuda.stream(stream):  # warm-up off the default stream, as CUDA graph capture asks
                for _ in range(_WARMUP_RUNS):
                    self.graph(*static_in)
            torch.cuda.current_stream(inputs[0].device).wait_stream(stream)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                static_out = self.graph(*static_in)
            self._runner = (cuda_graph, static_in, static_out)
        self.counts["captures"] += 1

    def run_graph(self, spec_key: tuple[int, int, int, bool], ref_view: str, inputs: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor] | None:
        if self.spec is None:
            self.spec = GraphSpec(*spec_key, ref_view=ref_view)
            self.graph = GraphNetwork(self.network, self.spec)
        if spec_key != self.spec.key:
            self.counts["fallback_shape"] += 1
            return None
        if not self.spec.accepts(spec_key, ref_view, self.kind):
            self.counts["fallback_ref_view"] += 1
            return None
        if self._runner is None:
            self._capture(inputs)
        if isinstance(self._runner, tuple):
            cuda_graph, static_in, static_out = self._runner
            for dst, src in zip(static_in, inputs):
                dst.copy_(src)
            cuda_graph.replay()
            outs = [t.clone() for t in static_out]  # the buffers are overwritten by the next replay
        else:
            outs = self._runner(*inputs)
        self.counts["graph_runs"] += 1
        return dict(zip(self.graph.output_names, outs))

    def run_eager(self, x: torch.Tensor, extrinsics: torch.Tensor | None, intrinsics: torch.Tensor | None,
                  ref_view_strategy: str, use_ray_pose: bool) -> dict[str, torch.Tensor]:
        self.counts["eager_runs"] += 1
        return self.network(x, extrinsics, intrinsics, ref_view_strategy, use_ray_pose)
