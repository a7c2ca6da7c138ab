"""Empirical bias correction: each int8 Conv/Gemm's mean output per channel matched to float's, layer by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

from models import F, make, optimized_op_types, run
from tensorslim.algorithms.bias_correction import mean_shift
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.empirical_bias import bias_targets, empirical_bias_correction, sample_channel_means
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
    means = sample_channel_means(model, {"dw", "pw"}, cal.head(16))
    targets = bias_targets(int8, {"dw", "pw"})
    assert [t.node for t in targets] == ["dw", "pw"] and set(means) == {"dw", "pw"}
    before = {i.name: onnx.numpy_helper.to_array(i).copy() for i in int8.graph.initializer}
    note = empirical_bias_correction(int8, targets, means, cal.head(16), budget_s=0.0)
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
