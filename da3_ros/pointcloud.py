"""PointCloud2 packing: (N, 3) float32 xyz + (N, 3) uint8 RGB -> one buffer, no per-point Python.

Layout (point_step 16): x, y, z FLOAT32 at offsets 0, 4, 8 and ``rgb`` FLOAT32 at 12 holding the bits of the
uint32 ``0x00RRGGBB`` (the PCL / RViz convention; in little-endian memory the bytes are B, G, R, 0).
Non-finite points are removed, so ``is_dense`` is True; the cloud is unorganised (height 1).
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

__all__ = ["POINT_STEP", "FIELDS", "points_to_pointcloud2", "pointcloud2_to_points"]

POINT_STEP = 16
FIELDS = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
          PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
          PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
          PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1)]
_LITTLE = sys.byteorder == "little"
# byte positions of R, G, B inside the 4-byte rgb slot for native-endian uint32 0x00RRGGBB
_RGB_BYTES = (14, 13, 12) if _LITTLE else (13, 14, 15)


def _pack_into(buf: np.ndarray, xyz: np.ndarray, rgb: np.ndarray | None) -> None:
    """Write points into a zero-filled (N, 4) float32 buffer (x, y, z, packed rgb)."""
    buf[:, :3] = xyz
    if rgb is None:
        buf[:, 3].view(np.uint32)[:] = 0x00FFFFFF
    else:
        raw = buf.view(np.uint8)  # (N, 16); the padding byte of rgb stays 0 from the zero fill
        for ch, pos in enumerate(_RGB_BYTES):
            raw[:, pos] = rgb[:, ch]


def points_to_pointcloud2(xyz: np.ndarray, rgb: np.ndarray | None, header: Header) -> PointCloud2:
    """Pack (N, 3) points (any float) and (N, 3) uint8 colours (white when None) into a PointCloud2."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (N, 3) uint8 like xyz {xyz.shape}, got {rgb.shape} {rgb.dtype}")
    finite = None
    if not np.isfinite(xyz).all():  # fast path: a single pass when every point is finite
        m = np.isfinite(xyz)
        finite = m[:, 0] & m[:, 1] & m[:, 2]
    n = xyz.shape[0] if finite is None else int(np.count_nonzero(finite))
    data = array.array("B", bytes(1)) * (POINT_STEP * n)  # the message buffer itself; numpy writes into it
    if finite is None:
        _pack_into(np.frombuffer(data, dtype=np.float32).reshape(n, 4) if n else np.zeros((0, 4), np.float32),
                   xyz, rgb)
    else:  # pack everything, then move whole 16-byte points (viewed as complex128) past the holes
        tmp = np.zeros((xyz.shape[0], 4), np.float32)
        _pack_into(tmp, xyz, rgb)
        if n:
            np.compress(finite, tmp.view(np.complex128).reshape(-1), out=np.frombuffer(data, dtype=np.complex128))
    msg = PointCloud2(header=header, height=1, width=n, fields=FIELDS, is_bigendian=not _LITTLE,
                      point_step=POINT_STEP, row_step=POINT_STEP * n, is_dense=True,
                      check_fields=True)  # the data setter then keeps the buffer (without it, rclpy copies it)
    msg.data = data
    return msg


def pointcloud2_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`points_to_pointcloud2` for clouds with float32 x, y, z and a packed ``rgb`` / ``rgba``
    field at any offsets: returns (xyz (N, 3) float32, rgb (N, 3) uint8)."""
    offsets = {f.name: f.offset for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in offsets:
            raise ValueError(f"PointCloud2 has no {name!r} field")
    n = int(msg.width) * int(msg.height)
    end = ">" if msg.is_bigendian else "<"
    names = ["x", "y", "z"]
    formats = [end + "f4"] * 3
    cname = "rgb" if "rgb" in offsets else ("rgba" if "rgba" in offsets else None)
    if cname:
        names.append(cname)
        formats.append(end + "u4")
    dt = np.dtype({"names": names, "formats": formats, "offsets": [offsets[k] for k in names],
                   "itemsize": int(msg.point_step)})
    rec = np.frombuffer(msg.data, dtype=dt, count=n)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    if cname is None:
        return xyz, np.full((n, 3), 255, np.uint8)
    packed = rec[cname].astype(np.uint32)
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    return xyz, rgb
