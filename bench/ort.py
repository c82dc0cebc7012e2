"""ONNX export and ONNX Runtime against the eager torch network: parity and latency, same weights and inputs.

    .venv/bin/python bench/ort.py                                   # da3-small, 1 view 280x504, CPU
    .venv/bin/python bench/ort.py --variant da3metric-large --views 1 --height 126 --width 168
    python bench/ort.py --device cuda --providers tensorrt cuda     # a GPU with onnxruntime-gpu

Recipe weights (no download). One process: the eager network runs ``--runs`` timed forwards after a warm-up; the
graph is exported (``--onnx`` reuses a file instead) and ONNX Runtime runs the same input with each provider set in
turn. Printed per row: export seconds, median latency, images/s, and the outputs' difference from eager (depth max
relative, extrinsics max absolute; the must-show bound is 1e-4 for fp32 providers). TensorRT builds its engine on
the first run (cached in --cache); that build is reported apart from the timed runs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _timed(fn, runs: int, sync) -> tuple[float, dict]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _diff(got: dict, ref: dict) -> tuple[float, float]:
    depth = float(((got["depth"].cpu() - ref["depth"].cpu()).abs() / ref["depth"].cpu().abs()).max())
    ext = float((got["extrinsics"].cpu() - ref["extrinsics"].cpu()).abs().max()) if "extrinsics" in ref else 0.0
    return depth, ext


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="da3-small")
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--height", type=int, default=280)
    ap.add_argument("--width", type=int, default=504)
    ap.add_argument("--ref-view", default="first")
    ap.add_argument("--device", default="cpu", help="eager torch device and ONNX Runtime device")
    ap.add_argument("--providers", nargs="+", default=None, action="append",
                    help="provider set(s) to time, e.g. --providers tensorrt --providers cuda (default: per device)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    ap.add_argument("--onnx", default=None, help="an exported graph to reuse (skips the export)")
    ap.add_argument("--cache", default=None, help="TensorRT engine cache folder (default: a temporary folder)")
    args = ap.parse_args()

    from da3_core.backends.onnx_export import export_onnx
    from da3_core.backends.onnx_runtime import OnnxRuntimeNetwork
    from da3_core.backends.split import GraphSpec
    from da3_core.registry import build_network, canonical_variant
    from da3_core.weights.recipe import apply_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    variant = canonical_variant(args.variant)
    net = apply_recipe(build_network(variant)).eval()
    spec = GraphSpec(args.views, args.height, args.width, ref_view=args.ref_view)
    x = torch.randn(1, args.views, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    tmp = tempfile.mkdtemp(prefix="da3-bench-onnx-")
    cache = Path(args.cache or tmp)
    path = Path(args.onnx) if args.onnx else Path(tmp) / f"{variant}.onnx"
    export_s = float("nan")
    if not args.onnx:
        t0 = time.perf_counter()
        export_onnx(net, spec, path, variant)
        export_s = time.perf_counter() - t0
    print(f"{variant}, {spec.describe()}, recipe weights, {args.runs} timed runs after a warm-up; export "
          f"{export_s:.1f} s ({path.stat().st_size / 2**20:.0f} MB + external data)", flush=True)

    net_dev = net.to(device)
    xd = x.to(device)
    with torch.inference_mode():
        net_dev(xd, ref_view_strategy=args.ref_view)
        sync()
        eager_s, ref = _timed(lambda: net_dev(xd, ref_view_strategy=args.ref_view), args.runs, sync)
    ref = {k: v.float().cpu() for k, v in ref.items() if isinstance(v, torch.Tensor)}
    print(f"{'backend':<34} | {'first run s':>11} | {'median s':>9} | {'img/s':>7} | {'depth max rel':>13} | "
          f"{'extr max abs':>12}")
    print(f"{'torch eager (' + args.device + ', fp32)':<34} | {'':>11} | {eager_s:>9.4f} | "
          f"{args.views / eager_s:>7.1f} | {'reference':>13} | {'':>12}", flush=True)
    sets = args.providers or [None]
    for names in sets:
        try:
            ort_net = OnnxRuntimeNetwork([path], device=device, providers=names, cache_dir=cache,
                                         threads=args.threads)
        except (ValueError, RuntimeError) as exc:
            print(f"{'onnxruntime ' + ','.join(names or ['default']):<34} | not run: {exc}")
            continue
        label = "onnxruntime " + ",".join(p.replace("ExecutionProvider", "") for p in ort_net.providers)
        with torch.inference_mode():
            t0 = time.perf_counter()
            ort_net(x, ref_view_strategy=args.ref_view)  # TensorRT builds (or loads) its engine here
            first_s = time.perf_counter() - t0
            ort_s, got = _timed(partial(ort_net, x, ref_view_strategy=args.ref_view), args.runs, lambda: None)
        depth, ext = _diff(got, ref)
        print(f"{label:<34} | {first_s:>11.2f} | {ort_s:>9.4f} | {args.views / ort_s:>7.1f} | {depth:>13.2e} | "
              f"{ext:>12.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
