"""Writing an unpacked model without holding it in memory: the graph's protobuf bytes, tensor data spliced in.

An unpacked ``.tslim`` is the packed graph (every tensor's data removed) with each tensor's bytes put back.
Building that as one ``ModelProto`` and serializing it holds the data twice or more (the decoded arrays, the
protobuf's copy, the serialized bytes). Here the graph's wire bytes are walked instead: the messages that lead
to a packed tensor (model -> graph -> node -> attribute -> tensor, subgraphs included) are re-emitted with their
new lengths, everything else is copied as it is, and each tensor's data is decoded only when the writer reaches
it, written, and dropped. The bytes are those ``ModelProto.SerializeToString`` gives for the filled model (each
tensor message itself is serialized by protobuf, its ``raw_data`` field spliced in where protobuf puts it).

Anything unexpected in the wire bytes (a field repeated that protobuf would merge, a group, a tensor that is
not where the parsed model says) raises :class:`Unsupported`, and the caller falls back to the in-memory path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import onnx

__all__ = ["Deferred", "Path_", "Unsupported", "layout", "tensor_paths", "write_pieces"]

Path_ = tuple[tuple[int, int], ...]  # (field number, occurrence) from the ModelProto down

# the message fields that can lead to a tensor: kind -> {field number: child kind}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph"},  # ModelProto.graph
    "graph": {1: "node", 5: "tensor"},  # GraphProto.node, .initializer
    "node": {5: "attr"},  # NodeProto.attribute
    "attr": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph"},  # AttributeProto.t, .g, .tensors, .graphs
}
_SINGULAR = {("model", 7), ("attr", 5), ("attr", 6)}  # protobuf merges repeats of these: not handled here
_RAW_DATA = 9  # TensorProto.raw_data


class Unsupported(Exception):
    """The wire bytes are not laid out as this writer expects; use the in-memory path."""


@dataclass
class Deferred:
    """A tensor's data, decoded when written: ``produce()`` returns a C-contiguous array of ``nbytes``."""

    produce: Callable[[], Any]
    nbytes: int


def tensor_paths(model: onnx.ModelProto) -> Iterator[tuple[Path_, onnx.TensorProto]]:
    """Every tensor of :func:`tensorslim.pack.tensors.iter_tensors`, in its order, with its wire path."""

    def walk(g: onnx.GraphProto, prefix: Path_) -> Iterator[tuple[Path_, onnx.TensorProto]]:
        for i, t in enumerate(g.initializer):
            yield (*prefix, (5, i)), t
        for j, n in enumerate(g.node):
            for k, a in enumerate(n.attribute):
                p: Path_ = (*prefix, (1, j), (5, k))
                if a.type == onnx.AttributeProto.TENSOR:
                    yield (*p, (5, 0)), a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    for m, t in enumerate(a.tensors):
                        yield (*p, (10, m)), t
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from walk(a.g, (*p, (6, 0)))
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for m, s in enumerate(a.graphs):
                        yield from walk(s, (*p, (11, m)))

    yield from walk(model.graph, ((7, 0),))


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Unsupported("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(field, wire type, start of the field, start of its value, end)`` of each field in ``buf[start:end]``."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        value = pos
        if wt == 0:
            _, pos = _varint(buf, pos, end)
        elif wt == 1:
            pos += 8
        elif wt == 5:
            pos += 4
        elif wt == 2:
            length, value = _varint(buf, pos, end)
            pos = value + length
        else:
            raise Unsupported(f"wire type {wt}")
        if pos > end or field == 0:
            raise Unsupported("field runs past its message")
        yield field, wt, first, value, pos


Piece = bytes | memoryview | Deferred


def _tensor_pieces(t: onnx.TensorProto, data: Deferred) -> tuple[list[Piece], int]:
    """The tensor message with its ``raw_data`` deferred: protobuf serializes it with an empty field, which
    is replaced by the tag, the real length and the data."""
    shell = onnx.TensorProto()
    shell.CopyFrom(t)
    shell.raw_data = b""
    raw = shell.SerializeToString()
    view = memoryview(raw)
    spot = [(first, end) for field, wt, first, _, end in _fields(view, 0, len(raw)) if field == _RAW_DATA and wt == 2]
    if len(spot) != 1:
        raise Unsupported("raw_data not found once in the tensor shell")
    first, end = spot[0]
    head = raw[first:end][:-1] + _encode_varint(data.nbytes)  # the tag, then the real length
    pieces: list[Piece] = [raw[:first], head, data, raw[end:]]
    return pieces, len(raw) - (end - first) + len(head) + data.nbytes


def layout(
    graph: bytes, targets: dict[Path_, tuple[onnx.TensorProto, Deferred | bytes]]
) -> tuple[list[Piece], int]:
    """The pieces of the filled model's serialization and its total size.

    Args:
        graph: the packed graph's bytes (a serialized ``ModelProto`` without tensor data).
        targets: per tensor path, the parsed (stripped) tensor and either its deferred raw data or the
            complete serialized tensor message (tensors whose data lives in a typed field).
    """
    buf = memoryview(graph)
    prefixes = {p[:i] for p in targets for i in range(1, len(p))}
    found: set[Path_] = set()

    def rebuild(start: int, end: int, kind: str, path: Path_) -> tuple[list[Piece], int]:
        pieces: list[Piece] = []
        size = 0
        seen: dict[int, int] = {}
        children = _CHILDREN.get(kind, {})
        for field, wt, first, value, stop in _fields(buf, start, end):
            child = children.get(field) if wt == 2 else None
            if child is None:
                pieces.append(buf[first:stop])
                size += stop - first
                continue
            occ = seen.get(field, 0)
            seen[field] = occ + 1
            if occ and (kind, field) in _SINGULAR:
                raise Unsupported("a singular message field appears twice")
            here = (*path, (field, occ))
            if here in targets:
                t, data = targets[here]
                found.add(here)
                sub, sub_size = ([data], len(data)) if isinstance(data, bytes) else _tensor_pieces(t, data)
            elif here in prefixes:
                sub, sub_size = rebuild(value, stop, child, here)
            else:
                pieces.append(buf[first:stop])
                size += stop - first
                continue
            tag = _tag_bytes(buf, first, value)
            length = _encode_varint(sub_size)
            pieces += [tag, length, *sub]
            size += len(tag) + len(length) + sub_size
        return pieces, size

    pieces, size = rebuild(0, len(buf), "model", ())
    if found != set(targets):
        raise Unsupported("a packed tensor is not where the parsed model has it")
    return pieces, size


def _tag_bytes(buf: memoryview, first: int, value: int) -> bytes:
    """The tag of the length-delimited field starting at ``first`` (its old length varint left out)."""
    _, after_tag = _varint(buf, first, value)
    return bytes(buf[first:after_tag])


def write_pieces(f: BinaryIO, pieces: list[Piece]) -> None:
    """Write the pieces in order, decoding each deferred tensor just before it is written."""
    for p in pieces:
        if isinstance(p, Deferred):
            arr = p.produce()
            f.write(memoryview(arr).cast("B"))
            del arr
        else:
            f.write(p)
