"""GPTQ: block-wise weight quantization that minimizes the layer's output error on calibration data.

For a linear layer with input rows ``X`` and weight rows ``w`` (one output channel each, length ``K``),
the output error of quantizing ``w`` to ``q`` is ``(w - q) H (w - q)^T`` with ``H = X^T X``. GPTQ
quantizes the input columns one at a time and spreads each column's rounding error over the columns not
yet quantized, weighted by the inverse Hessian (Frantar et al., 2022). Block parameters (scale, zero point)
are chosen when the first column of a block is reached, from the already error-compensated values.
Only ``H`` is needed from the data: ``K x K`` floats, whatever the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tensorslim.algorithms.blockwise import LADDER_MAX, BlockQuantized, ladder_block_scales
from tensorslim.algorithms.quantize import QuantScheme

__all__ = ["compensated_rounding", "damped_hessian", "gptq_blocks", "upper_inverse_factor"]


def damped_hessian(hessian: np.ndarray, damp: float) -> np.ndarray:
    """A float64 copy of ``H`` with dead inputs (zero diagonal) given a unit diagonal and ``damp`` times the mean
    diagonal added, for numerical stability."""
    k = hessian.shape[0]
    H = np.array(hessian, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    H[np.diag_indices(k)] += damp * float(np.mean(np.diag(H)))
    return H


def upper_inverse_factor(H: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of ``H^-1``; where it does not factor, 10 % of the mean diagonal is added first."""
    try:
        return np.linalg.cholesky(np.linalg.inv(H)).T
    except np.linalg.LinAlgError:
        H = H.copy()
        H[np.diag_indices(H.shape[0])] += 0.1 * float(np.mean(np.diag(H)))
        return np.linalg.cholesky(np.linalg.inv(H)).T


def compensated_rounding(
    W: np.ndarray, u: np.ndarray, dequantize: Callable[[int, np.ndarray, int], np.ndarray], *, lazy: int = 128
) -> None:
    """GPTQ's column loop over ``W`` ``[rows, K]`` (float64, updated in place): column ``col`` is rounded by
    ``dequantize(col, W1, i)`` (``W1[:, i]`` is the error-compensated column inside the current lazy block ``W1``;
    it returns the column's dequantized values and keeps the codes), and its error spreads over the columns not
    yet rounded through ``u``, the upper Cholesky factor of the damped inverse Hessian."""
    k = W.shape[1]
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            err = (W1[:, i] - dequantize(i1 + i, W1, i)) / u1[i, i]
            W1[:, i:] -= np.outer(err, u1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ u[i1:i2, i2:]


def _group_params(w: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale and (unsigned) zero point per row of the group ``w`` ``[rows, g]``."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        amax = np.abs(w).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        return scale, np.full(w.shape[0], 2 ** (bits - 1), np.float64)
    lo = np.minimum(w.min(axis=1), 0.0)
    hi = np.maximum(w.max(axis=1), 0.0)
    scale = np.where(hi > lo, (hi - lo) / (2**bits - 1), 1.0)
    zp = np.clip(np.round(-lo / scale), 0, 2**bits - 1)
    return scale, zp


def gptq_blocks(
    w: np.ndarray,
    hessian: np.ndarray,
    *,
    bits: int = 4,
    block: int = 32,
    scheme: QuantScheme | str = QuantScheme.SYMMETRIC,
    damp: float = 0.01,
    lazy: int = 128,
    step: np.ndarray | None = None,
    max_multiplier: int = LADDER_MAX,
) -> BlockQuantized:
    """Quantize ``w`` ``[rows, K]`` block-wise along ``K`` with GPTQ error compensation.

    Args:
        w: weight rows (one per output channel).
        hessian: ``X^T X`` of the layer's inputs, ``[K, K]``.
        bits: 4 or 8.
        block: values per block along ``K`` (``K`` must be a multiple of it).
        scheme: symmetric or asymmetric block parameters.
        damp: fraction of the mean diagonal added to ``H`` for numerical stability.
        lazy: columns updated together (a multiple of ``block``).
        step: one step per row for ladder blocks (see :func:`~tensorslim.algorithms.blockwise.ladder_steps`):
            symmetric block scales restricted to ``m * step`` with an integer ``m`` up to ``max_multiplier``,
            each chosen from the error-compensated block when it is reached.
        max_multiplier: the largest ladder multiplier.

    Raises:
        ValueError: shapes that do not match or ``K`` not a multiple of ``block``.
    """
    rows, k = w.shape
    if hessian.shape != (k, k):
        raise ValueError(f"Hessian shape {hessian.shape} does not match K={k}")
    if k % block:
        raise ValueError(f"K={k} is not a multiple of the block size {block}")
    symmetric = step is not None or QuantScheme(scheme) is QuantScheme.SYMMETRIC
    if step is not None and np.shape(step) != (rows,):
        raise ValueError(f"step: one value per row ({rows}) expected, got shape {np.shape(step)}")
    qmin, qmax = (1, 2**bits - 1) if symmetric else (0, 2**bits - 1)
    W = np.array(w, dtype=np.float64)
    W[:, np.diag(hessian) == 0] = 0.0
    Hinv = upper_inverse_factor(damped_hessian(hessian, damp))
    nb = k // block
    codes = np.zeros((rows, k), np.uint8)
    scales = np.zeros((rows, nb), np.float64)
    zps = np.zeros((rows, nb), np.float64)
    current = {"scale": np.zeros(rows), "zp": np.zeros(rows)}  # the open block's parameters, as computed

    def dequantize(col: int, W1: np.ndarray, i: int) -> np.ndarray:
        if col % block == 0:  # the block's parameters, from its error-compensated values
            if step is None:
                scale, zp = _group_params(W1[:, i : i + block], bits, symmetric)
            else:
                scale, _ = ladder_block_scales(W1[:, i : i + block], step, bits=bits, max_multiplier=max_multiplier)
                zp = np.full(rows, 2 ** (bits - 1), np.float64)
            scales[:, col // block], zps[:, col // block] = scale, zp
            current.update(scale=scale, zp=zp)
        scale, zp = current["scale"], current["zp"]
        q = np.clip(np.round(W1[:, i] / scale) + zp, qmin, qmax)
        codes[:, col] = q.astype(np.uint8)
        return (q - zp) * scale

    compensated_rounding(W, Hinv, dequantize, lazy=max(block, (lazy // block) * block))
    return BlockQuantized(
        codes=codes,
        scales=scales.astype(np.float32),
        zero_points=zps.astype(np.uint8),
        bits=bits,
        block=block,
        k=k,
    )
