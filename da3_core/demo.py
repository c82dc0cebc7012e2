"""The main job on a fresh machine (``make demo``): a synthetic scene with known geometry through DA3.

    python -m da3_core.demo [--weights CHECKPOINT] [--variant NAME] [--out outputs/demo] [--frames 6]

1. Loads the model: ``--weights`` (an official checkpoint folder or one of ours), else the embedded default in
   ``da3_core/assets/default`` when it exists, else recipe-initialised ``da3-small-reduced`` (untrained: the
   pipeline runs end to end but its numbers mean nothing; the command says so).
2. Renders ``--frames`` views of a procedural room (exact depth and poses; nothing is read from disk).
3. Runs ``DA3.predict`` with the known intrinsics and writes ``results.npz``, ``points.ply``, ``depth/*.png``,
   ``cameras.json``, ``trajectory.tum`` plus ground-truth depth previews and ``scores.json`` into ``--out``.
4. Prints depth AbsRel / delta1 (median-scale aligned; none for metric models) and trajectory ATE after Sim(3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from da3_core.data.synthetic import intrinsics_from_fov, make_scene, make_trajectory, render_sequence
from da3_core.eval.depth_metrics import depth_scores
from da3_core.eval.pose_metrics import absolute_trajectory_error
from da3_core.export import export_prediction, save_depth_png

EMBEDDED_DEFAULT = Path(__file__).resolve().parent / "assets" / "default"


def load_model(weights: str | None, variant: str | None, device: str):
    """(DA3 model, description, trained?) for the demo."""
    from da3_core.api import DA3

    if weights:
        return DA3.from_pretrained(weights, variant=variant, device=device), f"checkpoint {weights}", True
    if (EMBEDDED_DEFAULT / "model.safetensors").is_file():
        return DA3.from_pretrained(EMBEDDED_DEFAULT, device=device), f"embedded default {EMBEDDED_DEFAULT}", True
    from da3_core.registry import build_network
    from da3_core.weights.recipe import apply_recipe

    net = apply_recipe(build_network("da3-small-reduced"))
    return DA3.from_network(net, variant="da3-small-reduced", device=device), "UNTRAINED recipe weights", False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="official checkpoint folder / model.safetensors, or one of ours")
    parser.add_argument("--variant", help="variant name when the checkpoint has no config.json")
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--frames", type=int, default=6, help="number of views (default 6)")
    parser.add_argument("--scene", default="room", help="synthetic scene kind (default room)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="504x378", help="render size WxH (default 504x378)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)

    t0 = time.perf_counter()
    try:
        model, what, trained = load_model(args.weights, args.variant, args.device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[1/4] model: {model!r} from {what} ({time.perf_counter() - t0:.1f} s)")
    if not trained:
        print("      NOTE: no trained embedded default is bundled yet (the training issue produces it). The run below\n"
              "      exercises the whole pipeline with untrained weights, so its accuracy figures are meaningless.\n"
              "      Pass --weights <official checkpoint folder> for real results.")

    t0 = time.perf_counter()
    scene = make_scene(args.scene, seed=args.seed)
    K = intrinsics_from_fov((height, width), 70.0)
    w2cs = make_trajectory(scene, args.frames, "walk", seed=args.seed)
    frames = render_sequence(scene, w2cs, K, (height, width))
    print(f"[2/4] rendered {len(frames)} views of a synthetic {args.scene} ({width}x{height}) "
          f"in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    pred = model.predict([f.rgb for f in frames], intrinsics=np.stack([f.K for f in frames]), ref_view="first")
    print(f"[3/4] predicted depth and cameras for {len(frames)} views in {time.perf_counter() - t0:.1f} s")

    written = export_prediction(pred, out)
    gt_depth = np.stack([f.depth for f in frames])
    for i, f in enumerate(frames):
        save_depth_png(out / "depth_gt" / f"{i:04d}.png", f.depth, ~f.sky)
    depth = depth_scores(pred.depth, gt_depth, mode="none" if pred.is_metric else "median")
    scores = {"depth_abs_rel": depth.abs_rel, "depth_delta1": depth.delta1, "depth_alignment":
              "none" if pred.is_metric else "median", "model": what, "trained": trained}
    if pred.extrinsics is not None and len(frames) >= 3:
        ate = absolute_trajectory_error(pred.extrinsics, np.stack([f.w2c for f in frames]))
        scores["trajectory_ate_rmse_m"] = ate.ate_rmse
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    print(f"[4/4] wrote {', '.join(sorted(p.name for p in written.values()))}, depth_gt/, scores.json to {out}/")
    print(f"      depth AbsRel {depth.abs_rel:.3f}  delta1 {depth.delta1:.3f}  ({scores['depth_alignment']} alignment, "
          f"{depth.num_pixels} px)")
    if "trajectory_ate_rmse_m" in scores:
        print(f"      trajectory ATE {scores['trajectory_ate_rmse_m']:.3f} m (Sim(3)-aligned camera centres)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
