"""Training loop: config loading, LR schedule, a few real steps, NaN guard, pose conditioning, teacher pseudo-labels,
export to a DA3.from_pretrained folder, and the synthetic benchmark helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from da3_core.eval.pose_metrics import relative_pose_errors
from da3_core.eval.synthetic_benchmark import pose_auc
from da3_core.train import loop
from da3_core.train.loop import NonFiniteError, TrainConfig, Trainer, load_config, lr_at

ROOT = Path(__file__).resolve().parents[2]
TINY = {"resolutions": "[[42,56]]", "views": "[2,3]", "token_budget": 72, "budget_tol": 0.5, "num_workers": 0,
        "threads": 1, "eval_interval": 0, "log_interval": 1, "ckpt_interval": 100, "progress": False,
        "warmup_steps": 2}


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    return load_config(None, {**TINY, "out_dir": str(tmp_path / "run"), **kw})


def test_yaml_matches_defaults_and_overrides() -> None:
    cfg = load_config(ROOT / "training" / "configs" / "tiny_default.yaml")
    assert cfg == TrainConfig()  # the YAML lists the embedded default = the dataclass defaults
    cfg = load_config(ROOT / "training" / "configs" / "tiny_default.yaml", ["--lr=1e-3", "--views=[3,4]",
                                                                            "--resolutions=[[14,28]]"])
    assert cfg.lr == 1e-3 and cfg.views == (3, 4) and cfg.resolutions == ((14, 28),)
    for name in ("small.yaml", "teacher.yaml"):
        load_config(ROOT / "training" / "configs" / name)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["--not_a_key=1"])
    with pytest.raises(ValueError, match="match_softmax must be one of"):
        load_config(None, ["--match_softmax=views"])
    with pytest.raises(ValueError, match="match_into must be one of"):
        load_config(None, ["--match_into=ref"])


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(110, cfg) == pytest.approx(1e-4) and lr_at(500, cfg) == pytest.approx(1e-4)
    lin = TrainConfig(lr=1e-3, min_lr=0.0, warmup_steps=0, max_steps=100, decay="linear")
    assert lr_at(50, lin) == pytest.approx(5e-4)


@pytest.mark.slow
def test_steps_checkpoint_export(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, max_steps=4, ckpt_interval=2, eval_interval=4, eval_samples=2, ref_view_strategy="first")
    tr = Trainer(cfg)
    tr.fit()
    recs = [json.loads(ln) for ln in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [4]
    # the in-run held-out scores are the benchmark's, un-posed and pose-conditioned, on the final weights, with the
    # reference view the run trains with
    from da3_core.eval.synthetic_benchmark import evaluate_conditioned, evaluate_network, heldout_keys
    from da3_core.registry import build_network
    from da3_core.weights.loading import load_weights_strict, read_weights

    net = build_network("da3-tiny")
    load_weights_strict(net, read_weights(tmp_path / "run" / "final")[0], "final")
    keys = heldout_keys(2, seed=cfg.eval_seed)
    ref = {"ref_view_strategy": "first", "path_frames": cfg.eval_path_frames}
    want = evaluate_network(net, keys, seed=cfg.eval_seed, **ref)
    want.update({f"cond/{k}": v for k, v in evaluate_conditioned(net, keys, seed=cfg.eval_seed, **ref).items()})
    assert {k: evals[0][k] for k in want} == pytest.approx(want, rel=1e-5)
    losses = [r for r in recs if "loss" in r]
    assert [r["step"] for r in losses] == [0, 1, 2, 3] and all(math.isfinite(r["loss"]) for r in losses)
    assert all(r["lr"] == pytest.approx(lr_at(r["step"], cfg)) for r in losses)
    ckpts = sorted(p.name for p in (tmp_path / "run").glob("ckpt_*.pt"))
    assert ckpts == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    ck = torch.load(tmp_path / "run" / ckpts[-1], weights_only=False)
    assert ck["model_args"] == {"variant": "da3-tiny"} and ck["config"]["max_steps"] == 4
    assert {"python", "numpy", "torch"} <= set(ck["rng"]) and ck["data"]["step"] == 4
    from da3_core.api import DA3

    model = DA3.from_pretrained(tmp_path / "run" / "final", device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (2, 56, 70, 3), dtype=np.uint8)
    pred = model.predict(list(img), process_res=70)
    assert np.isfinite(pred.depth).all()


def test_init_from_loads_every_weight_and_checks_the_variant(tmp_path: Path) -> None:
    """Fine-tuning starts from the shipped weights exactly (folder form) and from a training checkpoint (.pt)."""
    from da3_core.weights.embedded import EMBEDDED_DEFAULT
    from da3_core.weights.loading import read_weights, to_model_keys

    want = to_model_keys(read_weights(EMBEDDED_DEFAULT)[0])
    tr = Trainer(_cfg(tmp_path, init_from=str(EMBEDDED_DEFAULT)))
    got = tr.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items()) and len(want) > 100
    fresh = Trainer(_cfg(tmp_path / "b"))  # without init_from: the from-scratch init differs
    assert not torch.equal(fresh.net.state_dict()["cam_dec.fc_qvec.weight"], want["cam_dec.fc_qvec.weight"])
    with torch.no_grad():
        tr.net.cam_dec.fc_qvec.bias.add_(1.0)  # a changed weight, to see that the .pt form is read, not the folder
    ckpt = tr.save()
    from_pt = Trainer(_cfg(tmp_path / "e", init_from=str(ckpt))).net.state_dict()
    assert all(torch.equal(from_pt[k], v) for k, v in tr.net.state_dict().items())
    with pytest.raises(ValueError, match="da3-tiny network but the config trains da3-small"):
        Trainer(_cfg(tmp_path / "c", init_from=str(EMBEDDED_DEFAULT), variant="da3-small"))
    with pytest.raises(FileNotFoundError, match="init_from"):
        Trainer(_cfg(tmp_path / "d", init_from=str(tmp_path / "missing")))


@pytest.mark.parametrize(("log_interval", "abort_step"), [(1, 3), (2, 4)])
def test_nonfinite_steps_are_skipped_then_abort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_interval: int,
                                                abort_step: int) -> None:
    """Skipped on the device (no host sync per step); the host checks every log_interval steps and aborts once
    max_nonfinite consecutive steps were skipped."""
    tr = Trainer(_cfg(tmp_path, max_steps=10, max_nonfinite=3, log_interval=log_interval))
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    real = loop.forward_loss

    def nan_loss(*a, **kw):
        loss, parts = real(*a, **kw)
        return loss * float("nan"), parts

    monkeypatch.setattr(loop, "forward_loss", nan_loss)
    with pytest.raises(NonFiniteError):
        tr.fit()
    assert tr.counters["nonfinite_skips"] == abort_step and tr.step == abort_step
    assert all(torch.equal(before[k], v) for k, v in tr.net.state_dict().items())  # nothing was updated
    for state in tr.optimizer.state.values():  # fused AdamW created its moments, but none moved
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()


def test_pose_conditioning_rate_and_teacher_switch(tmp_path: Path) -> None:
    from da3_core.train.teacher import TeacherNetwork, tiny_teacher_config

    tr = Trainer(_cfg(tmp_path, pose_cond_prob=0.2))
    rate = np.mean([tr.pose_condition(s) for s in range(2000)])
    assert abs(rate - 0.2) < 0.03
    assert [tr.pose_condition(s) for s in range(50)] == [tr.pose_condition(s) for s in range(50)]
    torch.save(TeacherNetwork(tiny_teacher_config()).state_dict(), tmp_path / "teacher.pt")
    tr = Trainer(_cfg(tmp_path, out_dir=str(tmp_path / "t"), teacher_ckpt=str(tmp_path / "teacher.pt"),
                      teacher_switch_step=1, max_steps=2, pose_cond_prob=1.0))
    stream = tr.batches()
    r0 = tr.train_step(next(stream))
    tr.step += 1
    r1 = tr.train_step(next(stream))
    assert not r0["teacher"] and r1["teacher"] and r0["pose_cond"] and math.isfinite(r1["loss"])


def test_pose_auc_and_relative_errors() -> None:
    assert pose_auc(np.zeros(5)) == pytest.approx(1.0, abs=1e-2)
    assert pose_auc(np.full(5, 31.0)) == 0.0
    assert pose_auc(np.array([15.0])) == pytest.approx(0.5, abs=1e-2)
    rng = np.random.default_rng(0)
    def rot(n: int) -> np.ndarray:
        q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
        return q * np.sign(np.linalg.det(q))[:, None, None]

    T = np.tile(np.eye(4), (4, 1, 1))
    T[:, :3, :3] = rot(4)
    T[:, :3, 3] = rng.normal(size=(4, 3))
    S = T.copy()
    S[:, :3, 3] *= 3.0  # same cameras at another scale, in the same world frame
    G = np.eye(4)
    G[:3, :3] = rot(1)[0]
    G[:3, 3] = (1.0, 2.0, 3.0)
    pe = relative_pose_errors(S @ G, T, symmetric=False)  # the benchmark's errors
    r, t = pe.rot_deg, pe.trans_deg  # another world frame, another scale: no error
    assert r.shape == (6,) and np.allclose(r, 0, atol=1e-4) and np.allclose(t, 0, atol=1e-4)
    pe = relative_pose_errors(np.tile(np.eye(4), (4, 1, 1)), T, symmetric=False)
    r, t = pe.rot_deg, pe.trans_deg
    assert np.all(t == 180.0) and np.all(r > 0)
