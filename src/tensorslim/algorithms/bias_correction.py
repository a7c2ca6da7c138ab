"""Bias correction (Nagel et al. 2019, "Data-Free Quantization"): the expected output error of a layer's
quantized weights, ``E[(W_q - W) x] = (W_q - W) E[x]``, is a constant per output channel, so subtracting it
from the bias removes the systematic part of the weight quantization error.

Pure NumPy; the layouts are ONNX's: MatMul ``W`` is ``[K, N]``, Gemm ``W`` is ``[N, K]`` (``trans_b``) or
``[K, N]``, Conv ``W`` is ``[O, C / groups, kh, kw]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_output_error", "linear_output_error"]


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
