"""Block-wise quantization of 2-D weights: one scale (and zero point) per block of consecutive values.

A weight ``[rows, K]`` is cut along ``K`` into blocks of ``block`` values (the last block zero-padded);
each block gets its own parameters, chosen with the per-channel machinery of
:mod:`tensorslim.algorithms.quantize` applied to the ``[rows * blocks, block]`` view. Codes can be packed
two per byte for 4-bit storage (low nibble first), the layout ONNX Runtime's ``MatMulNBits`` and
``GatherBlockQuantized`` read.

*Ladder* blocks (:func:`quantize_blocks_ladder`) restrict every block scale of a row to an integer multiple
``m`` (1 to :data:`LADDER_MAX`) of one step per row. A 4-bit code ``q`` in ``[-7, 7]`` then equals the 8-bit
value ``q * m`` on the row's per-channel int8 grid (``|q * m| <= 126``): the weight is stored as 4-bit codes
plus one small integer per block, and runs exactly on 8-bit integer kernels with per-channel scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorslim.algorithms.quantize import QuantScheme, RangeMethod, choose_qparams, integer_range

__all__ = [
    "LADDER_MAX",
    "BlockQuantized",
    "dequantize_blocks",
    "ladder_block_scales",
    "ladder_steps",
    "ladder_values",
    "pack_nibbles",
    "quantize_blocks",
    "quantize_blocks_ladder",
    "unpack_nibbles",
]

LADDER_MAX = 18  # the largest block multiplier: 7 * 18 = 126 stays inside int8's symmetric [-127, 127]


@dataclass(frozen=True)
class BlockQuantized:
    """Codes and parameters of a block-quantized ``[rows, K]`` weight.

    Attributes:
        codes: unsigned codes ``[rows, blocks * block]`` in ``[0, 2^bits - 1]`` (uint8), zero point included.
        scales: float32 ``[rows, blocks]``.
        zero_points: unsigned zero points ``[rows, blocks]`` (uint8); ``2^(bits-1)`` when symmetric.
        bits: code width (4 or 8).
        block: values per block.
        k: the unpadded length of the blocked axis.
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    bits: int
    block: int
    k: int

    @property
    def blocks(self) -> int:
        """Blocks per row."""
        return int(self.scales.shape[1])


def quantize_blocks(
    w: np.ndarray,
    *,
    bits: int = 4,
    block: int = 32,
    scheme: QuantScheme | str = QuantScheme.SYMMETRIC,
    method: RangeMethod | str = RangeMethod.MINMAX,
) -> BlockQuantized:
    """Quantize each block of ``block`` consecutive values along the last axis of the 2-D ``w``.

    Raises:
        ValueError: ``w`` is not 2-D, ``bits`` is not 4 or 8, or ``block`` is not a power of two >= 16.
    """
    if w.ndim != 2:
        raise ValueError(f"block-wise quantization takes a 2-D weight, got shape {list(w.shape)}")
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if block < 16 or block & (block - 1):
        raise ValueError(f"block size must be a power of two >= 16, got {block}")
    rows, k = w.shape
    nb = -(-k // block)
    padded = np.zeros((rows, nb * block), np.float32)
    padded[:, :k] = w
    view = padded.reshape(rows * nb, block)
    scheme = QuantScheme(scheme)
    qp = choose_qparams(view, bits=bits, scheme=scheme, axis=0, method=method, grid=20)
    scale = qp.scale.reshape(rows * nb, 1)
    if scheme is QuantScheme.SYMMETRIC:
        lo, hi = integer_range(bits, scheme, narrow=True)
        offset = 2 ** (bits - 1)
        signed = np.clip(np.round(view / scale), lo, hi)
        codes = (signed + offset).astype(np.uint8)
        zps = np.full((rows, nb), offset, np.uint8)
    else:
        zp = qp.zero_point.astype(np.float32).reshape(rows * nb, 1)
        codes = np.clip(np.round(view / scale) + zp, 0, 2**bits - 1).astype(np.uint8)
        zps = qp.zero_point.astype(np.uint8).reshape(rows, nb)
    return BlockQuantized(
        codes=codes.reshape(rows, nb * block),
        scales=qp.scale.astype(np.float32).reshape(rows, nb),
        zero_points=zps,
        bits=bits,
        block=block,
        k=k,
    )


def dequantize_blocks(bq: BlockQuantized) -> np.ndarray:
    """The float ``[rows, K]`` values the codes represent (padding dropped)."""
    rows = bq.codes.shape[0]
    codes = bq.codes.reshape(rows, bq.blocks, bq.block).astype(np.float32)
    vals = (codes - bq.zero_points[..., None].astype(np.float32)) * bq.scales[..., None]
    return vals.reshape(rows, -1)[:, : bq.k].astype(np.float32)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes two per byte along the last axis (even index in the low nibble)."""
    c = codes.astype(np.uint8)
    if c.shape[-1] % 2:
        c = np.concatenate([c, np.zeros((*c.shape[:-1], 1), np.uint8)], axis=-1)
    return (c[..., 0::2] & 0x0F) | ((c[..., 1::2] & 0x0F) << 4)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`, keeping the first ``n`` codes of the last axis."""
    out = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out[..., :n]


def ladder_steps(
    w: np.ndarray,
    *,
    bits: int = 4,
    block: int = 32,
    method: RangeMethod | str = RangeMethod.MSE,
    max_multiplier: int = LADDER_MAX,
) -> np.ndarray:
    """One step per row of ``w`` ``[rows, K]``: the row's largest symmetric block scale over ``max_multiplier``.

    The block scales are chosen by ``method`` (min/max or MSE-optimal clipping); the block with the widest
    range then gets the multiplier ``max_multiplier`` and every other block a multiplier at most as large.
    """
    bq = quantize_blocks(w, bits=bits, block=block, scheme=QuantScheme.SYMMETRIC, method=method)
    top = bq.scales.max(axis=1).astype(np.float64)
    return np.where(top > 0, top / max_multiplier, 1.0).astype(np.float32)


def ladder_block_scales(
    blocks: np.ndarray, step: np.ndarray, *, bits: int = 4, max_multiplier: int = LADDER_MAX
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``m * step`` and multiplier ``m`` for each row of ``blocks`` ``[n, block]`` (``step``: ``[n]``).

    ``m`` is the integer in ``[1, max_multiplier]`` whose round-to-nearest codes give the smallest squared
    error, searched among the four values at and below the one that covers the block's full range.
    """
    qmax = 2 ** (bits - 1) - 1
    x = np.asarray(blocks, np.float64)
    st = np.asarray(step, np.float64).reshape(-1, 1)
    amax = np.abs(x).max(axis=1, keepdims=True)
    top = np.clip(np.ceil(amax / (qmax * st)), 1, max_multiplier)
    best_m = top.copy()
    best_err = np.full(top.shape, np.inf)
    for d in range(4):
        m = np.clip(top - d, 1, max_multiplier)
        scale = m * st
        err = ((np.clip(np.round(x / scale), -qmax, qmax) * scale - x) ** 2).sum(axis=1, keepdims=True)
        better = err < best_err
        best_m = np.where(better, m, best_m)
        best_err = np.where(better, err, best_err)
    m = best_m.reshape(-1)
    return m * st.reshape(-1), m.astype(np.int64)


def quantize_blocks_ladder(
    w: np.ndarray, step: np.ndarray, *, bits: int = 4, block: int = 32, max_multiplier: int = LADDER_MAX
) -> BlockQuantized:
    """Round-to-nearest symmetric block codes of ``w`` ``[rows, K]`` with ladder scales (``m * step[row]``).

    Raises:
        ValueError: ``w`` is not 2-D, ``K`` is not a multiple of ``block``, or ``step`` has the wrong length.
    """
    if w.ndim != 2 or w.shape[1] % block:
        raise ValueError(f"ladder blocks need a 2-D weight whose K is a multiple of {block}, got {list(w.shape)}")
    rows, k = w.shape
    if np.shape(step) != (rows,):
        raise ValueError(f"step: one value per row ({rows}) expected, got shape {np.shape(step)}")
    nb = k // block
    view = np.asarray(w, np.float64).reshape(rows * nb, block)
    scale, _ = ladder_block_scales(view, np.repeat(step, nb), bits=bits, max_multiplier=max_multiplier)
    qmax = 2 ** (bits - 1) - 1
    offset = 2 ** (bits - 1)
    codes = (np.clip(np.round(view / scale[:, None]), -qmax, qmax) + offset).astype(np.uint8)
    return BlockQuantized(
        codes=codes.reshape(rows, k),
        scales=scale.astype(np.float32).reshape(rows, nb),
        zero_points=np.full((rows, nb), offset, np.uint8),
        bits=bits,
        block=block,
        k=k,
    )


def ladder_values(bq: BlockQuantized, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int8 values ``q * m`` ``[rows, K]`` of ladder blocks and their multipliers ``m`` ``[rows, blocks]``.

    Raises:
        ValueError: a block scale is not an integer multiple of its row's step, or a value leaves int8.
    """
    st = np.asarray(step, np.float64).reshape(-1, 1)
    ratio = bq.scales.astype(np.float64) / st
    m = np.rint(ratio)
    if np.any(np.abs(ratio - m) > 1e-3) or np.any(m < 1) or np.any(m > 255):
        raise ValueError("block scales are not integer multiples of the row steps (not ladder blocks)")
    signed = bq.codes.reshape(bq.codes.shape[0], bq.blocks, bq.block).astype(np.int64) - bq.zero_points[..., None]
    values = (signed * m[..., None].astype(np.int64)).reshape(bq.codes.shape[0], -1)[:, : bq.k]
    if values.size and (values.min() < -128 or values.max() > 127):
        raise ValueError("ladder values leave the int8 range")
    return values.astype(np.int8), m.astype(np.uint8)
