"""Cross-layer equalization: the float function unchanged in ONNX Runtime, per-tensor int8 SQNR improved."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from models import F, make, run
from tensorslim.algorithms.equalization import equalize_pair, input_channel_ranges, output_channel_ranges
from tensorslim.algorithms.quantize import QuantScheme, choose_qparams, quantize_dequantize
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.equalize import EqualizeConfig, EqualizePass, find_pairs
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline


def imbalanced_cnn(seed: int = 0, depthwise: bool = False) -> onnx.ModelProto:
    """Conv -> Relu -> Conv (or depthwise) -> Relu -> Conv with channel ranges spread over 3 decades."""
    r = np.random.default_rng(seed)
    spread = np.logspace(-1.5, 1.5, 16).astype(np.float32)
    w1 = (r.standard_normal((16, 3, 3, 3)) * spread.reshape(-1, 1, 1, 1)).astype(np.float32)
    w2 = (r.standard_normal((16, 1, 3, 3)) if depthwise else r.standard_normal((16, 16, 3, 3)) * 0.2).astype(np.float32)
    w3 = (r.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         group=16 if depthwise else 1),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "W3"], ["y"], name="conv3"),
    ]  # fmt: skip
    inits = {"W1": w1, "B1": (r.standard_normal(16) * spread * 0.1).astype(np.float32), "W2": w2,
             "B2": (r.standard_normal(16) * 0.1).astype(np.float32), "W3": w3}  # fmt: skip
    return make(nodes, [("x", F, ["b", 3, 8, 8])], [("y", F, ["b", 8, 8, 8])], inits)


def per_tensor_sqnr(w: np.ndarray) -> float:
    """Mean over output channels of each channel's SQNR (dB) under one per-tensor int8 scale."""
    qp = choose_qparams(w, scheme=QuantScheme.SYMMETRIC)
    err = (quantize_dequantize(w, qp) - w).astype(np.float64).reshape(w.shape[0], -1)
    sig = w.astype(np.float64).reshape(w.shape[0], -1)
    return float(np.mean(10 * np.log10(np.sum(sig**2, axis=1) / np.maximum(np.sum(err**2, axis=1), 1e-30))))


@pytest.mark.parametrize("depthwise", [False, True])
def test_equalization_keeps_the_function_and_improves_per_tensor_sqnr(depthwise: bool) -> None:
    model = imbalanced_cnn(depthwise=depthwise)
    assert len(find_pairs(model)) == 2
    res = EqualizePass()(model)
    onnx.checker.check_model(res.model)
    assert res.modified and "2 Conv pair(s)" in res.notes[0]
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref, out = run(model, {"x": x})[0], run(res.model, {"x": x})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    gain = per_tensor_sqnr(after["W1"]) - per_tensor_sqnr(before["W1"])
    assert gain > 6.0, gain  # at least one bit per channel on average
    # the input model is untouched
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), before["W1"])


@settings(max_examples=30, deadline=None)
@given(o=st.integers(1, 8), o2=st.integers(1, 6), seed=st.integers(0, 1000))
def test_equalize_pair_balances_ranges_and_is_an_identity(o: int, o2: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    w1 = r.standard_normal((o, 3)) * r.uniform(0.01, 10, (o, 1))
    b1 = r.standard_normal(o)
    w2 = r.standard_normal((o2, o))
    n1, nb, n2, s = equalize_pair(w1, b1, w2)
    np.testing.assert_allclose(output_channel_ranges(n1), input_channel_ranges(n2), rtol=1e-4)
    x = r.standard_normal((5, 3))
    y = np.maximum(x @ w1.T + b1, 0) @ w2.T
    y2 = np.maximum(x @ n1.T.astype(np.float64) + nb, 0) @ n2.T.astype(np.float64)
    np.testing.assert_allclose(y2, y, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(y).max()))


def test_static_quant_runs_equalization_first() -> None:
    model = imbalanced_cnn()
    data = Dataset({"x": np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32)})
    feeds = {"x": data.inputs["x"]}
    ref = run(model, feeds)[0]
    errs = {}
    for eq in (False, True):
        cfg = StaticQuantConfig(latency_check=False, granularity="per_tensor", equalize=eq, fallback_sqnr_db=0.0)
        res = static_pipeline(cfg, data)(model)
        errs[eq] = float(np.linalg.norm(run(res.model, feeds)[0] - ref) / np.linalg.norm(ref))
        assert eq == any("cross-layer equalization" in n for n in res.notes)
    assert errs[True] < errs[False], errs


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_iterations"):
        EqualizeConfig(max_iterations=0)
