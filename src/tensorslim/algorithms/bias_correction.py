"""Bias correction (Nagel et al. 2019, "Data-Free Quantization"): the expected output error of a layer's
quantized weights, ``E[(W_q - W) x] = (W_q - W) E[x]``, is a constant per output channel, so subtracting it
from the bias removes the systematic part of the weight quantization error.

Pure NumPy; the layouts are ONNX's: MatMul ``W`` is ``[K, N]``, Gemm ``W`` is ``[N, K]`` (``trans_b``) or
``[K, N]``, Conv ``W`` is ``[O, C / groups, kh, kw]``.

Empirical bias correction measures the error instead: each quantized layer's output, per channel, averaged over
calibration samples, against the float model's (:func:`mean_shift`). It sees what the expected weight error
misses: the input's own rounding and clipping, and the offsets earlier layers' errors leave behind.

An offset is one number per channel; where a layer sees two kinds of input (text and white paper, objects and
sky), its error differs between them, and one offset cannot match both. :class:`PairedMoments` and
:func:`gain_and_shift` fit two: a gain and an offset per channel, a line from the quantized output to the float
one over every position of the calibration samples (the gain from the regression of the quantized output on the
float one, which rounding noise does not bias; a per-channel gain is free at run time: it scales the channel's
weight scale).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PairedMoments", "conv_output_error", "gain_and_shift", "linear_output_error", "mean_shift"]

MAX_GAIN = 1.25  # a fitted gain stays within [1 / MAX_GAIN, MAX_GAIN]: a correction, not a new layer
MIN_VALUES = 256  # values per channel below which no gain is fitted (a Gemm on a few samples: its offset only)


def linear_output_error(dw: np.ndarray, mean_x: np.ndarray, *, trans_b: bool = False) -> np.ndarray:
    """``E[x] @ dW`` for ``dW`` of shape ``[K, N]`` (``[N, K]`` when ``trans_b``): one value per output.

    Raises:
        ValueError: the shapes do not match.
    """
    d = np.asarray(dw, np.float64)
    m = np.asarray(mean_x, np.float64).reshape(-1)
    if d.ndim != 2:
        raise ValueError(f"dw: expected a matrix, got shape {list(d.shape)}")
    k = d.shape[1] if trans_b else d.shape[0]
    if m.size != k:
        raise ValueError(f"mean_x: {m.size} values for {k} input channels")
    return d @ m if trans_b else m @ d


def conv_output_error(dw: np.ndarray, mean_x: np.ndarray, *, groups: int = 1) -> np.ndarray:
    """Expected output error of a convolution per output channel, padding aside.

    Each output sums ``dW[o, c, i, j] * E[x_c]`` over its input channels ``c`` (of its group) and the
    kernel window ``(i, j)``.

    Raises:
        ValueError: the shapes do not match.
    """
    d = np.asarray(dw, np.float64)
    m = np.asarray(mean_x, np.float64).reshape(-1)
    o, cg = d.shape[0], d.shape[1]
    if groups < 1 or o % groups or m.size != cg * groups:
        raise ValueError(f"mean_x: {m.size} channels do not match weight {list(d.shape)} with {groups} group(s)")
    per = d.reshape(o, cg, -1).sum(axis=2)  # [O, C/groups]
    group_of = np.arange(o) // (o // groups)
    means = m.reshape(groups, cg)[group_of]  # [O, C/groups]
    return np.sum(per * means, axis=1)


def mean_shift(float_means: np.ndarray, quant_means: np.ndarray, *, z: float = 2.0) -> np.ndarray:
    """The offset to subtract from each channel so the quantized layer's mean output matches float's.

    ``float_means`` and ``quant_means`` are ``[samples, channels]``: each sample's mean output per channel in the
    two models. The offset is the mean difference over the samples, where it is clear of sampling noise (more
    than ``z`` standard errors of that mean); elsewhere 0, so a few samples cannot shift a bias by their noise.
    With one sample there is no estimate of the noise and every difference counts.

    Raises:
        ValueError: the shapes differ or are not ``[samples, channels]``.
    """
    f = np.asarray(float_means, np.float64)
    q = np.asarray(quant_means, np.float64)
    if f.shape != q.shape or f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"means: expected two equal [samples, channels] arrays, got {list(f.shape)} and "
                         f"{list(q.shape)}")
    d = q - f
    mean = d.mean(axis=0)
    if d.shape[0] < 2:
        return mean
    se = d.std(axis=0, ddof=1) / np.sqrt(d.shape[0])
    return np.where(np.abs(mean) > z * se, mean, 0.0)


class PairedMoments:
    """Per-sample sums, per channel, of a layer's float output ``f`` and quantized output ``q`` seen at the same
    positions: enough for the gain of ``q`` onto ``f`` and its sampling noise (:meth:`gain`,
    :func:`gain_and_shift`) without keeping the outputs. ``add`` takes one sample's outputs;
    ``float_means`` / ``quant_means`` are each sample's per-channel means."""

    def __init__(self) -> None:
        self.count = 0
        self._sums: list[np.ndarray] = []  # per sample, [6, channels]: count, sums of f, q, q*q, f*q, f*f
        self.float_means: list[np.ndarray] = []
        self.quant_means: list[np.ndarray] = []

    def add(self, f: np.ndarray, q: np.ndarray, axis: int) -> None:
        """One sample's outputs (equal shapes, channels on ``axis``).

        Raises:
            ValueError: the shapes differ or the channel count changed.
        """
        if f.shape != q.shape or f.ndim == 0:
            raise ValueError(f"outputs: expected equal shapes with a channel axis, got {list(f.shape)} and "
                             f"{list(q.shape)}")  # fmt: skip
        ax = axis % f.ndim
        fc = np.moveaxis(np.asarray(f, np.float64), ax, 0).reshape(f.shape[ax], -1)
        qc = np.moveaxis(np.asarray(q, np.float64), ax, 0).reshape(q.shape[ax], -1)
        if self._sums and self._sums[0].shape[1] != fc.shape[0]:
            raise ValueError(f"outputs: {fc.shape[0]} channels after {self._sums[0].shape[1]}")
        self._sums.append(np.stack([np.full(fc.shape[0], float(fc.shape[1])), fc.sum(1), qc.sum(1),
                                    np.einsum("ij,ij->i", qc, qc), np.einsum("ij,ij->i", fc, qc),
                                    np.einsum("ij,ij->i", fc, fc)]))  # fmt: skip
        self.count += fc.shape[1]
        self.float_means.append(fc.mean(1))
        self.quant_means.append(qc.mean(1))

    def gain(self, *, z: float = 2.0) -> np.ndarray:
        """Per channel, the gain from ``q`` onto ``f`` over every value seen (:func:`_slope`), within
        ``[1 / MAX_GAIN, MAX_GAIN]``, where it is clear of sampling noise: its distance from 1 is more than ``z``
        jackknife standard errors (each sample left out in turn). 1 elsewhere, where a channel has under
        ``MIN_VALUES`` values or ``f`` does not vary, and with fewer than two samples.

        Raises:
            ValueError: nothing was added.
        """
        if not self._sums:
            raise ValueError("moments: no sample was added")
        per = np.stack(self._sums)  # [samples, 6, channels]
        k = per.shape[0]
        if k < 2 or self.count < MIN_VALUES:
            return np.ones(per.shape[2])
        total = per.sum(0)
        a = _slope(total)
        rest = np.stack([_slope(total - per[i]) for i in range(k)])  # leave-one-sample-out slopes
        se = np.sqrt((k - 1) / k * np.sum((rest - rest.mean(0)) ** 2, axis=0))
        a = np.clip(a, 1.0 / MAX_GAIN, MAX_GAIN)
        return np.where(np.abs(a - 1.0) > z * se, a, 1.0)


def _slope(s: np.ndarray) -> np.ndarray:
    """Per channel, the gain that undoes the quantized output's systematic scale, from
    ``[count, sum f, sum q, sum q*q, sum f*q, sum f*f]``: ``var(f) / cov(f, q)``, the inverse of the least-squares
    slope of ``q`` on ``f``. Rounding noise sits in ``q`` and does not follow ``f``, so regressing ``q`` on ``f``
    finds the scale int8 put on the signal; the slope of ``f`` on ``q`` would shrink toward 0 by the noise's share
    (regression dilution) and scale every noisy channel down. 1 where ``f`` does not vary (beyond rounding of its
    own square), the two do not move together, or the result is not finite."""
    n, sf, sq, _, sfq, sff = s
    n = np.maximum(n, 1.0)
    var = sff / n - (sf / n) ** 2
    cov = sfq / n - (sf / n) * (sq / n)
    ok = (var > 1e-12 * np.maximum(sff / n, 1e-30)) & (cov > 0)
    a = np.where(ok, np.divide(var, cov, out=np.ones_like(cov), where=ok), 1.0)
    return np.where(np.isfinite(a), a, 1.0)


def gain_and_shift(m: PairedMoments, *, gain: bool = True, z: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, ``(a, shift)`` such that ``a * q - shift`` is the quantized output corrected toward float.

    ``a`` is :meth:`PairedMoments.gain` (1 where ``gain`` is off). ``shift`` then makes the mean output match
    float's, where that is clear of sampling noise (:func:`mean_shift` on the per-sample means of ``a * q`` and
    ``f``). With ``a`` = 1 this is exactly :func:`mean_shift`.

    Raises:
        ValueError: nothing was added.
    """
    if not m.float_means:
        raise ValueError("moments: no sample was added")
    a = m.gain(z=z) if gain else np.ones_like(m.float_means[0])
    shift = mean_shift(np.stack(m.float_means), a * np.stack(m.quant_means), z=z)
    return a, np.where(np.isfinite(shift), shift, 0.0)
