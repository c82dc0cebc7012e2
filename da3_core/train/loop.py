"""The DA3 student training loop (paper §3.3-3.4), read once top to bottom (nanoGPT style).

- :class:`TrainConfig` holds every knob; ``training/configs/*.yaml`` and ``--key=value`` override it
  (:func:`load_config`). The resolved dict is logged and stored in every checkpoint.
- :class:`Trainer` builds the network (``registry.build_network(variant)``; optional DINOv2 init through timm), AdamW
  (no weight decay on norms / biases / tokens / LayerScale), the LR schedule (:func:`lr_at`: linear warm-up to the
  peak, then cosine or linear decay to ``min_lr``), the synthetic dataset with the token-budget batch sampler, and
  the optional monocular teacher.
- One step (:meth:`Trainer.train_step`): with probability ``pose_cond_prob`` (paper: 0.2) the ground-truth cameras
  are given to the network (normalised like the API does); the forward runs under bf16 autocast on CUDA (fp32 on
  CPU); targets are built *after* the forward in the frame of the view the network chose as reference
  (``ref_index``) -- the frame its camera outputs live in -- and normalised by the mean point norm; from
  ``teacher_switch_step`` on, the depth targets are the teacher's relative depth aligned to the ground truth with
  RANSAC scale/shift (paper §4.2, Eq. 8). With ``match_weight`` > 0 the matching loss (not in the paper,
  :mod:`da3_core.train.matching`) supervises the attention of chosen global blocks with ground-truth patch
  correspondences. Gradients are clipped; a step with a non-finite loss or gradient norm is skipped
  (``nonfinite_skips``), and ``max_nonfinite`` consecutive ones abort the run.
- The step is host-light: everything after the copy of the batch runs on the model's device; the skip decision stays
  there too (fused AdamW's ``found_inf``, the mechanism of torch's GradScaler), and the step record holds device
  tensors that the host reads only every ``log_interval`` steps (where the abort check happens) and at checkpoints,
  so a CUDA step has no host<->device synchronisation (``bench/train.py`` counts them).
- Every random choice of a step is a pure function of ``(seed, step)`` and every data item a pure function of its
  key, so a resumed run continues exactly the same curve (``test/core/test_train_resume.py``).
- Only the master (rank 0) shows tqdm, logs (JSONL, and TensorBoard when installed), evaluates on held-out synthetic
  scenes (:mod:`da3_core.eval.synthetic_benchmark`) and writes checkpoints (:mod:`da3_core.train.checkpoint`).
"""

from __future__ import annotations

import ast
import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from da3_core.api import normalize_input_extrinsics
from da3_core.geometry.transforms import invert_extrinsics, to_homogeneous
from da3_core.models.reference_view import WINDOW_REF_VIEW
from da3_core.preprocess import PATCH_SIZE
from da3_core.registry import build_network
from da3_core.train.batching import TokenBudgetBatcher, TokenBudgetBatchSampler
from da3_core.train.checkpoint import (
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    model_state_dict,
    optimizer_state_dict,
    save_checkpoint,
)
from da3_core.train.correspondence import (
    DEFAULT_OCCLUSION_TOL,
    matches_into_view,
    patch_centres,
    patch_matches,
    project_patch_centres,
    project_patch_directions,
)
from da3_core.train.data import SyntheticSceneDataset
from da3_core.train.displacement import DisplacementReadout, WithDisplacementReadout, displacement_targets
from da3_core.train.distributed import DistInfo, all_reduce_mean, setup_distributed, wrap_model
from da3_core.train.init import init_weights
from da3_core.train.losses import StudentLossConfig, student_loss
from da3_core.train.matching import MATCH_SOFTMAX
from da3_core.train.targets import build_targets

MATCH_INTO = ("all_views", "reference")  # where the matching targets lie (forward_loss)

__all__ = ["TrainConfig", "load_config", "lr_at", "forward_loss", "Trainer", "NonFiniteError"]


# --- config ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """All training settings. The defaults are ``training/configs/tiny_default.yaml`` (the embedded default)."""

    # run
    out_dir: str = "outputs/train/tiny_default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 2  # torch intra-op threads on CPU (0 = torch's default)
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    fsdp: bool = False  # shard with FSDP2 instead of DDP (big models, CUDA); see da3_core.train.distributed
    # model
    variant: str = "da3-tiny"
    timm_init: str = ""  # e.g. "vit_small_patch14_dinov2.lvd142m": initialise the ViT from timm's DINOv2 weights
    init_from: str = ""  # fine-tune: start from these weights (folder / .safetensors / training .pt), fresh optimiser
    ref_view_strategy: str = WINDOW_REF_VIEW  # reference view of every step and in-run eval (the node's)
    pos_embed_init: str = "sincos"  # sincos | normal: from-scratch position embedding (da3_core.train.init)
    # data: synthetic scenes, token-budget batches (paper §3.4, scaled down)
    scene_kinds: tuple[str, ...] = ("room", "objects", "courtyard")
    num_scenes: int = 1_000_000  # dataset length; scenes are generated from (data_seed, index)
    data_seed: int = 0
    resolutions: tuple[tuple[int, int], ...] = ((84, 112), (84, 84), (70, 112), (98, 126), (70, 98), (112, 112),
                                                (112, 168), (126, 168), (126, 126))
    views: tuple[int, int] = (2, 8)
    camera_path: str = "auto"  # synthetic trajectory kind: auto (orbit|walk) | orbit | walk | pan | mixed (+ pan)
    path_frames: int = 12  # N: views = S consecutive frames of an N-frame camera path; 0: spread over the whole path
    path_frames_max: int = 0  # > path_frames: N drawn per scene from [path_frames, path_frames_max] (0: fixed N)
    token_budget: int = 1000
    budget_tol: float = 0.4
    max_batch: int = 8
    steps_per_epoch: int = 1000
    num_workers: int = 1
    antialias: int = 1
    # data echoing (Choi et al. 2019, "Faster neural network training with data echoing"): each loaded batch serves
    # data_echo optimiser steps; every repeat is a new random crop (other patch alignment, cropped intrinsics) with the
    # views in a new order, made on the device. For a GPU whose CPU-side renderer cannot keep up; 1 = off.
    data_echo: int = 1
    windows_per_scene: int = 1  # > 1: batches hold runs of this many windows of one scene, rendered once (GPU)
    # optimisation
    max_steps: int = 3500
    max_minutes: float = 0.0  # > 0: also stop after this much wall time, the LR decay following elapsed time
    lr: float = 5e-4  # peak (paper: 2e-4 at its batch size)
    min_lr: float = 4e-5  # floor
    warmup_steps: int = 300
    decay: str = "cosine"  # cosine | linear
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    pose_cond_prob: float = 0.5  # paper §3.2: known cameras on 20% of the steps; here half (the conditioned scale)
    max_nonfinite: int = 20  # abort after this many consecutive non-finite steps
    # loss (paper §3.3)
    alpha_grad: float = 1.0
    beta_camera: float = 1.0
    dense_weight: float = 1.0  # L_D, L_M and L_P together (0: a camera + matching stage, the dense heads idle)
    camera_rot_weight: float = 3.0  # weight of the quaternion part inside L_C (a few degrees are ~0.05 of it; 1 =
    # the paper's plain sum)
    camera_t_relative: bool = False  # L_C's translation errors over each sample's camera spread (losses.camera_loss)
    view_scale_weight: float = 0.0  # L_vscale: each view's depth scale against the window's (losses.view_scale_loss)
    # matching supervision (not in the paper; da3_core.train.matching): cross-view attention taught by GT matches
    match_weight: float = 1.0  # 0 = off
    match_layers: tuple[int, ...] = ()  # global blocks whose attention is supervised; () = the first global block
    match_heads: int = 1  # supervised heads per block (the first ones)
    match_occlusion_tol: float = 0.05  # relative depth difference that counts as occluded
    match_softmax: str = "all"  # "all": one softmax over every view's patches (as attention); "view": per other view
    match_into: str = "all_views"  # targets in every other view, or only in the reference view ("reference")
    # displacement supervision (not in the paper; da3_core.train.displacement): a training-only linear read-out of
    # the match_layers' patch tokens must give each patch's image motion into the reference view (0 = off)
    disp_weight: float = 1.0
    # the read-out also gives each patch's parallax (its motion minus the rotation's), the part that carries the
    # translation and the baseline-to-depth ratio (da3_core.train.displacement.displacement_targets)
    disp_parallax: bool = False
    # teacher pseudo-labels (paper §4.2)
    teacher_ckpt: str = ""  # state dict of a da3_core.train.teacher.TeacherNetwork ('' = ground truth throughout)
    teacher_config: str = "tiny"  # tiny (tiny_teacher_config) | full (teacher_config)
    teacher_switch_step: int = 0
    # logging / eval / checkpoints
    log_interval: int = 10
    eval_interval: int = 500
    eval_samples: int = 48
    eval_seed: int = 10_000
    eval_path_frames: int = 12  # held-out protocol (synthetic_benchmark.PROTOCOLS: 12 = "window", 0 = "spread")
    ckpt_interval: int = 250
    keep_last: int = 3
    progress: bool = True

    def resolved(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, like: Any) -> Any:
    """Convert a YAML / command-line value to the type of the field default ``like`` (tuples stay tuples)."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(like, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if isinstance(like, tuple):
        return tuple(_coerce(v, like[0]) if like and isinstance(like[0], tuple) else v for v in value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, int):
        return int(value)
    return value


def load_config(path: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> TrainConfig:
    """Defaults <- YAML file <- overrides (``["--lr=1e-4", "max_steps=10"]`` or a dict). Unknown keys raise."""
    import yaml

    values: dict[str, Any] = {}
    if path:
        values.update(yaml.safe_load(Path(path).read_text()) or {})
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for arg in overrides:
            key, sep, val = arg.lstrip("-").partition("=")
            if not sep:
                raise ValueError(f"override {arg!r} must look like --key=value")
            values[key.replace("-", "_")] = val
    defaults = TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(known)}")
    cfg = TrainConfig(**{k: _coerce(v, getattr(defaults, k)) for k, v in values.items()})
    if cfg.match_softmax not in MATCH_SOFTMAX:
        raise ValueError(f"match_softmax must be one of {MATCH_SOFTMAX}, got {cfg.match_softmax!r}")
    if cfg.match_into not in MATCH_INTO:
        raise ValueError(f"match_into must be one of {MATCH_INTO}, got {cfg.match_into!r}")
    if cfg.data_echo < 1:
        raise ValueError(f"data_echo must be >= 1 (1 = every step a new batch), got {cfg.data_echo}")
    if cfg.ckpt_interval % cfg.data_echo:
        raise ValueError(f"ckpt_interval ({cfg.ckpt_interval}) must be a multiple of data_echo ({cfg.data_echo}): a "
                         "checkpoint in the middle of a batch's repeats could not resume exactly")
    return cfg


def lr_at(step: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up to ``lr``, then cosine / linear decay to ``min_lr``.

    The decay follows the steps towards ``max_steps``, or -- when ``time_fraction`` (elapsed / ``max_minutes``) is
    given and further along -- the wall-time budget, so a time-boxed run ends at ``min_lr`` however fast it ran.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    if time_fraction is not None:
        t = min(1.0, max(t, time_fraction))
    coeff = 0.5 * (1.0 + math.cos(math.pi * t)) if cfg.decay == "cosine" else 1.0 - t
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


BATCH_KEYS = ("images", "depth", "w2c", "K")
"""What a training step copies to the device (items also carry masks and indices that no loss reads)."""


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
    """The random generator of one step (same on every rank and after a resume)."""
    return np.random.default_rng([seed, step, stream])


# --- one forward + loss ---------------------------------------------------------------------------------------------


def load_init_weights(net: nn.Module, source: str | Path, variant: str) -> None:
    """Load all weights of ``net`` from a checkpoint folder (model.safetensors + config.json), a ``.safetensors``
    file or a training checkpoint (``.pt``); strict, and a checkpoint that names its variant must name ``variant``."""
    from da3_core.weights.loading import load_weights_strict, read_weights

    if not Path(source).exists():
        raise FileNotFoundError(f"init_from: {source} does not exist; give a weights folder, .safetensors or .pt file")
    state, found = read_weights(source)
    if found is not None and found != variant:
        raise ValueError(f"init_from: {source} holds a {found} network but the config trains {variant}; "
                         f"set variant: {found} or pick weights of {variant}")
    load_weights_strict(net, state, str(source))


def _targets_frame(w2c: torch.Tensor, ref_index: torch.Tensor | None) -> torch.Tensor:
    """(B, S, 4, 4) world-to-camera re-expressed in the reference view's camera (view 0 without ``ref_index``)."""
    T = to_homogeneous(w2c)
    ref = torch.zeros(T.shape[0], dtype=torch.long, device=T.device) if ref_index is None else ref_index.long()
    T_ref = T[torch.arange(T.shape[0], device=T.device), ref]  # (B, 4, 4)
    return T @ invert_extrinsics(T_ref)[:, None]


def first_global_block(variant: str) -> int:
    """Index of the first cross-view (global) block of ``variant`` (the default matching layer)."""
    from da3_core.registry import get_config

    bb = get_config(variant).backbone
    if not bb.has_camera_token:
        raise ValueError(f"{variant} has no cross-view blocks; set match_weight 0")
    return bb.alt_start + (1 - bb.alt_start % 2)


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor], *, pose_cond: bool = False,
                 loss_cfg: StudentLossConfig | None = None, ref_view_strategy: str = "saddle_balanced",
                 depth_target: torch.Tensor | None = None, match_layers: tuple[int, ...] = (),
                 match_heads: int = 1, match_occlusion_tol: float = DEFAULT_OCCLUSION_TOL,
                 match_into: str = "all_views",
                 disp_parallax: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward ``batch`` through ``model`` and return the student loss (paper §3.3) and its detached parts.

    Args:
        batch: ``images`` (B, S, 3, H, W), ``depth`` (B, S, H, W) metres (NaN = unknown), ``w2c`` (B, S, 4, 4),
            ``K`` (B, S, 3, 3), on the model's device.
        pose_cond: give the ground-truth cameras to the network (normalised per sample like the API does).
        depth_target: replaces ``batch["depth"]`` as the depth supervision (teacher pseudo-labels).
        match_layers, match_heads, match_occlusion_tol: the matching loss (used when ``loss_cfg.match_weight`` > 0;
            the correspondences always come from the ground-truth depth and cameras).
        match_into: ``"all_views"`` (targets in every other view that sees the point) or ``"reference"`` (only in
            the reference view the network chose: the one its cameras and rays are expressed in).
        disp_parallax: the displacement targets also hold the parallax (the read-out must give 4 channels).
    """
    cfg = loss_cfg or StudentLossConfig()
    x, w2c, K = batch["images"], batch["w2c"], batch["K"]
    match = {"match_layers": match_layers, "match_heads": match_heads} if cfg.match_weight or cfg.disp_weight else {}
    if (cfg.match_weight or cfg.disp_weight) and not match_layers:
        raise ValueError("match_weight or disp_weight > 0 needs match_layers (the global blocks to supervise)")
    if pose_cond:
        ex = normalize_input_extrinsics(to_homogeneous(w2c))
        out = model(x, extrinsics=ex, intrinsics=K, ref_view_strategy=ref_view_strategy, **match)
    else:
        out = model(x, ref_view_strategy=ref_view_strategy, **match)
    depth = batch["depth"] if depth_target is None else depth_target
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64 only in exactness tests
    with torch.autocast(x.device.type, enabled=False):  # targets and losses in full precision, also under bf16
        targets = build_targets(depth.to(dt), _targets_frame(w2c.to(dt), out.get("ref_index")), K.to(dt),
                                ray_hw=tuple(out["ray"].shape[2:4]), relative_to_first=False)
        if cfg.match_weight or cfg.disp_weight:
            with torch.no_grad():
                uv, seen = project_patch_centres(batch["depth"], w2c, K, PATCH_SIZE, match_occlusion_tol)
        if cfg.match_weight:
            targets.matches = patch_matches(uv, seen, tuple(batch["depth"].shape[-2:]), PATCH_SIZE)
            if match_into == "reference":
                targets.matches = matches_into_view(targets.matches, out.get("ref_index"))
            elif match_into != "all_views":
                raise ValueError(f"match_into must be one of {MATCH_INTO}, got {match_into!r}")
        if cfg.disp_weight:
            grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
            at_inf = project_patch_directions(w2c, K, grid, PATCH_SIZE) if disp_parallax else None
            targets.displacement = displacement_targets(uv, seen, patch_centres(grid, PATCH_SIZE, x.device),
                                                        PATCH_SIZE, out.get("ref_index"), at_inf)
        return student_loss(out, targets, cfg)


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


# --- the trainer ----------------------------------------------------------------------------------------------------


class _SkipBatches:
    """A batch sampler without its first ``skip`` batches (resume inside an epoch; keys only, nothing is loaded)."""

    def __init__(self, sampler: TokenBudgetBatchSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)

    def __iter__(self) -> Iterator[list]:
        for i, keys in enumerate(self.sampler):
            if i >= self.skip:
                yield keys


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs :meth:`fit`. ``resume=True`` continues from the newest
    checkpoint in ``out_dir`` (saved architecture args win)."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, dist_info: DistInfo | None = None) -> None:
        self.info = dist_info or setup_distributed(cfg.device)
        self.master = self.info.is_master
        self.device = self.info.device
        if self.device.type == "cpu" and cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.out_dir = Path(cfg.out_dir)
        ckpt_path = latest_checkpoint(self.out_dir) if resume else None
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path else None
        if ckpt is not None:  # nanoGPT: the checkpoint's architecture wins over the command line
            cfg.variant = ckpt["model_args"]["variant"]
        self.cfg = cfg
        use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if use_amp else None

        # model: same init on every rank (seeded), optional DINOv2 weights through timm
        torch.manual_seed(cfg.seed)
        net = build_network(cfg.variant)
        init_weights(net, cfg.pos_embed_init)
        if cfg.timm_init and ckpt is None:
            from da3_core.train.timm_init import init_backbone_from_timm

            init_backbone_from_timm(net, cfg.timm_init, pretrained=True)
        if cfg.init_from and ckpt is None:
            load_init_weights(net, cfg.init_from, cfg.variant)
        self.net = net.to(self.device)
        self.match_layers = (tuple(cfg.match_layers) or (first_global_block(cfg.variant),)) \
            if cfg.match_weight or cfg.disp_weight else ()
        # the displacement loss's read-out trains beside the network (one module for DDP; saved apart from it)
        self.readout: DisplacementReadout | None = None
        trained: nn.Module = self.net
        if cfg.disp_weight:
            if cfg.fsdp:
                raise ValueError("disp_weight > 0 trains a read-out beside the network, which the FSDP2 path does not "
                                 "shard; train it with DDP (fsdp: false) or set disp_weight 0")
            self.readout = DisplacementReadout(net.backbone.pretrained.cfg.embed_dim, len(self.match_layers),
                                               out=4 if cfg.disp_parallax else 2)
            trained = WithDisplacementReadout(self.net, self.readout.to(self.device))
        self.trained = trained  # every trained parameter: the network, then the read-out
        self.model = wrap_model(trained, self.info, fsdp=cfg.fsdp)

        self._time_fraction = 0.0  # of the max_minutes budget, refreshed by check_time (the LR schedule reads it)

        # optimiser: decay only matrices / conv kernels
        decay = [p for n, p in trained.named_parameters() if p.ndim >= 2 and not n.endswith(("_token", "pos_embed"))]
        keep = [p for n, p in trained.named_parameters() if not (p.ndim >= 2 and not n.endswith(("_token",
                                                                                                 "pos_embed")))]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
        # fused: one kernel for all tensors, and it honours ``found_inf`` (a skipped step without a host sync)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_at(s, cfg, self.time_fraction()) / cfg.lr)
        self.scaler = None  # bf16 needs no loss scaling; kept in checkpoints for an fp16 variant
        self.loss_cfg = StudentLossConfig(alpha=cfg.alpha_grad, beta=cfg.beta_camera, depth_weight=cfg.dense_weight,
                                          ray_weight=cfg.dense_weight, point_weight=cfg.dense_weight,
                                          match_weight=cfg.match_weight, match_softmax=cfg.match_softmax,
                                          camera_rot_weight=cfg.camera_rot_weight, disp_weight=cfg.disp_weight,
                                          camera_t_relative=cfg.camera_t_relative,
                                          view_scale_weight=cfg.view_scale_weight)

        # data
        self.dataset = SyntheticSceneDataset(cfg.num_scenes, resolutions=cfg.resolutions, views=cfg.views,
                                             kinds=cfg.scene_kinds, seed=cfg.data_seed, antialias=cfg.antialias,
                                             path=cfg.camera_path, path_frames=cfg.path_frames,
                                             windows_per_scene=cfg.windows_per_scene,
                                             path_frames_max=cfg.path_frames_max)
        self.batcher = TokenBudgetBatcher(cfg.token_budget, cfg.resolutions, cfg.views, cfg.budget_tol,
                                          max_batch=cfg.max_batch)
        self.sampler = TokenBudgetBatchSampler(self.batcher, cfg.num_scenes, cfg.steps_per_epoch, seed=cfg.data_seed,
                                               rank=self.info.rank, world_size=self.info.world_size,
                                               group=cfg.windows_per_scene)

        # teacher (paper §4.2)
        self.teacher = None
        if cfg.teacher_ckpt:
            from da3_core.train.teacher import TeacherNetwork, teacher_config, tiny_teacher_config
            from da3_core.weights.loading import load_state_dict_file

            tcfg = tiny_teacher_config() if cfg.teacher_config == "tiny" else teacher_config()
            self.teacher = TeacherNetwork(tcfg)
            state = load_state_dict_file(cfg.teacher_ckpt) if not cfg.teacher_ckpt.endswith(".pt") else \
                torch.load(cfg.teacher_ckpt, map_location="cpu", weights_only=False)
            self.teacher.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
            self.teacher.to(self.device).eval().requires_grad_(False)

        # position
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.counters = {"nonfinite_skips": 0, "consecutive_nonfinite": 0}
        self.elapsed_before, self._t_fit = 0.0, None  # wall seconds of fit() in earlier runs / start of this one
        if ckpt is not None:
            load_checkpoint(ckpt_path, self.net, self.optimizer, self.scheduler, self.scaler, restore_rng=True)
            if self.readout is not None:
                saved = ckpt.get("extra", {}).get("disp_readout")
                if saved is None:
                    raise ValueError(f"{ckpt_path} was trained without the displacement read-out (disp_weight 0); "
                                     "start a new run from its weights with init_from instead of resuming it")
                if saved["proj.0.weight"].shape != self.readout.proj[0].weight.shape:
                    raise ValueError(f"{ckpt_path} has a displacement read-out of {saved['proj.0.weight'].shape[0]} "
                                     f"channels, this config {self.readout.proj[0].weight.shape[0]}: resume with the "
                                     "disp_parallax it was started with")
                self.readout.load_state_dict(saved)
            self.step = ckpt["data"]["step"]
            self.elapsed_before = float(ckpt["data"].get("elapsed_s", 0.0))
            self._time_fraction = self.elapsed_before / (60.0 * cfg.max_minutes) if cfg.max_minutes > 0 else 0.0
            self.epoch, self.batch_in_epoch = ckpt["data"]["epoch"], ckpt["data"]["batch_in_epoch"]
            self.counters.update(ckpt.get("counters", {}))
        # device-side non-finite bookkeeping (read by sync_counters at log intervals and checkpoints)
        self._skips_before = int(self.counters["nonfinite_skips"])
        self.nonfinite_total = torch.zeros((), dtype=torch.long, device=self.device)
        self.nonfinite_run = torch.full((), int(self.counters["consecutive_nonfinite"]), dtype=torch.long,
                                        device=self.device)

        self.resumed_from = ckpt_path
        self.log_path = self.out_dir / "train_log.jsonl"
        self._tb = None
        if self.master:
            self._open_logs()

    # --- logging --------------------------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():  # keep only what the resumed state has seen
            kept = [ln for ln in self.log_path.read_text().splitlines()
                    if ln.strip() and _safe_step(ln) is not None and _safe_step(ln) < self.step]
            self.log_path.write_text("".join(ln + "\n" for ln in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step)
        except Exception:  # tensorboard not installed: JSONL only
            self._tb = None
        self.log({"event": "start", "step": self.step, "config": self.cfg.resolved(),
                  "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                  "world_size": self.info.world_size, "device": str(self.device)})

    def log(self, record: dict[str, Any]) -> None:
        if not self.master:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    # --- data -----------------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Endless stream of batches from the current (epoch, batch_in_epoch) on; advances the position."""
        while True:
            self.sampler.set_epoch(self.epoch)
            loader = DataLoader(self.dataset, batch_sampler=_SkipBatches(self.sampler, self.batch_in_epoch),
                                num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False)
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # --- one step -------------------------------------------------------------------------------------------------
    def pose_condition(self, step: int) -> bool:
        return bool(step_rng(self.cfg.seed, step, 1).random() < self.cfg.pose_cond_prob)

    @torch.no_grad()
    def pseudo_labels(self, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """Teacher depth aligned to the ground truth with RANSAC scale/shift (paper Eq. 8); NaN where GT is unknown."""
        from da3_core.train.alignment import align_depth

        rel = self.teacher(batch["images"])["depth"].float()
        valid = torch.isfinite(batch["depth"]) & (batch["depth"] > 0)
        gen = torch.Generator(device="cpu").manual_seed(int(step_rng(self.cfg.seed, step, 2).integers(2**62)))
        aligned, _ = align_depth(rel.cpu(), batch["depth"].cpu(), valid.cpu(), generator=gen)
        aligned = aligned.to(rel.device)
        return torch.where(valid & (aligned > 0), aligned, torch.full_like(aligned, float("nan")))

    def train_step(self, batch: dict[str, torch.Tensor], echo: int = 0) -> dict[str, Any]:
        """One optimisation step. Returns the step record: plain values for the batch shape and choices, device
        tensors for the loss, its parts, the gradient norm and ``skipped`` (:func:`record_to_host` reads them).
        ``echo`` > 0: a repeat of an already used batch, seen through :func:`echo_view` (data echoing)."""
        cfg, step = self.cfg, self.step
        batch = {k: batch[k].to(self.device, non_blocking=True) for k in BATCH_KEYS}
        if echo:
            batch = echo_view(batch, step_rng(cfg.seed, step, 3))
        cond = self.pose_condition(step)
        target = self.pseudo_labels(batch, step) if self.teacher is not None and step >= cfg.teacher_switch_step \
            else None
        self.model.train()
        amp = self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, parts = forward_loss(self.model, batch, pose_cond=cond, loss_cfg=self.loss_cfg,
                                       ref_view_strategy=cfg.ref_view_strategy, depth_target=target,
                                       match_layers=self.match_layers, match_heads=cfg.match_heads,
                                       match_occlusion_tol=cfg.match_occlusion_tol, match_into=cfg.match_into,
                                       disp_parallax=cfg.disp_parallax)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else
                                                   float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor of per-shard partial norms (a collective)
            grad_norm = grad_norm.full_tensor()
        loss_avg = all_reduce_mean(loss.detach().float())
        nonfinite = ~(torch.isfinite(loss_avg) & torch.isfinite(grad_norm))  # same on every rank
        self.optimizer.found_inf = nonfinite.float()  # fused AdamW skips params, moments and step count
        self.optimizer.step()
        self.nonfinite_run = (self.nonfinite_run + 1) * nonfinite
        self.nonfinite_total = self.nonfinite_total + nonfinite
        lr = self.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        x = batch["images"]
        rec = {"step": step, "loss": loss_avg, "lr": lr, "grad_norm": grad_norm.detach(), "pose_cond": cond,
               "skipped": nonfinite, "teacher": target is not None,
               "B": int(x.shape[0]) * self.info.world_size, "S": int(x.shape[1]), "H": int(x.shape[3]),
               "W": int(x.shape[4])}
        rec.update({f"loss/{k}": v for k, v in parts.items() if "/" not in k and k != "total"})
        for key in ("match/acc", "disp/l1", "disp/parallax_l1", "camera/rot_deg", "camera/rot_deg_identity"):
            if key in parts:
                rec[key] = parts[key]
        return rec

    def elapsed(self) -> float:
        """Wall seconds spent in fit(), earlier (resumed) runs included."""
        return self.elapsed_before + (time.perf_counter() - self._t_fit if self._t_fit is not None else 0.0)

    def time_fraction(self) -> float | None:
        """Elapsed fraction of the ``max_minutes`` budget as of the last check (None without a budget)."""
        return self._time_fraction if self.cfg.max_minutes > 0 else None

    def check_time(self) -> None:
        """Refresh the budget fraction (rank 0's clock, shared so that every rank uses the same LR and stops at the
        same step); called at log intervals, so it costs no per-step sync."""
        if self.cfg.max_minutes <= 0:
            return
        frac = torch.tensor(self.elapsed() / (60.0 * self.cfg.max_minutes), dtype=torch.float64)
        if self.info.world_size > 1:
            frac = frac.to(self.device)
            torch.distributed.broadcast(frac, src=0)
        self._time_fraction = float(frac)

    def out_of_time(self) -> bool:
        return self.cfg.max_minutes > 0 and self._time_fraction >= 1.0

    def sync_counters(self) -> None:
        """Read the device-side non-finite counters into ``counters`` (a host sync) and abort after
        ``max_nonfinite`` consecutive skipped steps."""
        self.counters["nonfinite_skips"] = self._skips_before + int(self.nonfinite_total)
        self.counters["consecutive_nonfinite"] = int(self.nonfinite_run)
        if self.counters["consecutive_nonfinite"] >= self.cfg.max_nonfinite:
            raise NonFiniteError(f"{self.counters['consecutive_nonfinite']} consecutive non-finite steps (the last "
                                 f"at step {self.step - 1}; checked every log_interval = {self.cfg.log_interval} "
                                 "steps); lower the LR or check the data")

    # --- checkpoints / eval ---------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write a checkpoint (master). Every rank must call this: gathering FSDP2 shards is a collective; without
        FSDP2 only the master reads the states (inside :func:`save_checkpoint`)."""
        self.sync_counters()
        model_state = optimizer_state = None
        if is_sharded(self.net):
            model_state = model_state_dict(self.net)
            optimizer_state = optimizer_state_dict(self.net, self.optimizer)
        if not self.master:
            return None
        return save_checkpoint(self.out_dir, self.step, self.net, self.optimizer, self.scheduler, self.scaler,
                               data={"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                                     "elapsed_s": self.elapsed()},
                               config=self.cfg.resolved(), model_args={"variant": self.cfg.variant},
                               counters=self.counters, keep_last=self.cfg.keep_last, model_state=model_state,
                               optimizer_state=optimizer_state,
                               extra={"disp_readout": self.readout.state_dict()} if self.readout is not None else None)

    def evaluate(self) -> dict[str, float]:
        """Held-out scores (training/evaluate.py's headline protocol), un-posed and, under ``cond/``, with the true
        cameras given (metric depth through the API's scale: what odometry-conditioned windows get)."""
        from da3_core.eval.synthetic_benchmark import evaluate_conditioned, evaluate_network, heldout_keys

        keys = heldout_keys(self.cfg.eval_samples, seed=self.cfg.eval_seed)
        ref = self.cfg.ref_view_strategy  # scored with the reference view it is trained with
        scores = evaluate_network(self.net, keys, seed=self.cfg.eval_seed, device=self.device,
                                  ref_view_strategy=ref, path_frames=self.cfg.eval_path_frames)
        cond = evaluate_conditioned(self.net, keys, seed=self.cfg.eval_seed, device=self.device,
                                    ref_view_strategy=ref, path_frames=self.cfg.eval_path_frames)
        scores.update({f"cond/{k}": v for k, v in cond.items()})
        self.net.train()
        return scores

    def export(self, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``folder/model.safetensors`` (official layout) + ``config.json`` for ``DA3.from_pretrained``.
        ``state``: the full state gathered on every rank (:func:`model_state_dict`), needed for an FSDP2 model."""
        from da3_core.weights.loading import save_weights

        folder = Path(folder)
        net = self.net
        if is_sharded(self.net):
            if state is None:
                raise ValueError("export of an FSDP2 model needs the gathered state: pass model_state_dict(net)")
            net = build_network(self.cfg.variant)
            net.load_state_dict(state, strict=True)
        path = save_weights(net, folder / "model.safetensors", variant=self.cfg.variant)
        (folder / "config.json").write_text(json.dumps({"model_name": self.cfg.variant, "step": self.step}, indent=2)
                                            + "\n")
        return path

    # --- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg
        bar = None
        if self.master and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        stream = self.batches()
        t_last, samples, tokens = time.perf_counter(), 0, 0
        self._t_fit = time.perf_counter()
        batch = None
        while self.step < cfg.max_steps and not self.out_of_time():
            echo = self.step % cfg.data_echo
            if echo == 0 or batch is None:  # a resume always starts at a batch boundary (ckpt_interval check)
                batch = {k: v.to(self.device, non_blocking=True) for k, v in next(stream).items() if k in BATCH_KEYS}
            rec = self.train_step(batch, echo)
            self.step += 1
            samples += rec["B"]
            tokens += rec["B"] * rec["S"] * (rec["H"] // 14) * (rec["W"] // 14)
            if self.step % cfg.log_interval == 0:
                self.check_time()
            last = self.step == cfg.max_steps or self.out_of_time()
            if self.step % cfg.log_interval == 0 or last:
                self.sync_counters()  # the only host sync of a logging step (every rank: the abort is collective)
            if self.master and (self.step % cfg.log_interval == 0 or last):
                dt = time.perf_counter() - t_last
                rec = record_to_host(rec)
                rec.update(samples_per_s=samples / dt, tokens_per_s=tokens / dt,
                           nonfinite_skips=self.counters["nonfinite_skips"], time=time.time())
                self.log(rec)
                t_last, samples, tokens = time.perf_counter(), 0, 0
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
            if bar is not None:
                bar.update(1)
            if self.master and cfg.eval_interval > 0 and (self.step % cfg.eval_interval == 0 or last):
                self.log({"step": self.step, "event": "eval", **self.evaluate()})
            if self.step % cfg.ckpt_interval == 0 or last:
                self.save()
        if bar is not None:
            bar.close()
        final_state = model_state_dict(self.net) if is_sharded(self.net) else None  # a collective: every rank
        self.sync_counters()
        if self.master:
            self.export(self.out_dir / "final", final_state)
            self.log({"event": "done", "step": self.step, **self.counters})
            if self._tb is not None:
                self._tb.close()
        if self.info.world_size > 1:  # ranks leave together: none tears down the group while another still exports
            torch.distributed.barrier()


def echo_view(batch: dict[str, torch.Tensor], rng: np.random.Generator, patch: int = 14) -> dict[str, torch.Tensor]:
    """Another look at a batch for data echoing: a random crop, 0-2 patches smaller in each direction (one size and
    pixel offset for the whole batch, so the patch grid falls elsewhere on the content; intrinsics follow the crop),
    and the views in a random order. The choices come from the host generator ``rng`` (no device sync); the
    slicing runs on the batch's device."""
    images, depth, K = batch["images"], batch["depth"], batch["K"]
    H, W = images.shape[-2:]
    h = H - patch * int(rng.integers(min(3, H // patch)))
    w = W - patch * int(rng.integers(min(3, W // patch)))
    y0, x0 = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
    order = torch.from_numpy(rng.permutation(images.shape[1])).to(images.device)
    K = K[:, order].clone()
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return {"images": images[:, order, :, y0:y0 + h, x0:x0 + w], "depth": depth[:, order, y0:y0 + h, x0:x0 + w],
            "w2c": batch["w2c"][:, order], "K": K}


def record_to_host(rec: dict[str, Any]) -> dict[str, Any]:
    """A step record with its device tensors read as Python numbers (one host sync for all of them)."""
    names = [k for k, v in rec.items() if isinstance(v, torch.Tensor)]
    if not names:
        return dict(rec)
    values = torch.stack([rec[k].detach().float().reshape(()) for k in names]).cpu().tolist()
    out = dict(rec)
    for k, v in zip(names, values):
        out[k] = bool(v) if rec[k].dtype == torch.bool else v
    return out


def _safe_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def default_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny_default.yaml"


__all__ += ["default_config_path", "init_weights"]
