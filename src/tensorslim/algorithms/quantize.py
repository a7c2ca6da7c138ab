"""Affine quantization maths in NumPy, independent of any model format.

A real value ``x`` maps to an integer code ``q = clip(round(x / scale) + zero_point, qmin, qmax)`` and back
to ``x_hat = (q - zero_point) * scale``. Scales and zero points are chosen per tensor or per slice along one
axis (per channel). Two range choices are offered: the plain min/max range, and an MSE-optimal clipped range
found by a grid search over shrink factors per channel, which pays where a few outliers stretch the range.

Guarantees (property-tested): the scale is finite and strictly positive, zero is exactly representable,
a value inside the chosen range is reconstructed within half a step, and constant tensors round-trip
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "QuantParams",
    "QuantScheme",
    "RangeMethod",
    "choose_qparams",
    "dequantize",
    "integer_range",
    "quantize",
    "quantize_dequantize",
    "quantize_keeping_sums",
    "tensor_params",
]


class QuantScheme(StrEnum):
    """How the integer grid is laid over the real range."""

    SYMMETRIC = "symmetric"  # signed codes, zero point 0, range [-max|x|, max|x|]
    ASYMMETRIC = "asymmetric"  # unsigned codes, zero point chosen so [min, max] maps onto [0, 2^bits - 1]


class RangeMethod(StrEnum):
    """How the real range that the grid covers is chosen."""

    MINMAX = "minmax"
    MSE = "mse"


@dataclass(frozen=True)
class QuantParams:
    """Scales and zero points of one quantized tensor: inspectable data, decided before anything is applied.

    Attributes:
        scale: float32 array, shape ``()`` per tensor or ``(C,)`` along ``axis``.
        zero_point: integer array of the code dtype, same shape as ``scale``.
        axis: the channel axis for per-channel parameters, ``None`` per tensor.
        bits: code width.
        scheme: symmetric (signed codes) or asymmetric (unsigned codes).
    """

    scale: npt.NDArray[np.float32]
    zero_point: npt.NDArray[np.integer]
    axis: int | None
    bits: int
    scheme: QuantScheme

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype of the integer codes."""
        signed = self.scheme is QuantScheme.SYMMETRIC
        if self.bits <= 8:
            return np.dtype(np.int8 if signed else np.uint8)
        if self.bits <= 16:
            return np.dtype(np.int16 if signed else np.uint16)
        return np.dtype(np.int32 if signed else np.uint32)

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point reshaped to broadcast against a tensor with ``ndim`` dimensions."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def tensor_params(scale: float, zero_point: int, dtype: npt.DTypeLike) -> QuantParams:
    """Per-tensor parameters of values stored as the integer ``dtype`` (signed: symmetric, unsigned: asymmetric),
    e.g. the quantized inputs and outputs of an integer-I/O model."""
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        raise ValueError(f"dtype must be an integer type, got {dt}")
    scheme = QuantScheme.SYMMETRIC if dt.kind == "i" else QuantScheme.ASYMMETRIC
    return QuantParams(np.array(scale, np.float32), np.array(zero_point, dt), None, dt.itemsize * 8, scheme)


def integer_range(bits: int, scheme: QuantScheme | str, *, narrow: bool = False) -> tuple[int, int]:
    """Smallest and largest code of a ``bits``-wide grid.

    Args:
        bits: code width, 2 to 16.
        scheme: symmetric gives signed codes, asymmetric unsigned ones.
        narrow: for symmetric codes, drop the most negative code so the grid is symmetric around 0
            (``[-127, 127]`` for 8 bits), as integer kernels that assume symmetric weights expect.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, got {bits}")
    if QuantScheme(scheme) is QuantScheme.SYMMETRIC:
        hi = 2 ** (bits - 1) - 1
        return (-hi if narrow else -hi - 1), hi
    return 0, 2**bits - 1


def _reduce(x: np.ndarray, axis: int | None, fn: str) -> np.ndarray:
    if axis is None:
        return np.asarray(getattr(np, fn)(x), dtype=np.float64)
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return np.asarray(getattr(np, fn)(moved, axis=1), dtype=np.float64)


def _params_from_range(
    lo: np.ndarray, hi: np.ndarray, bits: int, scheme: QuantScheme, axis: int | None, narrow: bool
) -> QuantParams:
    qmin, qmax = integer_range(bits, scheme, narrow=narrow)
    lo = np.minimum(lo, 0.0)  # zero must be exactly representable
    hi = np.maximum(hi, 0.0)
    if scheme is QuantScheme.SYMMETRIC:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        scale = amax / float(qmax)
        zero_point = np.zeros_like(scale)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.round(qmin - lo / safe), qmin, qmax)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
    # after the float32 cast a tiny scale could still underflow; keep it strictly positive
    scale = np.maximum(scale, np.float32(np.finfo(np.float32).tiny))
    qp = QuantParams(scale=scale, zero_point=zero_point.astype(np.int64), axis=axis, bits=bits, scheme=scheme)
    return QuantParams(scale, zero_point.astype(qp.dtype), axis, bits, scheme)


def choose_qparams(
    x: npt.ArrayLike,
    *,
    bits: int = 8,
    scheme: QuantScheme | str = QuantScheme.SYMMETRIC,
    axis: int | None = None,
    method: RangeMethod | str = RangeMethod.MINMAX,
    narrow: bool = True,
    grid: int = 40,
    min_shrink: float = 0.5,
) -> QuantParams:
    """Choose scale and zero point for ``x``.

    Args:
        x: the real tensor (weights or statistics).
        bits: code width.
        scheme: symmetric signed or asymmetric unsigned.
        axis: channel axis for per-channel parameters, ``None`` for one set per tensor.
        method: ``minmax`` covers the full range; ``mse`` searches ``grid`` shrink factors in
            ``[min_shrink, 1]`` of the range, per channel, and keeps the one with the lowest squared error.
        narrow: symmetric codes use ``[-(2^(b-1)-1), 2^(b-1)-1]``.
        grid: number of candidate ranges for ``mse``.
        min_shrink: smallest fraction of the full range tried by ``mse``.

    Returns:
        The chosen :class:`QuantParams`.

    Raises:
        ValueError: empty input, NaN or infinite values, or an axis out of range.
    """
    arr = np.asarray(x, dtype=np.float32)
    scheme = QuantScheme(scheme)
    method = RangeMethod(method)
    if arr.size == 0:
        raise ValueError("cannot choose quantization parameters for an empty tensor")
    if not np.all(np.isfinite(arr)):
        raise ValueError("tensor holds NaN or infinite values; quantization needs finite values")
    if axis is not None:
        if not -arr.ndim <= axis < arr.ndim:
            raise ValueError(f"axis {axis} is out of range for a tensor with {arr.ndim} dimensions")
        axis = axis % arr.ndim
    lo = _reduce(arr, axis, "min")
    hi = _reduce(arr, axis, "max")
    best = _params_from_range(lo, hi, bits, scheme, axis, narrow)
    if method is RangeMethod.MINMAX:
        return best
    # the error of each candidate range is measured on a deterministic subsample: large tensors cost
    # O(grid x sample) instead of O(grid x size); the range itself always comes from the full tensor
    sample = _subsample(arr, axis, max_per_channel=_MSE_SAMPLES_PER_CHANNEL)
    best_err = _channel_sq_error(sample, _channels_first(best))
    for shrink in np.linspace(min_shrink, 1.0, grid, endpoint=False):
        cand = _params_from_range(lo * shrink, hi * shrink, bits, scheme, axis, narrow)
        err = _channel_sq_error(sample, _channels_first(cand))
        better = err < best_err
        if np.any(better):
            best = _merge(best, cand, better)
            best_err = np.where(better, err, best_err)
    return best


_MSE_SAMPLES_PER_CHANNEL = 8192
_MSE_SAMPLES_TOTAL = 4_000_000


def _subsample(x: np.ndarray, axis: int | None, *, max_per_channel: int) -> np.ndarray:
    """Channels-first 2-D view ``[C, n]`` (flat 1-D per tensor) of at most ``max_per_channel`` evenly
    strided elements per channel (per tensor: 64 times that)."""
    if axis is None:
        flat = x.reshape(-1)
        limit = max_per_channel * 64
        return flat if flat.size <= limit else flat[:: -(-flat.size // limit)]
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    # bound the whole sample too: tensors with many channels get fewer samples per channel
    max_per_channel = min(max_per_channel, max(256, _MSE_SAMPLES_TOTAL // moved.shape[0]))
    if moved.shape[1] <= max_per_channel:
        return moved
    return moved[:, :: -(-moved.shape[1] // max_per_channel)]


def _channels_first(qp: QuantParams) -> QuantParams:
    return qp if qp.axis is None else QuantParams(qp.scale, qp.zero_point, 0, qp.bits, qp.scheme)


def _merge(a: QuantParams, b: QuantParams, take_b: np.ndarray) -> QuantParams:
    scale = np.where(take_b, b.scale, a.scale).astype(np.float32)
    zp = np.where(take_b, b.zero_point, a.zero_point).astype(a.zero_point.dtype)
    return QuantParams(scale, zp, a.axis, a.bits, a.scheme)


def _channel_sq_error(x: np.ndarray, qp: QuantParams) -> np.ndarray:
    """Squared reconstruction error per channel (``x`` channels-first when per channel)."""
    scale, zp = qp.broadcast(x.ndim)
    qmin, qmax = integer_range(qp.bits, qp.scheme, narrow=True)
    zpf = zp.astype(np.float32)
    q = np.round(x / scale)
    q += zpf
    np.clip(q, qmin, qmax, out=q)
    q -= zpf
    q *= scale
    q -= x
    np.square(q, out=q)
    if qp.axis is None:
        return np.asarray(q.sum(dtype=np.float64))
    return q.reshape(x.shape[0], -1).sum(axis=1, dtype=np.float64)


def quantize(x: npt.ArrayLike, qp: QuantParams, *, narrow: bool = True) -> np.ndarray:
    """Map ``x`` to integer codes with ``qp`` (round half to even, then clip to the code range)."""
    arr = np.asarray(x, dtype=np.float32)
    scale, zp = qp.broadcast(arr.ndim)
    qmin, qmax = integer_range(qp.bits, qp.scheme, narrow=narrow)
    q = np.round(arr / scale) + zp.astype(np.float32)
    return np.clip(q, qmin, qmax).astype(qp.dtype)


def quantize_keeping_sums(x: npt.ArrayLike, qp: QuantParams, axis: int, *, narrow: bool = True) -> np.ndarray:
    """Codes like :func:`quantize`, except that each slice along ``axis`` (a layer's output channel) keeps the sum
    of its values: round to nearest, then round the fewest values the other way (those nearest half a step, so the
    added squared error is the smallest possible) until the slice's code sum is its value sum rounded to a step.

    Why: a layer's response to a constant input is its weight sum times that input. Round to nearest leaves each
    slice's sum off by a random walk of half-steps, which on an edge-detecting kernel (weights summing to almost
    nothing) is many times the true sum, so every flat region of an image (paper, sky, padding) gets a response
    the float layer never gives, the same at every position. With the sums kept, a flat input's error is at most
    half a step per channel; each value is still within one step of its own.
    """
    arr = np.asarray(x, dtype=np.float32)
    scale, zp = qp.broadcast(arr.ndim)
    qmin, qmax = integer_range(qp.bits, qp.scheme, narrow=narrow)
    v = np.moveaxis(arr / scale, axis, 0)
    z = np.moveaxis(np.broadcast_to(zp, arr.shape), axis, 0)
    rows = v.reshape(v.shape[0], -1)
    zrows = z.reshape(rows.shape)
    out = np.empty(rows.shape, qp.dtype)
    step = max(1, (1 << 20) // max(rows.shape[1], 1))  # rows per block: a few MB of temporaries at a time
    for i in range(0, rows.shape[0], step):
        out[i : i + step] = _round_rows_keeping_sums(rows[i : i + step], zrows[i : i + step], qmin, qmax)
    return np.moveaxis(out.reshape(v.shape), 0, axis)


def _round_rows_keeping_sums(v: np.ndarray, zp: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    v = v.astype(np.float64)
    z = zp.astype(np.float64)
    q = np.clip(np.round(v) + z, qmin, qmax) - z
    err = v - q  # within half a step where nothing clipped
    need = np.round(err.sum(axis=1))  # values each row rounds the other way; its sign says which way
    if np.any(need):
        direction = np.sign(need)[:, None]
        room = (q + z + direction >= qmin) & (q + z + direction <= qmax)
        gain = np.where(room & (err * direction > 0), err * direction, -np.inf)
        order = np.argsort(-gain, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(v.shape[1]), v.shape), axis=1)
        q += np.where((rank < np.abs(need)[:, None]) & np.isfinite(gain), direction, 0.0)
    return q + z


def dequantize(q: npt.ArrayLike, qp: QuantParams) -> np.ndarray:
    """Map integer codes back to float32 values."""
    codes = np.asarray(q)
    scale, zp = qp.broadcast(codes.ndim)
    return ((codes.astype(np.float32) - zp.astype(np.float32)) * scale).astype(np.float32)


def quantize_dequantize(x: npt.ArrayLike, qp: QuantParams, *, narrow: bool = True) -> np.ndarray:
    """``dequantize(quantize(x))``: the values a quantized model will see."""
    return dequantize(quantize(x, qp, narrow=narrow), qp)
