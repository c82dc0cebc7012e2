"""The main job's headline row (``make demo``'s "DA3 alone": camera path ATE / path extent) over several robots.

    .venv/bin/python bench/demo_ate.py                                      # embedded default, robot seeds 0-7
    .venv/bin/python bench/demo_ate.py --weights outputs/train/condR/final da3_core/assets/default --seeds 0-15

``make demo`` scores one 26-frame robot (seed 0), so one set of weights' ATE swings by several points between
weights of similar held-out scores. This runs the same thing on robots ``--seeds`` (the demo's spec with only the
seed changed: other rooms, other drives) without ROS processes: the node's own pipeline
(:class:`da3_core.stream.pipeline.StreamPipeline` built from the node's parameters, as ``replay`` does) fed the
camera the demo's ``da3`` mode reads (cam0), windows of 8 frames sharing 2, the node's reference view and
process_res 168, no end-of-stream flush (the live node has none); ATE after Sim(3) alignment over the path's extent,
as the demo prints it. Prints per weights and seed, then the mean and median over seeds; ``--json`` keeps them.
``--oracle`` runs the exact-geometry predictor instead (checks the pipeline: ATE ~ 0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7]; '0,3,5' -> [0, 3, 5]."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def robot_spec(seed: int, frames: int = 0) -> str:
    """The demo's robot with another seed (and, ``frames`` > 0, another number of frames)."""
    from da3_ros.demo import DEFAULT_SPEC

    spec = DEFAULT_SPEC
    for key, value in (("seed", seed), ("frames", frames)):
        if key == "frames" and not frames:
            continue
        spec, n = re.subn(rf"\b{key}=\d+", f"{key}={value}", spec)
        if n != 1:
            raise ValueError(f"the demo's spec has no single {key}= field: {DEFAULT_SPEC}")
    return spec


def da3_alone_ate(weights: str, spec: str, process_res: int = 168, oracle: bool = False) -> dict[str, float]:
    """Run the node's pipeline on camera 0 of the robot ``spec`` (the demo's ``da3`` mode) and score its path."""
    import numpy as np

    from da3_core.stream.frame import Frame
    from da3_core.stream.pipeline import StreamPipeline
    from da3_ros.demo import OVERLAP, WINDOW
    from da3_ros.params import pipeline_config
    from da3_ros.predictors import make_predictor
    from da3_ros.replay import parameter_values, trajectory_accuracy
    from da3_ros.robot_sim import RobotSequence, camera_frame

    values = {"window_size": WINDOW, "overlap": OVERLAP, "process_res": process_res, "voxel_size": 0.0}
    if oracle:
        values.update(predictor="oracle", oracle_sequence=spec, oracle_mode="relative")
    elif weights:
        values["weights"] = weights
    v = parameter_values(values)
    predictor, _, _ = make_predictor(v)
    pipeline = StreamPipeline(predictor, pipeline_config(v))
    robot = RobotSequence(spec)
    for i in range(len(robot)):
        view = robot.view(0, i)
        pipeline.process(Frame(stamp_ns=view.stamp_ns, rgb=view.rgb, K=view.K, frame_id=camera_frame(0)))
    stamps, c2w = pipeline.trajectory()
    if len(stamps) < 3:
        raise RuntimeError(f"{spec}: only {len(stamps)} poses came out (windows of {WINDOW} frames)")
    gt = np.stack([np.linalg.inv(robot.camera_w2c(0, robot.index_of(int(s)))) for s in stamps])
    scores, _, _ = trajectory_accuracy(c2w, gt, is_metric=False)
    return {"ate_rel_extent": float(scores["ate_rel_extent"]), "ate_rmse": float(scores["ate_rmse"]),
            "poses": int(scores["poses"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=[""], help="checkpoint folders ('' = embedded default)")
    ap.add_argument("--seeds", default="0-7", help="robot seeds: '0-7' or '0,3,5' (the demo is seed 0)")
    ap.add_argument("--frames", type=int, default=0, help="frames per robot (0 = the demo's 26)")
    ap.add_argument("--process-res", type=int, default=168, help="network input size (the demo's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oracle", action="store_true", help="exact geometry instead of a network")
    ap.add_argument("--json", type=Path, help="also write the scores here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    names = ["oracle"] if args.oracle else [w or "embedded default" for w in args.weights]
    results: dict[str, dict] = {}
    t0 = time.time()
    for name, weights in zip(names, [""] if args.oracle else args.weights):
        per_seed = {}
        for seed in seeds:
            per_seed[seed] = da3_alone_ate(weights, robot_spec(seed, args.frames), args.process_res, oracle=args.oracle)
            print(f"{name}  seed {seed:3d}: ATE {100 * per_seed[seed]['ate_rel_extent']:6.1f} % of the path extent "
                  f"({per_seed[seed]['ate_rmse']:.3f} m, {per_seed[seed]['poses']} poses)", flush=True)
        ates = np.array([s["ate_rel_extent"] for s in per_seed.values()])
        results[name] = {"seeds": per_seed, "mean": float(ates.mean()), "median": float(np.median(ates))}
    print(f"\nDA3 alone (make demo's headline row), robots {args.seeds}: ATE / path extent")
    print(f"{'weights':<48} {'mean':>8} {'median':>8} {'seed 0':>8}")
    for name, r in results.items():
        first = r["seeds"].get(0, {}).get("ate_rel_extent", float("nan"))
        print(f"{name[-48:]:<48} {100 * r['mean']:7.1f}% {100 * r['median']:7.1f}% {100 * first:7.1f}%")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
