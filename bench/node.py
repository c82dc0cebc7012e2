"""End-to-end benchmark of the reconstruct node: ``python bench/node.py [--rate 10] [--frames 300] [--size 504x378]``.

Soak: ``python bench/node.py --rate 30 --frames 60 --repeat 300`` streams 18,000 frames (10 minutes at 30 Hz): the 60
distinct frames are rendered once and played ``--repeat`` times with increasing stamps (the node's oracle parses the
same ``repeat`` spec, so its renders are cached too); the table adds the RSS growth over the second half of the run
(target <= 5 %) and the latency p50 / p95 of each tenth of the run (flat = no backlog building up).

Starts the real reconstruct node (``da3_ros.reconstruct_node.main``) as a subprocess, feeds it a rendered synthetic
sequence from an in-process publisher at ``--rate`` Hz, listens to its outputs in-process and prints one table:

- **latency**: per ``depth`` message, ``receive wall time - header.stamp``. The feeder stamps every frame with the
  wall-clock time at which it is due and publishes it at that time (the publish lag, actual - stamp, is printed
  too), so the latency is "image stamped/sent -> depth received". The stamps still name frames of a synthetic
  sequence: the sequence spec given to the node's oracle has ``t0`` = the wall time of frame 0 and ``fps`` =
  ``--rate``, so ``stamp_ns(i)`` is wall clock *and* the oracle's lookup key. Every frame of a window waits for the
  window to fill, so the oldest new frame of a window waits (window_size - overlap - 1) frame periods more than the
  newest: the table gives the latency of all frames and of the newest frame of each window, and the node's own
  ``WindowResult.total_latency_s`` (newest frame stamp -> result message built, node clock = system clock).
- **throughput**: depth frames out / frames published, and the output rate (depth messages/s over the run).
  A live node runs only complete windows (no flush at the end), so the last < window_size - overlap frames are
  never processed; the expected count is printed.
  Depth messages that belong to a received WindowResult but never arrived are counted by their position in the
  window. Seen here: the oldest frames of each window's burst were lost (about 1 in 7). That is consistent with the
  node's output history (KEEP_LAST 5) being shorter than the 6-8 depth images it publishes at once per window.
- **node overhead share** (``--profile``, the default): the node process is this script in ``--node-wrapper`` mode,
  which wraps methods of the real ``ReconstructNode`` with timers and then calls the unmodified
  ``reconstruct_node.main``. Node-side time =
  image + CameraInfo callbacks (``_ingest``: conversion, pairing, window push; ``_on_info``)
  + pipeline work outside the network (``WindowResult.timings``: ``total_s - predict_s`` = chaining, window cloud,
  voxel map, trajectory)
  + publishing (``_on_window``: depth/confidence/camera_info/pose/TF/path/window cloud/WindowResult messages)
  + timers (``_publish_map`` with the map cloud, ``_publish_diagnostics``).
  Share = node-side time / (frames in x frame period 1/rate). Printed as wall time (what the callbacks took, inflated
  by CPU contention on small machines) and as thread CPU time. Not included: rclpy/DDS work outside our callbacks
  (taking and deserialising messages, executor overhead); the "process CPU" line bounds it: node process CPU time
  over the stream minus CPU time spent in ``predict`` (exact for the single-threaded oracle; with a multithreaded
  torch predictor the intra-op threads count as "not predict", so it is only an upper bound there).
  ``--no-profile`` runs ``python -m da3_ros.reconstruct_node`` as is; then only the WindowResult-based figures
  (inference_time_s, total_latency_s) and the process CPU are available.
- **PointCloud2 packing**: ``bench/pointcloud.py``'s timing (best of 5) at ``--pack-sizes`` points, plus the rate
  observed inside the node (every ``points_to_pointcloud2`` call of the window and map clouds; with --profile).
- **memory**: the node process's VmRSS from ``/proc/<pid>/status`` before the first frame and after every
  ``--mem-every`` frames published, and after the last result (the oracle's render cache, the per-frame depth kept for
  ``save_map`` and the voxel map fill up first; a bounded node then stays flat).

Input QoS: the bench sets the node's ``input_qos`` to ``reliable`` by default (``--input-qos sensor_data`` for the
node's own default, best effort). Measured here with the pip Fast DDS and its default configuration: best-effort
images larger than about 512 KiB (504x378 rgb8 = 558 KiB) were mostly lost (26 of 60 frames arrived with a best-effort
feeder, 6 of 60 with a reliable one), while 416x416 (507 KiB) and 320x240 arrived completely; reliable input delivered
every frame. That is consistent with Fast DDS's default 512 KiB shared-memory segment, above which samples go as
fragments over UDP loopback and best effort has no repair.

Predictors: ``--predictor oracle`` (default, exact synthetic geometry, renders ground truth inside ``predict``; runs
anywhere) or ``--predictor da3`` (``--weights`` checkpoint folder, '' = embedded default or untrained recipe weights,
``--variant``, ``--device``, ``--process-res``). DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a
random private ROS_DOMAIN_ID (150-200, or ``--domain-id``). Speed and memory figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------------------
# node side (--node-wrapper): the real node with timers around its callbacks
# --------------------------------------------------------------------------------------------------------------------

# what runs in the node outside the network, timed by the wrapper: top-level callbacks (summed: none calls another)
TOP_CALLBACKS = ("CameraIO._ingest", "CameraIO._on_info", "_poll_pairs", "_publish_map", "_publish_diagnostics",
                 "_republish_map_tf")
# parts of _on_window (reported apart, not added again)
NESTED_CALLS = ("CameraIO.publish_frame", "_plan_tf", "window_result_msg", "make_path", "transform_msgs")


def _owner(rn, name: str):
    """(object holding it, attribute) of a timed name: 'CameraIO.x' a camera method, '_x' a node method, else a
    function the node module imported; (None, '') when this version of the node has no such thing."""
    from da3_ros import camera_io

    if name.startswith("CameraIO."):
        attr = name.split(".", 1)[1]
        return (camera_io.CameraIO, attr) if hasattr(camera_io.CameraIO, attr) else (None, "")
    owner = rn.ReconstructNode if name.startswith("_") else rn
    return (owner, name) if hasattr(owner, name) else (None, "")


def run_node_wrapper(profile_path: str, ros_args: list[str]) -> int:
    from da3_ros import reconstruct_node as rn

    lock = threading.Lock()
    cum: dict[str, list[float]] = {}  # name -> [calls, wall_s, thread_cpu_s]
    pack = [0, 0, 0.0]  # calls, points, seconds
    predict_cpu = [0.0, 0.0]  # thread CPU, wall
    tsdf_of: list = [None]  # the pipeline's TsdfIntegrator (its worker thread's CPU time), when the node has one
    out = open(profile_path, "a", buffering=1)

    def emit(record: dict) -> None:
        with lock:
            out.write(json.dumps(record) + "\n")

    def timed(name: str, fn):
        @functools.wraps(fn)  # executors look at the signature (the events executor passes timer info to takers)
        def wrapper(*a, **k):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                dw, dc = time.perf_counter() - w0, time.thread_time() - c0
                with lock:
                    s = cum.setdefault(name, [0, 0.0, 0.0])
                    s[0] += 1
                    s[1] += dw
                    s[2] += dc
        return wrapper

    def snapshot() -> dict:
        with lock:
            record = {"callbacks": {k: list(v) for k, v in cum.items()}, "pack": list(pack),
                      "predict_cpu_s": predict_cpu[0], "predict_wall_s": predict_cpu[1]}
        if tsdf_of[0] is not None:
            timings = tsdf_of[0].timing_stats()
            record.update(tsdf_cpu_s=timings["tsdf_worker_cpu_ms"] / 1e3, tsdf=tsdf_of[0].stats())
        return record

    orig_pack = rn.points_to_pointcloud2

    def pack_timed(xyz, rgb, header):
        t0 = time.perf_counter()
        msg = orig_pack(xyz, rgb, header)
        dt = time.perf_counter() - t0
        with lock:
            pack[0] += 1
            pack[1] += int(msg.width)
            pack[2] += dt
        return msg

    rn.points_to_pointcloud2 = pack_timed
    cls = rn.ReconstructNode
    for name in TOP_CALLBACKS + NESTED_CALLS:  # methods of the node, of its cameras, functions it calls
        owner, attr = _owner(rn, name)
        if owner is not None:
            setattr(owner, attr, timed(name, getattr(owner, attr)))
    on_window = timed("_on_window", cls._on_window)

    def on_window_logged(self, res):
        on_window(self, res)
        emit({"window": int(res.window_index), "new": len(res.new_frames), "points": int(len(res.points)),
              "timings": {k: float(v) for k, v in res.timings.items()}, "t": time.time(), **snapshot()})

    cls._on_window = on_window_logged
    orig_init = cls.__init__

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        tsdf_of[0] = getattr(self.pipeline, "tsdf", None)
        pred = self.pipeline.predictor
        predict = pred.predict

        def predict_timed(frames):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return predict(frames)
            finally:
                with lock:
                    predict_cpu[0] += time.thread_time() - c0
                    predict_cpu[1] += time.perf_counter() - w0
        pred.predict = predict_timed
        emit({"ready": True, "pid": os.getpid(), "t": time.time()})

    cls.__init__ = init
    try:
        return rn.main([sys.argv[0], *ros_args])
    finally:
        emit({"final": True, "t": time.time(), **snapshot()})
        out.close()


# --------------------------------------------------------------------------------------------------------------------
# bench side
# --------------------------------------------------------------------------------------------------------------------

def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def load_pointcloud_bench():
    spec = importlib.util.spec_from_file_location("bench_pointcloud", REPO / "bench" / "pointcloud.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def setup_env(domain_id: int, log_dir: str) -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_LOG_DIR"] = log_dir
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in paths:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *paths])
    os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))


def expected_frames_out(n_in: int, window: int, overlap: int) -> int:
    if n_in < window:
        return 0
    step = window - overlap
    return window + step * ((n_in - window) // step)


COMPARED = (("host_ms", "node host work, ms/frame (wall)"), ("host_cpu_ms", "node host work, ms/frame (thread CPU)"),
            ("ingest_ms", "  image in (wall)"), ("chain_ms", "  chaining (wall)"),
            ("cloud_ms", "  window cloud (wall)"), ("map_ms", "  voxel map (wall)"), ("loop_ms", "  pose graph (wall)"),
            ("publish_ms", "  publishing (wall)"),
            ("map_timer_ms", "  map cloud timer (wall)"), ("chain_cpu_ms", "  chaining (thread CPU)"),
            ("cloud_cpu_ms", "  window cloud (thread CPU)"), ("map_cpu_ms", "  voxel map (thread CPU)"),
            ("publish_cpu_ms", "  publishing (thread CPU)"), ("tsdf_cpu_ms", "  TSDF thread (thread CPU)"),
            ("host_cpu_with_tsdf_ms", "node host work + TSDF thread, ms/frame (thread CPU)"),
            ("process_cpu_not_predict_pct", "process CPU outside predict, % of frame time"),
            ("latency_p50_ms", "latency p50, ms"), ("latency_p95_ms", "latency p95, ms"),
            ("out_rate_hz", "depth output rate, /s"), ("rss_mb", "node RSS at the end, MB"))


def print_comparison(before: dict, after: dict) -> None:
    """Before / after table of the key figures of two runs (``--json`` of an earlier run as ``--before``)."""
    print("\n| figure | before | after | after / before |\n|---|---:|---:|---:|")
    for key, label in COMPARED:
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            continue
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"| {label.strip()} | {b:.2f} | {a:.2f} | {ratio} |")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--node-wrapper":
        return run_node_wrapper(sys.argv[2], sys.argv[3:])

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10.0, help="input frame rate (Hz)")
    ap.add_argument("--frames", type=int, default=300, help="distinct frames to render and publish")
    ap.add_argument("--repeat", type=int, default=1, help="play the frames this many times (soak runs)")
    ap.add_argument("--size", default="504x378", help="image size WxH")
    ap.add_argument("--kind", default="room", help="synthetic scene kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictor", choices=("oracle", "da3"), default="oracle")
    ap.add_argument("--weights", default="", help="da3: checkpoint folder ('' = embedded default / untrained)")
    ap.add_argument("--variant", default="")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--process-res", type=int, default=504)
    ap.add_argument("--window-size", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra node parameter (repeatable)")
    ap.add_argument("--input-qos", choices=("reliable", "sensor_data"), default="reliable",
                    help="the node's input_qos parameter (see the module docstring for why reliable is the default)")
    ap.add_argument("--feeder-qos", choices=("reliable", "best_effort"), default="reliable",
                    help="QoS of the feeder's image/camera_info publishers")
    ap.add_argument("--subscribe", choices=("measured", "all"), default="measured",
                    help="which node outputs this bench subscribes to: the ones it measures (depth, window, "
                         "diagnostics, map_cloud; the node skips building the others) or all of them")
    ap.add_argument("--mem-every", type=int, default=25, help="sample the node's RSS after every N frames")
    ap.add_argument("--pack-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--startup-s", type=float, default=None,
                    help="time allowed for node start-up before frame 0 is due (default 15 oracle, 120 da3)")
    ap.add_argument("--drain-s", type=float, default=None, help="wait for late results after the last frame "
                    "(default 5 s + 3 windows of frames)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="run the node entry point unwrapped (no callback timings)")
    ap.add_argument("--domain-id", type=int, default=None)
    ap.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the node log")
    ap.add_argument("--json", default=None, help="write the key figures to this JSON file")
    ap.add_argument("--before", default=None, help="JSON of an earlier run (--json): print a before/after table")
    args = ap.parse_args()

    w, _, h = args.size.lower().partition("x")
    width, height = int(w), int(h)
    startup = args.startup_s if args.startup_s is not None else (15.0 if args.predictor == "oracle" else 120.0)
    period = 1.0 / args.rate
    domain = args.domain_id if args.domain_id is not None else random.randint(150, 200)
    tmp = tempfile.mkdtemp(prefix="da3-bench-node-")
    setup_env(domain, tmp)

    # frame i is due (and stamped) at wall time t0 + i / rate; the node's oracle parses the same spec
    t0 = math.floor(time.time() + startup) + 0.5
    spec = (f"kind={args.kind},seed={args.seed},frames={args.frames},size={width}x{height},fps={args.rate!r},"
            f"t0={t0:.3f},repeat={args.repeat}")
    params = {"predictor": args.predictor, "input_qos": args.input_qos, "window_size": str(args.window_size),
              "overlap": str(args.overlap)}
    if args.predictor == "oracle":
        params["oracle_sequence"] = spec
    else:
        params.update(weights=args.weights, variant=args.variant, device=args.device,
                      process_res=str(args.process_res))
    for item in args.param:
        k, _, v = item.partition(":=")
        params[k] = v
    ros_args = ["--ros-args", "--log-level", "warn"]
    for k, v in params.items():
        ros_args += ["-p", f"{k}:={v}"]
    profile_path = os.path.join(tmp, "profile.jsonl")
    if args.profile:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--node-wrapper", profile_path, *ros_args]
    else:
        cmd = [sys.executable, "-m", "da3_ros.reconstruct_node", *ros_args]
    log_path = os.path.join(tmp, "node.log")
    log = open(log_path, "w")
    t_launch = time.time()
    node_proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    pid = node_proc.pid

    print(f"bench/node.py: {args.predictor} predictor, {args.frames} frames x {args.repeat} {width}x{height} at "
          f"{args.rate:g} Hz, "
          f"window {args.window_size} (overlap {args.overlap}), ROS_DOMAIN_ID={domain}, node pid {pid}, "
          f"subscribed to {'every output' if args.subscribe == 'all' else 'the measured outputs'}", flush=True)

    # render while the node starts
    from da3_core.data.synthetic.sequence import SyntheticSequence

    seq = SyntheticSequence.from_spec(spec)
    r0 = time.perf_counter()
    frames = []
    for i in range(args.frames):  # the distinct frames; frame i shows frames[i % args.frames]
        f = seq.frame(i)
        frames.append((f.rgb.tobytes(), f.K.copy()))
    n_total = len(seq)
    render_s = time.perf_counter() - r0

    import rclpy
    from da3_ros_interfaces.msg import WindowResult
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from da3_ros.conversions import make_camera_info, ns_to_stamp, stamp_to_ns

    rclpy.init(args=[])
    node = rclpy.create_node("bench_node")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                     reliability=ReliabilityPolicy.RELIABLE if args.feeder_qos == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT)
    pub_img = node.create_publisher(Image, "image", qos)
    pub_info = node.create_publisher(CameraInfo, "camera_info", qos)
    lock = threading.Lock()
    depth_rx: list[tuple[int, int]] = []  # (stamp_ns, receive wall ns)
    windows: list[dict] = []
    diag: dict[str, str] = {}
    map_rx: list[int] = []  # receive wall ns of map_cloud messages

    def on_depth(msg: Image) -> None:
        now = time.time_ns()
        with lock:
            depth_rx.append((stamp_to_ns(msg.header.stamp), now))

    def on_window(msg: WindowResult) -> None:
        now = time.time_ns()
        with lock:
            windows.append({"index": msg.window_index, "stamp": stamp_to_ns(msg.header.stamp), "rx": now,
                            "inference_s": msg.inference_time_s, "total_latency_s": msg.total_latency_s,
                            "dropped": msg.frames_dropped})

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "reconstruction" in st.name:
                with lock:
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

    out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "depth", on_depth, out_qos)
    node.create_subscription(WindowResult, "window", on_window, out_qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, out_qos)

    def on_map(msg: PointCloud2) -> None:
        with lock:
            map_rx.append(time.time_ns())

    node.create_subscription(PointCloud2, "map_cloud", on_map, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    if args.subscribe == "all":  # every other output too (RViz + a bag recorder): nothing is skipped by the node
        from da3_ros_interfaces.msg import DriftReport
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Path as PathMsg
        from tf2_msgs.msg import TFMessage

        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for mtype, topic, qos in ((Image, "confidence", out_qos), (CameraInfo, "depth/camera_info", out_qos),
                                  (PoseStamped, "pose", out_qos), (PointCloud2, "window_cloud", out_qos),
                                  (DriftReport, "drift", out_qos), (TFMessage, "/tf", out_qos),
                                  (PathMsg, "path", latched)):
            node.create_subscription(mtype, topic, lambda _m: None, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    def stop_node() -> int | None:
        if node_proc.poll() is None:
            os.killpg(pid, signal.SIGINT)
            try:
                node_proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                node_proc.wait(5)
        return node_proc.returncode

    def fail(text: str) -> int:
        print(f"FAILED: {text}", file=sys.stderr)
        stop_node()
        log.close()
        print("--- node log (tail) ---\n" + Path(log_path).read_text()[-4000:], file=sys.stderr)
        print(f"(logs kept in {tmp})", file=sys.stderr)
        executor.shutdown()
        rclpy.try_shutdown()
        return 1

    # ready: the node subscribes to image and publishes depth (its predictor is built before its subscriptions)
    while not (node.count_subscribers("/image") and node.count_publishers("/depth")):
        if node_proc.poll() is not None:
            return fail(f"node exited with {node_proc.returncode} during start-up")
        if time.time() > t0 + 600:
            return fail("node not ready after start-up + 600 s")
        time.sleep(0.05)
    t_ready = time.time()
    first = max(0, math.ceil((t_ready + 0.5 - t0) * args.rate))  # frames already overdue are skipped
    if first:
        print(f"warning: node start-up took {t_ready - t_launch:.1f} s, more than --startup-s {startup:g}; "
              f"skipping the first {first} frames", flush=True)
    if first >= n_total - args.window_size:
        return fail("too few frames left after start-up; raise --startup-s")

    rss: list[tuple[int, int, float]] = [(0, 0, proc_rss_mb(pid))]  # (frames in, depth out, MB)
    lags: list[float] = []
    n_pub = 0
    cpu0 = proc_cpu_s(pid)
    t_first_due = seq.stamp_ns(first) / 1e9
    for i in range(first, n_total):
        stamp_ns = seq.stamp_ns(i)
        delay = stamp_ns / 1e9 - time.time()
        if delay > 0:
            time.sleep(delay)
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id="camera_optical_frame")
        rgb, K = frames[seq.pose_index(i)]
        pub_info.publish(make_camera_info(K, width, height, header))
        pub_img.publish(Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                              step=3 * width, data=rgb))
        lags.append(time.time() - stamp_ns / 1e9)
        n_pub += 1
        if n_pub % args.mem_every == 0:
            with lock:
                n_out = len(depth_rx)
            rss.append((n_pub, n_out, proc_rss_mb(pid)))
        if node_proc.poll() is not None:
            return fail(f"node exited with {node_proc.returncode} while streaming")
    t_last_pub = time.time()

    expected = expected_frames_out(n_pub, args.window_size, args.overlap)
    drain = args.drain_s if args.drain_s is not None else 5.0 + 3 * (args.window_size - args.overlap) * period
    deadline = t_last_pub + drain
    while time.time() < deadline:
        with lock:
            n = len(depth_rx)
        if n >= expected:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    cpu1 = proc_cpu_s(pid)
    t_end = time.time()
    with lock:
        rss.append((n_pub, len(depth_rx), proc_rss_mb(pid)))
        diag_last = dict(diag)
    rc = stop_node()
    log.close()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()

    # --- profile ----------------------------------------------------------------------------------------------------
    prof_windows, prof_final, prof_ready = [], None, None
    if args.profile and os.path.exists(profile_path):
        for line in Path(profile_path).read_text().splitlines():
            rec = json.loads(line)
            if "window" in rec:
                prof_windows.append(rec)
            elif rec.get("final"):
                prof_final = rec
            elif rec.get("ready"):
                prof_ready = rec

    # --- packing (after the node stopped, so it does not compete for the CPU) ---------------------------------------
    pc = load_pointcloud_bench()
    rng = np.random.default_rng(0)
    pack_rows = []
    for n in args.pack_sizes:
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        col = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
        holes = xyz.copy()
        holes[rng.random(n) < 0.1] = np.nan
        pack_rows.append((n, n / pc.best_time(xyz, col, Header(frame_id="map"), 5) / 1e6,
                          n / pc.best_time(holes, col, Header(frame_id="map"), 5) / 1e6))

    stamp_to_i = {seq.stamp_ns(i): i for i in range(n_total)}
    # --- report -----------------------------------------------------------------------------------------------------
    lat = np.array([(rx - st) / 1e9 for st, rx in depth_rx])
    newest_lat = [(w["rx"] - w["stamp"]) / 1e9 for w in windows]
    unknown = sum(1 for st, _ in depth_rx if st not in stamp_to_i)
    n_out = len(depth_rx)
    stream_s = t_last_pub - t_first_due
    out_rate = (n_out - 1) / ((depth_rx[-1][1] - depth_rx[0][1]) / 1e9) if n_out > 2 else float("nan")

    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, note: str = "") -> None:
        rows.append((name, value, note))

    def ms(x: float) -> str:
        return f"{1e3 * x:8.1f} ms"

    row("node start-up (launch -> subscribed)", f"{t_ready - t_launch:8.2f} s",
        f"frames pre-rendered in {render_s:.1f} s meanwhile")
    row("publish lag (actual - stamp)", f"p50 {ms(pct(lags, 50)).strip()} max {ms(max(lags)).strip()}")
    row("frames published / rate", f"{n_pub:8d}", f"at {args.rate:g} Hz over {stream_s:.1f} s")
    row("depth frames received", f"{n_out:8d}",
        f"expected {expected} (complete windows only); out/in {n_out / max(1, n_pub):.3f}")
    row("windows received", f"{len(windows):8d}", f"frames dropped by the node (last WindowResult): "
        f"{windows[-1]['dropped'] if windows else 'n/a'}")
    row("output rate", f"{out_rate:8.2f} /s", f"input {args.rate:g} /s")
    row("latency all frames p50 / p90", f"{ms(pct(lat, 50))}", f"p90 {ms(pct(lat, 90)).strip()}, "
        f"max {ms(float(lat.max()) if len(lat) else float('nan')).strip()} (includes waiting for the window "
        f"to fill: up to {args.window_size - args.overlap - 1} x {1e3 * period:.0f} ms)")
    row("latency newest frame of window p50", f"{ms(pct(newest_lat, 50))}",
        f"p90 {ms(pct(newest_lat, 90)).strip()} (image stamp -> WindowResult received)")
    if windows:
        row("node total_latency_s p50 (WindowResult)", ms(pct([w['total_latency_s'] for w in windows], 50)),
            "newest stamp -> result built, node clock")
        row("inference_time_s p50 (WindowResult)", ms(pct([w['inference_s'] for w in windows], 50)),
            f"per window of {args.window_size} frames; "
            f"{1e3 * pct([w['inference_s'] for w in windows], 50) / (args.window_size - args.overlap):.1f} "
            "ms per new frame")
    if prof_ready and prof_ready.get("pid") != pid:
        row("node pid mismatch", f"{prof_ready.get('pid')}", f"RSS/CPU were sampled from {pid}")
    if windows:
        n_win_frames = sum(min(w["index"], 1) * (args.window_size - args.overlap) + (1 - min(w["index"], 1)) *
                           args.window_size for w in windows)
        got = {st for st, _ in depth_rx}
        pos: dict[int, int] = {}  # missing depth frames by position in their window (0 = newest)
        for w in windows:
            k = stamp_to_i.get(w["stamp"])
            n_new = args.window_size if w["index"] == 0 else args.window_size - args.overlap
            for j in range(n_new if k is not None else 0):
                if k - j >= 0 and seq.stamp_ns(k - j) not in got:
                    pos[j] = pos.get(j, 0) + 1
        row("depth messages missing", f"{n_win_frames - n_out:8d}", "frames of received WindowResults without a "
            "received depth message; by position in window (0 = newest): " +
            (", ".join(f"{j}:{c}" for j, c in sorted(pos.items())) or "none"))
    if unknown:
        row("depth stamps not from the feeder", f"{unknown:8d}", "should be 0")

    frames_in = n_pub
    frame_budget = frames_in * period
    summary: dict[str, float] = {"latency_p50_ms": 1e3 * pct(lat, 50), "latency_p95_ms": 1e3 * pct(lat, 95),
                                 "out_rate_hz": out_rate, "depth_out": n_out, "frames_in": n_pub}
    if prof_windows:
        last = prof_final if prof_final and prof_final.get("callbacks") else prof_windows[-1]
        cb = last["callbacks"]

        def wall(name: str) -> float:
            return cb.get(name, [0, 0.0, 0.0])[1]

        def cpu(name: str) -> float:
            return cb.get(name, [0, 0.0, 0.0])[2]

        # pipeline timings of every processed window (worker thread; wall, and thread CPU where recorded)
        keys = ("predict_s", "total_s", "overhead_s", "chain_s", "cloud_s", "map_s", "overhead_cpu_s", "chain_cpu_s",
                "cloud_cpu_s", "map_cpu_s", "loop_detect_s", "loop_optimize_s", "loop_verify_s")
        tot = {k: sum(pw["timings"].get(k, 0.0) for pw in prof_windows) for k in keys}
        loop_host = tot["loop_detect_s"] + tot["loop_optimize_s"]  # pose graph: places, search, ISAM2 (host work)
        other = tot["overhead_s"] - tot["chain_s"] - tot["cloud_s"] - tot["map_s"] - loop_host
        parts = {  # label -> (wall s, summary key)
            "image in (CameraIO._ingest: convert, pair, window push)": (wall("CameraIO._ingest"), "ingest_ms"),
            "CameraInfo in (CameraIO._on_info)": (wall("CameraIO._on_info"), "info_ms"),
            "pairing / TF wait timer (_poll_pairs)": (wall("_poll_pairs"), "poll_ms"),
            "chaining (pipeline chain_s)": (tot["chain_s"], "chain_ms"),
            "window cloud (pipeline cloud_s)": (tot["cloud_s"], "cloud_ms"),
            "voxel map / submap store (pipeline map_s)": (tot["map_s"], "map_ms"),
            "pose graph + loop detection (pipeline loop_detect_s + loop_optimize_s)": (loop_host, "loop_ms"),
            "rest of the pipeline (trajectory, drift, rebase)": (other, "pipeline_other_ms"),
            "publishing (_on_window)": (wall("_on_window"), "publish_ms"),
            "map cloud timer (_publish_map)": (wall("_publish_map"), "map_timer_ms"),
            "diagnostics timer (_publish_diagnostics)": (wall("_publish_diagnostics"), "diag_ms"),
            "map -> odom timer (_republish_map_tf)": (wall("_republish_map_tf"), "tf_timer_ms"),
        }
        nested = {"depth, confidence, camera_info (CameraIO.publish_frame)": "CameraIO.publish_frame",
                  "TF plan + pose messages (_plan_tf)": "_plan_tf", "path (make_path)": "make_path",
                  "WindowResult (window_result_msg)": "window_result_msg", "TF message (transform_msgs)":
                  "transform_msgs"}
        n_frames_proc = sum(pw["new"] for pw in prof_windows)
        row("predict_s total (network / oracle)", f"{tot['predict_s']:8.2f} s",
            f"{1e3 * tot['predict_s'] / max(1, n_frames_proc):.1f} ms per processed frame; "
            f"{100 * tot['predict_s'] / frame_budget:.1f} % of frame time")
        if any("loop_detect_s" in pw["timings"] for pw in prof_windows):  # a node with the pose graph on
            per_kf = 1e3 / max(1, n_frames_proc)
            worst = max(pw["timings"].get("loop_optimize_s", 0.0) for pw in prof_windows)
            summary["loop_detect_ms_per_keyframe"] = per_kf * tot["loop_detect_s"]
            summary["graph_optimize_ms_per_keyframe"] = per_kf * tot["loop_optimize_s"]
            row("loop detection per keyframe (places, descriptor search)",
                f"{summary['loop_detect_ms_per_keyframe']:8.3f} ms", f"{1e3 * tot['loop_detect_s']:.1f} ms in all")
            row("pose-graph optimisation per keyframe (ISAM2)", f"{summary['graph_optimize_ms_per_keyframe']:8.3f} ms",
                f"slowest window {1e3 * worst:.2f} ms")
            row("loop verification windows (network, not host work)", f"{tot['loop_verify_s']:8.2f} s",
                f"{per_kf * tot['loop_verify_s']:.2f} ms per keyframe")
        cpu_of = {"ingest_ms": cpu("CameraIO._ingest"), "info_ms": cpu("CameraIO._on_info"),
                  "poll_ms": cpu("_poll_pairs"),
                  "publish_ms": cpu("_on_window"), "map_timer_ms": cpu("_publish_map"),
                  "diag_ms": cpu("_publish_diagnostics"), "tf_timer_ms": cpu("_republish_map_tf")}
        if any("chain_cpu_s" in pw["timings"] for pw in prof_windows):  # older nodes record no pipeline CPU time
            cpu_of.update(chain_ms=tot["chain_cpu_s"], cloud_ms=tot["cloud_cpu_s"], map_ms=tot["map_cpu_s"])
        for name, (v, key) in parts.items():
            summary[key] = 1e3 * v / max(1, frames_in)
            note = f"{summary[key]:.2f} ms/frame"
            if key in cpu_of:
                summary[key.replace("_ms", "_cpu_ms")] = 1e3 * cpu_of[key] / max(1, frames_in)
                note += f" (thread CPU {summary[key.replace('_ms', '_cpu_ms')]:.2f})"
            row(f"  {name}", f"{v:8.3f} s", note)
            if name.startswith("publishing"):
                for sub, fn in nested.items():
                    if fn in cb:
                        row(f"    {sub}", f"{wall(fn):8.3f} s", f"{1e3 * wall(fn) / max(1, frames_in):.2f} ms/frame")
        host = sum(v for v, _ in parts.values())
        summary["host_ms"] = 1e3 * host / max(1, frames_in)
        row("NODE HOST WORK per frame (wall, excl. predict)", f"{summary['host_ms']:8.2f} ms",
            f"{100 * host / frame_budget:.2f} % of the {1e3 * period:.0f} ms frame time (target <= 3 ms)")
        # CPU view: callbacks' thread CPU + the pipeline's own thread CPU outside predict (wall when not recorded)
        cb_cpu = sum(cpu(k) for k in TOP_CALLBACKS) + cpu("_on_window")
        pipe_cpu = tot["overhead_cpu_s"] or tot["overhead_s"]
        summary["host_cpu_ms"] = 1e3 * (cb_cpu + pipe_cpu) / max(1, frames_in)
        row("  same, thread CPU", f"{summary['host_cpu_ms']:8.2f} ms", "callbacks and pipeline by thread CPU time "
            "(wall above includes waiting for a core: other processes share this machine)")
        if "tsdf_cpu_s" in last:  # the TSDF map's background thread: off the executor and the inference worker
            summary["tsdf_cpu_ms"] = 1e3 * last["tsdf_cpu_s"] / max(1, frames_in)
            st = last.get("tsdf", {})
            row("  TSDF thread (background: fusion, pose updates)", f"{summary['tsdf_cpu_ms']:8.2f} ms",
                f"thread CPU per frame; {int(st.get('tsdf_integrated', 0))} keyframes fused, "
                f"{int(st.get('tsdf_dropped_frames', 0))} dropped, {int(st.get('tsdf_pose_updates', 0))} pose updates")
            summary["host_cpu_with_tsdf_ms"] = summary["host_cpu_ms"] + summary["tsdf_cpu_ms"]
            row("  host work + TSDF thread, thread CPU", f"{summary['host_cpu_with_tsdf_ms']:8.2f} ms", "")
        if pack_calls := last["pack"][0]:
            row("PointCloud2 packing inside the node", f"{last['pack'][1] / max(last['pack'][2], 1e-12) / 1e6:8.1f} "
                "M pts/s", f"{pack_calls} clouds, {last['pack'][1] / pack_calls:.0f} points on average")
        pred_cpu = last.get("predict_cpu_s", 0.0)
    else:
        pred_cpu = sum(w["inference_s"] for w in windows)  # wall, as reported by the node
    proc_cpu = cpu1 - cpu0
    if math.isfinite(proc_cpu):
        row("process CPU over the stream", f"{proc_cpu:8.2f} s", f"{100 * proc_cpu / (t_end - t_first_due):.0f} % "
            f"of one core over {t_end - t_first_due:.1f} s")
        summary["process_cpu_not_predict_pct"] = 100 * (proc_cpu - pred_cpu) / frame_budget
        row("  process CPU not in predict", f"{summary['process_cpu_not_predict_pct']:8.2f} %",
            "of frame time (target <= 15 %): everything incl. rclpy/DDS/executor (" +
            ("predict by thread CPU" if prof_windows else "predict by inference_time_s wall") + ")")
    for n, ok, nan in pack_rows:
        row(f"PointCloud2 packing {n:,} points", f"{ok:8.1f} M pts/s",
            f"{nan:.1f} M pts/s with 10 % NaN (bench/pointcloud.py timing, best of 5; target >= 50)")
    shown = rss if len(rss) <= 24 else [rss[int(k)] for k in np.linspace(0, len(rss) - 1, 24)]
    rss_text = ", ".join(f"{fi}:{mb:.0f}" for fi, _, mb in shown)
    row("node RSS (frames in: MB)", f"{rss[-1][2]:8.0f} MB", rss_text)
    if len(rss) >= 4:
        mid = rss[len(rss) // 2][2]
        summary["rss_growth_2nd_half_pct"] = 100 * (rss[-1][2] - mid) / mid
        row("  RSS growth, 2nd half of the run", f"{rss[-1][2] - mid:+8.0f} MB",
            f"{summary['rss_growth_2nd_half_pct']:+.1f} % (target <= 5 %); first half {mid - rss[0][2]:+.0f} MB")
    if len(lat) >= 20:  # latency by tenth of the run (receive order): a backlog shows as a rising p95
        tenths = np.array_split(lat, 10)
        summary["latency_p95_first_tenth_ms"] = 1e3 * pct(tenths[0], 95)
        summary["latency_p95_last_tenth_ms"] = 1e3 * pct(tenths[-1], 95)
        row("latency p50 / p95 by tenth of the run", "", "  ".join(f"{1e3 * pct(t, 50):.0f}/{1e3 * pct(t, 95):.0f}"
                                                                   for t in tenths) + " ms")
    if len(map_rx) >= 3:  # map publishing on time: intervals between received map clouds (the timer's rate)
        gaps = np.diff(np.array(map_rx)) / 1e9
        summary["map_interval_max_s"] = float(gaps.max())
        row("map cloud messages received", f"{len(map_rx):8d}", f"interval p50 {pct(gaps, 50):.2f} s, p95 "
            f"{pct(gaps, 95):.2f} s, max {gaps.max():.2f} s (map_publish_rate_hz; sent when the map changed)")
    if diag_last:
        keys = ("frames_in", "frames_out", "windows_out", "worker_dropped", "map_points", "trajectory_len",
                "rejected_unexpected", "inference_errors", "publish_errors", "loop_candidates", "loop_accepted",
                "graph_nodes")
        row("node diagnostics (last)", "", ", ".join(f"{k}={diag_last[k]}" for k in keys if k in diag_last))
    row("node exit code", f"{rc:8d}", "after SIGINT")

    width1 = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width1}}  {value:>16}  {note}")
    summary["rss_mb"] = rss[-1][2]
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.before:
        print_comparison(json.loads(Path(args.before).read_text()), summary)
    if args.keep_logs:
        print(f"\nlogs and profile: {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
