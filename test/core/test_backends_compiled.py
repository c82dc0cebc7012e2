"""Launch-free inference (``backend="torch_graph"``): the captured window equals the eager network; other windows
fall back to eager and are counted. CPU: torch.compile (slow: inductor compiles C++ kernels); CUDA: a CUDA graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from da3_core import DA3, build_network
from da3_core.backends.compiled import CapturedNetwork
from da3_core.backends.split import GraphSpec
from da3_core.weights.recipe import apply_recipe


def _net():
    return apply_recipe(build_network("da3-tiny")).eval()


def _x(views: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, views, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _run(net, *args, **kwargs) -> dict:
    with torch.inference_mode():
        return net(*args, **kwargs)


def test_other_windows_fall_back_to_eager_and_are_counted():
    net = _net()
    captured = CapturedNetwork(net, GraphSpec(4, 56, 70, ref_view="first"))
    x3 = _x(3, 56, 70)
    ref = _run(net, x3, ref_view_strategy="first")
    got = _run(captured, x3, ref_view_strategy="first")  # 3 views, the graph takes 4
    assert torch.equal(got["depth"], ref["depth"]) and torch.equal(got["extrinsics"], ref["extrinsics"])
    _run(captured, _x(4, 56, 84), ref_view_strategy="first")  # other width
    _run(captured, _x(4, 56, 70), ref_view_strategy="saddle_balanced")  # 4 views: the strategy matters
    assert captured.counts == {"fallback_shape": 2, "eager_runs": 3, "fallback_ref_view": 1}
    assert captured._runner is None  # nothing captured for windows it does not hold
    with pytest.raises(ValueError, match="cuda_graph' needs a CUDA device"):
        _run(CapturedNetwork(net, GraphSpec(4, 56, 70, ref_view="first"), mode="cuda_graph"),
             _x(4, 56, 70), ref_view_strategy="first")


@pytest.mark.slow
def test_cpu_compiled_window_equals_eager_and_shape_change_falls_back():
    net = _net()
    model = DA3.from_network(net, variant="da3-tiny", device="cpu", backend="torch_graph")
    eager = DA3.from_network(_net(), variant="da3-tiny", device="cpu")
    assert model.warm_up(2, 56, 70) > 0  # compiles the 2-view 56x70 window (first window fixes the shape)
    counts = model.network.counts
    assert counts["captures"] == 1 and counts["graph_runs"] == 1
    x = _x(2, 56, 70, seed=1)
    got = model.run_network(x, ref_view="first")
    ref = eager.run_network(x, ref_view="first")
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "ray"):
        scale = float(ref[key].abs().max())
        assert float((got[key] - ref[key]).abs().max()) <= 1e-4 * max(1.0, scale), key
    assert counts["graph_runs"] == 2 and counts["captures"] == 1
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 75, 3), dtype=np.uint8) for _ in range(3)]
    pred = model.predict(images, process_res=70, ref_view="first")  # 3 views: falls back, counted
    assert np.isfinite(pred.depth).all() and counts["fallback_shape"] == 1 and counts["eager_runs"] == 1


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_equals_eager_and_shape_change_falls_back(precision):
    model = DA3.from_network(_net(), variant="da3-tiny", device="cuda", precision=precision, backend="torch_graph")
    eager = DA3.from_network(_net(), variant="da3-tiny", device="cuda", precision=precision)
    model.warm_up(4, 126, 168)
    assert model.network.counts["captures"] == 1 and isinstance(model.network._runner, tuple)  # a CUDA graph
    x = _x(4, 126, 168, seed=2)
    for _ in range(2):  # replays reuse the static buffers: outputs of one call must not change the next
        got = model.run_network(x, ref_view="first")
        ref = eager.run_network(x, ref_view="first")
        tol = 1e-4 if precision == "fp32" else 2e-2
        assert float(((got["depth"] - ref["depth"]).abs() / ref["depth"]).max()) <= tol
        assert float((got["extrinsics"] - ref["extrinsics"]).abs().max()) <= tol
    model.run_network(_x(2, 126, 168), ref_view="first")
    assert model.network.counts["fallback_shape"] == 1 and model.network.counts["graph_runs"] == 3
