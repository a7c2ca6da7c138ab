"""The packed artifact ``.tslim``: the smallest file to ship, unpacked to a runnable ONNX model bit-exactly.

Typical use::

    from tensorslim.pack import pack_model, unpack_model

    report = pack_model("model.clustered.onnx", "model.tslim")   # bytes per part, bits per weight
    model = unpack_model("model.tslim", "model.onnx")           # weights bit-exact to the packed model

The graph (every tensor's data removed) and each tensor are stored as separate streams; see
:mod:`tensorslim.pack.tensors` for the encodings and :mod:`tensorslim.pack.format` for the container.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError as ProtoDecodeError
from onnx import TensorProto

from tensorslim.algorithms.entropy import encode
from tensorslim.errors import ConfigError, InputError
from tensorslim.pack.format import FORMAT_VERSION, StreamBody, baselines, read_container, write_container
from tensorslim.pack.tensors import (
    SUB_BYTE_BITS,
    data_field,
    decode_tensor,
    encode_tensor,
    fill_tensor,
    iter_tensors,
    map_largest_first,
    pack_workers,
    raw_size,
    stream_size,
    strip_tensor,
    tensor_decoder,
)

__all__ = [
    "FORMAT_VERSION", "PackConfig", "PackReport", "is_pack", "pack_model", "unpack_file", "unpack_model",
    "unpack_to_temp",
]  # fmt: skip

_PACKABLE = {
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16, TensorProto.INT8,
    TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
    TensorProto.INT64, TensorProto.UINT64, TensorProto.BOOL,
}  # fmt: skip
_PACKABLE_V2 = _PACKABLE | set(SUB_BYTE_BITS)
_CODECS = ("zstd", "lzma", "rans")
_IN_GRAPH = 2048  # tensors of at most this many serialized bytes stay in the graph stream (cheaper than an entry)


@dataclass(frozen=True)
class PackConfig:
    """Options of :func:`pack_model`.

    Attributes:
        level: zstd level for every stream (1-22).
        codecs: coders that compete for each stream (the smallest output wins): ``zstd``, ``lzma`` (xz preset
            9 extreme) and ``rans`` (a static context model of small symbols).
        compare: also compress the plain ONNX file with zstd -19, lzma (xz -9e) and gzip -9 for the report.
        single_stream: also try the whole model as one zstd/lzma stream (kept when smaller: small models, where
            coding each tensor alone loses the shared context and costs a manifest entry each).
        workers: threads that encode tensors side by side (0: the cores this process may use, at most 4); the
            output bytes do not depend on it.
    """

    level: int = 19
    codecs: tuple[str, ...] = _CODECS
    compare: bool = False
    single_stream: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 1 <= self.level <= 22:
            raise ConfigError(f"level: must be an integer from 1 to 22, got {self.level!r}")
        bad = [c for c in self.codecs if c not in _CODECS]
        if bad or not self.codecs:
            raise ConfigError(f"codecs: {list(self.codecs)!r}; allowed: {', '.join(_CODECS)}")
        object.__setattr__(self, "codecs", tuple(self.codecs))
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 0 <= self.workers <= 64:
            raise ConfigError(f"workers: must be an integer from 0 (automatic) to 64, got {self.workers!r}")


@dataclass
class PackReport:
    """What :func:`pack_model` wrote.

    Attributes:
        output_path: the ``.tslim`` file.
        file_bytes: its size.
        onnx_bytes: the serialized size of the packed ONNX model.
        parts: compressed bytes per part (``graph``, ``symbols``, ``palette``, ``mask``, ``values``, ``data``...).
        weights: number of weight elements (for bits per weight).
        codecs: streams per coder.
        baselines: ``zstd-19``, ``lzma-9e`` and ``gzip-9`` of the plain ONNX bytes, when compared.
        seconds: wall time.
    """

    output_path: Path
    file_bytes: int
    onnx_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    weights: int = 0
    codecs: dict[str, int] = field(default_factory=dict)
    baselines: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bits_per_weight(self) -> float:
        """File bits per weight element, everything included."""
        return 8.0 * self.file_bytes / self.weights if self.weights else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "output_path": str(self.output_path),
            "file_bytes": self.file_bytes,
            "onnx_bytes": self.onnx_bytes,
            "parts": dict(self.parts),
            "weights": self.weights,
            "bits_per_weight": self.bits_per_weight,
            "codecs": dict(self.codecs),
            "baselines": dict(self.baselines),
            "seconds": self.seconds,
        }


def is_pack(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a ``.tslim`` file (by extension)."""
    return Path(path).suffix.lower() == ".tslim"


def _weight_count(model: onnx.ModelProto) -> int:
    """Weight elements: every stored tensor except integer helpers and flat codebooks read by Gather."""
    gathered_1d = {n.input[0] for g in _graphs(model.graph) for n in g.node if n.op_type == "Gather"}
    total = 0
    for t in iter_tensors(model):
        count = int(np.prod(t.dims)) if len(t.dims) else 1
        if t.data_type in (TensorProto.INT64, TensorProto.INT32):
            continue
        if len(t.dims) == 1 and t.name in gathered_1d:
            continue
        total += count
    return total


def _graphs(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    out = [g]
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.extend(_graphs(a.g))
            elif a.type == onnx.AttributeProto.GRAPHS:
                for s in a.graphs:
                    out.extend(_graphs(s))
    return out


_WHOLE_BYTES = 1 << 22  # models up to this size also try one plain stream of the whole file (a second or two)


def _whole_may_win(onnx_bytes: bytes, packed: int) -> bool:
    """Whether one zstd/lzma stream of the whole model may be smaller than the ``packed`` bytes of the tensor
    streams plus the graph (small models, where per-stream coding loses the shared context, or a packed size
    close to zstd -3 of the file)."""
    if len(onnx_bytes) <= _WHOLE_BYTES:
        return True
    from tensorslim.algorithms.entropy import _zstd_compress

    return packed > 0.9 * len(_zstd_compress(onnx_bytes, 3))


def _manifest_bytes(entries: list[dict[str, Any]]) -> int:
    """About the stored size of a manifest with these tensor entries (JSON, zstd -19 as the container writes it)."""
    import json

    import zstandard

    raw = json.dumps({"tensors": entries}, separators=(",", ":"), sort_keys=True).encode()
    return len(zstandard.ZstdCompressor(level=19).compress(raw))


def pack_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    output: str | os.PathLike[str],
    *,
    config: PackConfig | None = None,
) -> PackReport:
    """Pack an ONNX model into one ``.tslim`` file (written atomically; the input is never modified).

    Raises:
        InputError: unreadable model or bad output path.
    """
    from tensorslim.backends.onnx.io import check_output_path, load_model

    start = time.perf_counter()
    cfg = config or PackConfig()
    if isinstance(model, onnx.ModelProto):
        src = onnx.ModelProto()
        src.CopyFrom(model)
        check_output_path(output)
    else:
        check_output_path(output, model)
        src = load_model(model, check=False)
    onnx_bytes = src.SerializeToString()
    weights = _weight_count(src)
    body = StreamBody()
    entries = []

    todo = []
    for index, t in enumerate(iter_tensors(src)):
        if t.data_type not in _PACKABLE_V2 or t.data_location == TensorProto.EXTERNAL or t.ByteSize() <= _IN_GRAPH:
            continue
        field = data_field(t)  # None: filling it back would not give the same bytes; it stays in the graph
        if field:
            todo.append((index, t, field))

    def encoded(item: tuple[int, TensorProto, str]) -> Any:
        return encode_tensor(item[1], level=cfg.level, codecs=cfg.codecs)

    sizes = [t.ByteSize() for _, t, _ in todo]
    results = map_largest_first(encoded, todo, sizes, pack_workers(cfg.workers))
    for (index, t, field), enc in zip(todo, results, strict=True):
        if enc is None:
            continue
        enc.entry["index"] = index
        if field != "raw_data":
            enc.entry["field"] = field
        enc.entry["streams"] = [body.add(*s) for s in enc.streams]
        entries.append(enc.entry)
        strip_tensor(t)
    graph = src.SerializeToString()
    plain = [c for c in cfg.codecs if c != "rans"]
    g_codec, g_payload = encode(graph, codecs=plain, zstd_level=max(cfg.level, 19))
    if cfg.single_stream and plain and _whole_may_win(onnx_bytes, len(body.data) + len(g_payload)):
        w_codec, w_payload = encode(onnx_bytes, codecs=plain, zstd_level=max(cfg.level, 19))
        # the whole model as one stream, no tensor entries (a smaller manifest too), when that is smaller
        if len(w_payload) + _manifest_bytes([]) < len(body.data) + len(g_payload) + _manifest_bytes(entries):
            body.clear()
            entries = []
            graph, g_codec, g_payload = onnx_bytes, w_codec, w_payload
    graph_stream = body.add("graph", g_codec, len(graph), g_payload)
    manifest = {"format": "tensorslim-pack", "graph": graph_stream, "tensors": entries, "weights": weights}
    return write_pack(output, manifest, body, onnx_bytes, weights, cfg, start)


def write_pack(
    output: str | os.PathLike[str],
    manifest: dict[str, Any],
    body: StreamBody,
    source: bytes,
    weights: int,
    cfg: PackConfig,
    start: float,
) -> PackReport:
    """Write the container (atomically) and report it against ``source``, the bytes packed (compared with the
    general-purpose compressors when ``cfg.compare``); ``start``: when packing began (``time.perf_counter``)."""
    size = write_container(output, manifest, bytes(body.data))
    report = PackReport(Path(output), size, len(source), dict(body.parts), weights, dict(body.codecs))
    report.parts["manifest+header"] = size - len(body.data)
    if cfg.compare:
        report.baselines.update(baselines(source))
    report.seconds = time.perf_counter() - start
    return report


def unpack_model(
    path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *, max_expansion: float = 4096.0
) -> onnx.ModelProto:
    """Read a ``.tslim`` file back into an ONNX model (and write it atomically when ``output`` is given).

    Each tensor is decoded in place and handed to the model, one at a time: the peak is about the model
    once, plus its largest tensor, plus (with ``output``) the serialized model. To write a file without
    holding the model, use :func:`unpack_file`.

    Raises:
        InputError: missing, truncated, tampered (checksum mismatch), newer-version or hostile files;
            nothing is written then.
    """
    from tensorslim.backends.onnx.io import check_output_path, save_model

    if output is not None:
        check_output_path(output, path)
    plan = _plan(path, max_expansion)
    sizes = [_raw_size(plan.container, t, entry, count) for t, entry, count, _ in plan.targets]
    _check_memory(plan.container, sum(sizes) * (2 if output is not None else 1))  # the model (+ its bytes)
    try:
        for t, entry, count, where in plan.targets:
            arr = _decoded(plan.container, t, entry, count)
            fill_tensor(t, arr, where)
            del arr
        if output is not None:
            save_model(plan.model, output, stamp_lowest=False)  # exactly what was packed: bit-exact
    except MemoryError as e:
        raise _out_of_memory(plan.container, sum(sizes)) from e
    return plan.model


def unpack_file(path: str | os.PathLike[str], output: str | os.PathLike[str], *, max_expansion: float = 4096.0) -> Path:
    """Unpack a ``.tslim`` file straight into an ONNX file (atomically), never holding the whole model.

    The packed graph's bytes are written with each tensor's data spliced in as it is decoded
    (:mod:`tensorslim.pack.wire`): the peak is about the largest tensor (twice that for tensors stored as
    byte planes of multi-byte items), not the model. The file is byte-identical to what
    :func:`unpack_model` writes. Models past protobuf's 2 GB limit go through :func:`unpack_model`
    (external data).

    Raises:
        InputError: as :func:`unpack_model`; nothing is left at ``output`` on failure.
    """
    from tensorslim._files import atomic_write
    from tensorslim.backends.onnx.io import check_output_path
    from tensorslim.pack import wire

    out = check_output_path(output, path)
    plan = _plan(path, max_expansion)
    paths = {id(t): p for p, t in wire.tensor_paths(plan.model)}
    targets: dict[wire.Path_, tuple[onnx.TensorProto, wire.Deferred | bytes]] = {}
    try:
        for t, entry, count, where in plan.targets:
            if id(t) not in paths:
                raise wire.Unsupported("a target tensor has no wire path")
            if where == "raw_data":
                nbytes = _raw_size(plan.container, t, entry, count)
                targets[paths[id(t)]] = (t, wire.Deferred(_producer(plan.container, t, entry, count, nbytes), nbytes))
            else:  # a typed field: its serialized size depends on the values, so it is built now
                filled = onnx.TensorProto()
                filled.CopyFrom(t)
                fill_tensor(filled, _decoded(plan.container, t, entry, count), where)
                targets[paths[id(t)]] = (t, filled.SerializeToString())
        pieces, size = wire.layout(plan.graph, targets)
        if size >= _PROTOBUF_LIMIT:
            raise wire.Unsupported("past protobuf's 2 GB limit")
    except wire.Unsupported:
        unpack_model(path, out, max_expansion=max_expansion)
        return out
    largest = max((d.nbytes for _, d in targets.values() if isinstance(d, wire.Deferred)), default=0)
    _check_memory(plan.container, largest)
    try:
        with atomic_write(out, inputs=[path]) as f:
            wire.write_pieces(f, pieces)
    except MemoryError as e:
        raise _out_of_memory(plan.container, largest) from e
    return out


def _check_memory(c: Any, need: int) -> None:
    """Refuse to start when the bytes to hold exceed the free memory (a MemoryError midway is an exit 3)."""
    import psutil

    free = int(psutil.virtual_memory().available)
    if need > free:
        raise _out_of_memory(c, need, free)


def _out_of_memory(c: Any, need: int, free: int | None = None) -> InputError:
    state = "ran out of memory" if free is None else f"only {free / 2**30:.1f} GiB of memory is free"
    return InputError(
        f"{c.path}: unpacking needs about {need / 2**30:.1f} GiB and {state}; unpack it on a machine with "
        "more free memory (tensorslim unpack holds only the largest tensor in memory)"
    )


_PROTOBUF_LIMIT = 2**31 - 2**24  # as :func:`tensorslim.backends.onnx.save_model`: larger models get external data


@dataclass
class _Plan:
    container: Any
    graph: bytes
    model: onnx.ModelProto
    targets: list[tuple[onnx.TensorProto, dict[str, Any], int, str]]  # tensor, entry, element count, field


def _plan(path: str | os.PathLike[str], max_expansion: float) -> _Plan:
    """Read and check the container, parse the graph and match every manifest entry to its tensor; nothing
    is decoded yet."""
    c = read_container(path, max_expansion=max_expansion)
    m = c.manifest
    if m.get("format") != "tensorslim-pack" or not isinstance(m.get("tensors"), list):
        raise InputError(f"{c.path}: the manifest is not a tensorslim pack manifest; the file is corrupt")
    graph_bytes = c.stream(m.get("graph", {}))
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph_bytes)
    except ProtoDecodeError as e:
        raise InputError(f"{c.path}: the packed graph does not parse; the file is corrupt") from e
    entries = m["tensors"]
    if c.version >= 2:  # each entry names its tensor's position among the graph's tensors
        every = list(iter_tensors(model))
        try:
            targets = [every[int(e["index"])] for e in entries]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"{c.path}: a manifest entry names no tensor of the graph; the file is corrupt") from e
        if len({id(t) for t in targets}) != len(targets):
            raise InputError(f"{c.path}: two manifest entries name the same tensor; the file is corrupt")
    else:
        targets = [t for t in iter_tensors(model) if t.data_type in _PACKABLE]
    if len(entries) != len(targets):
        raise InputError(f"{c.path}: the manifest lists {len(entries)} tensors, the graph {len(targets)}; corrupt file")
    total = 0
    plan = []
    for t, entry in zip(targets, entries, strict=True):
        if not isinstance(entry, dict) or entry.get("name") != t.name or entry.get("dims", []) != list(t.dims):
            raise InputError(f"{c.path}: tensor {t.name!r} does not match its manifest entry; the file is corrupt")
        if any(d < 0 for d in t.dims):
            raise InputError(f"{c.path}: tensor {t.name!r} has a negative dimension; the file is corrupt")
        count = math.prod(int(d) for d in t.dims)  # Python ints: a product of huge dims cannot wrap negative
        total += count * 8
        if total > c.max_bytes:
            raise InputError(f"{c.path}: the tensors declare more data than the file can hold; refusing to unpack it")
        plan.append((t, entry, count, str(entry.get("field", "raw_data"))))
    return _Plan(c, graph_bytes, model, plan)


_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError, OverflowError)


def _malformed(c: Any, t: onnx.TensorProto, err: BaseException) -> InputError:
    # a checksum-valid manifest with wrong types or nesting is a corrupt file, not a crash
    detail = str(err) if isinstance(err, ValueError) else f"malformed entry ({type(err).__name__})"
    return InputError(f"{c.path}: tensor {t.name!r}: {detail}; the file is corrupt")


def _decoded(c: Any, t: onnx.TensorProto, entry: dict[str, Any], count: int) -> np.ndarray:
    try:
        read = tensor_decoder(entry, _stream_reader(c, entry, count))
        chunks = tensor_decoder(entry, _stream_reader(c, entry, count, chunked=True))
        return decode_tensor(entry, read, count, chunks)
    except InputError:
        raise
    except _MALFORMED as err:
        raise _malformed(c, t, err) from err


def _raw_size(c: Any, t: onnx.TensorProto, entry: dict[str, Any], count: int) -> int:
    try:
        return raw_size(entry, count)
    except _MALFORMED as err:
        raise _malformed(c, t, err) from err


def _producer(c: Any, t: onnx.TensorProto, entry: dict[str, Any], count: int, nbytes: int) -> Any:
    def produce() -> np.ndarray:
        arr = np.ascontiguousarray(_decoded(c, t, entry, count))
        if arr.nbytes != nbytes:
            raise InputError(f"{c.path}: tensor {t.name!r} decodes to {arr.nbytes} bytes, {nbytes} declared; corrupt")
        return arr

    return produce


def _stream_reader(c: Any, entry: dict[str, Any], count: int, chunked: bool = False) -> Any:
    def read(s: dict[str, Any]) -> Any:
        return (c.chunks if chunked else c.stream)(s, stream_size(entry, str(s.get("role")), count))

    return read


def unpack_to_temp(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    """Unpack ``path`` into a temporary ``.onnx`` file; returns the path and the TemporaryDirectory to keep alive."""
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="tslim-")
    out = Path(tmp.name) / (Path(path).stem + ".onnx")
    unpack_file(path, out)
    return out, tmp
