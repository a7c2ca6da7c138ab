"""``.tslim`` packs of ``.tflite`` models, unpacked to the exact bytes of the file that was packed.

The flatbuffer is cut in two: its constant buffers (each coded by :func:`tensorslim.pack.tensors.encode_tensor`
as the tensor that reads it: float32 weights as a palette, a sparse mask or byte planes, int8 codes as symbols)
and the skeleton, the file with those buffers' bytes cut out (operators, tensors, names, small buffers),
compressed as the graph stream. Unpacking splices each decoded buffer back at the offset it was cut from::

    model.tflite = skeleton[0:a] + buffer_1 + skeleton[a:b] + buffer_2 + ...   (manifest: start of each buffer)

The container and its checks are :mod:`tensorslim.pack.format`'s (a truncated or modified file fails there
with the ONNX packs' messages); the manifest's ``format`` is ``tensorslim-pack-tflite`` and it records the
SHA-256 of the ``.tflite`` bytes, checked after unpacking.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnx import numpy_helper

from tensorslim._files import check_output_path, write_bytes_atomic
from tensorslim.algorithms.entropy import DecodeError, encode
from tensorslim.errors import InputError
from tensorslim.pack.format import StreamBody, peek_manifest, read_container
from tensorslim.pack.tensors import (
    decode_tensor,
    encode_tensor,
    map_largest_first,
    pack_workers,
    stream_size,
    tensor_decoder,
)

__all__ = ["TFLITE_PACK", "is_tflite_pack", "pack_tflite", "unpack_tflite"]

#: The manifest's ``format`` of a packed ``.tflite`` model.
TFLITE_PACK = "tensorslim-pack-tflite"
_IN_GRAPH = 2048  # buffers of at most this many bytes stay in the skeleton


def is_tflite_pack(path: str | os.PathLike[str]) -> bool:
    """Whether the ``.tslim`` file at ``path`` holds a ``.tflite`` model (by its manifest; unchecked)."""
    m = peek_manifest(path)
    return m is not None and m.get("format") == TFLITE_PACK


def _regions(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, length, buffer index)`` of every constant buffer's bytes in the file, by start, not overlapping."""
    from tensorslim.backends.tflite.schema import schema

    s = schema()
    root = s.Model.GetRootAs(data, 0)
    out = []
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        o = buf._tab.Offset(4)  # the data vector
        if o:
            start, n = buf._tab.Vector(o), buf._tab.VectorLen(o)
        else:
            start, n = int(buf.Offset()), int(buf.Size())  # data after the flatbuffer (models near 2 GB)
            if start <= 1:
                continue
        if n > _IN_GRAPH:
            out.append((int(start), int(n), i))
    out.sort()
    kept: list[tuple[int, int, int]] = []
    for r in out:
        if not kept or r[0] >= kept[-1][0] + kept[-1][1]:
            kept.append(r)
    return kept


def _buffer_types(model: Any) -> dict[int, tuple[np.dtype, list[int]]]:
    """Buffer index -> the dtype and shape of the first tensor that reads it whole."""
    from tensorslim.backends.tflite.schema import numpy_dtype

    out: dict[int, tuple[np.dtype, list[int]]] = {}
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            b = int(t.buffer)
            buf = model.buffers[b] if b < len(model.buffers) else None
            if b in out or buf is None or buf.data is None or t.sparsity is not None:
                continue
            dt = numpy_dtype(t.type)
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            if dt is not None and math.prod(shape) * dt.itemsize == len(buf.data):
                out[b] = (dt, shape)
    return out


def pack_tflite(model: str | os.PathLike[str], output: str | os.PathLike[str], *, config: Any = None) -> Any:
    """Pack a ``.tflite`` file into one ``.tslim`` file (written atomically; the input is never modified).

    Args:
        model: the ``.tflite`` file.
        output: the ``.tslim`` file to write.
        config: a :class:`~tensorslim.pack.PackConfig` (level, codecs, compare).

    Returns:
        The :class:`~tensorslim.pack.PackReport` (``onnx_bytes`` is the ``.tflite`` file's size).

    Raises:
        InputError: unreadable model or bad output path.
    """
    from tensorslim.backends.tflite.io import load_model
    from tensorslim.pack import PackConfig, write_pack

    start_time = time.perf_counter()
    cfg = config or PackConfig()
    check_output_path(output, model)
    parsed = load_model(model)  # checked: an InputError names what is wrong with the file
    data = Path(model).read_bytes()
    types = _buffer_types(parsed)
    body = StreamBody()
    entries: list[dict[str, Any]] = []
    skeleton = bytearray()
    pos = 0
    weights = 0

    regions = list(_regions(data))

    def encoded(region: tuple[int, int, int]) -> tuple[Any, np.dtype]:
        start, n, index = region
        raw = np.frombuffer(data, np.uint8, count=n, offset=start)
        dt, shape = types.get(index, (np.dtype(np.uint8), [n]))
        arr = raw.view(dt.newbyteorder("<")).astype(dt).reshape(shape)
        tensor = numpy_helper.from_array(arr, f"buffer{index}")
        return encode_tensor(tensor, level=cfg.level, codecs=cfg.codecs), arr.dtype

    results = map_largest_first(encoded, regions, [n for _, n, _ in regions], pack_workers(cfg.workers))
    for (start, n, index), (enc, dt) in zip(regions, results, strict=True):
        if enc is None:  # pragma: no cover - every numpy dtype here has an encoding
            continue
        if dt.kind == "f" or dt.itemsize == 1:
            weights += n // dt.itemsize
        skeleton += data[pos:start]
        pos = start + n
        enc.entry.update(start=start, buffer=index, streams=[body.add(*s) for s in enc.streams])
        entries.append(enc.entry)
    skeleton += data[pos:]
    g_codec, g_payload = encode(bytes(skeleton), codecs=[c for c in cfg.codecs if c != "rans"],
                                zstd_level=max(cfg.level, 19))  # fmt: skip
    graph = body.add("graph", g_codec, len(skeleton), g_payload)
    manifest = {"format": TFLITE_PACK, "graph": graph, "tensors": entries, "weights": weights, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    return write_pack(output, manifest, body, data, weights, cfg, start_time)


def unpack_tflite(
    path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *, max_expansion: float = 4096.0
) -> bytes:
    """The exact ``.tflite`` bytes packed into ``path`` (also written atomically to ``output`` when given).

    Raises:
        InputError: missing, truncated, tampered (checksum mismatch), newer-version, hostile or corrupt files;
            nothing is written then.
    """
    if output is not None:
        check_output_path(output, path)
    c = read_container(path, max_expansion=max_expansion)
    m = c.manifest

    def corrupt(what: str) -> InputError:
        return InputError(f"{c.path}: {what}; the file is corrupt")

    if m.get("format") != TFLITE_PACK:
        raise InputError(f"{c.path}: the manifest is not a packed .tflite manifest; the file is corrupt")
    total, digest = m.get("size"), m.get("sha256")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= c.max_bytes:
        raise corrupt(f"the declared model size {total!r} is not possible")
    skeleton = c.stream(m["graph"])
    out = bytearray()
    pos = declared = 0
    for entry in m["tensors"]:
        try:
            start = int(entry["start"])
            count = math.prod(int(d) for d in entry["dims"])
            if start < len(out) or start - len(out) > len(skeleton) - pos or count < 0:
                raise ValueError("a buffer lies outside the model")
            declared += count * 8
            if declared > c.max_bytes:
                raise ValueError("the buffers declare more data than the file can hold")

            def read(s: dict[str, Any], entry: dict[str, Any] = entry, count: int = count) -> bytes:
                return c.stream(s, stream_size(entry, str(s.get("role")), count))

            arr = decode_tensor(entry, tensor_decoder(entry, read), count)
        except InputError:
            raise
        except (DecodeError, KeyError, TypeError, AttributeError, IndexError, ValueError, OverflowError) as e:
            detail = str(e) if isinstance(e, ValueError | DecodeError) else f"malformed entry ({type(e).__name__})"
            raise corrupt(f"buffer {entry.get('buffer') if isinstance(entry, dict) else '?'}: {detail}") from e
        gap = start - len(out)
        out += skeleton[pos : pos + gap]
        pos += gap
        out += np.ascontiguousarray(arr).tobytes()
        if len(out) > total:
            raise corrupt(f"the buffers hold more than the {total:,} bytes declared")
    out += skeleton[pos:]
    if len(out) != total or hashlib.sha256(out).hexdigest() != digest:
        raise corrupt(f"the unpacked model ({len(out):,} bytes) is not the one packed ({total:,} bytes)")
    if output is not None:
        write_bytes_atomic(output, bytes(out))
    return bytes(out)
