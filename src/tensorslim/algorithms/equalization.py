"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization").

For two layers ``y = W2 f(W1 x + b1)`` with ``f`` positively homogeneous (ReLU, identity), scaling output
channel ``i`` of the first layer by ``1 / s_i`` and input channel ``i`` of the second by ``s_i`` leaves the
function unchanged. ``s_i = sqrt(r1_i / r2_i)`` (``r`` the channel's weight range) gives both layers the
same per-channel range ``sqrt(r1_i r2_i)``, which balances the channels for per-tensor quantization.

With per-channel int8 weights, scaling output channels changes no weight's rounding, so weight ranges no longer
need balancing, but the activation between the layers still has one scale for all its channels. Where the second
layer is depthwise (input channel ``i`` feeds only output channel ``i``, whose weights are quantized on their own),
:func:`activation_scales` scales each channel of that activation up to the widest channel's range: the function
and every weight's rounding stay as they were, and the narrow channels get all 256 levels instead of a few.

Pure NumPy; ONNX Conv layouts: ``W1`` is ``[O, C, kh, kw]`` (output channel first); the second layer's
input channel ``i`` is ``W2[:, i]`` (``group`` 1) or ``W2[i]`` (depthwise).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "activation_scales",
    "equalization_scales",
    "equalize_pair",
    "input_channel_ranges",
    "output_channel_ranges",
    "scale_pair",
]


def output_channel_ranges(w: npt.ArrayLike) -> np.ndarray:
    """``max |W[i]|`` per output channel (axis 0)."""
    a = np.abs(np.asarray(w, np.float64))
    return a.reshape(a.shape[0], -1).max(axis=1)


def input_channel_ranges(w: npt.ArrayLike, *, depthwise: bool = False) -> np.ndarray:
    """``max |W[:, i]|`` per input channel (axis 1), or per channel of a depthwise weight (axis 0)."""
    a = np.abs(np.asarray(w, np.float64))
    if depthwise:
        return a.reshape(a.shape[0], -1).max(axis=1)
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1).max(axis=1)


def equalization_scales(r1: npt.ArrayLike, r2: npt.ArrayLike, *, limit: float = 1e3) -> np.ndarray:
    """``s_i = sqrt(r1_i / r2_i)``, 1 where a range is 0, within ``[1 / limit, limit]``."""
    a, b = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    s = np.ones_like(a)
    ok = (a > 0) & (b > 0)
    s[ok] = np.sqrt(a[ok] / b[ok])
    return np.clip(s, 1.0 / limit, limit)


def activation_scales(peaks: npt.ArrayLike, *, limit: float = 64.0) -> np.ndarray:
    """``t_i = max(peaks) / peaks_i`` within ``[1, limit]`` (1 where a peak is 0 or not finite): each channel's
    extent (its largest ``|x|``, or the width of its range) raised to the widest channel's, by at most ``limit``
    (a channel narrow on the calibration data may be wider on other inputs, and clips there if raised too far)."""
    p = np.asarray(peaks, np.float64)
    t = np.ones_like(p)
    ok = np.isfinite(p) & (p > 0)
    if ok.any():
        t[ok] = np.max(p[ok]) / p[ok]
    return np.clip(t, 1.0, limit)


def scale_pair(
    w1: npt.ArrayLike, b1: npt.ArrayLike | None, w2: npt.ArrayLike, t: npt.ArrayLike, *, depthwise: bool = False
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(W1 * t, b1 * t, W2 / t)`` (float32): output channel ``i`` of the first layer times ``t_i``, input channel
    ``i`` of the second divided by it (``t > 0``).

    Raises:
        ValueError: the first layer's outputs do not match the second layer's inputs, or ``t`` either.
    """
    a1, a2, s = np.asarray(w1, np.float64), np.asarray(w2, np.float64), np.asarray(t, np.float64).reshape(-1)
    n_in = a2.shape[0] if depthwise else a2.shape[1]
    if not a1.shape[0] == n_in == s.size:
        raise ValueError(f"first layer has {a1.shape[0]} output channels, second layer {n_in} input channels, "
                         f"{s.size} scales")  # fmt: skip
    n1 = (a1 * s.reshape((-1,) + (1,) * (a1.ndim - 1))).astype(np.float32)
    nb = None if b1 is None else (np.asarray(b1, np.float64) * s).astype(np.float32)
    shape = [1] * a2.ndim
    shape[0 if depthwise else 1] = -1
    return n1, nb, (a2 / s.reshape(shape)).astype(np.float32)


def equalize_pair(
    w1: npt.ArrayLike, b1: npt.ArrayLike | None, w2: npt.ArrayLike, *, depthwise: bool = False
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """One equalization step: ``(W1 / s, b1 / s, W2 * s, s)`` (float32 arrays).

    Raises:
        ValueError: the first layer's outputs do not match the second layer's inputs.
    """
    r1 = output_channel_ranges(w1)
    r2 = input_channel_ranges(w2, depthwise=depthwise)
    if r1.size != r2.size:
        raise ValueError(f"first layer has {r1.size} output channels, second layer {r2.size} input channels")
    s = equalization_scales(r1, r2)
    n1, nb, n2 = scale_pair(w1, b1, w2, 1.0 / s, depthwise=depthwise)
    return n1, nb, n2, s
