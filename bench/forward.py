"""Forward-pass benchmark: our network against the official DA3 network, same weights, same inputs, same run.

    .venv/bin/python bench/forward.py                     # da3-small, 1 and 3 views, 280x504, 2 threads, fp32
    .venv/bin/python bench/forward.py --views 1 3 8 --runs 20 --device cuda
    .venv/bin/python bench/forward.py --precision bf16     # also ours under bf16 autocast (CPU: native bf16 only)
    .venv/bin/python bench/forward.py --device cuda --views 32 --height 336 --width 504 --baseline-precision bf16
    .venv/bin/python bench/forward.py --device cuda --views 1 8 --graph   # + ours as a captured graph

Each (implementation, views) pair runs in its own fresh process (so peak memory is its own): the recipe weights
are built, one warm-up forward runs, then ``--runs`` timed forwards under ``torch.inference_mode``. Printed per
pair: median / min seconds, peak resident memory above the loaded model (CPU) or peak allocated memory (CUDA), and
the ratios official/ours. Outputs of both are compared (max relative difference of depth, max abs difference of
extrinsics) so a speed-up never hides a numerical change. The official package (``depth-anything-3``, installed
by ``make`` from requirements/reference.txt with --no-deps) is the baseline; it is never used by the product.
With ``--precision bf16`` a third process per row runs ours under bf16 autocast (what ``DA3(precision="bf16")``
does) and the row adds its speed against ours in fp32 and its depth error (max and median relative) against ours
in fp32 and against the official fp32. ``--baseline-precision bf16`` runs the official network and ours both under
bf16 autocast (the GPU comparison; the bf16 column then compares against those). ``--graph`` adds ours with its
window captured (``backend="torch_graph"``: a CUDA graph on a GPU, ``torch.compile`` on the CPU; capture during the
warm-up) in the baseline precision: its time, the speed-up over ours eager and its depth difference from ours
eager. ``img/s`` = views / median seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN_INPUTS = REPO.parent / "shared" / "golden" / "da3-small" / "inputs.npz"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _inputs(views: int, height: int, width: int):
    import torch

    if GOLDEN_INPUTS.exists() and (height, width) == (280, 504) and views <= 3:
        x = torch.from_numpy(np.load(GOLDEN_INPUTS)["x_3view"])[:, :views]
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, views, 3, height, width, generator=g)
    return x.contiguous()


def _build(impl: str, variant: str):
    from da3_core.weights.recipe import apply_recipe

    if impl in ("ours", "ours_graph"):
        from da3_core import build_network

        net = apply_recipe(build_network(variant))
        if impl == "ours_graph":
            from da3_core.backends.compiled import CapturedNetwork

            net = CapturedNetwork(net)

        def run(x):
            return net(x)

        return net.eval(), run
    else:
        import logging

        logging.disable(logging.WARNING)
        from depth_anything_3.cfg import create_object, load_config
        from depth_anything_3.registry import MODEL_REGISTRY

        net = create_object(load_config(MODEL_REGISTRY[variant]))

        def run(x):
            return net(x, extrinsics=None, intrinsics=None, export_feat_layers=[], infer_gs=False,
                       use_ray_pose=False, ref_view_strategy="saddle_balanced")
    return apply_recipe(net).eval(), run


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, run = _build(args.worker, args.variant)
    net.to(device)
    x = _inputs(args.views[0], args.height, args.width).to(device)
    cast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), cast:
        run(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base_mb = _rss_mb()
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = run(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base_mb
    np.savez(args.save, depth=out["depth"].float().cpu().numpy(), extrinsics=out["extrinsics"].float().cpu().numpy())
    print(json.dumps({"median": statistics.median(times), "min": min(times), "peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="da3-small")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--height", type=int, default=280)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: also time ours under bf16 autocast and report its error")
    parser.add_argument("--baseline-precision", choices=["fp32", "bf16"], default="fp32",
                        help="precision of the official network and ours in the main columns")
    parser.add_argument("--graph", action="store_true", help="also time ours with the window captured")
    parser.add_argument("--worker", choices=["ours", "official", "ours_graph"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    base = args.baseline_precision
    bf16 = args.precision == "bf16" and base != "bf16"  # the extra column (pointless when the baseline is bf16)
    print(f"{args.variant} {args.height}x{args.width}, {args.threads} threads, {args.device}, {base}"
          f"{' (+ ours bf16)' if bf16 else ''}{' (+ ours graph)' if args.graph else ''}, {args.runs} timed runs "
          "after 1 warm-up; each row from fresh processes")
    print(f"{'views':>5} | {'official s':>10} | {'ours s':>8} | {'speed-up':>8} | {'official img/s':>14} | "
          f"{'ours img/s':>10} | {'official MB':>11} | {'ours MB':>8} | {'mem ratio':>9} | {'depth max rel':>13} | "
          f"{'extr max abs':>12}"
          + (f" | {'bf16 s':>7} | {'bf16/fp32':>9} | {'bf16 vs ours max/med rel':>24} | "
             f"{'bf16 vs official max/med rel':>28}" if bf16 else "")
          + (f" | {'graph s':>8} | {'graph/eager':>11} | {'graph vs eager max rel':>22}" if args.graph else ""))
    official = importlib.util.find_spec("depth_anything_3") is not None
    if not official:
        print("official network (depth-anything-3) not installed: its columns are n/a "
              "(pip install --no-deps depth-anything-3==0.1.1)")
    runs = ([("official", base)] if official else []) + [("ours", base)] + ([("ours", "bf16")] if bf16 else []) \
        + ([("ours_graph", base)] if args.graph else [])
    with tempfile.TemporaryDirectory() as tmp:
        for views in args.views:
            res = {}
            for impl, precision in runs:
                save = str(Path(tmp) / f"{impl}_{precision}_{views}.npz")
                cmd = [sys.executable, __file__, "--worker", impl, "--save", save, "--variant", args.variant,
                       "--views", str(views), "--height", str(args.height), "--width", str(args.width),
                       "--runs", str(args.runs), "--threads", str(args.threads), "--device", args.device,
                       "--precision", precision]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.exit(f"{impl} ({precision}) worker failed:\n{proc.stderr[-3000:]}")
                res[(impl, precision)] = json.loads(proc.stdout.strip().splitlines()[-1]) | dict(np.load(save))
            u = res[("ours", base)]
            if official:
                o = res[("official", base)]
                rel = float(np.max(np.abs(u["depth"] - o["depth"]) / np.abs(o["depth"])))
                ext = float(np.max(np.abs(u["extrinsics"] - o["extrinsics"])))
                line = (f"{views:>5} | {o['median']:>10.3f} | {u['median']:>8.3f} | "
                        f"{o['median'] / u['median']:>7.2f}x | {views / o['median']:>14.1f} | "
                        f"{views / u['median']:>10.1f} | {o['peak_mb']:>11.0f} | {u['peak_mb']:>8.0f} | "
                        f"{o['peak_mb'] / max(u['peak_mb'], 1e-9):>8.2f}x | {rel:>13.2e} | {ext:>12.2e}")
            else:
                line = (f"{views:>5} | {'n/a':>10} | {u['median']:>8.3f} | {'n/a':>8} | {'n/a':>14} | "
                        f"{views / u['median']:>10.1f} | {'n/a':>11} | {u['peak_mb']:>8.0f} | {'n/a':>9} | "
                        f"{'n/a':>13} | {'n/a':>12}")
            if bf16:
                b = res[("ours", "bf16")]
                vs_ours = np.abs(b["depth"] - u["depth"]) / np.abs(u["depth"])
                line += (f" | {b['median']:>7.3f} | {u['median'] / b['median']:>8.2f}x | "
                         f"{vs_ours.max():>11.2e} / {np.median(vs_ours):.2e} | ")
                if official:
                    vs_official = np.abs(b["depth"] - o["depth"]) / np.abs(o["depth"])
                    line += f"{vs_official.max():>13.2e} / {np.median(vs_official):.2e}"
                else:
                    line += f"{'n/a':>28}"
            if args.graph:
                g = res[("ours_graph", base)]
                vs_eager = float(np.max(np.abs(g["depth"] - u["depth"]) / np.abs(u["depth"])))
                line += f" | {g['median']:>8.4f} | {u['median'] / g['median']:>10.2f}x | {vs_eager:>22.2e}"
            print(line)

if __name__ == "__main__":
    main()
