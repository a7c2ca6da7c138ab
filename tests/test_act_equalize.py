"""Activation equalization before depthwise Convs: the float function and the per-channel weight rounding kept in
ONNX Runtime, the static int8 model closer to float, the decisions inspectable, and where it must not act."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from models import cli, run
from tensorslim.algorithms.equalization import activation_scales, scale_pair
from tensorslim.algorithms.quantize import QuantScheme, choose_qparams, quantize
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.act_equalize import (
    ActivationEqualizeConfig,
    ActivationEqualizePass,
    apply_activation_equalization,
    plan_activation_equalization,
)
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline
from test_equalize import imbalanced_cnn


def normalized_depthwise(seed: int = 0) -> onnx.ModelProto:
    """:func:`imbalanced_cnn`'s depthwise form with a normalization folded into the depthwise Conv (its channels
    scaled back to alike ranges, as a BatchNorm after it does): the narrow channels matter as much as the wide."""
    model = imbalanced_cnn(seed, depthwise=True)
    spread = np.logspace(-1.5, 1.5, 16).astype(np.float32)
    for t in model.graph.initializer:
        if t.name == "W2":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) / spread.reshape(-1, 1, 1, 1), "W2"))
    return model


def _data(seed: int, n: int = 16) -> Dataset:
    return Dataset({"x": np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)})


def _codes(w: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric int8 codes of ``w``."""
    qp = choose_qparams(w, scheme=QuantScheme.SYMMETRIC, axis=0)
    return np.asarray(quantize(w, qp))


def test_the_function_and_the_weight_rounding_stay_and_the_narrow_channels_widen() -> None:
    model = imbalanced_cnn(depthwise=True)
    data = _data(0)
    plan = plan_activation_equalization(model, data)
    assert [(d.tensor, d.producer, d.consumer) for d in plan] == [("r1", "conv1", "conv2")]
    d = plan[0]
    assert d.spread > 100 and d.scales.min() >= 1.0 and d.scales.max() == 64.0  # three decades, capped at 64
    res = ActivationEqualizePass(data=data)(model)
    assert res.modified and "1 activation(s) before depthwise Convs" in res.notes[0]
    feeds = {"x": _data(1, 4).inputs["x"]}
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    for w in ("W1", "W2"):  # each channel scaled as a whole: the same int8 codes
        np.testing.assert_array_equal(_codes(after[w]), _codes(before[w]))
    # the activation's channels now span at least 64x less (or reach the widest)
    widened = plan_activation_equalization(res.model, data, ActivationEqualizeConfig(min_spread=1.0))[0]
    assert widened.spread < d.spread / 30, (widened.spread, d.spread)


def test_static_int8_is_closer_to_float_with_it() -> None:
    model = normalized_depthwise()
    data, held = _data(2, 32), _data(3, 16)
    ref = run(model, held.inputs)[0]
    errs = {}
    for on in (False, True):
        cfg = StaticQuantConfig(latency_check=False, equalize_activations=on, fallback_sqnr_db=0.0,
                                output_sqnr_db=0.0, empirical_bias=False)  # fmt: skip
        res = static_pipeline(cfg, data)(model)
        assert on == any("activation equalization" in n for n in res.notes)
        got = run(res.model, held.inputs)[0]
        errs[on] = float(10 * np.log10(np.sum(ref**2) / np.sum((got - ref) ** 2)))
    assert errs[True] > errs[False] + 6.0, errs  # a bit or more of SQNR


def test_it_leaves_alone_what_it_cannot_keep_exact() -> None:
    data = _data(4)
    # a group-1 second Conv: scaling its input channels would change its weights' per-channel rounding
    assert plan_activation_equalization(imbalanced_cnn(depthwise=False), data) == []
    # per-tensor weights round differently once scaled: the static pipeline does not run it
    cfg = StaticQuantConfig(latency_check=False, granularity="per_tensor", output_sqnr_db=0.0)
    assert not any("activation equalization" in n for n in static_pipeline(cfg, data)(imbalanced_cnn(True)).notes)
    # the activation read by a second node (a graph output too): nothing to scale
    model = imbalanced_cnn(depthwise=True)
    model.graph.output.append(onnx.helper.make_tensor_value_info("r1", onnx.TensorProto.FLOAT, None))
    assert plan_activation_equalization(model, data) == []
    # channels already alike: left alone
    flat = imbalanced_cnn(depthwise=True)
    assert plan_activation_equalization(flat, data, ActivationEqualizeConfig(min_spread=1e6)) == []
    assert apply_activation_equalization(flat, []) == 0


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 12), limit=st.floats(1.0, 1e3), seed=st.integers(0, 1000))
def test_activation_scales_raise_toward_the_widest_within_the_limit(n: int, limit: float, seed: int) -> None:
    r = np.random.default_rng(seed)
    p = r.uniform(0, 1, n) * 10.0 ** r.uniform(-4, 2, n)
    p[r.uniform(size=n) < 0.2] = 0.0
    t = activation_scales(p, limit=limit)
    assert np.all((t >= 1.0) & (t <= limit))
    live = p > 0
    if live.any():
        widest = p[live].max()
        assert np.all(p * t <= widest * (1 + 1e-12))  # no channel passes the widest
        np.testing.assert_allclose(p[live] * t[live], np.minimum(widest, p[live] * limit), rtol=1e-12)
    assert np.all(t[~live] == 1.0)


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 6), seed=st.integers(0, 1000))
def test_scale_pair_is_an_identity_through_relu(c: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    w1, b1, w2 = r.standard_normal((c, 3)), r.standard_normal(c), r.standard_normal((c, 1, 2))
    t = r.uniform(1, 50, c)
    n1, nb, n2 = scale_pair(w1, b1, w2, t, depthwise=True)
    x = r.standard_normal((5, 3))
    y = np.maximum(x @ w1.T + b1, 0)[:, :, None] * w2[:, 0][None]
    y2 = np.maximum(x @ n1.T.astype(np.float64) + nb, 0)[:, :, None] * n2[:, 0][None].astype(np.float64)
    np.testing.assert_allclose(y2, y, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(y).max()))
    with pytest.raises(ValueError, match="output channels"):
        scale_pair(w1, b1, w2, t[:-1] if c > 1 else np.ones(2), depthwise=True)


def test_cli_switch(tmp_path: Path) -> None:
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(imbalanced_cnn(depthwise=True), str(src))
    np.savez(data, x=_data(5).inputs["x"])
    for flag in ("--equalize-activations", "--no-equalize-activations"):
        res = cli("quantize", str(src), "-o", str(tmp_path / f"{flag}.onnx"), "--mode", "static", "--data", str(data),
                  "--no-latency-check", flag, "--no-check-speed")  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert ("activation equalization" in res.stdout) == (flag == "--equalize-activations"), res.stdout
    res = cli("quantize", str(src), "-o", str(tmp_path / "d.onnx"), "--no-equalize-activations")
    assert res.returncode == 2 and "--equalize-activations: only for --mode static" in res.stdout + res.stderr
