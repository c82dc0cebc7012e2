"""DA3 on ONNX Runtime: exported fixed-window graphs behind the network contract (``backend="onnxruntime"``).

:class:`OnnxRuntimeNetwork` holds one ONNX Runtime session per exported graph (:mod:`da3_core.backends.onnx_export`)
and picks the one whose window (views, height, width, camera inputs, reference view) fits each call. Given the
torch network as ``source`` and a ``cache_dir``, a window without a graph is exported on the spot into the cache
(file name from the variant, window and a weights fingerprint, so a later start finds it); without them such a call
is refused with the ``da3 export`` command that makes the graph.

Execution providers (:func:`resolve_providers`): ``device="cpu"`` runs the CPU provider; a CUDA device uses
TensorRT then CUDA when the installed onnxruntime has them (``onnxruntime-gpu``), with TensorRT's engine and timing
caches in ``<cache_dir>/tensorrt`` (the first run of a window shape builds the engine, minutes for ViT-L; later
starts load it), and the CPU provider for what they do not take. A provider that fails to start (TensorRT libraries
missing) is dropped with a warning, counted in ``provider_fallbacks``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from da3_core.backends.onnx_export import (
    INPUT_NAMES,
    GraphInfo,
    cached_graph_name,
    export_onnx,
    read_graph_info,
    weights_fingerprint,
)
from da3_core.backends.split import GraphSpec, SplitNetwork

__all__ = ["OnnxRuntimeNetwork", "resolve_providers", "onnx_files"]

log = logging.getLogger(__name__)
_SHORT = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def onnx_files(path: str | Path) -> list[Path]:
    """The .onnx files of a file or folder argument (a folder: every ``*.onnx`` in it)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if not files:
            raise FileNotFoundError(f"no .onnx file in {str(path)!r}; export one with `da3 export --onnx ...`")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist; export one with `da3 export --onnx ...`")
    return [path]


def resolve_providers(device: str | torch.device, cache_dir: Path | None = None,
                      names: Sequence[str] | None = None) -> list[Any]:
    """ONNX Runtime providers (with options) for a torch-style device; ``names`` (tensorrt, cuda, cpu or full
    provider names) restricts and orders them."""
    import onnxruntime as ort

    device = torch.device(device)
    available = ort.get_available_providers()
    wanted = [_SHORT.get(n.strip().lower(), n.strip()) for n in names] if names else None
    if wanted is None:
        wanted = ["CPUExecutionProvider"] if device.type == "cpu" else \
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    missing = [n for n in wanted if n not in available]
    if names and missing:
        raise ValueError(f"onnxruntime providers {missing} are not in this onnxruntime build (it has "
                         f"{', '.join(available)}); install onnxruntime-gpu for CUDA / TensorRT or choose others")
    chosen = [n for n in wanted if n in available]
    if device.type == "cuda" and not any(n in chosen for n in _SHORT.values() if n != "CPUExecutionProvider"):
        raise ValueError(f"device {str(device)!r} with backend onnxruntime, but this onnxruntime build has only "
                         f"{', '.join(available)}; `pip install onnxruntime-gpu` (same version) or use device cpu")
    index = device.index or 0
    out: list[Any] = []
    for name in chosen:
        if name == "TensorrtExecutionProvider":
            trt = Path(cache_dir or ".") / "tensorrt"
            trt.mkdir(parents=True, exist_ok=True)
            out.append((name, {"device_id": index, "trt_engine_cache_enable": True,
                               "trt_engine_cache_path": str(trt), "trt_timing_cache_enable": True,
                               "trt_timing_cache_path": str(trt)}))
        elif name == "CUDAExecutionProvider":
            out.append((name, {"device_id": index}))
        else:
            out.append(name)
    return out


class _Source:
    """The eager network a missing graph is exported from (kept out of the module tree: never moved to a GPU)."""

    def __init__(self, network: nn.Module, variant: str, cache_dir: Path):
        self.network, self.variant, self.cache_dir = network, variant, cache_dir
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.network)
        return self._fingerprint


class OnnxRuntimeNetwork(SplitNetwork):
    """Exported graphs on ONNX Runtime with the eager network's call and outputs.

    Args:
        graphs: exported .onnx files (or folders of them); may be empty when ``source`` is given.
        source / variant / cache_dir: the torch network (and its variant name) to export missing windows from, and
            where to put them (also TensorRT's engine cache).
        device: where ONNX Runtime runs ("cpu", "cuda", "cuda:N"); ``providers`` overrides its provider list.
        threads: CPU provider intra-op threads (default: torch's thread count).
        cfg: the network config, for graphs of a variant that is not registered (default: from ``source`` or the
            variant name in the graphs' metadata).
    Counters (``counts``): ``runs``, ``exports``, ``provider_fallbacks``.
    """

    def __init__(self, graphs: Sequence[str | Path] = (), *, source: nn.Module | None = None, variant: str = "",
                 cache_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 providers: Sequence[str] | None = None, threads: int | None = None, cfg: Any = None):
        files = [f for g in graphs for f in onnx_files(g)]
        infos = [read_graph_info(f) for f in files]
        if source is None and not infos:
            raise ValueError("OnnxRuntimeNetwork needs exported graphs or a source network to export from")
        variant = variant or (infos[0].variant if infos else "")
        cfg = cfg if cfg is not None else getattr(source, "cfg", None)
        if cfg is None:
            from da3_core.registry import get_config, list_variants

            try:
                cfg = get_config(variant)
            except KeyError:
                raise ValueError(f"the graphs hold variant {variant!r}, which this da3_core does not know (known: "
                                 f"{', '.join(list_variants())}); pass its network config as cfg=...") from None
        super().__init__(cfg)
        self.variant = variant
        self.device_name = str(device)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._source = _Source(source, variant, self.cache_dir or Path(".")) if source is not None else None
        if self._source is not None and self.cache_dir is None:
            raise ValueError("exporting graphs on demand needs a cache_dir to write them to")
        self._provider_names = providers
        self._threads = threads
        self.counts: Counter[str] = Counter()
        self._sessions: list[tuple[GraphInfo, Any]] = []
        for info in infos:
            self._add_session(info)

    # --- sessions ---------------------------------------------------------------------------------------------
    def _add_session(self, info: GraphInfo) -> None:
        import onnxruntime as ort

        if info.kind != self.kind:
            raise ValueError(f"{str(info.path)!r} holds a {info.kind} graph ({info.variant}), not the {self.kind} "
                             f"network {self.variant!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self._threads or torch.get_num_threads())
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers = resolve_providers(self.device_name, self.cache_dir, self._provider_names)
        while True:
            try:
                session = ort.InferenceSession(str(info.path), opts, providers=providers)
                break
            except Exception as exc:  # noqa: BLE001 - a GPU provider that cannot start (libraries missing)
                if len(providers) <= 1:
                    raise
                dropped = providers.pop(0)
                self.counts["provider_fallbacks"] += 1
                log.warning("onnxruntime provider %s failed to start (%s); trying %s", dropped, exc, providers)
        self._sessions.append((info, session))

    @property
    def graphs(self) -> list[GraphInfo]:
        return [info for info, _ in self._sessions]

    @property
    def providers(self) -> list[str]:
        """Providers of the newest session (what actually runs)."""
        return self._sessions[-1][1].get_providers() if self._sessions else []

    def _export(self, spec: GraphSpec) -> GraphInfo:
        src = self._source
        path = src.cache_dir / cached_graph_name(src.variant or "da3", spec, src.fingerprint)
        if not path.is_file():  # export into a private folder, then move the file (and its weights) into place
            tmp = src.cache_dir / f".export-{os.getpid()}"
            log.warning("exporting an ONNX graph for %s to %s (once per window shape)", spec.describe(), path)
            export_onnx(src.network, spec, tmp / path.name, src.variant, src.fingerprint)
            for f in sorted(tmp.iterdir(), key=lambda f: f.suffix == ".onnx"):  # the .onnx file last
                f.replace(src.cache_dir / f.name)
            tmp.rmdir()
            self.counts["exports"] += 1
        info = read_graph_info(path)
        return info

    # --- running ------------------------------------------------------------------------------------------------
    def run_graph(self, spec_key: tuple[int, int, int, bool], ref_view: str, inputs: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
        session = None
        for info, s in self._sessions:
            if info.spec.accepts(spec_key, ref_view, self.kind):
                session = (info, s)
                break
        if session is None:
            views, height, width, cams = spec_key
            spec = GraphSpec(views, height, width, cams, ref_view)
            if self._source is None:
                have = "; ".join(info.spec.describe() for info, _ in self._sessions)
                raise ValueError(f"no ONNX graph for a window of {spec.describe()} (graphs: {have}); export one: "
                                 f"`da3 export --onnx --weights <checkpoint> --views {views} --height {height} "
                                 f"--width {width} --ref-view {ref_view}{' --conditioned' if cams else ''}`")
            self._add_session(self._export(spec))
            session = self._sessions[-1]
        info, s = session
        feeds = {name: t.detach().to("cpu", torch.float32).contiguous().numpy()
                 for name, t in zip(INPUT_NAMES, inputs)}
        outs = s.run(list(info.outputs), feeds)
        self.counts["runs"] += 1
        return {name: torch.from_numpy(np.asarray(a)) for name, a in zip(info.outputs, outs)}

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, graphs={len(self._sessions)}, providers={self.providers}"
