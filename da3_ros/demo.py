"""The main job (``make demo``): a synthetic robot -> a rosbag -> the real node over real topics, in several modes,
scored side by side against the ground truth.

    python -m da3_ros.demo [--out outputs/demo] [--weights CHECKPOINT] [--modes da3,odometry,da3_odometry,...]
                           [--spec robot:...] [--oracle] [--bag BAG] [--rate auto]

1. Render a robot into ``<out>/input`` (:func:`da3_ros.bags.write_robot_bag`): a base driving through a room with
   three cameras (left / front / right) on /tf_static, wheel odometry with slip, heading drift and noise on /tf and
   /odom, ground truth on separate topics.
2. For each mode, start the ``reconstruct`` node in its own process (``use_sim_time``), play the bag to it with
   ``bag_player --clock`` at a rate the model keeps up with (``--rate auto`` times one window first), record its
   depth and windows, call ``~/save_map`` (into ``<out>/<mode>``, its save_map_root) and render ``map.png``:
   - ``da3``: DA3 poses alone (camera 0: with three cameras the left one, 25 degrees off the heading; the node
     publishes map -> odom, poses are DA3's);
   - ``da3_odometry``: DA3 conditioned on the odometry (``pose_source_frame:=odom``: metric, poses = odometry's);
   - ``rig_odometry``: the three cameras in one window (``cameras:=cam0,cam1,cam2``), conditioned on the odometry;
   - ``rig``: the same, not conditioned: metric scale from the calibrated baselines (needs a network whose poses
     between simultaneous views are right: the embedded default's are not).
   ``odometry`` needs no node: the odometry's own path of camera 0, scored the same way.
3. Print the table (trajectory ATE after Sim(3) alignment, SE(3) for metric runs; depth AbsRel / delta1 after median
   scaling for relative runs, none for metric ones; map F1 at 5 cm) and write ``scores.json`` and ``table.md``.

``--weights`` runs an official checkpoint instead of the embedded default, ``--oracle`` exact synthetic geometry
(checks the pipeline and the scoring), ``--bag`` a user's own single-camera bag in the ``da3`` mode (no scores).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SPEC = ("robot:kind=room,seed=0,frames=26,size=336x252,fov=70,fps=10,t0=1,cameras=3,slip=0.2,slip_t=0.8-1.8,"
                "drift=4,noise=0.03")
RIG_WINDOW, RIG_OVERLAP = 9, 3  # three cameras: 3 time steps per window, one shared
MODES = {"da3": "DA3 alone", "odometry": "odometry alone", "da3_odometry": "DA3 + odometry",
         "rig_odometry": "3-camera rig + odometry", "rig": "3-camera rig, baseline scale"}
F1_THRESHOLD = 0.05
MAX_PENDING = 16  # the node's max_pending_windows: windows queue for the worker, none dropped


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


@dataclass
class Run:
    """One node run of the demo: which cameras it reads, its node parameters and what it recorded."""

    mode: str
    cameras: list[int]
    params: dict[str, str]
    window: int
    overlap: int
    depth: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (camera, stamp) -> depth
    windows: int = 0
    is_metric: bool = False


class Recorder:
    """In-process subscriber to the node's outputs (per-camera depth, windows); one rclpy context for all runs."""

    def __init__(self, domain_env: dict[str, str]) -> None:
        import rclpy

        keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")
        os.environ.update({k: domain_env[k] for k in keys if k in domain_env})
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("da3_demo_recorder")
        self.subs: list = []
        self.run: Run | None = None
        self.last_msg = time.monotonic()

    def start(self, run: Run, depth_topics: dict[int, str]) -> None:
        from da3_ros_interfaces.msg import WindowResult
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.run = run
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for cam, topic in depth_topics.items():
            self.subs.append(self.node.create_subscription(Image, topic, lambda m, c=cam: self._on_depth(c, m),
                                                           reliable))
        self.subs.append(self.node.create_subscription(WindowResult, "/window", self._on_window, reliable))
        self.depth_topics = list(depth_topics.values())

    def stop(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs, self.run = [], None

    def _on_depth(self, camera: int, msg) -> None:
        from da3_ros.conversions import image_msg_to_array, stamp_to_ns

        self.run.depth[(camera, stamp_to_ns(msg.header.stamp))] = image_msg_to_array(msg)
        self.last_msg = time.monotonic()

    def _on_window(self, msg) -> None:
        self.run.windows += 1
        self.run.is_metric = bool(msg.is_metric)
        self.last_msg = time.monotonic()

    def wait_for_node(self, node: subprocess.Popen, timeout: float = 60.0) -> None:
        """Spin until the node's depth and window publishers are matched: outputs are reliable but not latched, so
        whatever the node publishes before this recorder is discovered would be lost."""
        end = time.monotonic() + timeout
        while any(self.node.count_publishers(t) < 1 for t in [*self.depth_topics, "/window"]):
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
        try:
            if not client.wait_for_service(timeout_sec=10.0):
                raise RuntimeError("the node's ~/save_map service did not appear")
            future = client.call_async(SaveMap.Request(output_dir=str(out_dir)))  # inside the node's save_map_root
            end = time.monotonic() + timeout
            while not future.done() and time.monotonic() < end:
                self.rclpy.spin_once(self.node, timeout_sec=0.1)
            if not future.done():
                raise RuntimeError("save_map did not answer")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def single_camera_window(args: argparse.Namespace) -> tuple[int, int]:
    """(frames per window, frames shared) of the one-camera modes: the node's own default for the predictor and
    weights the demo gives it (the weights' config.json ``stream_window``, the embedded default's 6 sharing 3;
    else 8 sharing 2)."""
    from da3_ros.replay import parameter_values

    v = parameter_values({"predictor": "oracle", "oracle_sequence": args.spec} if args.oracle
                         else {"weights": args.weights})
    return v["window_size"], v["overlap"]


def _runs(modes: list[str], n_cameras: int, window: tuple[int, int]) -> list[Run]:
    runs = []
    for mode in modes:
        if mode == "da3":
            runs.append(Run(mode, [0], {}, *window))
        elif mode == "da3_odometry":
            runs.append(Run(mode, [0], {"pose_source_frame": "odom"}, *window))
        elif mode in ("rig", "rig_odometry"):
            cams = list(range(n_cameras))
            params = {"cameras": ",".join(f"cam{k}" for k in cams), "rig_wait_s": "0.3"}
            if mode == "rig_odometry":
                params["pose_source_frame"] = "odom"
            runs.append(Run(mode, cams, params, RIG_WINDOW if n_cameras == 3 else 4 * n_cameras,
                            RIG_OVERLAP if n_cameras == 3 else 2))
    return runs


def _time_one_window(weights: str, process_res: int, robot, views: int) -> float:
    """Seconds for one window of ``views`` frames of the robot's cameras (one warm-up, one timed)."""
    from da3_core.stream.frame import Frame
    from da3_ros.predictors import make_predictor
    from da3_ros.replay import parameter_values

    pred, _, _ = make_predictor(parameter_values({"weights": weights, "process_res": process_res}))
    frames = []
    for i in range(len(robot)):
        for k in range(robot.n_cameras):
            if len(frames) < views:
                v = robot.view(k, i)
                frames.append(Frame(stamp_ns=v.stamp_ns, rgb=v.rgb, K=v.K, frame_id=f"cam{k}"))
    pred.predict(frames)
    t0 = time.perf_counter()
    pred.predict(frames)
    return time.perf_counter() - t0


def expected_windows(run: Run, robot) -> int:
    """Windows the live node makes from the robot's frames (no loss, no end-of-stream flush): the node's own window
    assembler run on the stamps."""
    from da3_core.stream.frame import Frame
    from da3_core.stream.window import SlidingWindow
    from da3_ros.params import rig_window
    from da3_ros.replay import parameter_values

    cams = run.cameras
    assembler = (SlidingWindow(run.window, run.overlap) if len(cams) == 1 else
                 rig_window(parameter_values({"cameras": run.params["cameras"], "window_size": run.window,
                                              "overlap": run.overlap, "rig_wait_s": float(run.params["rig_wait_s"])})))
    rgb = np.zeros((2, 2, 3), np.uint8)
    frames = [Frame(stamp_ns=robot.stamp_ns(i), rgb=rgb, camera=n) for i in range(len(robot)) for n in range(len(cams))]
    return sum(assembler.push(f) is not None for f in frames)


def _play_rate(args, run: Run, robot, n_windows: int) -> float:
    """Real time when the node's window queue (max_pending_windows 16) holds every window of the bag; else a rate at
    which one window's inference keeps up with the bag ('auto' times one first)."""
    if args.rate != "auto":
        return float(args.rate)
    if args.oracle or n_windows <= MAX_PENDING - 2:
        return 1.0
    t_window = _time_one_window(args.weights, args.process_res, robot, run.window)
    n = max(1, len(run.cameras))
    stride_s = (run.window // n - -(-run.overlap // n)) / robot.seq.fps
    rate = min(1.0, stride_s / (1.5 * t_window))
    print(f"      one {run.window}-view window takes {t_window:.2f} s here: playing at {rate:.2f}x")
    return rate


def _node_command(args, run: Run, out: Path, spec: str, bag_info) -> list[str]:
    cmd = [sys.executable, "-m", "da3_ros.reconstruct_node", "--ros-args",
           "-p", "use_sim_time:=true", "-p", "input_qos:=reliable", "-p", "input_queue_depth:=50",
           "-p", f"window_size:={run.window}", "-p", f"overlap:={run.overlap}",
           "-p", f"process_res:={args.process_res}", "-p", "voxel_size:=0.0",
           "-p", f"max_pending_windows:={MAX_PENDING}", "-p", f"save_map_root:={out}",
           "-p", "tf_wait_s:=3.0"]  # a bag: images may wait for a late /tf on a busy machine (no robot is waiting)
    for k, v in run.params.items():
        cmd += ["-p", f"{k}:={v}"]
    if args.weights:
        cmd += ["-p", f"weights:={Path(args.weights).resolve()}"]
    if args.oracle:
        cmd += ["-p", "predictor:=oracle", "-p", f"oracle_sequence:={spec}",
                "-p", f"oracle_mode:={'random_sim3' if run.mode == 'rig' else 'relative'}"]
    if bag_info is not None:  # a user's bag: its image (and CameraInfo) topic onto the node's inputs
        image, info, compressed = bag_info
        cmd += ["-p", f"use_compressed:={'true' if compressed else 'false'}", "-r", f"image:={image}",
                "-r", f"image/compressed:={image}"] + (["-r", f"camera_info:={info}"] if info else [])
        return cmd
    if len(run.cameras) == 1:
        k = run.cameras[0]
        return cmd + ["-r", f"image:=/cam{k}/image_raw", "-r", f"camera_info:=/cam{k}/camera_info"]
    for k in run.cameras:
        cmd += ["-r", f"cam{k}/image:=/cam{k}/image_raw", "-r", f"cam{k}/camera_info:=/cam{k}/camera_info"]
    return cmd


def _run_node(args, run: Run, rec: Recorder, bag: Path, out: Path, env, spec: str, topics: list[str], rate: float,
              bag_info=None, n_windows: int | None = None):
    """One node run: start it, play the bag, wait for its windows (``n_windows``, else until it is quiet), save the
    map; returns the SaveMap response."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    node_log = open(out / "logs" / "node.log", "w")  # noqa: SIM115 - closed in finally
    node = subprocess.Popen(_node_command(args, run, out, spec, bag_info), env=env, stdout=node_log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    player = None
    depth_topics = {0: "/depth"} if len(run.cameras) == 1 else {k: f"/cam{k}/depth" for k in run.cameras}
    rec.start(run, depth_topics)
    try:
        rec.wait_for_node(node)
        player_cmd = [sys.executable, "-m", "da3_ros.bag_player", str(bag), "--clock", "--rate", f"{rate:.4f}",
                      "--wait-subscribers", "30", "--start-delay", "0.5", "--topics", *topics]
        player = subprocess.Popen(player_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        while player.poll() is None:
            rec.spin_for(0.2)
            if node.poll() is not None:
                raise RuntimeError(f"the node exited early (code {node.returncode}); see {out / 'logs' / 'node.log'}")
        rec.last_msg = time.monotonic()
        quiet_s = 60.0 if n_windows else 3.0 * max(1.0, 1.0 / rate)  # windows queue up: wait for all of them
        while time.monotonic() - rec.last_msg < quiet_s and (n_windows is None or run.windows < n_windows):
            rec.spin_for(0.2)
            if node.poll() is not None:
                raise RuntimeError(f"the node exited early (code {node.returncode}); see {out / 'logs' / 'node.log'}")
        result = rec.save_map(out)
        if not result.success:
            raise RuntimeError(result.message)
        return result
    finally:
        rec.stop()
        _stop(player)
        rc = _stop(node)
        node_log.close()
        if rc not in (0, None):
            print(f"warning: the node exited with code {rc} (see {out / 'logs' / 'node.log'})", file=sys.stderr)


def _score(robot, run: Run, map_pts: np.ndarray, traj: tuple[np.ndarray, np.ndarray]) -> tuple[dict, np.ndarray]:
    """Scores of one run against the robot's ground truth (camera 0's path; depth and map of every camera
    it read), and the true path in its map frame for drawing."""
    from da3_core.stream.chaining import unproject_pixels
    from da3_ros.replay import depth_accuracy, eval_stride, gt_cloud, map_f1, trajectory_accuracy

    idx = [robot.index_of(int(s)) for s in traj[0]]
    gt_c2w = np.stack([np.linalg.inv(robot.camera_w2c(0, i)) for i in idx])
    scores, (s, R, t), gt_path = trajectory_accuracy(traj[1], gt_c2w, run.is_metric)
    out = {"trajectory": scores, "is_metric": run.is_metric, "windows": run.windows}
    P, G, cloud = [], [], []
    for (k, stamp), d in sorted(run.depth.items()):
        view = robot.view(k, robot.index_of(stamp))
        st = eval_stride(d.shape)
        g = np.where(np.isfinite(view.depth), view.depth, np.nan)[::st, ::st]
        P.append(d[::st, ::st])
        G.append(g)
        cloud.append(gt_cloud(g, view.K, st, np.linalg.inv(view.w2c), unproject_pixels))
    if P:
        out["depth"] = depth_accuracy(P, G, run.is_metric)
        pred_world = s * np.asarray(map_pts, np.float64) @ R.T + t
        out["map"] = map_f1(pred_world, np.concatenate(cloud), F1_THRESHOLD)
    return out, gt_path


def _odometry_scores(robot) -> tuple[dict, np.ndarray, np.ndarray]:
    """The odometry's own path of camera 0 against the truth (SE(3): odometry is metric)."""
    from da3_ros.replay import trajectory_accuracy

    odo = np.stack([robot.odom_at_image(i) @ robot.optical_in_base(0) for i in range(len(robot))])
    gt = np.stack([np.linalg.inv(robot.camera_w2c(0, i)) for i in range(len(robot))])
    scores, _, gt_path = trajectory_accuracy(odo, gt, True)
    return {"trajectory": scores, "is_metric": True}, odo, gt_path


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def format_table(scores: dict[str, dict]) -> str:
    """Markdown table of the modes' scores, in MODES order."""
    rows = ["| mode | ATE (m) | ATE / path extent | depth AbsRel | depth delta1 | map F1 @ 5 cm | units |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for mode, name in MODES.items():
        if mode not in scores:
            continue
        s = scores[mode]
        t, d, m = s.get("trajectory", {}), s.get("depth", {}), s.get("map", {})
        rows.append(f"| {name} | {_fmt(t.get('ate_rmse'), '.3f')} | {_fmt(t.get('ate_rel_extent'), '.1%')} | "
                    f"{_fmt(d.get('abs_rel'), '.3f')} | {_fmt(d.get('delta1'), '.3f')} | {_fmt(m.get('f1'), '.3f')} | "
                    f"{'metric' if s.get('is_metric') else 'relative'} |")
    return "\n".join(rows)


def _model_text(args: argparse.Namespace) -> str:
    from da3_core.weights.embedded import EMBEDDED_DEFAULT, embedded_default_available

    if args.oracle:
        return "geometry oracle (exact synthetic depth and poses: checks the pipeline and the scoring)"
    if args.weights:
        return f"checkpoint {args.weights}"
    if embedded_default_available():
        return (f"embedded default da3-tiny ({EMBEDDED_DEFAULT}; a small model trained on a CPU: weak, see its "
                "TRAINING.md); pass --weights <official checkpoint> for real results")
    return "UNTRAINED recipe weights: the figures below are meaningless; pass --weights <official checkpoint>"


def _user_bag(args, out: Path, env) -> int:
    """``--bag``: the user's own single-camera bag in the ``da3`` mode (no ground truth, no scores)."""
    from da3_ros import bags

    bag = Path(args.bag)
    info = bags.bag_info(bag)
    try:
        image_topic = bags.find_image_topic(info)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info_topic = bags.find_camera_info_topic(info, image_topic)
    compressed = info.topics[image_topic].msgtype == bags.COMPRESSED
    run = Run("da3", [0], {}, *single_camera_window(args))
    rate = 1.0 if args.rate == "auto" else float(args.rate)
    rec = Recorder(env)
    try:
        print(f"[1/2] playing {bag} to the node ({_model_text(args)})")
        result = _run_node(args, run, rec, bag, out / "da3", env, "", [image_topic, *([info_topic] if info_topic
                                                                                     else [])], rate,
                           bag_info=(image_topic, info_topic, compressed))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        rec.close()
    print(f"[2/2] {result.message}; {run.windows} windows")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--weights", default="", help="official checkpoint folder or ours ('' = embedded default)")
    parser.add_argument("--bag", help="play this single-camera bag instead of the synthetic robot (no scores)")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="synthetic robot spec (da3_ros.robot_sim)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--process-res", type=int, default=168, help="network input size (the embedded default "
                        "was trained at <= 168 px)")
    parser.add_argument("--rate", default="auto", help="playback rate, or 'auto' (time one window first)")
    parser.add_argument("--oracle", action="store_true", help="exact synthetic geometry instead of the network "
                        "(checks the pipeline and the scoring: DA3's figures must be near perfect)")
    parser.add_argument("--domain-id", type=int, default=int(os.environ.get("DA3_DEMO_DOMAIN_ID", 57)))
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"error: unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = _env(args.domain_id)
    if args.bag:
        return _user_bag(args, out, env)

    from da3_core.export.map_render import save_map_png
    from da3_ros import bags
    from da3_ros.robot_sim import RobotSequence

    t_start = time.perf_counter()
    robot = RobotSequence(args.spec)
    bag = bags.write_robot_bag(args.spec, out / "input.mcap", overwrite=True)
    print(f"[1] rendered a robot with {robot.n_cameras} camera(s) and wheel odometry ({robot.spec.to_string()}) into "
          f"{bag} ({time.perf_counter() - t_start:.1f} s)")
    print(f"    model: {_model_text(args)}")
    scores: dict[str, dict] = {}
    runs = _runs(modes, robot.n_cameras, single_camera_window(args))
    rec = Recorder(env) if runs else None
    try:
        for n, run in enumerate(runs, start=2):
            t0 = time.perf_counter()
            n_windows = expected_windows(run, robot)
            rate = _play_rate(args, run, robot, n_windows)
            topics = ["/tf", "/tf_static"] + [f"/cam{k}/{t}" for k in run.cameras for t in ("image_raw",
                                                                                          "camera_info")]
            result = _run_node(args, run, rec, bag, out / run.mode, env, args.spec, topics, rate, n_windows=n_windows)
            if run.windows < n_windows:
                print(f"warning: {MODES[run.mode]}: {run.windows} of {n_windows} windows arrived", file=sys.stderr)
            from da3_core.export.cameras import read_tum
            from da3_core.export.ply import read_ply

            map_pts, map_cols = read_ply(result.map_path)
            stamps_s, c2w = read_tum(result.trajectory_path)
            traj = (np.array([int(round(t * 1e9)) for t in stamps_s], dtype=np.int64), c2w)
            scores[run.mode], gt_path = _score(robot, run, map_pts, traj)
            save_map_png(out / run.mode / "map.png", map_pts, map_cols, path_c2w=traj[1], gt_c2w=gt_path,
                         title=f"da3-ros {MODES[run.mode]}: map and camera 0's path "
                               f"({'metric' if run.is_metric else 'relative units'})")
            print(f"[{n}] {MODES[run.mode]}: {len(run.depth)} depth images, {run.windows} windows, {len(map_pts)} map "
                  f"points -> {out / run.mode} ({time.perf_counter() - t0:.1f} s)")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if rec is not None:
            rec.close()
    if "odometry" in modes:
        scores["odometry"], odo_path, gt_path = _odometry_scores(robot)
        save_map_png(out / "odometry" / "map.png", np.zeros((0, 3)), path_c2w=odo_path, gt_c2w=gt_path,
                     title="odometry alone: camera 0's path (metric)")
    table = format_table(scores)
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")
    print(f"done in {time.perf_counter() - t_start:.0f} s; outputs in {out} (scores.json, table.md, <mode>/map.png)")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
