"""The main job (``make demo``) end to end: synthetic bag -> live node -> outputs and accuracy figures."""

from __future__ import annotations

import json

import pytest

from da3_ros.demo import main

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_main_job_writes_outputs_and_scores(tmp_path, ros_env, capsys):
    out = tmp_path / "demo"
    spec = "kind=room,seed=1,frames=14,path=walk,size=168x126,fov=70,fps=10,t0=1"
    code = main(["--out", str(out), "--spec", spec, "--process-res", "168", "--rate", "0.5",
                 "--domain-id", ros_env["ROS_DOMAIN_ID"]])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for name in ("map.ply", "trajectory.tum", "map.png", "scores.json"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    assert scores["depth"]["frames"] == 14  # windows 8 + 6: every frame processed and received
    assert 0.0 <= scores["depth"]["delta1"] <= 1.0
    assert scores["trajectory"]["poses"] == 14
    assert "AbsRel" in printed.out and "[4/4]" in printed.out


def test_main_job_with_exact_geometry_scores_perfectly(tmp_path, ros_env, capsys):
    """With the geometry oracle in the node, the live path and the scoring must reproduce the ground truth."""
    out = tmp_path / "oracle"
    spec = "kind=room,seed=2,frames=14,path=walk,size=168x126,fov=70,fps=10,t0=1"
    assert main(["--out", str(out), "--spec", spec, "--oracle", "--domain-id", ros_env["ROS_DOMAIN_ID"]]) == 0, \
        capsys.readouterr().err
    scores = json.loads((out / "scores.json").read_text())
    assert scores["depth"]["abs_rel"] < 1e-4 and scores["depth"]["delta1"] == 1.0
    assert scores["trajectory"]["poses"] == 14 and scores["trajectory"]["ate_rel_extent"] < 1e-4
    assert scores["map"]["f1"] > 0.95
