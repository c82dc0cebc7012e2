"""One camera of the reconstruct node: its inputs (image or image/compressed, camera_info, paired by stamp) and its
per-camera outputs (depth, confidence, depth/camera_info), all under the camera's namespace ('' for a single camera,
e.g. 'cam0' in a rig: cam0/image, cam0/depth ...). Frames carry the camera's index (``Frame.camera``).

A message that cannot be converted is counted by the node (``on_reject``) and never raises into rclpy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from da3_core.stream.chaining import ChainedFrame
from da3_core.stream.frame import Frame, FrameError
from da3_core.stream.pairing import IntrinsicsPairer
from da3_ros.conversions import (
    camera_info_to_K,
    compressed_to_rgb,
    conf_to_image_msg,
    depth_to_image_msg,
    image_to_rgb,
    make_camera_info,
    ns_to_stamp,
    stamp_to_ns,
)
from da3_ros.lazy_publish import listened

__all__ = ["CameraIO", "DEFAULT_CAMERA_FRAME"]

DEFAULT_CAMERA_FRAME = "camera_optical_frame"


class CameraIO:
    """Subscriptions, CameraInfo pairing and output publishers of camera ``index``.

    ``on_frames(frames)``: frames ready for the pipeline (paired, or given up waiting); ``on_reject(reason, detail)``:
    a message that was dropped; ``ready(frame)``: extra condition a frame waits for (its TF pose); ``publish(pub,
    msg)``: the node's guarded publish.
    """

    def __init__(self, node, index: int, namespace: str, values: dict, in_qos, out_qos,
                 on_frames: Callable[[list[Frame]], None], on_reject: Callable[[str, str], None],
                 publish: Callable, ready: Callable[[Frame], bool] | None = None):
        self.index, self.namespace = int(index), namespace
        self.values, self.on_frames, self.on_reject, self.publish = values, on_frames, on_reject, publish
        self._logger = node.get_logger()
        p = f"{namespace}/" if namespace else ""
        if values["use_compressed"]:
            node.create_subscription(CompressedImage, f"{p}image/compressed",
                                     lambda m: self._ingest(m, compressed_to_rgb), in_qos)
        else:
            node.create_subscription(Image, f"{p}image", lambda m: self._ingest(m, image_to_rgb), in_qos)
        self.pairer: IntrinsicsPairer | None = None
        self._last_K: tuple = (None, None)  # (CameraInfo fields K depends on, K) of the last good CameraInfo
        if values["use_camera_info"]:
            tol = values["camera_info_tolerance_s"]
            wait = max(0.2, 5.0 * tol, values["tf_wait_s"] if ready is not None else 0.0)  # CameraInfo and TF pose
            self.pairer = IntrinsicsPairer(self._camera_info_K, tolerance_s=tol, wait_s=wait, ready=ready)
            node.create_subscription(CameraInfo, f"{p}camera_info", self._on_info, in_qos)
        self.pub_depth = node.create_publisher(Image, f"{p}depth", out_qos)
        self.pub_conf = node.create_publisher(Image, f"{p}confidence", out_qos)
        self.pub_info = node.create_publisher(CameraInfo, f"{p}depth/camera_info", out_qos)

    def _camera_info_K(self, info: CameraInfo, hw: tuple[int, int]) -> np.ndarray:
        # a camera sends the same calibration with every image: checked once, reused while it stays the same
        key = (tuple(info.k), int(info.width), int(info.height), int(info.binning_x), int(info.binning_y),
               int(info.roi.x_offset), int(info.roi.y_offset), int(info.roi.width), int(info.roi.height), hw)
        if key == self._last_K[0]:
            return self._last_K[1].copy()
        try:
            K = camera_info_to_K(info, hw)
            self._last_K = (key, K)
            return K.copy()
        except FrameError as exc:
            self._logger.warning(f"ignored CameraInfo ({exc.reason}): {exc}", throttle_duration_sec=5.0)
            raise

    def _on_info(self, msg: CameraInfo) -> None:
        self.on_frames(self.pairer.add_info(stamp_to_ns(msg.header.stamp), msg, time.monotonic()))

    def poll(self) -> None:
        """Frames whose wait for a CameraInfo (or a TF pose) ran out go on."""
        if self.pairer is not None and len(self.pairer):  # frames are waiting (most polls find none)
            self.on_frames(self.pairer.poll(time.monotonic()))

    def _ingest(self, msg, convert) -> None:
        try:
            rgb = convert(msg, self.values["max_image_side"])
            frame_id = self.values["camera_frame"] or msg.header.frame_id or DEFAULT_CAMERA_FRAME
            frame = Frame(stamp_ns=stamp_to_ns(msg.header.stamp), rgb=rgb, K=None, frame_id=frame_id,
                          camera=self.index)
        except FrameError as exc:
            self.on_reject(exc.reason, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bad message must never take the node down
            self.on_reject("unexpected", f"{type(exc).__name__}: {exc}")
            return
        if self.pairer is None:
            self.on_frames([frame])
        else:  # waits (briefly) for its CameraInfo, whichever of the two arrives first
            self.on_frames(self.pairer.add_frame(frame, time.monotonic()))

    def publish_frame(self, cf: ChainedFrame) -> None:
        """depth (32FC1, NaN on sky / invalid), confidence and the depth image's CameraInfo of one frame."""
        header = Header(stamp=ns_to_stamp(cf.stamp_ns), frame_id=cf.frame_id)
        h, w = cf.depth.shape
        # built only for topics someone listens to (image_transport's lazy publishing): volatile topics, so a
        # subscriber that joins later misses nothing it would have received
        if listened(self.pub_depth):
            self.publish(self.pub_depth, depth_to_image_msg(cf.depth, header, invalid=cf.sky))
        if listened(self.pub_conf):
            self.publish(self.pub_conf, conf_to_image_msg(cf.conf, header))
        if listened(self.pub_info):
            self.publish(self.pub_info, make_camera_info(cf.K, w, h, header))

    def pairing_counts(self) -> dict[str, int]:
        """The pairer's counters as diagnostics keys (bad CameraInfo -> rejected_camera_info_<reason>)."""
        if self.pairer is None:
            return {}
        names = {"paired": "camera_info_paired", "unpaired": "camera_info_unpaired"}
        return {("rejected_" + k if k.startswith("camera_info_") else names.get(k, k)): n
                for k, n in self.pairer.counts.items()}
