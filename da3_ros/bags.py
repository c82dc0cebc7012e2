"""rosbag2 bags without a ROS install, through the PyPI package ``rosbags``: write, read, inspect.

No rclpy here. Two kinds of message objects meet in this module:
- ``rosbags`` dataclasses (what :func:`read_messages` yields, deserialised with the type definitions stored in the
  bag, so Humble-typed bags read as they are). Their field names equal the ROS 2 ones, so the converters in
  :mod:`da3_ros.conversions` (``image_to_rgb``, ``compressed_to_rgb``, ``camera_info_to_K``, ``stamp_to_ns``)
  accept them directly (duck typing: they only read attributes and ``data`` buffers).
- ROS 2 Python message classes (``sensor_msgs.msg.Image`` ... from the conversions' builders, which import message
  packages only). :meth:`BagWriter.write` turns them into ``rosbags`` objects with :func:`to_rosbags` (one generic,
  field-by-field conversion), so every message we write is built by the same code the live node publishes with.

Layout: a bag is a directory (``metadata.yaml`` + one ``.mcap`` or ``.db3`` file). :func:`bag_dir` maps an output
name like ``bags/room.mcap`` to the directory ``bags/room`` with storage ``mcap`` (``.db3`` -> sqlite3).
Messages are written with log time = header stamp, so replay order = acquisition order.

Topics of a synthetic bag (:func:`write_synthetic_bag`; names in :data:`SYNTHETIC_TOPICS`):
``/camera/image_raw`` (rgb8), ``/camera/camera_info``, ``/camera/depth_gt`` (32FC1 metres, NaN = sky / invalid),
``/camera/pose_gt`` (PoseStamped, camera-to-world in ``world_gt``), ``/tf`` (``world_gt`` -> ``camera_gt``; separate
names so they never collide with the node's ``map`` -> camera TF).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["robot_topics", "write_robot_bag",
           "SYNTHETIC_TOPICS", "GT_WORLD_FRAME", "GT_CAMERA_FRAME", "CAMERA_FRAME", "BagWriter", "BagInfo",
           "TopicInfo", "bag_dir", "typestore", "to_rosbags", "msgtype_of", "write_synthetic_bag",
           "write_folder_bag", "parse_intrinsics", "read_messages", "read_raw", "bag_info", "find_image_topic",
           "find_camera_info_topic", "find_gt_topics"]

SYNTHETIC_TOPICS = {"image": "/camera/image_raw", "camera_info": "/camera/camera_info",
                    "depth_gt": "/camera/depth_gt", "pose_gt": "/camera/pose_gt", "tf": "/tf"}
GT_WORLD_FRAME = "world_gt"
GT_CAMERA_FRAME = "camera_gt"
CAMERA_FRAME = "camera_optical_frame"
STORAGES = ("mcap", "sqlite3")
_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
WINDOW_RESULT_MSG = Path(__file__).resolve().parents[1] / "msg" / "msg" / "WindowResult.msg"
WINDOW_RESULT_TYPE = "da3_ros_interfaces/msg/WindowResult"


@lru_cache(maxsize=1)
def typestore():
    """The ``rosbags`` typestore used for writing (ROS 2 Kilted definitions + our WindowResult when available)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    if WINDOW_RESULT_MSG.is_file():
        store.register(get_types_from_msg(WINDOW_RESULT_MSG.read_text(), WINDOW_RESULT_TYPE))
    return store


def bag_dir(out: str | Path, storage: str | None = None) -> tuple[Path, str]:
    """(bag directory, storage id). A ``.mcap`` / ``.db3`` suffix is stripped and chooses the storage unless
    ``storage`` is given; the default storage is mcap."""
    out = Path(out)
    suffix_storage = _SUFFIX.get(out.suffix.lower())
    if suffix_storage is not None:
        out = out.with_suffix("")
    storage = storage or suffix_storage or "mcap"
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return out, storage


# --- ROS 2 Python messages -> rosbags dataclasses ------------------------------------------------------------------

_PRIMITIVE_DTYPES = {"boolean": np.bool_, "octet": np.uint8, "char": np.uint8, "uint8": np.uint8, "int8": np.int8,
                     "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
                     "uint64": np.uint64, "int64": np.int64, "float": np.float32, "double": np.float64}
_ARRAY_RE = re.compile(r"^(?:sequence<(?P<seq>[^,>]+)(?:,\s*\d+)?>|(?P<arr>[^\[]+)\[\d*\])$")


def msgtype_of(msg: Any) -> str:
    """'pkg/msg/Name' of a ROS 2 Python message or a rosbags dataclass."""
    name = getattr(msg, "__msgtype__", None)
    if name:
        return name
    pkg = type(msg).__module__.split(".")[0]
    return f"{pkg}/msg/{type(msg).__name__}"


def to_rosbags(msg: Any) -> Any:
    """Convert a ROS 2 Python message (rosidl-generated class) into the equal ``rosbags`` dataclass (recursive).
    rosbags objects pass through unchanged."""
    if hasattr(msg, "__msgtype__"):
        return msg
    store = typestore()
    cls = store.types[msgtype_of(msg)]
    values = {}
    for name, ftype in msg.get_fields_and_field_types().items():
        value = getattr(msg, name)
        m = _ARRAY_RE.match(ftype)
        base = (m.group("seq") or m.group("arr")) if m else ftype
        if m and base in _PRIMITIVE_DTYPES:
            values[name] = np.array(value, dtype=_PRIMITIVE_DTYPES[base])
        elif m:
            values[name] = [to_rosbags(v) if hasattr(v, "get_fields_and_field_types") else v for v in value]
        elif hasattr(value, "get_fields_and_field_types"):
            values[name] = to_rosbags(value)
        else:
            values[name] = value
    return cls(**values)


# --- writing -------------------------------------------------------------------------------------------------------

class BagWriter:
    """Write messages (ROS 2 Python or rosbags objects) to a new rosbag2; one connection per topic.

    ``with BagWriter("out/run.mcap") as bag: bag.write("/camera/image_raw", stamp_ns, msg)``.
    """

    def __init__(self, out: str | Path, storage: str | None = None, overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path, self.storage = bag_dir(out, storage)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"bag {self.path} exists (remove it or pass overwrite)")
            import shutil

            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise TypeError(f"topic {topic} already has type {conn.msgtype}, not {msgtype}")
        return conn

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` as CDR and write it with log time ``stamp_ns``."""
        rb = to_rosbags(msg)
        conn = self.connection(topic, rb.__msgtype__)
        self._writer.write(conn, int(stamp_ns), typestore().serialize_cdr(rb, rb.__msgtype__))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        self._writer.write(self.connection(topic, msgtype), int(stamp_ns), bytes(data))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _header(stamp_ns: int, frame_id: str):
    from std_msgs.msg import Header

    from da3_ros.conversions import ns_to_stamp

    return Header(stamp=ns_to_stamp(int(stamp_ns)), frame_id=frame_id)


def _rgb_image(rgb: np.ndarray, header):
    from sensor_msgs.msg import Image

    h, w, _ = rgb.shape
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
                 data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


def write_synthetic_bag(spec: str, out: str | Path, storage: str | None = None, topics: dict[str, str] | None = None,
                        frame_id: str = CAMERA_FRAME, ground_truth: bool = True, overwrite: bool = False) -> Path:
    """Render a :class:`~da3_core.data.synthetic.sequence.SyntheticSequence` (``spec`` string) into a bag.

    Header stamps = the sequence's stamps = bag log times. ``topics`` overrides names of
    :data:`SYNTHETIC_TOPICS` (a value of '' leaves that topic out). Returns the bag directory.
    """
    from tf2_msgs.msg import TFMessage

    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_ros.conversions import c2w_to_pose_stamped, c2w_to_transform, depth_to_image_msg, make_camera_info

    names = dict(SYNTHETIC_TOPICS, **(topics or {}))
    seq = SyntheticSequence.from_spec(spec)
    h, w = seq.hw
    with BagWriter(out, storage, overwrite=overwrite) as bag:
        for i in range(len(seq)):
            fr = seq.frame(i)
            stamp = seq.stamp_ns(i)
            header = _header(stamp, frame_id)
            c2w = np.linalg.inv(seq.w2c[seq.pose_index(i)])
            if names["image"]:
                bag.write(names["image"], stamp, _rgb_image(fr.rgb, header))
            if names["camera_info"]:
                bag.write(names["camera_info"], stamp, make_camera_info(seq.K, w, h, header))
            if not ground_truth:
                continue
            if names["depth_gt"]:
                bag.write(names["depth_gt"], stamp, depth_to_image_msg(fr.depth, _header(stamp, GT_CAMERA_FRAME)))
            if names["pose_gt"]:
                bag.write(names["pose_gt"], stamp, c2w_to_pose_stamped(c2w, _header(stamp, GT_WORLD_FRAME)))
            if names["tf"]:
                tf = c2w_to_transform(c2w, _header(stamp, GT_WORLD_FRAME), GT_CAMERA_FRAME)
                bag.write(names["tf"], stamp, TFMessage(transforms=[tf]))
        return bag.path


def robot_topics(n_cameras: int) -> dict[str, str]:
    """Topic names of a robot bag (:func:`write_robot_bag`): ``image<k>``, ``camera_info<k>``, ``depth_gt<k>``,
    ``pose_gt<k>`` per camera, ``odom``, ``tf``, ``tf_static``, ``base_gt``."""
    out = {"odom": "/odom", "tf": "/tf", "tf_static": "/tf_static", "base_gt": "/ground_truth/base_pose"}
    for k in range(n_cameras):
        out.update({f"image{k}": f"/cam{k}/image_raw", f"camera_info{k}": f"/cam{k}/camera_info",
                    f"depth_gt{k}": f"/cam{k}/depth_gt", f"pose_gt{k}": f"/cam{k}/pose_gt"})
    return out


def write_robot_bag(spec: str, out: str | Path, storage: str | None = None, overwrite: bool = False,
                    camera_stops: dict[int, int] | None = None) -> Path:
    """Record a synthetic robot (:class:`da3_ros.robot_sim.RobotSequence`, ``spec`` 'robot:...') as a robot records:
    ``/tf`` odom -> base_link and ``/odom`` (nav_msgs/Odometry) from the wheel-like odometry (slip, drift, noise) at
    its own rate; ``/tf_static`` base_link -> cam<k>_link -> cam<k>_optical_frame (once, latched when played);
    per camera ``/cam<k>/image_raw`` (rgb8) + ``camera_info`` stamped alike; ground truth on separate topics only:
    ``/cam<k>/depth_gt`` (32FC1 metres), ``/cam<k>/pose_gt`` (camera-to-world in ``world_gt``) and
    ``/ground_truth/base_pose`` (base_link in ``world_gt``). Odometry at an image stamp is written before the images.
    ``camera_stops``: {camera: image index} a camera stops publishing from (a camera that fails mid-run).
    Returns the bag directory."""
    from geometry_msgs.msg import PoseWithCovariance, Twist, TwistWithCovariance
    from nav_msgs.msg import Odometry
    from tf2_msgs.msg import TFMessage

    from da3_core.geometry.rigid import invert_rigid
    from da3_ros.conversions import (
        c2w_to_pose,
        c2w_to_pose_stamped,
        c2w_to_transform,
        depth_to_image_msg,
        make_camera_info,
    )
    from da3_ros.robot_sim import BASE_FRAME, ODOM_FRAME, OPTICAL_FROM_LINK, RobotSequence, camera_frame, camera_link

    robot = RobotSequence(spec)
    names = robot_topics(robot.n_cameras)
    h, w = robot.hw
    odom_stamps, odom = robot.odom_stamps_ns, robot.odometry
    image_at = {robot.stamp_ns(i): i for i in range(len(robot))}
    dt = 1.0 / robot.odom_hz
    with BagWriter(out, storage, overwrite=overwrite) as bag:
        statics = []
        for k in range(robot.n_cameras):
            statics.append(c2w_to_transform(robot.mounts[k], _header(odom_stamps[0], BASE_FRAME), camera_link(k)))
            statics.append(c2w_to_transform(OPTICAL_FROM_LINK, _header(odom_stamps[0], camera_link(k)),
                                            camera_frame(k)))
        bag.write(names["tf_static"], int(odom_stamps[0]), TFMessage(transforms=statics))
        for j, stamp in enumerate(int(s) for s in odom_stamps):
            T = odom[j]
            step = invert_rigid(odom[j - 1]) @ T if j else np.eye(4)
            twist = Twist()
            twist.linear.x, twist.linear.y, twist.linear.z = (float(v / dt) for v in step[:3, 3])
            twist.angular.z = float(np.arctan2(step[1, 0], step[0, 0]) / dt)
            bag.write(names["tf"], stamp, TFMessage(transforms=[c2w_to_transform(T, _header(stamp, ODOM_FRAME),
                                                                                 BASE_FRAME)]))
            bag.write(names["odom"], stamp, Odometry(header=_header(stamp, ODOM_FRAME), child_frame_id=BASE_FRAME,
                                                     pose=PoseWithCovariance(pose=c2w_to_pose(T)),
                                                     twist=TwistWithCovariance(twist=twist)))
            i = image_at.get(stamp)
            if i is None:
                continue
            bag.write(names["base_gt"], stamp, c2w_to_pose_stamped(robot.base_in_world(i),
                                                                   _header(stamp, GT_WORLD_FRAME)))
            for k in range(robot.n_cameras):
                if camera_stops and i >= camera_stops.get(k, len(robot)):
                    continue
                view = robot.view(k, i)
                header = _header(stamp, camera_frame(k))
                bag.write(names[f"image{k}"], stamp, _rgb_image(view.rgb, header))
                bag.write(names[f"camera_info{k}"], stamp, make_camera_info(view.K, w, h, header))
                bag.write(names[f"depth_gt{k}"], stamp, depth_to_image_msg(view.depth,
                                                                           _header(stamp, GT_CAMERA_FRAME)))
                bag.write(names[f"pose_gt{k}"], stamp, c2w_to_pose_stamped(invert_rigid(view.w2c),
                                                                           _header(stamp, GT_WORLD_FRAME)))
        return bag.path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def parse_intrinsics(value: str | Path | Sequence[float]) -> np.ndarray:
    """(3, 3) K from 'fx,fy,cx,cy', a file holding 4 or 9 numbers (whitespace / comma separated, '#' comments) or
    a JSON object with fx, fy, cx, cy (or "K": 9 numbers), or a sequence of 4 / 9 numbers."""
    if isinstance(value, (str, Path)) and Path(value).is_file():
        text = Path(value).read_text()
        if text.lstrip().startswith("{"):
            obj = json.loads(text)
            nums = obj["K"] if "K" in obj else [obj["fx"], obj["fy"], obj["cx"], obj["cy"]]
        else:
            text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
            nums = [float(v) for v in re.split(r"[\s,]+", text.strip()) if v]
    elif isinstance(value, str):
        nums = [float(v) for v in value.split(",") if v.strip()]
    else:
        nums = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    nums = [float(v) for v in np.asarray(nums, dtype=np.float64).reshape(-1)]
    if len(nums) == 4:
        fx, fy, cx, cy = nums
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if len(nums) == 9:
        return np.asarray(nums, dtype=np.float64).reshape(3, 3)
    raise ValueError(f"intrinsics need 4 values (fx, fy, cx, cy) or 9 (row-major K), got {len(nums)}")


def write_folder_bag(folder: str | Path, intrinsics: str | Path | Sequence[float], fps: float, out: str | Path,
                     storage: str | None = None, t0_s: float = 1.0, compressed: bool = False,
                     frame_id: str = CAMERA_FRAME, topic: str = "/camera/image_raw",
                     info_topic: str = "/camera/camera_info", overwrite: bool = False) -> Path:
    """Images of ``folder`` (sorted by name) -> Image rgb8 (or, with ``compressed``, the files' own bytes as
    CompressedImage on ``<topic>/compressed``) + CameraInfo at ``fps`` from ``t0_s``. Returns the bag directory."""
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    from da3_ros.conversions import make_camera_info

    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    K = parse_intrinsics(intrinsics)
    with BagWriter(out, storage, overwrite=overwrite) as bag:
        for i, path in enumerate(files):
            stamp = int(round(t0_s * 1e9)) + int(round(i * 1e9 / fps))
            header = _header(stamp, frame_id)
            with PILImage.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
            h, w = rgb.shape[:2]
            if compressed and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
                bag.write(topic.rstrip("/") + "/compressed", stamp,
                          CompressedImage(header=header, format=fmt, data=path.read_bytes()))
            else:
                bag.write(topic, stamp, _rgb_image(rgb, header))
            bag.write(info_topic, stamp, make_camera_info(K, w, h, header))
        return bag.path


# --- reading -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    path: Path
    topics: dict[str, TopicInfo]
    start_ns: int
    end_ns: int
    message_count: int

    def of_type(self, msgtype: str) -> list[str]:
        return sorted(t.name for t in self.topics.values() if t.msgtype == msgtype)


def _reader(path: str | Path):
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if path.suffix.lower() in _SUFFIX and not path.exists() and path.with_suffix("").is_dir():
        path = path.with_suffix("")  # the name given to the writer
    if path.is_file() and path.parent.joinpath("metadata.yaml").is_file():
        path = path.parent
    return AnyReader([path], default_typestore=typestore())


def bag_info(path: str | Path) -> BagInfo:
    with _reader(path) as reader:
        topics: dict[str, TopicInfo] = {}
        for c in reader.connections:
            prev = topics.get(c.topic)
            topics[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgcount + (prev.count if prev else 0))
        return BagInfo(Path(reader.paths[0]), topics, int(reader.start_time), int(reader.end_time),
                       int(reader.message_count))


def read_raw(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, log time ns, CDR bytes) of every message (of ``topics``) in log-time order."""
    wanted = None if topics is None else set(topics)
    with _reader(path) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, t, data in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, int(t), bytes(data)


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """(topic, log time ns, rosbags message) in log-time order, deserialised with the bag's own definitions."""
    wanted = None if topics is None else set(topics)
    with _reader(path) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, t, data in reader.messages(connections=conns):
            yield conn.topic, int(t), reader.deserialize(data, conn.msgtype)


IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF = "tf2_msgs/msg/TFMessage"


def _is_depth_name(topic: str) -> bool:
    return "depth" in topic.lower() or "disparity" in topic.lower() or "confidence" in topic.lower()


def find_image_topic(info: BagInfo, prefer_compressed: bool = False) -> str:
    """The colour image topic: Image topics whose name does not mention depth, else CompressedImage (or the other
    way round with ``prefer_compressed``). Raises ValueError listing the candidates when it is ambiguous."""
    raw = [t for t in info.of_type(IMAGE) if not _is_depth_name(t)]
    comp = [t for t in info.of_type(COMPRESSED) if not _is_depth_name(t)]
    for group in ((comp, raw) if prefer_compressed else (raw, comp)):
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            raise ValueError(f"several image topics: {', '.join(group)}; choose one (--image-topic)")
    raise ValueError(f"no colour Image / CompressedImage topic in {info.path}; topics: "
                     f"{', '.join(f'{t.name} ({t.msgtype})' for t in info.topics.values())}")


def find_camera_info_topic(info: BagInfo, image_topic: str) -> str | None:
    """The CameraInfo topic sharing the longest name prefix with ``image_topic`` (None if the bag has none)."""
    cands = info.of_type(CAMERA_INFO)
    if not cands:
        return None

    def common(a: str, b: str) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    return max(cands, key=lambda c: (common(c, image_topic), c))


def find_gt_topics(info: BagInfo) -> dict[str, str]:
    """Ground-truth topics present: ``depth`` (Image with 'depth' in the name: 32FC1 metres or 16UC1 mm),
    ``pose`` (PoseStamped with 'gt' / 'ground' in the name, camera-to-world) and ``tf`` (a TFMessage topic, used
    when it holds the ``world_gt`` -> ``camera_gt`` transform)."""
    out: dict[str, str] = {}
    depth = [t for t in info.of_type(IMAGE) if "depth" in t.lower()]
    if depth:
        out["depth"] = next((t for t in depth if t.endswith("depth_gt")), depth[0])
    pose = [t for t in info.of_type(POSE_STAMPED) if "gt" in t.lower() or "ground" in t.lower()]
    if pose:
        out["pose"] = pose[0]
    tf = info.of_type(TF)
    if "/tf" in tf:
        out["tf"] = "/tf"
    return out
