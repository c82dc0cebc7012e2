"""The shipped embedded default is a trained network: on held-out synthetic scenes it beats the trivial baselines.

Runs ``training/evaluate.py`` (the command TRAINING.md quotes) on a smaller held-out set than the documented 240 items
and checks its verdicts; the scores come from ground-truth geometry of scenes the model never saw (dataset seed
10000; training uses seed 0).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from da3_core.weights.embedded import EMBEDDED_DEFAULT

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (EMBEDDED_DEFAULT / "model.safetensors").is_file(),
                                reason="no embedded default weights in this checkout")


def _evaluate_main():
    spec = importlib.util.spec_from_file_location("da3_training_evaluate", ROOT / "training" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.slow
def test_embedded_default_beats_trivial_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _evaluate_main()(["--samples", "24", "--json", str(tmp_path / "scores.json")])
    assert json.loads((tmp_path / "scores.json").read_text()) == json.loads(json.dumps(results))
    out = capsys.readouterr().out
    assert "protocol 'window'" in out and "protocol 'spread'" in out
    assert out.count("depth better than constant depth and the untrained network (AbsRel, delta1): yes") == 2
    assert out.count("poses learned (median rotation error below identity") == 2
    window = results["window"]
    trained = next(v for k, v in window.items() if k.startswith("trained"))
    untrained, const, ident = window["untrained network"], window["constant_depth"], window["identity_poses"]
    # depth: clearly better than a constant guess and than the same network untrained
    assert trained["abs_rel"] < 0.85 * min(const["abs_rel"], untrained["abs_rel"]), window
    assert trained["delta1"] > max(const["delta1"], untrained["delta1"]) + 0.05, window
    # poses: a higher AUC@30 than identity poses and the untrained network
    assert trained["pose_auc30"] > max(ident["pose_auc30"], untrained["pose_auc30"]), window
