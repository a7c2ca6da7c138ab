"""Entropy coding of weight streams: reversible transforms, then the smallest of several coders.

Transforms turn a tensor's structure into redundancy a byte-oriented coder can see:

* :func:`byte_planes` splits ``n`` items of ``w`` bytes into ``w`` planes (all first bytes, then all second
  bytes...): the exponent bytes of floats become a low-entropy plane of their own;
* :func:`pack_symbols` packs small integers (cluster indices, int4 codes, mask bits) ``8 // bits`` to a
  byte, so that a byte-level coder models pairs (or quadruples) of symbols.

Coders (:data:`CODECS`): ``zstd`` (Huffman-coded literals plus LZ matches) and ``lzma`` (range coder with
context modelling), and ``raw``. :func:`encode` tries the candidates and keeps the smallest, so every stream
is stored by whichever coder measured best on it. :func:`decode` never produces more than the size the
caller expects (a decompression bomb stops at that size and is reported).
"""

from __future__ import annotations

import lzma
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CODECS",
    "DecodeError",
    "byte_planes",
    "decode",
    "encode",
    "pack_symbols",
    "unbyte_planes",
    "unpack_symbols",
]

CODECS: tuple[str, ...] = ("raw", "zstd", "lzma")


class DecodeError(ValueError):
    """A stream does not decode to the size it declares (corrupt, truncated or hostile input)."""


def byte_planes(data: bytes, itemsize: int) -> bytes:
    """Reorder ``data`` (items of ``itemsize`` bytes) into ``itemsize`` byte planes."""
    if itemsize <= 1 or not data:
        return bytes(data)
    a = np.frombuffer(data, np.uint8).reshape(-1, itemsize)
    return a.T.tobytes()


def unbyte_planes(data: bytes, itemsize: int) -> bytes:
    """Inverse of :func:`byte_planes`."""
    if itemsize <= 1 or not data:
        return bytes(data)
    a = np.frombuffer(data, np.uint8).reshape(itemsize, -1)
    return a.T.tobytes()


def pack_symbols(symbols: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers below ``2**bits`` (``bits`` in 1, 2, 4, 8), little end first within a byte."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits: must be 1, 2, 4 or 8, got {bits}")
    s = np.asarray(symbols, np.uint8).reshape(-1)
    if bits == 8:
        return s.tobytes()
    per = 8 // bits
    pad = (-s.size) % per
    if pad:
        s = np.concatenate([s, np.zeros(pad, np.uint8)])
    wide = s.reshape(-1, per).astype(np.uint16)
    shifts = (np.arange(per, dtype=np.uint16) * bits)[None, :]
    return np.bitwise_or.reduce(wide << shifts, axis=1).astype(np.uint8).tobytes()


def unpack_symbols(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_symbols`: ``count`` uint8 symbols."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits: must be 1, 2, 4 or 8, got {bits}")
    b = np.frombuffer(data, np.uint8)
    out: np.ndarray
    if bits == 8:
        out = b
    else:
        per = 8 // bits
        shifts = (np.arange(per, dtype=np.uint8) * bits)[None, :]
        out = ((b[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)
    if out.size < count:
        raise DecodeError(f"symbol stream holds {out.size} symbols, {count} declared")
    return np.ascontiguousarray(out[:count])


def _zstd_compress(data: bytes, level: int) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def _zstd_decompress(payload: bytes | memoryview, size: int) -> bytes:
    import zstandard

    try:  # one-shot into a buffer of the declared size: a stream that holds more fails, it never grows
        return bytes(zstandard.ZstdDecompressor().decompress(payload, max_output_size=size))
    except zstandard.ZstdError as e:
        raise DecodeError(f"zstd stream is corrupt ({e})") from e


def _zstd_frame_size(payload: bytes | memoryview) -> int:
    import zstandard

    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as e:
        raise DecodeError(f"zstd stream is corrupt ({e})") from e
    return int(params.content_size)


def encode(data: bytes, *, codecs: Sequence[str] = ("zstd", "lzma"), zstd_level: int = 19) -> tuple[str, bytes]:
    """Compress ``data`` with each candidate coder and return ``(codec, payload)`` of the smallest.

    ``raw`` always competes, so a stream never grows by more than nothing.
    """
    best = ("raw", bytes(data))
    for c in codecs:
        if c == "zstd":
            payload = _zstd_compress(data, zstd_level)
        elif c == "lzma":
            payload = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=6)
        elif c == "raw":
            continue
        else:
            raise ValueError(f"codecs: unknown codec {c!r}; allowed: {', '.join(CODECS)}")
        if len(payload) < len(best[1]):
            best = (c, payload)
    return best


def decode(codec: str, payload: bytes | memoryview, size: int) -> bytes:
    """Decompress ``payload`` into exactly ``size`` bytes, never allocating more than that.

    Raises:
        DecodeError: unknown codec, corrupt stream, or a stream that does not hold ``size`` bytes.
    """
    if codec == "raw":
        out = bytes(payload)
    elif codec == "zstd":
        declared = _zstd_frame_size(payload)
        if declared != size:
            raise DecodeError(f"zstd frame declares {declared} bytes, {size} expected")
        out = _zstd_decompress(payload, size)
    elif codec == "lzma":
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out = dec.decompress(payload, max_length=size)
        except lzma.LZMAError as e:
            raise DecodeError(f"lzma stream is corrupt ({e})") from e
        if not dec.eof and size > 0 and len(out) == size and dec.decompress(b"", max_length=1):
            raise DecodeError(f"lzma stream holds more than the {size} bytes declared")
    else:
        raise DecodeError(f"unknown codec {codec!r}; this file needs a newer tensorslim")
    if len(out) != size:
        raise DecodeError(f"stream decodes to {len(out)} bytes, {size} declared")
    return out
