"""Property tests of the quantization maths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tensorslim.algorithms.fidelity import cosine_rows, sqnr_db, top1_agreement
from tensorslim.algorithms.quantize import (
    QuantScheme,
    choose_qparams,
    dequantize,
    integer_range,
    quantize,
    quantize_dequantize,
)

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)
tensors = arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 9)), elements=finite)
schemes = st.sampled_from(["symmetric", "asymmetric"])
axes = st.sampled_from([None, 0, 1])


@settings(max_examples=200, deadline=None)
@given(x=tensors, scheme=schemes, axis=axes)
def test_round_trip_error_within_half_a_step(x: np.ndarray, scheme: str, axis: int | None) -> None:
    qp = choose_qparams(x, scheme=scheme, axis=axis, method="minmax")
    err = np.abs(quantize_dequantize(x, qp) - x)
    step, _ = qp.broadcast(x.ndim)
    # half a step, plus float32 rounding of the products
    assert np.all(err <= 0.5 * step * (1 + 1e-4) + 1e-6 * np.abs(x) + 1e-30)


@settings(max_examples=200, deadline=None)
@given(x=tensors, scheme=schemes, axis=axes, method=st.sampled_from(["minmax", "mse"]))
def test_scale_positive_finite_and_zero_exact(x: np.ndarray, scheme: str, axis: int | None, method: str) -> None:
    qp = choose_qparams(x, scheme=scheme, axis=axis, method=method, grid=8)
    assert np.all(np.isfinite(qp.scale)) and np.all(qp.scale > 0)
    lo, hi = integer_range(8, scheme, narrow=True)
    assert np.all(qp.zero_point >= lo) and np.all(qp.zero_point <= hi)
    zeros = np.zeros_like(x)
    np.testing.assert_array_equal(quantize_dequantize(zeros, qp), zeros)


@settings(max_examples=100, deadline=None)
@given(value=finite, shape=st.tuples(st.integers(1, 5), st.integers(1, 5)), scheme=schemes)
def test_constant_tensors_round_trip(value: float, shape: tuple[int, int], scheme: str) -> None:
    x = np.full(shape, value, np.float32)
    qp = choose_qparams(x, scheme=scheme)
    np.testing.assert_allclose(quantize_dequantize(x, qp), x, rtol=1e-6, atol=1e-37)  # subnormal values flush to zero


@settings(max_examples=100, deadline=None)
@given(x=tensors, axis=axes)
def test_mse_never_worse_than_minmax(x: np.ndarray, axis: int | None) -> None:
    mm = choose_qparams(x, axis=axis, method="minmax")
    mse = choose_qparams(x, axis=axis, method="mse", grid=10)
    e_mm = np.sum((quantize_dequantize(x, mm) - x).astype(np.float64) ** 2)
    e_mse = np.sum((quantize_dequantize(x, mse) - x).astype(np.float64) ** 2)
    assert e_mse <= e_mm * (1 + 1e-6) + 1e-12


@settings(max_examples=100, deadline=None)
@given(x=tensors, scheme=schemes)
def test_codes_stay_in_range_and_dtype(x: np.ndarray, scheme: str) -> None:
    qp = choose_qparams(x, scheme=scheme, axis=0)
    q = quantize(x, qp)
    assert q.dtype == (np.int8 if scheme == "symmetric" else np.uint8)
    if scheme == "symmetric":
        assert q.min() >= -127  # narrow range: symmetric around zero
    np.testing.assert_array_equal(dequantize(q, qp).shape, x.shape)


def test_symmetric_zero_point_is_zero_and_asymmetric_covers_range() -> None:
    x = np.array([[-1.0, 0.5, 3.0]], np.float32)
    sym = choose_qparams(x, scheme=QuantScheme.SYMMETRIC)
    assert int(sym.zero_point) == 0 and np.isclose(float(sym.scale), 3.0 / 127)
    asym = choose_qparams(x, scheme=QuantScheme.ASYMMETRIC)
    assert np.isclose(float(asym.scale), 4.0 / 255)
    assert int(asym.zero_point) == round(1.0 / (4.0 / 255))


@pytest.mark.parametrize("bad", [np.array([], np.float32), np.array([1.0, np.nan], np.float32)])
def test_bad_tensors_raise(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="empty|NaN"):
        choose_qparams(bad)


def test_axis_out_of_range() -> None:
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        choose_qparams(np.ones((2, 2), np.float32), axis=3)


def test_fidelity_helpers() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert cosine_rows(a, a).tolist() == [1.0, 1.0]
    assert cosine_rows(a, -a)[0] == -1.0
    assert sqnr_db(a, a) == float("inf")
    assert np.isclose(sqnr_db([1.0, 1.0], [1.1, 0.9]), 20.0)
    assert top1_agreement([[0, 1], [1, 0]], [[0, 1], [0, 1]]) == 0.5
