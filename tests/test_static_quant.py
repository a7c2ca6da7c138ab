"""Static int8 QDQ: calibration, ONNX Runtime fusion into integer kernels, accuracy on the bundled example."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, make, optimized_op_types, run
from tensorslim import quantize
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_quant import StaticQuantConfig, StaticQuantPass, plan_static_quant
from tensorslim.pipeline import static_pipeline


def small_cnn(seed: int = 0):
    r = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["y"], name="fc", transB=1),
    ]
    inits = {
        "W1": (r.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32),
        "B1": r.standard_normal(16).astype(np.float32) * 0.1,
        "W2": (r.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32),
        "B2": r.standard_normal(32).astype(np.float32) * 0.1,
        "W3": (r.standard_normal((10, 32)) * 0.3).astype(np.float32),
        "B3": np.zeros(10, np.float32),
    }
    model = make(nodes, [("x", F, ["b", 3, 16, 16])], [("y", F, ["b", 10])], inits)
    data = Dataset({"x": r.standard_normal((64, 3, 16, 16)).astype(np.float32)})
    return model, data


def test_static_qdq_fuses_into_integer_kernels(tmp_path: Path) -> None:
    model, data = small_cnn()
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    onnx.checker.check_model(res.model)
    ops = Counter(n.op_type for n in res.model.graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6
    fused = Counter(optimized_op_types(res.model, tmp_path))
    assert fused["QLinearConv"] == 2, fused
    assert "Conv" not in fused
    feeds = {"x": data.inputs["x"][:8]}
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.05
    recs = {r.name: r for r in res.records}
    assert recs["W1"].action == "int8 static (QDQ)" and recs["W1"].granularity == "per_channel(axis=0)"


def test_plan_is_inspectable_data() -> None:
    model, data = small_cnn()
    plan = plan_static_quant(model, data, StaticQuantConfig(latency_check=False))
    assert {"x", "r1", "c1"} <= set(plan.activations)
    ap = plan.activations["r1"]
    assert ap.range[0] >= 0.0 and ap.dtype == "uint8" and ap.scale > 0
    assert "y" not in plan.activations  # graph outputs stay float


def test_static_needs_data_and_rejects_nan(tmp_path: Path) -> None:
    model, data = small_cnn()
    with pytest.raises(InputError, match="needs calibration data"):
        StaticQuantPass(StaticQuantConfig(latency_check=False))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    bad = tmp_path / "nan.npz"
    x = data.inputs["x"][:4].copy()
    x[0, 0, 0, 0] = np.nan
    np.savez(bad, x=x)
    with pytest.raises(InputError, match="NaN"):
        quantize(path, tmp_path / "q.onnx", config=StaticQuantConfig(latency_check=False), data=bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 8), np.float32))
    with pytest.raises(InputError, match="rank"):
        quantize(path, tmp_path / "q.onnx", config=StaticQuantConfig(latency_check=False), data=wrong)
    assert not (tmp_path / "q.onnx").exists()


def test_static_on_the_bundled_example_keeps_accuracy(tmp_path: Path) -> None:
    from tensorslim.evaluate import evaluate
    from tensorslim.examples import example_calib_data_path, example_model_path, example_test_data_path

    out = tmp_path / "static.onnx"
    quantize(example_model_path(), out, config=StaticQuantConfig(latency_check=False), data=example_calib_data_path())
    rep = evaluate(example_model_path(), out, example_test_data_path())
    (o,) = rep.outputs
    assert o.candidate_accuracy >= o.reference_accuracy - 0.005
    assert Counter(optimized_op_types(onnx.load(str(out)), tmp_path))["QLinearConv"] >= 8


def test_static_raises_an_old_opset_to_13_for_per_channel_qdq(tmp_path: Path) -> None:
    model, data = small_cnn()
    model.opset_import[0].version = 11
    onnx.checker.check_model(model)
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    assert res.model.opset_import[0].version == 13
    assert any("opset 11" in n for n in res.notes)
    assert Counter(optimized_op_types(res.model, tmp_path))["QLinearConv"] == 2
