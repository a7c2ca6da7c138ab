"""Entropy coding of weight streams: reversible transforms, then the smallest of several coders.

Transforms turn a tensor's structure into redundancy a byte-oriented coder can see:

* :func:`byte_planes` splits ``n`` items of ``w`` bytes into ``w`` planes (all first bytes, then all second
  bytes...): the exponent bytes of floats become a low-entropy plane of their own;
* :func:`pack_symbols` packs small integers (cluster indices, int4 codes, mask bits) ``8 // bits`` to a
  byte, so that a byte-level coder models pairs (or quadruples) of symbols.

Coders (:data:`CODECS`): ``zstd`` (Huffman-coded literals plus LZ matches, level 19 by default), ``lzma``
(xz preset 9 extreme: range coder with context modelling), ``rans`` (a static per-context model of small symbols:
int4 codes with their position in the block, cluster indices by channel, float byte planes by plane, coded by
interleaved rANS lanes in numpy, see :func:`rans_encode`) and ``raw``. :func:`encode` tries the candidates and
keeps the smallest, so every stream is stored by whichever coder measured best on it. :func:`decode` never
produces more than the size the caller expects (a decompression bomb stops at that size and is reported).
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CODECS",
    "DecodeError",
    "byte_planes",
    "decode",
    "encode",
    "pack_symbols",
    "rans_cost",
    "rans_decode",
    "rans_encode",
    "unbyte_planes",
    "unpack_symbols",
]

CODECS: tuple[str, ...] = ("raw", "zstd", "lzma", "rans")  # "lzma" writes raw LZMA2 streams, codec "lzma2"
LZMA_PRESET = 9 | lzma.PRESET_EXTREME


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


def _lzma_compress(data: bytes) -> bytes:
    """An xz stream (preset 9e), its dictionary no larger than the data needs (the same output, set up faster)."""
    dict_size = 1 << min(26, max(12, (max(len(data), 1) - 1).bit_length()))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters)


def _lzma2_filters(head: int) -> list[dict[str, int]]:
    """Filters from a payload's first byte: log2 of the dictionary (low 5 bits), literal model (bit 5)."""
    f = {"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": 1 << (head & 31)}
    if head & 32:  # no literal context, no position bits: for noise-like bytes (int8 weights)
        f.update(lc=0, lp=0, pb=0)
    return [f]


def _lzma2_compress(data: bytes, literal: int | None = None) -> bytes:
    """A raw LZMA2 stream (no xz container: ~60 bytes less per stream) after one byte naming its filters
    (both literal models are tried unless ``literal`` (0 or 32) names one)."""
    dict_log = min(26, max(12, (max(len(data), 1) - 1).bit_length()))
    heads = (dict_log, dict_log | 32) if literal is None else (dict_log | literal,)
    outs = [bytes([h]) + lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma2_filters(h)) for h in heads]
    return min(outs, key=len)


def encode(
    data: bytes,
    *,
    codecs: Sequence[str] = ("zstd", "lzma"),
    zstd_level: int = 19,
    symbol_bits: int = 8,
    contexts: Sequence[tuple[int, int]] = ((1, 1),),
) -> tuple[str, bytes]:
    """Compress ``data`` with each candidate coder and return ``(codec, payload)`` of the smallest.

    Args:
        data: the stream.
        codecs: candidate coders; ``raw`` always competes, so a stream never grows by more than nothing.
        zstd_level: zstd level.
        symbol_bits: for ``rans``: ``data`` holds symbols of this many bits packed by :func:`pack_symbols`.
        contexts: for ``rans``: candidate ``(divisor, contexts)`` models; the one of least estimated size is coded.
    """
    for c in codecs:
        if c not in CODECS:
            raise ValueError(f"codecs: unknown codec {c!r}; allowed: {', '.join(CODECS)}")
    best = ("raw", bytes(data))
    rans_model = None
    estimates: dict[str, float] = {}
    if "rans" in codecs and data:
        sym = unpack_symbols(data, symbol_bits, len(data) * 8 // symbol_bits)
        a = 1 << symbol_bits
        models = [(d, k, o) for d, k in contexts for o in (0, 1) if d >= 1 and k * a ** (1 + o) <= _MAX_TABLE]
        seen = min(sym.size, _SAMPLE)  # a table much larger than the symbols it is estimated on overfits
        models = [m for m in models if m[1] * a ** (1 + m[2]) <= max(a, seen // 4)] or [(1, 1, 0)]
        stats = _CostSample(sym)
        costs = {m: rans_cost(stats, a, *m) for m in models}
        rans_model = min(costs, key=lambda m: costs[m])
        estimates["rans"] = costs[rans_model]
    lzma_head = None
    if "rans" in estimates and len(data) > _GATE_MIN and ("zstd" in codecs or "lzma" in codecs):
        fast = len(_zstd_compress(data, 3))  # zstd -19 and lzma beat zstd -3 by far less than this gate on weights
        flat = fast > 0.95 * len(data) and estimates["rans"] < 0.97 * fast  # no LZ structure: rans has it all
        if flat or fast > _GATE * estimates["rans"]:
            codecs = [c for c in codecs if c not in ("zstd", "lzma")]
    if len(data) > _PROBE:  # long streams: zstd and lzma measured on samples first, run in full only if they may win
        sample = _probe_sample(data)
        scale = len(data) / len(sample)
        if "zstd" in codecs:
            estimates["zstd"] = scale * len(_zstd_compress(sample, zstd_level))
        if "lzma" in codecs:
            probe = _lzma2_compress(sample)
            lzma_head = probe[0] & 32
            estimates["lzma"] = scale * len(probe)
        order = sorted(estimates, key=lambda c: estimates[c])
        order = [c for c in order if c in codecs or c == "rans"]
    else:
        order = [c for c in ("zstd", "lzma", "rans") if c in codecs and (c != "rans" or rans_model is not None)]
    for c in order:
        if c in estimates and estimates[c] > _PROBE_MARGIN * len(best[1]) + 64:
            continue  # measured (or estimated) well above the best so far: it cannot win, and it is slow
        if c == "zstd":
            payload = _zstd_compress(data, zstd_level)
            estimates["lzma"] = min(estimates.get("lzma", np.inf), len(payload) / 1.06)  # lzma is within ~6 %
        elif c == "lzma":
            payload = _lzma2_compress(data, lzma_head)
            c = "lzma2"
        else:
            assert rans_model is not None
            payload = rans_encode(sym, symbol_bits, *rans_model)
        if len(payload) < len(best[1]):
            best = (c, payload)
    return best


_GATE_MIN = 1 << 16  # streams longer than this skip zstd -19 and lzma when zstd -3 is _GATE times rans' estimate
_GATE = 1.3
_PROBE = 1 << 20  # streams longer than this are sampled before a full zstd or lzma run
_PROBE_PIECE = 1 << 17
_PROBE_MARGIN = 1.04  # a coder estimated this much above the best actual size is not run in full


def _probe_sample(data: bytes) -> bytes:
    """Four evenly spaced pieces of a long stream."""
    n = len(data)
    starts = [round(i * (n - _PROBE_PIECE) / 3) for i in range(4)]
    return b"".join(bytes(data[s : s + _PROBE_PIECE]) for s in starts)


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
    elif codec == "lzma2":
        if not payload or not 12 <= payload[0] & 31 <= 26 or payload[0] >> 6:
            raise DecodeError("lzma2 stream has a bad dictionary size")
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma2_filters(payload[0]))
        try:
            out = dec.decompress(payload[1:], max_length=size)
        except lzma.LZMAError as e:
            raise DecodeError(f"lzma2 stream is corrupt ({e})") from e
        if not dec.eof and size > 0 and len(out) == size and dec.decompress(b"", max_length=1):
            raise DecodeError(f"lzma2 stream holds more than the {size} bytes declared")
    elif codec == "rans":
        out = rans_decode(bytes(payload), size)
    else:
        raise DecodeError(f"unknown codec {codec!r}; this file needs a newer tensorslim")
    if len(out) != size:
        raise DecodeError(f"stream decodes to {len(out)} bytes, {size} declared")
    return out


# ------------------------------------------------------------------------------------------------
# rANS: a static context model over small symbols, coded by many interleaved lanes at once
# ------------------------------------------------------------------------------------------------
#
# Payload of the ``rans`` codec (little endian)::
#
#     u8 version (1) | u8 symbol bits | u8 scale bits P | u8 table codec (0 raw, 1 zstd, 2 lzma) | u8 order
#     u32 lanes | u64 context divisor | u32 position contexts | u32 table bytes
#     table (contexts x alphabet u16 frequencies, each row summing to 0 or 2**P, compressed)
#     lanes x u32 final states | u16 words
#
# The ``n`` symbols are cut into ``lanes`` contiguous segments of ``ceil(n / lanes)``; each segment is an
# ordinary 32-bit rANS coder with 16-bit words and all of them run at once (numpy over lanes), their words
# interleaved in the order the decoder consumes them. Symbol ``i`` has the position context
# ``(i // divisor) % contexts`` (a position in a block, a row, a column or a byte plane) and, at order 1, also
# the symbol before it in its segment. The decoder checks that every lane ends in the encoder's initial state
# and that every word was used.

_RANS_HEAD = struct.Struct("<BBBBBIQII")
_RANS_L = 1 << 16
_RANS_P = 15
_MAX_TABLE = 1 << 20  # contexts x alphabet entries a payload may declare
_MAX_LANES = 4096
_CHUNK = 1 << 21  # symbols whose frequencies are gathered at once (bounds the coder's memory)


def context_of(index: np.ndarray, divisor: int, contexts: int) -> np.ndarray:
    """The position context of each symbol index."""
    if contexts == 1:
        return np.zeros(index.shape, np.int64)
    if index.size and divisor < _I32 and contexts < _I32 and int(index.min()) >= 0 and int(index.max()) < _I32:
        small = index.astype(np.int32)  # the same values: int32 division is several times faster than int64
        return ((small // np.int32(divisor)) % np.int32(contexts)).astype(np.int64)
    return (index // divisor) % contexts


_I32 = 1 << 31


def _normalize(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to ``2**P`` per row (0 where a row is empty); every seen symbol keeps at least 1."""
    target = 1 << _RANS_P
    tot = counts.sum(1, keepdims=True)
    f = np.where(counts > 0, np.maximum(1, np.floor(counts * (target / np.maximum(tot, 1)))), 0).astype(np.int64)
    for r in np.nonzero(f.sum(1) != np.where(tot[:, 0] > 0, target, 0))[0]:
        c, row = counts[r], f[r]
        diff = target - int(row.sum())
        order = np.argsort(-c, kind="stable")[: int((c > 0).sum())]
        i = 0
        while diff != 0:  # hand the rounding error to the most frequent symbols
            s = order[i % order.size]
            step = diff if diff > 0 else -min(-diff, int(row[s]) - 1)
            row[s] += step
            diff -= step
            i += 1
    return f


def _lanes(n: int) -> int:
    return int(min(_MAX_LANES, max(1, n // 4096)))


def _keys(
    sym: np.ndarray, alphabet: int, divisor: int, contexts: int, order: int, seg: int, idx: np.ndarray | None = None
) -> np.ndarray:
    """Context id times alphabet plus symbol, for every symbol (or the symbols at ``idx``)."""
    if idx is None:
        idx = np.arange(sym.size, dtype=np.int64)
    ctx = context_of(idx, divisor, contexts)
    if order:
        prev = np.where(idx % seg == 0, 0, sym[np.maximum(idx - 1, 0)].astype(np.int64))
        ctx = ctx * alphabet + prev
    return ctx * alphabet + sym[idx].astype(np.int64)


_SAMPLE = 1 << 19  # model choice on long streams looks at this many symbols (in runs of 4096)


class _CostSample:
    """What :func:`rans_cost` needs of a stream, gathered once for all the models tried on it: the sampled
    indices, their symbols and the symbol before each in its lane (0 at a lane's start)."""

    def __init__(self, symbols: np.ndarray) -> None:
        sym = np.ascontiguousarray(symbols, np.uint8).reshape(-1)
        n = self.n = sym.size
        seg = -(-n // _lanes(n)) if n else 1
        if n > _SAMPLE:
            runs = np.arange(0, n, 4096 * (n // _SAMPLE), dtype=np.int64)
            idx = (runs[:, None] + np.arange(4096, dtype=np.int64)[None, :]).reshape(-1)
            idx = idx[idx < n]
        else:
            idx = np.arange(n, dtype=np.int64)
        self.idx = idx
        self.sym = sym[idx].astype(np.int64)
        self.prev = np.where(idx % seg == 0, 0, sym[np.maximum(idx - 1, 0)]).astype(np.int64)
        self._ctx: dict[tuple[int, int], np.ndarray] = {}

    def context(self, divisor: int, contexts: int) -> np.ndarray:
        """:func:`context_of` the sampled indices (kept: the order-0 and order-1 models of a context share it)."""
        key = (divisor, contexts)
        if key not in self._ctx:
            self._ctx = {key: context_of(self.idx, divisor, contexts)}  # one at a time: models come in pairs
        return self._ctx[key]


def rans_cost(
    symbols: np.ndarray | _CostSample, alphabet: int, divisor: int, contexts: int, order: int = 0
) -> float:
    """Estimated payload bytes of :func:`rans_encode` with this model (entropy plus the table).

    Streams longer than 2**19 symbols are estimated on evenly spaced runs of 4096 symbols.
    """
    sample = symbols if isinstance(symbols, _CostSample) else _CostSample(symbols)
    n = sample.n
    width = contexts * alphabet ** (1 + order)
    keys = sample.context(divisor, contexts)
    if order:
        keys = keys * alphabet + sample.prev
    keys = keys * alphabet + sample.sym
    counts = np.bincount(keys, minlength=width).reshape(-1, alphabet)
    tot = counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.where(counts > 0, counts * np.log2(counts / np.maximum(tot, 1)), 0.0).sum()
    scale = n / keys.size if keys.size else 1.0
    return float(scale * bits / 8 + 1.2 * np.count_nonzero(counts) + 4 * _lanes(n) + _RANS_HEAD.size)


def rans_encode(symbols: np.ndarray, bits: int, divisor: int = 1, contexts: int = 1, order: int = 0) -> bytes:
    """Code ``symbols`` (uint8 below ``2**bits``) with static per-context frequencies; see the payload above."""
    alphabet = 1 << bits
    sym = np.ascontiguousarray(symbols, np.uint8).reshape(-1)
    n = sym.size
    if contexts * alphabet ** (1 + order) > _MAX_TABLE or contexts < 1 or divisor < 1 or order not in (0, 1):
        raise ValueError(f"rans: {contexts} contexts of {alphabet} symbols at order {order} is too large a table")
    lanes = _lanes(n)
    seg = -(-n // lanes) if n else 1
    lanes = -(-n // seg) if n else 1
    width = contexts * alphabet ** (1 + order)
    counts = np.zeros(width, np.int64)
    for lo in range(0, n, _CHUNK):  # memory: a chunk of keys at a time
        idx = np.arange(lo, min(n, lo + _CHUNK), dtype=np.int64)
        counts += np.bincount(_keys(sym, alphabet, divisor, contexts, order, seg, idx), minlength=width)
    freq = _normalize(counts.reshape(-1, alphabet))
    start = np.zeros_like(freq)
    start[:, 1:] = np.cumsum(freq, axis=1)[:, :-1]
    f_all, s_all = freq.reshape(-1), start.reshape(-1)
    x = np.full(lanes, _RANS_L, np.uint64)
    base = np.arange(lanes, dtype=np.int64) * seg
    last = n - int(base[-1]) if n else 0  # the last lane's length (every other lane has ``seg`` symbols)
    out: list[np.ndarray] = []
    chunk = max(1, _CHUNK // lanes)
    sixteen = np.uint64(16)
    for c0 in range((seg - 1) // chunk * chunk, -1, -chunk):
        c1 = min(seg, c0 + chunk)
        idx = base[None, :] + np.arange(c0, c1, dtype=np.int64)[:, None]  # steps x lanes
        k = _keys(sym, alphabet, divisor, contexts, order, seg, np.minimum(idx, n - 1).reshape(-1)).reshape(idx.shape)
        f_chunk, s_chunk = f_all[k].astype(np.uint64), s_all[k].astype(np.uint64)
        top = f_chunk << np.uint64(32 - _RANS_P)  # a lane emits a word when its state reaches this
        low = np.zeros(idx.shape, np.uint16)  # the word each lane may emit at each step...
        emits = np.zeros(idx.shape, bool)  # ... and whether it did
        for t in range(c1 - c0 - 1, -1, -1):
            m = lanes if c0 + t < last else lanes - 1  # active lanes are a prefix (only the last one is short)
            xs = x[:m]
            emit = np.greater_equal(xs, top[t, :m], out=emits[t, :m])
            np.copyto(low[t, :m], xs, casting="unsafe")  # the low 16 bits
            xs = np.where(emit, xs >> sixteen, xs)
            q, r = np.divmod(xs, f_chunk[t, :m])
            x[:m] = (q << np.uint64(_RANS_P)) + r + s_chunk[t, :m]
        out.append(low[emits])  # steps in order, lanes in order within a step: the order the decoder reads
    words = np.concatenate(out[::-1]) if out else np.zeros(0, np.uint16)
    table = freq.astype("<u2").tobytes()
    t_codec, t_payload = 0, table
    for code, packed in ((1, _zstd_compress(table, 19)), (2, _lzma_compress(table))):
        if len(packed) < len(t_payload):
            t_codec, t_payload = code, packed
    head = _RANS_HEAD.pack(1, bits, _RANS_P, t_codec, order, lanes, divisor, contexts, len(t_payload))
    return head + t_payload + x.astype("<u4").tobytes() + words.astype("<u2").tobytes()


def rans_decode(payload: bytes, size: int) -> bytes:
    """Decode a ``rans`` payload into exactly ``size`` bytes of packed symbols (memory bounded by ``size``)."""
    if len(payload) < _RANS_HEAD.size:
        raise DecodeError("rans stream is truncated")
    version, bits, p, t_codec, order, lanes, divisor, contexts, t_len = _RANS_HEAD.unpack_from(payload)
    if version != 1 or bits not in (1, 2, 4, 8) or p != _RANS_P or t_codec > 2 or order not in (0, 1):
        raise DecodeError("rans stream has an unknown layout; the file needs a newer tensorslim or is corrupt")
    alphabet = 1 << bits
    n = size * 8 // bits
    width = contexts * alphabet ** (1 + order)
    if not 1 <= lanes <= _MAX_LANES or divisor < 1 or contexts < 1 or width > _MAX_TABLE or lanes > max(1, n):
        raise DecodeError("rans stream declares an impossible coder shape")
    pos = _RANS_HEAD.size
    t_raw = payload[pos : pos + t_len]
    table = decode(("raw", "zstd", "lzma")[t_codec], t_raw, width * 2) if t_codec else t_raw
    if len(table) != width * 2:
        raise DecodeError("rans frequency table is truncated")
    freq = np.frombuffer(table, "<u2").astype(np.int64).reshape(-1, alphabet)
    sums = freq.sum(1)
    if not np.all((sums == 0) | (sums == 1 << p)):
        raise DecodeError("rans frequency table does not sum to its scale")
    pos += t_len
    if len(payload) < pos + 4 * lanes or (len(payload) - pos - 4 * lanes) % 2:
        raise DecodeError("rans stream is truncated")
    x = np.frombuffer(payload[pos : pos + 4 * lanes], "<u4").astype(np.uint64)
    words = np.frombuffer(payload[pos + 4 * lanes :], "<u2").astype(np.uint64)
    seg = -(-n // lanes) if n else 1
    if n and -(-n // seg) != lanes:
        raise DecodeError("rans stream declares an impossible coder shape")
    start = np.zeros_like(freq)
    start[:, 1:] = np.cumsum(freq, axis=1)[:, :-1]
    # symbol lookup: the last symbol of a context whose start is <= slot (zero-frequency symbols are skipped)
    keys_flat = ((np.arange(freq.shape[0], dtype=np.int64)[:, None] << p) + start).reshape(-1)
    f_flat, s_flat = freq.reshape(-1).astype(np.uint64), start.reshape(-1).astype(np.uint64)
    sym = np.empty(n, np.uint8)
    prev = np.zeros(lanes, np.int64)
    base = np.arange(lanes, dtype=np.int64) * seg
    mask = np.uint64((1 << p) - 1)
    ptr = 0
    for t in range(seg if n else 0):
        m = lanes if base[-1] + t < n else int(np.searchsorted(base, n - t))
        idx = base[:m] + t
        ctx = context_of(idx, divisor, contexts)
        if order:
            ctx = ctx * alphabet + prev[:m]
        xs = x[:m]
        slot = xs & mask
        k = np.searchsorted(keys_flat, (ctx << p) + slot.astype(np.int64), side="right") - 1
        k = np.clip(k, 0, keys_flat.size - 1)
        s = k - ctx * alphabet
        sym[idx] = s
        prev[:m] = s
        xs = f_flat[k] * (xs >> np.uint64(p)) + slot - s_flat[k]
        need = xs < np.uint64(_RANS_L)
        r = int(need.sum())
        if r:
            if ptr + r > words.size:
                raise DecodeError("rans stream ends early")
            xs[need] = (xs[need] << np.uint64(16)) | words[ptr : ptr + r]
            ptr += r
        x[:m] = xs
    if ptr != words.size or not np.all(x == _RANS_L):
        raise DecodeError("rans stream does not decode to its declared size (corrupt)")
    return pack_symbols(sym, bits)
