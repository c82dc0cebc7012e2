"""bench/gpu_train_check.sh on the CPU (a smoke test, seconds): the script a GPU owner runs unchanged must keep
working -- it trains the two-stage recipe (training/configs/gpu_pans.yaml, then gpu_default.yaml from its weights:
data echoing, a wall-time budget, the matching loss), prints throughput, scores the result on held-out scenes and
copies loadable weights."""

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
    assert "training stage 1 (pans)" in proc.stdout and "training stage 2" in proc.stdout
    pans = [json.loads(ln) for ln in (dest / "train_log_pans.jsonl").read_text().splitlines() if ln.strip()]
    log = [json.loads(ln) for ln in (dest / "train_log.jsonl").read_text().splitlines() if ln.strip()]
    for stage in (pans, log):
        assert [r for r in stage if r.get("event") == "done"][0]["step"] == 6
    first = [r for r in pans if r.get("event") == "start"][0]["config"]
    cfg = [r for r in log if r.get("event") == "start"][0]["config"]
    # stage 1: pans with the dense heads idle; stage 2 starts from its weights
    assert first["camera_path"] == "pan" and first["dense_weight"] == 0 and first["pose_cond_prob"] == 0
    assert cfg["init_from"] == str(tmp_path / "run_pans" / "final")
    # the GPU recipe's own settings, not the CPU's; stage 2 as the CPU recipe's stage 2 otherwise
    assert cfg["data_echo"] == 3 and cfg["windows_per_scene"] == 4 and cfg["match_weight"] > 0
    assert cfg["camera_path"] == "auto" and cfg["pose_cond_prob"] == 0.5 and cfg["ref_view_strategy"] == "first"
    scores = json.loads((dest / "heldout_scores.json").read_text())
    assert set(scores) == {"window", "spread"}
    model = DA3.from_pretrained(dest / "weights", device="cpu")
    assert model.network.cfg.backbone.embed_dim == 192  # da3-tiny
