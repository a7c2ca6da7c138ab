"""Streaming range observers for calibration: statistics of activations accumulated batch by batch, in
memory bounded by the statistics (never the data), independent of any model format.

* :class:`MinMaxObserver`: the running minimum and maximum (the converters' default range).
* :class:`HistogramObserver`: a histogram over a symmetric range that doubles when new data falls outside
  it (pairs of bins merge, so counts are never redistributed approximately); :meth:`~HistogramObserver.range`
  returns the range that keeps a given percentile of the values, clamped to the observed min/max.

Guarantees (property-tested): observing data in chunks gives the same min/max as observing it at once; the
histogram's total count equals the number of finite values seen; a percentile range lies inside the
min/max range and contains zero-width ranges only for constant data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver", "entropy_range", "mse_range"]


@dataclass
class MinMaxObserver:
    """Running minimum and maximum of every value observed (NaN and infinities ignored)."""

    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0

    def update(self, x: npt.ArrayLike) -> None:
        """Fold ``x`` into the statistics."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return
        self.min = min(self.min, float(arr.min()))
        self.max = max(self.max, float(arr.max()))
        self.count += int(arr.size)

    @property
    def empty(self) -> bool:
        """Whether no finite value has been seen."""
        return self.count == 0

    def range(self) -> tuple[float, float]:
        """The observed ``(min, max)``.

        Raises:
            ValueError: nothing was observed.
        """
        if self.empty:
            raise ValueError("no finite value was observed")
        return self.min, self.max


@dataclass
class HistogramObserver:
    """Histogram of the values over ``[-limit, limit]``; ``limit`` doubles (bins merge pairwise) as needed.

    Args:
        bins: number of bins, a multiple of 4.
    """

    bins: int = 2048
    limit: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    minmax: MinMaxObserver = field(default_factory=MinMaxObserver)

    def __post_init__(self) -> None:
        if self.bins < 4 or self.bins % 4:
            raise ValueError(f"bins: must be a positive multiple of 4, got {self.bins}")
        if self.counts.size == 0:
            self.counts = np.zeros(self.bins, dtype=np.int64)

    def _grow(self, needed: float) -> None:
        if self.limit == 0.0:
            self.limit = needed
            return
        while self.limit < needed:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            out = np.zeros_like(self.counts)
            q = self.bins // 4
            out[q : q + merged.size] = merged
            self.counts = out
            self.limit *= 2.0

    def update(self, x: npt.ArrayLike) -> None:
        """Fold ``x`` into the histogram."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return
        self.minmax.update(arr)
        peak = float(np.max(np.abs(arr)))
        if peak > 0:
            self._grow(peak)
        if self.limit == 0.0:
            self.counts[self.bins // 2] += arr.size
            return
        width = 2.0 * self.limit / self.bins
        idx = np.clip(np.floor((arr + self.limit) / width).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(idx, minlength=self.bins)

    @property
    def count(self) -> int:
        """Number of finite values observed."""
        return int(self.counts.sum())

    def range(self, percentile: float = 99.99) -> tuple[float, float]:
        """The range keeping ``percentile`` % of the values (the rest split evenly between both tails).

        Raises:
            ValueError: nothing was observed, or ``percentile`` is outside ``(0, 100]``.
        """
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile: must be in (0, 100], got {percentile}")
        lo_obs, hi_obs = self.minmax.range()
        if percentile == 100.0 or self.limit == 0.0:
            return lo_obs, hi_obs
        total = self.counts.sum()
        tail = total * (100.0 - percentile) / 200.0
        cum = np.cumsum(self.counts)
        width = 2.0 * self.limit / self.bins
        lo_bin = int(np.searchsorted(cum, tail, side="right"))
        hi_bin = int(np.searchsorted(cum, total - tail, side="left"))
        lo = -self.limit + lo_bin * width
        hi = -self.limit + (hi_bin + 1) * width
        return max(lo_obs, min(lo, hi_obs)), min(hi_obs, max(hi, lo_obs))


@dataclass
class MovingAverageMinMaxObserver:
    """Exponential moving average of each batch's minimum and maximum (``momentum`` weights the past).

    Less sensitive than :class:`MinMaxObserver` to a single extreme batch.
    """

    momentum: float = 0.9
    min: float = 0.0
    max: float = 0.0
    batches: int = 0
    minmax: MinMaxObserver = field(default_factory=MinMaxObserver)

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")

    @property
    def empty(self) -> bool:
        """Whether no finite value has been seen."""
        return self.batches == 0

    def update(self, x: npt.ArrayLike) -> None:
        """Fold one batch into the averages."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return
        self.minmax.update(arr)
        lo, hi = float(arr.min()), float(arr.max())
        if self.batches == 0:
            self.min, self.max = lo, hi
        else:
            self.min = self.momentum * self.min + (1 - self.momentum) * lo
            self.max = self.momentum * self.max + (1 - self.momentum) * hi
        self.batches += 1

    def range(self) -> tuple[float, float]:
        """The averaged ``(min, max)``.

        Raises:
            ValueError: nothing was observed.
        """
        if self.empty:
            raise ValueError("no finite value was observed")
        return self.min, self.max


def _folded(h: HistogramObserver) -> tuple[np.ndarray, float]:
    """Counts of ``|x|`` over ``[0, limit]`` (``bins / 2`` bins) and the bin width."""
    half = h.bins // 2
    counts = h.counts[half:].astype(np.float64) + h.counts[:half][::-1].astype(np.float64)
    return counts, h.limit / half


def _clamped(h: HistogramObserver, threshold: float) -> tuple[float, float]:
    """``[-threshold, threshold]`` intersected with the observed range (the observed range when disjoint)."""
    lo, hi = h.minmax.range()
    r_lo, r_hi = max(lo, -threshold), min(hi, threshold)
    return (r_lo, r_hi) if r_lo <= r_hi else (lo, hi)


def mse_range(h: HistogramObserver, *, bits: int = 8) -> tuple[float, float]:
    """The clipping threshold that minimizes the expected squared error of ``bits``-bit quantization.

    For each candidate threshold ``t`` (a bin edge of the ``|x|`` histogram), the error is the clipping
    error of the values beyond ``t`` plus the rounding noise ``step^2 / 12`` of the values inside.
    """
    counts, width = _folded(h)
    if h.limit == 0.0 or counts.sum() == 0:
        return h.minmax.range()
    centers = (np.arange(counts.size) + 0.5) * width
    levels = 2**bits - 1
    best_t, best_err = centers[-1] + width / 2, np.inf
    cum_count = np.cumsum(counts)
    total = counts.sum()
    # sum over bins beyond t of count * (center - t)^2, vectorized through prefix sums of count, c*x, c*x^2
    cx = np.cumsum(counts * centers)
    cx2 = np.cumsum(counts * centers**2)
    for i in range(max(1, counts.size // 64), counts.size):
        t = (i + 1) * width
        beyond_n = total - cum_count[i]
        beyond_x = cx[-1] - cx[i]
        beyond_x2 = cx2[-1] - cx2[i]
        clip = beyond_x2 - 2 * t * beyond_x + t * t * beyond_n
        step = 2 * t / levels
        err = clip + cum_count[i] * step * step / 12.0
        if err < best_err:
            best_t, best_err = t, err
    return _clamped(h, best_t)


def entropy_range(h: HistogramObserver, *, bits: int = 8, stride: int = 8) -> tuple[float, float]:
    """The KL-divergence calibration threshold (as in TensorRT's entropy calibrator).

    For candidate thresholds ``t``, the ``|x|`` distribution clipped at ``t`` (the tail folded into the last
    bin) is compared with its ``2^(bits-1)``-level quantized version; the ``t`` with the smallest KL
    divergence wins.
    """
    counts, width = _folded(h)
    levels = 2 ** (bits - 1)
    if h.limit == 0.0 or counts.sum() == 0 or counts.size < levels:
        return h.minmax.range()
    best_i, best_kl = counts.size, np.inf
    for i in range(levels, counts.size + 1, stride):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        # quantize the first i bins into `levels` groups, spreading each group's mass over its non-empty bins
        groups = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for g in groups:  # Q is built from the clipped range only: the folded tail is what it cannot represent
            seg = counts[g]
            nonzero = seg > 0
            if nonzero.any():
                q[g[nonzero]] = seg.sum() / nonzero.sum()
        mask = p > 0
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-12)
        qs = np.where(mask & (qs == 0), 1e-8, qs)  # smoothing: a bin Q cannot represent costs, not infinitely
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / qs[mask])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return _clamped(h, best_i * width)
