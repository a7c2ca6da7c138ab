"""Streaming range observers: property tests of the calibration statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tensorslim.algorithms.observers import HistogramObserver, MinMaxObserver

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
data = arrays(np.float32, st.integers(1, 400), elements=finite)


@given(data, st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_chunked_minmax_equals_whole(x: np.ndarray, parts: int) -> None:
    whole, chunked = MinMaxObserver(), MinMaxObserver()
    whole.update(x)
    for chunk in np.array_split(x, parts):
        chunked.update(chunk)
    assert whole.range() == chunked.range() == (float(x.min()), float(x.max()))
    assert chunked.count == x.size


@given(st.lists(data, min_size=1, max_size=4), st.floats(90.0, 100.0))
@settings(max_examples=60, deadline=None)
def test_histogram_counts_and_percentile_range_inside_minmax(chunks: list[np.ndarray], pct: float) -> None:
    h = HistogramObserver(bins=64)
    for c in chunks:
        h.update(c)
    allx = np.concatenate(chunks)
    assert h.count == allx.size
    lo, hi = h.range(pct)
    assert float(allx.min()) <= lo <= hi <= float(allx.max())
    assert h.range(100.0) == (float(allx.min()), float(allx.max()))


def test_histogram_percentile_clips_outliers_and_ignores_non_finite() -> None:
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    h = HistogramObserver()
    h.update(x)
    h.update(np.asarray([1000.0, np.nan, np.inf], np.float32))
    lo, hi = h.range(99.9)
    assert -4.0 < lo < -3.0 and 3.0 < hi < 4.0
    assert h.range(100.0)[1] == 1000.0 and h.count == x.size + 1


def test_observer_errors() -> None:
    with pytest.raises(ValueError, match="no finite value"):
        MinMaxObserver().range()
    with pytest.raises(ValueError, match="multiple of 4"):
        HistogramObserver(bins=6)
    h = HistogramObserver()
    h.update(np.zeros(5))
    assert h.range(99.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="percentile"):
        h.range(0.0)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, st.integers(200, 2000), elements=st.floats(-50, 50, allow_nan=False)),
    split=st.integers(1, 199),
)
@example(x=np.ones(200), split=1)  # constant data: the threshold falls below every value
def test_mse_entropy_and_moving_average_ranges_stay_inside_min_max(x: np.ndarray, split: int) -> None:
    from tensorslim.algorithms.observers import MovingAverageMinMaxObserver, entropy_range, mse_range

    h = HistogramObserver(bins=512)
    ma = MovingAverageMinMaxObserver()
    for part in (x[:split], x[split:]):
        h.update(part)
        ma.update(part)
    lo, hi = float(x.min()), float(x.max())
    for r_lo, r_hi in (mse_range(h), entropy_range(h), ma.range()):
        assert lo - 1e-9 <= r_lo <= r_hi <= hi + 1e-9


def test_entropy_and_mse_clip_a_heavy_tail_but_not_a_uniform_range() -> None:
    from tensorslim.algorithms.observers import entropy_range, mse_range

    r = np.random.default_rng(0)
    heavy = HistogramObserver()
    heavy.update(r.laplace(size=100_000) * 0.01)
    heavy.update(np.array([1.0]))  # one extreme value
    assert entropy_range(heavy)[1] < 0.5 and mse_range(heavy)[1] <= 1.0
    uniform = HistogramObserver()
    uniform.update(r.uniform(-1, 1, 100_000))
    assert mse_range(uniform)[1] > 0.9 and entropy_range(uniform)[1] > 0.8
