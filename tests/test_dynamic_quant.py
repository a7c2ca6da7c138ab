"""Dynamic-range quantization: every op kind, both output forms, checked against ONNX Runtime numerics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
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
from tensorslim.algorithms.quantize import dequantize
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, plan_dynamic_quant


def dequantized_reference(model: onnx.ModelProto, cfg: DynamicQuantConfig) -> onnx.ModelProto:
    """The float model with each quantized weight replaced by its dequantized values."""
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    plans = {p.weight.name: p for p in plan_dynamic_quant(model, cfg) if not p.skipped}
    for init in ref.graph.initializer:
        if init.name in plans:
            p = plans[init.name]
            init.CopyFrom(numpy_helper.from_array(dequantize(p.codes, p.params), init.name))
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


def test_weights_in_constant_nodes_are_quantized_and_stay_constants() -> None:
    r = np.random.default_rng(0)
    w = r.standard_normal((32, 16, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], name="wconst", value=numpy_helper.from_array(w, "W")),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    model = make(nodes, [("x", F, [1, 16, 8, 8])], [("y", F, [1, 32, 8, 8])])
    feeds = {"x": r.standard_normal((1, 16, 8, 8)).astype(np.float32)}
    result = DynamicQuantPass()(model)
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
    assert status["W2"].skipped and "min size" in status["W2"].reason  # 640 elements
    assert not status["W1"].skipped  # 2048 elements
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
