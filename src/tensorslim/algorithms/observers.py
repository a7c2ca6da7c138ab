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

__all__ = ["HistogramObserver", "MinMaxObserver"]


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
