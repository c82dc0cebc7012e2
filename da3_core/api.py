"""High-level inference API: :class:`DA3` (load, predict) and :class:`Prediction`.

``DA3.predict`` reproduces the official ``DepthAnything3.inference`` (preprocessing, input-pose normalisation,
network call, Umeyama alignment to given poses) and goes beyond it in three documented ways:

- **Outputs at the input resolution** (default ``output="input"``): depth / conf / sky are resampled from the
  processed image back onto the input pixel grid by inverting the exact resize/crop of :mod:`da3_core.preprocess`
  (bilinear, NaN-aware: invalid samples do not bleed into valid ones; input pixels outside a centre crop are NaN
  depth / NaN conf / non-sky). Sky is resampled as the raw network score (bilinear) and thresholded at 0.5 like the
  official output processor. Intrinsics are reported in input pixels. ``output="processed"`` returns the official
  processing-resolution arrays instead (bit-compatible layout with the official ``Prediction``).
- **Known intrinsics alone are used** (the official network ignores K without poses, issue #229): the reported K is
  the given K, and metric models are scaled with the real focal length (``depth * mean(fx, fy) / 300``, focal in
  processed pixels, ``da3_core.geometry.metric`` convention).
- Extrinsics are always (N, 4, 4) float64 world-to-camera (OpenCV), intrinsics (N, 3, 3) float64.

Precision: on CUDA the network runs under ``torch.autocast`` with bf16 (fp16 where bf16 is not supported), as the
official API; keeping the heads and the camera encoder in fp32 is the network's job (``da3_core.models``).
``precision="fp32"`` disables autocast. The CPU runs fp32 unless ``precision="bf16"`` is asked for (opt-in): then the
backbone runs under CPU bf16 autocast, which needs native bf16 (AVX512-BF16 or AMX, :func:`cpu_supports_bf16`); a
CPU without it is refused with a clear error instead of silently emulating bf16 (slower than fp32).
``bench/forward.py --precision bf16`` prints its speed and its depth error against fp32 and the official fp32.

Backends (``backend=``, :mod:`da3_core.backends`): ``torch`` (the eager module), ``torch_graph`` (the first window
shape captured as a CUDA graph / compiled with torch.compile on the CPU; other shapes run eagerly, counted),
``onnxruntime`` (exported ONNX graphs on ONNX Runtime: CPU, or CUDA / TensorRT with ``onnxruntime-gpu``; fp32;
windows without a graph are exported on demand into ``cache_dir``). :meth:`DA3.warm_up` prepares a window shape
before the first real call; :meth:`DA3.from_onnx` runs exported graphs without torch weights.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from da3_core.backends import BACKENDS, wrap_network
from da3_core.backends.split import is_nested
from da3_core.geometry.rigid import as_4x4
from da3_core.geometry.sim3 import align_input_poses_to_prediction, given_pose_scale
from da3_core.preprocess import PATCH_SIZE, Preprocessed, ViewTransform, preprocess

REF_VIEW_STRATEGIES = ("first", "middle", "saddle_balanced", "saddle_sim_range")


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), so bf16 autocast can be faster than fp32."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def processed_hw(image_hw: tuple[int, int], process_res: int = 504,
                 process_res_method: str = "upper_bound_resize") -> tuple[int, int]:
    """(height, width) of the network input for images of ``image_hw`` (what :meth:`DA3.predict` feeds it)."""
    h, w = image_hw
    return tuple(preprocess([np.zeros((h, w, 3), np.uint8)], process_res=process_res,
                            process_res_method=process_res_method).processed_hw)


def _check_precision(precision: str, device: torch.device) -> None:
    if device.type != "cpu":
        return
    if precision == "fp16":
        raise ValueError("precision='fp16' needs CUDA; on the CPU use 'fp32' or 'bf16' (with native bf16 support)")
    if precision == "bf16" and not cpu_supports_bf16():
        raise ValueError("precision='bf16' on this CPU: it has no native bf16 (AVX512-BF16 or AMX), where bf16 is "
                         "emulated and slower than fp32; use precision='fp32'")
OUTPUT_MODES = ("input", "processed")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METRIC_CANONICAL_FOCAL = 300.0

CHECKPOINT_HELP = (
    "Official checkpoints are folders with model.safetensors + config.json from "
    "https://huggingface.co/depth-anything "
    "(e.g. depth-anything/DA3-SMALL, DA3-BASE, DA3-LARGE-1.1, DA3METRIC-LARGE, DA3NESTED-GIANT-LARGE-1.1); "
    "download one yourself (e.g. `huggingface-cli download depth-anything/DA3-SMALL --local-dir DA3-SMALL`) "
    "and pass its folder. "
    "Nothing is downloaded at run time."
)


# --- Prediction ---------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """Result of :meth:`DA3.predict` for N views of size H x W (input or processed resolution, see ``resolution``).

    Fields:
        depth: (N, H, W) float32 z-depth along the optical axis; NaN where unknown (outside a crop).
        conf: (N, H, W) float32 confidence (>= 1, official ``exp(x) + 1``) or None (mono/metric models).
        sky: (N, H, W) bool sky mask or None (any-view models have no sky head).
        extrinsics: (N, 4, 4) float64 world-to-camera, OpenCV axes (x right, y down, z forward), or None.
        intrinsics: (N, 3, 3) float64 pixel K of the returned grid, or None.
        is_metric: depth (and translations) in metres.
        scale_factor: factor by which the network depth was multiplied to give ``depth`` (nested metric alignment,
            or ``1 / s`` of the Umeyama alignment to input poses), None when not applicable.
        depth_units: "relative", "metric" or "input_extrinsics" (depth in the units of the given poses).
        images: (N, H, W, 3) uint8 RGB on the same grid (for colouring points), or None.
        processed_hw: (h, w) of the network input.
        resolution: "input" or "processed".
    """

    depth: np.ndarray
    conf: np.ndarray | None
    sky: np.ndarray | None
    extrinsics: np.ndarray | None
    intrinsics: np.ndarray | None
    is_metric: bool = False
    scale_factor: float | None = None
    depth_units: str = "relative"
    images: np.ndarray | None = None
    processed_hw: tuple[int, int] = (0, 0)
    resolution: str = "input"
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.depth.shape[0])

    def valid_mask(self, conf_threshold: float | None = None, drop_sky: bool = True) -> np.ndarray:
        """(N, H, W) bool: finite positive depth, ``conf >= conf_threshold`` (if given and conf exists), not sky."""
        mask = np.isfinite(self.depth) & (self.depth > 0)
        if conf_threshold is not None and self.conf is not None:
            with np.errstate(invalid="ignore"):
                mask &= self.conf >= conf_threshold
        if drop_sky and self.sky is not None:
            mask &= ~self.sky
        return mask

    def world_points(self, conf_threshold: float | None = None) -> np.ndarray:
        """(N, H, W, 3) float32 world points; NaN where depth is invalid or ``conf < conf_threshold``.

        Pixel (row v, col u) unprojects at integer pixel coordinates ``(u, v)`` (the official glb export's
        convention): ``X_cam = depth * K^-1 [u, v, 1]^T``, ``X_world = R^T (X_cam - t)`` with ``[R | t]`` = w2c.
        Sky pixels are kept (their depth is finite); use :meth:`point_cloud` to drop them.
        """
        if self.extrinsics is None or self.intrinsics is None:
            raise ValueError("world_points needs extrinsics and intrinsics; this model predicts neither, pass "
                             "intrinsics (and extrinsics) to predict()")
        n, h, w = self.depth.shape
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
        out = np.empty((n, h, w, 3), dtype=np.float32)
        valid = self.valid_mask(conf_threshold, drop_sky=False)
        for i in range(n):
            rays = pix @ np.linalg.inv(self.intrinsics[i]).T  # (H, W, 3), z = 1
            cam = rays * self.depth[i].astype(np.float64)[..., None]
            R, t = self.extrinsics[i, :3, :3], self.extrinsics[i, :3, 3]
            world = (cam - t) @ R  # R^T (X - t) for row vectors
            world[~valid[i]] = np.nan
            out[i] = world
        return out

    def point_cloud(self, conf_percentile: float | None = 40.0, max_points: int | None = None, drop_sky: bool = True,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Flat confidence-filtered cloud for export: ``(points (M, 3) float32, colors (M, 3) uint8)``.

        Keeps pixels with valid depth, not sky, and ``conf >= percentile(conf of valid pixels, conf_percentile)``
        (official glb rule; skipped when ``conf`` is None or ``conf_percentile`` is None); then a uniform random
        subset of ``max_points`` (fixed ``seed``). Colours are black when ``images`` is None.
        """
        valid = self.valid_mask(None, drop_sky=drop_sky)
        if conf_percentile is not None and self.conf is not None and valid.any():
            thr = float(np.percentile(self.conf[valid], conf_percentile))
            valid &= self.conf >= thr
        pts = self.world_points()[valid]
        cols = self.images[valid] if self.images is not None else np.zeros((len(pts), 3), np.uint8)
        if max_points is not None and len(pts) > max_points:
            idx = np.sort(np.random.default_rng(seed).choice(len(pts), size=int(max_points), replace=False))
            pts, cols = pts[idx], cols[idx]
        return np.ascontiguousarray(pts, dtype=np.float32), np.ascontiguousarray(cols, dtype=np.uint8)


# --- helpers ------------------------------------------------------------------------------------------------------


def _network_config(net: nn.Module) -> Any:
    for name in ("config", "cfg"):
        cfg = getattr(net, name, None)
        if cfg is not None:
            return cfg
    return None


def normalize_input_extrinsics(w2c: torch.Tensor) -> torch.Tensor:
    """Official ``_normalize_extrinsics`` on (B, S, 4, 4) w2c (same dtype, float32 in the API).

    ``E_i @ inv(E_0)`` makes view 0 the identity; translations are then divided by the median camera-centre
    distance (``torch.median``: the lower median for an even count), clamped to >= 0.1. Each sample of the batch
    gets its own median (the official code runs one sample at a time).
    """
    R0, t0 = w2c[:, :1, :3, :3], w2c[:, :1, :3, 3:]
    inv0 = torch.cat([torch.cat([R0.mT, -R0.mT @ t0], dim=-1), w2c[:, :1, 3:, :]], dim=-2)
    norm = w2c @ inv0
    R, t = norm[..., :3, :3], norm[..., :3, 3:]
    centres = (-R.mT @ t)[..., 0]
    median = torch.clamp(torch.median(centres.norm(dim=-1), dim=1).values, min=0.1)  # (B,)
    norm[..., :3, 3] = norm[..., :3, 3] / median[:, None, None]
    return norm


def _sample_grid(tf: ViewTransform, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample grid (1, H, W, 2) mapping input pixel centres into the processed map, and an inside mask (H, W)."""
    (H, W), (h, w) = tf.input_hw, tf.processed_hw
    u = tf.scale_x * (np.arange(W, dtype=np.float64) + 0.5) + tf.offset_x  # processed corner coordinates
    v = tf.scale_y * (np.arange(H, dtype=np.float64) + 0.5) + tf.offset_y
    inside = ((v >= 0) & (v <= h))[:, None] & ((u >= 0) & (u <= w))[None, :]
    gx = np.broadcast_to(2.0 * u / w - 1.0, (H, W))
    gy = np.broadcast_to((2.0 * v / h - 1.0)[:, None], (H, W))
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None].astype(np.float32)).to(device)
    return grid, torch.from_numpy(inside).to(device)


def resample_to_input(maps: np.ndarray, transforms: Sequence[ViewTransform]) -> np.ndarray:
    """(N, h, w) float maps at the processed resolution -> (N, H, W) float32 on the input pixel grid.

    Bilinear (``grid_sample``, ``align_corners=False``, border padding for the outer half pixel), NaN-aware: NaN
    inputs get zero weight and the remaining weights are renormalised; a pixel with no valid neighbour, or outside
    the processed footprint (cropped away), is NaN.
    """
    hw = {tf.input_hw for tf in transforms}
    if len(hw) != 1:
        raise ValueError(f"input images have different sizes {sorted(hw)}; outputs at the input resolution need one "
                         "size: resize the images to a common size first or use output='processed'")
    out = []
    for i, tf in enumerate(transforms):
        m = torch.from_numpy(np.ascontiguousarray(maps[i], dtype=np.float32))[None, None]
        finite = torch.isfinite(m)
        vals = torch.where(finite, m, torch.zeros_like(m))
        grid, inside = _sample_grid(tf, m.device)
        num = F.grid_sample(vals, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        den = F.grid_sample(finite.to(torch.float32), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[0, 0]
        ok = inside & (den > 1e-6)
        res = torch.where(ok, num / den.clamp_min(1e-6), torch.full_like(num, float("nan")))
        if bool(finite.all()):  # no NaN in the source: plain bilinear (den == 1 up to rounding)
            res = torch.where(inside, num, torch.full_like(num, float("nan")))
        out.append(res.numpy())
    return np.stack(out).astype(np.float32)


def _to_numpy(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).numpy()
    return np.asarray(t)


def _as_float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().reshape(-1)[0]) if v.numel() else None
    try:
        return float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None


def _squeeze_map(a: np.ndarray | None) -> np.ndarray | None:
    """(1, S, H, W[, 1]) -> (S, H, W)."""
    if a is None:
        return None
    a = a[0]
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available in this torch build/machine; use "
                         "device='cpu'")
    return dev


# --- DA3 ----------------------------------------------------------------------------------------------------------


class DA3:
    """Depth Anything 3 inference wrapper around a network from :func:`da3_core.registry.build_network`.

    Constructors: ``DA3("da3-small")`` (random weights), ``DA3.from_network(net)`` (any module following the network
    contract of ``docs/architecture.md``), ``DA3.from_pretrained(path)`` (official or our checkpoints, strict).
    """

    def __init__(self, variant: str | None = None, *, network: nn.Module | None = None,
                 device: str | torch.device | None = None, precision: str = "auto", is_metric: bool | None = None,
                 backend: str = "torch", onnx: Sequence[str | Path] = (), cache_dir: str | Path | None = None,
                 providers: Sequence[str] | None = None):
        """``precision``: auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16 (CUDA, or a CPU with native bf16), fp16
        (CUDA only). ``backend``: torch, torch_graph or onnxruntime (module docstring); for onnxruntime ``onnx`` are
        exported graphs (files or folders), ``cache_dir`` where missing ones are exported, ``providers`` the
        ONNX Runtime providers to use (tensorrt, cuda, cpu; default from ``device``)."""
        if network is None:
            if variant is None:
                raise ValueError("DA3: pass a variant name (see da3_core.list_variants()) or network=...")
            from da3_core.registry import build_network, canonical_variant

            variant = canonical_variant(variant)
            network = build_network(variant)
        if not isinstance(network, nn.Module):
            raise TypeError(f"DA3: network must be a torch.nn.Module, got {type(network).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
        self.variant = variant
        self.device = _resolve_device(device)
        _check_precision(precision, self.device)
        if backend == "onnxruntime" and precision not in ("auto", "fp32"):
            raise ValueError(f"precision={precision!r} with backend onnxruntime: exported graphs run in fp32; use "
                             "precision='fp32' (or 'auto'), or backend 'torch' for bf16")
        self.precision = precision
        self.backend = backend
        if backend == "onnxruntime" and not hasattr(network, "run_graph"):
            network = wrap_network(network.eval(), backend, self.device, variant or "", onnx, cache_dir, providers)
        if backend == "onnxruntime":
            self.device = torch.device("cpu")  # host tensors; ONNX Runtime's providers run on the chosen device
        self.network = network.to(self.device).eval()
        if backend == "torch_graph":
            self.network = wrap_network(self.network, backend, self.device)
        cfg = _network_config(network)
        if is_metric is None:
            is_metric = bool(getattr(cfg, "is_metric", False))
        self.is_metric_model = bool(is_metric)  # focal-normalised metric depth (DA3METRIC-LARGE)
        anyview = getattr(cfg, "anyview", cfg)  # NestedConfig -> its any-view network
        self.supports_pose_conditioning = cfg is None or getattr(anyview, "cam_enc", None) is not None

    # -- constructors --
    @classmethod
    def from_network(cls, network: nn.Module, variant: str | None = None, device: str | torch.device | None = None,
                     precision: str = "auto", is_metric: bool | None = None, **backend: Any) -> DA3:
        """Wrap an existing network (e.g. ``apply_recipe(build_network("da3-small"))``); ``backend`` keywords as
        in the constructor."""
        return cls(variant, network=network, device=device, precision=precision, is_metric=is_metric, **backend)

    @classmethod
    def from_onnx(cls, path: str | Path | Sequence[str | Path], device: str | torch.device = "cpu",
                  providers: Sequence[str] | None = None) -> DA3:
        """Run exported graphs (``da3 export --onnx``; a file, a folder of them, or a list) on ONNX Runtime, without
        torch weights. Windows must match one of the graphs (views, processed height and width, camera inputs)."""
        from da3_core.backends.onnx_runtime import OnnxRuntimeNetwork

        paths = [path] if isinstance(path, (str, Path)) else list(path)
        net = OnnxRuntimeNetwork(paths, device=device, providers=providers)
        return cls(net.variant or None, network=net, device="cpu", backend="onnxruntime")

    @classmethod
    def from_pretrained(cls, path: str | Path, variant: str | None = None, device: str | torch.device | None = None,
                        precision: str = "auto", **backend: Any) -> DA3:
        """Load an official ``model.safetensors`` (+ ``config.json``) file or folder, or one of our checkpoints.

        Strict: every key must match (``WeightsMismatchError`` lists missing / unexpected / mis-shaped keys).
        ``variant`` is needed when the checkpoint does not name its model (a bare file without ``config.json``).
        ``backend`` keywords (backend, onnx, cache_dir, providers) as in the constructor.
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist. {CHECKPOINT_HELP}")
        from da3_core.registry import build_network, canonical_variant, list_variants
        from da3_core.weights import loading

        weights_file, detected = loading.resolve_checkpoint(path)
        if variant is None and detected is None:
            raise ValueError(f"cannot tell which model {str(path)!r} holds (no config.json with model_name); pass "
                             f"variant=... (one of {', '.join(list_variants())})")
        name = canonical_variant(variant if variant is not None else detected)
        if variant is not None and detected is not None and canonical_variant(detected) != name:
            raise ValueError(f"variant={variant!r} but the checkpoint's config.json names {detected!r}; drop the "
                             "variant argument or pass the matching one")
        network = build_network(name)
        state = loading.load_state_dict_file(weights_file)
        loading.load_weights_strict(network, state)
        return cls(name, network=network, device=device, precision=precision, **backend)

    # -- network call --
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cpu" and self.precision == "bf16":
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        if self.precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def run_network(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None,
                    intrinsics: torch.Tensor | None = None, ref_view: str = "saddle_balanced",
                    use_ray_pose: bool = False, seed: int | None = 0) -> dict[str, Any]:
        """Raw network call on preprocessed input (official names out, see ``docs/architecture.md``).

        Args:
            x: (B, S, 3, H, W) float32 ImageNet-normalised, H and W multiples of 14.
            extrinsics: (B, S, 4, 4) normalised w2c or None; intrinsics: (B, S, 3, 3) processed pixels or None.
            seed: torch RNG seed used inside a forked RNG (ray-pose RANSAC, sky quantile sampling); None = global RNG.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[2] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a (B, S, 3, H, W) float tensor, got {shape}; build it with "
                             "da3_core.preprocess.preprocess")
        if x.shape[-1] % PATCH_SIZE or x.shape[-2] % PATCH_SIZE:
            raise ValueError(f"x: height and width must be multiples of {PATCH_SIZE}, got {tuple(x.shape[-2:])}; use "
                             "da3_core.preprocess.preprocess (or DA3.predict), which resizes images for you")
        if ref_view not in REF_VIEW_STRATEGIES:
            raise ValueError(f"ref_view={ref_view!r}: choose one of {', '.join(REF_VIEW_STRATEGIES)}")
        x = x.to(self.device, torch.float32)
        ex = extrinsics.to(self.device, torch.float32) if extrinsics is not None else None
        K = intrinsics.to(self.device, torch.float32) if intrinsics is not None else None
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []) \
            if seed is not None else contextlib.nullcontext()
        with rng, torch.inference_mode(), self._autocast():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.network(x, extrinsics=ex, intrinsics=K, ref_view_strategy=ref_view, use_ray_pose=use_ray_pose)
        return dict(out)

    def warm_up(self, views: int, height: int, width: int, conditioned: bool = False,
                ref_view: str = "first") -> float:
        """Run one window of ``views`` x ``height`` x ``width`` processed pixels (multiples of 14) through the network
        so that the first real window does not pay for set-up: graph capture or compilation (torch_graph), ONNX export
        and session / TensorRT engine build (onnxruntime), CUDA kernel selection (torch). Returns seconds taken."""
        t0 = time.perf_counter()
        x = torch.zeros(1, views, 3, height, width)
        ex = K = None
        if conditioned:
            ex = torch.eye(4).repeat(1, views, 1, 1)
            ex[..., 0, 3] = torch.linspace(0.0, 1.0, views)
            K = torch.tensor([[float(width), 0.0, width / 2], [0.0, float(width), height / 2], [0.0, 0.0, 1.0]])
            K = K.repeat(1, views, 1, 1)
        self.run_network(x, ex, K, ref_view=ref_view)
        return time.perf_counter() - t0

    # -- predict --
    def predict(
        self,
        images: Sequence[Any] | np.ndarray,
        intrinsics: np.ndarray | None = None,
        extrinsics: np.ndarray | None = None,
        process_res: int = 504,
        ref_view: str = "saddle_balanced",
        use_ray_pose: bool = False,
        *,
        process_res_method: str = "upper_bound_resize",
        align_to_input_ext_scale: bool = True,
        output: str = "input",
        seed: int | None = 0,
    ) -> Prediction:
        """Depth, confidence, sky and cameras for N views.

        Args:
            images: list of (H, W, 3) uint8 RGB arrays / PIL images / paths (or one (N, H, W, 3) uint8 array).
            intrinsics: (N, 3, 3) (or one (3, 3)) pixel K of the input images, optional.
            extrinsics: (N, 4, 4) / (N, 3, 4) OpenCV world-to-camera, optional; needs ``intrinsics`` (the network
                conditions on both). Predicted poses are Umeyama-aligned to them (RANSAC for N >= 10), and with
                ``align_to_input_ext_scale`` the given poses are returned and depth is in their units; otherwise the
                given poses moved into the prediction frame are returned and depth stays in network units.
            process_res / process_res_method: see :mod:`da3_core.preprocess`.
            ref_view: reference-view strategy (first, middle, saddle_balanced, saddle_sim_range).
            use_ray_pose: poses from the ray head (slower, more accurate) instead of the camera head.
            output: "input" (input resolution, default) or "processed" (official processing-resolution outputs).
            seed: torch seed for the network's random parts (forked RNG); None = use the global RNG.
        Returns:
            :class:`Prediction`.
        """
        if output not in OUTPUT_MODES:
            raise ValueError(f"output={output!r}: choose 'input' (input resolution) or 'processed'")
        if ref_view not in REF_VIEW_STRATEGIES:
            raise ValueError(f"ref_view={ref_view!r}: choose one of {', '.join(REF_VIEW_STRATEGIES)}")
        if extrinsics is not None and intrinsics is None:
            raise ValueError("extrinsics given without intrinsics: the network conditions on poses only together with "
                             "intrinsics; pass intrinsics=(N, 3, 3) pixel K as well")
        pre = preprocess(images, intrinsics, extrinsics, process_res, process_res_method)
        if output == "input":
            sizes = sorted(set(pre.input_hw))
            if len(sizes) > 1:
                raise ValueError(f"input images have different sizes {sizes}; outputs at the input resolution need one "
                                 "size: resize them to a common size first or use output='processed'")
        conditioned = pre.extrinsics is not None and self.supports_pose_conditioning
        ex_norm = normalize_input_extrinsics(pre.extrinsics[None]) if conditioned else None
        K_in = pre.intrinsics[None] if conditioned else None
        if K_in is None and pre.intrinsics is not None and is_nested(self.network):
            K_in = pre.intrinsics[None]  # known focal for the nested metric scale (beyond the official)
        raw = self.run_network(pre.x, ex_norm, K_in, ref_view=ref_view, use_ray_pose=use_ray_pose, seed=seed)
        return self._postprocess(raw, pre, intrinsics, align_to_input_ext_scale, output)

    def _postprocess(self, raw: dict[str, Any], pre: Preprocessed, intrinsics_in: np.ndarray | None,
                     align_scale: bool, output: str) -> Prediction:
        depth = _squeeze_map(_to_numpy(raw["depth"])).astype(np.float32)
        conf = _squeeze_map(_to_numpy(raw.get("depth_conf")))
        sky_raw = _squeeze_map(_to_numpy(raw.get("sky")))
        ext = _to_numpy(raw.get("extrinsics"))
        K_pred = _to_numpy(raw.get("intrinsics"))
        ext = as_4x4(ext[0]) if ext is not None else None
        K_pred = np.asarray(K_pred[0], dtype=np.float64) if K_pred is not None else None

        is_metric = bool(_as_float(raw.get("is_metric")) or 0.0)
        scale_factor = _as_float(raw.get("scale_factor"))
        units = "metric" if is_metric else "relative"
        K_known = pre.intrinsics.numpy().astype(np.float64) if pre.intrinsics is not None else None

        # metric model: focal-normalised depth -> metres with the real (given) focal, in processed pixels
        if self.is_metric_model and not is_metric and K_known is not None:
            focal = (K_known[:, 0, 0] + K_known[:, 1, 1]) / 2.0
            depth = (depth * (focal / METRIC_CANONICAL_FOCAL).astype(np.float32)[:, None, None]).astype(np.float32)
            is_metric, units = True, "metric"

        K_proc = K_known if K_known is not None else K_pred
        if pre.input_extrinsics is not None:
            input_w2c = pre.input_extrinsics
            n = len(input_w2c)
            if ext is not None and n >= 3:  # official: Umeyama (RANSAC for N >= 10) of input onto predicted centres
                s, _, _, aligned = align_input_poses_to_prediction(ext, input_w2c)
                if align_scale:
                    ext = input_w2c
                    depth = (depth / np.float32(s)).astype(np.float32)
                    scale_factor = 1.0 / s
                    units, is_metric = "input_extrinsics", False
                else:
                    ext = aligned
            elif ext is not None and n == 2:  # beyond the official (evo fails on 2 views): baseline ratio
                s = given_pose_scale(ext, input_w2c)
                if align_scale and s is not None:
                    ext = input_w2c
                    depth = (depth / np.float32(s)).astype(np.float32)
                    scale_factor = 1.0 / s
                    units, is_metric = "input_extrinsics", False
            else:  # no pose prediction (mono/metric model) or a single view: report the given poses
                ext = input_w2c

        if output == "processed":
            sky = sky_raw >= 0.5 if sky_raw is not None else None
            return Prediction(depth=depth, conf=conf, sky=sky, extrinsics=ext, intrinsics=K_proc, is_metric=is_metric,
                              scale_factor=scale_factor, depth_units=units, images=pre.processed_images,
                              processed_hw=pre.processed_hw, resolution="processed")

        tfs = pre.transforms
        depth_i = resample_to_input(depth, tfs)
        conf_i = resample_to_input(conf, tfs) if conf is not None else None
        sky_i = None
        if sky_raw is not None:
            with np.errstate(invalid="ignore"):
                sky_i = resample_to_input(sky_raw, tfs) >= 0.5
        if intrinsics_in is not None:  # report the given K exactly
            K_out = np.array(np.broadcast_to(np.asarray(intrinsics_in, dtype=np.float64), (len(tfs), 3, 3)))
        elif K_pred is not None:
            K_out = np.stack([tf.intrinsics_to_input(k) for tf, k in zip(tfs, K_pred)])
        else:
            K_out = None
        return Prediction(depth=depth_i, conf=conf_i, sky=sky_i, extrinsics=ext, intrinsics=K_out, is_metric=is_metric,
                          scale_factor=scale_factor, depth_units=units, images=np.stack(pre.images),
                          processed_hw=pre.processed_hw, resolution="input")

    def __repr__(self) -> str:
        backend = "" if self.backend == "torch" else f", backend={self.backend!r}"
        return f"DA3(variant={self.variant!r}, device={str(self.device)!r}, precision={self.precision!r}{backend})"
