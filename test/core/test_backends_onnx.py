"""ONNX export + ONNX Runtime (CPU) against the eager torch network: same weights, same inputs.

Reference = the eager network (whose numerics the golden tests tie to the official one). Small networks (da3-tiny,
a 4-block mono/metric model, a nested pair of both) run in the fast suite; da3-small and da3metric-large with recipe
weights are ``slow`` (export of ViT-L takes minutes and several GB here).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from da3_core import DA3, build_network
from da3_core.backends.onnx_export import export_onnx, read_graph_info
from da3_core.backends.onnx_runtime import OnnxRuntimeNetwork
from da3_core.backends.split import GraphSpec
from da3_core.config import NestedConfig, mono_config
from da3_core.registry import get_config
from da3_core.weights.recipe import apply_recipe

pytest.importorskip("onnxruntime")

DEPTH_REL, EXTR_ABS = 1e-4, 1e-4


def tiny_mono_config(is_metric: bool = True):
    """A 4-block, 96-wide mono/metric network (DPT + sky head), for fast tests of the sky tail."""
    cfg = mono_config(is_metric)
    bb = replace(cfg.backbone, embed_dim=96, num_heads=2, depth=4, out_layers=(0, 1, 2, 3))
    return replace(cfg, backbone=bb, head=replace(cfg.head, dim_in=96, features=16, out_channels=(12, 24, 48, 96)))


def _inputs(views: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, views, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _eager(net, *args, **kwargs) -> dict:
    with torch.inference_mode():
        torch.manual_seed(0)
        return {k: v for k, v in net(*args, **kwargs).items() if isinstance(v, torch.Tensor)}


def _ort(path, cfg, *args, **kwargs) -> dict:
    with torch.inference_mode():
        torch.manual_seed(0)
        return OnnxRuntimeNetwork([path], threads=1, cfg=cfg)(*args, **kwargs)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


def _assert_anyview_equal(got: dict, ref: dict) -> None:
    assert _max_rel(got["depth"], ref["depth"]) <= DEPTH_REL
    assert _max_rel(got["depth_conf"], ref["depth_conf"]) <= DEPTH_REL
    assert float((got["extrinsics"] - ref["extrinsics"]).abs().max()) <= EXTR_ABS
    assert _max_rel(got["intrinsics"][..., :2, :], ref["intrinsics"][..., :2, :]) <= DEPTH_REL
    assert float((got["ray"] - ref["ray"]).abs().max()) <= 1e-3 * float(ref["ray"].abs().max())


def _assert_sky_equal(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Sky scores (ReLU, many exact zeros) within 1e-4 of their range, and the same sky pixels."""
    assert float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
    assert torch.equal(got >= 0.3, ref >= 0.3)


@pytest.fixture(scope="module")
def tiny():
    return apply_recipe(build_network("da3-tiny")).eval()


def test_anyview_graph_equals_eager_with_reference_choice_inside(tiny, tmp_path):
    # 4 views: saddle_balanced chooses a reference from the content, inside the graph
    x = _inputs(4, 126, 168)
    path = tmp_path / "tiny.onnx"
    info = export_onnx(tiny, GraphSpec(4, 126, 168, ref_view="saddle_balanced"), path, "da3-tiny")
    assert read_graph_info(path) == info and info.kind == "anyview"
    ref = _eager(tiny, x, ref_view_strategy="saddle_balanced")
    assert int(ref["ref_index"][0]) != 0, "inputs must make the reference choice move a view (reorder exercised)"
    got = _ort(path, tiny.cfg, x, ref_view_strategy="saddle_balanced")
    _assert_anyview_equal(got, ref)
    # the other inputs change the reference (data-dependent choice, not a constant of the trace)
    x2 = torch.flip(x, dims=(1,))
    _assert_anyview_equal(_ort(path, tiny.cfg, x2, ref_view_strategy="saddle_balanced"),
                          _eager(tiny, x2, ref_view_strategy="saddle_balanced"))
    # ray poses: the host solves the graph's ray map with the same seeded RANSAC
    got = _ort(path, tiny.cfg, x, ref_view_strategy="saddle_balanced", use_ray_pose=True)
    ref = _eager(tiny, x, ref_view_strategy="saddle_balanced", use_ray_pose=True)
    assert float((got["extrinsics"] - ref["extrinsics"]).abs().max()) <= EXTR_ABS


@pytest.mark.slow
def test_conditioned_graph_equals_eager(tiny, tmp_path):
    x = _inputs(3, 112, 140, seed=1)
    w2c = torch.eye(4).repeat(1, 3, 1, 1)
    w2c[0, :, 0, 3] = torch.tensor([0.0, 0.3, 0.7])
    w2c[0, 2, :3, :3] = torch.tensor([[0.98, 0.0, 0.2], [0.0, 1.0, 0.0], [-0.2, 0.0, 0.98]])
    K = torch.tensor([[120.0, 0, 70], [0, 120.0, 56], [0, 0, 1]]).repeat(1, 3, 1, 1)
    path = tmp_path / "cond.onnx"
    export_onnx(tiny, GraphSpec(3, 112, 140, conditioned=True, ref_view="first"), path, "da3-tiny")
    _assert_anyview_equal(_ort(path, tiny.cfg, x, w2c, K, ref_view_strategy="first"), _eager(tiny, x, w2c, K, "first"))


@pytest.mark.slow
def test_mono_and_nested_host_tail_equals_eager(tmp_path):
    # a metric model's sky clamp (data-dependent, sampled quantiles) and the nested alignment run on the host
    mono = apply_recipe(build_network(tiny_mono_config())).eval()
    x = _inputs(1, 126, 168, seed=2)
    path = tmp_path / "mono.onnx"
    export_onnx(mono, GraphSpec(1, 126, 168), path, "tiny-metric")
    ref = _eager(mono, x)
    raw = _eager(mono, x, sky_fill=False)
    sky = ref["sky"] >= 0.3
    assert 10 < int(sky.sum()) < sky.numel() - 10, "inputs must have sky and non-sky pixels (clamp exercised)"
    assert not torch.equal(raw["depth"], ref["depth"])
    got = _ort(path, mono.cfg, x)
    assert _max_rel(got["depth"], ref["depth"]) <= DEPTH_REL
    _assert_sky_equal(got["sky"], ref["sky"])

    nested = apply_recipe(build_network(NestedConfig(anyview=get_config("da3-tiny"), metric=tiny_mono_config())))
    nested.eval()
    path = tmp_path / "nested.onnx"
    export_onnx(nested, GraphSpec(3, 126, 168, ref_view="first"), path, "tiny-nested")
    x = _inputs(3, 126, 168, seed=3)
    K = torch.tensor([[150.0, 0, 84], [0, 150.0, 63], [0, 0, 1]]).repeat(1, 3, 1, 1)
    for focal in (None, K):  # predicted focal, then the known one (intrinsics without extrinsics)
        ref = _eager(nested, x, None, focal, "first")
        got = _ort(path, nested.cfg, x, None, focal, "first")
        assert _max_rel(got["scale_factor"].reshape(1), ref["scale_factor"].reshape(1)) <= DEPTH_REL
        _assert_anyview_equal(got, ref)


def test_api_backend_exports_on_demand_and_matches_torch(tiny, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (126, 168, 3), dtype=np.uint8) for _ in range(3)]
    torch_model = DA3.from_network(tiny, variant="da3-tiny", device="cpu")
    ort_model = DA3.from_network(apply_recipe(build_network("da3-tiny")), variant="da3-tiny", device="cpu",
                                 backend="onnxruntime", cache_dir=tmp_path)
    assert ort_model.backend == "onnxruntime" and "onnxruntime" in repr(ort_model)
    a = ort_model.predict(images, process_res=168, ref_view="first")
    b = torch_model.predict(images, process_res=168, ref_view="first")
    assert np.nanmax(np.abs(a.depth - b.depth) / b.depth) <= DEPTH_REL
    assert np.abs(a.extrinsics - b.extrinsics).max() <= EXTR_ABS
    assert ort_model.network.counts["exports"] == 1
    files = sorted(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and files[0].name.startswith("da3-tiny-3x126x168-free-first-")
    # a second model with the same weights finds the cached graph; a torch-free model runs it
    again = DA3.from_network(apply_recipe(build_network("da3-tiny")), variant="da3-tiny", device="cpu",
                             backend="onnxruntime", cache_dir=tmp_path)
    again.predict(images, process_res=168, ref_view="first")
    assert again.network.counts["exports"] == 0
    bare = DA3.from_onnx(files[0])
    assert bare.variant == "da3-tiny"
    c = bare.predict(images, process_res=168, ref_view="first")
    assert np.array_equal(c.depth, a.depth, equal_nan=True)
    # a window it has no graph for: refused with the command that makes one
    with pytest.raises(ValueError, match=r"da3 export --onnx .*--views 2 --height 126 --width 168"):
        bare.predict(images[:2], process_res=168, ref_view="first")


def test_backend_refusals(tiny, tmp_path):
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        DA3.from_network(tiny, device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="fp32"):
        DA3.from_network(tiny, device="cpu", backend="onnxruntime", precision="bf16", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="da3 export --onnx"):
        DA3.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="multiples of 14"):
        GraphSpec(2, 100, 140)


# --- official sizes, recipe weights (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_da3_small_exported_equals_torch(tmp_path):
    net = apply_recipe(build_network("da3-small")).eval()
    x = _inputs(3, 280, 504, seed=4)
    path = tmp_path / "da3-small.onnx"
    export_onnx(net, GraphSpec(3, 280, 504, ref_view="saddle_balanced"), path, "da3-small")
    _assert_anyview_equal(_ort(path, net.cfg, x), _eager(net, x))


@pytest.mark.slow
def test_da3metric_large_exported_equals_torch(tmp_path):
    # lean: one view at 126x168 (the export of ViT-L still takes minutes and ~1.3 GB of weights on disk)
    net = apply_recipe(build_network("da3metric-large")).eval()
    x = _inputs(1, 126, 168, seed=5)
    path = tmp_path / "da3metric-large.onnx"
    export_onnx(net, GraphSpec(1, 126, 168), path, "da3metric-large")
    ref = _eager(net, x)
    got = _ort(path, net.cfg, x)
    assert _max_rel(got["depth"], ref["depth"]) <= DEPTH_REL
    _assert_sky_equal(got["sky"], ref["sky"])


def test_cli_export_then_infer_from_the_graph(tiny, tmp_path, capsys):
    from da3_core.cli import main

    out = tmp_path / "tiny.onnx"
    # a 320x240 camera at process_res 168 -> 168x126 processed (as the node and infer compute it)
    assert main(["export", "--onnx", "--recipe", "da3-tiny", "--views", "2", "--image-size", "320x240",
                 "--process-res", "168", "--out", str(out)]) == 0
    info = read_graph_info(out)
    assert (info.variant, info.spec.key, info.spec.ref_view) == ("da3-tiny", (2, 126, 168, False), "first")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(2)]
    a = DA3.from_onnx(out).predict(images, process_res=168, ref_view="first")
    b = DA3.from_network(tiny, device="cpu").predict(images, process_res=168, ref_view="first")
    assert np.nanmax(np.abs(a.depth - b.depth) / b.depth) <= DEPTH_REL
    assert np.abs(a.extrinsics - b.extrinsics).max() <= EXTR_ABS
    capsys.readouterr()
    assert main(["export", "--onnx", "--recipe", "da3-tiny", "--views", "2", "--out", str(out)]) == 2
    assert "--height H --width W" in capsys.readouterr().err
    assert main(["export", "--onnx", "--views", "2", "--height", "14", "--width", "14", "--out", str(out)]) == 2
    assert "exactly one of --weights" in capsys.readouterr().err
