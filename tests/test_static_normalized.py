"""Static int8 scores an activation that a normalization reads as the normalization sees it (rows at unit
deviation): a residual stream whose quiet rows drown in the int8 step stays float, the rest stays int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from models import F, make, run
from tensorslim import quantize
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_quant import StaticQuantConfig

T, D = 8, 32


def residual_block(norm: str, opset: int = 17) -> onnx.ModelProto:
    """x -> MatMul -> Add(r) -> normalization -> MatMul: ``norm`` is LayerNormalization, the same written out
    (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, as exported below opset 17), or Identity; ``r`` is the
    residual stream."""
    r = np.random.default_rng(0)
    inits = {
        "W1": (r.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
        "W2": (r.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
        "gamma": np.ones(D, np.float32),
        "beta": np.zeros(D, np.float32),
        "eps": np.array(1e-5, np.float32),
        "two": np.array(2.0, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "r"], ["res"], name="residual"),
    ]
    if norm == "LayerNormalization":
        nodes.append(helper.make_node(norm, ["res", "gamma", "beta"], ["n"], name="ln", axis=-1))
    elif norm == "written":
        nodes += [
            helper.make_node("ReduceMean", ["res"], ["mu"], name="mean", axes=[-1]),
            helper.make_node("Sub", ["res", "mu"], ["dev"], name="sub"),
            helper.make_node("Pow", ["dev", "two"], ["sq"], name="pow"),
            helper.make_node("ReduceMean", ["sq"], ["var"], name="var", axes=[-1]),
            helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
            helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
            helper.make_node("Div", ["dev", "sd"], ["n"], name="div"),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["res"], ["n"], name="ident"))
    nodes.append(helper.make_node("MatMul", ["n", "W2"], ["y"], name="mm2"))
    return make(nodes, [("x", F, ["b", T, D]), ("r", F, ["b", T, D])], [("y", F, ["b", T, D])], inits, opset=opset)


def feeds(n: int, seed: int) -> dict[str, np.ndarray]:
    """``x`` at unit deviation; the residual stream ``r`` at a deviation of 100 on most rows and 0 on the last
    two, which then hold only ``x @ W1``: about one int8 step of the sum's range."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, T, D)).astype(np.float32)
    r = g.standard_normal((n, T, D)).astype(np.float32) * 100
    r[:, -2:] = 0
    return {"x": x, "r": r}


def _quantize(model: onnx.ModelProto, tmp: Path) -> tuple[onnx.ModelProto, list[str]]:
    src, dst = tmp / "f.onnx", tmp / "q.onnx"
    onnx.save(model, src)
    res = quantize(src, dst, config=StaticQuantConfig(latency_check=False), data=Dataset(feeds(32, 1)))
    return onnx.load(dst), list(res.notes)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, D), b.reshape(-1, D)
    return float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_layernorm_input_whose_quiet_rows_drown_stays_float(tmp_path: Path) -> None:
    for norm in ("LayerNormalization", "written"):
        model = residual_block(norm, opset=17 if norm == "LayerNormalization" else 13)
        q, notes = _quantize(model, tmp_path)
        fallback = [n for n in notes if "int8 SQNR <" in n]
        assert fallback and "res" in fallback[0], (norm, notes)
        x = feeds(4, 7)
        assert _row_cosine(run(model, x)[0], run(q, x)[0]) > 0.99, norm
        ops = {n.op_type for n in q.graph.node}
        assert "DequantizeLinear" in ops  # the MatMuls keep their int8 weights


def test_same_stream_without_normalization_stays_int8(tmp_path: Path) -> None:
    q, notes = _quantize(residual_block("Identity"), tmp_path)
    assert not [n for n in notes if "int8 SQNR <" in n], notes
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "res" for n in q.graph.node)
