"""tensorslim doctor: each check finds its pitfall on a tiny model built inline, and the CLI contract."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import F, cli, conv_model, make, matmul_model
from tensorslim.api import quantize
from tensorslim.backends.onnx import save_model
from tensorslim.diagnostics.doctor import _static_findings, doctor, optimized_graph, qdq_analysis
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.float16 import Float16Config


def qdq_erf_model() -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> Erf: ONNX Runtime has no fused kernel for it."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
        helper.make_node("Erf", ["xd"], ["y"], name="erf"),
    ]
    inits = {"s": np.array(0.02, np.float32), "zp": np.array(0, np.int8)}
    return make(nodes, [("x", F, [1, 64])], [("y", F, [1, 64])], inits)


def codes(rep) -> dict[str, object]:
    return {f.code: f for f in rep.findings}


def test_unfused_qdq_pair_is_named_with_the_op_it_feeds(tmp_path: Path) -> None:
    path = save_model(qdq_erf_model(), tmp_path / "qdq.onnx")
    qa = qdq_analysis(optimized_graph(path))
    assert qa["pairs"] == 1
    assert qa["pairs_by_consumer"] == {"Erf": 1}
    assert qa["pairs_by_producer"] == {"graph input": 1}
    rep = doctor(path, measure=False)
    f = codes(rep)["unfused-qdq"]
    assert f.severity == "warning" and "Erf x1" in f.message and f.fix
    assert "s8s8-qdq" in codes(rep) or rep.machine not in ("x86_64", "AMD64")


def test_dynamic_int8_matmul_fuses_cleanly(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=128)
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "q.onnx", config=DynamicQuantConfig(form="integer"))
    rep = doctor(tmp_path / "q.onnx", measure=False)
    assert "unfused-qdq" not in codes(rep)
    assert "DynamicQuantizeMatMul" in rep.optimized_op_counts
    assert codes(rep)["isa"].details["integer_ops"] >= 0


def test_int4_without_accuracy_level_4(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=128)
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "q0.onnx", config=BlockQuantConfig(accuracy_level=0, min_size=16, kernel="matmulnbits"))
    quantize(src, tmp_path / "q4.onnx", config=BlockQuantConfig(accuracy_level=4, min_size=16, kernel="matmulnbits"))
    assert "int4-accuracy-level" in codes(doctor(tmp_path / "q0.onnx", measure=False))
    assert "int4-accuracy-level" not in codes(doctor(tmp_path / "q4.onnx", measure=False))
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "int4-matmulnbits" in codes(doctor(tmp_path / "q4.onnx", measure=False))
    quantize(src, tmp_path / "qi.onnx", config=BlockQuantConfig(min_size=16))  # the integer kernel
    assert not {"int4-accuracy-level", "int4-matmulnbits"} & set(codes(doctor(tmp_path / "qi.onnx", measure=False)))


def test_fp16_on_a_cpu_without_native_fp16(tmp_path: Path) -> None:
    model, _ = matmul_model(k=128, n=64)
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "h.onnx", config=Float16Config())
    h = onnx.load(str(tmp_path / "h.onnx"))
    opt = optimized_graph(tmp_path / "h.onnx")
    # an AVX2-only x86 CPU (no avx512_fp16): fp16 compute is flagged with the Cast count of the optimized graph
    f = {x.code: x for x in _static_findings(h, opt, ("avx2", "fma"), "x86_64")}["fp16-casts"]
    assert f.details["native_fp16"] is False
    assert f.details["optimized_casts"] == sum(n.op_type == "Cast" for n in opt.graph.node)
    # an ARM CPU with fp16 arithmetic whose graph gained no Cast: nothing to report
    arm = {x.code for x in _static_findings(h, opt, ("asimd", "asimdhp", "fphp"), "aarch64")}
    assert ("fp16-casts" in arm) == (f.details["optimized_casts"] > f.details["model_casts"])


def test_conv_integer_is_measured(tmp_path: Path) -> None:
    model, _ = conv_model()
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "q.onnx", config=DynamicQuantConfig(form="integer", min_size=16))
    f = codes(doctor(tmp_path / "q.onnx", measure=True))["conv-integer"]
    assert f.details["conv_ms"] > 0 and f.details["conv_integer_ms"] > 0


def test_s8s8_qoperator_on_x86(tmp_path: Path) -> None:
    w = np.random.default_rng(0).integers(-100, 100, (64, 32)).astype(np.int8)
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qmm")
    inits = {
        "xs": np.array(0.1, np.float32),
        "xz": np.array(0, np.int8),
        "w": w,
        "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8),
        "ys": np.array(0.5, np.float32),
        "yz": np.array(0, np.int8),
    }
    m = make([node], [("x", TensorProto.INT8, [1, 64])], [("y", TensorProto.INT8, [1, 32])], inits)
    path = save_model(m, tmp_path / "s8.onnx")
    rep = doctor(path, measure=False)
    if rep.machine in ("x86_64", "AMD64"):
        assert codes(rep)["s8s8-qoperator"].details["nodes"] == ["qmm"]
    else:
        assert "s8s8-qoperator" not in codes(rep)


def test_doctor_with_baseline_times_both(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=128)
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "q.onnx")
    f = codes(doctor(tmp_path / "q.onnx", baseline=src, seconds=0.3))["timing"]
    d = f.details
    assert d["p50_ms"] > 0 and d["baseline_p50_ms"] > 0 and d["ci"][0] <= d["p50_ms"] <= d["ci"][1]


def test_cli_json_and_bad_input(tmp_path: Path) -> None:
    path = save_model(qdq_erf_model(), tmp_path / "qdq.onnx")
    r = cli("doctor", str(path), "--no-measure", "--json", "-")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert any(f["code"] == "unfused-qdq" for f in data["findings"])
    r = cli("doctor", str(tmp_path / "missing.onnx"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    r = cli("doctor", str(tmp_path / "bad.onnx"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_weight_dequantize_is_reported(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((64, 32), np.int8), "wq")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dqw"),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [1, 64])],
        [helper.make_tensor_value_info("y", F, None)],
        [w, numpy_helper.from_array(np.array(0.1, np.float32), "ws")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = save_model(m, tmp_path / "wdq.onnx")
    rep = doctor(path, measure=False)
    assert "unfused-qdq" not in codes(rep)
    qa = qdq_analysis(optimized_graph(path))
    assert qa["pairs"] == 0
