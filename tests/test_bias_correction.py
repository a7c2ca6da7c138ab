"""Bias correction: the expected output error maths, and a smaller mean output error in ONNX Runtime."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from models import F, make, run
from tensorslim.algorithms.bias_correction import conv_output_error, linear_output_error
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 4), groups=st.integers(1, 3), mult=st.integers(1, 3), k=st.integers(1, 3),
       seed=st.integers(0, 1000))  # fmt: skip
def test_conv_output_error_is_the_convolution_of_the_mean(c: int, groups: int, mult: int, k: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    cin, o = c * groups, mult * groups
    dw = r.standard_normal((o, c, k, k)).astype(np.float32)
    mean = r.standard_normal(cin).astype(np.float32)
    # a constant image equal to the mean: every (unpadded) output is the expected error
    x = np.broadcast_to(mean.reshape(1, cin, 1, 1), (1, cin, k + 2, k + 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], group=groups)
    m = make([node], [("x", F, [1, cin, k + 2, k + 2])], [("y", F, [1, o, 3, 3])], {"W": dw})
    y = run(m, {"x": np.ascontiguousarray(x)})[0]
    np.testing.assert_allclose(conv_output_error(dw, mean, groups=groups), y[0, :, 1, 1], rtol=1e-4, atol=1e-4)


def test_linear_output_error_layouts() -> None:
    r = np.random.default_rng(0)
    dw, mean = r.standard_normal((6, 4)), r.standard_normal(6)
    np.testing.assert_allclose(linear_output_error(dw, mean), mean @ dw)
    np.testing.assert_allclose(linear_output_error(dw.T, mean, trans_b=True), mean @ dw)


def biased_model(op: str):
    """One layer whose int8 weights err in the same direction (per-tensor scale, a coarse grid), inputs with mean 3."""
    r = np.random.default_rng(1)
    if op == "Conv":
        w = (r.uniform(0.0, 1.0, (8, 4, 3, 3)) * 0.05).astype(np.float32)
        w[0, 0, 0, 0] = 4.0  # one large weight: a coarse per-tensor grid, so most small weights round the same way
        nodes = [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv")]
        inits = {"W": w, "B": np.zeros(8, np.float32)}
        model = make(nodes, [("x", F, ["b", 4, 8, 8])], [("y", F, ["b", 8, 6, 6])], inits)
        x = (3.0 + r.standard_normal((32, 4, 8, 8))).astype(np.float32)
    else:
        w = (r.uniform(0.0, 1.0, (16, 8)) * 0.05).astype(np.float32)
        w[0, 0] = 4.0
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                 helper.make_node("Add", ["h", "B"], ["y"], name="bias")]  # fmt: skip
        inits = {"W": w, "B": np.zeros(8, np.float32)}
        model = make(nodes, [("x", F, ["b", 16])], [("y", F, ["b", 8])], inits)
        x = (3.0 + r.standard_normal((64, 16))).astype(np.float32)
    return model, Dataset({"x": x})


def test_bias_correction_reduces_the_mean_output_error() -> None:
    for op in ("Conv", "MatMul"):
        model, data = biased_model(op)
        feeds = {"x": data.inputs["x"]}
        ref = run(model, feeds)[0]
        err = {}
        for bc in (False, True):
            cfg = StaticQuantConfig(latency_check=False, granularity="per_tensor", bias_correction=bc, fallback_sqnr_db=0.0,
                                    empirical_bias=False)  # the analytic correction alone
            res = static_pipeline(cfg, data)(model)
            out = run(res.model, feeds)[0]
            axes = tuple(i for i in range(ref.ndim) if i != 1)
            err[bc] = float(np.mean(np.abs(np.mean(out - ref, axis=axes))))  # mean error per output channel
            if bc:
                assert any("bias correction: 1 layer(s)" in n for n in res.notes), res.notes
                assert "bias corrected" in {r.name: r for r in res.records}["W"].reason
        assert err[True] < 0.5 * err[False], (op, err)


def test_bias_is_added_to_a_conv_without_one() -> None:
    model, data = biased_model("Conv")
    del model.graph.node[0].input[2]
    del model.graph.initializer[1]
    res = static_pipeline(StaticQuantConfig(latency_check=False, granularity="per_tensor", bias_correction=True), data)(model)
    assert any("(1 bias(es) added)" in n for n in res.notes)
    assert len(next(n for n in res.model.graph.node if n.op_type == "Conv").input) == 3
