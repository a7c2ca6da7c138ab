"""Tensor encodings of the ``.tslim`` format: each tensor stored as compactly as its structure allows.

Every encoding is lossless (the decoded bytes are the tensor's bytes) and picks its layout from the data:

* ``symbols``: 1-byte integer tensors (cluster indices, int8/int4 codes, booleans). Signed values are
  zig-zag mapped (0, -1, 1, -2...), packed at the fewest bits that hold the largest symbol (1, 2, 4 or 8),
  then entropy coded: a 16-centroid index costs its entropy, not a byte.
* ``palette``: a float tensor with at most 256 distinct values (a clustered or fake-quantized weight that
  was expanded) becomes a palette plus ``symbols``.
* ``sparse``: a float tensor with many exact zeros becomes a 1-bit mask plus the non-zero values.
* ``planes``: any other tensor, its bytes split into byte planes (the float exponents form a plane of
  their own), then entropy coded.

Each stream is compressed by the coder that measured smallest on it (:func:`tensorslim.algorithms.entropy.encode`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.algorithms.entropy import (
    DecodeError,
    byte_planes,
    decode,
    encode,
    pack_symbols,
    unbyte_planes,
    unpack_symbols,
)

__all__ = ["EncodedTensor", "decode_tensor", "encode_tensor", "iter_tensors", "strip_tensor"]

_LZMA_MAX = 1 << 20  # lzma competes on streams up to this size (it is slow on large ones)


@dataclass
class EncodedTensor:
    """One tensor's manifest entry and its compressed streams (``(role, codec, raw size, payload)``)."""

    entry: dict[str, Any]
    streams: list[tuple[str, str, int, bytes]]


def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model that holds data, in a fixed order (graph by graph, initializers, attributes)."""

    def walk(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from a.tensors
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        yield from walk(sub)

    yield from walk(model.graph)


def strip_tensor(t: onnx.TensorProto) -> None:
    """Remove the data of ``t``, keep its name, type and shape."""
    for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(f)
    t.ClearField("data_location")
    t.ClearField("external_data")


def _stream(role: str, data: bytes, level: int, codecs: tuple[str, ...]) -> tuple[str, str, int, bytes]:
    cands = codecs if len(data) <= _LZMA_MAX else tuple(c for c in codecs if c != "lzma")
    codec, payload = encode(data, codecs=cands, zstd_level=level)
    return role, codec, len(data), payload


def _zigzag(a: np.ndarray) -> np.ndarray:
    v = a.astype(np.int16)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint8)


def _unzigzag(s: np.ndarray) -> np.ndarray:
    v = s.astype(np.int16)
    return np.where(v % 2 == 0, v // 2, -(v + 1) // 2).astype(np.int8)


def _symbols(role: str, sym: np.ndarray, level: int, codecs: tuple[str, ...]) -> tuple[dict[str, Any], list]:
    top = int(sym.max()) if sym.size else 0
    bits = next(b for b in (1, 2, 4, 8) if top < (1 << b))
    s = _stream(role, pack_symbols(sym, bits), level, codecs)
    return {f"{role}_bits": bits}, [s]


def encode_tensor(t: onnx.TensorProto, *, level: int = 9, codecs: tuple[str, ...] = ("zstd", "lzma")) -> EncodedTensor:
    """Encode the data of ``t`` (which is not modified)."""
    arr = numpy_helper.to_array(t)
    entry: dict[str, Any] = {"name": t.name, "dtype": int(t.data_type), "dims": [int(d) for d in t.dims]}
    flat = np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype.itemsize == 1 and arr.dtype.kind in "iub":
        sym = _zigzag(flat.view(np.int8)) if arr.dtype.kind == "i" else flat.view(np.uint8)
        extra, streams = _symbols("symbols", sym, level, codecs)
        entry.update(encoding="symbols", signed=arr.dtype.kind == "i", **extra)
        return EncodedTensor(entry, streams)
    if arr.dtype.kind == "f" and flat.size >= 64:
        sample = flat[:: max(1, flat.size // 4096)]
        if np.unique(sample.view(f"u{arr.dtype.itemsize}")).size <= 256:
            pal, inv = np.unique(flat.view(f"u{arr.dtype.itemsize}"), return_inverse=True)
            if pal.size <= 256:
                extra, streams = _symbols("indices", inv.astype(np.uint8), level, codecs)
                streams.append(_stream("palette", pal.tobytes(), level, codecs))
                entry.update(encoding="palette", palette_size=int(pal.size), **extra)
                return EncodedTensor(entry, streams)
        nz = flat != 0
        if flat.size >= 256 and float(nz.mean()) <= 0.75:
            vals = flat[nz]
            streams = [
                _stream("mask", pack_symbols(nz.view(np.uint8), 1), level, codecs),
                _stream("values", byte_planes(vals.tobytes(), arr.dtype.itemsize), level, codecs),
            ]
            entry.update(encoding="sparse", nonzero=int(vals.size))
            return EncodedTensor(entry, streams)
    entry.update(encoding="planes", itemsize=int(arr.dtype.itemsize))
    return EncodedTensor(entry, [_stream("data", byte_planes(flat.tobytes(), arr.dtype.itemsize), level, codecs)])


def _dtype(entry: dict[str, Any]) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(entry["dtype"])))
    except (KeyError, ValueError, TypeError) as e:
        raise DecodeError(f"tensor {entry.get('name')!r}: unknown data type {entry.get('dtype')!r}") from e


def decode_tensor(entry: dict[str, Any], read: Callable[[str], bytes], count: int) -> np.ndarray:
    """Decode one tensor; ``read(role)`` returns the decompressed bytes of one of its streams."""
    dt = _dtype(entry)
    enc = entry.get("encoding")
    if enc == "symbols":
        sym = unpack_symbols(read("symbols"), int(entry["symbols_bits"]), count)
        out = _unzigzag(sym) if entry.get("signed") else sym
        return np.ascontiguousarray(out).view(dt)
    if enc == "palette":
        pal = np.frombuffer(read("palette"), f"u{dt.itemsize}")
        idx = unpack_symbols(read("indices"), int(entry["indices_bits"]), count)
        if idx.size and int(idx.max()) >= pal.size:
            raise DecodeError(f"tensor {entry['name']!r}: palette index out of range")
        return pal[idx].view(dt)
    if enc == "sparse":
        mask = unpack_symbols(read("mask"), 1, count).astype(bool)
        vals = np.frombuffer(unbyte_planes(read("values"), dt.itemsize), dt)
        if int(mask.sum()) != vals.size:
            raise DecodeError(f"tensor {entry['name']!r}: sparse mask and values disagree")
        out = np.zeros(count, dt)
        out[mask] = vals
        return out
    if enc == "planes":
        return np.frombuffer(unbyte_planes(read("data"), dt.itemsize), dt).copy()
    raise DecodeError(f"tensor {entry.get('name')!r}: unknown encoding {enc!r}")


def stream_size(entry: dict[str, Any], role: str, count: int) -> int:
    """The decompressed size a stream of ``entry`` must have, from the tensor's element count."""
    dt = _dtype(entry)
    enc = entry.get("encoding")
    if role in ("symbols", "indices"):
        bits = int(entry.get(f"{role}_bits", 0))
        if bits not in (1, 2, 4, 8):
            raise DecodeError(f"tensor {entry.get('name')!r}: bad symbol width {bits}")
        return -(-count * bits // 8)
    if role == "mask":
        return -(-count // 8)
    if role == "values":
        nz = int(entry.get("nonzero", -1))
        if not 0 <= nz <= count:
            raise DecodeError(f"tensor {entry.get('name')!r}: bad non-zero count")
        return nz * dt.itemsize
    if role == "palette":
        n = int(entry.get("palette_size", -1))
        if not 0 < n <= 256:
            raise DecodeError(f"tensor {entry.get('name')!r}: bad palette size")
        return n * dt.itemsize
    if role == "data" and enc == "planes":
        return count * dt.itemsize
    raise DecodeError(f"tensor {entry.get('name')!r}: unexpected stream {role!r}")


def fill_tensor(t: onnx.TensorProto, array: np.ndarray) -> None:
    """Put ``array`` back into the stripped tensor ``t`` as raw data."""
    t.raw_data = np.ascontiguousarray(array).tobytes()


def tensor_decoder(entry: dict[str, Any], decode_stream: Callable[[dict[str, Any]], bytes]) -> Callable[[str], bytes]:
    """A ``read(role)`` for :func:`decode_tensor` over the entry's stream list."""
    by_role = {s.get("role"): s for s in entry.get("streams", [])}

    def read(role: str) -> bytes:
        s = by_role.get(role)
        if s is None:
            raise DecodeError(f"tensor {entry.get('name')!r}: stream {role!r} missing")
        return decode_stream(s)

    return read


_ = decode  # re-exported for the container module
