"""Reading and writing ``.tflite`` flatbuffers with clear errors, deterministic bytes and atomic writes.

* :func:`load_model` reads a file into the schema's object API (``ModelT``) and turns every way a file can be
  wrong (missing, not a flatbuffer, another flatbuffer type, truncated, an unknown schema version, indices
  that point nowhere, constant data shorter than its tensor) into an :class:`~tensorslim.errors.InputError`
  that names the file and the fix. The file is only read.
* :func:`serialize` packs a model back into bytes: the same model always gives the same bytes, and every
  constant buffer starts on a 16-byte boundary, as the converter writes them.
* :func:`save_model` writes through a temporary file in the destination folder and renames it into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from tensorslim._files import check_output_path, write_bytes_atomic
from tensorslim.backends.tflite.safety import check_operators, check_tensor_sizes
from tensorslim.backends.tflite.schema import FILE_IDENTIFIER, SCHEMA_VERSION, numpy_dtype, schema, type_name
from tensorslim.errors import InputError

__all__ = ["check_output_path", "is_tflite", "load_model", "model_from_bytes", "save_model", "serialize"]

_ALIGN = 16
_MAX_FLATBUFFER = 2**31 - 1


def is_tflite(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TFLite model: a ``.tflite`` extension or the ``TFL3`` flatbuffer identifier."""
    p = Path(path)
    if p.suffix.lower() == ".tflite":
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == FILE_IDENTIFIER


def load_model(path: str | os.PathLike[str]) -> Any:
    """Read a ``.tflite`` file into a ``ModelT``.

    Raises:
        InputError: the file is missing, empty, not a TFLite flatbuffer, truncated or corrupt, or written
            with a schema version other than 3.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a .tflite file; pass the path of the model file")
    data = p.read_bytes()
    return model_from_bytes(data, label=str(p))


def model_from_bytes(data: bytes, *, label: str = "model") -> Any:
    """Parse and check serialized TFLite bytes (see :func:`load_model`)."""
    if len(data) == 0:
        raise InputError(f"{label}: the file is empty; re-convert or re-download the model")
    if len(data) < 8:
        raise InputError(f"{label}: {len(data)} bytes is too small to be a TFLite flatbuffer; the file is truncated")
    ident = data[4:8]
    if ident != FILE_IDENTIFIER:
        raise InputError(
            f"{label}: not a TFLite flatbuffer (file identifier {ident!r}, expected {FILE_IDENTIFIER!r}); "
            "convert the model to .tflite first, or check that the download completed"
        )
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # the flatbuffers runtime raises struct.error, IndexError, ValueError...
        raise InputError(
            f"{label}: the TFLite flatbuffer cannot be read ({type(e).__name__}); the file is truncated or corrupt, "
            "re-convert or re-download it"
        ) from e
    if model.version != SCHEMA_VERSION:
        raise InputError(
            f"{label}: TFLite schema version {model.version} is not supported (LiteRT reads version "
            f"{SCHEMA_VERSION}); re-convert the model with a current converter"
        )
    _check_structure(model, data, label)
    return model


def _check_structure(model: Any, data: bytes, label: str) -> None:
    def bad(what: str) -> InputError:
        return InputError(f"{label}: {what}; the file is truncated or corrupt, re-convert or re-download it")

    if not model.subgraphs:
        raise bad("the model has no subgraph")
    buffers = model.buffers or []
    opcodes = model.operatorCodes or []
    for bi, buf in enumerate(buffers):
        if buf is not None and buf.offset > 1:
            if buf.offset + buf.size > len(data):
                raise bad(f"buffer {bi} points past the end of the file")
            # data stored after the flatbuffer (models near 2 GB): bring it inline
            buf.data = np.frombuffer(data, dtype=np.uint8, count=buf.size, offset=buf.offset).copy()
            buf.offset, buf.size = 0, 0
    for si, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        n = len(tensors)
        for ti, t in enumerate(tensors):
            if not 0 <= t.buffer < max(1, len(buffers)):
                raise bad(f"subgraph {si} tensor {ti} refers to buffer {t.buffer} of {len(buffers)}")
            buf = buffers[t.buffer] if buffers else None
            if buf is None or buf.data is None or len(buf.data) == 0:
                continue
            dtype = numpy_dtype(t.type)
            if dtype is None or t.sparsity is not None:
                continue
            count = int(np.prod(t.shape)) if t.shape is not None and len(t.shape) else 1
            if len(buf.data) != count * dtype.itemsize:
                raise bad(
                    f"constant tensor {_name(t)!r} holds {len(buf.data)} bytes, its shape {list(t.shape)} of "
                    f"{type_name(t.type)} needs {count * dtype.itemsize}"
                )
        for oi, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < len(opcodes):
                raise bad(f"subgraph {si} operator {oi} uses operator code {op.opcodeIndex} of {len(opcodes)}")
            for idx in [*(op.inputs if op.inputs is not None else []), *(op.outputs if op.outputs is not None else [])]:
                if not -1 <= int(idx) < n:
                    raise bad(f"subgraph {si} operator {oi} refers to tensor {int(idx)} of {n}")
        for idx in [*(sg.inputs if sg.inputs is not None else []), *(sg.outputs if sg.outputs is not None else [])]:
            if not 0 <= int(idx) < n:
                raise bad(f"subgraph {si} input/output refers to tensor {int(idx)} of {n}")
    check_operators(model, label)
    check_tensor_sizes(model, label)


def _name(t: Any) -> str:
    return t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name)


class _AlignedBuffer:
    """A ``BufferT`` stand-in whose data vector starts on a 16-byte boundary."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf

    def Pack(self, builder: flatbuffers.Builder) -> int:  # the object API calls it by this name
        s = schema()
        data = self.buf.data
        off = None
        if data is not None:
            payload = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), _ALIGN)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            off = builder.EndVector()
        s.BufferStart(builder)
        if off is not None:
            s.BufferAddData(builder, off)
        s.BufferAddOffset(builder, self.buf.offset)
        s.BufferAddSize(builder, self.buf.size)
        return int(s.BufferEnd(builder))


def serialize(model: Any) -> bytes:
    """Pack ``model`` into TFLite flatbuffer bytes (deterministic; constant buffers 16-byte aligned).

    Raises:
        InputError: the model would pass the 2 GB flatbuffer limit.
    """
    import copy

    total = sum(len(b.data) for b in (model.buffers or []) if b is not None and b.data is not None)
    if total >= _MAX_FLATBUFFER - 2**24:
        raise InputError(
            f"the model holds {total / 1e9:.2f} GB of constants; .tflite files over 2 GB are not supported"
        )
    shallow = copy.copy(model)
    shallow.buffers = [_AlignedBuffer(b) for b in (model.buffers or [])]
    builder = flatbuffers.Builder(1024 + total + total // 8)
    root = shallow.Pack(builder)
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def save_model(model: Any, path: str | os.PathLike[str], *, verify: Callable[[Path], None] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Args:
        model: the ``ModelT``.
        path: destination file.
        verify: called with the written temporary file before it replaces anything (raise to refuse it).

    Returns:
        The destination path.
    """
    return write_bytes_atomic(path, serialize(model), verify=verify)
