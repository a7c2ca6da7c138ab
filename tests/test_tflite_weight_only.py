"""TFLite weight-only int8 (weights behind DEQUANTIZE, float compute), the per-op ``auto`` form, and
``ts.quantize`` on ``.tflite`` paths; every output loaded and run in LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorslim as ts
import tflite_models as tm
from models import cli
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig, TfliteDynamicPass
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.io import model_from_bytes, serialize
from tensorslim.backends.tflite.schema import op_name, type_name
from tensorslim.errors import InputError
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.float16 import Float16Config
from tensorslim.runtime.litert import LiteRTRuntime


def _feeds(data: bytes, seed: int = 1) -> dict[str, np.ndarray]:
    rt = LiteRTRuntime(data)
    r = tm.rng(seed)
    out = {}
    for s in rt.inputs:
        shape = [1 if d is None else d for d in s.shape]
        out[s.name] = (
            r.integers(0, 50, shape).astype(s.dtype) if s.dtype == np.int32 else r.random(shape).astype(s.dtype)
        )
    return out


def _cosine(ref: bytes, cand: bytes) -> float:
    feeds = _feeds(ref)
    a, b = LiteRTRuntime(ref).run(feeds)[0], LiteRTRuntime(cand).run(feeds)[0]
    return float(cosine_rows(a.reshape(1, -1), b.reshape(1, -1)).min())


def _ops(model: Any) -> list[str]:
    g = Graph(model)
    return [g.op_type(op) for op in g.sg.operators]


def _wo(data: bytes, **kw: Any) -> Any:
    return TfliteDynamicPass(TfliteDynamicConfig(form="weight_only", **{"min_size": 0, **kw}))(model_from_bytes(data))


@pytest.mark.parametrize(
    ("builder", "n_weights"),
    [(tm.cnn, 4), (tm.mlp, 2), (tm.matmul_and_deconv, 2), (tm.lstm, 8)],
)
def test_weight_only_every_weight_behind_a_per_channel_dequantize(builder: Any, n_weights: int) -> None:
    data = builder()
    res = _wo(data)
    done = [r for r in res.records if not r.skipped]
    assert len(done) == n_weights and all(r.action == "int8 weight_only" for r in done)
    m = res.model
    g = Graph(m)
    deq = [op for op in g.sg.operators if g.op_type(op) == "DEQUANTIZE"]
    assert len(deq) >= n_weights
    for op in deq:
        src = g.sg.tensors[int(op.inputs[0])]
        if type_name(src.type) == "INT8":
            assert g.is_constant(int(op.inputs[0]))
            assert len(src.quantization.scale) > 1  # per output channel
    # no hybrid kernel anywhere: the compute ops read float tensors
    for op in g.sg.operators:
        if g.op_type(op) != "DEQUANTIZE":
            assert all(type_name(g.sg.tensors[int(t)].type) != "INT8" for t in op.inputs if int(t) >= 0)
    q = serialize(m)
    assert _cosine(data, q) >= 0.9995


def test_weight_only_size_and_fidelity_on_a_larger_model() -> None:
    data = tm.mlp(in_dim=256, hidden=512, out=64)
    q = serialize(TfliteDynamicPass(TfliteDynamicConfig(form="weight_only"))(model_from_bytes(data)).model)
    assert len(q) <= 0.30 * len(data)
    assert _cosine(data, q) >= 0.999


def test_lstm_weight_only_scales_per_gate_unit() -> None:
    m = _wo(tm.lstm()).model
    w = next(t for t in m.subgraphs[0].tensors if t.name.decode() == "lstm/forget_r")
    assert type_name(w.type) == "INT8" and len(w.quantization.scale) == 32 and w.quantization.quantizedDimension == 0


def test_auto_hybrid_for_fully_connected_weight_only_for_convolutions() -> None:
    res = TfliteDynamicPass(TfliteDynamicConfig(min_size=0))(model_from_bytes(tm.cnn()))
    actions = {r.name: r.action for r in res.records if not r.skipped}
    assert actions == {
        "conv1/w": "int8 weight_only", "dw/w": "int8 weight_only", "conv2/w": "int8 weight_only", "fc/w": "int8 hybrid"
    }  # fmt: skip
    versions = {op_name(c): c.version for c in res.model.operatorCodes}
    assert versions["CONV_2D"] == 1 and versions["FULLY_CONNECTED"] == 12  # float conv, hybrid per-channel FC
    assert _cosine(tm.cnn(), serialize(res.model)) >= 0.999


def test_bad_form_names_the_choices() -> None:
    with pytest.raises(ValueError, match="form"):
        TfliteDynamicConfig(form="fast")


# ---- ts.quantize and the CLI on .tflite -----------------------------------------------------------------------


@pytest.fixture
def cnn_path(tmp_path: Path) -> Path:
    p = tmp_path / "cnn.tflite"
    p.write_bytes(tm.cnn(size=16, c1=32, c2=64))
    return p


def test_api_quantize_takes_tflite_paths(cnn_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "wo.tflite"
    res = ts.quantize(cnn_path, out, config=DynamicQuantConfig(form="weight_only"))
    assert out.exists() and res.output_bytes == out.stat().st_size < res.input_bytes
    assert {r.action for r in res.records if not r.skipped} == {"int8 weight_only"}
    assert _cosine(cnn_path.read_bytes(), out.read_bytes()) >= 0.999
    default = ts.quantize(str(cnn_path), tmp_path / "auto.tflite")
    assert "int8 hybrid" in {r.action for r in default.records}
    half = ts.quantize(cnn_path, tmp_path / "fp16.tflite", config=Float16Config())
    assert half.to_dict()["mode"] == "fp16"


def test_api_quantize_tflite_refusals(cnn_path: Path, tmp_path: Path) -> None:
    from tensorslim.passes.blockwise_quant import BlockQuantConfig

    with pytest.raises(InputError, match="not available for .tflite"):
        ts.quantize(cnn_path, tmp_path / "o.tflite", config=BlockQuantConfig(bits=8))
    with pytest.raises(InputError, match="static"):
        ts.quantize(cnn_path, tmp_path / "o.tflite", data={"image": np.zeros((1, 16, 16, 3), np.float32)})


def test_cli_form_weight_only(cnn_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "wo.tflite"
    r = cli("quantize", str(cnn_path), "-o", str(out), "--form", "weight_only", "--no-check-speed")
    assert r.returncode == 0, r.stderr
    m = model_from_bytes(out.read_bytes())
    assert "DEQUANTIZE" in _ops(m)
    assert _cosine(cnn_path.read_bytes(), out.read_bytes()) >= 0.999


def test_convolution_weights_keep_each_output_channels_sum() -> None:
    from tensorslim.algorithms.quantize import quantize
    from tensorslim.backends.tflite.dynamic import plan_dynamic

    model = model_from_bytes(tm.cnn())
    axes = {"conv1/w": 0, "dw/w": 3, "conv2/w": 0}  # CONV_2D [O, H, W, I]; DEPTHWISE_CONV_2D [1, H, W, C]
    for keep in (True, False):
        plans = {p.weight.name: p for p in plan_dynamic(model, TfliteDynamicConfig(min_size=0, keep_conv_sums=keep))
                 if p.codes is not None}  # fmt: skip
        assert set(axes) | {"fc/w"} <= set(plans)
        fc = plans["fc/w"]
        np.testing.assert_array_equal(fc.codes, quantize(fc.weight.array, fc.params))  # not a convolution
        for name, axis in axes.items():
            p = plans[name]
            scale, _ = p.params.broadcast(p.weight.array.ndim)
            other = tuple(i for i in range(p.weight.array.ndim) if i != axis)
            off = np.abs((p.weight.array / scale - p.codes.astype(np.float64)).sum(axis=other))
            if keep:
                assert off.max() <= 0.5 + 1e-4, name
            else:
                np.testing.assert_array_equal(p.codes, quantize(p.weight.array, p.params))
                assert off.max() > 0.5, name  # round to nearest leaves some channel's sum off
    out = TfliteDynamicPass(TfliteDynamicConfig(min_size=0))(model_from_bytes(tm.cnn())).model
    assert _cosine(tm.cnn(), serialize(out)) >= 0.999
