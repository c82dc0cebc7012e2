"""Shared helpers for the reconstruct-node integration tests (real rclpy + Fast DDS over loopback).

- :func:`ros_process`: start ``python -m <module> --ros-args ...`` (the node, the synthetic camera) as a subprocess in
  its own process group with the test's ``ros_env``; stdout/stderr go to files; always stopped (SIGINT, then SIGKILL
  of the whole group) when the ``with`` block ends.
- :class:`Collector`: an rclpy node in the test process (own context, own spin thread) subscribed to every output of
  the node with QoS compatible with what the node publishes; keeps every message; :meth:`Collector.wait_for` polls a
  predicate with a timeout.
- Ground-truth helpers for the synthetic sequences (poses relative to frame 0, points back to world).
- Run as a script (``python node_helpers.py fuzz ...``) it is the fuzzer peer of ``test_node_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NODE_MODULE = "da3_ros.reconstruct_node"
CAMERA_MODULE = "da3_ros.synthetic_camera"
DIAG_SUFFIX = ": reconstruction"

# what the node publishes: topic -> (type name, reliable, depth, latched)
NODE_OUTPUTS = {
    "depth": ("Image", 5, False),
    "confidence": ("Image", 5, False),
    "depth/camera_info": ("CameraInfo", 5, False),
    "pose": ("PoseStamped", 10, False),
    "path": ("Path", 1, True),
    "map_cloud": ("PointCloud2", 1, True),
    "window_cloud": ("PointCloud2", 2, False),
    "window": ("WindowResult", 10, False),
    "drift": ("DriftReport", 10, False),
    "/tf": ("TFMessage", 100, False),
    "/diagnostics": ("DiagnosticArray", 10, False),
}


# --- processes --------------------------------------------------------------------------------------------------------

def _param_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ros_args(params: dict | None = None, remaps: dict | None = None) -> list[str]:
    args = ["--ros-args"]
    for k, v in (params or {}).items():
        args += ["-p", f"{k}:={_param_text(v)}"]
    for k, v in (remaps or {}).items():
        args += ["-r", f"{k}:={v}"]
    return args


class RosProcess:
    """A ``python -m module`` subprocess in its own session (process group); output captured in files."""

    def __init__(self, module: str, env: dict, log_dir: Path, name: str, params: dict | None = None,
                 remaps: dict | None = None, script_args: list[str] | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.out_path, self.err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        cmd = [sys.executable, *(["-m", module] if not module.endswith(".py") else [module])]
        cmd += list(script_args or []) + ros_args(params, remaps)
        self.cmd = cmd
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def output(self) -> str:
        return (f"--- {self.name} stdout ---\n{self.stdout()[-4000:]}\n"
                f"--- {self.name} stderr ---\n{self.stderr()[-6000:]}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only (as a terminal / launch would to the node)."""
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self, timeout: float = 10.0) -> int:
        """SIGINT to the group, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGINT)
            if self.wait(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # anything left in the group (there should be nothing) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.proc.returncode


@contextlib.contextmanager
def ros_process(module: str, env: dict, log_dir: Path, name: str, **kwargs):
    proc = RosProcess(module, env, log_dir, name, **kwargs)
    try:
        yield proc
    finally:
        proc.kill_group()


def node_params(spec: str, **overrides) -> dict:
    """Oracle node parameters for the small test sequences."""
    params = {"predictor": "oracle", "oracle_sequence": spec, "window_size": 6, "overlap": 2,
              "diagnostics_rate_hz": 5.0, "map_publish_rate_hz": 5.0}
    params.update(overrides)
    return params


# --- the collector ----------------------------------------------------------------------------------------------------

def _msg_types():
    from da3_ros_interfaces.msg import DriftReport, WindowResult
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path as PathMsg
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    return {"Image": Image, "CameraInfo": CameraInfo, "PoseStamped": PoseStamped, "Path": PathMsg,
            "PointCloud2": PointCloud2, "WindowResult": WindowResult, "TFMessage": TFMessage,
            "DiagnosticArray": DiagnosticArray, "DriftReport": DriftReport}


class Collector:
    """Subscribes (in this process, own context + spin thread) to the node's outputs and keeps every message.

    ``namespace`` prefixes the relative topics (``/b`` -> ``/b/depth``); ``/tf`` and ``/diagnostics`` are absolute.
    ``topics``: only these of :data:`NODE_OUTPUTS` (default all: every output then has a subscriber).
    Subscriptions are reliable (the node publishes reliably) with deep queues; latched topics are TRANSIENT_LOCAL.
    """

    def __init__(self, env: dict, namespaces: tuple[str, ...] = ("",), name: str = "da3_test_collector",
                 topics: tuple[str, ...] | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        types = _msg_types()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.msgs: dict[str, list] = defaultdict(list)
        self.arrival: dict[str, list[float]] = defaultdict(list)
        self.subs = []
        seen = set()
        for ns in namespaces:
            for topic, (tname, _depth, latched) in NODE_OUTPUTS.items():
                if topics is not None and topic not in topics:
                    continue
                full = topic if topic.startswith("/") else f"{ns}/{topic}" if ns else topic
                if full in seen:
                    continue
                seen.add(full)
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10 if latched else 200,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else
                                 DurabilityPolicy.VOLATILE)
                self.subs.append(self.node.create_subscription(types[tname], full, self._store(full), qos))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="collector-spin", daemon=True)
        self._thread.start()

    def _store(self, topic: str):
        def callback(msg) -> None:
            with self._lock:
                self.msgs[topic].append(msg)
                self.arrival[topic].append(time.monotonic())
        return callback

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down while closing
                if self._stop.is_set():
                    break
                raise

    def get(self, topic: str) -> list:
        with self._lock:
            return list(self.msgs.get(topic, []))

    def last(self, topic: str):
        msgs = self.get(topic)
        return msgs[-1] if msgs else None

    def wait_for(self, predicate, timeout: float, poll: float = 0.05) -> bool:
        """Poll ``predicate()`` until true or ``timeout`` seconds; returns its last truth value."""
        deadline = time.monotonic() + timeout
        while True:
            ok = bool(predicate())
            if ok or time.monotonic() >= deadline:
                return ok
            time.sleep(poll)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.executor.shutdown(timeout_sec=1)
        with contextlib.suppress(Exception):
            self.node.destroy_node()
        self.context.try_shutdown()


@contextlib.contextmanager
def collector(env: dict, **kwargs):
    c = Collector(env, **kwargs)
    try:
        yield c
    finally:
        c.close()


def call_service(col: Collector, srv_type, name: str, request, timeout: float = 10.0):
    """Call service ``name`` from the collector's node (its spin thread completes the future); the response."""
    client = col.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"no response from {name}"
        return future.result()
    finally:
        col.node.destroy_client(client)


# --- message helpers --------------------------------------------------------------------------------------------------

def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def diagnostics(col: Collector, node_name: str = "reconstruct") -> dict[str, str] | None:
    """Key/values of the newest diagnostics status of node ``node_name`` (None when none arrived)."""
    for arr in reversed(col.get("/diagnostics")):
        for st in arr.status:
            if st.name == f"{node_name}{DIAG_SUFFIX}":
                return {kv.key: kv.value for kv in st.values}
    return None


def rejected_total(values: dict[str, str] | None) -> int:
    return sum(int(v) for k, v in (values or {}).items() if k.startswith("rejected_"))


def pose_to_matrix(position, orientation) -> np.ndarray:
    """geometry_msgs position + xyzw orientation (or translation + rotation) -> (4, 4)."""
    x, y, z, w = orientation.x, orientation.y, orientation.z, orientation.w
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def gt_c2w_in_map(seq, index: int, ref: int) -> np.ndarray:
    """Ground-truth camera-to-map pose of frame ``index`` when the map is frame ``ref``'s camera (oracle, scale 1)."""
    return seq.w2c[ref] @ np.linalg.inv(seq.w2c[index])


def map_to_world(points: np.ndarray, seq, ref: int) -> np.ndarray:
    """(N, 3) map points (map = frame ``ref``'s camera) -> world coordinates of the scene."""
    c2w = np.linalg.inv(seq.w2c[ref])
    return points.astype(np.float64) @ c2w[:3, :3].T + c2w[:3, 3]


def nodes_alive(*procs: RosProcess) -> bool:
    return all(p.alive() for p in procs)


# --- fuzzer peer (run as a script) ------------------------------------------------------------------------------------

FUZZ_CAMERA_FRAME = "fuzz_camera_optical"
# raw Image categories that fail conversion: name -> expected diagnostics reason
RAW_CATEGORIES = {
    "enc_yuv422": "unsupported_encoding", "enc_32FC1": "unsupported_encoding", "enc_empty": "unsupported_encoding",
    "enc_mono16": "unsupported_encoding", "enc_bayer": "unsupported_encoding",
    "zero_width": "zero_size", "zero_height": "zero_size", "zero_both": "zero_size",
    "huge_width": "too_large", "huge_height": "too_large", "huge_both": "too_large",
    "step_short": "step_mismatch", "step_zero": "step_mismatch",
    "data_short": "data_length_mismatch", "data_long": "data_length_mismatch", "data_empty": "data_length_mismatch",
    "data_random_len": "data_length_mismatch",
}
COMPRESSED_CATEGORIES = {"random_jpeg": "decode_failed", "random_png": "decode_failed", "empty": "empty_data",
                         "compressed_depth": "unsupported_format", "too_large_png": "too_large"}
# valid images with stamps at / before the anchor frame (always out_of_order / duplicate_stamp), some paired with a
# bad CameraInfo of the same stamp (then also rejected_camera_info_<reason> when the info arrived first)
STAMP_CATEGORIES = {"duplicate": "duplicate_stamp", "out_of_order": "out_of_order",
                    "info_nan_k": "out_of_order", "info_zero_k": "out_of_order", "info_negative_f": "out_of_order",
                    "info_size_mismatch": "out_of_order"}


def malformed_image(category: str, k: int, rng: np.random.Generator):
    from sensor_msgs.msg import Image

    msg = Image(encoding="rgb8", width=16, height=8, step=48, is_bigendian=0)
    n = None  # data length (default step * height)
    if category.startswith("enc_"):
        msg.encoding = {"enc_yuv422": "yuv422", "enc_32FC1": "32FC1", "enc_empty": "", "enc_mono16": "mono16",
                        "enc_bayer": "bayer_rggb8"}[category]
        msg.step = {"enc_yuv422": 32, "enc_32FC1": 64, "enc_mono16": 32}.get(category, 16)
    elif category == "zero_width":
        msg.width, msg.step, n = 0, 0, 0
    elif category == "zero_height":
        msg.height, n = 0, 0
    elif category == "zero_both":
        msg.width = msg.height = msg.step = 0
        n = 0
    elif category.startswith("huge_"):
        if category in ("huge_width", "huge_both"):
            msg.width, msg.step = 100_000, 300_000
        if category in ("huge_height", "huge_both"):
            msg.height = 100_000
        n = 16
    elif category == "step_short":
        msg.step = 40
    elif category == "step_zero":
        msg.step = 0
        n = 48 * 8
    elif category == "data_short":
        n = 100
    elif category == "data_long":
        n = 48 * 8 + 7
    elif category == "data_empty":
        n = 0
    elif category == "data_random_len":
        msg.width, msg.height = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        msg.step = 3 * msg.width
        good = msg.step * msg.height
        n = int(rng.integers(0, 2 * good + 2))
        n = n + 1 if n == good else n
    else:
        raise ValueError(category)
    size = msg.step * msg.height if n is None else n
    msg.data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
    return msg


def malformed_compressed(category: str, rng: np.random.Generator):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format="jpeg")
    if category in ("random_jpeg", "random_png"):
        data = rng.integers(0, 256, size=int(rng.integers(1, 2000)), dtype=np.uint8)
        data[0] = 0  # never a real magic number
        msg.format = "jpeg" if category == "random_jpeg" else "png"
        msg.data = data.tobytes()
    elif category == "empty":
        msg.data = b""
    elif category == "compressed_depth":
        msg.format = "16UC1; compressedDepth png"
        msg.data = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
    elif category == "too_large_png":
        import cv2

        ok, buf = cv2.imencode(".png", np.zeros((1, 5000, 3), np.uint8))
        msg.format, msg.data = "png", buf.tobytes()
    else:
        raise ValueError(category)
    return msg


class FuzzPlan:
    """What the fuzzer sends, in order (one reliable publisher per topic, bounded rate):

    1. raw Images that fail conversion (``RAW_CATEGORIES``, round robin) to ``image``;
    2. CompressedImages that fail decoding (``COMPRESSED_CATEGORIES``) to ``<compressed_ns>/image/compressed``;
    3. the anchor: sequence frame 0 (+ its CameraInfo) to both nodes;
    4. valid raw Images stamped at / before the anchor (``STAMP_CATEGORIES``), some with a bad CameraInfo;
    5. the good frames 1..N-1 of the sequence (+ CameraInfo) to both nodes at 20 Hz.
    Malformed stamps are 50 ms apart and far before the anchor (the spec's t0 must be >= 20 s).
    """

    def __init__(self, node, spec: str, compressed_ns: str, qos, n_raw: int = 6600, n_compressed: int = 3000,
                 n_stamp: int = 360):
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from da3_core.data.synthetic.sequence import SyntheticSequence

        self.node, self.seq = node, SyntheticSequence.from_spec(spec)
        self.n_raw, self.n_compressed, self.n_stamp = n_raw, n_compressed, n_stamp
        self.pub_image = node.create_publisher(Image, "image", qos)
        self.pub_info = node.create_publisher(CameraInfo, "camera_info", qos)
        self.pub_comp = node.create_publisher(CompressedImage, f"{compressed_ns}/image/compressed", qos)
        self.pub_comp_info = node.create_publisher(CameraInfo, f"{compressed_ns}/camera_info", qos)
        self.rng = np.random.default_rng(1234)

    def _header(self, ns: int):
        from std_msgs.msg import Header

        from da3_ros.conversions import ns_to_stamp

        return Header(stamp=ns_to_stamp(ns), frame_id=FUZZ_CAMERA_FRAME)

    def _wait_matched(self, deadline: float) -> bool:
        pubs = (self.pub_image, self.pub_info, self.pub_comp, self.pub_comp_info)
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() >= 1 for p in pubs):
                time.sleep(0.3)  # let the reliable readers settle
                return True
            time.sleep(0.05)
        return False

    def _pace(self, t_start: float, i: int, rate: float) -> None:
        delay = t_start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _good(self, index: int, header):
        from da3_ros.conversions import make_camera_info
        from da3_ros.synthetic_camera import rgb_image_msg

        frame = self.seq.frame(index)
        h, w = self.seq.hw
        return make_camera_info(frame.K, w, h, header), rgb_image_msg(frame.rgb, header)

    def _jpeg(self, index: int, header):
        import cv2
        from sensor_msgs.msg import CompressedImage

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(self.seq.frame(index).rgb[..., ::-1]))
        return CompressedImage(header=header, format="jpeg", data=buf.tobytes())

    def _send_good(self, index: int) -> None:
        header = self._header(self.seq.stamp_ns(index))
        info, image = self._good(index, header)
        self.pub_info.publish(info)
        self.pub_comp_info.publish(info)
        self.pub_image.publish(image)
        self.pub_comp.publish(self._jpeg(index, header))

    def run(self, rate: float, deadline: float) -> dict:
        from sensor_msgs.msg import CameraInfo  # noqa: F401 - type of the bad infos (built from good ones)

        out: dict = {"raw": defaultdict(int), "compressed": defaultdict(int), "stamp": defaultdict(int),
                     "bad_infos": 0, "good_frames": 0}
        if not self._wait_matched(deadline):
            out["error"] = "subscribers of the nodes never matched"
            return out
        base = self.seq.stamp_ns(0) - 19_000_000_000  # 1 s after t=0 when t0 = 20 s
        t_start, i = time.monotonic(), 0
        raw_names = list(RAW_CATEGORIES)
        for k in range(self.n_raw):  # 1. conversion failures
            cat = raw_names[k % len(raw_names)]
            msg = malformed_image(cat, k, self.rng)
            msg.header = self._header(base + k * 1_000_000)
            self.pub_image.publish(msg)
            out["raw"][cat] += 1
            i += 1
            self._pace(t_start, i, rate)
        comp_names = list(COMPRESSED_CATEGORIES)
        for k in range(self.n_compressed):  # 2. decode failures
            cat = comp_names[k % len(comp_names)]
            msg = malformed_compressed(cat, self.rng)
            msg.header = self._header(base + k * 1_000_000)
            self.pub_comp.publish(msg)
            out["compressed"][cat] += 1
            i += 1
            self._pace(t_start, i, rate)
        self._send_good(0)  # 3. the anchor
        out["good_frames"] += 1
        time.sleep(0.2)
        anchor = self.seq.stamp_ns(0)
        info0, image0 = self._good(0, self._header(anchor))
        stamp_names = list(STAMP_CATEGORIES)
        # 4. duplicate / out-of-order stamps, bad CameraInfo: in chunks (the node keeps the last 64 CameraInfos),
        # each chunk's infos first so that every image finds its info of the same stamp
        for chunk in range(0, self.n_stamp, 30):
            batch = []
            for k in range(chunk, min(chunk + 30, self.n_stamp)):
                cat = stamp_names[k % len(stamp_names)]
                ns = anchor if cat == "duplicate" else anchor - 50_000_000 * (k + 1)
                header = self._header(ns)
                if cat.startswith("info_"):
                    info = self._good(0, header)[0]
                    K = np.array(info.k, dtype=np.float64)
                    if cat == "info_nan_k":
                        K[[0, 4]] = np.nan
                    elif cat == "info_zero_k":
                        K[:] = 0.0
                    elif cat == "info_negative_f":
                        K[0] = -abs(K[0])
                    else:
                        info.width, info.height = 2 * info.width, info.height + 7
                    info.k = K.tolist()
                    self.pub_info.publish(info)
                    out["bad_infos"] += 1
                batch.append((cat, header))
            time.sleep(0.3)
            for cat, header in batch:
                image0.header = header
                self.pub_image.publish(image0)
                out["stamp"][cat] += 1
                i += 1
                self._pace(t_start, i, rate)
        out["fuzz_s"] = time.monotonic() - t_start
        time.sleep(0.3)
        for index in range(1, len(self.seq)):  # 5. good frames
            if time.monotonic() > deadline:
                out["error"] = "deadline while sending good frames"
                break
            self._send_good(index)
            out["good_frames"] += 1
            time.sleep(0.05)
        out["malformed_raw_images"] = sum(out["raw"].values()) + sum(out["stamp"].values())
        out["malformed_compressed_images"] = sum(out["compressed"].values())
        out["malformed_total"] = (out["malformed_raw_images"] + out["malformed_compressed_images"]
                                  + out["bad_infos"])
        out["done"] = True
        return out


def _fuzz_main(argv: list[str]) -> int:
    """The fuzzer peer: ``python node_helpers.py fuzz --spec SPEC --summary FILE [--rate R] [--timeout S]``."""
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["fuzz"])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--summary", required=True, help="JSON file written with what was sent")
    parser.add_argument("--rate", type=float, default=1000.0, help="malformed messages per second")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--compressed-ns", default="/b", help="namespace of the compressed-input node")
    args, _ = parser.parse_known_args(argv)  # --ros-args ... are rclpy's

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    deadline = time.monotonic() + args.timeout
    summary: dict = {}
    try:
        with rclpy.init():
            node = rclpy.create_node("da3_test_fuzzer")
            plan = FuzzPlan(node, args.spec, args.compressed_ns,
                            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2000,
                                       reliability=ReliabilityPolicy.RELIABLE))
            summary = plan.run(args.rate, deadline)
            time.sleep(1.0)  # let the reliable writers deliver the tail before the process goes
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        summary["interrupted"] = True
    Path(args.summary).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(_fuzz_main(sys.argv[1:]))
