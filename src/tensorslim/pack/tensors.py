"""Tensor encodings of the ``.tslim`` format: each tensor stored as compactly as its structure allows.

Every encoding is lossless (the decoded bytes are the tensor's bytes) and picks its layout from the data:

* ``symbols``: 1-byte integer tensors (cluster indices, int8/int4 codes, booleans). Signed values are
  zig-zag mapped (0, -1, 1, -2...), packed at the fewest bits that hold the largest symbol (1, 2, 4 or 8),
  then entropy coded: a 16-centroid index costs its entropy, not a byte.
* ``palette``: a float tensor with at most 256 distinct values (a clustered or fake-quantized weight that
  was expanded) becomes a palette plus ``symbols``.
* ``sparse``: a float tensor with many exact zeros becomes a 1-bit mask plus the non-zero values
  (``sparse_signed``: zeros of both signs, as pruning by a multiply leaves them, plus one sign bit per zero).
* ``planes``: any other tensor, its bytes split into byte planes (the float exponents form a plane of
  their own), then entropy coded.
* ``bytes``: the tensor's stored bytes as they are (also the only encoding of sub-byte and float8 types:
  int4 codes, packed nibbles), coded as 8-bit symbols or as 4-bit nibbles.

Every tensor is encoded each way that applies and the smallest total wins; each stream competes zstd, lzma
and ``rans`` (a static context model: the context is a row, a column, a position in a block or a byte plane,
whichever measured smallest for that stream). The manifest records the encoding and each stream's codec.

Each stream is compressed by the coder that measured smallest on it (:func:`tensorslim.algorithms.entropy.encode`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.algorithms.entropy import (
    DecodeError,
    byte_planes,
    decode,
    encode,
    pack_symbols,
    unpack_symbols,
)

__all__ = [
    "SUB_BYTE_BITS",
    "EncodedTensor",
    "contexts_for",
    "data_field",
    "decode_tensor",
    "encode_tensor",
    "iter_tensors",
    "raw_size",
    "strip_tensor",
]

# bits per element of the types stored only as their bytes (``bytes`` encoding)
SUB_BYTE_BITS: dict[int, int] = {
    onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
    onnx.TensorProto.FLOAT8E4M3FN: 8, onnx.TensorProto.FLOAT8E4M3FNUZ: 8, onnx.TensorProto.FLOAT8E5M2: 8,
    onnx.TensorProto.FLOAT8E5M2FNUZ: 8, onnx.TensorProto.FLOAT8E8M0: 8,
}  # fmt: skip
_BLOCKS = (16, 32, 64, 128)
_MAX_CTX = 4096
Contexts = tuple[tuple[int, int], ...]


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
    if t.data_location == onnx.TensorProto.EXTERNAL:
        t.ClearField("data_location")
    t.ClearField("external_data")


_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def data_field(t: onnx.TensorProto) -> str | None:
    """The field that holds ``t``'s data when filling it back reproduces ``t`` byte for byte, else ``None``."""
    field = "raw_data" if t.HasField("raw_data") else next((f for f in _FIELDS if len(getattr(t, f))), "raw_data")
    if field != "raw_data" and t.data_type in SUB_BYTE_BITS:
        return None
    arr = np.frombuffer(t.raw_data, np.uint8) if t.data_type in SUB_BYTE_BITS else numpy_helper.to_array(t)
    copy = onnx.TensorProto()
    copy.CopyFrom(t)
    strip_tensor(copy)
    fill_tensor(copy, arr, field)
    return field if copy.SerializeToString() == t.SerializeToString() else None


def contexts_for(dims: list[int], per: int = 1, itemsize: int = 1) -> Contexts:
    """Candidate ``(divisor, contexts)`` models of a stream of ``prod(dims) * per`` symbols laid out row-major.

    ``per`` symbols make one element along the last axis (two nibbles of a byte); ``itemsize`` > 1 adds the byte
    position within an item. Candidates: none, each axis (a row, a column, a channel), and a position in a block
    of 16 to 128 along each axis.
    """
    shape = [int(d) for d in dims] or [1]
    shape[-1] *= per
    if itemsize > 1:
        shape.append(itemsize)
    out = [(1, 1)]
    stride = 1
    for d in reversed(shape):
        if 1 < d <= _MAX_CTX:
            out.append((stride, d))
        out.extend((stride, b) for b in _BLOCKS if d > b and d % b == 0)
        stride *= d
    return tuple(dict.fromkeys(out))


def _stream(
    role: str, data: bytes, level: int, codecs: tuple[str, ...], bits: int = 8, contexts: Contexts = ((1, 1),)
) -> tuple[str, str, int, bytes]:
    codec, payload = encode(data, codecs=codecs, zstd_level=level, symbol_bits=bits, contexts=contexts)
    return role, codec, len(data), payload


def _zigzag(a: np.ndarray) -> np.ndarray:
    v = a.astype(np.int16)
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint8)


def _symbols(
    role: str, sym: np.ndarray, level: int, codecs: tuple[str, ...], dims: list[int]
) -> tuple[dict[str, Any], list]:
    top = int(sym.max()) if sym.size else 0
    bits = next(b for b in (1, 2, 4, 8) if top < (1 << b))
    s = _stream(role, pack_symbols(sym, bits), level, codecs, bits, contexts_for(dims))
    return {f"{role}_bits": bits}, [s]


def _size(enc: EncodedTensor) -> int:
    return sum(len(s[3]) for s in enc.streams)


def encode_tensor(
    t: onnx.TensorProto, *, level: int = 19, codecs: tuple[str, ...] = ("zstd", "lzma", "rans")
) -> EncodedTensor | None:
    """Encode the data of ``t`` (which is not modified): the smallest of its structured and plain codings.

    Returns ``None`` for a tensor that is left in the graph (a sub-byte type not stored as raw bytes).
    """
    dims = [int(d) for d in t.dims]
    head: dict[str, Any] = {"name": t.name, "dtype": int(t.data_type), "dims": dims}
    cands: list[EncodedTensor] = []
    if t.data_type in SUB_BYTE_BITS:
        if not t.HasField("raw_data"):
            return None
    else:
        cands.append(_structured(t, head, level, codecs))
    if t.HasField("raw_data") and t.raw_data:
        raw = bytes(t.raw_data)
        bits = SUB_BYTE_BITS.get(t.data_type, 8)
        item = 1 if bits < 8 else max(1, len(raw) // max(1, int(np.prod(dims)) if dims else 1))
        e = cands[0].entry if cands else {}
        same = e.get("encoding") == "symbols"  # the symbols stream codes these very values (zig-zag when signed)
        streams = [] if same else [_stream("data", raw, level, codecs, bits, contexts_for(dims, 1, item))]
        if bits == 8 and item == 1 and (not same or e.get("symbols_bits") == 8):  # a byte may hold two 4-bit codes
            nibbles = tuple(c for c in codecs if c == "rans")
            streams.append(_stream("data", raw, level, nibbles, 4, contexts_for(dims, 2)))
        if streams:  # (``same``: the symbols stream already is these bytes, coded the same ways)
            best = min(streams, key=lambda s: len(s[3]))
            cands.append(EncodedTensor({**head, "encoding": "bytes"}, [best]))
    return min(cands, key=_size)


_T = TypeVar("_T")
_R = TypeVar("_R")


def pack_workers(requested: int = 0) -> int:
    """Threads that encode tensors side by side: ``requested``, or (0) the cores this process may use, at most 4
    (each thread holds one tensor's temporaries; zstd, lzma and NumPy release the GIL)."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def map_largest_first(fn: Callable[[_T], _R], items: Sequence[_T], sizes: Sequence[int], workers: int) -> list[_R]:
    """``[fn(item) for item in items]`` on ``workers`` threads, the largest items started first (the longest
    stream does not end up alone at the end); the results, in the order of ``items``, are what the caller keeps
    anyway (compressed streams), and at most ``workers`` items are being worked on at once."""
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    out: list[Any] = [None] * len(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="tensorslim-pack") as pool:
        for i, result in zip(order, pool.map(lambda i: fn(items[i]), order), strict=True):
            out[i] = result
    return out


def _structured(t: onnx.TensorProto, head: dict[str, Any], level: int, codecs: tuple[str, ...]) -> EncodedTensor:
    arr = numpy_helper.to_array(t)
    entry = dict(head)
    dims = head["dims"]
    flat = np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype.itemsize == 1 and arr.dtype.kind in "iub":
        sym = _zigzag(flat.view(np.int8)) if arr.dtype.kind == "i" else flat.view(np.uint8)
        extra, streams = _symbols("symbols", sym, level, codecs, dims)
        entry.update(encoding="symbols", signed=arr.dtype.kind == "i", **extra)
        return EncodedTensor(entry, streams)
    if arr.dtype.kind == "f" and flat.size >= 64:
        sample = flat[:: max(1, flat.size // 4096)]
        if np.unique(sample.view(f"u{arr.dtype.itemsize}")).size <= 256:
            pal, inv = np.unique(flat.view(f"u{arr.dtype.itemsize}"), return_inverse=True)
            if pal.size <= 256:
                extra, streams = _symbols("indices", inv.astype(np.uint8), level, codecs, dims)
                streams.append(_stream("palette", pal.tobytes(), level, codecs))
                entry.update(encoding="palette", palette_size=int(pal.size), **extra)
                return EncodedTensor(entry, streams)
        bits = flat.view(f"u{arr.dtype.itemsize}")
        sign = bits.dtype.type(1 << (8 * arr.dtype.itemsize - 1))
        nz = (bits & ~sign) != 0  # zeros of either sign (a pruned negative weight is often -0.0)
        if flat.size >= 256 and float(nz.mean()) <= 0.75:
            vals = flat[nz]
            planes = ((vals.size, arr.dtype.itemsize), (1, 1))
            streams = [
                _stream("mask", pack_symbols(nz.view(np.uint8), 1), level, codecs, 1, contexts_for(dims)),
                _stream("values", byte_planes(vals.tobytes(), arr.dtype.itemsize), level, codecs, 8, planes),
            ]
            negative = (bits[~nz] & sign) != 0
            if negative.any():  # their signs, one bit per zero: a reader that does not know them must refuse
                streams.append(_stream("zero_signs", pack_symbols(negative.view(np.uint8), 1), level, codecs, 1))
                entry.update(encoding="sparse_signed", nonzero=int(vals.size))
            else:
                entry.update(encoding="sparse", nonzero=int(vals.size))
            return EncodedTensor(entry, streams)
    entry.update(encoding="planes", itemsize=int(arr.dtype.itemsize))
    planes = ((flat.size, arr.dtype.itemsize), (1, 1))
    data = byte_planes(flat.tobytes(), arr.dtype.itemsize)
    return EncodedTensor(entry, [_stream("data", data, level, codecs, 8, planes)])


def _dtype(entry: dict[str, Any]) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(entry["dtype"])))
    except (KeyError, ValueError, TypeError) as e:
        raise DecodeError(f"tensor {entry.get('name')!r}: unknown data type {entry.get('dtype')!r}") from e


def decode_tensor(
    entry: dict[str, Any], read: Callable[[str], bytes], count: int,
    chunks: Callable[[str], Iterable[bytes]] | None = None,
) -> np.ndarray:  # fmt: skip
    """Decode one tensor; ``read(role)`` returns the decompressed bytes of one of its streams, ``chunks(role)``
    (when given) the same bytes a piece at a time.

    The result is built in place, chunk by chunk, with no full-size temporaries: a view of the decoded stream
    when its bytes already are the tensor's (``bytes``, 1-byte ``planes``, unsigned 8-bit ``symbols``), else one
    array of the tensor's size (``planes`` of wider items are scattered into it as the stream decompresses).
    """
    enc = entry.get("encoding")
    if enc == "bytes":
        return np.frombuffer(read("data"), np.uint8)
    dt = _dtype(entry)
    if enc == "symbols":
        bits, signed = int(entry["symbols_bits"]), bool(entry.get("signed"))
        if bits == 8 and not signed:
            out = np.frombuffer(read("symbols"), np.uint8, count)
        else:
            out = np.empty(count, np.uint8)
            for lo, sym in _symbol_chunks(read("symbols"), bits, count):
                out[lo : lo + sym.size] = np.bitwise_xor(sym >> 1, np.negative(sym & 1)) if signed else sym
        return _exact(entry, out.view(dt), count)
    if enc == "palette":
        pal = np.frombuffer(read("palette"), f"u{dt.itemsize}")
        out = np.empty(count, pal.dtype)
        for lo, idx in _symbol_chunks(read("indices"), int(entry["indices_bits"]), count):
            if idx.size and int(idx.max()) >= pal.size:
                raise DecodeError(f"tensor {entry['name']!r}: palette index out of range")
            np.take(pal, idx, out=out[lo : lo + idx.size])
        return _exact(entry, out.view(dt), count)
    if enc in ("sparse", "sparse_signed"):
        vals = _unplane(read("values"), dt, int(entry.get("nonzero", -1)))
        out = np.zeros(count, dt)
        ubits = out.view(f"u{dt.itemsize}")
        sign = ubits.dtype.type(1 << (8 * dt.itemsize - 1))
        zsigns = unpack_symbols(read("zero_signs"), 1, count - vals.size).view(bool) if enc == "sparse_signed" else None
        pos = zpos = 0
        for lo, bit in _symbol_chunks(read("mask"), 1, count):
            mask = bit.view(bool)
            k = int(np.count_nonzero(mask))
            if pos + k > vals.size:
                raise DecodeError(f"tensor {entry['name']!r}: sparse mask and values disagree")
            out[lo : lo + mask.size][mask] = vals[pos : pos + k]
            if zsigns is not None:
                z = mask.size - k
                ubits[lo : lo + mask.size][~mask] = np.where(zsigns[zpos : zpos + z], sign, 0)
                zpos += z
            pos += k
        if pos != vals.size:
            raise DecodeError(f"tensor {entry['name']!r}: sparse mask and values disagree")
        return out
    if enc == "planes":
        if chunks is None or dt.itemsize == 1:
            return _exact(entry, _unplane(read("data"), dt, count), count)
        out = np.empty(count, dt)
        grid = out.view(np.uint8).reshape(count, dt.itemsize)  # plane p of item i is grid[i, p]
        pos, total = 0, count * dt.itemsize
        for piece in chunks("data"):
            src = np.frombuffer(piece, np.uint8)
            if pos + src.size > total:
                raise DecodeError(f"tensor {entry.get('name')!r}: the byte planes hold more than {total} bytes")
            while src.size:
                plane, i = divmod(pos, count)
                k = min(src.size, count - i)
                grid[i : i + k, plane] = src[:k]
                src, pos = src[k:], pos + k
        if pos != total:
            raise DecodeError(f"tensor {entry.get('name')!r}: the byte planes hold {pos} of {total} bytes")
        return out
    raise DecodeError(f"tensor {entry.get('name')!r}: unknown encoding {enc!r}")


_CHUNK = 1 << 20  # packed bytes unpacked at a time


def _symbol_chunks(data: bytes, bits: int, count: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first index, uint8 symbols)`` of the ``count`` symbols packed at ``bits`` in ``data``, a chunk at a time."""
    if bits not in (1, 2, 4, 8):
        raise DecodeError(f"bad symbol width {bits}")
    b = np.frombuffer(data, np.uint8)
    per = 8 // bits
    if b.size * per < count:
        raise DecodeError(f"symbol stream holds {b.size * per} symbols, {count} declared")
    shifts = (np.arange(per, dtype=np.uint8) * bits)[None, :]
    low = np.uint8((1 << bits) - 1)
    for i in range(0, b.size, _CHUNK):
        lo = i * per
        if lo >= count:
            break
        chunk = b[i : i + _CHUNK]
        sym = chunk if bits == 8 else ((chunk[:, None] >> shifts) & low).reshape(-1)
        yield lo, sym[: count - lo]


def _unplane(data: bytes, dt: np.dtype, count: int) -> np.ndarray:
    """``count`` items of ``dt`` from their byte planes (a view of ``data`` for 1-byte items)."""
    if count < 0 or len(data) != count * dt.itemsize:
        raise DecodeError(f"a byte-plane stream of {len(data)} bytes does not hold {count} items of {dt}")
    if dt.itemsize == 1:
        return np.frombuffer(data, dt)
    out = np.empty(count, dt)
    out.view(np.uint8).reshape(count, dt.itemsize)[...] = np.frombuffer(data, np.uint8).reshape(dt.itemsize, count).T
    return out


def _exact(entry: dict[str, Any], arr: np.ndarray, count: int) -> np.ndarray:
    if arr.size != count:
        raise DecodeError(f"tensor {entry.get('name')!r}: decodes to {arr.size} items, {count} declared")
    return arr


def raw_size(entry: dict[str, Any], count: int) -> int:
    """The bytes :func:`decode_tensor` gives for ``entry`` (its tensor's ``raw_data`` length)."""
    if entry.get("encoding") == "bytes":
        return stream_size(entry, "data", count)
    return count * _dtype(entry).itemsize


def stream_size(entry: dict[str, Any], role: str, count: int) -> int:
    """The decompressed size a stream of ``entry`` must have, from the tensor's element count."""
    enc = entry.get("encoding")
    if enc == "bytes" and role == "data":
        bits = SUB_BYTE_BITS.get(int(entry.get("dtype", 0)), 0) or 8 * _dtype(entry).itemsize
        return -(-count * bits // 8)
    dt = _dtype(entry)
    if role in ("symbols", "indices"):
        bits = int(entry.get(f"{role}_bits", 0))
        if bits not in (1, 2, 4, 8):
            raise DecodeError(f"tensor {entry.get('name')!r}: bad symbol width {bits}")
        return -(-count * bits // 8)
    if role == "mask":
        return -(-count // 8)
    if role == "zero_signs":
        nz = int(entry.get("nonzero", -1))
        if not 0 <= nz <= count:
            raise DecodeError(f"tensor {entry.get('name')!r}: bad non-zero count")
        return -(-(count - nz) // 8)
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


def fill_tensor(t: onnx.TensorProto, array: np.ndarray, field: str = "raw_data") -> None:
    """Put ``array`` back into the stripped tensor ``t``: as raw data, or in the typed field it came from."""
    a = np.ascontiguousarray(array).reshape(-1)
    if field == "raw_data" or field not in _FIELDS:
        base: object = a.base
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        # a contiguous view of all of a decoded stream is passed as it is; protobuf copies it either way
        t.raw_data = base if isinstance(base, bytes) and len(base) == a.nbytes > 0 else a.tobytes()
    elif field == "int32_data":  # 16-bit floats are stored as their bit patterns
        t.int32_data.extend((a.view(np.uint16) if a.dtype.kind == "f" else a).astype(np.int32).tolist())
    elif field == "float_data":
        t.float_data.extend(a.astype(np.float32).tolist())
    elif field == "int64_data":
        t.int64_data.extend(a.astype(np.int64).tolist())
    elif field == "double_data":
        t.double_data.extend(a.astype(np.float64).tolist())
    else:
        t.uint64_data.extend(a.astype(np.uint64).tolist())


def tensor_decoder(entry: dict[str, Any], decode_stream: Callable[[dict[str, Any]], Any]) -> Callable[[str], Any]:
    """A ``read(role)`` for :func:`decode_tensor` over the entry's stream list (``decode_stream`` may return
    the bytes or an iterable of chunks: the same wrapper serves ``read`` and ``chunks``)."""
    by_role = {s.get("role"): s for s in entry.get("streams", [])}

    def read(role: str) -> Any:
        s = by_role.get(role)
        if s is None:
            raise DecodeError(f"tensor {entry.get('name')!r}: stream {role!r} missing")
        return decode_stream(s)

    return read


_ = decode  # re-exported for the container module
