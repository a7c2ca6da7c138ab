"""GPTQ: block-wise weight quantization that minimizes the layer's output error on calibration data.

For a linear layer with input rows ``X`` and weight rows ``w`` (one output channel each, length ``K``),
the output error of quantizing ``w`` to ``q`` is ``(w - q) H (w - q)^T`` with ``H = X^T X``. GPTQ
quantizes the input columns one at a time and spreads each column's rounding error over the columns not
yet quantized, weighted by the inverse Hessian (Frantar et al., 2022). Block parameters (scale, zero point)
are chosen when the first column of a block is reached, from the already error-compensated values.
Only ``H`` is needed from the data: ``K x K`` floats, whatever the number of samples.
"""

from __future__ import annotations

import numpy as np

from tensorslim.algorithms.blockwise import LADDER_MAX, BlockQuantized, ladder_block_scales
from tensorslim.algorithms.quantize import QuantScheme

__all__ = ["gptq_blocks"]


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
    H = np.array(hessian, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(k)] += damp * float(np.mean(np.diag(H)))
    try:
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper triangular
    except np.linalg.LinAlgError:
        H[np.diag_indices(k)] += 0.1 * float(np.mean(np.diag(H)))
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T
    nb = k // block
    codes = np.zeros((rows, k), np.uint8)
    scales = np.zeros((rows, nb), np.float64)
    zps = np.zeros((rows, nb), np.float64)
    lazy = max(block, (lazy // block) * block)
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        scale = zp = np.zeros(rows)
        for i in range(i2 - i1):
            col = i1 + i
            if col % block == 0:
                if step is None:
                    scale, zp = _group_params(W1[:, i : i + block], bits, symmetric)
                else:
                    scale, _ = ladder_block_scales(W1[:, i : i + block], step, bits=bits, max_multiplier=max_multiplier)
                    zp = np.full(rows, 2 ** (bits - 1), np.float64)
                scales[:, col // block], zps[:, col // block] = scale, zp
            x = W1[:, i]
            q = np.clip(np.round(x / scale) + zp, qmin, qmax)
            codes[:, col] = q.astype(np.uint8)
            err = (x - (q - zp) * scale) / Hinv1[i, i]
            W1[:, i:] -= np.outer(err, Hinv1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return BlockQuantized(
        codes=codes,
        scales=scales.astype(np.float32),
        zero_points=zps.astype(np.uint8),
        bits=bits,
        block=block,
        k=k,
    )
