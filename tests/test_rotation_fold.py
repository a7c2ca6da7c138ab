"""Folding run-time Hadamard rotations into the value projection: exact in float, fewer rotations at run time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import F, make, run
from tensorslim.algorithms.rotation import rotate_input_channels
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, fold_rotations, plan_dynamic_quant

H, D, K, S = 4, 16, 64, 6  # heads, head size, hidden size, sequence length
BLOCK = 8
# the layers are far too small for integer kernels to pay (auto would keep them weight-only): the rule off, to
# test how rotations fold
CFG = DynamicQuantConfig(rotation_block=BLOCK, min_integer_macs=0)


def attention_tail(*, relu: bool = False, perm: tuple[int, ...] = (0, 2, 1, 3), extra_use: bool = False):
    """``P @ heads(x W_v + b_v)`` back to ``[B, S, K]``, then the output projection ``W_o``."""
    r = np.random.default_rng(0)
    inits = {
        "Wv": (r.standard_normal((K, K)) / 8).astype(np.float32),
        "bv": r.standard_normal(K).astype(np.float32),
        "Wo": (r.standard_normal((K, K)) / 8).astype(np.float32),
        "heads": np.array([0, 0, H, D], np.int64),
        "merged": np.array([0, 0, K], np.int64),
    }
    v_in = "v_relu" if relu else "v"
    nodes = [
        helper.make_node("MatMul", ["x", "Wv"], ["vm"], name="value/MatMul"),
        helper.make_node("Add", ["bv", "vm"], ["v"], name="value/Add"),
        *([helper.make_node("Relu", ["v"], ["v_relu"], name="relu")] if relu else []),
        helper.make_node("Reshape", [v_in, "heads"], ["v4"], name="split_heads"),
        helper.make_node("Transpose", ["v4"], ["vt"], name="to_heads", perm=list(perm)),
        helper.make_node("MatMul", ["p", "vt"], ["ctx4"], name="context"),
        helper.make_node("Transpose", ["ctx4"], ["ctx_t"], name="from_heads", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merged"], ["ctx"], name="merge_heads"),
        helper.make_node("MatMul", ["ctx", "Wo"], ["y"], name="output/MatMul"),
    ]
    outputs = [("y", F, ["b", S, K])]
    if extra_use:
        nodes.append(helper.make_node("Sigmoid", ["vt"], ["side"], name="side"))
        outputs.append(("side", F, None if perm != (0, 2, 1, 3) else ["b", H, S, D]))
    p_shape = ["b", H, S, S] if perm == (0, 2, 1, 3) else ["b", D, S, S]
    model = make(nodes, [("x", F, ["b", S, K]), ("p", F, p_shape)], outputs, inits)
    logits = r.standard_normal((2, *p_shape[1:]))
    feeds = {
        "x": r.standard_normal((2, S, K)).astype(np.float32),
        "p": (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32),
    }
    return model, feeds


def test_fold_is_exact_in_float() -> None:
    model, feeds = attention_tail()
    folded_model = onnx.ModelProto()
    folded_model.CopyFrom(model)
    folded = fold_rotations(folded_model, plan_dynamic_quant(folded_model, CFG))
    assert folded == {"ctx"}
    inits = {t.name: numpy_helper.to_array(t) for t in folded_model.graph.initializer}
    assert not np.allclose(inits["Wv"], numpy_helper.to_array(model.graph.initializer[0]))
    # the context now arrives rotated: the output projection's rows, rotated alike, give the same output
    wo = next(t for t in folded_model.graph.initializer if t.name == "Wo")
    wo.CopyFrom(numpy_helper.from_array(rotate_input_channels(inits["Wo"], BLOCK, 0), "Wo"))
    (ref,) = run(model, feeds)
    (got,) = run(folded_model, feeds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_quantized_model_rotates_only_what_was_not_folded() -> None:
    model, feeds = attention_tail()
    q = DynamicQuantPass(CFG)(model).model
    hadamards = [n.name for n in q.graph.node if n.name.endswith("_Hadamard")]
    assert hadamards == ["x_Hadamard"]  # the graph input keeps its run-time rotation; the context needs none
    assert sum(n.op_type == "MatMulInteger" for n in q.graph.node) == 2
    (ref,) = run(model, feeds)
    (got,) = run(q, feeds)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.03


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relu": True},  # Relu does not commute with a rotation
        {"perm": (0, 3, 1, 2)},  # the head size leaves the last axis
        {"extra_use": True},  # another node reads an intermediate value
    ],
)
def test_no_fold_where_it_would_not_be_exact(kwargs: dict[str, object]) -> None:
    model, feeds = attention_tail(**kwargs)  # type: ignore[arg-type]
    assert fold_rotations(model, plan_dynamic_quant(model, CFG)) == frozenset()
    q = DynamicQuantPass(CFG)(model).model
    assert sum(n.name.endswith("_Hadamard") for n in q.graph.node) == 2
    (ref, *_) = run(model, feeds)
    (got, *_) = run(q, feeds)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.03
