"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights before int8 quantization.

For a linear layer ``Y = X W`` with activation channel maxima ``a_j = max |X_j|`` and weight input-channel
maxima ``w_j = max |W_j|``, the per-channel scales ``s_j = a_j^alpha / w_j^(1 - alpha)`` give
``Y = (X / s) (diag(s) W)``: the same function, with activation channels flattened (easier to quantize per
tensor) and the difficulty moved into the weights (quantized per output channel). The ``1 / s`` is folded
into whatever produces ``X`` (a LayerNormalization's gamma and beta, a Mul by a constant) or applied by an
explicit Mul.

Pure NumPy, no model format.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["fold_into_affine", "outlier_ratio", "scale_weight_rows", "smoothing_scales"]


def smoothing_scales(
    act_absmax: npt.ArrayLike, weight_absmax: npt.ArrayLike, alpha: float = 0.5, *, limit: float = 1e4
) -> np.ndarray:
    """Per input channel ``s_j = a_j^alpha / w_j^(1 - alpha)``, 1 where either maximum is 0, within
    ``[1 / limit, limit]``.

    Raises:
        ValueError: ``alpha`` outside (0, 1) or mismatched lengths.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    a = np.abs(np.asarray(act_absmax, np.float64).reshape(-1))
    w = np.abs(np.asarray(weight_absmax, np.float64).reshape(-1))
    if a.shape != w.shape:
        raise ValueError(f"act_absmax has {a.size} channels, weight_absmax {w.size}")
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    s = np.ones_like(a)
    s[ok] = np.power(a[ok], alpha) / np.power(w[ok], 1.0 - alpha)
    return np.clip(s, 1.0 / limit, limit)


def scale_weight_rows(w: npt.ArrayLike, s: npt.ArrayLike, *, input_axis: int = 0) -> np.ndarray:
    """``w`` with input channel ``j`` (along ``input_axis``) multiplied by ``s_j`` (float32)."""
    arr = np.asarray(w, np.float64)
    shape = [1] * arr.ndim
    shape[input_axis] = -1
    return (arr * np.asarray(s, np.float64).reshape(shape)).astype(np.float32)


def fold_into_affine(scale: npt.ArrayLike, s: npt.ArrayLike) -> np.ndarray:
    """A per-channel (last axis) multiplier ``scale`` divided by ``s``: ``scale / s`` broadcast to the channels."""
    sc = np.asarray(scale, np.float64)
    sv = np.asarray(s, np.float64).reshape(-1)
    if sc.ndim == 0 or sc.shape[-1] == 1:
        sc = np.broadcast_to(sc, (*sc.shape[:-1], sv.size) if sc.ndim else (sv.size,))
    return (sc / sv).astype(np.float32)


def outlier_ratio(act_absmax: npt.ArrayLike) -> float:
    """``max / median`` of the channel maxima: large when a few channels hold outliers."""
    a = np.abs(np.asarray(act_absmax, np.float64).reshape(-1))
    med = float(np.median(a)) if a.size else 0.0
    return float(a.max() / med) if med > 0 else (float("inf") if a.size and a.max() > 0 else 1.0)
