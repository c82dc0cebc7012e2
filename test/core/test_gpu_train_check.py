"""bench/gpu_train_check.sh on the CPU (a smoke test, seconds): the script a GPU owner runs unchanged must keep
working -- it trains with training/configs/gpu_default.yaml (data echoing, a wall-time budget, the matching loss),
prints throughput, scores the result on held-out scenes and copies loadable weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_train_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    from da3_core.api import DA3

    dest = tmp_path / "dest"
    overrides = ("--resolutions=[[42,56]] --views=[2,3] --token_budget=100 --max_batch=4 --num_workers=0 --threads=1 "
                 "--amp=off --max_steps=6 --warmup_steps=2 --log_interval=2 --ckpt_interval=3")
    env = {**os.environ, "DEVICE": "cpu", "MINUTES": "5", "EVAL_SAMPLES": "2", "TRAIN_ARGS": overrides,
           "PYTHON": sys.executable, "RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_train_check.sh"), str(dest)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "samples/s" in proc.stdout and "protocol 'window'" in proc.stdout
    log = [json.loads(ln) for ln in (dest / "train_log.jsonl").read_text().splitlines() if ln.strip()]
    assert [r for r in log if r.get("event") == "done"][0]["step"] == 6
    cfg = [r for r in log if r.get("event") == "start"][0]["config"]
    # the GPU recipe's own settings, not the CPU's
    assert cfg["data_echo"] == 3 and cfg["windows_per_scene"] == 4 and cfg["match_weight"] > 0
    scores = json.loads((dest / "heldout_scores.json").read_text())
    assert set(scores) == {"window", "spread"}
    model = DA3.from_pretrained(dest / "weights", device="cpu")
    assert model.network.cfg.backbone.embed_dim == 192  # da3-tiny
