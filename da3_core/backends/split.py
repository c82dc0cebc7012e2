"""A DA3 network split into a fixed-shape graph and a small host tail, the unit every fast backend runs.

The graph (:class:`GraphNetwork`) is everything whose control flow and shapes are fixed by the window shape (views,
height, width), whether camera inputs are given, and the reference-view strategy: backbone, heads, camera decoder
and, for ``saddle_*`` strategies, the content-based reference choice (argmin + gather, inside the graph). What
depends on the data's values or on the torch RNG stays on the host (:func:`finish`), run by the same torch
functions as the eager network, in the same order, so a backend's outputs equal the eager ones:

- ``use_ray_pose``: cameras from the ray map (:func:`~da3_core.geometry.ray_solver.rays_to_cameras`, RANSAC);
- mono / metric models: the sky clamp (:func:`~da3_core.models.sky.clamp_mono_sky`: data-dependent branch and
  randomly sampled quantiles);
- nested models: the metric alignment (:func:`~da3_core.models.nested.align_to_metric`).

:class:`SplitNetwork` gives a graph runner the network contract of ``docs/architecture.md`` (``forward(x,
extrinsics, intrinsics, ref_view_strategy, use_ray_pose) -> dict``), so :class:`da3_core.api.DA3` uses it like
the eager module. Backends: ONNX Runtime (:mod:`da3_core.backends.onnx_runtime`), graph capture
(:mod:`da3_core.backends.compiled`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from da3_core.config import NestedConfig, NetworkConfig
from da3_core.geometry.ray_solver import rays_to_cameras
from da3_core.models.nested import NestedDA3Network, align_to_metric
from da3_core.models.reference_view import MIN_VIEWS_FOR_SELECTION, REF_VIEW_STRATEGIES
from da3_core.models.sky import clamp_mono_sky

__all__ = ["GraphSpec", "GraphNetwork", "SplitNetwork", "finish", "network_kind", "graph_outputs"]

KINDS = ("anyview", "mono", "nested")
_ANYVIEW_OUT = ("depth", "depth_conf", "ray", "ray_conf", "extrinsics", "intrinsics")


def network_kind(cfg: Any) -> str:
    """'anyview' (DualDPT + cameras), 'mono' (DPT + sky: mono / metric) or 'nested' of a network config."""
    if isinstance(cfg, NestedConfig):
        return "nested"
    if isinstance(cfg, NetworkConfig):
        return "anyview" if cfg.head.kind == "dualdpt" else "mono"
    raise TypeError(f"not a DA3 network config: {type(cfg).__name__}")


def graph_outputs(kind: str) -> tuple[str, ...]:
    """Names of a graph's outputs, in order (depth of mono models and ``metric_depth`` before the sky clamp)."""
    if kind == "anyview":
        return _ANYVIEW_OUT
    if kind == "mono":
        return ("depth", "sky")
    if kind == "nested":
        return (*_ANYVIEW_OUT, "metric_depth", "metric_sky")
    raise ValueError(f"unknown network kind {kind!r}; one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class GraphSpec:
    """The fixed window a graph takes: ``views`` x 3 x ``height`` x ``width`` (batch 1, multiples of 14 pixels),
    with camera inputs or not (``conditioned``: extrinsics (1, S, 4, 4) w2c normalised as the API does, intrinsics
    (1, S, 3, 3) processed pixels), and the reference-view strategy baked into it."""

    views: int
    height: int
    width: int
    conditioned: bool = False
    ref_view: str = "saddle_balanced"

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if self.height % 14 or self.width % 14 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"height and width must be positive multiples of 14 (the patch size), got "
                             f"{self.height}x{self.width}; use the processed size (e.g. 280x504 for process_res 504 "
                             "and a 16:9 camera)")
        if self.ref_view not in REF_VIEW_STRATEGIES:
            raise ValueError(f"ref_view {self.ref_view!r}: one of {', '.join(REF_VIEW_STRATEGIES)}")

    @property
    def key(self) -> tuple[int, int, int, bool]:
        """What a call must match: (views, height, width, conditioned)."""
        return (self.views, self.height, self.width, self.conditioned)

    def selects_reference(self, kind: str) -> bool:
        """Whether the reference-view strategy changes this graph's outputs (any-view, >= 3 views, no cameras)."""
        return kind != "mono" and not self.conditioned and self.views >= MIN_VIEWS_FOR_SELECTION

    def accepts(self, key: tuple[int, int, int, bool], ref_view: str, kind: str) -> bool:
        """Whether a call with this (views, height, width, conditioned) and reference strategy runs on the graph."""
        return key == self.key and (ref_view == self.ref_view or not self.selects_reference(kind))

    def describe(self) -> str:
        cams = ", camera inputs" if self.conditioned else ""
        return f"{self.views} views of {self.height}x{self.width}{cams}, ref_view {self.ref_view}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GraphNetwork(nn.Module):
    """The fixed-shape part of ``network`` (a :class:`~da3_core.models.da3.DA3Network` or
    :class:`~da3_core.models.nested.NestedDA3Network`): ``forward(images[, extrinsics, intrinsics])`` returns the
    tuple named by :func:`graph_outputs` (float32)."""

    def __init__(self, network: nn.Module, spec: GraphSpec) -> None:
        super().__init__()
        self.network = network
        self.spec = spec
        self.kind = network_kind(network.cfg)
        if spec.conditioned and self.kind == "mono":
            raise ValueError("a mono / metric model takes no camera inputs: export it with conditioned=False")
        self.output_names = graph_outputs(self.kind)

    def forward(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        ref = self.spec.ref_view
        if self.kind == "mono":
            out = self.network(images, sky_fill=False)
        elif self.kind == "anyview":
            out = self.network(images, extrinsics, intrinsics, ref)
        else:
            out = dict(self.network.da3(images, extrinsics, intrinsics, ref))
            metric = self.network.da3_metric(images, sky_fill=False)
            out.update(metric_depth=metric["depth"], metric_sky=metric["sky"])
        return tuple(out[name].float() for name in self.output_names)


def finish(raw: dict[str, torch.Tensor], kind: str, image_hw: tuple[int, int], use_ray_pose: bool = False,
           focal_k: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The host tail: graph outputs -> the eager network's output dict (see the module docstring)."""
    out = dict(raw)
    if kind in ("anyview", "nested") and use_ray_pose:
        out["extrinsics"], out["intrinsics"] = rays_to_cameras(out["ray"], out["ray_conf"], image_hw)
    if kind == "mono":
        out["depth"] = clamp_mono_sky(out["depth"], out["sky"])
    elif kind == "nested":
        depth, sky = out.pop("metric_depth"), out.pop("metric_sky")
        out = align_to_metric(out, {"depth": clamp_mono_sky(depth, sky), "sky": sky}, focal_k)
    return out


class SplitNetwork(nn.Module):
    """Network contract on top of fixed-shape graph runs; subclasses implement :meth:`run_graph`.

    ``cfg`` is the network's config (variant), so :class:`da3_core.api.DA3` treats the backend like the eager
    module (metric model, pose conditioning, nested known focal).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = network_kind(cfg)
        self.patch_size = 14

    def run_graph(self, spec_key: tuple[int, int, int, bool], ref_view: str, inputs: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor] | None:
        """Graph outputs by name for this call, or None to run it another way (subclass decides)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                use_ray_pose: bool = False) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[0] != 1 or x.shape[2] != 3:
            raise ValueError(f"graph backends take one window (1, S, 3, H, W), got {tuple(x.shape)}")
        if use_ray_pose and self.kind == "mono":
            raise ValueError("use_ray_pose needs an any-view model (it has no ray head)")
        conditioned = extrinsics is not None and self.kind != "mono"
        focal_k = intrinsics if (self.kind == "nested" and extrinsics is None) else None
        inputs = [x.float()]
        if conditioned:
            if intrinsics is None:
                raise ValueError("camera conditioning needs both extrinsics and intrinsics")
            if not (torch.isfinite(extrinsics).all() and torch.isfinite(intrinsics).all()):
                raise ValueError("extrinsics/intrinsics contain NaN or inf; pass finite cameras or none")
            ex = extrinsics.float()
            if ex.shape[-2] == 3:  # (…, 3, 4) -> (…, 4, 4)
                bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=ex.device).expand(*ex.shape[:-2], 1, 4)
                ex = torch.cat((ex, bottom), dim=-2)
            inputs += [ex, intrinsics.float()]
        key = (int(x.shape[1]), int(x.shape[3]), int(x.shape[4]), conditioned)
        raw = self.run_graph(key, ref_view_strategy, inputs)
        if raw is None:
            return self.run_eager(x, extrinsics, intrinsics, ref_view_strategy, use_ray_pose)
        return finish(raw, self.kind, (int(x.shape[3]), int(x.shape[4])), use_ray_pose, focal_k)

    def run_eager(self, x: torch.Tensor, extrinsics: torch.Tensor | None, intrinsics: torch.Tensor | None,
                  ref_view_strategy: str, use_ray_pose: bool) -> dict[str, torch.Tensor]:
        """The call without a graph (subclasses with an eager network override this)."""
        raise ValueError(f"no graph for a window of {x.shape[1]} views of {x.shape[3]}x{x.shape[4]}")


def is_nested(network: nn.Module) -> bool:
    """Whether ``network`` (eager or a backend) is a nested model (it uses a known focal for its metric scale)."""
    return isinstance(network, NestedDA3Network) or isinstance(getattr(network, "cfg", None), NestedConfig)
