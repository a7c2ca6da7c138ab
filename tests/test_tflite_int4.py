"""TFLite 4-bit weights (``--mode int4``): INT4 tensors LiteRT runs, checked against the float model whose
weights are the dequantized 4-bit values, in every subgraph; sizes, refusals, determinism, and the int8 holds
that calibration data decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorslim as ts
import tflite_models as tm
from models import cli
from tensorslim.algorithms.blockwise import unpack_nibbles
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.int4 import TfliteInt4Config, TfliteInt4Pass
from tensorslim.backends.tflite.io import model_from_bytes, serialize
from tensorslim.backends.tflite.quantize import quantize_tflite
from tensorslim.backends.tflite.schema import type_name
from tensorslim.errors import ConfigError, InputError
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.runtime.litert import LiteRTRuntime


def _x(data: bytes, n: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    rt = LiteRTRuntime(data)
    r = tm.rng(seed)
    return {s.name: r.standard_normal([n, *[d or 1 for d in s.shape[1:]]]).astype(np.float32) for s in rt.inputs}


def _logits(data: bytes) -> bytes:
    """The model without its final SOFTMAX (a softmax of random logits hides or exaggerates any error)."""
    m = model_from_bytes(data)
    g = Graph(m)
    last = g.sg.operators[-1]
    assert g.op_type(last) == "SOFTMAX"
    g.sg.outputs = np.asarray([int(last.inputs[0])], np.int32)
    g.sg.operators = g.sg.operators[:-1]
    return serialize(m)


def _run(data: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return LiteRTRuntime(data).run(feeds)[0]


def _int4_tensors(model: Any) -> list[tuple[int, str, np.ndarray, Any]]:
    """(subgraph, name, codes, quantization) of every INT4 constant, codes unpacked (low nibble first)."""
    out = []
    for si in range(len(model.subgraphs)):
        g = Graph(model, si)
        for t in g.sg.tensors:
            if type_name(t.type) != "INT4":
                continue
            n = int(np.prod(t.shape))
            raw = np.asarray(model.buffers[t.buffer].data, np.uint8)
            codes = unpack_nibbles(raw, n).astype(np.int8)
            codes = np.where(codes > 7, codes - 16, codes).reshape([int(d) for d in t.shape])
            out.append((si, t.name.decode(), codes, t.quantization))
    return out


def _dequantized_reference(float_data: bytes, model: Any) -> bytes:
    """The float model with each 4-bit weight replaced by its dequantized values (what LiteRT must compute)."""
    ref = model_from_bytes(float_data)
    for si, name, codes, q in _int4_tensors(model):
        g = Graph(ref, si)
        t = next(t for t in g.sg.tensors if t.name.decode() == name and type_name(t.type) == "FLOAT32")
        scale = np.asarray(q.scale, np.float32)
        shape = [1] * codes.ndim
        if scale.size > 1:
            shape[int(q.quantizedDimension)] = -1
        values = (codes.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
        ref.buffers[t.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
    return serialize(ref)


def test_weight_only_int4_is_exactly_the_dequantized_float_model() -> None:
    data = tm.cnn(c1=32, c2=64)
    model = TfliteInt4Pass(TfliteInt4Config(form="weight_only", min_size=0))(model_from_bytes(data)).model
    int4 = _int4_tensors(model)
    assert {n for _, n, _, _ in int4} == {"conv1/w", "dw/w", "conv2/w", "fc/w"}
    for _, _, codes, q in int4:
        assert codes.min() >= -7 and codes.max() <= 7 and len(q.scale) == codes.shape[int(q.quantizedDimension)]
    feeds = _x(data)
    got, want = _run(serialize(model), feeds), _run(_dequantized_reference(data, model), feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # nibble order, scales and axes as LiteRT reads them


@pytest.mark.parametrize("builder", [tm.lstm, tm.embeddings, tm.matmul_and_deconv, tm.shared_weights])
def test_every_weight_op_runs_its_int4_weights(builder: Any) -> None:
    """UNIDIRECTIONAL_SEQUENCE_LSTM, GATHER and EMBEDDING_LOOKUP tables, BATCH_MATMUL, TRANSPOSE_CONV and a weight
    shared by two FULLY_CONNECTED: 4-bit behind a DEQUANTIZE, exactly the dequantized float model."""
    data = builder()
    cfg = TfliteInt4Config(min_size=0, form="weight_only")
    model = quantize_tflite(model_from_bytes(data), None, mode="int4", config=cfg).model
    assert _int4_tensors(model)
    rt = LiteRTRuntime(data)
    r = tm.rng(3)
    feeds = {s.name: r.integers(0, 50, [d or 1 for d in s.shape]).astype(s.dtype) if s.dtype == np.int32
             else r.random([d or 1 for d in s.shape]).astype(s.dtype) for s in rt.inputs}  # fmt: skip
    got, want = _run(serialize(model), feeds), _run(_dequantized_reference(data, model), feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * float(np.abs(want).max()))


def test_fc_net_hybrid_int4_is_close_and_five_times_smaller(tmp_path: Path) -> None:
    src = tmp_path / "mlp.tflite"
    src.write_bytes(_logits(tm.mlp(in_dim=256, hidden=512, out=64)))
    out = tmp_path / "mlp.int4.tflite"
    r = quantize_tflite(src, out, mode="int4")
    assert [x.action for x in r.records if not x.skipped] == ["int4 hybrid", "int4 hybrid"]
    assert out.stat().st_size < 0.2 * src.stat().st_size
    feeds = _x(src.read_bytes(), n=8)
    float_out, q_out = _run(src.read_bytes(), feeds), _run(out.read_bytes(), feeds)
    model = model_from_bytes(out.read_bytes())
    reference = _run(_dequantized_reference(src.read_bytes(), model), feeds)
    # the hybrid kernel adds only the int8 quantization of activations to the 4-bit weights' error
    assert cosine_rows(reference, q_out).min() > 0.999
    assert cosine_rows(float_out, q_out).min() > 0.98


def test_conv_net_auto_form_and_size(tmp_path: Path) -> None:
    data = _logits(tm.cnn(size=16, c1=48, c2=96))
    r = quantize_tflite(model_from_bytes(data), None, mode="int4", config=TfliteInt4Config(min_size=0))
    actions = {x.name: x.action for x in r.records if not x.skipped}
    assert actions == {"conv1/w": "int4 hybrid", "conv2/w": "int4 hybrid", "fc/w": "int4 hybrid",
                       "dw/w": "int8 weight_only"}  # fmt: skip
    assert "no INT4 depthwise kernel" in next(x.reason for x in r.records if x.name == "dw/w")
    assert r.output_bytes < 0.2 * r.input_bytes
    feeds = _x(data, n=4)
    q = serialize(r.model)
    assert cosine_rows(_run(_dequantized_reference(data, r.model), feeds), _run(q, feeds)).min() > 0.99
    assert cosine_rows(_run(data, feeds), _run(q, feeds)).min() > 0.97  # 4-bit random convolutions, no data


def test_litert_has_no_hybrid_int4_depthwise_kernel() -> None:
    """Why ``auto`` keeps depthwise weights int8 and ``integer`` puts them behind a DEQUANTIZE: LiteRT 2.3.0
    refuses an INT4 filter in DEPTHWISE_CONV_2D with float activations (a canary for newer versions)."""
    data = tm.cnn(c1=128)
    r = quantize_tflite(model_from_bytes(data), None, mode="int4", config=TfliteInt4Config(form="integer"))
    assert next(x.action for x in r.records if x.name == "dw/w") == "int4 weight_only"
    g = Graph(r.model)
    ops = g.ops
    deq = next(i for i, op in enumerate(ops) if g.op_type(op) == "DEQUANTIZE" and
               type_name(g.sg.tensors[int(op.inputs[0])].type) == "INT4" and
               any(g.op_type(o) == "DEPTHWISE_CONV_2D" and int(o.inputs[1]) == int(op.outputs[0]) for o in ops))  # fmt: skip
    dw = next(o for o in ops if g.op_type(o) == "DEPTHWISE_CONV_2D")
    dw.inputs[1] = ops[deq].inputs[0]
    g.sg.operators = [op for i, op in enumerate(ops) if i != deq]
    with pytest.raises(InputError, match="INT4"):
        LiteRTRuntime(serialize(r.model)).run(_x(data, n=1))


def test_while_body_weights_are_int4() -> None:
    data = tm.while_rnn(dim=64)
    r = quantize_tflite(model_from_bytes(data), None, mode="int4")
    int4 = _int4_tensors(r.model)
    assert [(si, n) for si, n, _, _ in int4] == [(2, "rnn/w")]
    feeds = _x(data, n=1)
    q = serialize(r.model)
    np.testing.assert_allclose(_run(q, feeds), _run(_dequantized_reference(data, r.model), feeds), atol=0.05)
    assert cosine_rows(_run(data, feeds), _run(q, feeds)).min() > 0.96  # a 4-bit weight applied 4 times


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "cnn.tflite"
    src.write_bytes(tm.cnn(c1=32, c2=64))
    data = [_x(src.read_bytes(), n=1, seed=i) for i in range(6)]
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}.tflite"
        quantize_tflite(src, out, mode="int4", data=data)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_data_holds_the_costliest_weights_at_int8_until_the_target(tmp_path: Path) -> None:
    src = tmp_path / "mlp.tflite"
    src.write_bytes(tm.mlp(in_dim=128, hidden=256, out=10))  # softmax of random weights: 4 bits lose ~0.03
    data = [_x(src.read_bytes(), n=1, seed=100 + i) for i in range(16)]
    plain = quantize_tflite(src, None, mode="int4")
    held = quantize_tflite(src, None, mode="int4", config=TfliteInt4Config(target_cosine=0.995), data=data)
    assert any("held at int8" in n for n in held.notes), held.notes
    assert any(x.action.startswith("int8") and "held" in x.reason for x in held.records)
    assert held.output_bytes > plain.output_bytes
    feeds = {k: np.concatenate([d[k] for d in data]) for k in data[0]}
    got = _run(serialize(held.model), feeds)
    assert cosine_rows(_run(src.read_bytes(), feeds), got).min() >= 0.995


def test_api_and_cli(tmp_path: Path) -> None:
    src = tmp_path / "mlp.tflite"
    src.write_bytes(tm.mlp(in_dim=256, hidden=512))
    before = src.read_bytes()
    r = ts.quantize(src, tmp_path / "api.tflite", config=BlockQuantConfig(bits=4))
    assert r.mode == "int4" and r.output_bytes < 0.2 * r.input_bytes
    c = cli("quantize", str(src), "--mode", "int4", "-o", str(tmp_path / "cli.tflite"), "--no-check-speed")
    assert c.returncode == 0, c.stderr
    assert (tmp_path / "cli.tflite").read_bytes() == (tmp_path / "api.tflite").read_bytes()
    assert src.read_bytes() == before
    assert "int4" in cli("quantize", "--help").stdout


def test_nothing_to_quantize_is_one_line_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "small.tflite"
    src.write_bytes(tm.mlp(in_dim=8, hidden=8, out=4))  # every weight under 1024 elements
    r = cli("quantize", str(src), "--mode", "int4", "-o", str(tmp_path / "o.tflite"))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "nothing could be quantized" in lines[0], r.stderr
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"target_cosine": 1.5}, "target_cosine"), ({"form": "fast"}, "form"), ({"op_types": ("ADD",)}, "op_types")],
)
def test_config_refuses_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TfliteInt4Config(**kwargs)


def test_litert_ignores_blockwise_scales_without_xnnpack() -> None:
    """Why no block-wise scales are written: LiteRT 2.3.0's builtin FULLY_CONNECTED reads an INT4 filter with
    ``BlockwiseQuantization`` details as if they were absent, and computes a wrong result without an error (only
    XNNPACK honours them). A canary: when this fails, LiteRT may have learnt block-wise INT4."""
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tensorslim.algorithms.blockwise import pack_nibbles

    data = _logits(tm.mlp(in_dim=64, hidden=128, out=10))
    model, ref = model_from_bytes(data), model_from_bytes(data)
    g, rg = Graph(model), Graph(ref)
    fc = g.sg.operators[0]
    w_idx = int(fc.inputs[1])
    w = g.constant(w_idx).astype(np.float32)  # [128, 64]: two blocks of 32 per row
    blocks = w.reshape(128, 2, 32)
    scales = (np.abs(blocks).max(-1) / 7).astype(np.float16)
    codes = np.clip(np.round(blocks / scales.astype(np.float32)[..., None]), -7, 7).astype(np.int8)
    ref.buffers[rg.sg.tensors[w_idx].buffer].data = np.frombuffer(
        (codes * scales.astype(np.float32)[..., None]).reshape(128, 64).astype(np.float32).tobytes(), np.uint8
    )
    q = s.QuantizationParametersT()
    q.detailsType = s.QuantizationDetails.BlockwiseQuantization
    q.details = s.BlockwiseQuantizationT()
    q.details.scales = g.add_tensor("w_scales", [128, 2], "FLOAT16", buffer=g.add_buffer(scales))
    q.details.blockSize = 32
    fc.inputs[1] = g.add_tensor("w_int4", [128, 64], "INT4", buffer=g.add_buffer(pack_nibbles(codes.reshape(-1))),
                                quantization=q)  # fmt: skip
    feeds = _x(data, n=1)

    def builtin(payload: bytes) -> np.ndarray:
        it = Interpreter(
            model_content=payload, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], feeds["x"])
        it.invoke()
        return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))

    want, got = builtin(serialize(ref)), builtin(serialize(model))
    assert cosine_rows(want, got).min() < 0.99  # silently wrong
