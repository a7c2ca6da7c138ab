"""Fidelity in one unit everywhere: SQNR in dB, cosine similarity, max abs error, top-1 agreement.

These helpers are shared by the tests, ``inspect`` and ``evaluate`` so that a number means the same thing
wherever it is printed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["cosine_rows", "max_abs_error", "sqnr_db", "top1_agreement"]


def sqnr_db(reference: npt.ArrayLike, approx: npt.ArrayLike) -> float:
    """Signal-to-quantization-noise ratio in dB, ``10 log10(|ref|^2 / |ref - approx|^2)``.

    Returns ``inf`` when the two are identical and ``-inf`` for a zero reference with non-zero error.
    """
    ref = np.asarray(reference, dtype=np.float64)
    err = ref - np.asarray(approx, dtype=np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def cosine_rows(reference: npt.ArrayLike, approx: npt.ArrayLike) -> np.ndarray:
    """Cosine similarity of each sample (first axis) after flattening the rest.

    Two all-zero rows count as identical (1.0); one zero row against a non-zero one counts as 0.0.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(approx, dtype=np.float64)
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    b = b.reshape(b.shape[0], -1) if b.ndim > 1 else b.reshape(1, -1)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    denom = np.where((na == 0) | (nb == 0), 1.0, na * nb)
    cos = np.where((na == 0) | (nb == 0), 0.0, dot / denom)
    return np.clip(np.where(both_zero, 1.0, cos), -1.0, 1.0)


def max_abs_error(reference: npt.ArrayLike, approx: npt.ArrayLike) -> float:
    """Largest absolute element-wise difference."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(ref - np.asarray(approx, dtype=np.float64))))


def top1_agreement(reference: npt.ArrayLike, approx: npt.ArrayLike) -> float:
    """Fraction of samples whose arg-max over the last axis is the same in both outputs."""
    a = np.asarray(reference)
    b = np.asarray(approx)
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))
