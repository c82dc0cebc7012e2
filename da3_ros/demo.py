"""The main job (``make demo``): a synthetic scene -> a rosbag -> the real node over real topics -> outputs + accuracy.

    python -m da3_ros.demo [--out outputs/demo] [--weights CHECKPOINT] [--bag BAG] [--rate auto]

Steps (each printed with its time):
1. Render a procedural room with exact depth and poses into ``<out>/input`` (mcap: image, camera info, ground-truth
   depth / pose / TF). With ``--bag`` a user's own bag is used instead (no ground truth: no accuracy figures).
2. Start the ``reconstruct`` node in its own process (``use_sim_time``, reliable input) with ``--weights``, else the
   embedded default, else untrained recipe weights (said loudly: the figures are then meaningless).
3. Play the bag with ``bag_player --clock`` (its own process) at a rate the model keeps up with (``--rate auto``
   times one window first, so no window is dropped), while this process records the node's depth, path and map.
4. Call ``~/save_map`` (map.ply, trajectory.tum, depth/), render ``map.png`` (map + estimated and ground-truth paths),
   write depth previews and ``scores.json``, and print depth AbsRel / delta1, trajectory ATE and map F1.

All DDS traffic stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a private ROS_DOMAIN_ID).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SPEC = "kind=room,seed=0,frames=26,path=walk,size=336x252,fov=70,fps=10,t0=1"
WINDOW, OVERLAP = 8, 2


def _env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    profile = Path(__file__).resolve().parents[1] / "config" / "fastdds_local_large_data.xml"
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and profile.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)  # large images over shared memory, UDP on loopback
    prefix = str(Path(sys.prefix))
    env["AMENT_PREFIX_PATH"] = prefix + (os.pathsep + env["AMENT_PREFIX_PATH"] if env.get("AMENT_PREFIX_PATH") else "")
    return env


def _stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def _time_one_window(weights: str, process_res: int, spec: str) -> float:
    """Seconds for one window of the configured model on frames like the demo's (one warm-up, one timed)."""
    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_core.stream.frame import Frame
    from da3_ros.predictors import make_predictor
    from da3_ros.replay import parameter_values

    seq = SyntheticSequence.from_spec(spec)
    pred, _, _ = make_predictor(parameter_values({"weights": weights, "process_res": process_res}))
    frames = [Frame(stamp_ns=seq.stamp_ns(i), rgb=seq.frame(i).rgb, K=seq.K, frame_id="cam")
              for i in range(min(WINDOW, len(seq)))]
    pred.predict(frames)
    t0 = time.perf_counter()
    pred.predict(frames)
    return time.perf_counter() - t0


class Recorder:
    """In-process subscriber to the node's outputs (depth per frame, path, window count)."""

    def __init__(self, domain_env: dict[str, str]) -> None:
        import rclpy
        from da3_ros_interfaces.msg import WindowResult
        from nav_msgs.msg import Path as PathMsg
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")
        os.environ.update({k: domain_env[k] for k in keys if k in domain_env})
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("da3_demo_recorder")
        self.depth: dict[int, np.ndarray] = {}
        self.windows = 0
        self.is_metric = False
        self.path = None
        self.last_msg = time.monotonic()
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Image, "/depth", self._on_depth, reliable)
        self.node.create_subscription(PathMsg, "/path", self._on_path, latched)
        self.node.create_subscription(WindowResult, "/window", self._on_window, reliable)

    def _on_depth(self, msg) -> None:
        from da3_ros.conversions import image_msg_to_array, stamp_to_ns

        self.depth[stamp_to_ns(msg.header.stamp)] = image_msg_to_array(msg)
        self.last_msg = time.monotonic()

    def _on_path(self, msg) -> None:
        self.path = msg
        self.last_msg = time.monotonic()

    def _on_window(self, msg) -> None:
        self.windows += 1
        self.is_metric = bool(msg.is_metric)
        self.last_msg = time.monotonic()

    def wait_for_node(self, node: subprocess.Popen, timeout: float = 60.0) -> None:
        """Spin until the node's depth and window publishers are matched: outputs are reliable but not latched, so
        whatever the node publishes before this recorder is discovered would be lost."""
        end = time.monotonic() + timeout
        while self.node.count_publishers("/depth") < 1 or self.node.count_publishers("/window") < 1:
            if node.poll() is not None:
                raise RuntimeError(f"the node exited early (code {node.returncode})")
            if time.monotonic() > end:
                raise RuntimeError(f"the node's outputs did not appear within {timeout:.0f} s")
            self.spin_for(0.1)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

    def save_map(self, out_dir: Path, timeout: float = 60.0):
        from da3_ros_interfaces.srv import SaveMap

        client = self.node.create_client(SaveMap, "/reconstruct/save_map")
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError("the node's ~/save_map service did not appear")
        future = client.call_async(SaveMap.Request(output_dir=str(out_dir)))  # inside the node's save_map_root
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.1)
        if not future.done():
            raise RuntimeError("save_map did not answer")
        return future.result()

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _accuracy(spec: str, rec: Recorder, map_pts: np.ndarray, traj: tuple[np.ndarray, np.ndarray],
              is_metric: bool) -> tuple[dict, np.ndarray | None]:
    """Scores against the synthetic ground truth (same spec = same scene in every process), computed by the
    offline replay's :func:`~da3_ros.replay.ground_truth_accuracy`."""
    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_core.stream.chaining import unproject_pixels
    from da3_ros.replay import eval_stride, ground_truth_accuracy

    seq = SyntheticSequence.from_spec(spec)

    def subsampled(depth: np.ndarray) -> tuple:
        st = eval_stride(depth.shape)
        return depth.shape, st, depth[::st, ::st]

    pred_depth = {s: subsampled(d) for s, d in rec.depth.items()}
    frames = {int(s): seq.frame(seq.index_of(int(s))) for s in set(rec.depth) | {int(s) for s in traj[0]}}
    gt_depth = {s: subsampled(f.depth) for s, f in frames.items()}
    gt_pose = {s: np.linalg.inv(f.w2c) for s, f in frames.items()}
    frame_K = {s: f.K for s, f in frames.items()}
    return ground_truth_accuracy(traj[0], traj[1], map_pts, pred_depth, gt_depth, gt_pose, frame_K, is_metric,
                                 tol_ns=1e6, f1_threshold=0.05, unproject_pixels=unproject_pixels)


def _model_text(args: argparse.Namespace) -> str:
    from da3_core.weights.embedded import EMBEDDED_DEFAULT, embedded_default_available

    if args.oracle:
        return "geometry oracle (exact synthetic depth and poses: checks the pipeline and the scoring)"
    if args.weights:
        return f"checkpoint {args.weights}"
    if embedded_default_available():
        return (f"embedded default da3-tiny ({EMBEDDED_DEFAULT}; 4.8 M parameters trained 39 min on a CPU: weak, "
                "see its TRAINING.md); pass --weights <official checkpoint> for real results")
    return "UNTRAINED recipe weights: the figures below are meaningless; pass --weights <official checkpoint>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--weights", default="", help="official checkpoint folder or ours ('' = embedded default)")
    parser.add_argument("--bag", help="play this bag instead of the synthetic one (no accuracy figures)")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="synthetic sequence spec")
    parser.add_argument("--process-res", type=int, default=168, help="network input size (the embedded default "
                        "was trained at <= 168 px)")
    parser.add_argument("--rate", default="auto", help="playback rate, or 'auto' (time one window first)")
    parser.add_argument("--oracle", action="store_true", help="exact synthetic geometry instead of the network "
                        "(checks the pipeline and the scoring: the figures must be near perfect)")
    parser.add_argument("--domain-id", type=int, default=int(os.environ.get("DA3_DEMO_DOMAIN_ID", 57)))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = _env(args.domain_id)
    t_start = time.perf_counter()

    from da3_ros import bags

    t0 = time.perf_counter()
    if args.bag:
        bag = Path(args.bag)
        print(f"[1/4] using bag {bag}")
    else:
        bag = bags.write_synthetic_bag(args.spec, out / "input.mcap", overwrite=True)
        print(f"[1/4] rendered {args.spec} into {bag} ({time.perf_counter() - t0:.1f} s)")
    info = bags.bag_info(bag)
    try:
        image_topic = bags.find_image_topic(info)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info_topic = bags.find_camera_info_topic(info, image_topic)
    compressed = info.topics[image_topic].msgtype == bags.COMPRESSED

    t0 = time.perf_counter()
    if args.rate == "auto" and args.oracle:
        rate = 1.0
    elif args.rate == "auto":
        t_window = _time_one_window(args.weights, args.process_res, args.spec)
        stride_s = (WINDOW - OVERLAP) / 10.0  # synthetic fps 10
        rate = min(1.0, stride_s / (4.0 * t_window))  # the node also converts, chains and publishes: keep slack
        print(f"      one {WINDOW}-frame window takes {t_window:.2f} s here: playing at {rate:.2f}x")
    else:
        rate = float(args.rate)
    node_cmd = [sys.executable, "-m", "da3_ros.reconstruct_node", "--ros-args",
                "-p", "use_sim_time:=true", "-p", "input_qos:=reliable", "-p", "input_queue_depth:=50",
                "-p", f"window_size:={WINDOW}", "-p", f"overlap:={OVERLAP}", "-p", f"process_res:={args.process_res}",
                "-p", "voxel_size:=0.0", "-p", "max_pending_windows:=16", "-p", f"save_map_root:={out}",
                "-p", f"use_compressed:={'true' if compressed else 'false'}",
                "-r", f"image:={image_topic}", "-r", f"image/compressed:={image_topic}"]
    if info_topic:
        node_cmd += ["-r", f"camera_info:={info_topic}"]
    if args.weights:
        node_cmd += ["-p", f"weights:={Path(args.weights).resolve()}"]
    if args.oracle:
        node_cmd += ["-p", "predictor:=oracle", "-p", f"oracle_sequence:={args.spec}"]
    (out / "logs").mkdir(exist_ok=True)
    node_log = open(out / "logs" / "node.log", "w")  # noqa: SIM115 - closed in finally
    node = subprocess.Popen(node_cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True)
    player = None
    rec = Recorder(env)
    try:
        print(f"[2/4] started the reconstruct node (pid {node.pid}, log {out / 'logs' / 'node.log'})")
        print(f"      model: {_model_text(args)}")
        rec.wait_for_node(node)
        player_cmd = [sys.executable, "-m", "da3_ros.bag_player", str(bag), "--clock", "--rate", f"{rate:.4f}",
                      "--wait-subscribers", "30", "--topics", image_topic, *([info_topic] if info_topic else [])]
        player = subprocess.Popen(player_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        while player.poll() is None:
            rec.spin_for(0.2)
            if node.poll() is not None:
                raise RuntimeError(f"the node exited early (code {node.returncode}); see {out / 'logs' / 'node.log'}")
        rec.last_msg = time.monotonic()
        while time.monotonic() - rec.last_msg < 3.0 * max(1.0, 1.0 / rate):
            rec.spin_for(0.2)
        print(f"[3/4] played {info.topics[image_topic].count} images at {rate:.2f}x: {len(rec.depth)} depth images, "
              f"{rec.windows} windows out ({time.perf_counter() - t0:.1f} s)")
        result = rec.save_map(out)
        if not result.success:
            raise RuntimeError(result.message)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(player)
        rc = _stop(node)
        rec.close()
        node_log.close()
    if rc not in (0, None):
        print(f"warning: the node exited with code {rc} (see logs/node.log)", file=sys.stderr)

    from da3_core.export.cameras import read_tum
    from da3_core.export.depth_vis import save_depth_png
    from da3_core.export.map_render import save_map_png
    from da3_core.export.ply import read_ply

    map_pts, map_cols = read_ply(result.map_path)
    stamps_s, c2w = read_tum(result.trajectory_path)
    traj = (np.array([int(round(t * 1e9)) for t in stamps_s], dtype=np.int64), c2w)
    for stamp, d in rec.depth.items():
        save_depth_png(out / "previews" / f"{stamp}.png", d, np.isfinite(d))
    scores, gt_path = ({}, None) if args.bag else _accuracy(args.spec, rec, map_pts, traj, rec.is_metric)
    save_map_png(out / "map.png", map_pts, map_cols, path_c2w=traj[1], gt_c2w=gt_path,
                 title="da3-ros: map and camera path (" + ("metric" if rec.is_metric else "relative units") + ")")
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"[4/4] wrote map.ply ({len(map_pts)} points), trajectory.tum ({len(traj[0])} poses), depth/, previews/, "
          f"map.png, scores.json to {out} ({time.perf_counter() - t_start:.0f} s in all)")
    if "depth" in scores:
        d = scores["depth"]
        print(f"      depth   AbsRel {d['abs_rel']:.3f}  delta1 {d['delta1']:.3f}  ({d['alignment']} alignment, "
              f"{d['frames']} frames)")
    if "trajectory" in scores:
        t = scores["trajectory"]
        print(f"      poses   ATE {t['ate_rmse']:.3f} m ({100 * t['ate_rel_extent']:.1f}% of the path extent, "
              f"{t['alignment']} alignment)")
    if "map" in scores:
        m = scores["map"]
        print(f"      map     F1 {m['f1']:.3f} at {m['threshold']:.2f} m (precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
