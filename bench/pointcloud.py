"""PointCloud2 packing rate (target >= 50 M points/s): ``python bench/pointcloud.py [--sizes 100000 1000000 5000000]``.

Times :func:`da3_ros.pointcloud.points_to_pointcloud2` end to end (NaN check, packing, copy into the message's
``array('B')``), best of ``--repeats``, for all-finite clouds and for clouds with 10 % NaN points (filtered).

Clouds above ~2 M points (32 MB, glibc's largest dynamic mmap threshold) get a fresh mmap per message and pay
page faults on every call; run the node with ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824``
to reuse heap memory instead (measured here: 5 M points 47 -> 99 M points/s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from std_msgs.msg import Header

from da3_ros.pointcloud import points_to_pointcloud2


def best_time(xyz: np.ndarray, rgb: np.ndarray, header: Header, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        points_to_pointcloud2(xyz, rgb, header)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    header = Header(frame_id="map")
    print(f"{'points':>10} {'finite M pts/s':>15} {'10% NaN M pts/s':>16}")
    for n in args.sizes:
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
        holes = xyz.copy()
        holes[rng.random(n) < 0.1] = np.nan
        t_ok = best_time(xyz, rgb, header, args.repeats)
        t_nan = best_time(holes, rgb, header, args.repeats)
        print(f"{n:>10} {n / t_ok / 1e6:>15.1f} {n / t_nan / 1e6:>16.1f}")


if __name__ == "__main__":
    main()
