"""Block-Hadamard rotations that make activations friendly to per-tensor int8 quantization.

For a linear layer ``Y = X W`` and an orthogonal ``R``, ``Y = (X R)(R^T W)``. With ``R`` block-diagonal made
of normalized Hadamard blocks, an outlier in one input channel is spread evenly over the ``b`` channels of
its block, so the range of ``X R`` (which sets the step of run-time per-tensor quantization) shrinks while
the product is unchanged. The rotation of ``W`` is done offline; the rotation of ``X`` is one small
batched matrix product (``b`` multiply-adds per input element) at run time. No data is needed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hadamard", "rotate_input_channels"]


def hadamard(n: int) -> np.ndarray:
    """The ``n x n`` Sylvester Hadamard matrix scaled to be orthonormal (symmetric, its own inverse).

    Raises:
        ValueError: ``n`` is not a power of two.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = np.ones((1, 1), dtype=np.float64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return (h / np.sqrt(n)).astype(np.float32)


def rotate_input_channels(w: np.ndarray, block: int, axis: int) -> np.ndarray:
    """``R^T W`` along the input-channel ``axis`` of ``w``, with ``R = blockdiag(H_block, ...)``.

    Raises:
        ValueError: the axis length is not a multiple of ``block``.
    """
    k = w.shape[axis]
    if k % block:
        raise ValueError(f"input channels ({k}) are not a multiple of the rotation block {block}")
    h = hadamard(block).astype(np.float64)
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    blocks = moved.reshape(k // block, block, -1)
    rotated = np.einsum("ij,gjn->gin", h.T, blocks).reshape(moved.shape)
    return np.moveaxis(rotated, 0, axis).astype(w.dtype)
