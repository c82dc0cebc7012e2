"""Can a network, as initialised for training, learn the simplest cross-view task? A diagnostic for pose learning.

    python training/cross_view_probe.py --match-weight 1     # da3-tiny from scratch + matching supervision, 2000 steps
    python training/cross_view_probe.py                      # the same without it (camera loss only)
    python training/cross_view_probe.py --task brighter      # control: cross-view, but no matching needed
    python training/cross_view_probe.py --match-weight 1 --content scenes   # the shift on rendered scene images
    python training/cross_view_probe.py --match-weight 1 --disp-weight 1 --subpatch --max-shift 1 --content scenes
                                                             # + the displacement loss: learned on scene content

Each sample is two views of one random smooth texture; the second view is the first shifted sideways by a whole
number of patches (-3..3), i.e. a camera that turned. The camera head must report that shift as a yaw of
``--deg-per-patch`` degrees per patch (L_C on the raw decoder output). A network that matches content across views
solves this; one that does not stays at the error of a constant guess. From scratch, the camera loss alone is not
learned in thousands of steps; ``--match-weight`` adds the matching supervision of
``da3_core/train/matching.py`` (the first global block's first head is taught where each patch went, here exact
from the shift), with which it is learned on noise (``da3_core/assets/default/TRAINING.md`` has the ablations). On
crops of rendered scenes (``--content scenes``) matching alone is not enough; ``--disp-weight`` adds the displacement
loss of ``da3_core/train/displacement.py`` (a linear read-out of the same block's patch tokens must give each patch's
shift), with which it is. It is the floor under the synthetic-scene pose scores of ``training/evaluate.py``: while
this toy is not learned, the camera poses of the real task will not be either. ``--task brighter`` is the control:
the two views are unrelated textures and the target "yaw" says which view is brighter (+-max shift), so information
must cross views but nothing has to be matched. Prints, every ``--eval-every`` steps, the mean absolute yaw error
on 64 fixed held-out pairs next to the constant guess's, and their correlation.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_core.registry import build_network  # noqa: E402
from da3_core.train.correspondence import PatchMatches, bilinear_patch_targets, patch_centres  # noqa: E402
from da3_core.train.displacement import (  # noqa: E402
    DisplacementReadout,
    WithDisplacementReadout,
    displacement_loss,
    displacement_targets,
)
from da3_core.train.init import init_weights  # noqa: E402
from da3_core.train.loop import load_init_weights  # noqa: E402
from da3_core.train.losses import camera_loss  # noqa: E402
from da3_core.train.matching import MATCH_SOFTMAX, matching_cross_entropy  # noqa: E402

PATCH = 14


def yaw_targets(shift: torch.Tensor, deg_per_patch: float) -> torch.Tensor:
    """(B, 2, 9) pose encodings: both cameras at the origin, the second turned by ``shift * deg_per_patch`` degrees
    about its y axis, a fixed field of view."""
    yaw = torch.deg2rad(shift.float() * deg_per_patch)
    enc = torch.zeros(len(shift), 2, 9, device=shift.device)
    enc[..., 6] = 1.0  # identity quaternion (xyzw)
    enc[:, 1, 4], enc[:, 1, 6] = torch.sin(yaw / 2), torch.cos(yaw / 2)
    enc[..., 7:9] = 2 * math.atan(0.5)
    return enc


def noise_texture(count: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(count, 3, height, width) unit-variance noise upsampled 7x (a few blobs per patch): every patch distinctive.
    Drawn from ``gen`` on its device."""
    grain = torch.randn(count, 3, -(-height // 7), -(-width // 7), generator=gen, device=gen.device)
    return F.interpolate(grain, scale_factor=7, mode="bilinear", align_corners=False)[..., :height, :width]


def shifted_pairs(batch: int, hw: tuple[int, int], max_shift: int, deg_per_patch: float,
                  gen: torch.Generator, subpatch: bool = False,
                  pool: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (B, 2, 3, H, W), target encodings (B, 2, 9), shift in patches (B,)). The texture is
    :func:`noise_texture`, so every patch is distinctive; with ``pool`` ((P, 3, H, W + 2 pad)
    images, pad = ``max_shift`` patches) it is a random one of those instead (:func:`scene_pool`: the synthetic
    scenes' content). ``subpatch``: the shift is a whole number of *pixels* (up to ``max_shift`` patches), so a
    patch of view 2 straddles two patches of view 1, as between neighbouring keyframes of a real camera."""
    height, width = hw
    pad = max_shift * PATCH
    dev = gen.device
    if pool is None:
        base = noise_texture(batch, height, width + 2 * pad, gen)
    else:
        if tuple(pool.shape[-2:]) != (height, width + 2 * pad):
            raise ValueError(f"pool images must be {height}x{width + 2 * pad} (H x W + 2 * max_shift patches), "
                             f"got {tuple(pool.shape[-2:])}")
        base = pool[torch.randint(len(pool), (batch,), generator=gen, device=dev)]
    steps = PATCH if not subpatch else 1  # shift granularity in pixels
    shift_px = torch.randint(-max_shift * PATCH // steps, max_shift * PATCH // steps + 1, (batch,), generator=gen,
                             device=dev) * steps
    shift = shift_px / PATCH if subpatch else shift_px // PATCH
    first = base[..., pad:pad + width]
    cols = pad + shift_px[:, None] + torch.arange(width, device=dev)  # (B, W): view 2 column x = base column
    second = base.gather(-1, cols[:, None, None, :].expand(batch, 3, height, width))
    return torch.stack((first, second), 1), yaw_targets(shift, deg_per_patch), shift


def scene_pool(count: int, hw: tuple[int, int], max_shift: int, seed: int, noise: float = 0.0) -> torch.Tensor:
    """``count`` rendered synthetic-scene images (ImageNet-normalised), each wide enough for the shifts of
    :func:`shifted_pairs` (H x W + 2 ``max_shift`` patches): the probe on the training scenes' content. ``noise`` >
    0 adds the noise texture of the default content times that amplitude, fixed per image (so both views of a pair
    see it): the scenes made locally unique."""
    from da3_core.train.data import SyntheticSceneDataset

    height, width = hw[0], hw[1] + 2 * max_shift * PATCH
    ds = SyntheticSceneDataset(count, resolutions=[(height, width)], views=(1, 1), seed=seed, path="mixed")
    pool = torch.stack([ds[(i, height, width, 1)]["images"][0] for i in range(count)])
    if noise > 0:
        pool = pool + noise * noise_texture(count, height, width, torch.Generator().manual_seed(seed + 1))
    return pool


def shift_uv(shift: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the patch centres of :func:`shifted_pairs` are seen in the other view: pixel x of view 2 shows what pixel
    x + shift * 14 of view 1 shows. Returns uv (B, 2, N, 2, 2) and valid (B, 2, N, 2) (inside, other view only),
    the layout of :func:`da3_core.train.correspondence.project_patch_centres`."""
    height, width = hw
    centres = patch_centres((height // PATCH, width // PATCH), PATCH, shift.device)  # (N, 2)
    uv = centres[None, None, :, None, :].repeat(len(shift), 2, 1, 2, 1)  # (B, S_j, N, S_i, 2)
    du = shift.float()[:, None] * PATCH
    uv[:, 1, :, 0, 0] += du  # view 2 -> view 1
    uv[:, 0, :, 1, 0] -= du  # view 1 -> view 2
    valid = (uv[..., 0] >= -0.5) & (uv[..., 0] < width - 0.5)
    valid &= ~torch.eye(2, dtype=torch.bool, device=shift.device)[None, :, None, :]
    return uv, valid


def shift_matches(shift: torch.Tensor, hw: tuple[int, int]) -> PatchMatches:
    """Matching targets of :func:`shifted_pairs`: patch (r, c) of view 2 is patch (r, c + shift) of view 1 and the
    other way round (seen when inside)."""
    grid = (hw[0] // PATCH, hw[1] // PATCH)
    uv, valid = shift_uv(shift, hw)
    index, weight = bilinear_patch_targets(uv, valid, grid, PATCH)
    return PatchMatches(index=index, weight=weight, valid=valid)


def brighter_pairs(batch: int, hw: tuple[int, int], max_shift: int, deg_per_patch: float,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The control task: two unrelated textures with random brightness offsets; "shift" = +max_shift when the
    second view is brighter on average, else -max_shift (same outputs as :func:`shifted_pairs`)."""
    height, width = hw
    dev = gen.device
    tex = noise_texture(batch * 2, height, width, gen).reshape(batch, 2, 3, height, width)
    tex = tex + 0.5 * torch.randn(batch, 2, 1, 1, 1, generator=gen, device=dev)
    brighter = tex[:, 1].mean((1, 2, 3)) > tex[:, 0].mean((1, 2, 3))
    shift = torch.where(brighter, max_shift, -max_shift)
    return tex, yaw_targets(shift, deg_per_patch), shift


TASKS = {"shift": shifted_pairs, "brighter": brighter_pairs}


def predicted_yaw_deg(pose_enc: torch.Tensor) -> torch.Tensor:
    """Yaw (degrees) of the second view from the raw (B, 2, 9) encoding."""
    q = F.normalize(pose_enc[:, 1, 3:7], dim=-1)
    q = q * torch.where(q[:, 3:4] < 0, -1.0, 1.0)
    return torch.rad2deg(2 * torch.atan2(q[:, 1], q[:, 3]))


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="shift", help="shift (matching) or brighter (control)")
    ap.add_argument("--variant", default="da3-tiny")
    ap.add_argument("--init-from", default="", help="start from these weights instead of the from-scratch init")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4, help="LR (linear decay to 5 %% of it over the last quarter)")
    ap.add_argument("--size", type=int, nargs=2, default=(84, 112), metavar=("H", "W"))
    ap.add_argument("--max-shift", type=int, default=3, help="largest shift, in patches")
    ap.add_argument("--deg-per-patch", type=float, default=6.0)
    ap.add_argument("--subpatch", action="store_true",
                    help="shift task: shifts by whole pixels instead of whole patches (sub-patch matching)")
    ap.add_argument("--content", choices=("noise", "scenes"), default="noise",
                    help="shift task: random noise (every patch unique) or crops of rendered synthetic scenes")
    ap.add_argument("--scene-noise", type=float, default=0.0,
                    help="--content scenes: add the noise content at this amplitude (scenes made locally unique)")
    ap.add_argument("--pool", type=int, default=512, help="--content scenes: training images rendered up front")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--match-weight", type=float, default=0.0,
                    help="weight of the matching loss (da3_core.train.matching; shift task only); 0 = off")
    ap.add_argument("--match-layers", type=int, nargs="*", default=None,
                    help="global blocks whose attention is supervised (default: the first global block)")
    ap.add_argument("--match-heads", type=int, default=1, help="supervised heads per block")
    ap.add_argument("--match-softmax", choices=MATCH_SOFTMAX, default="all",
                    help="softmax over each other view's patches, or over all views' (da3_core.train.matching)")
    ap.add_argument("--disp-weight", type=float, default=0.0,
                    help="weight of the displacement loss (da3_core.train.displacement: a linear read-out of the "
                         "matching blocks' patch tokens gives each patch's shift; shift task only); 0 = off")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: the batches are made on this device")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    net = build_network(args.variant)
    init_weights(net)
    if args.init_from:
        load_init_weights(net, args.init_from, args.variant)
    net.to(dev)
    vit = net.backbone.pretrained
    layers = tuple(args.match_layers) if args.match_layers is not None else \
        tuple(i for i in range(vit.cfg.depth) if vit.is_global_block(i))[:1]
    match = args.match_weight > 0 and args.task == "shift"
    disp = args.disp_weight > 0 and args.task == "shift"
    # with the displacement loss its read-out trains beside the network, as in the trainer (outputs gain match_disp)
    model = WithDisplacementReadout(net, DisplacementReadout(vit.cfg.embed_dim, len(layers)).to(dev)) if disp else net
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    # constant LR, then a linear decay to 5 % over the last quarter: the shift is learned in a sudden transition
    # that an early decay delays (a cosine schedule over 1500 steps did not reach it), and the final steps settle
    # instead of jittering around the answer
    decay_from = int(0.75 * args.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 - 0.95 * min(1.0, max(0, s - decay_from) / max(1, args.steps - decay_from)))
    train_gen = torch.Generator(dev).manual_seed(args.seed + 1)
    hw = tuple(args.size)
    centres = patch_centres((hw[0] // PATCH, hw[1] // PATCH), PATCH, dev)
    if (args.subpatch or args.content == "scenes") and args.task != "shift":
        raise SystemExit("--subpatch and --content scenes are options of the shift task (--task shift)")
    make_pairs = make_val = TASKS[args.task] if not args.subpatch else functools.partial(shifted_pairs, subpatch=True)
    if args.content == "scenes":
        make_pairs = functools.partial(make_pairs, pool=scene_pool(args.pool, hw, args.max_shift, 0,
                                                                         args.scene_noise).to(dev))
        make_val = functools.partial(make_val, pool=scene_pool(64, hw, args.max_shift, 10_000,
                                                                     args.scene_noise).to(dev))
    x_val, _, s_val = make_val(64, hw, args.max_shift, args.deg_per_patch, torch.Generator(dev).manual_seed(10_000))
    want = s_val.float() * args.deg_per_patch
    const_err = (want - want.median()).abs().mean().item()
    how = (f"weight {args.match_weight:g} on blocks {list(layers)} x {args.match_heads} head(s), softmax over "
           f"{args.match_softmax}") if match else "off"
    if disp:
        how += f"; displacement loss weight {args.disp_weight:g} on blocks {list(layers)}"
    print(f"{args.variant}, task {args.task} on {args.content}: targets -{args.max_shift}..{args.max_shift} x "
          f"{args.deg_per_patch} deg; "
          f"constant guess: mean |yaw error| {const_err:.2f} deg; matching loss {how}")
    rows, t0 = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        x, enc, shift = make_pairs(args.batch, hw, args.max_shift, args.deg_per_patch, train_gen)
        out = model(x, ref_view_strategy="first", match_layers=layers if match or disp else (),
                  match_heads=args.match_heads)
        loss, _ = camera_loss(out["pose_enc"], enc)
        if match:
            match_loss, _ = matching_cross_entropy(out["match_q"], out["match_k"], shift_matches(shift, hw),
                                                   over=args.match_softmax)
            loss = loss + args.match_weight * match_loss
        if disp:
            target, seen = displacement_targets(*shift_uv(shift, hw), centres, PATCH)
            disp_loss, _ = displacement_loss(out["match_disp"], target, seen)
            loss = loss + args.disp_weight * disp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                out = model(x_val, ref_view_strategy="first", match_layers=layers if match or disp else (),
                          match_heads=args.match_heads)
                yaw = predicted_yaw_deg(out["pose_enc"])
                acc = matching_cross_entropy(out["match_q"], out["match_k"], shift_matches(s_val, hw),
                                             over=args.match_softmax)[1]["acc"] if match else None
                if disp:  # held-out mean |displacement error| of the read-out
                    disp_l1 = displacement_loss(out["match_disp"],
                                                *displacement_targets(*shift_uv(s_val, hw), centres, PATCH))[1]["l1"]
            err = (yaw - want).abs().mean().item()
            corr = float(np.corrcoef(yaw.cpu().numpy(), want.cpu().numpy())[0, 1]) if yaw.std() > 0 else 0.0
            row = {"step": step, "loss": loss.item(), "yaw_err": err, "corr": corr}
            if acc is not None:
                row["match_acc"] = acc.item()
            if disp:
                row["disp_l1"] = disp_l1.item()
            rows.append(row)
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out |yaw error| {err:6.2f} deg "
                  f"(constant {const_err:.2f})  corr {corr:+.2f}"
                  + (f"  match acc {row['match_acc']:.2f}" if acc is not None else "")
                  + (f"  disp l1 {row['disp_l1']:.2f} patch" if disp else "")
                  + f"  {time.time() - t0:.0f} s", flush=True)
    return rows


if __name__ == "__main__":
    main()
