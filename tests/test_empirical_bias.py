"""Empirical bias correction: each int8 Conv/Gemm's mean output per channel matched to float's, layer by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

from models import F, cli, make, optimized_op_types, run
from tensorslim.algorithms.bias_correction import MAX_GAIN, MIN_VALUES, PairedMoments, gain_and_shift, mean_shift
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.empirical_bias import bias_targets, empirical_bias_correction
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import static_pipeline


def offset_net(seed: int = 0, n: int = 48) -> tuple[onnx.ModelProto, Dataset, Dataset]:
    """x -> depthwise 3x3 Conv -> 1x1 Conv -> y, where the input channels carry large offsets with small
    variation (one wide channel sets the shared int8 step) and the depthwise filters nearly cancel (edge
    filters, as reparameterized branches or a folded normalization leave them): the rounding of the weights and
    of the input comes out as an offset of each output channel, larger than the signal's own variation.
    Returns the model, calibration data and held-out data from the same distribution."""
    r = np.random.default_rng(seed)
    c = 8
    lap = np.array([[0.5, 1.0, 0.5], [1.0, -6.0, 1.0], [0.5, 1.0, 0.5]], np.float32)
    w1 = np.stack([lap * (1 + 0.3 * r.standard_normal()) + 0.01 * r.standard_normal((3, 3)) for _ in range(c)])
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["h"], name="dw", group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "W2", "B2"], ["y"], name="pw"),
    ]
    inits = {
        "W1": w1[:, None].astype(np.float32), "B1": (0.1 * r.standard_normal(c)).astype(np.float32),
        "W2": (r.standard_normal((c, c, 1, 1))).astype(np.float32), "B2": np.full(c, 1.0, np.float32),
    }  # fmt: skip
    model = make(nodes, [("x", F, ["b", c, 12, 12])], [("y", F, ["b", c, 12, 12])], inits, opset=17)
    base = r.uniform(-3, 3, (1, c, 1, 1)).astype(np.float32)

    def data(k: int) -> Dataset:  # the same channel offsets, new noise each call
        x = base + 0.1 * r.standard_normal((k, c, 12, 12)).astype(np.float32)
        x[:, 0] = r.uniform(-12, 12, (k, 12, 12))  # the wide channel: a coarse shared step
        return Dataset({"x": x.astype(np.float32)})

    return model, data(n), data(n)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_it_removes_the_mean_output_error_of_int8_layers(tmp_path: Path) -> None:
    model, cal, held = offset_net()
    base = static_pipeline(StaticQuantConfig(latency_check=False, empirical_bias=False), cal)(model).model
    res = static_pipeline(StaticQuantConfig(latency_check=False), cal)(model)
    assert any(n.startswith("empirical bias correction:") for n in res.notes), res.notes
    feeds = {"x": held.inputs["x"]}
    ref, before, after = run(model, feeds)[0], run(base, feeds)[0], run(res.model, feeds)[0]
    off_before = np.abs((before - ref).mean(axis=(0, 2, 3)))
    off_after = np.abs((after - ref).mean(axis=(0, 2, 3)))
    # on data it has not seen, the per-channel offset of the output shrinks, and no accuracy is lost for it
    assert off_after.max() < off_before.max() / 3, (off_before, off_after)
    assert _sqnr(ref, after) > _sqnr(ref, before) - 0.1, (_sqnr(ref, before), _sqnr(ref, after))
    # the biases stay int32 DequantizeLinear inputs: ONNX Runtime still runs both layers on QLinearConv
    assert optimized_op_types(res.model, tmp_path).count("QLinearConv") == 2
    # same input and data, same bytes
    again = static_pipeline(StaticQuantConfig(latency_check=False), cal)(model).model
    assert again.SerializeToString() == res.model.SerializeToString()


def test_it_stops_at_its_time_budget_and_says_so() -> None:
    model, cal, _ = offset_net(1)
    int8 = static_pipeline(StaticQuantConfig(latency_check=False, empirical_bias=False), cal)(model).model
    targets = bias_targets(int8, {"dw", "pw"})
    assert [t.node for t in targets] == ["dw", "pw"]
    before = {i.name: onnx.numpy_helper.to_array(i).copy() for i in int8.graph.initializer}
    note = empirical_bias_correction(int8, targets, model, cal.head(16), gain=False, budget_s=0.0)
    assert "1 later layer(s) left as they were" in note, note
    after = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed == [targets[0].codes], changed  # only the first layer's int32 bias moved


def test_it_can_be_turned_off() -> None:
    model, cal, _ = offset_net(1)
    res = static_pipeline(StaticQuantConfig(latency_check=False, empirical_bias=False), cal)(model)
    assert not any("empirical bias" in n for n in res.notes)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 6)), elements=st.floats(-100, 100)),
    arrays(np.float64, 6, elements=st.floats(-50, 50)),
)
def test_a_constant_offset_is_found_exactly(f: np.ndarray, offset: np.ndarray) -> None:
    q = f + offset[: f.shape[1]]
    shift = mean_shift(f, q)
    # a difference with no spread across samples is no noise: the whole of it is the offset
    np.testing.assert_allclose(shift, offset[: f.shape[1]], atol=1e-9 * (1 + np.abs(f).max()))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=st.floats(-10, 10)))
def test_noise_that_averages_out_moves_nothing(d: np.ndarray) -> None:
    # each sample's difference and its negative: mean zero, so no shift however large the differences
    f = np.zeros((2 * d.shape[0], d.shape[1]))
    q = np.concatenate([d, -d])
    np.testing.assert_allclose(mean_shift(f, q), 0.0, atol=1e-12)


def test_noise_below_two_standard_errors_is_left_alone() -> None:
    f = np.zeros((4, 2))
    q = np.array([[1.0, 1.0], [-0.9, 1.1], [1.1, 0.9], [-1.0, 1.0]])  # channel 0: noise; channel 1: an offset
    np.testing.assert_allclose(mean_shift(f, q), [0.0, 1.0])


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="samples, channels"):
        mean_shift(np.zeros((3, 2)), np.zeros((3, 3)))


# --- the gain: a least-squares line per channel, not only an offset ---


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(2, 6),
    st.floats(0.85, 1.2), st.floats(-3, 3),
)  # fmt: skip
def test_a_gain_and_an_offset_are_found_exactly(seed: int, channels: int, samples: int, gain: float, off: float) -> None:
    r = np.random.default_rng(seed)
    m = PairedMoments()
    for _ in range(samples):
        q = r.standard_normal((channels, 16, 9)) * r.uniform(0.5, 2, (channels, 1, 1)) + r.uniform(-1, 1, (channels, 1, 1))
        m.add(gain * q + off, q, axis=0)  # float = gain * quantized + off, exactly
    a, shift = gain_and_shift(m)
    np.testing.assert_allclose(a, gain, rtol=1e-9)
    np.testing.assert_allclose(shift, -off, atol=1e-9)  # a * q - shift is float's output


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 0.7) | st.floats(1.5, 10.0))
def test_the_gain_stays_a_correction(seed: int, gain: float) -> None:
    r = np.random.default_rng(seed)
    m = PairedMoments()
    for _ in range(3):
        q = r.standard_normal((2, 200))
        m.add(gain * q, q, axis=0)
    a, _ = gain_and_shift(m)
    np.testing.assert_allclose(a, np.clip(gain, 1 / MAX_GAIN, MAX_GAIN))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 8))
def test_a_gain_the_samples_disagree_on_is_not_applied(seed: int, samples: int) -> None:
    """Each sample's own slope swings around 1 (0.85 and 1.15 in turn): the pooled slope is not clear of that noise,
    so the gain stays 1; the same swing around 1.2 leaves a clear gain."""
    r = np.random.default_rng(seed)
    noisy, clear = PairedMoments(), PairedMoments()
    for i in range(samples):
        q = r.standard_normal((2, 300))
        noisy.add((0.85 if i % 2 else 1.15) * q, q, axis=0)
        clear.add((1.17 if i % 2 else 1.23) * q, q, axis=0)
    assert np.all(noisy.gain() == 1.0)
    a = clear.gain()
    assert np.all((a > 1.15) & (a < 1.25))
    assert np.all(gain_and_shift(noisy)[0] == 1.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.3, 1.0), st.floats(0.85, 1.2))
def test_rounding_noise_does_not_shrink_the_gain(seed: int, noise: float, gain: float) -> None:
    """int8 output = float output / gain + independent noise as large as the signal: the gain found is the one
    int8 put on the signal (within sampling error), not shrunk toward 0 by the noise's share, as the slope of float
    on int8 would be (1 / (1 + noise^2))."""
    r = np.random.default_rng(seed)
    m = PairedMoments()
    for _ in range(8):
        f = r.standard_normal((2, 4000))
        m.add(f, f / gain + noise * r.standard_normal((2, 4000)), axis=0)
    a = m.gain()
    assert np.all(np.abs(a - gain) < 0.06) or (abs(gain - 1) < 0.06 and np.all(a == 1.0)), (a, gain)


def test_without_the_gain_or_enough_values_it_is_the_mean_shift() -> None:
    r = np.random.default_rng(0)
    few, many = PairedMoments(), PairedMoments()
    for _ in range(4):
        q = r.standard_normal((3, 5))  # a Gemm's output: one value per channel and sample, 12 or 20 in all
        few.add(1.1 * q + 0.5, q, axis=0)
        q = r.standard_normal((3, 100))
        many.add(1.1 * q + 0.5 + 0.01 * r.standard_normal((3, 100)), q, axis=0)
    a, shift = gain_and_shift(few)
    assert few.count < MIN_VALUES and np.all(a == 1.0)
    np.testing.assert_array_equal(shift, mean_shift(np.stack(few.float_means), np.stack(few.quant_means)))
    a, shift = gain_and_shift(many, gain=False)
    assert np.all(a == 1.0)
    np.testing.assert_array_equal(shift, mean_shift(np.stack(many.float_means), np.stack(many.quant_means)))
    with pytest.raises(ValueError, match="no sample"):
        gain_and_shift(PairedMoments())
    with pytest.raises(ValueError, match="channels"):
        many.add(np.zeros((4, 3)), np.zeros((4, 3)), axis=0)


def _scaled_float(model: onnx.ModelProto, weight: str, gains: np.ndarray, bias: str, offsets: np.ndarray) -> onnx.ModelProto:
    """``model`` with one layer's output channels scaled by ``gains`` and moved by ``offsets``: a float model the
    int8 one is off from by a known gain and offset at that layer."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        v = onnx.numpy_helper.to_array(init)
        if init.name == weight:
            shape = (-1,) + (1,) * (v.ndim - 1) if v.ndim == 4 else (1, -1)  # Conv [O, ...], MatMul [K, N]
            init.CopyFrom(onnx.numpy_helper.from_array((v * gains.reshape(shape)).astype(np.float32), weight))
        elif init.name == bias:
            init.CopyFrom(onnx.numpy_helper.from_array((v * gains + offsets).astype(np.float32), bias))
    return out


def _unoptimized(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_a_known_gain_and_offset_are_moved_into_the_scales_and_bias(tmp_path: Path) -> None:
    model, cal, held = offset_net(2)
    cfg = StaticQuantConfig(latency_check=False, empirical_bias=False, preprocess=False)
    int8 = static_pipeline(cfg, cal)(model).model
    r = np.random.default_rng(0)
    gains, offsets = r.uniform(0.85, 1.15, 8), r.uniform(-0.5, 0.5, 8)
    target = _scaled_float(model, "W2", gains, "B2", offsets)  # the last layer's: what reaches it is unchanged
    feeds = {"x": held.inputs["x"]}
    ref = run(target, feeds)[0]
    before = _sqnr(ref, run(int8, feeds)[0])
    targets = bias_targets(int8, {"dw", "pw"})
    assert len(targets) == 2 and all(t.weight_scale and t.bias_scale for t in targets), targets
    scales = {i.name: onnx.numpy_helper.to_array(i).copy() for i in int8.graph.initializer}
    note = empirical_bias_correction(int8, targets, target, cal.head(8))
    assert "scaled too" in note, note
    after_fused, after_qdq = run(int8, feeds)[0], _unoptimized(int8, feeds)
    # the int8 model now follows the scaled float layer: the gain went into its weight scale
    assert _sqnr(ref, after_fused) > before + 10, (before, _sqnr(ref, after_fused))
    new = onnx.numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == targets[1].weight_scale))
    np.testing.assert_allclose(new / scales[targets[1].weight_scale], gains, rtol=0.02)
    # the bias scale moved with it (input scale x weight scale), so ONNX Runtime's QLinearConv computes what the
    # Q/DQ graph says
    assert optimized_op_types(int8, tmp_path).count("QLinearConv") == 2
    assert np.abs(after_fused - after_qdq).max() <= 1e-3 * np.abs(after_qdq).max()


def linear_net(seed: int = 0) -> tuple[onnx.ModelProto, Dataset, Dataset]:
    """x [b, t, 16] -> MatMul + Add -> Relu -> MatMul + Add -> y: two Linear layers as exporters write them."""
    r = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "B1"], ["h"], name="add1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "W2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "B2"], ["y"], name="add2"),
    ]
    inits = {"W1": r.standard_normal((16, 24)).astype(np.float32) / 4, "B1": r.standard_normal(24).astype(np.float32),
             "W2": r.standard_normal((24, 8)).astype(np.float32) / 4, "B2": r.standard_normal(8).astype(np.float32)}
    model = make(nodes, [("x", F, ["b", 32, 16])], [("y", F, ["b", 32, 16 // 2])], inits, opset=17)

    def data(k: int) -> Dataset:
        return Dataset({"x": r.standard_normal((k, 32, 16)).astype(np.float32)})

    return model, data(32), data(32)


def test_a_linear_layers_float_bias_takes_the_offset_and_its_weight_scale_stays() -> None:
    model, cal, held = linear_net()
    # the Adds float (as where a Softmax or the graph's output follows): the MatMuls' outputs stay float too
    cfg = StaticQuantConfig(latency_check=False, empirical_bias=False, preprocess=False, exclude=("add",))
    int8 = static_pipeline(cfg, cal)(model).model
    targets = bias_targets(int8, {n.name for n in int8.graph.node if n.op_type == "MatMul"})
    assert [(t.node, t.codes, t.float_bias, t.weight_scale) for t in targets] == [
        ("add1", "B1", True, ""), ("add2", "B2", True, "")], targets  # fmt: skip
    target = _scaled_float(model, "W2", np.ones(8), "B2", np.linspace(-1, 1, 8))
    feeds = {"x": held.inputs["x"]}
    ref = run(target, feeds)[0]
    before = _sqnr(ref, run(int8, feeds)[0])
    scales = {i.name: onnx.numpy_helper.to_array(i).copy() for i in int8.graph.initializer if i.name.endswith("scale")}
    note = empirical_bias_correction(int8, targets, target, cal.head(8))
    assert "int8 layer(s)" in note and "scaled too" not in note, note
    assert _sqnr(ref, run(int8, feeds)[0]) > before + 10, (before, _sqnr(ref, run(int8, feeds)[0]))
    after = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer if i.name in scales}
    assert all(np.array_equal(scales[k], after[k]) for k in scales)  # no gain on token sequences' Linear layers


def test_the_gain_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    model, cal, held = offset_net(2)
    feeds = {"x": held.inputs["x"]}
    ref = run(model, feeds)[0]
    off = static_pipeline(StaticQuantConfig(latency_check=False, empirical_gain=False), cal)(model)
    on = static_pipeline(StaticQuantConfig(latency_check=False), cal)(model)
    assert not any("scaled too" in n for n in off.notes) and any("scaled too" in n for n in on.notes), on.notes
    # on data it has not seen, the line per channel is no worse than the offset alone
    assert _sqnr(ref, run(on.model, feeds)[0]) > _sqnr(ref, run(off.model, feeds)[0]) - 0.1
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    np.savez(tmp_path / "cal.npz", x=cal.inputs["x"])
    said = {}
    for flag in ("--empirical-gain", "--no-empirical-gain"):
        res = cli("quantize", str(src), "-o", str(tmp_path / f"{flag}.onnx"), "--mode", "static", "--data",
                  str(tmp_path / "cal.npz"), "--no-latency-check", "--no-check-speed", flag)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        said[flag] = "scaled too" in " ".join((res.stdout + res.stderr).split())
    assert said == {"--empirical-gain": True, "--no-empirical-gain": False}, said
    res = cli("quantize", str(src), "-o", str(tmp_path / "d.onnx"), "--no-empirical-gain")
    assert res.returncode == 2 and "--empirical-gain: only for --mode static" in res.stdout + res.stderr


def test_gains_that_lower_the_models_output_are_left_out() -> None:
    """The layer's gain is right for the layer and wrong for the model: the reference's Conv answers 1.25 x what
    the int8 one does, and a Mul by 0.8 after it gives the model's output back. The correction fits the gain
    (1.25, clear of noise) on the layer; the output check on other samples finds the model worse with it, keeps
    the offsets only (byte for byte what the offset-only correction writes) and says so. Without the Mul the
    gain is right for the model too, and stays."""
    from tensorslim.passes.static_quant import _gain_if_it_holds

    r = np.random.default_rng(0)
    c = 4
    w = r.uniform(-1.0, 1.0, (c, c, 1, 1)).astype(np.float32)
    b = r.uniform(-0.5, 0.5, c).astype(np.float32)
    x4 = ("x", F, ["b", c, 12, 12])
    model = make([helper.make_node("Conv", ["x", "W", "B"], ["y"], name="pw")], [x4], [("y", F, ["b", c, 12, 12])],
                 {"W": w, "B": b}, opset=17)  # fmt: skip
    louder = {"W": 1.25 * w, "B": 1.25 * b}
    undone = make([helper.make_node("Conv", ["x", "W", "B"], ["h"], name="pw"), helper.make_node("Mul", ["h", "k"], ["y"])],
                  [x4], [("y", F, ["b", c, 12, 12])], {**louder, "k": np.float32(0.8)}, opset=17)  # fmt: skip
    kept_ref = make([helper.make_node("Conv", ["x", "W", "B"], ["y"], name="pw")], [x4], [("y", F, ["b", c, 12, 12])],
                    louder, opset=17)  # fmt: skip
    cal = Dataset({"x": r.standard_normal((16, c, 12, 12)).astype(np.float32)})
    fit, held = cal.head(8), cal.window(8, 8)
    int8 = static_pipeline(StaticQuantConfig(latency_check=False, empirical_bias=False), cal)(model).model

    def corrected(reference: onnx.ModelProto, gain: bool = True) -> tuple[onnx.ModelProto, str]:
        m = onnx.ModelProto()
        m.CopyFrom(int8)
        targets = bias_targets(m, {"pw"})
        if not gain:
            return m, empirical_bias_correction(m, targets, reference, fit, gain=False)
        return m, _gain_if_it_holds(m, targets, reference, fit, held)

    left_out, note = corrected(undone)
    assert "fitted too and left out" in note and "calibration samples the fit did not see" in note, note
    offsets, _ = corrected(undone, gain=False)
    assert {i.name: i.SerializeToString() for i in left_out.graph.initializer} == {
        i.name: i.SerializeToString() for i in offsets.graph.initializer}  # exactly the offset-only correction
    kept, note = corrected(kept_ref)
    assert "scaled too" in note and "kept" in note, note
    feeds = {"x": held.inputs["x"]}
    assert _sqnr(run(kept_ref, feeds)[0], run(kept, feeds)[0]) > _sqnr(run(kept_ref, feeds)[0], run(offsets, feeds)[0]) + 10


def test_a_window_of_samples() -> None:
    ds = Dataset.from_groups([{"x": np.arange(5.0)[:, None]}, {"x": np.arange(5.0, 9.0)[:, None, None]}],
                             labels=np.arange(9))  # fmt: skip
    w = ds.window(3, 4)
    assert w.num_samples == 4 and [g["x"].ravel().tolist() for g in w.groups] == [[3.0, 4.0], [5.0, 6.0]]
    assert w.labels.tolist() == [3, 4, 5, 6]
    assert ds.window(7, 8).num_samples == 2
    assert ds.head(2).groups[0]["x"].ravel().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="window"):
        ds.window(9, 1)
