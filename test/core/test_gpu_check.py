"""bench/gpu_check.sh on the CPU with tiny settings (a smoke test): the one script a GPU owner runs unchanged must
keep working -- the forward comparison against the official network (same recipe weights: equal outputs), the
training-step figures, the per-section time limits, one log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("depth_anything_3", reason="the official network (make installs it) is section 1's baseline")
    env = {**os.environ, "DEVICE": "cpu", "VARIANTS": "da3-small", "VIEWS": "2", "HEIGHT": "28", "WIDTH": "42",
           "RUNS": "1", "GRAPH": "0", "ORT": "0", "NODE_FRAMES": "0", "TRAIN_STEPS": "1",
           "TRAIN_CONFIGS": "training/configs/tiny_default.yaml", "T_FORWARD": "240", "T_TRAIN": "300",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    dest = tmp_path / "dest"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(dest)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    log = (dest / "gpu_check.log").read_text()
    assert proc.returncode == 0 and "gpu_check done" in log, log[-3000:] + proc.stderr[-2000:]
    assert "failed (exit" not in log and "cut at its" not in log, log[-3000:]
    # section 1: a row for 2 views; ours equals the official network (same recipe weights and input)
    row = next(ln for ln in log.splitlines() if re.match(r"^\s+2 \|", ln))
    cells = [c.strip() for c in row.split("|")]
    assert float(cells[5]) > 0 and float(cells[9]) < 1e-4, row  # ours img/s; depth max rel vs official
    # section 5: the training step's figures
    assert "samples/s" in log and "tiny_default" in log, log[-3000:]
