"""DDP and FSDP2 with 2 gloo processes: the averaged gradients equal single-process gradients on the concatenated
batch (DDP with the displacement read-out beside the network); an FSDP2 checkpoint state dict is the full, unsharded
one."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from da3_core.train.distributed import DistInfo, setup_distributed, unwrap_model, wrap_model
from da3_core.train.loop import forward_loss
from da3_core.train.losses import StudentLossConfig

VIEWS, HW = 3, (42, 56)
# the matching and view-scale losses included
LOSS = {"loss_cfg": StudentLossConfig(match_weight=1.0, view_scale_weight=1.0), "match_layers": (3,)}
# DDP also trains the displacement loss's read-out (da3_core.train.displacement, with the parallax; FSDP2 refuses it)
LOSS_DISP = {"loss_cfg": StudentLossConfig(match_weight=1.0, disp_weight=1.0, view_scale_weight=1.0),
             "match_layers": (3,), "disp_parallax": True}


def _batch() -> dict[str, torch.Tensor]:
    """4 samples of closed rooms (every pixel has depth), 3 views each (reference-view selection active)."""
    from da3_core.train.data import SyntheticSceneDataset

    ds = SyntheticSceneDataset(8, kinds=("room",), seed=3)
    items = [ds[(i, *HW, VIEWS)] for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items])for k in ("images", "depth", "w2c", "K")}
    assert torch.isfinite(batch["depth"]).all()
    return batch


def _model(disp: bool = False) -> torch.nn.Module:
    """The tiny network; ``disp``: wrapped with a displacement read-out whose (seeded, non-zero) projection sends
    the displacement loss's gradient into the backbone."""
    from da3_core.registry import build_network
    from da3_core.train.displacement import DisplacementReadout, WithDisplacementReadout
    from da3_core.train.loop import init_weights

    torch.manual_seed(0)
    net = build_network("da3-tiny")
    init_weights(net)
    if not disp:
        return net
    readout = DisplacementReadout(192, 1, out=4)
    torch.nn.init.normal_(readout.proj[0].weight, std=0.05)
    return WithDisplacementReadout(net, readout)


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients by name; FSDP2's sharded gradients (DTensor) are gathered to the full tensor."""
    full = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad)
            for n, p in net.named_parameters() if p.grad is not None}
    return {n: g.detach().clone() for n, g in full.items()}


def _worker(rank: int, world: int, port: int, batch: dict[str, torch.Tensor], out: dict, fsdp: bool) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = setup_distributed("cpu")
    assert info.ddp and info.world_size == world and info.rank == rank
    model = wrap_model(_model(disp=not fsdp), info, fsdp=fsdp)
    if fsdp:  # the checkpoint writer's state dict (a collective: every rank calls it; rank 0 gets it)
        from da3_core.train.checkpoint import model_state_dict

        state = model_state_dict(model)
        if rank == 0:
            out["state"] = state
    per = batch["images"].shape[0] // world
    mine = {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}
    loss, _ = forward_loss(model, mine, **(LOSS if fsdp else LOSS_DISP))
    loss.backward()
    out[rank] = _grads(unwrap_model(model))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module:UserWarning")  # outputs are views; the loss never edits them
def test_ddp_gradients_match_single_process(fsdp: bool) -> None:
    """atol 1e-6 (DDP) / 1e-5 (FSDP2) plus rtol 1e-5: the two sides sum float32 gradients in a different order (a
    few gradients of magnitude ~1 differ by ~1.7e-6 with DDP, ~6e-6 with FSDP2's reduce-scatter); the network casts
    its heads to float32, so a float64 comparison is not possible."""
    torch.set_num_threads(1)
    batch = _batch()
    net = _model(disp=not fsdp)
    assert DistInfo().is_master and not DistInfo().ddp
    loss, parts = forward_loss(net, batch, **(LOSS if fsdp else LOSS_DISP))
    loss.backward()
    ref = _grads(net)
    assert parts["vscale"] > 0  # the untrained network's views are not in one depth scale
    if not fsdp:  # the read-out and the supervised block's parameters get gradients from the displacement loss
        assert parts["disp"] > 0 and ref["readout.proj.0.weight"].abs().sum() > 0

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), batch, out, fsdp), nprocs=2, join=True)
        got = dict(out)
    if fsdp:
        full = got.pop("state")
        want = _model().state_dict()
        assert full.keys() == want.keys() and all(torch.equal(full[k], want[k]) for k in want)
    assert set(got) == {0, 1}
    for rank in (0, 1):
        assert got[rank].keys() == ref.keys()
        for name, g in ref.items():
            torch.testing.assert_close(got[rank][name], g, rtol=1e-5, atol=1e-5 if fsdp else 1e-6,
                                       msg=lambda m, n=name: f"{n}: {m}")
    # both ranks hold the same averaged gradient
    assert all(torch.equal(got[0][n], got[1][n]) for n in ref)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module:UserWarning")
def test_fsdp2_training_writes_full_checkpoints_and_export(tmp_path) -> None:
    """``torchrun --nproc_per_node 2 training/train.py --fsdp=true`` on gloo: checkpoints and the final export hold
    the whole, unsharded network (gathering the shards is a collective every rank joins; it used to abort rank 0)."""
    import subprocess
    import sys
    from pathlib import Path

    from da3_core.api import DA3
    from da3_core.registry import build_network

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    args = ["--variant=da3-tiny", "--resolutions=[[42,56]]", "--views=[2,3]", "--token_budget=72", "--budget_tol=0.5",
            "--num_workers=0", "--threads=1", "--eval_interval=0", "--log_interval=1", "--ckpt_interval=2",
            "--max_steps=2", "--warmup_steps=1", "--progress=false", "--fsdp=true", "--disp_weight=0",
            f"--out_dir={out}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(root / "training" / "train.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "ckpt_00000002.pt", map_location="cpu", weights_only=False)
    want = build_network("da3-tiny").state_dict()
    assert ckpt["model"].keys() == want.keys()
    assert all(ckpt["model"][k].shape == v.shape and type(ckpt["model"][k]) is torch.Tensor for k, v in want.items())
    assert ckpt["optimizer"]["state"]  # the gathered AdamW moments
    model = DA3.from_pretrained(out / "final", device="cpu")
    final = model.network.state_dict()
    assert all(torch.equal(final[k], ckpt["model"][k]) for k in want)  # the export is the last step's network
