"""Training-step cost: ops, host<->device syncs, host time outside forward/backward/optimizer, samples/s, tokens/s.

    python bench/train.py                                           # tiny_default and small, 10 timed steps each
    python bench/train.py --configs training/configs/small.yaml --steps 3
    python bench/train.py --device cuda --steps 50 --configs training/configs/gpu_default.yaml

Per config, batches are drawn first (data loading is timed apart, ``data s/batch``) and then fed to
``Trainer.train_step`` -- forward, loss, backward, clip, AdamW -- with these figures:

- ``ops``: aten operators dispatched in one step, outermost calls only (an op called by another op is not counted
  again); ``kernels``: CUDA kernel launches in one step (CUDA only). From the torch profiler.
- ``syncs``: operators in one step that make the host wait for the device: a tensor read as a Python number
  (``aten::_local_scalar_dense``: ``.item()``, ``float()``, ``bool()``), ``nonzero`` / ``masked_select`` / ``unique``
  (data-dependent shapes), and on CUDA explicit stream/device synchronisations and blocking device-to-host copies.
  Counted on the CPU too: the same calls are what would stall a GPU (scalar reads inside ``optimizer.step`` are not
  counted: torch's AdamW reads CPU-side step counters there, no device sync).
- ``host ms``: wall time per step outside the forward+loss (``forward_loss``), ``Tensor.backward`` and
  ``optimizer.step`` (moving the batch, pose-conditioning choice, clipping, bookkeeping, the step record); each of
  the three is timed by a wrapper that synchronises on CUDA, so the rest is what the step costs around them.
- ``samples/s`` and ``tokens/s`` (patch tokens: views x (H/14) x (W/14)) over the timed steps.

``--before DIR`` also runs the same measurement with the code and configs of another checkout (e.g. a
``git worktree`` of an earlier commit) in a subprocess, for before/after tables (run from the checkout's root).
The model starts from its from-scratch init (weights do not change the speed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:  # the checkout's code, unless another one is on PYTHONPATH (--before) or installed
    import da3_core  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))
DEFAULT_CONFIGS = ("training/configs/tiny_default.yaml", "training/configs/small.yaml")
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique", "aten::_unique2")
CUDA_SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


class _Timers:
    """Wall-time wrappers around forward_loss, Tensor.backward and optimizer.step (synchronising on CUDA)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.seconds, self.active = cuda, 0.0, False

    def wrap(self, fn):
        def timed(*a, **kw):
            if not self.active:
                return fn(*a, **kw)
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t0
            return out

        return timed


def _inside_optimizer_step(event) -> bool:
    """Whether a profiler event runs inside ``optimizer.step`` (torch's AdamW reads its step counts and, fused on
    the CPU, its scalars as Python numbers: CPU tensors, no device sync on CUDA)."""
    p = event.cpu_parent
    while p is not None:
        if p.name.startswith("Optimizer.step"):
            return True
        p = p.cpu_parent
    return False


def _count_step(tr, batch, cuda: bool) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        tr.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
    ops = syncs = kernels = 0
    for e in prof.events():
        name = e.name
        if name.startswith("aten::"):
            parent = e.cpu_parent
            if parent is None or not parent.name.startswith("aten::"):
                ops += 1
            if name in SYNC_OPS and not _inside_optimizer_step(e):
                syncs += 1
        elif cuda and name.startswith(CUDA_SYNC_CALLS):
            syncs += 1 if name != "cudaMemcpy" or "DtoH" in str(getattr(e, "input_shapes", "")) else 0
        elif cuda and name in KERNEL_LAUNCHES:
            kernels += 1
    return {"ops": ops, "syncs": syncs, "kernels": kernels}


def measure(config: str, steps: int, warmup: int, device: str, threads: int, overrides: list[str]) -> dict:
    """All figures of one config with the code importable as ``da3_core`` in this process."""
    from da3_core.train import loop

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(config) if Path(config).exists() else ROOT / config  # relative to the checkout measured
        cfg = loop.load_config(path, [*overrides, f"--out_dir={tmp}", "--timm_init=", "--eval_interval=0",
                                      "--progress=false", f"--device={device}", f"--threads={threads}",
                                      "--num_workers=0", "--pose_cond_prob=0"])
        tr = loop.Trainer(cfg)
        cuda = tr.device.type == "cuda"
        t0 = time.perf_counter()
        stream = tr.batches()
        batches = [next(stream) for _ in range(warmup + steps + 1)]
        t_data = (time.perf_counter() - t0) / len(batches)
        for b in batches[:warmup]:
            tr.train_step(b)
        counts = _count_step(tr, batches[warmup], cuda)
        timers = _Timers(cuda)
        real_forward, real_backward, real_opt_step = loop.forward_loss, torch.Tensor.backward, tr.optimizer.step
        loop.forward_loss = timers.wrap(real_forward)
        torch.Tensor.backward = timers.wrap(real_backward)
        tr.optimizer.step = timers.wrap(real_opt_step)
        try:
            if cuda:
                torch.cuda.synchronize()
            samples = tokens = 0
            timers.active = True
            t0 = time.perf_counter()
            for b in batches[warmup + 1:]:
                rec = tr.train_step(b)
                samples += rec["B"]
                tokens += rec["B"] * rec["S"] * (rec["H"] // 14) * (rec["W"] // 14)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            timers.active = False
        finally:
            loop.forward_loss, torch.Tensor.backward, tr.optimizer.step = real_forward, real_backward, real_opt_step
        # the same steps without the timing wrappers (their synchronisations would slow a CUDA step)
        t0 = time.perf_counter()
        for b in batches[warmup + 1:]:
            tr.train_step(b)
        if cuda:
            torch.cuda.synchronize()
        dt_free = time.perf_counter() - t0
    n_params = sum(p.numel() for p in tr.net.parameters())
    return {"config": config, "variant": cfg.variant, "params_m": n_params / 1e6, "device": str(tr.device),
            "amp": str(tr.amp_dtype), "token_budget": cfg.token_budget, **counts,
            "host_ms": 1e3 * (dt - timers.seconds) / steps, "step_ms": 1e3 * dt_free / steps,
            "samples_per_s": samples / dt_free, "tokens_per_s": tokens / dt_free, "data_s_per_batch": t_data}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per config")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", default="", help="another checkout to measure the same way (before/after table)")
    ap.add_argument("--json", default="", help=argparse.SUPPRESS)  # used by --before's subprocess
    args, overrides = ap.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(c, args.steps, args.warmup, args.device, args.threads, overrides) for c in args.configs]
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
        return rows
    before = []
    if args.before:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            env = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--configs", *args.configs,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
                   "--threads", str(args.threads), "--json", f.name, *overrides]
            subprocess.run(cmd, env=env, check=True, cwd=args.before)
            before = json.loads(Path(f.name).read_text())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps per config")
    print("| code | config | variant | device / amp | ops | kernels | syncs | host ms/step | ms/step | samples/s | "
          "tokens/s | data s/batch |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, group in (("before", before), ("now", rows)):
        for r in group:
            print(f"| {label} | {Path(r['config']).name} | {r['variant']} ({r['params_m']:.1f} M) | {r['device']} / "
                  f"{r['amp']} | {r['ops']} | {r['kernels'] or '-'} | {r['syncs']} | {r['host_ms']:.1f} | "
                  f"{r['step_ms']:.0f} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                  f"{r['data_s_per_batch']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
