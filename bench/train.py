"""Training throughput: samples/s and tokens/s of full training steps (forward, loss, backward, clip, AdamW).

    python bench/train.py                       # training/configs/small.yaml (da3-small), 3 timed steps
    python bench/train.py --config training/configs/tiny_default.yaml --steps 20
    python bench/train.py --device cuda --steps 50

Batches are drawn first (data loading is timed separately) and then fed to ``Trainer.train_step``; tokens are patch
tokens (views x (H/14) x (W/14)). The model starts from its from-scratch init (weights do not change the speed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from da3_core.train.loop import Trainer, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "small.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args, overrides = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [*overrides, f"--out_dir={tmp}", "--timm_init=", "--eval_interval=0",
                                        "--progress=false", f"--device={args.device}", f"--threads={args.threads}",
                                        "--num_workers=0", "--pose_cond_prob=0"])
        tr = Trainer(cfg)
        t0 = time.perf_counter()
        stream = tr.batches()
        batches = [next(stream) for _ in range(args.warmup + args.steps)]
        t_data = time.perf_counter() - t0
        for b in batches[:args.warmup]:
            tr.train_step(b)
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        samples = tokens = 0
        t0 = time.perf_counter()
        for b in batches[args.warmup:]:
            rec = tr.train_step(b)
            samples += rec["B"]
            tokens += rec["B"] * rec["S"] * (rec["H"] // 14) * (rec["W"] // 14)
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n_params = sum(p.numel() for p in tr.net.parameters())
    print(f"config {args.config} | variant {cfg.variant} ({n_params / 1e6:.1f} M params) | device {tr.device} | "
          f"threads {torch.get_num_threads()} | amp {tr.amp_dtype} | token budget {cfg.token_budget}")
    print(f"{args.steps} steps in {dt:.2f} s: {samples / dt:.2f} samples/s, {tokens / dt:.0f} tokens/s, "
          f"{dt / args.steps:.3f} s/step (data loading, not timed: {t_data / len(batches):.2f} s/batch)")


if __name__ == "__main__":
    main()
