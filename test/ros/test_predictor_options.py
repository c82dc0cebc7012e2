"""The node's network options reach the model: precision (bf16 on a CPU with native bf16) and backend."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.api import cpu_supports_bf16
from da3_core.data.synthetic.sequence import SyntheticSequence
from da3_core.stream.frame import Frame
from da3_ros.predictors import make_predictor
from da3_ros.replay import parameter_values

SPEC = "kind=objects,seed=1,frames=3,size=168x126"


def _window() -> list[Frame]:
    seq = SyntheticSequence.from_spec(SPEC)
    frames = []
    for i in range(len(seq)):
        f = seq.frame(i)
        frames.append(Frame(stamp_ns=seq.stamp_ns(i), rgb=f.rgb, K=f.K, frame_id="cam"))
    return frames


def _predictor(**params):
    return make_predictor(parameter_values({"device": "cpu", "process_res": 140, **params}))[0]


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 / AMX)")
def test_bf16_precision_runs_the_network_in_bf16_close_to_fp32():
    fp32, bf16 = _predictor(precision="fp32"), _predictor(precision="bf16")
    assert (fp32.model.precision, bf16.model.precision) == ("fp32", "bf16")
    frames = _window()
    a, b = fp32.predict(frames), bf16.predict(frames)
    rel = np.abs(b.depth - a.depth) / a.depth
    assert np.median(rel) < 2e-2 and not np.array_equal(a.depth, b.depth)


def test_onnxruntime_backend_predicts_as_torch(tmp_path):
    torch_pred = _predictor()
    ort_pred = _predictor(backend="onnxruntime", onnx_cache_dir=str(tmp_path), warm_up_size="168x126",
                          window_size=3, overlap=1)
    assert ort_pred.model.backend == "onnxruntime" and len(list(tmp_path.glob("*.onnx"))) == 1  # warmed up
    frames = _window()
    a, b = torch_pred.predict(frames), ort_pred.predict(frames)
    assert np.nanmax(np.abs(b.depth - a.depth) / a.depth) <= 1e-4
    assert np.abs(b.w2c - a.w2c).max() <= 1e-4
    assert ort_pred.model.network.counts["exports"] == 1  # the warm-up's graph served the window
