"""Block-wise quantization of 2-D weights: one scale (and zero point) per block of consecutive values.

A weight ``[rows, K]`` is cut along ``K`` into blocks of ``block`` values (the last block zero-padded);
each block gets its own parameters, chosen with the per-channel machinery of
:mod:`tensorslim.algorithms.quantize` applied to the ``[rows * blocks, block]`` view. Codes can be packed
two per byte for 4-bit storage (low nibble first), the layout ONNX Runtime's ``MatMulNBits`` and
``GatherBlockQuantized`` read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorslim.algorithms.quantize import QuantScheme, RangeMethod, choose_qparams, integer_range

__all__ = ["BlockQuantized", "dequantize_blocks", "pack_nibbles", "quantize_blocks", "unpack_nibbles"]


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
