"""Kill a training run with SIGKILL at a random moment after a checkpoint, resume, and compare with a run that was
never interrupted: the same losses at every step and bit-identical parameters at the end."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
STEPS = 18
ARGS = ["--variant=da3-tiny", "--resolutions=[[42,56]]", "--views=[2,3]", "--token_budget=72", "--budget_tol=0.5",
        "--num_workers=0", "--threads=1", "--eval_interval=0", "--log_interval=1", "--ckpt_interval=3",
        f"--max_steps={STEPS}", "--warmup_steps=4", "--progress=false", "--keep_last=2", "--pose_cond_prob=0.3",
        "--data_echo=3", "--disp_weight=0.5", "--disp_parallax=true", "--view_scale_weight=1"]
# with the default matching loss, the displacement loss (with the parallax), the view-scale loss and data echoing


def _cmd(out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, str(ROOT / "training" / "train.py"), *ARGS, f"--out_dir={out}"] + (["--resume"] if resume
                                                                                             else [])


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _losses(out: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines() if ln.strip()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def _final_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / f"ckpt_{STEPS:08d}.pt", map_location="cpu", weights_only=False)["model"]


def _final_readout(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / f"ckpt_{STEPS:08d}.pt", map_location="cpu", weights_only=False)["extra"]["disp_readout"]


@pytest.mark.slow
def test_kill_and_resume_continues_the_same_curve(tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run(_cmd(ref), check=True, env=_env(), cwd=ROOT, timeout=120)

    proc = subprocess.Popen(_cmd(run), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(run.glob("ckpt_*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.6))  # a random moment after the first checkpoint (maybe mid-write of another)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; raise STEPS"
    killed_at = max(int(p.stem.split("_")[1]) for p in run.glob("ckpt_*.pt"))
    assert killed_at < STEPS

    subprocess.run(_cmd(run, resume=True), check=True, env=_env(), cwd=ROOT, timeout=120)
    a, b = _losses(ref), _losses(run)
    assert sorted(a) == sorted(b) == list(range(STEPS))
    assert [a[s] for s in range(STEPS)] == [b[s] for s in range(STEPS)]
    ma, mb = _final_model(ref), _final_model(run)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    ra, rb = _final_readout(ref), _final_readout(run)  # the displacement read-out resumes exactly too
    assert ra.keys() == rb.keys() and ra and all(torch.equal(ra[k], rb[k]) for k in ra)
    log = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "start" and r.get("resumed_from") for r in log)
