"""Dynamic-range quantization: every op kind, both output forms, checked against ONNX Runtime numerics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from models import (
    F,
    conv_model,
    conv_transpose_model,
    gather_model,
    gemm_model,
    make,
    matmul_model,
    mlp_model,
    optimized_op_types,
    rnn_model,
    run,
)
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.quantize import dequantize, quantize, quantize_keeping_sums
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, plan_dynamic_quant


def dequantized_reference(model: onnx.ModelProto, cfg: DynamicQuantConfig) -> onnx.ModelProto:
    """The float model with each quantized weight replaced by its dequantized values (float16 ones rounded)."""
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    plans = {p.weight.name: p for p in plan_dynamic_quant(model, cfg) if not p.skipped or p.float16}
    for init in ref.graph.initializer:
        if init.name in plans:
            p = plans[init.name]
            if p.float16:
                values = p.weight.array.astype(np.float16).astype(np.float32)
            else:
                values = dequantize(p.codes, p.params)
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    return ref


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


CASES = {
    "matmul": matmul_model,
    "gemm_transB": lambda: gemm_model(1),
    "gemm_alpha_beta": lambda: gemm_model(0, alpha=0.5, beta=2.0),
    "conv": conv_model,
    "conv_depthwise": lambda: conv_model(group=16),
    "conv_grouped_nobias": lambda: conv_model(group=4, bias=False),
    "conv_transpose": conv_transpose_model,
    "gather": gather_model,
    "lstm": lambda: rnn_model("LSTM"),
    "gru": lambda: rnn_model("GRU"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("form", ["auto", "integer", "weight_only"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_every_op_and_form_matches_onnxruntime(case: str, form: str, granularity: str, scheme: str) -> None:
    model, feeds = CASES[case]()
    cfg = DynamicQuantConfig(form=form, granularity=granularity, scheme=scheme, min_size=0)
    result = DynamicQuantPass(cfg)(model)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.modified
    done = [r for r in result.records if not r.skipped]
    assert done, result.records
    for r in done:
        if r.action.startswith("float16"):  # a bias of a weight-only layer, kept float in float16
            assert r.bytes_after == r.bytes_before // 2 and r.sqnr_db is not None and r.sqnr_db > 60, r
            continue
        assert r.bytes_after < r.bytes_before / 2, r
        assert r.sqnr_db is not None and r.sqnr_db > 25, r
    # no float weight is left behind
    init_names = {i.name for i in result.model.graph.initializer}
    assert not any(r.name in init_names for r in done)
    (ref,) = run(model, feeds)[:1]
    (out,) = run(result.model, feeds)[:1]
    (deq,) = run(dequantized_reference(model, cfg), feeds)[:1]
    assert out.shape == ref.shape
    integer_kernel = {"MatMulInteger", "ConvInteger"} & op_types(result.model)
    if integer_kernel:
        # activations are quantized at run time too: close to float, not identical
        assert rel_err(ref, out) < 0.03
    else:
        # weight-only: exactly the float op on dequantized weights
        np.testing.assert_allclose(out, deq, rtol=1e-4, atol=1e-4)
        assert rel_err(ref, out) < 0.02


def test_auto_form_uses_integer_matmul_fused_by_onnxruntime(tmp_path) -> None:
    model, feeds = matmul_model(k=128, n=96)
    result = DynamicQuantPass()(model)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= op_types(result.model)
    fused = optimized_op_types(result.model, tmp_path)
    assert "DynamicQuantizeMatMul" in fused, fused
    assert "MatMulInteger" not in fused


def test_auto_form_keeps_float_conv_with_load_time_dequantization(tmp_path) -> None:
    model, feeds = conv_model()
    result = DynamicQuantPass()(model)
    assert "ConvInteger" not in op_types(result.model)
    assert "Cast" in op_types(result.model)
    # ONNX Runtime folds Cast/Mul of constants once at load: only the float Conv runs
    fused = optimized_op_types(result.model, tmp_path)
    assert "Cast" not in fused and "Mul" not in fused, fused


def test_weight_only_emits_dequantize_linear_when_asked() -> None:
    model, feeds = conv_model()
    cfg = DynamicQuantConfig(form="weight_only", weight_encoding="dequantize_linear")
    result = DynamicQuantPass(cfg)(model)
    dq = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 1
    assert helper.get_attribute_value(dq[0].attribute[0]) == 0  # axis: Conv output channels
    w = next(i for i in result.model.graph.initializer if i.name == dq[0].input[0])
    assert w.data_type == onnx.TensorProto.INT8


def test_gemm_trans_b_per_channel_axis_and_bias() -> None:
    model, feeds = gemm_model(trans_b=1)
    cfg = DynamicQuantConfig(form="integer")
    result = DynamicQuantPass(cfg)(model)
    rec = next(r for r in result.records if r.name == "W")
    assert rec.granularity == "per_channel(axis=0)"
    mmi = next(n for n in result.model.graph.node if n.op_type == "MatMulInteger")
    w = next(i for i in result.model.graph.initializer if i.name == mmi.input[1])
    assert list(w.dims) == [64, 32]  # stored transposed as K x N for MatMulInteger
    assert "Add" in op_types(result.model)


def test_per_channel_beats_per_tensor_on_channels_with_different_ranges() -> None:
    model, feeds = matmul_model()
    w = numpy_helper.to_array(model.graph.initializer[0]) * np.geomspace(0.01, 10, 48).astype(np.float32)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
    per_c = DynamicQuantPass(DynamicQuantConfig(form="weight_only"))(model).records[0]
    per_t = DynamicQuantPass(DynamicQuantConfig(form="weight_only", granularity="per_tensor"))(model).records[0]
    assert per_c.sqnr_db > per_t.sqnr_db + 10


def test_mse_range_is_never_worse_than_minmax() -> None:
    model, _ = matmul_model()
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, :] *= 20  # outliers
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "W"))
    mse = DynamicQuantPass(DynamicQuantConfig(range_method="mse", granularity="per_tensor"))(model).records[0]
    mm = DynamicQuantPass(DynamicQuantConfig(range_method="minmax", granularity="per_tensor"))(model).records[0]
    assert mse.sqnr_db >= mm.sqnr_db


def test_weights_in_constant_nodes_are_quantized() -> None:
    r = np.random.default_rng(0)
    w = r.standard_normal((32, 16, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], name="wconst", value=numpy_helper.from_array(w, "W")),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    model = make(nodes, [("x", F, [1, 16, 8, 8])], [("y", F, [1, 32, 8, 8])])
    feeds = {"x": r.standard_normal((1, 16, 8, 8)).astype(np.float32)}
    # compact (default): the int8 codes become initializers (fewer bytes than a Constant node each)
    compact = DynamicQuantPass()(model).model
    assert not any(n.op_type == "Constant" for n in compact.graph.node)
    assert [i.data_type for i in compact.graph.initializer] == [onnx.TensorProto.INT8, onnx.TensorProto.FLOAT16]
    assert rel_err(run(model, feeds)[0], run(compact, feeds)[0]) < 0.02
    # not compact: they stay Constant nodes, as the model stores its weights
    result = DynamicQuantPass(DynamicQuantConfig(compact=False))(model)
    assert not result.model.graph.initializer
    consts = [n for n in result.model.graph.node if n.op_type == "Constant"]
    assert all(c.attribute[0].t.data_type != onnx.TensorProto.FLOAT or c.attribute[0].t.dims[0] <= 32 for c in consts)
    assert sum(c.ByteSize() for c in consts) < w.nbytes / 3
    assert rel_err(run(model, feeds)[0], run(result.model, feeds)[0]) < 0.02


def test_shared_weight_is_quantized_once_for_all_consumers() -> None:
    r = np.random.default_rng(0)
    w = r.standard_normal((64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "W"], ["y"], name="mm2"),
        helper.make_node("Add", ["y", "W"], ["z"], name="add_w"),  # a non-weight use: dequantized to float
    ]
    model = make(nodes, [("x", F, [64, 64])], [("z", F, [64, 64])], {"W": w})
    feeds = {"x": r.standard_normal((64, 64)).astype(np.float32)}
    result = DynamicQuantPass()(model)
    (rec,) = [x for x in result.records if x.name == "W"]
    assert rec.ops == "MatMul,Add"
    int8 = [i for i in result.model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8) == 1
    assert rel_err(run(model, feeds)[0], run(result.model, feeds)[0]) < 0.03


def test_weights_inside_if_subgraphs_and_outer_scope_weights() -> None:
    r = np.random.default_rng(0)
    outer_w = r.standard_normal((32, 32)).astype(np.float32)
    inner_w = r.standard_normal((32, 32)).astype(np.float32)
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "Wout"], ["t"], name="then_mm")], "then", [],
        [helper.make_tensor_value_info("t", F, [4, 32])],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "Win"], ["e"], name="else_mm")], "else", [],
        [helper.make_tensor_value_info("e", F, [4, 32])], [numpy_helper.from_array(inner_w, "Win")],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)
    model = make(
        [node], [("cond", onnx.TensorProto.BOOL, []), ("x", F, [4, 32])], [("y", F, [4, 32])], {"Wout": outer_w}
    )
    result = DynamicQuantPass(DynamicQuantConfig(min_size=0))(model)
    names = {x.name for x in result.records if not x.skipped}
    assert names == {"Wout", "Win"}
    x = r.standard_normal((4, 32)).astype(np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        assert rel_err(run(model, feeds)[0], run(result.model, feeds)[0]) < 0.03


def test_op_list_exclude_and_min_size() -> None:
    model, feeds = mlp_model()
    only_fc2 = DynamicQuantPass(DynamicQuantConfig(exclude=("fc1",), min_size=0))(model)
    status = {r.name: r for r in only_fc2.records}
    assert status["W1"].skipped and "exclude" in status["W1"].reason
    assert not status["W2"].skipped
    small = DynamicQuantPass(DynamicQuantConfig(min_size=1000))(model)
    status = {r.name: r for r in small.records}
    # 640 elements: stays float, stored as float16 (compact, the default) or float32
    assert status["W2"].action == "float16 load_time_cast" and "min size" in status["W2"].reason
    assert status["W1"].action.startswith("int8")  # 2048 elements
    as_is = DynamicQuantPass(DynamicQuantConfig(min_size=1000, compact=False))(model)
    assert next(r for r in as_is.records if r.name == "W2").skipped
    conv_only = DynamicQuantPass(DynamicQuantConfig(op_types=("Conv",)))(model)
    assert not conv_only.modified
    assert all("op list" in r.reason for r in conv_only.records if r.name.startswith("W"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("form", "int4", "form: 'int4' is not one of auto, integer, weight_only"),
        ("op_types", ("Conv", "Foo"), "unknown op 'Foo'"),
        ("exclude", ("(",), "not a valid regular expression"),
        ("min_size", -1, "min_size: must be a non-negative integer"),
        ("granularity", "per_block", "granularity: 'per_block' is not one of"),
    ],
)
def test_config_validation_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DynamicQuantConfig(**{field: value})


def test_config_is_frozen() -> None:
    cfg = DynamicQuantConfig()
    with pytest.raises(AttributeError):
        cfg.form = "integer"  # type: ignore[misc]


def test_same_input_gives_identical_bytes() -> None:
    model, _ = mlp_model()
    a = DynamicQuantPass()(model).model.SerializeToString()
    b = DynamicQuantPass()(model).model.SerializeToString()
    assert a == b


def test_input_model_object_is_not_modified() -> None:
    model, _ = mlp_model()
    before = model.SerializeToString()
    DynamicQuantPass()(model)
    assert model.SerializeToString() == before


def test_low_opset_model_uses_cast_encoding_and_runs() -> None:
    model, feeds = conv_model()
    model.opset_import[0].version = 9
    result = DynamicQuantPass(DynamicQuantConfig(form="weight_only", weight_encoding="dequantize_linear"))(model)
    assert "DequantizeLinear" not in op_types(result.model)  # needs opset >= 13 per channel
    assert rel_err(run(model, feeds)[0], run(result.model, feeds)[0]) < 0.02


# ------------------------------------------------------------------------------------------------
# compact storage: float16 scales, biases and small weights behind load-time Casts, short names
# ------------------------------------------------------------------------------------------------


def se_block_model(opset: int, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Weights in Constant nodes, as PaddleOCR exports them: a Conv with a bias, a depthwise Conv below
    ``min_size`` with a bias, and a bias-free Conv whose bias is an ``Add`` of a reshaped constant."""
    r = np.random.default_rng(seed)
    consts = {
        "w_expand": 0.3 * r.standard_normal((32, 8, 3, 3)),
        "b_expand": r.standard_normal(32),
        "w_dw": 0.3 * r.standard_normal((32, 1, 3, 3)),  # 288 elements, below min_size=300
        "b_dw": r.standard_normal(32),
        "w_proj": 0.3 * r.standard_normal((24, 32, 1, 1)),
        "offset": r.standard_normal(24),
        "offset_shape": np.array([1, 24, 1, 1]),
    }
    nodes = [
        helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v.astype(v.dtype.type if k ==
                         "offset_shape" else np.float32), k)) for k, v in consts.items()
    ]  # fmt: skip
    nodes += [
        helper.make_node("Conv", ["x", "w_expand", "b_expand"], ["h1"], name="expand", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w_dw", "b_dw"], ["h2"], name="dw", pads=[1, 1, 1, 1], group=32),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w_proj"], ["h3"], name="proj"),
        helper.make_node("Reshape", ["offset", "offset_shape"], ["offset_4d"], name="offset_reshape"),
        helper.make_node("Add", ["h3", "offset_4d"], ["y"], name="proj_bias"),
    ]
    model = make(nodes, [("x", F, ["b", 8, 10, 10])], [("y", F, ["b", 24, 10, 10])], opset=opset, ir_version=7)
    return model, {"x": r.standard_normal((2, 8, 10, 10)).astype(np.float32)}


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}


@pytest.mark.parametrize("opset", [11, 17])  # Split takes its sizes as an attribute before opset 13, an input after
def test_compact_stores_scales_biases_and_small_weights_as_packed_float16(opset: int, tmp_path) -> None:
    model, feeds = se_block_model(opset)
    cfg = DynamicQuantConfig(min_size=300)
    result = DynamicQuantPass(cfg)(model)
    onnx.checker.check_model(result.model, full_check=True)
    actions = {r.name: r.action for r in result.records}
    assert actions["w_expand"].startswith("int8") and actions["w_proj"].startswith("int8")
    for name in ("b_expand", "w_dw", "b_dw", "offset"):
        assert actions[name] == "float16 load_time_cast", (name, actions[name])
    assert actions["offset_shape"] == "skipped"
    g = result.model.graph
    # every float tensor left is float16: one pack of the [C] biases, one of the [C, 1, 1, 1] scales, and the
    # depthwise weight on its own (no other tensor has its shape past the first axis)
    inits = {t.name: t for t in g.initializer}
    assert {t.data_type for t in inits.values()} == {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT16} | (
        {onnx.TensorProto.INT64} if opset >= 13 else set()
    )
    splits = [n for n in g.node if n.op_type == "Split"]
    assert len(splits) == 2
    assert sorted(len(n.output) for n in splits) == [2, 3]
    assert not any(n.op_type == "Constant" and n.output[0] != "offset_shape" for n in g.node)
    # the dequantized weights and the float16 tensors keep their names: the original nodes read them unchanged
    convs = {n.name: list(n.input) for n in g.node if n.op_type == "Conv"}
    assert convs == {"expand": ["x", "w_expand", "b_expand"], "dw": ["r1", "w_dw", "b_dw"], "proj": ["r2", "w_proj"]}
    # the stored float16 scales are exactly the scales the codes were computed with
    plans = {p.weight.name: p for p in plan_dynamic_quant(model, cfg)}
    assert plans["w_expand"].scale_float16 and plans["w_proj"].scale_float16
    for name in ("w_expand", "w_proj"):
        s = plans[name].params.scale
        np.testing.assert_array_equal(s.astype(np.float16).astype(np.float32), s)
    # numerics: exactly the float model on the stored values (int8 codes x float16 scales, float16 rest)
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    stored = {n: dequantize(p.codes, p.params) for n, p in plans.items() if not p.skipped}
    stored |= {n: p.weight.array.astype(np.float16).astype(np.float32) for n, p in plans.items() if p.float16}
    for n in ref.graph.node:
        if n.op_type == "Constant" and n.output[0] in stored:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(stored[n.output[0]], n.output[0]))
    (out,) = run(result.model, feeds)
    np.testing.assert_allclose(out, run(ref, feeds)[0], rtol=1e-5, atol=1e-5)
    assert rel_err(run(model, feeds)[0], out) < 0.02
    # ONNX Runtime folds the Casts, Splits and Muls at load: only the float Convs run
    fused = optimized_op_types(result.model, tmp_path)
    assert not {"Cast", "Split", "Mul"} & set(fused), fused


def test_compact_is_smaller_and_not_compact_keeps_float32_and_descriptive_names() -> None:
    model, feeds = se_block_model(11)
    compact = DynamicQuantPass(DynamicQuantConfig(min_size=300))(model).model
    plain = DynamicQuantPass(DynamicQuantConfig(min_size=300, compact=False))(model).model
    # float16 halves the 432 float32 values left (biases, the small weight, the scales): 864 bytes, and more
    assert plain.ByteSize() - compact.ByteSize() > 864
    values = _constant_values(plain)
    assert {v.dtype for v in values.values()} == {np.dtype(np.int8), np.dtype(np.float32), np.dtype(np.int64)}
    assert "w_expand_q" in values and "w_expand_s" in values and "b_dw" in values and "w_dw" in values
    assert not plain.graph.initializer
    # float16 scales move a few codes by one step: the error vs float stays what it was
    ref = run(model, feeds)[0]
    assert rel_err(ref, run(compact, feeds)[0]) < 1.1 * rel_err(ref, run(plain, feeds)[0]) + 1e-3
    # created names are short, and deterministic
    created = {o for n in compact.graph.node for o in n.output} | {t.name for t in compact.graph.initializer}
    assert max(len(x) for x in created - {"w_expand", "w_proj", "w_dw", "b_expand", "b_dw", "offset"}) <= 24
    again = DynamicQuantPass(DynamicQuantConfig(min_size=300))(model).model
    assert again.SerializeToString() == compact.SerializeToString()


def test_float16_storage_only_next_to_load_time_dequantized_weights() -> None:
    # integer MatMul layers (ONNX Runtime fuses them with their bias Add): the bias stays float32
    r = np.random.default_rng(0)
    w, b = r.standard_normal((64, 48)).astype(np.float32), r.standard_normal(48).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Add", ["h", "B"], ["y"])]
    model = make(nodes, [("x", F, ["b", "seq", 64])], [("y", F, ["b", "seq", 48])], {"W": w, "B": b})
    result = DynamicQuantPass()(model)
    status = {r.name: r for r in result.records}
    assert status["W"].action == "int8 integer_matmul" and status["B"].skipped
    # weight-only: the same bias is stored as float16
    wo = DynamicQuantPass(DynamicQuantConfig(form="weight_only"))(model)
    assert {r.name: r.action for r in wo.records}["B"] == "float16 load_time_cast"
    # an excluded layer keeps its float32 bias, and a weight below min_size stays float32 when nothing is int8
    excluded = DynamicQuantPass(DynamicQuantConfig(form="weight_only", exclude=("mm",)))(model)
    assert not excluded.modified and all(r.skipped for r in excluded.records)
    tiny = DynamicQuantPass(DynamicQuantConfig(min_size=10**6))(model)
    assert not tiny.modified


def test_float16_storage_keeps_tensors_that_float16_cannot_hold() -> None:
    model, feeds = conv_model()
    big = np.full(32, 1e5, np.float32)  # past float16's range
    next(t for t in model.graph.initializer if t.name == "B").CopyFrom(numpy_helper.from_array(big, "B"))
    result = DynamicQuantPass()(model)
    assert next(r for r in result.records if r.name == "B").skipped
    assert rel_err(run(model, feeds)[0], run(result.model, feeds)[0]) < 0.02


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(16, 48),
    log_scale=st.floats(-3.0, 2.0),
    seed=st.integers(0, 2**16),
)
def test_float16_scales_are_exact_nearest_and_cost_no_fidelity(channels: int, log_scale: float, seed: int) -> None:
    r = np.random.default_rng(seed)
    spread = 10.0 ** (log_scale + r.uniform(-1, 1, (channels, 1, 1, 1)))
    w = (spread * r.standard_normal((channels, 4, 3, 3))).astype(np.float32)
    model = make([helper.make_node("Conv", ["x", "W"], ["y"], name="c")], [("x", F, [1, 4, 5, 5])],
                 [("y", F, [1, channels, 3, 3])], {"W": w})  # fmt: skip
    (kept,) = [p for p in plan_dynamic_quant(model, DynamicQuantConfig()) if not p.skipped]
    # the fidelity of the scales alone: round to nearest with either
    (compact,) = [p for p in plan_dynamic_quant(model, DynamicQuantConfig(keep_conv_sums=False)) if not p.skipped]
    (plain,) = [p for p in plan_dynamic_quant(model, DynamicQuantConfig(compact=False, keep_conv_sums=False))
                if not p.skipped]  # fmt: skip
    s32, s16 = plain.params.scale, compact.params.scale
    np.testing.assert_array_equal(kept.params.scale, s16)
    # codes made for the stored scale (by default a Conv's output channels keep their sums)
    np.testing.assert_array_equal(kept.codes, quantize_keeping_sums(w, kept.params, 0))
    if compact.scale_float16:
        np.testing.assert_array_equal(s16, s32.astype(np.float16).astype(np.float32))  # the nearest float16
        np.testing.assert_array_equal(compact.codes, quantize(w, compact.params))
        loss = sqnr_db(w, dequantize(plain.codes, plain.params)) - sqnr_db(w, dequantize(compact.codes, compact.params))
        assert loss <= 0.02 + 1e-9
    else:
        np.testing.assert_array_equal(s16, s32)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["det", "rec", "cls"])
def test_rapidocr_models_quantize_to_at_most_030x(key: str, tmp_path) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import realmodels
    import tensorslim as ts

    path = realmodels.rapidocr_models()[key]
    out = tmp_path / f"{key}.onnx"
    ts.quantize(path, out)
    assert out.stat().st_size <= 0.30 * path.stat().st_size
    if key == "cls":  # the smallest model, where the float16 storage matters most: same decisions as float
        x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 48, 192)).astype(np.float32)
        (ref,), (got,) = run(path, {"x": x})[:1], run(out, {"x": x})[:1]
        assert np.abs(ref - got).max() < 0.03
        np.testing.assert_array_equal(ref.argmax(1), got.argmax(1))


def _head(rows: tuple[int | str, ...], k: int, n: int, batch_input: bool = True) -> onnx.ModelProto:
    """x [*rows, k] -> MatMul W [k, n] -> y; ``batch_input=False`` hides the batch name behind a Reshape."""
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    if batch_input:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
        return make(nodes, [("x", F, [*rows, k])], [("y", F, [*rows, n])], {"W": w})
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"], name="flatten"),
             helper.make_node("MatMul", ["x2", "W"], ["y"], name="mm")]  # fmt: skip
    return make(nodes, [("x", F, [*rows, k])], [("y", F, [None, n])], {"W": w, "flat": np.array([-1, k], np.int64)})


def test_sample_macs_counts_rows_from_the_graph() -> None:
    from tensorslim.passes.dynamic_quant import sample_macs

    assert sample_macs(_head(("b",), 128, 20)) == {"y": 128 * 20}  # the inputs' batch axis counts as one sample
    assert sample_macs(_head(("b", 30), 40, 96)) == {"y": 30 * 40 * 96}
    assert sample_macs(_head((2, 16), 128, 128)) == {"y": 2 * 16 * 128 * 128}
    assert sample_macs(_head(("b", "seq"), 128, 20)) == {}  # a sequence of unknown length
    assert sample_macs(_head(("b", 7), 128, 20, batch_input=False)) == {}  # rows no longer named as a batch
    gemm, _ = gemm_model()  # x [b, 64], W [32, 64] transposed
    assert sample_macs(gemm) == {"y": 64 * 32}


def test_auto_keeps_layers_with_little_work_weight_only() -> None:
    from tensorslim.passes.static_rest import dynamic_candidates

    small = _head(("b",), 128, 20)  # a classifier head on one vector per sample: 2.6 k multiply-adds
    res = DynamicQuantPass()(small)
    (rec,) = res.records
    assert rec.action == "int8 load_time_cast" and "2560 multiply-adds per sample, below 131072" in rec.reason
    assert "MatMulInteger" not in op_types(res.model) and dynamic_candidates(small) == []
    x = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    assert rel_err(run(small, {"x": x})[0], run(res.model, {"x": x})[0]) < 0.01
    # asked for, or with the rule off, it runs the integer kernel
    for cfg in (DynamicQuantConfig(form="integer"), DynamicQuantConfig(min_integer_macs=0)):
        assert "MatMulInteger" in op_types(DynamicQuantPass(cfg)(small).model)
    # enough work per sample (16 tokens x 128 x 128): integer kernels, as for a sequence of unknown length
    for big in (_head(("b", 16), 128, 128), _head(("b", "seq"), 128, 20)):
        assert "MatMulInteger" in op_types(DynamicQuantPass()(big).model)
    assert dynamic_candidates(_head(("b", 16), 128, 128)) == ["mm"]
    with pytest.raises(ValueError, match="min_integer_macs: must be a non-negative integer"):
        DynamicQuantConfig(min_integer_macs=-1)
