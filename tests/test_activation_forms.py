"""Written-out HardSwish / HardSigmoid fused back into the ops ONNX Runtime's float kernels take."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from models import F, make, ort_optimized, run
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.activation_forms import fuse_hard_activations, plan_hard_activations
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline


def _conv_act_conv(act: list[onnx.NodeProto], opset: int = 13, extra: dict[str, np.ndarray] | None = None,
                   outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:  # fmt: skip
    """Conv -> ``act`` (reads ``c1``, writes ``h``) -> Conv: the written-out activation between two layers."""
    r = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), *act,
             helper.make_node("Conv", ["h", "W2", "B2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]  # fmt: skip
    inits = {
        "W1": (r.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32), "B1": r.standard_normal(8).astype(
            np.float32),
        "W2": (r.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32), "B2": np.zeros(8, np.float32),
        **(extra or {}),
    }  # fmt: skip
    outs = [(o, F, ["b", 8, 16, 16]) for o in outputs]
    return make(nodes, [("x", F, ["b", 3, 16, 16])], outs, inits, opset=opset)


_CONSTS = {"three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
           "sixth": np.array(1 / 6, np.float32)}  # fmt: skip


def _paddle(scale: str = "div", order: str = "x_first") -> list[onnx.NodeProto]:
    """Paddle's HardSwish: Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6), or with Mul by 1/6 and the operands swapped."""
    mul_in = ["c1", "k"] if order == "x_first" else ["k", "c1"]
    add_in = ["c1", "three"] if order == "x_first" else ["three", "c1"]
    last = (helper.make_node("Div", ["m", "six"], ["h"], name="hs_scale") if scale == "div"
            else helper.make_node("Mul", ["sixth", "m"] if order != "x_first" else ["m", "sixth"], ["h"],
                                  name="hs_scale"))  # fmt: skip
    return [helper.make_node("Add", add_in, ["a"], name="hs_add"),
            helper.make_node("Clip", ["a", "zero", "six"], ["k"], name="hs_clip"),
            helper.make_node("Mul", mul_in, ["m"], name="hs_mul"), last]  # fmt: skip


@pytest.mark.parametrize(("scale", "order"), [("div", "x_first"), ("mul", "x_first"), ("mul", "swapped"),
                                              ("div", "swapped")])  # fmt: skip
def test_a_written_out_hardswish_becomes_hardswish_that_onnxruntime_fuses_into_the_conv(
    tmp_path: Path, scale: str, order: str
) -> None:
    model = _conv_act_conv(_paddle(scale, order), extra=_CONSTS)
    found = plan_hard_activations(model)
    assert [(f.kind, f.nodes, f.x, f.output) for f in found] == [
        ("HardSwish", ("hs_add", "hs_clip", "hs_mul", "hs_scale"), "c1", "h")]
    assert found[0].alpha == pytest.approx(1 / 6) and found[0].beta == pytest.approx(0.5)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fuse_hard_activations(fused) == {"HardSwish": 1}
    onnx.checker.check_model(fused)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert ops == Counter({"Conv": 2, "HardSigmoid": 1, "Mul": 1}), ops
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32) * 3
    np.testing.assert_allclose(run(fused, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    # what the rewrite is for: ONNX Runtime runs the HardSwish inside the first Conv, the written-out one as kernels
    before, after = ort_optimized(model, tmp_path), ort_optimized(fused, tmp_path)
    acts = [a.s for n in after.graph.node for a in n.attribute if a.name == "activation"]
    assert b"HardSwish" in acts, [(n.op_type, n.name) for n in after.graph.node]
    assert len(after.graph.node) < len(before.graph.node)
    assert not {"Clip", "Div", "Add"} & {n.op_type for n in after.graph.node}


def test_a_written_out_hardsigmoid_with_any_offset_and_bound() -> None:
    """clip(x + b, 0, c) / c is HardSigmoid(alpha=1/c, beta=b/c) for any b and any c > 0; Clip's opset-6 form
    (min and max as attributes) too."""
    act = [helper.make_node("Add", ["c1", "b"], ["a"], name="add"),
           helper.make_node("Clip", ["a"], ["k"], name="clip", min=0.0, max=5.0),
           helper.make_node("Div", ["k", "c"], ["h"], name="div")]  # fmt: skip
    model = _conv_act_conv(act, opset=10, extra={"b": np.array(2.0, np.float32), "c": np.array(5.0, np.float32)})
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fuse_hard_activations(fused) == {"HardSigmoid": 1}
    (hs,) = [n for n in fused.graph.node if n.op_type == "HardSigmoid"]
    attrs = {a.name: a.f for a in hs.attribute}
    assert hs.name == "clip" and attrs["alpha"] == pytest.approx(0.2) and attrs["beta"] == pytest.approx(0.4)
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32) * 4
    np.testing.assert_allclose(run(fused, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def _not_a_hard_activation(case: str) -> onnx.ModelProto:
    act = _paddle()
    extra = dict(_CONSTS)
    outputs: tuple[str, ...] = ("y",)
    if case == "clip from -1":
        extra["lo"] = np.array(-1.0, np.float32)
        act[1] = helper.make_node("Clip", ["a", "lo", "six"], ["k"], name="hs_clip")
    elif case == "scale is not 1/bound":
        extra["five"] = np.array(5.0, np.float32)
        act[3] = helper.make_node("Div", ["m", "five"], ["h"], name="hs_scale")
    elif case == "clip read twice":
        act.append(helper.make_node("Identity", ["k"], ["k2"], name="other_reader"))
        outputs = ("y", "k2")
    elif case == "product is a graph output":
        outputs = ("y", "m")
    elif case == "per-channel offset":
        extra["three"] = np.full((1, 8, 1, 1), 3.0, np.float32)
    elif case == "another tensor times the gate":
        act[2] = helper.make_node("Mul", ["a", "k"], ["m"], name="hs_mul")
    elif case == "a node name used twice":
        act[2].name = "conv2"  # legal ONNX (names need not be unique); the rewrite finds nodes by name
    elif case == "bound is a graph input":
        model = _conv_act_conv(act, extra=extra)
        model.graph.input.append(helper.make_tensor_value_info("six", F, []))  # a caller may feed another bound
        return model
    return _conv_act_conv(act, extra=extra, outputs=outputs)


@pytest.mark.parametrize("case", ["clip from -1", "scale is not 1/bound", "clip read twice", "product is a graph output",
                                  "per-channel offset", "another tensor times the gate", "bound is a graph input",
                                  "a node name used twice"])
def test_what_is_not_a_hard_activation_is_left_as_it_is(case: str) -> None:
    model = _not_a_hard_activation(case)
    before = model.SerializeToString()
    assert plan_hard_activations(model) == []
    assert fuse_hard_activations(model) == {}
    assert model.SerializeToString() == before


@settings(max_examples=25, deadline=None)
@given(b=st.floats(-6, 6, width=32), c=st.floats(0.25, 12, width=32), seed=st.integers(0, 2**16))
def test_the_fused_hardswish_computes_the_written_out_one(b: float, c: float, seed: int) -> None:
    """x * clip(x + b, 0, c) / c = x * hardsigmoid(x; 1/c, b/c), for any offset and bound, up to float rounding."""
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "zero", "c"], ["k"], name="clip"),
             helper.make_node("Mul", ["x", "k"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "c"], ["y"], name="div")]  # fmt: skip
    model = make(nodes, [("x", F, [4096])], [("y", F, [4096])],
                 {"b": np.array(b, np.float32), "c": np.array(c, np.float32), "zero": np.array(0.0, np.float32)},
                 opset=13)  # fmt: skip
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fuse_hard_activations(fused) == {"HardSwish": 1}
    x = (np.random.default_rng(seed).standard_normal(4096) * (abs(b) + c)).astype(np.float32)
    want, got = run(model, {"x": x})[0], run(fused, {"x": x})[0]
    # the fused form computes x / c + b / c where the written one computes (x + b) / c: near x = -b the two differ by
    # a few float32 steps of the terms (|x| + |b|) / c, which the product with x carries (b=5, c=0.28125, x near -5:
    # 6e-6 apart at a value of 0.013); the bound is that rounding, per element
    eps = float(np.finfo(np.float32).eps)
    bound = 1e-5 * np.abs(want) + 8 * eps * np.abs(x) * (np.abs(x) + abs(b)) / c + 1e-6 * (abs(b) + c)
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound), float(np.max(np.abs(got - want) - bound))


def test_static_int8_keeps_the_fused_form_where_the_activation_stays_float(tmp_path: Path) -> None:
    """The static preparation fuses first; where the activation runs int8 it is rewritten into int8-capable ops,
    where it stays float (here: excluded, with the Conv before it) the output holds the HardSigmoid + Mul that ONNX
    Runtime fuses into that Conv."""
    model = _conv_act_conv(_paddle(), extra=_CONSTS)
    data = Dataset({"x": np.random.default_rng(3).standard_normal((16, 3, 16, 16)).astype(np.float32)})
    everything = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    assert any("written-out activations fused" in n and "HardSwish x1" in n for n in everything.notes)
    assert "HardSigmoid" not in {n.op_type for n in everything.model.graph.node}  # int8: Mul/Add/Clip/Mul
    kept = static_pipeline(StaticQuantConfig(latency_check=False, exclude=("^hs_", "^conv1$")), data)(model)
    ops = Counter(n.op_type for n in kept.model.graph.node)
    assert ops["HardSigmoid"] == 1 and "Clip" not in ops and "Div" not in ops, ops
    acts = [a.s for n in ort_optimized(kept.model, tmp_path).graph.node for a in n.attribute if a.name == "activation"]
    assert b"HardSwish" in acts
    feeds = {"x": data.inputs["x"][:4]}
    want, got = run(model, feeds)[0], run(kept.model, feeds)[0]
    assert np.corrcoef(want.ravel(), got.ravel())[0, 1] > 0.999


def _affine_conv_net() -> onnx.ModelProto:
    """Conv -> learnable affine block written constant-first (Mul(a, x), Add(b, x): ONNX Runtime's Conv+Mul/Add
    fusion does not take it) -> Paddle's HardSwish -> Conv, as PP-OCR's recognizer has them."""
    act = [helper.make_node("Mul", ["gain", "c1"], ["s"], name="affine_mul"),
           helper.make_node("Add", ["shift", "s"], ["t"], name="affine_add"),
           *(_rename(n, {"c1": "t"}) for n in _paddle())]  # fmt: skip
    return _conv_act_conv(act, extra={**_CONSTS, "gain": np.array(2.5, np.float32),
                                                "shift": np.array(1.5, np.float32)})


def _rename(node: onnx.NodeProto, names: dict[str, str]) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for i, v in enumerate(out.input):
        out.input[i] = names.get(v, v)
    return out


def test_dynamic_int8_gives_a_conv_nets_float_layers_the_fused_graph(tmp_path: Path) -> None:
    """Dynamic int8 leaves Convs float: it folds the affine block into them and fuses the HardSwish, so ONNX
    Runtime runs fewer float kernels than on the exported graph, with the same outputs up to int8 weights."""
    from tensorslim import quantize

    model = _affine_conv_net()
    src, dst = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    onnx.save(model, str(src))
    res = quantize(str(src), str(dst))
    assert any("HardSwish x1" in n for n in res.notes) and any("folded into the neighbouring" in n for n in res.notes)
    out = onnx.load(str(dst))
    ops = Counter(n.op_type for n in out.graph.node)
    assert not {"Clip", "Div", "Add"} & set(ops) and ops["HardSigmoid"] == 1, ops
    assert len(ort_optimized(out, tmp_path).graph.node) < len(ort_optimized(model, tmp_path).graph.node)
    x = np.random.default_rng(4).standard_normal((4, 3, 16, 16)).astype(np.float32)
    want, got = run(model, {"x": x})[0], run(out, {"x": x})[0]
    assert np.corrcoef(want.ravel(), got.ravel())[0, 1] > 0.999


def test_dynamic_int8_leaves_a_graph_without_convs_as_exported(tmp_path: Path) -> None:
    """Without a Conv the MatMuls run dynamic int8's integer kernels on the graph as exported: the affine op in
    front of a MatMul stays (only written-out activations would be fused)."""
    from tensorslim import quantize

    r = np.random.default_rng(5)
    nodes = [helper.make_node("Mul", ["a", "x"], ["s"], name="affine_mul"),
             helper.make_node("MatMul", ["s", "W"], ["y"], name="mm")]  # fmt: skip
    model = make(nodes, [("x", F, ["b", 256])], [("y", F, ["b", 256])],
                 {"a": np.array(2.5, np.float32), "W": r.standard_normal((256, 256)).astype(np.float32)})  # fmt: skip
    src, dst = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    onnx.save(model, str(src))
    res = quantize(str(src), str(dst))
    assert not any("folded into the neighbouring" in n for n in res.notes)
    assert "affine_mul" in {n.name for n in onnx.load(str(dst)).graph.node}


def test_the_float_fusions_skip_constant_folding_that_would_grow_the_file() -> None:
    """ONNX Runtime's constant folding writes an ``Expand`` of a constant out as a tensor: a 16 MB initializer
    for this 1 kB graph. The preparation keeps the graph as it is then (and still fuses what it can)."""
    from tensorslim.passes.static_prepare import float_fusions

    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Expand", ["one", "shape"], ["big"], name="expand"),
             helper.make_node("Add", ["c", "big"], ["y"], name="add")]  # fmt: skip
    model = make(nodes, [("x", F, [1, 1, 2050, 2050])], [("y", F, [1, 1, 2048, 2048])],
                 {"W": np.ones((1, 1, 3, 3), np.float32), "one": np.ones((1,), np.float32),
                  "shape": np.array([1, 1, 2048, 2048], np.int64)})  # fmt: skip
    size = model.ByteSize()
    changed, notes = float_fusions(model)
    assert model.ByteSize() < size + 1024 and "Expand" in {n.op_type for n in model.graph.node}
    assert not any("basic optimizations" in n for n in notes)
