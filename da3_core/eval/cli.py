"""``da3 eval``: a model on one or more datasets -> ``DIR/results.json``, ``DIR/report.md``, ``DIR/plots/*.png``.

    da3 eval [--weights CKPT | --untrained] --dataset KIND:PATH [--dataset …] --out DIR
             [--max-frames N] [--views N] [--process-res 504] [--depth-align auto|median|scale_shift|none]
             [--pose-align auto|sim3|se3] [--ransac auto|on|off] [--f1-threshold 0.05] [--tsdf [--tsdf-voxel V]]
             [--intrinsics fx,fy,cx,cy] [--with-intrinsics] [--ref-view saddle_balanced|first|...] [--device cpu|cuda]

Weights: ``--weights`` (a checkpoint), else the embedded default ``da3_core/assets/default`` when it exists, else an
error; ``--untrained`` uses deterministic recipe weights of ``da3-small-reduced`` (plumbing checks only).
Datasets: see :mod:`da3_core.eval.datasets` and ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from da3_core.models.reference_view import REF_VIEW_STRATEGIES
from da3_core.weights.embedded import EMBEDDED_DEFAULT

UNTRAINED_VARIANT = "da3-small-reduced"


def add_eval_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a model on datasets with ground truth (JSON + Markdown + PNG report)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default=None, help="checkpoint (default: the embedded da3_core/assets/default)")
    w.add_argument("--untrained", action="store_true",
                   help=f"untrained recipe weights of {UNTRAINED_VARIANT} (plumbing checks; scores are meaningless)")
    p.add_argument("--variant", default=None, help="model variant when the checkpoint does not name it")
    p.add_argument("--dataset", action="append", required=True, metavar="KIND:PATH",
                   help="synthetic:SPEC[;SPEC] | tum:PATH | 7scenes:PATH | scannet:PATH | colmap:PATH | folder:PATH | "
                        "bag:PATH (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-frames", type=int, default=None, help="at most N frames per scene (evenly spaced)")
    p.add_argument("--views", type=int, default=None, help="views per model call: scenes are split into chunks")
    p.add_argument("--process-res", type=int, default=504)
    p.add_argument("--depth-align", default="auto", choices=("auto", "median", "scale_shift", "none"))
    p.add_argument("--pose-align", default="auto", choices=("auto", "sim3", "se3"))
    p.add_argument("--ransac", default="auto", choices=("auto", "on", "off"),
                   help="RANSAC pose alignment for reconstruction (auto: >= 10 views)")
    p.add_argument("--f1-threshold", type=float, default=0.05, help="F1 distance threshold in GT units (0.05 m)")
    p.add_argument("--max-points", type=int, default=50_000, help="cap on each cloud for the point metrics")
    p.add_argument("--tsdf", action="store_true", help="fuse clouds with an open3d TSDF")
    p.add_argument("--tsdf-voxel", type=float, default=None, help="TSDF voxel (default f1-threshold / 2.5)")
    p.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy for datasets without (or to override) K")
    p.add_argument("--with-intrinsics", action="store_true", help="give the model the ground-truth intrinsics")
    p.add_argument("--use-ray-pose", action="store_true")
    p.add_argument("--ref-view", default="saddle_balanced", choices=REF_VIEW_STRATEGIES,
                   help="reference view of each model call (the API's default; the node runs windows with 'first')")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"))
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=cmd_eval)
    return p


def load_eval_model(weights: str | None, untrained: bool, variant: str | None, device: str | None):
    """(model, description)."""
    from da3_core.api import CHECKPOINT_HELP, DA3
    from da3_core.cli import CliError

    if untrained:
        from da3_core.registry import build_network
        from da3_core.weights.recipe import apply_recipe

        name = variant or UNTRAINED_VARIANT
        return DA3.from_network(apply_recipe(build_network(name)), variant=name, device=device), \
            f"UNTRAINED recipe weights ({name}): scores are not meaningful"
    if weights is None:
        if not (EMBEDDED_DEFAULT / "model.safetensors").is_file():
            raise CliError(f"no --weights and no embedded default at {EMBEDDED_DEFAULT}; pass --weights CKPT or "
                           "--untrained")
        return DA3.from_pretrained(EMBEDDED_DEFAULT, device=device), f"embedded default ({EMBEDDED_DEFAULT})"
    path = Path(weights).expanduser()
    if not path.exists():
        raise CliError(f"weights {str(path)!r} not found. {CHECKPOINT_HELP}")
    return DA3.from_pretrained(path, variant=variant, device=device), f"checkpoint {path}"


def cmd_eval(args: argparse.Namespace) -> int:
    from da3_core.cli import CliError
    from da3_core.eval.datasets import load_dataset
    from da3_core.eval.report import write_report
    from da3_core.eval.runner import EvalConfig, aggregate, run_evaluation

    intr = None
    if args.intrinsics:
        try:
            intr = tuple(float(v) for v in args.intrinsics.split(","))
            assert len(intr) == 4
        except (ValueError, AssertionError):
            raise CliError(f"--intrinsics {args.intrinsics!r}: expected fx,fy,cx,cy") from None
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError("--max-frames must be at least 1")
    scenes = []
    for spec in args.dataset:
        try:
            scenes += load_dataset(spec, args.max_frames, args.views, intr)
        except FileNotFoundError as exc:
            raise CliError(str(exc)) from None
    model, desc = load_eval_model(args.weights, args.untrained, args.variant, args.device)
    print(f"da3 eval: {len(scenes)} scene(s) from {', '.join(args.dataset)}; model: {desc}", file=sys.stderr)
    cfg = EvalConfig(depth_align=args.depth_align, pose_align=args.pose_align,
                     ransac={"auto": None, "on": True, "off": False}[args.ransac], f1_threshold=args.f1_threshold,
                     tsdf=args.tsdf, tsdf_voxel=args.tsdf_voxel, max_points=args.max_points,
                     process_res=args.process_res, with_intrinsics=args.with_intrinsics,
                     use_ray_pose=args.use_ray_pose, ref_view=args.ref_view)
    if args.tsdf:
        from da3_core.eval.tsdf import TSDFUnavailable, import_open3d

        try:
            import_open3d()
        except TSDFUnavailable as exc:
            raise CliError(str(exc)) from None
    summary, results = run_evaluation(model, scenes, cfg, log=lambda m: print(f"da3 eval: {m}", file=sys.stderr))
    summary["meta"] = {"model": desc, "datasets": list(args.dataset), "max_frames": args.max_frames,
                       "views": args.views}
    summary["aggregate"] = aggregate(results)
    summary = {"meta": summary.pop("meta"), **summary}
    paths = write_report(args.out, summary, results, title=args.title or "DA3 evaluation")
    print(f"da3 eval: wrote {paths['json']}, {paths['markdown']} and {len(paths) - 2} plot(s)", file=sys.stderr)
    return 0
