"""TFLite quantization: dynamic range (hybrid kernels), float16 and full integer, each output run in LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tflite_models as tm
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig, TfliteDynamicPass
from tensorslim.backends.tflite.fp16 import TfliteFloat16Pass
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.io import model_from_bytes, serialize
from tensorslim.backends.tflite.quantize import quantize_tflite
from tensorslim.backends.tflite.schema import op_name, type_name
from tensorslim.backends.tflite.static import TfliteStaticConfig
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.evaluate.data import Dataset
from tensorslim.runtime.litert import LiteRTRuntime


def _feeds(data: bytes, n: int = 8, seed: int = 1) -> dict[str, np.ndarray]:
    rt = LiteRTRuntime(data)
    r = tm.rng(seed)
    out = {}
    for s in rt.inputs:
        shape = [n if d is None else d for d in s.shape]
        out[s.name] = (
            r.integers(0, 100, shape).astype(s.dtype) if s.dtype == np.int32 else r.random(shape).astype(s.dtype)
        )
    return out


def _compare(ref: bytes, cand: bytes, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return LiteRTRuntime(ref).run(feeds)[0], LiteRTRuntime(cand).run(feeds)[0]


def _ops(model: Any) -> list[str]:
    g = Graph(model)
    return [g.op_type(op) for op in g.sg.operators]


def _tensor(model: Any, name: str) -> Any:
    return next(t for t in model.subgraphs[0].tensors if t.name.decode() == name)


def _dynamic(data: bytes, **kw: Any) -> Any:
    return TfliteDynamicPass(TfliteDynamicConfig(**{"min_size": 0, **kw}))(model_from_bytes(data))


# ---- dynamic range ----------------------------------------------------------------------------------------


def test_dynamic_fc_weights_int8_per_channel_with_hybrid_parameters() -> None:
    res = _dynamic(tm.mlp())
    m = res.model
    w1 = _tensor(m, "w1")
    assert type_name(w1.type) == "INT8"
    assert len(w1.quantization.scale) == 96 and w1.quantization.quantizedDimension == 0
    assert not np.any(w1.quantization.zeroPoint)
    codes = Graph(m).constant(next(i for i, t in enumerate(m.subgraphs[0].tensors) if t is w1))
    assert codes is not None and codes.min() >= -127  # narrow range, as hybrid kernels expect
    fc = [op for op in m.subgraphs[0].operators if op_name(m.operatorCodes[op.opcodeIndex]) == "FULLY_CONNECTED"]
    assert all(op.builtinOptions.asymmetricQuantizeInputs for op in fc)
    assert {op_name(c): c.version for c in m.operatorCodes}["FULLY_CONNECTED"] == 12
    assert {r.name: r.action for r in res.records} == {
        "w1": "int8 hybrid", "b1": "skipped", "w2": "int8 hybrid", "b2": "skipped"
    }  # fmt: skip
    q = serialize(m)
    assert len(q) < len(tm.mlp()) / 2.5
    feeds = _feeds(tm.mlp())
    a, b = _compare(tm.mlp(), q, feeds)
    assert cosine_rows(a, b).min() > 0.999
    assert not np.array_equal(a, b)


def test_dynamic_ops_run_as_hybrid_kernels() -> None:
    """Without delegates, LiteRT's hybrid kernels allocate int8 temporaries for the on-the-fly input quantization."""
    q = serialize(_dynamic(tm.mlp()).model)
    counts = []
    for data in (tm.mlp(), q):
        it = Interpreter(
            model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        it.allocate_tensors()
        details = it.get_tensor_details()
        counts.append(sum(1 for d in details if d["dtype"] == np.int8 and not d["name"]))
    assert counts[0] == 0 and counts[1] >= 2  # one quantized-input temporary per hybrid FULLY_CONNECTED


def test_dynamic_conv_axes_and_converter_threshold() -> None:
    res = _dynamic(tm.cnn(), form="integer")  # hybrid convolutions, as the converter writes them
    m = res.model
    assert _tensor(m, "conv2/w").quantization.quantizedDimension == 0
    dw = _tensor(m, "dw/w")
    assert dw.quantization.quantizedDimension == 3 and len(dw.quantization.scale) == 16
    versions = {op_name(c): c.version for c in m.operatorCodes}
    assert versions["CONV_2D"] == 5 and versions["DEPTHWISE_CONV_2D"] == 6
    default = TfliteDynamicPass()(model_from_bytes(tm.cnn()))  # min_size 1024, as the converter
    skipped = {r.name: r.reason for r in default.records if r.skipped}
    assert "432 elements < min size 1024" in skipped["conv1/w"]
    a, b = _compare(tm.cnn(), serialize(m), _feeds(tm.cnn()))
    assert cosine_rows(a, b).min() > 0.995


def test_dynamic_per_tensor() -> None:
    m = _dynamic(tm.cnn(), granularity="per_tensor", form="integer").model
    assert len(_tensor(m, "conv2/w").quantization.scale) == 1
    dw_scale = _tensor(m, "dw/w").quantization.scale  # depthwise hybrid needs per-channel: one scale repeated
    assert len(dw_scale) == 16 and np.unique(dw_scale).size == 1
    a, b = _compare(tm.cnn(), serialize(m), _feeds(tm.cnn()))
    assert cosine_rows(a, b).min() > 0.99


def test_shared_buffer_is_quantized_once() -> None:
    res = _dynamic(tm.shared_weights())
    assert [r.action for r in res.records] == ["int8 hybrid"]
    int8_buffers = {t.buffer for t in res.model.subgraphs[0].tensors if type_name(t.type) == "INT8"}
    assert len(int8_buffers) == 1
    q = serialize(res.model)
    assert len(q) < 48 * 48 * 2
    a, b = _compare(tm.shared_weights(), q, _feeds(tm.shared_weights()))
    assert cosine_rows(a, b).min() > 0.995


@pytest.mark.parametrize(
    ("builder", "actions"),
    [
        (tm.embeddings, {"gather_table": "int8 gather_dequantize", "lookup_table": "int8 hybrid"}),
        (tm.matmul_and_deconv, {"deconv/w": "int8 weight_only", "bmm/rhs": "int8 hybrid"}),
        (tm.lstm, {f"lstm/{g}_{k}": "int8 hybrid" for g in ("input", "forget", "cell", "output") for k in "wr"}),
    ],
)
def test_dynamic_every_weight_kind(builder: Any, actions: dict[str, str]) -> None:
    data = builder()
    res = _dynamic(data)
    got = {r.name: r.action for r in res.records if not r.skipped}
    assert got == actions
    q = serialize(res.model)
    a, b = _compare(data, q, _feeds(data, n=1))
    n = a.shape[0]
    assert cosine_rows(a.reshape(n, -1), b.reshape(n, -1)).min() > 0.995


def test_float16_weights_behind_dequantize_are_quantized_from_float16() -> None:
    fp16 = TfliteFloat16Pass()(model_from_bytes(tm.cnn())).model
    res = TfliteDynamicPass(TfliteDynamicConfig(min_size=0, form="integer"))(fp16)
    fc = next(r for r in res.records if r.name == "fc/w")
    assert fc.action == "int8 hybrid" and "from float16" in fc.reason and fc.bytes_before == 10 * 864 * 2
    ops = _ops(res.model)
    assert ops.count("DEQUANTIZE") == 1  # the ADD operand stays float16; hybrid biases become float32 constants
    q = serialize(res.model)
    a, b = _compare(tm.cnn(), q, _feeds(tm.cnn()))
    assert cosine_rows(a, b).min() > 0.995


def test_nothing_to_quantize_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "m.tflite"
    p.write_bytes(tm.mlp())
    with pytest.raises(UnsupportedModelError, match="nothing could be quantized"):
        quantize_tflite(p, tmp_path / "o.tflite", mode="dynamic", config=TfliteDynamicConfig(min_size=10**6))
    with pytest.raises(ValueError, match="op_types"):
        TfliteDynamicConfig(op_types=("FROB",))


# ---- float16 ------------------------------------------------------------------------------------------------


def test_float16_stores_every_constant_as_float16_with_dequantize() -> None:
    res = TfliteFloat16Pass()(model_from_bytes(tm.cnn()))
    m = res.model
    ops = _ops(m)
    n_consts = 9  # 4 weights, 4 biases, the ADD operand
    assert ops[:n_consts] == ["DEQUANTIZE"] * n_consts and ops.count("DEQUANTIZE") == n_consts
    types = [
        type_name(t.type) for t in m.subgraphs[0].tensors if Graph(m).buffer_bytes(m.subgraphs[0].tensors.index(t))
    ]
    assert "FLOAT32" not in types and "FLOAT16" in types
    assert {op_name(c): c.version for c in m.operatorCodes}["DEQUANTIZE"] == 3
    assert any(md.name == b"reduced_precision_support" for md in m.metadata)
    q = serialize(m)
    assert len(q) < 0.55 * len(tm.cnn())
    a, b = _compare(tm.cnn(), q, _feeds(tm.cnn()))
    np.testing.assert_allclose(a, b, atol=2e-3)
    again = TfliteFloat16Pass()(m)
    assert not again.modified and all(r.reason == "already float16" for r in again.records)


# ---- full integer -------------------------------------------------------------------------------------------


def _calib(data: bytes, n: int = 32) -> Dataset:
    return Dataset(_feeds(data, n=n, seed=7), source="test")


@pytest.mark.parametrize("io", ["float", "int8"])
def test_static_cnn_is_integer_end_to_end(io: str) -> None:
    data = tm.cnn()
    res = quantize_tflite(model_from_bytes(data), mode="static", data=_calib(data), config=TfliteStaticConfig(io=io))
    m = res.model
    ops = _ops(m)
    if io == "float":
        assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE" and ops.count("QUANTIZE") == 1
    else:
        assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops
    sg = m.subgraphs[0]
    g = Graph(m)
    for op in sg.operators:
        kind = g.op_type(op)
        if kind in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for t in [*op.inputs, *op.outputs]:
            if int(t) >= 0:
                assert type_name(sg.tensors[int(t)].type) in ("INT8", "INT32"), (kind, sg.tensors[int(t)].name)
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            x, w, b = (sg.tensors[int(i)] for i in op.inputs[:3])
            assert type_name(b.type) == "INT32"
            np.testing.assert_allclose(b.quantization.scale, x.quantization.scale[0] * w.quantization.scale, rtol=1e-6)
        if kind == "SOFTMAX":
            q = sg.tensors[int(op.outputs[0])].quantization
            assert q.scale[0] == pytest.approx(1 / 256) and q.zeroPoint[0] == -128
        if kind == "MAX_POOL_2D":
            qi, qo = (sg.tensors[int(op.inputs[0])].quantization, sg.tensors[int(op.outputs[0])].quantization)
            assert qi.scale[0] == qo.scale[0] and qi.zeroPoint[0] == qo.zeroPoint[0]
    rt = LiteRTRuntime(serialize(m), float_io=False)
    assert rt.inputs[0].dtype == (np.float32 if io == "float" else np.int8)
    feeds = _feeds(data, n=16, seed=3)
    a, b = _compare(data, serialize(m), feeds)
    assert cosine_rows(a, b).mean() > 0.99
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    assert {r.action for r in res.records} == {"int8", "int32 bias"}


def test_static_float_fallback_is_listed_and_runs() -> None:
    data = tm.with_unsupported_op()
    res = quantize_tflite(model_from_bytes(data), mode="static", data=_calib(data))
    assert any("float fallback: EXP#1" in n and "no int8 kernel" in n for n in res.notes)
    ops = _ops(res.model)
    assert ops == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE", "EXP", "QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    a, b = _compare(data, serialize(res.model), _feeds(data))
    assert cosine_rows(a, b).min() > 0.99


def test_static_needs_data_and_is_deterministic(tmp_path: Path) -> None:
    data = tm.mlp()
    with pytest.raises(InputError, match="needs calibration data"):
        quantize_tflite(model_from_bytes(data), mode="static")
    ds = _calib(data)
    one = serialize(quantize_tflite(model_from_bytes(data), mode="static", data=ds).model)
    two = serialize(quantize_tflite(model_from_bytes(data), mode="static", data=ds).model)
    assert one == two
    p = tmp_path / "m.tflite"
    p.write_bytes(data)
    np.savez(tmp_path / "calib.npz", x=ds.inputs["x"])
    res = quantize_tflite(p, tmp_path / "q.tflite", mode="static", data=tmp_path / "calib.npz")
    assert (tmp_path / "q.tflite").read_bytes() == one and res.output_bytes == len(one)
    np.savez(tmp_path / "wrong.npz", y=ds.inputs["x"])
    with pytest.raises(InputError, match="no array for model input"):
        quantize_tflite(p, tmp_path / "q2.tflite", mode="static", data=tmp_path / "wrong.npz")


def test_static_from_a_float16_model() -> None:
    data = tm.cnn()
    fp16 = TfliteFloat16Pass()(model_from_bytes(data)).model
    res = quantize_tflite(fp16, mode="static", data=_calib(data))
    assert _ops(res.model).count("DEQUANTIZE") == 1  # only the output edge
    a, b = _compare(data, serialize(res.model), _feeds(data))
    assert cosine_rows(a, b).mean() > 0.99
