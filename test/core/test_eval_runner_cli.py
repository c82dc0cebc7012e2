"""Runner with an oracle model (ground truth as prediction scores perfectly) and `da3 eval` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from da3_core.api import Prediction
from da3_core.eval.datasets import load_dataset
from da3_core.eval.runner import EvalConfig, run_evaluation

SPEC = "synthetic:kind=room,seed=3,frames=4,size=56x42"


class OracleModel:
    """Ground truth expressed in another similarity frame (scale 2, rotated, shifted): a perfect relative model."""

    def __init__(self, scene):
        self.scene = scene

    def predict(self, images, intrinsics=None, **_):
        fr = self.scene.frames
        G = np.eye(4)
        c, s = np.cos(0.3), np.sin(0.3)
        G[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        G[:3, 3] = [1.0, 2.0, 0.5]
        w2c = np.stack([f.w2c @ np.linalg.inv(G) for f in fr])
        w2c[:, :3, 3] *= 2.0
        return Prediction(depth=np.stack([2.0 * f.depth for f in fr]).astype(np.float32), conf=None, sky=None,
                          extrinsics=w2c, intrinsics=np.stack([f.K for f in fr]), is_metric=False)


def test_ground_truth_as_prediction_scores_perfectly():
    (scene,) = load_dataset(SPEC)
    summary, results = run_evaluation(OracleModel(scene), [scene], EvalConfig(f1_threshold=0.05))
    m = results[0].metrics
    assert m["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-6) and m["depth"]["delta1"] == 1.0
    assert m["pose"]["auc@3"] == 1.0 and m["pose"]["auc@30"] == 1.0 and m["pose"]["ate_rmse"] < 1e-6
    rec = m["reconstruction"]
    assert rec["f1"] == 1.0 and rec["chamfer"] < 1e-6 and rec["scale"] == pytest.approx(0.5)
    assert summary["aggregate"]["pose_pooled"]["auc@30"] == 1.0


def test_cli_end_to_end_untrained_on_tiny_synthetic(tmp_path):
    from da3_core.cli import main

    out = tmp_path / "report"
    rc = main(["eval", "--untrained", "--dataset", SPEC, "--out", str(out), "--process-res", "56", "--device", "cpu",
               "--ref-view", "first"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["model"].startswith("UNTRAINED") and len(data["scenes"]) == 1
    assert data["config"]["ref_view"] == "first"
    m = data["scenes"][0]["metrics"]
    assert {"depth", "pose", "reconstruction"} <= set(m) and 0.0 <= m["pose"]["auc@30"] <= 1.0
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "pose_accuracy_curve.png" in pngs and any(p.startswith("depth_") for p in pngs)
    assert all(f"plots/{p}" in md for p in pngs)


def test_cli_errors_are_clear(tmp_path, capsys):
    from da3_core.cli import main

    assert main(["eval", "--untrained", "--dataset", f"tum:{tmp_path / 'missing'}", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
