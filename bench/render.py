"""Synthetic renderer benchmark: frames/s of ``da3_core.data.synthetic.render`` per scene kind and image size.

    .venv/bin/python bench/render.py                          # 504x378 (+ 252x189, 1008x756), 10 frames, 1 thread
    .venv/bin/python bench/render.py --sizes 504x378 --frames 30 --kinds room

Sizes are WIDTHxHEIGHT. For each (kind, size): one scene (seed 0), a collision-free trajectory of ``--frames``
poses, one warm-up render, then every pose rendered and timed; printed: median and min ms/frame, frames/s of the
median, primitives in the scene. The renderer is numpy element-wise code (single-threaded); ``--threads`` caps
BLAS/OpenMP threads (set before numpy is imported) so numbers are comparable across machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["504x378", "252x189", "1008x756"], help="WIDTHxHEIGHT")
    ap.add_argument("--kinds", nargs="+", default=None, help="scene kinds (default: all)")
    ap.add_argument("--frames", type=int, default=10, help="timed frames per (kind, size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fov", type=float, default=70.0, help="horizontal field of view, degrees")
    ap.add_argument("--antialias", type=int, default=1)
    ap.add_argument("--nearest", action="store_true", help="nearest texture lookup instead of bilinear")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    from da3_core.data.synthetic import SCENE_KINDS, intrinsics_from_fov, make_scene, make_trajectory, render

    kinds = args.kinds or list(SCENE_KINDS)
    print(
        f"synthetic renderer, {args.threads} thread(s), {args.frames} frames each, fov {args.fov} deg, "
        f"antialias {args.antialias}, {'nearest' if args.nearest else 'bilinear'} textures"
    )
    print(f"{'kind':<10} {'size':>9} {'prims':>5} {'median ms':>10} {'min ms':>8} {'frames/s':>9}")
    for kind in kinds:
        t0 = time.perf_counter()
        scene = make_scene(kind, 0)
        t_scene = time.perf_counter() - t0
        w2cs = make_trajectory(scene, args.frames, "auto", seed=0)
        for size in args.sizes:
            W, H = (int(x) for x in size.lower().split("x"))
            K = intrinsics_from_fov((H, W), args.fov)
            kw = dict(antialias=args.antialias, bilinear=not args.nearest)
            render(scene, w2cs[0], K, (H, W), **kw)  # warm-up
            times = []
            for w2c in w2cs:
                t0 = time.perf_counter()
                render(scene, w2c, K, (H, W), **kw)
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            print(
                f"{kind:<10} {size:>9} {len(scene.primitives):>5} {med * 1e3:>10.1f} {min(times) * 1e3:>8.1f} "
                f"{1.0 / med:>9.1f}"
            )
        print(f"{'':<10} (scene generation {t_scene * 1e3:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
