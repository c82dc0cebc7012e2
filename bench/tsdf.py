"""TSDF map timings on this machine: ``python bench/tsdf.py [--frames 20] [--voxel 0.04] [--path walk]
[--sizes 504x378 252x189]``.

For each image size: renders ``--frames`` exact views of the synthetic room (``kind=room,seed=0,fov=70``, camera path
``--path``: walk or orbit), integrates them one by one into a :class:`~da3_core.stream.tsdf_map.TsdfMap`
(confidence all ones), moves a quarter of the keyframes by 1 cm with ``update_poses`` (de- and re-integration of
those), re-integrates all of them (a full rebuild, what a large loop-closure correction triggers) and extracts the
mesh. Prints integration ms per frame (median and max), the update ms, the rebuild ms, mesh extraction ms, voxel
blocks, mesh vertices, stored MB, and the mesh's accuracy against the scene (share of vertices within 2 voxels of
the true surface, by the scene's SDF). Rendering is not timed. Run with ``OMP_NUM_THREADS`` set; torch's
and Open3D's thread counts follow ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--voxel", type=float, default=0.04)
    ap.add_argument("--sizes", nargs="+", default=["504x378", "252x189"])
    ap.add_argument("--path", default="walk", choices=["walk", "orbit"])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from da3_core.data.synthetic.sequence import SyntheticSequence
    from da3_core.stream.tsdf_map import TsdfConfig, TsdfMap

    print(f"TSDF map bench: {args.frames} frames of the synthetic room ({args.path}), voxel {args.voxel} m, "
          f"{args.threads} thread(s)")
    print(f"{'size':>9} {'integrate ms/frame (median / max)':>34} {'update 1/4 ms':>14} {'rebuild ms (all)':>17} "
          f"{'mesh ms':>8} {'blocks':>7} {'vertices':>9} {'store MB':>9} {'vertices within 2 voxels':>25}")
    for size in args.sizes:
        seq = SyntheticSequence.from_spec(f"kind=room,seed=0,frames={args.frames},path={args.path},size={size},fov=70")
        frames = [seq.frame(i) for i in range(len(seq))]
        m = TsdfMap(TsdfConfig(voxel_size=args.voxel, depth_max=8.0))
        times = []
        for i, f in enumerate(frames):
            depth = np.where(np.isfinite(f.depth), f.depth, np.nan).astype(np.float32)
            t0 = time.perf_counter()
            m.integrate(i, depth, np.ones_like(depth), f.K, f.c2w, f.rgb)
            times.append((time.perf_counter() - t0) * 1e3)  # includes input checks, weights and storage
        nudged = {}
        for i in range(0, len(frames), 4):
            T = frames[i].c2w.copy()
            T[:3, 3] += 0.01
            nudged[i] = T
        t0 = time.perf_counter()
        m.update_poses(nudged)
        t_up = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        m.reintegrate({i: f.c2w for i, f in enumerate(frames)})
        t_re = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        mesh = m.extract_mesh()
        t_mesh = (time.perf_counter() - t0) * 1e3
        s = m.stats()
        acc = float(np.mean(np.abs(seq.scene.sdf(mesh.vertices.astype(np.float64))) < 2 * args.voxel))
        print(f"{size:>9} {np.median(times):>20.1f} / {max(times):>11.1f} {t_up:>14.0f} {t_re:>17.0f} {t_mesh:>8.0f} "
              f"{s['voxel_blocks']:>7d} {len(mesh.vertices):>9d} {s['store_mb']:>9.1f} {acc:>25.3f}")
        del m


if __name__ == "__main__":
    main()
