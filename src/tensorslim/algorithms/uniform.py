"""Uniform grids for entropy-coded weights: one step per channel (or per tensor), codes left unbounded.

A weight ``w`` becomes ``q * step`` with an integer code ``q`` (clipped to ``[-qmax, qmax]``, 127 for int8).
Nothing bounds the codes to a few levels: the grid is as fine as the target distortion asks, and the codes'
distribution (peaked at 0, tails rare) is what an entropy coder makes cheap (``.tslim`` codes int8 codes at
about their entropy). At high rate a uniform grid followed by an entropy coder is within ~0.25 bit per weight
of the rate-distortion bound, with no per-block scales to store.

* :func:`grid_steps`: the step per channel for a target weight SQNR: the noise of rounding on a step ``d``
  is ``d**2 / 12``, so ``d = rms * sqrt(12) * 10**(-sqnr_db / 20)``;
* :func:`usage_steps`: one step per row of a lookup table (Gather) from how often each row is read: reverse
  water-filling, a row read ``n`` times gets ``10 log10(n)`` dB more (its noise reaches the output ``n`` times),
  rows never read the base target; the steps lie on a grid of 1/8 octave so that the step vector costs ~1 byte
  a row once packed;
* :func:`round_to_grid`: plain rounding;
* :func:`gptq_grid`: rounding with GPTQ error compensation (the error of each input column spread over the
  columns not yet rounded, weighted by the inverse Hessian of the layer's inputs), onto the same fixed grid,
  the columns of most input energy first ("act order": the grid is fixed, so the order costs nothing).
"""

from __future__ import annotations

import numpy as np

from tensorslim.algorithms.gptq import compensated_rounding, damped_hessian, upper_inverse_factor

__all__ = ["gptq_grid", "grid_steps", "round_to_grid", "usage_steps"]


def grid_steps(rows: np.ndarray, sqnr_db: float, per_channel: bool = True, qmax: int = 127) -> np.ndarray:
    """The step of each row of ``rows`` ``[channels, K]`` for rounding noise ``sqnr_db`` below the signal.

    ``per_channel``: each row's own RMS; else the tensor's RMS for every row. A step is never below
    ``max|w| / qmax`` (no value is clipped). All-zero rows get step 1.
    """
    w = np.asarray(rows, np.float64)
    if per_channel:
        rms = np.sqrt(np.mean(w * w, axis=1))
        amax = np.abs(w).max(axis=1) if w.size else np.zeros(w.shape[0])
    else:
        rms = np.full(w.shape[0], float(np.sqrt(np.mean(w * w))) if w.size else 0.0)
        amax = np.full(w.shape[0], float(np.abs(w).max()) if w.size else 0.0)
    step = np.maximum(rms * np.sqrt(12.0) * 10.0 ** (-float(sqnr_db) / 20.0), amax / qmax)
    return np.where(step > 0, step, 1.0).astype(np.float32)


_STEP_GRID = 8  # usage steps are powers of 2 ** (1 / _STEP_GRID)


def usage_steps(
    rows: np.ndarray, reads: np.ndarray, sqnr_db: float, usage_db: float, qmax: int = 127, max_db: float = 60.0
) -> np.ndarray:
    """The step of each row of a table ``rows`` ``[R, K]`` read ``reads[r]`` times on calibration data.

    A row never read gets ``sqnr_db``; a row read ``n`` >= 1 times ``sqnr_db + usage_db + 10 log10(n)`` (at most
    ``max_db``): for a fixed rate the output noise ``sum(n_r * D_r)`` is least with ``D_r`` proportional to
    ``1 / n_r``; ``usage_db`` is the margin a read row gets over an unread one (the calibration set only samples
    the rows a real input reads). Each step is the nearest power of ``2 ** (1/8)`` (the next one up where the
    nearest would clip ``max|w|`` past ``qmax`` steps). All-zero rows get step 1.
    """
    w = np.asarray(rows, np.float64)
    n = np.asarray(reads, np.float64)
    if n.shape != (w.shape[0],):
        raise ValueError(f"reads: one count per row ({w.shape[0]}) expected, got shape {n.shape}")
    target = np.where(n > 0, float(sqnr_db) + float(usage_db) + 10.0 * np.log10(np.maximum(n, 1.0)), float(sqnr_db))
    target = np.minimum(target, max_db)
    rms = np.sqrt(np.mean(w * w, axis=1)) if w.size else np.zeros(w.shape[0])
    amax = np.abs(w).max(axis=1) if w.size else np.zeros(w.shape[0])
    floor = amax / qmax
    with np.errstate(divide="ignore"):
        near = np.exp2(np.rint(np.log2(rms * np.sqrt(12.0) * 10.0 ** (-target / 20.0)) * _STEP_GRID) / _STEP_GRID)
        up = np.exp2(np.ceil(np.log2(floor) * _STEP_GRID) / _STEP_GRID)
    step = np.where(near >= floor, near, up)
    return np.where((amax > 0) & np.isfinite(step), step, 1.0).astype(np.float32)


def _round(x: np.ndarray, deadzone: float) -> np.ndarray:
    """Nearest integer, or with ``deadzone`` > 0 the magnitude rounded up only past ``0.5 + deadzone``."""
    if deadzone == 0.0:
        return np.rint(x)
    return np.sign(x) * np.floor(np.abs(x) + (0.5 - deadzone))


def round_to_grid(rows: np.ndarray, step: np.ndarray, qmax: int = 127, deadzone: float = 0.0) -> np.ndarray:
    """int8 codes of ``rows`` ``[channels, K]`` on the grid ``step`` ``[channels]`` (nearest, clipped; see
    :func:`gptq_grid` for ``deadzone``)."""
    s = np.asarray(step, np.float64)[:, None]
    return np.clip(_round(np.asarray(rows, np.float64) / s, deadzone), -qmax, qmax).astype(np.int8)


def gptq_grid(
    rows: np.ndarray,
    hessian: np.ndarray,
    step: np.ndarray,
    *,
    qmax: int = 127,
    damp: float = 0.01,
    lazy: int = 128,
    deadzone: float = 0.0,
) -> np.ndarray:
    """int8 codes of ``rows`` ``[channels, K]`` on the grid ``step``, rounded with GPTQ error compensation.

    Args:
        rows: weight rows (one per output channel), length ``K`` (the layer's inputs).
        hessian: ``X^T X`` of the layer's inputs, ``[K, K]``.
        step: one step per row.
        qmax: codes are clipped to ``[-qmax, qmax]``.
        damp: fraction of the mean diagonal added to ``H`` for numerical stability.
        lazy: columns updated together.
        deadzone: rounding toward zero: a magnitude ``x`` (in steps) rounds up only past ``floor(x) + 0.5 +
            deadzone`` (0: nearest). Smaller codes are cheaper to entropy code (the codes' distribution is peaked
            at 0); the extra error is compensated like any rounding error.

    Raises:
        ValueError: shapes that do not match.
    """
    n, k = rows.shape
    if hessian.shape != (k, k):
        raise ValueError(f"Hessian shape {hessian.shape} does not match K={k}")
    if np.shape(step) != (n,):
        raise ValueError(f"step: one value per row ({n}) expected, got shape {np.shape(step)}")
    H = damped_hessian(hessian, damp)
    perm = np.argsort(-np.diag(H), kind="stable")  # act order: the columns of most input energy first
    W = np.array(rows, dtype=np.float64)[:, perm]
    s = np.asarray(step, np.float64)
    codes = np.zeros((n, k), np.int8)

    def dequantize(col: int, W1: np.ndarray, i: int) -> np.ndarray:
        q = np.clip(_round(W1[:, i] / s, deadzone), -qmax, qmax)
        codes[:, col] = q.astype(np.int8)
        return q * s

    compensated_rounding(W, upper_inverse_factor(H[np.ix_(perm, perm)]), dequantize, lazy=lazy)
    out = np.empty_like(codes)
    out[:, perm] = codes
    return out
