"""Learned int8 rounding: the algorithm's guarantees, the input statistics it reads, and the digits CNN's layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from models import F, make, run
from tensorslim.algorithms.adaround import WeightLayout, from_rows, learned_rounding, output_error, to_rows
from tensorslim.algorithms.quantize import choose_qparams, quantize
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.adaround import AdaRoundConfig, adaround_codes, unsupported_reason
from tensorslim.passes.adaround_stats import input_grams, layer_input_spec, patch_rows
from tensorslim.passes.calib_stats import ConvGeometry, im2col

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "tensorslim" / "examples"


def _problem(seed: int, r: int, k: int, s: int, shrink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights ``[r, k]``, scales (``shrink`` < 1 clips the largest weights) and correlated input rows ``[s, k]``."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((r, k)) * rng.uniform(0.01, 1.0, (r, 1))).astype(np.float32)
    w[rng.random(r) < 0.15] = 0.0  # some all-zero channels
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax * shrink / 127, 1.0).astype(np.float32)
    x = rng.standard_normal((s, k)) @ rng.standard_normal((k, k)) + rng.standard_normal(k)
    if seed % 2:
        x = np.maximum(x, 0.0)  # post-ReLU inputs
    return w, scale, x


def _error(w: np.ndarray, scale: np.ndarray, codes: np.ndarray, x: np.ndarray) -> float:
    """``||X W^T - X W_q^T||^2`` computed from the samples, not from ``X^T X``."""
    e = w.astype(np.float64) - scale.astype(np.float64)[:, None] * codes
    return float(np.sum((x @ e.T) ** 2))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    r=st.integers(1, 6),
    k=st.integers(1, 14),
    s=st.integers(1, 40),
    shrink=st.sampled_from([1.0, 1.0, 0.6]),
    method=st.sampled_from(["sequential", "adaround"]),
    orders=st.integers(1, 5),
)
def test_codes_are_floor_or_ceil_and_never_worse_than_nearest(seed, r, k, s, shrink, method, orders) -> None:
    w, scale, x = _problem(seed, r, k, s, shrink)
    h = x.T @ x
    res = learned_rounding(w, scale, h, method=method, iterations=60, orders=orders)
    ratio = w / scale[:, None]  # float32, as quantize() divides
    assert res.codes.dtype == np.int8 and res.codes.shape == w.shape
    assert np.all(res.codes >= -127) and np.all(res.codes <= 127)
    assert np.all(res.codes >= np.clip(np.floor(ratio), -127, 127))
    assert np.all(res.codes <= np.clip(np.ceil(ratio), -127, 127))
    rtn = quantize(w, choose_qparams(w, axis=0)) if shrink == 1.0 else np.clip(np.round(ratio), -127, 127)
    assert res.flipped == np.count_nonzero(res.codes != rtn)
    e_rtn, e = _error(w, scale, rtn, x), _error(w, scale, res.codes, x)
    assert e <= e_rtn * (1 + 1e-9) + 1e-12
    assert res.error_rtn == pytest.approx(e_rtn, rel=1e-6, abs=1e-9)
    assert res.error == pytest.approx(e, rel=1e-6, abs=1e-9)
    assert float(output_error(w, scale, res.codes, h).sum()) == pytest.approx(e, rel=1e-6, abs=1e-9)
    again = learned_rounding(w, scale, h, method=method, iterations=60, orders=orders)
    assert again.codes.tobytes() == res.codes.tobytes() and again.error == res.error


def test_learned_rounding_beats_nearest_on_correlated_inputs() -> None:
    w, scale, x = _problem(1, 16, 48, 400, 1.0)
    for method in ("sequential", "adaround"):
        res = learned_rounding(w, scale, x.T @ x, method=method, iterations=300)
        assert res.error < 0.8 * res.error_rtn and res.flipped > 0


def test_groups_read_their_own_hessian() -> None:
    w, scale, x = _problem(3, 6, 5, 30, 1.0)
    _, _, x2 = _problem(4, 6, 5, 30, 1.0)
    h = np.stack([x.T @ x, x2.T @ x2])
    res = learned_rounding(w, scale, h, groups=2)
    for g, xs in enumerate((x, x2)):
        part = learned_rounding(w[3 * g : 3 * g + 3], scale[3 * g : 3 * g + 3], xs.T @ xs)
        assert np.array_equal(res.codes[3 * g : 3 * g + 3], part.codes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(scale=np.zeros(4)), "scale"),
        (dict(scale=np.ones(3)), "scale"),
        (dict(hessian=np.eye(5)), "hessian"),
        (dict(groups=3), "groups"),
        (dict(method="greedy"), "method"),
        (dict(orders=0), "orders"),
    ],
)
def test_learned_rounding_rejects_bad_arguments(kwargs, match) -> None:
    args = dict(w_rows=np.ones((4, 6), np.float32), scale=np.ones(4), hessian=np.eye(6)) | kwargs
    with pytest.raises(ValueError, match=match):
        learned_rounding(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "shape"), [("conv", (8, 2, 3, 3)), ("out_in", (8, 5)), ("in_out", (5, 8))]
)  # fmt: skip
def test_row_layouts_round_trip(layout, shape) -> None:
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    rows = to_rows(w, layout)
    assert rows.shape[0] == 8
    assert np.array_equal(from_rows(rows, layout, shape), w)
    assert WeightLayout(layout).value == layout


@pytest.mark.parametrize("max_positions", [None, 37])
def test_patch_rows_match_im2col(max_positions) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 9, 7)).astype(np.float32)
    geo = ConvGeometry((3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2))
    assert np.array_equal(patch_rows(x, geo, max_positions=max_positions), im2col(x, geo, max_positions=max_positions))


def _conv_reference(x: np.ndarray, w: np.ndarray, groups: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """A direct convolution, loop by loop (no im2col)."""
    n, _, hh, ww = x.shape
    cout, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (hh + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    ow = (ww + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, cout, oh, ow))
    per = cout // groups
    for o in range(cout):
        c0 = (o // per) * cg
        for a in range(kh):
            for b in range(kw):
                patch = xp[
                    :, c0 : c0 + cg, a * dil : a * dil + stride * oh : stride, b * dil : b * dil + stride * ow : stride
                ]
                y[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, a, b])
    return y


def test_grouped_strided_conv_error_matches_the_layer_output() -> None:
    rng = np.random.default_rng(5)
    groups, cin, cout = 2, 6, 8
    w = rng.standard_normal((cout, cin // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", group=groups, strides=[2, 2],
                            pads=[1, 1, 1, 1], dilations=[2, 2])  # fmt: skip
    model = make([node], [("x", F, ["n", cin, 11, 11])], [("y", F, ["n", cout, 5, 5])], {"W": w, "B": b})
    x = np.maximum(rng.standard_normal((12, cin, 11, 11)), -0.2).astype(np.float32)
    x[:, :, :, 1::2] = x[:, :, :, ::2][:, :, :, :5]  # neighbouring pixels alike, as in images
    qp = choose_qparams(w, axis=0)
    got = adaround_codes(model, Dataset({"x": x}), [(node, w)], {"W": qp.scale})["W"]
    assert got.codes.shape == w.shape and got.codes.dtype == np.int8
    rtn = quantize(w, qp)
    scale = qp.scale.reshape(-1, 1, 1, 1).astype(np.float64)
    y = _conv_reference(x, w, groups, 2, 1, 2)
    assert np.allclose(y + b.reshape(1, -1, 1, 1), run(model, {"x": x})[0], atol=1e-4)
    mse_rtn = float(np.mean((y - _conv_reference(x, scale * rtn, groups, 2, 1, 2)) ** 2))
    mse = float(np.mean((y - _conv_reference(x, scale * got.codes, groups, 2, 1, 2)) ** 2))
    assert got.mse_rtn == pytest.approx(mse_rtn, rel=1e-6)
    assert got.mse == pytest.approx(mse, rel=1e-6)
    assert mse < 0.9 * mse_rtn and got.flipped == np.count_nonzero(got.codes != rtn)


@pytest.mark.parametrize("op", ["gemm_t", "gemm_ta", "matmul"])
def test_linear_layer_grams_are_x_transpose_x(op) -> None:
    rng = np.random.default_rng(2)
    if op == "matmul":
        w = rng.standard_normal((6, 4)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
        x = rng.standard_normal((3, 5, 6)).astype(np.float32)
        model = make([node], [("x", F, ["n", 5, 6])], [("y", F, ["n", 5, 4])], {"W": w})
        rows = x.reshape(-1, 6)
    else:
        trans_a = op == "gemm_ta"
        w = rng.standard_normal((6, 4)).astype(np.float32)  # transB=0: [K, N]
        node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transA=int(trans_a))
        x = rng.standard_normal((6, 7) if trans_a else (7, 6)).astype(np.float32)
        model = make([node], [("x", F, list(x.shape))], [("y", F, [7, 4])], {"W": w})
        rows = x.T if trans_a else x
    spec = layer_input_spec(node, w)
    assert spec.layout is WeightLayout.IN_OUT and spec.k == 6
    stats = input_grams(model, Dataset({"x": x}), [(node, w)], batch_size=64)["W"]
    expect = rows.astype(np.float64).T @ rows.astype(np.float64)
    assert stats.rows == rows.shape[0] and np.allclose(stats.gram[0], expect)


def test_unsupported_layers_say_why() -> None:
    w = np.ones((4, 2, 3, 3), np.float32)
    same = helper.make_node("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER")
    assert "auto_pad" in (unsupported_reason(same, w) or "")
    deconv = helper.make_node("ConvTranspose", ["x", "W"], ["y"])
    assert "Conv, Gemm or MatMul" in (unsupported_reason(deconv, w) or "")
    conv1d = helper.make_node("Conv", ["x", "W"], ["y"])
    assert "2-D" in (unsupported_reason(conv1d, np.ones((4, 2, 3), np.float32)) or "")
    assert unsupported_reason(helper.make_node("Conv", ["x", "W"], ["y"], group=2), w) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("enabled", 1), ("method", "nearest"), ("iterations", 0), ("reg_weight", -1.0), ("max_sweeps", -1),
     ("orders", 0), ("seed", -1), ("max_positions", 0), ("batch_size", 2.5)],
)  # fmt: skip
def test_config_names_the_bad_field(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        AdaRoundConfig(**{field: value})


def test_disabled_config_returns_nothing() -> None:
    w = np.ones((4, 6), np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    assert (
        adaround_codes(onnx.ModelProto(), Dataset({}), [(node, w)], {"W": np.ones(6)}, AdaRoundConfig(enabled=False))
        == {}
    )


def _digits_layer_mse(weight: str, samples: int) -> tuple[float, float, float, float]:
    """Output MSE of the digits CNN's layer of ``weight`` (ONNX Runtime, calibration and validation data) with
    round-to-nearest codes and with learned codes rounded on the first ``samples`` calibration samples."""
    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    calib = np.load(EXAMPLES / "digits_calib.npz")["input"]
    val = np.load(EXAMPLES / "digits_val.npz")["input"]
    node = next(n for n in model.graph.node if len(n.input) > 1 and n.input[1] == weight)
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == weight))
    qp = choose_qparams(w, axis=0)
    got = adaround_codes(model, Dataset({"input": calib[:samples]}), [(node, w)], {weight: qp.scale})[weight]
    # the layer's input on each data set (the float model up to it), then the layer alone with each weight
    prefix = onnx.ModelProto()
    prefix.CopyFrom(model)
    del prefix.graph.output[:]
    prefix.graph.output.append(helper.make_tensor_value_info(node.input[0], F, None))
    inputs = [run(prefix, {"input": x})[0] for x in (calib, val)]
    layer = onnx.ModelProto()
    layer.CopyFrom(model)
    del layer.graph.node[:], layer.graph.input[:], layer.graph.output[:], layer.graph.initializer[:]
    layer.graph.node.append(node)
    layer.graph.input.append(helper.make_tensor_value_info(node.input[0], F, None))
    layer.graph.output.append(helper.make_tensor_value_info(node.output[0], F, None))
    bias = [i for i in model.graph.initializer if i.name in node.input[2:]]

    def outputs(wq: np.ndarray, x: np.ndarray) -> np.ndarray:
        del layer.graph.initializer[:]
        layer.graph.initializer.extend([numpy_helper.from_array(wq.astype(np.float32), weight), *bias])
        return run(layer, {node.input[0]: x})[0].astype(np.float64)

    scale = qp.scale.reshape(-1, 1, 1, 1)
    mse = []
    for codes in (quantize(w, qp), got.codes):
        for x in inputs:
            mse.append(float(np.mean((outputs(codes * scale, x) - outputs(w, x)) ** 2)))
    return mse[0], mse[2], mse[1], mse[3]


@pytest.mark.parametrize(
    ("weight", "most"), [pytest.param("onnx::Conv_108", 0.2, marks=pytest.mark.slow), ("onnx::Conv_111", 0.7)]
)
def test_digits_conv_output_error_drops(weight, most) -> None:
    # onnx::Conv_108: 3x3 Conv 64 -> 128 channels, output MSE 9.49e-6 -> 5.29e-7 (calibration), 9.49e-6 -> 5.30e-7
    # (validation); onnx::Conv_111: 3x3 depthwise, 128 groups, 1.94e-5 -> 8.23e-6, 1.93e-5 -> 8.19e-6
    calib_rtn, calib_learned, val_rtn, val_learned = _digits_layer_mse(weight, 64)
    assert calib_learned < most * calib_rtn
    assert val_learned < most * val_rtn  # held-out samples gain as well


def test_rows_are_independent_so_chunking_changes_nothing(monkeypatch) -> None:
    import tensorslim.algorithms.adaround as ada

    w, scale, x = _problem(7, 9, 10, 50, 1.0)
    whole = learned_rounding(w, scale, x.T @ x)
    monkeypatch.setattr(ada, "_CHUNK_VALUES", 20)  # two rows per chunk
    chunked = learned_rounding(w, scale, x.T @ x)
    assert np.array_equal(whole.codes, chunked.codes) and whole.error == pytest.approx(chunked.error)


def test_a_shared_weight_sums_the_statistics_of_its_uses() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", [x, "W"], [y]) for x, y in (("a", "ya"), ("b", "yb"))]
    model = make(nodes, [("a", F, ["n", 6]), ("b", F, ["n", 6])], [("ya", F, ["n", 3]), ("yb", F, ["n", 3])],
                 {"W": w})  # fmt: skip
    a, b = rng.standard_normal((2, 10, 6)).astype(np.float32)
    stats = input_grams(model, Dataset({"a": a, "b": b}), [(n, w) for n in nodes])["W"]
    expect = a.T.astype(np.float64) @ a + b.T.astype(np.float64) @ b
    assert stats.rows == 20 and np.allclose(stats.gram[0], expect)
