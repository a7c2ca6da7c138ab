"""Streaming range observers for calibration: statistics of activations accumulated batch by batch, in
memory bounded by the statistics (never the data), independent of any model format.

* :class:`MinMaxObserver`: the running minimum and maximum (the converters' default range).
* :class:`HistogramObserver`: a histogram over a symmetric range that doubles when new data falls outside
  it (pairs of bins merge, so counts are never redistributed approximately); :meth:`~HistogramObserver.range`
  returns the range that keeps a given percentile of the values, clamped to the observed min/max.

Speed (calibration streams millions of values per sample and tensor through these): every observer reads
the data in its own float type (no float64 copy), finds min and max with one reduction each and filters
non-finite values only when one of them is not finite. The histogram works through fixed-size chunks
(bounded scratch memory, each chunk read from memory once and then processed in cache): min/max of the
chunk (growing the range when needed), then one multiply, one add, one cast to bin indices and
``np.bincount``, about 2.5 ns per value on a 2020s x86 core against about 15 ns for the float64
``np.floor``/``np.clip`` version. Binning in float32 can move a value lying within about ``2e-4`` of a bin
width from a bin edge into the neighbouring bin; nothing else differs from binning in float64 (growing the
range chunk by chunk ends at the same limit and counts as growing it batch by batch).

Guarantees (property-tested): observing data in chunks gives the same min/max as observing it at once; the
histogram's total count equals the number of finite values seen, and its counts equal a float64 histogram
of all the data over the final range up to values at bin edges; a percentile range lies inside the
min/max range, within one bin of the exact order statistics, and is zero-width only for constant data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver", "entropy_range", "mse_range"]

_CHUNK = 1 << 16  # values binned per step: bounded scratch memory, passes over data in cache


def _flat(x: npt.ArrayLike) -> np.ndarray:
    """``x`` flattened in a float type it loses nothing in: float32 and float64 data as they are (no copy when
    contiguous), float16 as float32, anything else as float64."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" and arr.dtype.itemsize < 4 else np.float64)
    return arr.reshape(-1)


def _finite(x: npt.ArrayLike) -> tuple[np.ndarray, float, float]:
    """``x`` flattened (see :func:`_flat`) without non-finite values, and its min and max.

    Empty (or all non-finite) data gives ``(empty, inf, -inf)``.
    """
    arr = _flat(x)
    if arr.size == 0:
        return arr, float("inf"), float("-inf")
    lo, hi = float(np.minimum.reduce(arr)), float(np.maximum.reduce(arr))
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN propagates through both reductions, +-inf reaches one
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return arr, float("inf"), float("-inf")
        lo, hi = float(np.minimum.reduce(arr)), float(np.maximum.reduce(arr))
    return arr, lo, hi


@dataclass
class MinMaxObserver:
    """Running minimum and maximum of every value observed (NaN and infinities ignored)."""

    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0

    def update(self, x: npt.ArrayLike) -> None:
        """Fold ``x`` into the statistics."""
        arr, lo, hi = _finite(x)
        if arr.size:
            self.fold(lo, hi, int(arr.size))

    def fold(self, lo: float, hi: float, count: int) -> None:
        """Fold the min, max and count of finite values of a batch (already reduced) into the statistics."""
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += count

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

    ``limit`` starts at the largest magnitude of the first batch with a non-zero value. Value ``x`` falls in
    bin ``floor((x + limit) / width)`` with ``width = 2 * limit / bins`` (``x = limit`` in the last bin).

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
        q = self.bins // 4
        while self.limit < needed:
            # bin k of [-L, L] lies inside bin q + k // 2 of [-2L, 2L]: the merge is exact
            out = np.zeros_like(self.counts)
            out[q : 3 * q] = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = out
            self.limit *= 2.0

    def update(self, x: npt.ArrayLike) -> None:
        """Fold ``x`` into the histogram."""
        arr = _flat(x)
        if arr.size == 0:
            return
        if self.limit == 0.0:  # the first batch with a non-zero value sets the limit to its largest magnitude
            finite, lo, hi = _finite(arr)
            if finite.size == 0:
                return
            if max(-lo, hi) == 0.0:
                self.minmax.fold(lo, hi, int(finite.size))
                self.counts[self.bins // 2] += finite.size
                return
            self.limit = max(-lo, hi)
        n = min(arr.size, _CHUNK)
        scratch = (np.empty(n, np.float32 if arr.dtype == np.float32 else np.float64), np.empty(n, np.intp))
        for start in range(0, arr.size, _CHUNK):  # each chunk is read from memory once, then stays in cache
            self._bin(arr[start : start + _CHUNK], *scratch)

    def _bin(self, chunk: np.ndarray, pos: np.ndarray, idx: np.ndarray) -> None:
        chunk, lo, hi = _finite(chunk)
        if chunk.size == 0:
            return
        self.minmax.fold(lo, hi, int(chunk.size))
        self._grow(max(-lo, hi))  # growing chunk by chunk or batch by batch ends at the same limit and counts
        # position (x + limit) / width: one multiply-add in float32 (about 7 digits of the position, enough for
        # 2^16 bins; its scale is a normal float32 for limits in (1e-30, 1e30)), else x / limit in float64
        fast = pos.dtype == np.float32 and self.bins <= 1 << 16 and 1e-30 < self.limit < 1e30
        p, i = pos[: chunk.size], idx[: chunk.size]
        half = p.dtype.type(self.bins // 2)
        if fast:
            np.multiply(chunk, p.dtype.type(half / self.limit), out=p)
        else:  # x / limit in float64 first: no overflow for extreme limits
            np.divide(chunk, np.float64(self.limit), out=p, casting="unsafe")
            p *= half
        p += half  # in [0, bins] up to rounding: the cast truncates to the floor (-0.0001 to 0)
        i[...] = p
        counts = np.bincount(i, minlength=self.bins + 1)
        self.counts += counts[: self.bins]
        self.counts[-1] += counts[self.bins]  # x == limit

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
        arr, lo, hi = _finite(x)
        if arr.size == 0:
            return
        self.minmax.fold(lo, hi, int(arr.size))
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

    The first bin takes the second's count, as NVIDIA's calibrator does: a ReLU output's spike of exact zeros
    (half the values or more), which the quantizer keeps exactly, would otherwise be spread over the first
    quantization level's bins and make the narrowest candidate win (the bundled digits CNN kept 7.9 dB of output
    SQNR against float with it, 35 dB without; 46 dB with min/max ranges).
    """
    counts, width = _folded(h)
    levels = 2 ** (bits - 1)
    if counts.size > 1:
        counts = counts.copy()
        counts[0] = counts[1]
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
