"""Constant scales and offsets folded into neighbouring Conv/Gemm/MatMul layers: same outputs, fewer nodes."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from models import F, make, rng, run
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.fold_affine import fold_affine, plan_folds
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline

R4 = ["n", "c", "h", "w"]  # an output's declared shape: rank 4, sizes left to the model


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _same(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    onnx.checker.check_model(after)
    for a, b in zip(run(before, feeds), run(after, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max() + 1e-6))


def _folded(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fold_affine(out)
    return out


def _chain(pads: int = 0, per_channel: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Mul(c, .) -> Add(., b) -> Relu -> Div(., 6) -> Sub(., 0.25) -> Conv (1x1 or 3x3 with ``pads``)."""
    r = rng(1)
    c = r.uniform(0.5, 2.0, (1, 8, 1, 1) if per_channel else (1,)).astype(np.float32)
    k = 1 if pads == 0 else 3
    inits = {"w1": r.normal(size=(8, 3, 3, 3)).astype(np.float32), "b1": r.normal(size=8).astype(np.float32),
             "c": c, "b": r.normal(size=(8, 1, 1)).astype(np.float32), "six": np.float32([6.0]),
             "q": np.float32([0.25]), "w2": r.normal(size=(4, 8, k, k)).astype(np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "y1"], ["y2"], name="scale"),  # the constant first: ONNX Runtime leaves it
        helper.make_node("Add", ["y2", "b"], ["y3"], name="offset"),
        helper.make_node("Relu", ["y3"], ["y4"], name="relu"),
        helper.make_node("Div", ["y4", "six"], ["y5"], name="div"),
        helper.make_node("Sub", ["y5", "q"], ["y6"], name="sub"),
        helper.make_node("Conv", ["y6", "w2"], ["out"], name="conv2", pads=[pads] * 4),
    ]
    model = make(nodes, [("x", F, ["b", 3, 10, 10])], [("out", F, R4)], inits)
    return model, {"x": r.normal(size=(2, 3, 10, 10)).astype(np.float32)}


def test_scales_and_offsets_fold_into_the_convs_on_both_sides() -> None:
    model, feeds = _chain()
    after = onnx.ModelProto()
    after.CopyFrom(model)
    folds = fold_affine(after)
    assert _ops(after) == ["Conv", "Relu", "Conv"]
    assert {(f.node, f.layer, f.side) for f in folds} >= {
        ("scale", "conv1", "output"),
        ("offset", "conv1", "output"),
        ("div", "conv2", "input"),
        ("sub", "conv2", "input"),
    }
    _same(model, after, feeds)


def test_an_offset_stays_before_a_padded_conv_and_a_per_channel_scale_before_any() -> None:
    """Folding an offset into a padded Conv would change the border (the padding's zeros are not offset), and a
    per-channel scale into the weight's input axis would reshape its per-channel int8 ranges."""
    model, feeds = _chain(pads=1)
    after = _folded(model)
    assert _ops(after) == ["Conv", "Relu", "Div", "Sub", "Conv"]  # the scale after the Relu is not next to a layer
    _same(model, after, feeds)
    # a per-channel scale in front of a Conv stays
    r = rng(2)
    inits = {
        "c": r.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32),
        "w": r.normal(size=(2, 4, 1, 1)).astype(np.float32),
    }
    m = make([helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "c"], ["s"], name="mul"),
              helper.make_node("Conv", ["s", "w"], ["y"], name="conv")],
             [("x", F, [1, 4, 5, 5])], [("y", F, R4)], inits)  # fmt: skip
    assert not plan_folds(m)


def test_nothing_folds_where_the_tensor_has_another_reader_is_an_output_or_the_constant_can_change() -> None:
    r = rng(3)
    w = r.normal(size=(4, 3, 1, 1)).astype(np.float32)
    two_readers = make(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv"), helper.make_node("Mul", ["y", "c"], ["z"], name="m"),
         helper.make_node("Relu", ["y"], ["t"], name="relu")],
        [("x", F, [1, 3, 4, 4])], [("z", F, R4), ("t", F, R4)], {"w": w, "c": np.float32([2.0])})  # fmt: skip
    assert not plan_folds(two_readers)
    is_output = make([helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                      helper.make_node("Mul", ["y", "c"], ["z"], name="m")],
                     [("x", F, [1, 3, 4, 4])], [("z", F, R4), ("y", F, R4)], {"w": w, "c": np.float32([2.0])})  # fmt: skip
    assert not plan_folds(is_output)
    overridable = make([helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                        helper.make_node("Mul", ["y", "c"], ["z"], name="m")],
                       [("x", F, [1, 3, 4, 4]), ("c", F, [1])], [("z", F, R4)], {"w": w, "c": np.float32([2.0])})  # fmt: skip
    assert not plan_folds(overridable)  # an initializer that is also a graph input: the caller may feed another
    reversed_sub = make([helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                         helper.make_node("Sub", ["c", "y"], ["z"], name="s")],
                        [("x", F, [1, 3, 4, 4])], [("z", F, R4)], {"w": w, "c": np.float32([2.0])})  # fmt: skip
    assert not plan_folds(reversed_sub)  # c - y is not an offset of y
    branch = helper.make_graph([helper.make_node("Identity", ["y"], ["b"], name="inner")], "branch", [],
                               [helper.make_tensor_value_info("b", F, R4)])  # fmt: skip
    read_by_a_body = make(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv"), helper.make_node("Mul", ["y", "c"], ["z"], name="m"),
         helper.make_node("If", ["flag"], ["t"], name="if", then_branch=branch, else_branch=branch)],
        [("x", F, [1, 3, 4, 4]), ("flag", onnx.TensorProto.BOOL, [])], [("z", F, R4), ("t", F, R4)],
        {"w": w, "c": np.float32([2.0])})  # fmt: skip
    assert not plan_folds(read_by_a_body)  # the If's branch reads y from the outer graph


def test_gemm_and_matmul_take_what_they_can_and_keep_the_function() -> None:
    r = rng(4)
    for trans_b in (0, 1):
        b = r.normal(size=(6, 5) if trans_b else (5, 6)).astype(np.float32)
        inits = {"b": b, "c": r.normal(size=6).astype(np.float32), "s": r.uniform(0.5, 2, 6).astype(np.float32),
                 "o": r.normal(size=(1, 6)).astype(np.float32), "k": np.float32(0.5), "p": np.float32([0.3])}  # fmt: skip
        nodes = [helper.make_node("Mul", ["x", "k"], ["xs"], name="pre_scale"),
                 helper.make_node("Add", ["xs", "p"], ["xo"], name="pre_offset"),
                 helper.make_node("Gemm", ["xo", "b", "c"], ["g"], name="gemm", transB=trans_b, alpha=0.7, beta=1.5),
                 helper.make_node("Mul", ["g", "s"], ["gs"], name="post_scale"),
                 helper.make_node("Add", ["o", "gs"], ["y"], name="post_offset")]  # fmt: skip
        model = make(nodes, [("x", F, [3, 5])], [("y", F, ["m", "n"])], inits)
        after = _folded(model)
        assert _ops(after) == ["Gemm"]
        _same(model, after, {"x": r.normal(size=(3, 5)).astype(np.float32)})
    inits = {"w": r.normal(size=(5, 6)).astype(np.float32), "s": r.uniform(0.5, 2, 6).astype(np.float32),
             "k": np.float32([3.0]), "o": r.normal(size=6).astype(np.float32)}  # fmt: skip
    nodes = [helper.make_node("Div", ["x", "k"], ["xs"], name="pre"),
             helper.make_node("MatMul", ["xs", "w"], ["m"], name="mm"),
             helper.make_node("Mul", ["m", "s"], ["ms"], name="post"),
             helper.make_node("Add", ["ms", "o"], ["y"], name="bias")]  # fmt: skip
    model = make(nodes, [("x", F, [2, 3, 5])], [("y", F, ["a", "m", "n"])], inits)
    after = _folded(model)
    assert _ops(after) == ["MatMul", "Add"]  # MatMul has no bias to take the offset
    _same(model, after, {"x": r.normal(size=(2, 3, 5)).astype(np.float32)})


@settings(max_examples=30, deadline=None)
@given(
    group=st.sampled_from([1, 2, 4]),
    kernel=st.sampled_from([1, 3]),
    pad=st.integers(0, 1),
    bias=st.booleans(),
    ops=st.lists(
        st.tuples(st.sampled_from(["Mul", "Add", "Sub", "Div"]), st.booleans(), st.booleans(), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    after_relu=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_chain_of_constant_ops_around_convs_keeps_the_function(
    group: int, kernel: int, pad: int, bias: bool, ops: list[tuple[str, bool, bool, bool]], after_relu: bool,
    seed: int,
) -> None:  # fmt: skip
    """Property: whatever folds, the outputs stay those of the model as written (ONNX Runtime, float32)."""
    r = rng(seed)
    inits = {"w1": r.normal(size=(8, 8 // group, kernel, kernel)).astype(np.float32),
             "w2": r.normal(size=(4, 8, kernel, kernel)).astype(np.float32)}  # fmt: skip
    if bias:
        inits["b1"] = r.normal(size=8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"] if bias else ["x", "w1"], ["t0"], name="c1", group=group,
                              pads=[pad] * 4)]  # fmt: skip
    t = "t0"
    if after_relu:
        nodes.append(helper.make_node("Relu", [t], ["r"], name="relu"))
        t = "r"
    for i, (op, per_channel, const_first, negative) in enumerate(ops):
        shape = (8, 1, 1) if per_channel else (1,)
        value = r.uniform(0.5, 2.0, shape) * (-1 if negative else 1)
        inits[f"k{i}"] = value.astype(np.float32)
        first = const_first and op in ("Mul", "Add")
        nodes.append(helper.make_node(op, [f"k{i}", t] if first else [t, f"k{i}"], [f"t{i + 1}"], name=f"op{i}"))
        t = f"t{i + 1}"
    nodes.append(helper.make_node("Conv", [t, "w2"], ["y"], name="c2", pads=[pad] * 4))
    model = make(nodes, [("x", F, [1, 8, 6, 6])], [("y", F, R4)], inits)
    after = _folded(model)
    assert len(after.graph.node) <= len(model.graph.node)
    _same(model, after, {"x": r.normal(size=(1, 8, 6, 6)).astype(np.float32)})


def test_static_quantization_folds_first_and_the_int8_model_has_fewer_roundings() -> None:
    model, feeds = _chain()
    data = Dataset({"x": rng(5).normal(size=(16, 3, 10, 10)).astype(np.float32)})
    cfg = StaticQuantConfig(latency_check=False)
    res = static_pipeline(cfg, data)(model)
    assert any(n.startswith("constant scales and offsets folded") for n in res.notes), res.notes
    ops = _ops(res.model)
    assert "Mul" not in ops and "Add" not in ops and "Div" not in ops and "Sub" not in ops
    assert ops.count("QuantizeLinear") <= 3  # the input, between the convs, the output: no rounding in between
    np.testing.assert_allclose(
        run(res.model, feeds)[0], run(model, feeds)[0], atol=0.1 * float(np.abs(run(model, feeds)[0]).max())
    )


def test_an_op_onnx_runtime_fuses_into_a_float_kernel_does_not_fold() -> None:
    """GELU's ``* 0.5`` before a MatMul could fold into its weight, but ONNX Runtime fuses it into one Gelu kernel
    in float: folded, the GELU would run as five float kernels wherever it stays float."""
    from tensorslim.passes.static_prepare import StaticPrepareConfig, StaticPreparePass
    from test_static_rest import gelu_mlp

    model, _ = gelu_mlp()
    assert any(f.node == "gelu_half" for f in plan_folds(model))  # foldable by the rules alone
    prepared = StaticPreparePass(StaticPrepareConfig())(model)
    assert "gelu_half" in {n.name for n in prepared.model.graph.node}
    assert not any("folded into the neighbouring" in n for n in prepared.notes)
