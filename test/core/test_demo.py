"""The demo (``make demo``) runs end to end on the synthetic scene and writes what it says it writes."""

from __future__ import annotations

import json

from da3_core.demo import main


def test_demo_writes_outputs_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--frames", "3", "--size", "168x126"]) == 0
    for name in ("results.npz", "points.ply", "cameras.json", "trajectory.tum", "scores.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "depth").glob("*.png"))) == 3 and len(list((out / "depth_gt").glob("*.png"))) == 3
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 <= scores["depth_delta1"] <= 1.0 and scores["depth_abs_rel"] >= 0.0
    assert "trajectory_ate_rmse_m" in scores
    printed = capsys.readouterr().out
    assert "AbsRel" in printed and "[4/4]" in printed


def test_demo_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--weights", str(tmp_path / "missing")]) == 2
    assert "downloaded at run time" in capsys.readouterr().err
