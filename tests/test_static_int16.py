"""A16W8 static quantization and integer model inputs/outputs, checked in ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, make, run
from tensorslim.evaluate import evaluate
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_io import IO_METADATA_KEY, read_io_quantization
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline
from tensorslim.runtime.ort import OrtRuntime
from test_static_quant import small_cnn


def outlier_mlp(opset: int = 17, seed: int = 0) -> tuple[onnx.ModelProto, Dataset]:
    """MatMul -> Add -> Relu -> Gemm whose hidden activation has a few huge channels (outliers)."""
    r = np.random.default_rng(seed)
    w1 = (r.standard_normal((32, 64)) * 0.2).astype(np.float32)
    w1[:, :2] *= 200.0  # two outlier channels dwarf the others
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "W2", "B2"], ["y"], name="fc2", transB=1),
    ]
    inits = {"W1": w1, "W2": (r.standard_normal((10, 64)) * 0.2).astype(np.float32),
             "B2": (r.standard_normal(10) * 0.1).astype(np.float32)}  # fmt: skip
    w2 = inits["W2"]
    w2[:, :2] *= 0.001  # the outlier channels matter little downstream: int8 loses the rest
    model = make(nodes, [("x", F, ["b", 32])], [("y", F, ["b", 10])], inits, opset=opset,
                 ir_version=10 if opset >= 21 else 8)  # fmt: skip
    return model, Dataset({"x": r.standard_normal((64, 32)).astype(np.float32)})


def rel_err(model: onnx.ModelProto, q: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    ref, out = run(model, feeds)[0], run(q, feeds)[0]
    return float(np.linalg.norm(ref - out) / np.linalg.norm(ref))


@pytest.mark.parametrize("opset, domain", [(17, "com.microsoft"), (21, "")])
def test_a16w8_runs_in_ort_and_beats_int8_on_outliers(opset: int, domain: str) -> None:
    model, data = outlier_mlp(opset)
    feeds = {"x": data.inputs["x"][:32]}
    base = dict(fallback_sqnr_db=0.0)
    q8 = static_pipeline(StaticQuantConfig(latency_check=False, **base), data)(model).model
    res = static_pipeline(StaticQuantConfig(latency_check=False, activation_bits=16, **base), data)(model)
    onnx.checker.check_model(res.model)
    qdq = [n for n in res.model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    wide = [n for n in qdq if n.domain == domain and n.op_type == "QuantizeLinear"]
    assert wide, [(n.op_type, n.domain) for n in qdq]
    zps = {t.name: t.data_type for t in res.model.graph.initializer if t.name.endswith("_zero_point")}
    assert onnx.TensorProto.UINT16 in zps.values()
    assert zps["W1_zero_point"] == onnx.TensorProto.INT8  # weights stay int8
    e8, e16 = rel_err(model, q8, feeds), rel_err(model, res.model, feeds)
    assert e16 < 0.5 * e8, (e8, e16)
    rec = {r.name: r for r in res.records}
    assert rec["W1"].action == "int8 static (QDQ, A16W8)" and "uint16" in rec["W1"].reason
    assert any("16 bits" in n for n in res.notes)


def test_int16_nodes_selects_layers_by_name() -> None:
    model, data = outlier_mlp()
    res = static_pipeline(StaticQuantConfig(latency_check=False, int16_nodes=("^relu$",), fallback_sqnr_db=0.0), data)(model)
    types = {t.name: t.data_type for t in res.model.graph.initializer}
    zp = {n.input[0]: types[n.input[2]] for n in res.model.graph.node if n.op_type == "QuantizeLinear"}
    assert zp["h"] == zp["a"] == onnx.TensorProto.UINT16
    assert zp["x"] == onnx.TensorProto.UINT8
    assert run(res.model, {"x": data.inputs["x"][:4]})[0].shape == (4, 10)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="activation_bits"):
        StaticQuantConfig(latency_check=False, activation_bits=4)
    with pytest.raises(ValueError, match="io_dtype"):
        StaticQuantConfig(latency_check=False, io_dtype="int8")  # asymmetric activations are uint8
    with pytest.raises(ValueError, match="io_dtype"):
        StaticQuantConfig(latency_check=False, io_dtype="float16")
    with pytest.raises(ValueError, match="int16_nodes"):
        StaticQuantConfig(latency_check=False, int16_nodes=("(",))
    with pytest.raises(ValueError, match="smooth_quant"):
        StaticQuantConfig(latency_check=False, smooth_quant=1.5)


@pytest.mark.parametrize("io, scheme", [("uint8", "asymmetric"), ("int8", "symmetric")])
def test_integer_io_model_and_float_feeds(io: str, scheme: str, tmp_path: Path) -> None:
    model, data = small_cnn()
    res = static_pipeline(StaticQuantConfig(latency_check=False, io_dtype=io, activation_scheme=scheme), data)(model)
    q = res.model
    onnx.checker.check_model(q)
    want = onnx.TensorProto.UINT8 if io == "uint8" else onnx.TensorProto.INT8
    assert q.graph.input[0].type.tensor_type.elem_type == want
    assert q.graph.output[0].type.tensor_type.elem_type == want
    # the first QuantizeLinear is gone: the input feeds a DequantizeLinear (or a fused integer op) directly
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in q.graph.node)
    meta = read_io_quantization(q)
    assert set(meta["inputs"]) == {"x"} and set(meta["outputs"]) == {"y"}
    assert meta["inputs"]["x"]["dtype"] == io and meta["inputs"]["x"]["scale"] > 0
    assert any(IO_METADATA_KEY in n for n in res.notes) or any("integer model inputs" in n for n in res.notes)
    feeds = {"x": data.inputs["x"][:16]}
    ref = run(model, feeds)[0]
    rt = OrtRuntime(q)
    out = rt.run(feeds)[0]  # float in, float out through the recorded parameters
    assert out.dtype == np.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.06
    # integer feeds pass through and give the raw integer output
    p = meta["inputs"]["x"]
    xq = np.clip(np.round(feeds["x"] / p["scale"]) + p["zero_point"], *(
        (0, 255) if io == "uint8" else (-128, 127))).astype(io)  # fmt: skip
    raw = rt.run({"x": xq})[0]
    assert raw.dtype == np.dtype(io)
    o = meta["outputs"]["y"]
    np.testing.assert_allclose((raw.astype(np.float32) - o["zero_point"]) * o["scale"], out, atol=1e-6)
    # evaluate() against the float model stays meaningful
    rep = evaluate(OrtRuntime(model), rt, data)
    assert rep.outputs[0].cosine_mean > 0.99


def test_cli_static_a16w8_and_integer_io(tmp_path: Path) -> None:
    model, data = small_cnn()
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    np.savez(tmp_path / "calib.npz", x=data.inputs["x"][:16])
    out = tmp_path / "q.onnx"
    r = subprocess.run([sys.executable, "-m", "tensorslim.cli", "quantize", str(src), "-o", str(out), "--mode", "static", "--no-latency-check",
                        "--data", str(tmp_path / "calib.npz"), "--io", "uint8", "--int16-nodes", "conv2",
                        "--bias-correction", "--no-check-speed", "--json", "-"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    notes = " ".join(payload["notes"])
    assert "integer model inputs" in notes and "16 bits" in notes and "bias correction" in notes
    r = subprocess.run([sys.executable, "-m", "tensorslim.cli", "eval", str(src), str(out), "--data",
                        str(tmp_path / "calib.npz"), "--json", "-"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    bad = subprocess.run([sys.executable, "-m", "tensorslim.cli", "quantize", str(src), "-o", str(tmp_path / "d.onnx"),
                          "--activation-bits", "16"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "only for --mode static" in bad.stderr


@pytest.mark.parametrize("opset", [17, 21])
def test_a16_scalar_mul_between_matmuls_loads_below_opset_21(opset: int) -> None:
    """A Mul by a positive scalar between two 16-bit layers becomes a DequantizeLinear of the 16-bit codes; below
    opset 21 that DequantizeLinear must be com.microsoft's too (found on MiniLM's attention scaling: exit 3)."""
    r = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Mul", ["h", "c"], ["m"], name="scale"),
        helper.make_node("MatMul", ["m", "W2"], ["y"], name="fc2"),
    ]
    inits = {"W1": (r.standard_normal((16, 32)) * 0.3).astype(np.float32), "c": np.array(0.125, np.float32),
             "W2": (r.standard_normal((32, 8)) * 0.3).astype(np.float32)}  # fmt: skip
    model = make(nodes, [("x", F, ["b", 16])], [("y", F, ["b", 8])], inits, opset=opset,
                 ir_version=10 if opset >= 21 else 8)  # fmt: skip
    data = Dataset({"x": r.standard_normal((32, 16)).astype(np.float32)})
    cfg = StaticQuantConfig(latency_check=False, activation_bits=16, fallback_sqnr_db=0.0, output_sqnr_db=0.0)
    q = static_pipeline(cfg, data)(model).model
    onnx.checker.check_model(q)
    wide = "" if opset >= 21 else "com.microsoft"
    dq_of_mul = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "m"]
    assert dq_of_mul and dq_of_mul[0].domain == wide, [(n.name, n.domain) for n in dq_of_mul]
    assert rel_err(model, q, {"x": data.inputs["x"]}) < 0.03  # int8 weights
