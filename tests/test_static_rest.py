"""Static int8's float layers: rewrites undone where nodes stay float, and dynamic int8 for float MatMul/Gemm."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, make, optimized_op_types, run
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_placement import (
    PLACEMENT_METADATA_KEY,
    REWRITES_METADATA_KEY,
    Placement,
    load_placement_json,
)
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.passes.static_rest import choose_dynamic, dynamic_candidates, rest_config
from tensorslim.pipeline import mode_pipeline, static_pipeline


def gelu_mlp(seed: int = 0, d: int = 128, hidden: int = 1024, outlier: float = 0.0) -> tuple[onnx.ModelProto, Dataset]:
    """x -> MatMul -> Add -> GELU (Div by sqrt 2, Erf, Add, Mul, Mul: the exported form) -> MatMul -> y (each
    MatMul 131 k multiply-adds per sample: enough for dynamic int8 to be a candidate).
    ``outlier``: one input channel that many times larger than the rest (and read by no output)."""
    r = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Div", ["hb", "sqrt2"], ["g1"], name="gelu_div"),
        helper.make_node("Erf", ["g1"], ["g2"], name="gelu_erf"),
        helper.make_node("Add", ["g2", "one"], ["g3"], name="gelu_add"),
        helper.make_node("Mul", ["hb", "g3"], ["g4"], name="gelu_mul"),
        helper.make_node("Mul", ["g4", "half"], ["g"], name="gelu_half"),
        helper.make_node("MatMul", ["g", "W2"], ["y"], name="mm2"),
    ]
    w2 = (r.standard_normal((hidden, d)) / np.sqrt(hidden)).astype(np.float32)
    inits = {
        "W1": (r.standard_normal((d, hidden)) / np.sqrt(d)).astype(np.float32),
        "b1": (r.standard_normal(hidden) * 0.1).astype(np.float32),
        "W2": w2,
        "sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }  # fmt: skip
    if outlier:
        # one hidden unit, constant and huge, that no output reads: dynamic int8 of mm2's input loses the rest
        inits["W1"][:, 0] = 0.0
        inits["b1"][0] = outlier
        w2[0, :] = 0.0
    model = make(nodes, [("x", F, ["b", d])], [("y", F, ["b", d])], inits, opset=17)
    return model, Dataset({"x": r.standard_normal((32, d)).astype(np.float32)})


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _placement(model: onnx.ModelProto) -> Placement:
    return load_placement_json(next(p.value for p in model.metadata_props if p.key == PLACEMENT_METADATA_KEY), "m")


def test_rewrites_are_undone_where_the_nodes_stay_float(tmp_path: Path) -> None:
    model, data = gelu_mlp()
    cfg = StaticQuantConfig(latency_check=False, exclude=("gelu_.*",))
    res = static_pipeline(cfg, data)(model)
    ops = Counter(n.op_type for n in res.model.graph.node)
    # the Div by sqrt(2) was rewritten into a Mul for int8 kernels; it stays float, so it is a Div again...
    assert ops["Div"] == 1 and any("rewrite(s) for int8 undone" in n for n in res.notes), (ops, res.notes)
    div = next(n for n in res.model.graph.node if n.op_type == "Div")
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in res.model.graph.initializer}
    assert float(consts[div.input[1]]) == pytest.approx(np.sqrt(2.0))
    # ... which ONNX Runtime fuses into one GELU kernel, as in the float model; the record of rewrites is gone
    assert {"Gelu", "BiasGelu"} & set(optimized_op_types(res.model, tmp_path)), optimized_op_types(res.model, tmp_path)
    assert REWRITES_METADATA_KEY not in {p.key for p in res.model.metadata_props}
    feeds = {"x": data.inputs["x"][:8]}
    assert _cos(run(model, feeds)[0], run(res.model, feeds)[0]) > 0.999


def test_a_rewrite_with_an_int8_node_is_kept() -> None:
    model, data = gelu_mlp()
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    placement = _placement(res.model)
    # the Div's replacement Mul is tried in int8 (QLinearMul); where it runs int8 the rewrite stays
    if "gelu_div" in placement.int8:
        assert not any(n.op_type == "Div" for n in res.model.graph.node)
    else:
        assert any(n.op_type == "Div" and n.name == "gelu_div" for n in res.model.graph.node)


def _quantize_float_mm2(model: onnx.ModelProto, data: Dataset, dynamic: tuple[str, ...]) -> onnx.ModelProto:
    """Static int8 replaying a placement that keeps mm2 float and lists ``dynamic`` (the rest step included)."""
    first = _placement(mode_pipeline(StaticQuantConfig(latency_check=False), data=data)(model).model)
    assert "mm2" in first.int8
    placement = Placement(tuple(n for n in first.int8 if n != "mm2"), (*first.float, ("mm2", "test: kept float")),
                          dynamic=dynamic)  # fmt: skip
    return mode_pipeline(StaticQuantConfig(placement=placement), data=data)(model).model


def test_a_placement_runs_the_float_matmuls_it_lists_in_dynamic_int8() -> None:
    model, data = gelu_mlp()
    weight_only = _quantize_float_mm2(model, data, ())
    assert "MatMulInteger" not in {n.op_type for n in weight_only.graph.node}
    dyn = _quantize_float_mm2(model, data, ("mm2",))
    ops = Counter(n.op_type for n in dyn.graph.node)
    assert ops["DynamicQuantizeLinear"] == 1 and ops["MatMulInteger"] == 1, ops
    assert _placement(dyn).dynamic == ("mm2",)
    assert json.loads(_placement(dyn).to_json())["dynamic"] == ["mm2"]
    feeds = {"x": data.inputs["x"][:8]}
    assert _cos(run(model, feeds)[0], run(dyn, feeds)[0]) > 0.995
    # the replay is deterministic: same placement, same bytes
    assert _quantize_float_mm2(model, data, ("mm2",)).SerializeToString() == dyn.SerializeToString()


def test_rest_config_and_candidates() -> None:
    model, data = gelu_mlp()
    assert dynamic_candidates(model) == ["mm1", "mm2"]
    assert rest_config(model, ()).form == "weight_only"
    cfg = rest_config(model, ["mm2"])
    assert cfg.form == "auto" and cfg.float_compute == ("^mm1$",)


def test_dynamic_int8_that_loses_accuracy_is_not_chosen() -> None:
    model, data = gelu_mlp(outlier=3000.0)
    static = mode_pipeline(StaticQuantConfig(latency_check=False, exclude=("mm2",)), data=data)
    # the static model before the rest step: the pipeline's static part alone
    first = static.steps[-1].pass_.steps[0].pass_(model).model  # type: ignore[attr-defined]
    nodes, notes = choose_dynamic(model, first, data)
    assert nodes == () and len(notes) == 1 and "lowers the output SQNR" in notes[0], notes


def test_the_static_mode_decides_dynamic_by_measuring_and_records_it() -> None:
    model, data = gelu_mlp(d=256, hidden=1024)
    # every activation under 60 dB stays float: both layers are left to the dynamic-or-weight-only decision
    res = mode_pipeline(StaticQuantConfig(fallback_sqnr_db=60, max_fallback=1.0), data=data)(model)
    notes = [n for n in res.notes if "2 float MatMul/Gemm layer(s)" in n]
    assert len(notes) == 1, res.notes
    placement = _placement(res.model)
    assert placement.int8 == ()
    integer = [n for n in res.model.graph.node if n.op_type == "MatMulInteger"]
    if placement.dynamic:
        assert len(placement.dynamic) == 2 and len(integer) == 2 and "x of weight-only [" in notes[0], notes
        feeds = {"x": data.inputs["x"][:8]}
        assert _cos(run(model, feeds)[0], run(res.model, feeds)[0]) > 0.995
    else:
        assert not integer and "not faster" in notes[0], notes


def _clamp_chain(zp: int, clamp: str = "Relu") -> onnx.ModelProto:
    """x -> Q -> DQ -> clamp -> Q -> DQ -> {Add(y, 1), Mul(y, 2)}: the same scale and zero point ``zp`` twice."""
    from onnx import numpy_helper

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"], name="d1"),
        helper.make_node(clamp, ["d1", *(["lo", "hi"] if clamp == "Clip" else [])], ["r"], name="clamp"),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["d2"], name="d2"),
        helper.make_node("Add", ["d2", "one"], ["a"], name="add"),
        helper.make_node("Mul", ["d2", "two"], ["m"], name="mul"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [4, 8])],
                              [helper.make_tensor_value_info(o, F, [4, 8]) for o in ("a", "m")],
                              [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                               numpy_helper.from_array(np.array(zp, np.uint8), "z"),
                               numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                               numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
                               numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                               numpy_helper.from_array(np.array(2.0, np.float32), "two")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("zp", "clamp", "dropped"), [(0, "Relu", 1), (0, "Clip", 0), (10, "Relu", 0)])
def test_a_clamp_the_int8_range_already_applies_is_dropped_exactly(zp: int, clamp: str, dropped: int) -> None:
    from tensorslim.passes.static_apply import drop_redundant_clamps

    model = _clamp_chain(zp, clamp)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    # uint8 at scale 0.05 from 0 spans [0, 12.75]: a Relu changes nothing, a Clip to 6 does; zero point 10: negatives
    assert drop_redundant_clamps(out) == dropped
    onnx.checker.check_model(out)
    assert len(out.graph.node) == len(model.graph.node) - 3 * dropped
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32) * 8}
    for a, b in zip(run(model, feeds), run(out, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_static_int8_leaves_no_dequantize_quantize_pair_after_a_shared_relu(tmp_path: Path) -> None:
    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r1", "c2"], ["y"], name="residual"),
    ]
    inits = {"W1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "W2": (r.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32)}  # fmt: skip
    model = make(nodes, [("x", F, [1, 3, 16, 16])], [("y", F, [1, 8, 16, 16])], inits, opset=17)
    data = Dataset({"x": r.standard_normal((16, 3, 16, 16)).astype(np.float32)})
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    assert "Relu" not in {n.op_type for n in res.model.graph.node}
    ops = optimized_op_types(res.model, tmp_path)
    assert ops.count("QLinearConv") == 2 and "DequantizeLinear" not in ops[1:-1], ops


def test_a_chain_of_scalar_muls_leaves_no_dequantize_that_nothing_reads() -> None:
    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c0"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["c1"], name="relu1"),  # keeps the Muls out of the Conv's weights
        helper.make_node("Mul", ["c1", "k1"], ["m1"], name="scale1"),
        helper.make_node("Div", ["m1", "six"], ["m2"], name="scale2"),
        helper.make_node("Conv", ["m2", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = {"W1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "W2": (r.standard_normal((4, 8, 3, 3)) * 0.1).astype(np.float32),
             "k1": np.array(1.5, np.float32), "six": np.array(6.0, np.float32)}  # fmt: skip
    model = make(nodes, [("x", F, ["b", 3, 16, 16])], [("y", F, ["b", 4, 16, 16])], inits, opset=17)
    data = Dataset({"x": r.standard_normal((16, 3, 16, 16)).astype(np.float32)})
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    read = {i for n in res.model.graph.node for i in n.input} | {o.name for o in res.model.graph.output}
    unread = [n.name for n in res.model.graph.node if not set(n.output) & read]
    assert not unread, unread  # ONNX Runtime runs such nodes on every inference
    # both scalar Muls became the scale of one DequantizeLinear: no Mul kernel is left
    assert "Mul" not in {n.op_type for n in res.model.graph.node}
    feeds = {"x": data.inputs["x"][:4]}
    assert _cos(run(model, feeds)[0], run(res.model, feeds)[0]) > 0.999


def test_a_conv_transpose_with_kernel_equal_to_stride_runs_as_an_int8_conv(tmp_path: Path) -> None:
    from tensorslim.passes.static_placement import rewrite_for_int8

    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("ConvTranspose", ["r0", "Wt"], ["t"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["t", "bt"], ["tb"], name="up_bias"),
        helper.make_node("BatchNormalization", ["tb", "g", "b", "m", "v"], ["bn"], name="up_bn"),
        helper.make_node("Relu", ["bn"], ["y"], name="relu1"),
    ]
    inits = {"W0": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "Wt": (r.standard_normal((8, 6, 2, 2)) * 0.3).astype(np.float32),
             "bt": (r.standard_normal((1, 6, 1, 1)) * 0.1).astype(np.float32),
             "g": r.uniform(0.5, 1.5, 6).astype(np.float32), "b": (r.standard_normal(6) * 0.1).astype(np.float32),
             "m": (r.standard_normal(6) * 0.1).astype(np.float32), "v": r.uniform(0.5, 1.5, 6).astype(np.float32)}
    model = make(nodes, [("x", F, ["b", 3, 8, 8])], [("y", F, ["b", 6, 16, 16])], inits, opset=17)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    notes = rewrite_for_int8(rewritten)
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "ConvTranspose x1" in notes[0] and ops == ["Conv", "Relu", "Conv", "DepthToSpace", "Relu"], (ops, notes)
    x = r.standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(rewritten, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-4, atol=1e-5)
    # a transposed convolution with overlapping blocks is left alone
    overlapping = onnx.ModelProto()
    overlapping.CopyFrom(model)
    up = next(n for n in overlapping.graph.node if n.op_type == "ConvTranspose")
    del up.attribute[:]
    up.attribute.extend([helper.make_attribute("kernel_shape", [2, 2]), helper.make_attribute("strides", [1, 1])])
    assert not any("ConvTranspose" in n for n in rewrite_for_int8(overlapping))
    # static int8: both convolutions run on ONNX Runtime's int8 kernel
    data = Dataset({"x": r.standard_normal((16, 3, 8, 8)).astype(np.float32)})
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    opt = optimized_op_types(res.model, tmp_path)
    assert opt.count("QLinearConv") == 2 and "ConvTranspose" not in opt, opt
    assert _cos(run(model, {"x": x})[0], run(res.model, {"x": x})[0]) > 0.99
