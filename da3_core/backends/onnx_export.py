"""ONNX export of a DA3 network for one fixed window shape (``da3 export --onnx``).

The exported graph is :class:`~da3_core.backends.split.GraphNetwork` (torch.export + the torch ONNX exporter,
opset 18): inputs ``images`` (1, S, 3, H, W) float32 ImageNet-normalised [+ ``input_extrinsics`` (1, S, 4, 4),
``input_intrinsics`` (1, S, 3, 3) for a ``conditioned`` graph], outputs named by
:func:`~da3_core.backends.split.graph_outputs`. The reference-view strategy is part of the graph (``first`` /
``middle`` as constants, ``saddle_*`` computed from the class tokens inside it). Models over 2 GB store their weights
next to the ``.onnx`` file (``<name>.onnx.data``, ONNX external data): keep both files together.

The file's metadata (``da3.*`` keys) records the variant, the network kind, the window spec and a fingerprint of
the weights, so :class:`~da3_core.backends.onnx_runtime.OnnxRuntimeNetwork` knows what it runs and an export cache
can tell graphs of different weights apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from da3_core.backends.split import GraphNetwork, GraphSpec, graph_outputs

__all__ = ["INPUT_NAMES", "GraphInfo", "export_onnx", "read_graph_info", "weights_fingerprint", "cached_graph_name"]

OPSET = 18
INPUT_NAMES = ("images", "input_extrinsics", "input_intrinsics")  # outputs use the plain names
_META = "da3."


@dataclass(frozen=True)
class GraphInfo:
    """What an exported graph holds (from its metadata)."""

    path: Path
    variant: str
    kind: str
    spec: GraphSpec
    fingerprint: str
    outputs: tuple[str, ...]


def weights_fingerprint(network: nn.Module) -> str:
    """SHA-1 over the network's state dict (names, shapes, dtypes, bytes): the same weights give the same text."""
    h = hashlib.sha1()
    for name, t in network.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_graph_name(variant: str, spec: GraphSpec, fingerprint: str) -> str:
    """File name of a graph in an export cache: variant, window, cameras, reference view, weights."""
    cams = "cams" if spec.conditioned else "free"
    return f"{variant}-{spec.views}x{spec.height}x{spec.width}-{cams}-{spec.ref_view}-{fingerprint[:12]}.onnx"


def _example_inputs(spec: GraphSpec) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, spec.views, 3, spec.height, spec.width, generator=g)
    if not spec.conditioned:
        return (x,)
    w2c = torch.eye(4).repeat(1, spec.views, 1, 1)
    w2c[..., 0, 3] = torch.arange(spec.views, dtype=torch.float32) * 0.1  # a sideways walk
    K = torch.tensor([[0.8 * spec.width, 0.0, spec.width / 2], [0.0, 0.8 * spec.width, spec.height / 2],
                      [0.0, 0.0, 1.0]]).repeat(1, spec.views, 1, 1)
    return (x, w2c, K)


def export_onnx(network: nn.Module, spec: GraphSpec, path: str | Path, variant: str = "",
                fingerprint: str | None = None) -> GraphInfo:
    """Export ``network`` (eval mode, float32, on the CPU) for the window ``spec`` to ``path`` (.onnx).

    Slow for large models (minutes for ViT-L, and several GB of memory); the result runs anywhere ONNX Runtime does.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX file name must end in .onnx, got {str(path)!r}")
    graph = GraphNetwork(network.to("cpu").float().eval(), spec)
    inputs = _example_inputs(spec)
    names = list(INPUT_NAMES[: len(inputs)])
    fingerprint = fingerprint or weights_fingerprint(network)
    path.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the optimizer's per-node notes
    try:  # the exporter prints its progress and warns about tracing details: keep the caller's output clean
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, inputs, None, input_names=names,
                                        output_names=list(graph.output_names), opset_version=OPSET, dynamo=True,
                                        verbose=False, optimize=True)
    finally:
        quiet.setLevel(level)
    meta = {"variant": variant, "kind": graph.kind, "spec": json.dumps(spec.to_dict()), "fingerprint": fingerprint,
            "outputs": ",".join(graph.output_names)}
    program.model.metadata_props.update({_META + k: v for k, v in meta.items()})
    program.model.producer_name = "da3-ros"
    program.save(str(path))
    return GraphInfo(path, variant, graph.kind, spec, fingerprint, graph.output_names)


def read_graph_info(path: str | Path, metadata: dict[str, str] | None = None) -> GraphInfo:
    """The :class:`GraphInfo` of an exported file (``metadata``: its custom metadata map when already loaded)."""
    path = Path(path)
    if metadata is None:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        metadata = {p.key: p.value for p in model.metadata_props}
    meta = {k[len(_META):]: v for k, v in metadata.items() if k.startswith(_META)}
    if "spec" not in meta or "kind" not in meta:
        raise ValueError(f"{str(path)!r} is not a da3-ros ONNX export (no da3.* metadata); export one with "
                         "`da3 export --onnx ...`")
    kind = meta["kind"]
    outputs = tuple(meta.get("outputs", "").split(",")) or graph_outputs(kind)
    return GraphInfo(path, meta.get("variant", ""), kind, GraphSpec(**json.loads(meta["spec"])),
                     meta.get("fingerprint", ""), outputs)
