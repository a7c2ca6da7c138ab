"""SmoothQuant: the float function is unchanged (property-tested in ONNX Runtime), and static int8 improves."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from models import F, make, run
from tensorslim.algorithms.smoothing import fold_into_affine, outlier_ratio, scale_weight_rows, smoothing_scales
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.smooth_quant import smooth_model
from tensorslim.passes.static_quant import StaticQuantConfig, _quantizable_nodes
from tensorslim.pipeline import static_pipeline


def block(seed: int, k: int = 32, n: int = 16, outliers: float = 40.0, gelu_like: bool = False):
    """LayerNorm -> (MatMul, Gemm) -> Add -> Mul(const) -> MatMul, optionally a Relu that needs an explicit Mul."""
    r = np.random.default_rng(seed)
    gamma = np.ones(k, np.float32)
    gamma[: max(1, k // 16)] = outliers
    c = np.ones(n, np.float32)
    c[1] = outliers
    mid = "hr" if gelu_like else "m"
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "W1"], ["h1"], name="fc1"),
        helper.make_node("Gemm", ["ln2d", "W2"], ["h2"], name="fc2", transB=1),
        helper.make_node("Reshape", ["ln", "shape2d"], ["ln2d"], name="to2d"),
        helper.make_node("Reshape", ["h2", "shape3d"], ["h2r"], name="to3d"),
        helper.make_node("Add", ["h1", "h2r"], ["hs"], name="add"),
        helper.make_node("Mul", ["hs", "c"], ["m"], name="mul"),
    ]
    if gelu_like:
        nodes.append(helper.make_node("Relu", ["m"], ["hr"], name="relu"))
    nodes.append(helper.make_node("MatMul", [mid, "W3"], ["y"], name="fc3"))
    nodes.insert(2, nodes.pop(3))  # Reshape before the Gemm that reads it
    inits = {
        "g": gamma, "b": (r.standard_normal(k) * 0.1).astype(np.float32),
        "W1": (r.standard_normal((k, n)) * 0.1).astype(np.float32),
        "W2": (r.standard_normal((n, k)) * 0.1).astype(np.float32),
        "W3": (r.standard_normal((n, 8)) * 0.1).astype(np.float32), "c": c,
        "shape2d": np.array([-1, k], np.int64), "shape3d": np.array([-1, 4, n], np.int64),
    }  # fmt: skip
    model = make(nodes, [("x", F, ["b", 4, k])], [("y", F, ["b", 4, 8])], inits)
    return model, Dataset({"x": r.standard_normal((24, 4, k)).astype(np.float32)})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.1, 0.9), outliers=st.floats(1.0, 100.0), relu=st.booleans())
def test_smoothing_keeps_the_float_function(seed: int, alpha: float, outliers: float, relu: bool) -> None:
    model, data = block(seed, outliers=outliers, gelu_like=relu)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    smooth_model(smoothed, data, alpha, _quantizable_nodes(smoothed, StaticQuantConfig(latency_check=False)))
    onnx.checker.check_model(smoothed)
    feeds = {"x": data.inputs["x"][:8]}
    ref, out = run(model, feeds)[0], run(smoothed, feeds)[0]
    assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref)) + 1e-6


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 16), n=st.integers(1, 8), alpha=st.floats(0.05, 0.95), seed=st.integers(0, 1000),
)  # fmt: skip
def test_smoothing_maths_is_an_identity(k: int, n: int, alpha: float, seed: int) -> None:
    r = np.random.default_rng(seed)
    x = r.standard_normal((5, k)) * r.uniform(0.01, 50, k)
    w = r.standard_normal((k, n))
    gamma = r.uniform(0.5, 2, k)
    s = smoothing_scales(np.abs(x * gamma).max(axis=0), np.abs(w).max(axis=1), alpha)
    assert np.all(s > 0)
    y = (x * gamma) @ w
    y2 = (x * fold_into_affine(gamma, s)) @ scale_weight_rows(w, s, input_axis=0)
    np.testing.assert_allclose(y2, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())
    # transposed (Gemm transB) weights scale along axis 1
    y3 = (x * fold_into_affine(gamma, s)) @ scale_weight_rows(w.T, s, input_axis=1).T
    np.testing.assert_allclose(y3, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_scales_balance_maxima_and_handle_zeros() -> None:
    s = smoothing_scales([4.0, 0.0, 1.0], [1.0, 1.0, 0.0], 0.5)
    np.testing.assert_allclose(s, [2.0, 1.0, 1.0])
    assert outlier_ratio([1, 1, 1, 50]) == 50.0


def test_smooth_quant_improves_static_int8_and_reports_it() -> None:
    model, data = block(3, k=64, outliers=60.0)
    feeds = {"x": data.inputs["x"][:16]}
    ref = run(model, feeds)[0]
    errs = {}
    for sq in (None, 0.5):
        res = static_pipeline(StaticQuantConfig(latency_check=False, smooth_quant=sq, fallback_sqnr_db=0.0), data)(model)
        errs[sq] = float(np.linalg.norm(run(res.model, feeds)[0] - ref) / np.linalg.norm(ref))
        if sq:
            (note,) = [n for n in res.notes if n.startswith("SmoothQuant")]
            assert "3 layer(s) smoothed" in note and "1 folded" in note and "2 with an explicit Mul" in note
    assert errs[0.5] < 0.7 * errs[None], errs
