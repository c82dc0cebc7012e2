"""make_bag: write rosbag2 test/demo bags without ROS (mcap by default, sqlite3 supported).

Examples::

    python -m da3_ros.make_bag synthetic --spec "kind=room,seed=0,frames=24,size=504x378" --out bags/room.mcap
    python -m da3_ros.make_bag synthetic --spec "kind=room,frames=12,size=168x126" --out bags/room --storage sqlite3
    python -m da3_ros.make_bag folder IMAGES --intrinsics fx,fy,cx,cy --fps 10 --out bags/mine.mcap
    python -m da3_ros.make_bag info bags/room

The bag is a directory; an ``--out`` ending in ``.mcap`` / ``.db3`` names the directory without the suffix and
chooses the storage. Synthetic bags carry ground truth (``/camera/depth_gt``, ``/camera/pose_gt``, ``/tf``
``world_gt`` -> ``camera_gt``); see :mod:`da3_ros.bags`.
"""

from __future__ import annotations

import argparse
import sys

from da3_ros import bags


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_bag", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synthetic", help="render a synthetic sequence (with ground truth) into a bag")
    s.add_argument("--spec", default="kind=room,seed=0,frames=24,size=504x378",
                   help="SyntheticSequence spec: kind, seed, frames, path, size=WxH, fov, fps, t0")
    s.add_argument("--no-ground-truth", action="store_true", help="images and camera info only")
    s.add_argument("--frame-id", default=bags.CAMERA_FRAME)
    f = sub.add_parser("folder", help="an image folder (sorted by name) + intrinsics into a bag")
    f.add_argument("folder")
    f.add_argument("--intrinsics", required=True, help="'fx,fy,cx,cy', or a file (4 / 9 numbers or JSON)")
    f.add_argument("--fps", type=float, default=10.0)
    f.add_argument("--t0", type=float, default=1.0, help="stamp of the first image (s)")
    f.add_argument("--compressed", action="store_true", help="store png/jpg files as CompressedImage")
    f.add_argument("--frame-id", default=bags.CAMERA_FRAME)
    for p in (s, f):
        p.add_argument("--out", required=True, help="bag directory (a .mcap / .db3 suffix picks the storage)")
        p.add_argument("--storage", choices=bags.STORAGES, default=None, help="default: mcap")
        p.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="topics, types and counts of a bag")
    i.add_argument("bag")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "synthetic":
            path = bags.write_synthetic_bag(a.spec, a.out, a.storage, frame_id=a.frame_id,
                                            ground_truth=not a.no_ground_truth, overwrite=a.overwrite)
        elif a.cmd == "folder":
            path = bags.write_folder_bag(a.folder, a.intrinsics, a.fps, a.out, a.storage, t0_s=a.t0,
                                         compressed=a.compressed, frame_id=a.frame_id, overwrite=a.overwrite)
        else:
            path = a.bag
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"make_bag: {exc}", file=sys.stderr)
        return 2
    info = bags.bag_info(path)
    print(f"{info.path}: {info.message_count} messages, {(info.end_ns - info.start_ns) / 1e9:.3f} s")
    for t in info.topics.values():
        print(f"  {t.name:40s} {t.msgtype:36s} {t.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
