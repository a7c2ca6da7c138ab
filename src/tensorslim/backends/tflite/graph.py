"""Editing a TFLite ``ModelT``: constants, producers and consumers, new tensors, buffers and operators, and
compaction (dead conversion ops, unused tensors, buffers and operator codes removed; identical constant buffers
stored once, as the converter does).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import numpy as np

from tensorslim.backends.tflite.schema import numpy_dtype, op_code, op_name, schema, tensor_type

__all__ = ["Graph", "compact", "tensor_name"]


def tensor_name(t: Any) -> str:
    """A tensor's name as ``str``."""
    return t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")


def _ints(v: Any) -> list[int]:
    return [] if v is None else [int(x) for x in v]


class Graph:
    """One subgraph of a model, with lookups rebuilt on demand after edits.

    Args:
        model: the ``ModelT`` (edited in place).
        index: the subgraph.
    """

    def __init__(self, model: Any, index: int = 0) -> None:
        self.model = model
        self.index = index
        self.sg = model.subgraphs[index]
        if self.sg.tensors is None:
            self.sg.tensors = []
        if self.sg.operators is None:
            self.sg.operators = []
        if model.buffers is None:
            model.buffers = [schema().BufferT()]

    @property
    def tensors(self) -> list[Any]:
        """The subgraph's tensors."""
        return list(self.sg.tensors)

    @property
    def ops(self) -> list[Any]:
        """The subgraph's operators in execution order."""
        return list(self.sg.operators)

    def op_type(self, op: Any) -> str:
        """Builtin name of ``op`` (``"CONV_2D"``)."""
        return op_name(self.model.operatorCodes[op.opcodeIndex])

    def inputs(self) -> list[int]:
        """Subgraph input tensor indices."""
        return _ints(self.sg.inputs)

    def outputs(self) -> list[int]:
        """Subgraph output tensor indices."""
        return _ints(self.sg.outputs)

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        out: dict[int, int] = {}
        for i, op in enumerate(self.sg.operators):
            for t in _ints(op.outputs):
                out[t] = i
        return out

    def consumers(self) -> dict[int, list[tuple[int, int]]]:
        """Tensor index -> ``(operator index, input position)`` of every read."""
        out: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for i, op in enumerate(self.sg.operators):
            for pos, t in enumerate(_ints(op.inputs)):
                if t >= 0:
                    out[t].append((i, pos))
        return out

    def buffer_bytes(self, t: int) -> bytes | None:
        """Raw constant data of tensor ``t``, or ``None`` when it has none."""
        buf = self.model.buffers[self.sg.tensors[t].buffer]
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        return np.asarray(buf.data, dtype=np.uint8).tobytes()

    def is_constant(self, t: int) -> bool:
        """Whether tensor ``t`` holds constant data."""
        return t >= 0 and self.buffer_bytes(t) is not None and not self.sg.tensors[t].isVariable

    def constant(self, t: int) -> np.ndarray | None:
        """Constant data of tensor ``t`` as an array of its shape, or ``None``."""
        raw = self.buffer_bytes(t)
        tensor = self.sg.tensors[t]
        dtype = numpy_dtype(tensor.type)
        if raw is None or dtype is None or tensor.sparsity is not None:
            return None
        shape = tuple(_ints(tensor.shape))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def add_buffer(self, array: np.ndarray | None) -> int:
        """Append a buffer holding ``array``'s bytes (little endian); returns its index."""
        buf = schema().BufferT()
        if array is not None:
            buf.data = np.frombuffer(
                np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes(), np.uint8
            )
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def add_tensor(
        self,
        name: str,
        shape: list[int],
        type_name: str,
        *,
        buffer: int = 0,
        quantization: Any = None,
        shape_signature: list[int] | None = None,
    ) -> int:
        """Append a tensor; returns its index."""
        t = schema().TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = tensor_type(type_name)
        t.buffer = buffer
        t.quantization = quantization
        if shape_signature is not None:
            t.shapeSignature = np.asarray(shape_signature, dtype=np.int32)
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def opcode_index(self, name: str, version: int = 1) -> int:
        """Index of the operator code of builtin ``name``, added if missing, its version raised to ``version``."""
        code = op_code(name)
        codes = self.model.operatorCodes
        for i, c in enumerate(codes):
            if op_name(c) == name:
                c.version = max(int(c.version), version)
                return i
        c = schema().OperatorCodeT()
        c.builtinCode = code
        c.deprecatedBuiltinCode = min(code, 127)
        c.version = version
        codes.append(c)
        return len(codes) - 1

    def bump_version(self, op: Any, version: int) -> None:
        """Raise the version of ``op``'s operator code to at least ``version``."""
        c = self.model.operatorCodes[op.opcodeIndex]
        c.version = max(int(c.version), version)

    def new_op(self, name: str, inputs: list[int], outputs: list[int], *, version: int = 1) -> Any:
        """A new operator (not yet placed in the operator list)."""
        op = schema().OperatorT()
        op.opcodeIndex = self.opcode_index(name, version)
        op.inputs = np.asarray(inputs, dtype=np.int32)
        op.outputs = np.asarray(outputs, dtype=np.int32)
        return op


def quant_params(scale: np.ndarray, zero_point: np.ndarray, axis: int | None) -> Any:
    """A ``QuantizationParametersT`` (per tensor when ``axis`` is ``None``)."""
    q = schema().QuantizationParametersT()
    q.scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_point, dtype=np.int64).reshape(-1)
    q.quantizedDimension = 0 if axis is None else int(axis)
    return q


def _used_tensors(model: Any, si: int) -> set[int]:
    sg = model.subgraphs[si]
    used = set(_ints(sg.inputs)) | set(_ints(sg.outputs))
    for op in sg.operators or []:
        used.update(t for t in [*_ints(op.inputs), *_ints(op.outputs), *_ints(op.intermediates)] if t >= 0)
    for sd in model.signatureDefs or []:
        if sd.subgraphIndex == si:
            used.update(int(x.tensorIndex) for x in [*(sd.inputs or []), *(sd.outputs or [])])
    return used


def _remove_dead_conversions(model: Any, si: int) -> None:
    """Drop QUANTIZE/DEQUANTIZE operators whose outputs nothing reads (left behind by rewrites)."""
    g = Graph(model, si)
    while True:
        consumers = g.consumers()
        outs = set(g.outputs())
        dead = [
            i
            for i, op in enumerate(g.sg.operators)
            if g.op_type(op) in ("DEQUANTIZE", "QUANTIZE")
            and all(t not in consumers and t not in outs for t in _ints(op.outputs))
        ]
        if not dead:
            return
        g.sg.operators = [op for i, op in enumerate(g.sg.operators) if i not in set(dead)]


def compact(model: Any) -> None:
    """Remove dead conversion ops, unused tensors, buffers and operator codes; store identical buffers once.

    Indices in operators, subgraph inputs/outputs and signature definitions are remapped. Buffer 0 (the
    empty sentinel) and metadata buffers are kept.
    """
    for si in range(len(model.subgraphs)):
        _remove_dead_conversions(model, si)
        sg = model.subgraphs[si]
        used = sorted(_used_tensors(model, si))
        remap = {old: new for new, old in enumerate(used)}
        sg.tensors = [sg.tensors[i] for i in used]

        def m(v: Any, remap: dict[int, int] = remap) -> Any:
            return None if v is None else np.asarray([remap[int(x)] if int(x) >= 0 else -1 for x in v], np.int32)

        for op in sg.operators or []:
            op.inputs, op.outputs = m(op.inputs), m(op.outputs)
            if op.intermediates is not None:
                op.intermediates = m(op.intermediates)
        sg.inputs, sg.outputs = m(sg.inputs), m(sg.outputs)
        for sd in model.signatureDefs or []:
            if sd.subgraphIndex == si:
                for x in [*(sd.inputs or []), *(sd.outputs or [])]:
                    x.tensorIndex = remap[int(x.tensorIndex)]
    _compact_buffers(model)
    _compact_opcodes(model)


def _compact_buffers(model: Any) -> None:
    meta = {int(md.buffer) for md in model.metadata or []}
    first_by_hash: dict[bytes, int] = {}
    alias: dict[int, int] = {}
    for bi, buf in enumerate(model.buffers):
        if bi == 0 or bi in meta or buf is None or buf.data is None or len(buf.data) == 0:
            continue
        digest = hashlib.sha256(np.asarray(buf.data, dtype=np.uint8).tobytes()).digest()
        alias[bi] = first_by_hash.setdefault(digest, bi)
    tensors = [t for sg in model.subgraphs for t in sg.tensors or []]
    for t in tensors:
        t.buffer = alias.get(int(t.buffer), int(t.buffer))
    used = {0} | meta | {int(t.buffer) for t in tensors}
    keep = sorted(used)
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for t in tensors:
        t.buffer = remap[int(t.buffer)]
    for md in model.metadata or []:
        md.buffer = remap[int(md.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.asarray([remap[int(b)] for b in model.metadataBuffer if int(b) in remap], np.int32)


def _compact_opcodes(model: Any) -> None:
    used = sorted({int(op.opcodeIndex) for sg in model.subgraphs for op in sg.operators or []})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for sg in model.subgraphs:
        for op in sg.operators or []:
            op.opcodeIndex = remap[int(op.opcodeIndex)]
