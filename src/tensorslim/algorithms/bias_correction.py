"""Bias correction (Nagel et al. 2019, "Data-Free Quantization"): the expected output error of a layer's
quantized weights, ``E[(W_q - W) x] = (W_q - W) E[x]``, is a constant per output channel, so subtracting it
from the bias removes the systematic part of the weight quantization error.

Pure NumPy; the layouts are ONNX's: MatMul ``W`` is ``[K, N]``, Gemm ``W`` is ``[N, K]`` (``trans_b``) or
``[K, N]``, Conv ``W`` is ``[O, C / groups, kh, kw]``.

Empirical bias correction measures the error instead: each quantized layer's output, per channel, averaged over
calibration samples, against the float model's (:func:`mean_shift`). It sees what the expected weight error
misses: the input's own rounding and clipping, and the offsets earlier layers' errors leave behind.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_output_error", "linear_output_error", "mean_shift"]


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
