"""Merging parallel MatMuls: structure, the float function unchanged in ONNX Runtime, what is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from models import F, make, run
from tensorslim.passes.dynamic_quant import DynamicQuantPass
from tensorslim.passes.merge_matmul import MergeMatMulConfig, MergeMatMulPass, plan_merges


def qkv_model(
    k: int = 32, sizes: tuple[int, ...] = (32, 32, 32), bias: tuple[bool, ...] | None = None, *, opset: int = 17
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``LayerNorm``-free attention-projection look-alike: parallel MatMuls (with bias Adds) on one activation."""
    r = np.random.default_rng(0)
    bias = bias or tuple(True for _ in sizes)
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="act")]
    inits: dict[str, np.ndarray] = {}
    outputs = []
    for i, (n, has_bias) in enumerate(zip(sizes, bias, strict=True)):
        inits[f"W{i}"] = r.standard_normal((k, n)).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["h", f"W{i}"], [f"m{i}"], name=f"proj{i}/MatMul"))
        y = f"m{i}"
        if has_bias:
            inits[f"b{i}"] = r.standard_normal(n).astype(np.float32)
            # the bias first, as PyTorch exports write it
            nodes.append(helper.make_node("Add", [f"b{i}", f"m{i}"], [f"a{i}"], name=f"proj{i}/Add"))
            y = f"a{i}"
        nodes.append(helper.make_node("Tanh", [y], [f"y{i}"], name=f"out{i}"))
        outputs.append((f"y{i}", F, ["b", "s", n]))
    model = make(nodes, [("x", F, ["b", "s", k])], outputs, inits, opset=opset)
    return model, {"x": r.standard_normal((2, 5, k)).astype(np.float32)}


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_merges_parallel_matmuls_and_their_biases() -> None:
    model, feeds = qkv_model(sizes=(32, 16, 8))
    before = onnx.ModelProto()
    before.CopyFrom(model)
    result = MergeMatMulPass()(model)
    assert model == before  # the input model is not touched
    m = result.model
    onnx.checker.check_model(m)
    assert op_types(m).count("MatMul") == 1 and op_types(m).count("Add") == 1 and op_types(m).count("Split") == 1
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert not {"W0", "W1", "W2", "b0", "b1", "b2"} & set(inits)
    assert sorted(a.shape for a in inits.values()) == [(3,), (32, 56), (56,)]
    assert [r.action for r in result.records] == ["merged"] * 6
    for a, b in zip(run(before, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_without_a_bias_on_every_member_the_adds_stay() -> None:
    model, feeds = qkv_model(sizes=(16, 16), bias=(True, False))
    m = MergeMatMulPass()(model).model
    assert op_types(m).count("MatMul") == 1 and op_types(m).count("Add") == 1
    split = next(n for n in m.graph.node if n.op_type == "Split")
    assert list(split.output) == ["m0", "m1"]
    for a, b in zip(run(model, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    no_bias = MergeMatMulPass(MergeMatMulConfig(merge_bias=False))(qkv_model()[0]).model
    assert op_types(no_bias).count("Add") == 3


def test_opset_11_uses_the_split_attribute() -> None:
    model, feeds = qkv_model(sizes=(8, 24), opset=11)
    m = MergeMatMulPass()(model).model
    split = next(n for n in m.graph.node if n.op_type == "Split")
    assert len(split.input) == 1 and [a.name for a in split.attribute] == ["axis", "split"]
    for a, b in zip(run(model, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_constant_node_weights_are_merged_into_a_constant_node() -> None:
    model, feeds = qkv_model(sizes=(16, 16), bias=(False, False))
    for t in list(model.graph.initializer):
        model.graph.node.insert(0, helper.make_node("Constant", [], [t.name], value=t))
    del model.graph.initializer[:]
    m = MergeMatMulPass()(model).model
    assert not m.graph.initializer
    assert op_types(m).count("Constant") == 2  # the merged weight and the split sizes
    for a, b in zip(run(model, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_what_is_left_alone() -> None:
    r = np.random.default_rng(1)
    w = r.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y0"], name="shared_a"),
        helper.make_node("MatMul", ["x", "W"], ["y1"], name="shared_b"),  # one weight used twice
        helper.make_node("MatMul", ["x", "V"], ["y2"], name="lonely"),
        helper.make_node("MatMul", ["x", "U"], ["y3"], name="narrow"),  # V and U: the one pair
        helper.make_node("MatMul", ["x", "x2"], ["y4"], name="dynamic"),  # no constant weight
    ]
    model = make(
        nodes,
        [("x", F, [3, 8]), ("x2", F, [8, 8])],
        [(f"y{i}", F, [3, 4 if i == 3 else 8]) for i in range(5)],
        {"W": w, "V": w.copy(), "U": r.standard_normal((8, 4)).astype(np.float32)},
    )
    (group,) = plan_merges(model)
    assert [m.node.name for m in group.members] == ["lonely", "narrow"] and group.split == [8, 4]
    assert plan_merges(model, MergeMatMulConfig(exclude=("lonely",))) == []
    assert plan_merges(model, MergeMatMulConfig(min_group=3)) == []
    result = MergeMatMulPass(MergeMatMulConfig(exclude=("narrow",)))(model)
    assert not result.modified and result.model.graph == model.graph


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_group": 1}, "min_group"),
        ({"min_group": True}, "min_group"),
        ({"merge_bias": "yes"}, "merge_bias"),
        ({"exclude": ("(",)}, "exclude"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MergeMatMulConfig(**kwargs)  # type: ignore[arg-type]


def test_merged_model_quantizes_with_one_integer_kernel() -> None:
    model, feeds = qkv_model(k=64, sizes=(64, 64, 64))
    merged = MergeMatMulPass()(model).model
    q = DynamicQuantPass()(merged).model
    ops = op_types(q)
    assert ops.count("MatMulInteger") == 1 and ops.count("DynamicQuantizeLinear") == 1
    ref = run(model, feeds)
    for a, b in zip(ref, run(q, feeds), strict=True):
        cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cos > 0.99


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    k=st.integers(1, 24),
    seed=st.integers(0, 99),
)
def test_merge_is_exact_for_any_sizes(sizes: list[int], k: int, seed: int) -> None:
    model, _ = qkv_model(k=k, sizes=tuple(sizes))
    feeds = {"x": np.random.default_rng(seed).standard_normal((3, 2, k)).astype(np.float32)}
    m = MergeMatMulPass()(model).model
    assert op_types(m).count("MatMul") == 1
    for a, b in zip(run(model, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
