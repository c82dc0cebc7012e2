"""The main job's headline row (``make demo``'s "DA3 alone": camera path ATE / path extent) over several robots.

    .venv/bin/python bench/demo_ate.py                                      # embedded default, robot seeds 0-7
    .venv/bin/python bench/demo_ate.py --weights outputs/train/condR/final da3_core/assets/default --seeds 0-15

``make demo`` scores one 26-frame robot (seed 0), so one set of weights' ATE swings by several points between
weights of similar held-out scores. This runs the same thing on robots ``--seeds`` (the demo's spec with only the
seed changed: other rooms, other drives) without ROS processes: the node's own pipeline
(:class:`da3_core.stream.pipeline.StreamPipeline` built from the node's parameters, as ``replay`` does) fed the
camera the demo's ``da3`` mode reads (cam0), in the window the weights recommend as the node and the demo run it
(``stream_window`` in their config.json: the embedded default's 6 frames sharing 3; else 8 sharing 2;
``--window`` / ``--overlap`` try others), the node's reference view and process_res 168, no end-of-stream flush
(the live node has none); ATE after Sim(3) alignment over the path's extent, as the demo prints it; and the
demo's depth AbsRel (one median scale for the whole run, as ``make demo`` scores it) next to the same depth
median-scaled per frame: the gap between the two is the chain's scale drift (each window takes its scale from the
frames it shares with the last, so a network whose views are not in one depth scale makes the map grow or shrink
window after window). Prints per weights and seed, then the mean and median over seeds; ``--json`` keeps them.
``--oracle`` runs the exact-geometry predictor instead (checks the pipeline: ATE ~ 0). ``--odometry`` and ``--rig``
score the demo's other modes the same way ("DA3 + odometry"; "3-camera rig, baseline scale": every camera with its
calibrated mount, no odometry, metric, in the demo's rig window of 9 frames sharing 3).
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


def demo_mode_scores(weights: str, spec: str, process_res: int = 168, oracle: bool = False, window: int = 0,
                  overlap: int = -1, refine: str = "auto", odometry: bool = False, depth_refine: str = "off",
                  rig: bool = False, true_motion: bool = False, refine_max_rotation: float = 0.0) -> dict:
    """Run the node's pipeline on camera 0 of the robot ``spec`` (the demo's ``da3`` mode; ``odometry``: its
    ``da3_odometry`` mode, every frame carrying the wheel odometry's camera pose, metric depth scored without
    rescaling as the demo does; ``rig``: its "rig, baseline scale" mode, every camera with its calibrated mount, in
    the demo's rig window, metric) and score camera 0's path and the depth. ``true_motion``: the photometric
    refinement's pair motions are the ground truth's (:func:`true_motion_refiner`), a ceiling for what better cameras
    can give. ``refine_max_rotation`` > 0: the node's ``refine_max_rotation_deg`` (0: its default). Returns the
    scores and ``frames``: per delivered frame of camera 0, (index, true median depth, AbsRel median-scaled on its
    own, its own scale over the run's, AbsRel at the run's scale)."""
    import numpy as np

    from da3_core.eval.depth_metrics import depth_scores, valid_depth_mask
    from da3_core.stream.frame import Frame
    from da3_core.stream.pipeline import StreamPipeline
    from da3_ros.demo import RIG_OVERLAP, RIG_WINDOW
    from da3_ros.params import pipeline_config, rig_window
    from da3_ros.predictors import make_predictor
    from da3_ros.replay import eval_stride, parameter_values, trajectory_accuracy
    from da3_ros.robot_sim import RobotSequence, camera_frame

    values = {"window_size": window, "overlap": overlap, "process_res": process_res, "voxel_size": 0.0,
              "pose_refine": refine, "depth_refine": depth_refine}
    if refine_max_rotation > 0:
        values["refine_max_rotation_deg"] = refine_max_rotation
    if odometry:
        values["pose_source_frame"] = "odom"
    robot = RobotSequence(spec)
    cameras = list(range(robot.n_cameras)) if rig else [0]
    if rig:
        values.update(cameras=",".join(camera_frame(k) for k in cameras), window_size=window or RIG_WINDOW,
                      overlap=overlap if overlap >= 0 else RIG_OVERLAP)
    if oracle:
        values.update(predictor="oracle", oracle_sequence=spec, oracle_mode="relative")
    elif weights:
        values["weights"] = weights
    v = parameter_values(values)
    predictor, _, _ = make_predictor(v)
    pipeline = StreamPipeline(predictor, pipeline_config(v), window=rig_window(v))
    if true_motion:
        if pipeline.refiner is None or rig or odometry:
            raise ValueError("--true-motion replaces the photometric refinement's motions of the 'DA3 alone' mode: "
                             "drop --rig / --odometry and keep --refine auto or photometric")
        pipeline.refiner = true_motion_refiner(robot, pipeline.refiner.cfg)
    pred_depth, gt_depth, index = [], [], []
    for i in range(len(robot)):
        for k in cameras:
            view = robot.view(k, i)
            pose = np.linalg.inv(robot.odom_at_image(i) @ robot.optical_in_base(k)) if odometry else None  # odom->cam
            result = pipeline.process(Frame(stamp_ns=view.stamp_ns, rgb=view.rgb, K=view.K, frame_id=camera_frame(k),
                                            pose_w2c=pose, camera=k,
                                            mount=robot.optical_in_base(k) if rig else None))
            for f in result.new_frames if result is not None else ():
                st, j = eval_stride(f.depth.shape), robot.index_of(f.stamp_ns)  # the demo's subsampling
                gt_depth.append(robot.view(f.camera, j).depth[::st, ::st].reshape(-1))
                pred_depth.append(f.depth[::st, ::st].reshape(-1))
                index.append(j if f.camera == 0 else -1)
    stamps, c2w = pipeline.trajectory()
    if len(stamps) < 3:
        raise RuntimeError(f"{spec}: only {len(stamps)} poses came out (windows of {v['window_size']} frames)")
    gt = np.stack([np.linalg.inv(robot.camera_w2c(0, robot.index_of(int(s)))) for s in stamps])
    metric = bool(pipeline.is_metric)
    scores, _, _ = trajectory_accuracy(c2w, gt, is_metric=metric)
    whole = depth_scores(np.concatenate(pred_depth), np.concatenate(gt_depth), mode="none" if metric else "median")
    per_frame = [depth_scores(p, g, mode="median") for p, g in zip(pred_depth, gt_depth)]
    frames = []  # whole.scale: the run's one scale (1 in metric modes)
    for i, p, g, own in zip(index, pred_depth, gt_depth, per_frame):
        if i >= 0 and own.num_pixels:
            frames.append((i, float(np.median(g[valid_depth_mask(g, p)])), own.abs_rel, own.scale / whole.scale,
                           depth_scores(p * np.float32(whole.scale), g, mode="none").abs_rel))
    return {"ate_rel_extent": float(scores["ate_rel_extent"]), "ate_rmse": float(scores["ate_rmse"]),
            "poses": int(scores["poses"]), "abs_rel": whole.abs_rel,
            "abs_rel_per_frame": float(np.nanmean([s.abs_rel for s in per_frame])), "frames": frames}


def true_motion_refiner(robot, cfg):
    """A photometric refiner whose pair motions are ``robot``'s true ones (a ceiling for better cameras); the class
    is defined here because da3_core is imported only after the thread settings."""
    import numpy as np

    from da3_core.stream.photometric import PairMotion, PhotometricRefiner

    class _TrueMotionRefiner(PhotometricRefiner):
        """The photometric refinement with each pair's motion taken from the robot's ground truth instead of the
        image alignment (the translation put in the chain's units by a's rescaled median depth over its true one);
        b's depth scale is measured as the refinement measures it (a's points seen from b). Bench only."""

        def __init__(self, robot, cfg):
            super().__init__(cfg)
            self.robot, self._frames = robot, []

        def _refine(self, frames, pred, views):
            self._frames = frames
            return super()._refine(frames, pred, views)

        def _align(self, view_a, depth_a, view_b, pred, a, b, scale_a, median_a, given, last) -> PairMotion:
            from da3_core.stream.photometric import _depth_scale, _Points

            fa, fb = self._frames[a], self._frames[b]
            ia, ib = self.robot.index_of(fa.stamp_ns), self.robot.index_of(fb.stamp_ns)
            T = self.robot.camera_w2c(fa.camera, ib) @ np.linalg.inv(self.robot.camera_w2c(fa.camera, ia))
            true_a = self.robot.view(fa.camera, ia).depth
            T[:3, 3] *= median_a / float(np.median(true_a[np.isfinite(true_a) & (true_a > 0)]))
            s = _depth_scale(_Points(depth_a, view_a[2], self.cfg.grid_step), depth_a, view_b[1], T)
            return PairMotion(R=T[:3, :3].copy(), t_rel=T[:3, 3] / median_a,
                              scale_rel=s * float(np.nanmedian(view_b[1])) / median_a, residual=0.0, source="true")

    return _TrueMotionRefiner(robot, cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=[""], help="checkpoint folders ('' = embedded default)")
    ap.add_argument("--seeds", default="0-7", help="robot seeds: '0-7' or '0,3,5' (the demo is seed 0)")
    ap.add_argument("--frames", type=int, default=0, help="frames per robot (0 = the demo's 26)")
    ap.add_argument("--process-res", type=int, default=168, help="network input size (the demo's)")
    ap.add_argument("--window", type=int, default=0, help="frames per window (0 = the weights' recommendation)")
    ap.add_argument("--overlap", type=int, default=-1, help="frames shared by neighbouring windows (-1 = the "
                    "weights' recommendation)")
    ap.add_argument("--refine", default="auto", choices=("auto", "photometric", "off"),
                    help="the node's pose_refine (auto = the weights' recommendation)")
    ap.add_argument("--refine-max-rotation", type=float, default=0.0,
                    help="the node's refine_max_rotation_deg: the refinement's rotation limit (0 = its default)")
    ap.add_argument("--depth-refine", default="off", choices=("multiview", "off"),
                    help="the node's depth_refine (multi-view depth correction of each window's new frames)")
    ap.add_argument("--rig", action="store_true", help="the demo's 'rig, baseline scale' mode: every camera with its "
                    "calibrated mount, no odometry, metric (the rig window's default: the demo's 9 frames sharing 3)")
    ap.add_argument("--odometry", action="store_true", help="the demo's 'DA3 + odometry' mode: windows conditioned on "
                    "the wheel odometry's poses, metric depth scored without rescaling")
    ap.add_argument("--true-motion", action="store_true", help="a ceiling: the photometric refinement's pair "
                    "motions replaced by the robot's true ones (the depth and its chained scale still the network's)")
    ap.add_argument("--per-frame", action="store_true", help="also print, frame by frame: the true median depth, "
                    "the frame's AbsRel median-scaled on its own, its own scale over the run's (the chain's scale "
                    "drift), and its AbsRel at the run's scale (what the demo's figure averages)")
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
            per_seed[seed] = demo_mode_scores(weights, robot_spec(seed, args.frames), args.process_res,
                                              oracle=args.oracle, window=args.window, overlap=args.overlap,
                                              refine=args.refine, odometry=args.odometry,
                                              depth_refine=args.depth_refine, rig=args.rig,
                                              true_motion=args.true_motion,
                                              refine_max_rotation=args.refine_max_rotation)
            sc = per_seed[seed]
            print(f"{name}  seed {seed:3d}: ATE {100 * sc['ate_rel_extent']:6.1f} % of the path extent "
                  f"({sc['ate_rmse']:.3f} m, {sc['poses']} poses); depth AbsRel {sc['abs_rel']:.3f} (per frame "
                  f"{sc['abs_rel_per_frame']:.3f})", flush=True)
            if args.per_frame:
                print("    frame  true median  AbsRel (own scale)  scale / run's  AbsRel (run's scale)")
                for i, median, own, drift, at_run in sc["frames"]:
                    print(f"    {i:5d}  {median:9.2f} m  {own:18.3f}  {drift:13.3f}  {at_run:20.3f}")
        ates = np.array([s["ate_rel_extent"] for s in per_seed.values()])
        results[name] = {"seeds": per_seed, "mean": float(ates.mean()), "median": float(np.median(ates)),
                         "abs_rel_mean": float(np.mean([s["abs_rel"] for s in per_seed.values()])),
                         "abs_rel_per_frame_mean": float(np.mean([s["abs_rel_per_frame"] for s in per_seed.values()]))}
    mode = {(True, True): "3-camera rig + odometry", (True, False): "3-camera rig, baseline scale",
            (False, True): "DA3 + odometry", (False, False): "DA3 alone (make demo's headline row)"}[
        (args.rig, args.odometry)]
    print(f"\n{mode}, robots {args.seeds}: ATE / path extent; depth AbsRel (as the demo scores it: one median "
          "scale per run, none in metric modes; per frame: median-scaled frame by frame)")
    print(f"{'weights':<40} {'mean':>7} {'median':>7} {'seed 0':>7} {'AbsRel':>7} {'/frame':>7}")
    for name, r in results.items():
        first = r["seeds"].get(0, {}).get("ate_rel_extent", float("nan"))
        print(f"{name[-40:]:<40} {100 * r['mean']:6.1f}% {100 * r['median']:6.1f}% {100 * first:6.1f}% "
              f"{r['abs_rel_mean']:7.3f} {r['abs_rel_per_frame_mean']:7.3f}")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
