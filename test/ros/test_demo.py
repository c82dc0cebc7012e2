"""The main job (``make demo``) end to end, as users run it (its own process): synthetic bag -> live node ->
outputs and accuracy figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _demo(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "da3_ros.demo", *args, "--domain-id", env["ROS_DOMAIN_ID"]],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_main_job_writes_outputs_and_scores(tmp_path, ros_env):
    out = tmp_path / "demo"
    spec = "kind=room,seed=1,frames=14,path=walk,size=168x126,fov=70,fps=10,t0=1"
    run = _demo(["--out", str(out), "--spec", spec, "--process-res", "168", "--rate", "0.5"], ros_env)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("map.ply", "trajectory.tum", "map.png", "scores.json"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    assert scores["depth"]["frames"] == 14  # windows 8 + 6: every frame processed and received
    assert 0.0 <= scores["depth"]["delta1"] <= 1.0
    assert scores["trajectory"]["poses"] == 14
    assert "AbsRel" in run.stdout and "[4/4]" in run.stdout


def test_main_job_with_exact_geometry_scores_perfectly(tmp_path, ros_env):
    """With the geometry oracle in the node, the live path and the scoring must reproduce the ground truth."""
    out = tmp_path / "oracle"
    spec = "kind=room,seed=2,frames=14,path=walk,size=168x126,fov=70,fps=10,t0=1"
    run = _demo(["--out", str(out), "--spec", spec, "--oracle"], ros_env)
    assert run.returncode == 0, run.stdout + run.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["depth"]["frames"] == 14
    assert scores["depth"]["abs_rel"] < 1e-4 and scores["depth"]["delta1"] == 1.0
    assert scores["trajectory"]["poses"] == 14 and scores["trajectory"]["ate_rel_extent"] < 1e-4
    assert scores["map"]["f1"] > 0.95
