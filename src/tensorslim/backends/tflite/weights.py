"""Weight enumeration for TFLite models: every constant float tensor read by an operator as its weight, with
the operator, the input position, the output-channel axis and the buffer behind it.

A weight is identified by the buffer holding its data, so a buffer shared by several tensors (or a tensor
read by several operators) is one weight with several uses. Weights stored as float16 behind a
``DEQUANTIZE`` operator (a float16 model) are found through the ``DEQUANTIZE`` and read from the float16 data.

Weight roles (input position -> output-channel axis):

==============================  =====================  ==========================================
operator                        weight input(s)        channel axis
==============================  =====================  ==========================================
FULLY_CONNECTED                 1 ``[out, in]``        0
CONV_2D                         1 ``[out, h, w, in]``  0
DEPTHWISE_CONV_2D               1 ``[1, h, w, out]``   3
TRANSPOSE_CONV                  1 ``[out, h, w, in]``  0
BATCH_MATMUL (constant operand) 1 (or 0)               none (per tensor)
EMBEDDING_LOOKUP                1 ``[rows, ...]``      none (per tensor)
GATHER (constant params)        0                      none (per tensor)
UNIDIRECTIONAL_SEQUENCE_LSTM    1-11, 16               none (per tensor)
==============================  =====================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorslim.backends.tflite.graph import Graph, tensor_name
from tensorslim.backends.tflite.schema import type_name

__all__ = ["BIAS_INPUT", "WEIGHT_ROLES", "TfliteWeight", "WeightUse", "find_weights", "weight_role"]

#: Operator -> (weight input positions, channel axis or ``None`` for per-tensor only).
WEIGHT_ROLES: dict[str, tuple[tuple[int, ...], int | None]] = {
    "FULLY_CONNECTED": ((1,), 0),
    "CONV_2D": ((1,), 0),
    "DEPTHWISE_CONV_2D": ((1,), 3),
    "TRANSPOSE_CONV": ((1,), 0),
    "BATCH_MATMUL": ((1, 0), None),
    "EMBEDDING_LOOKUP": ((1,), None),
    "GATHER": ((0,), None),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16), None),
}
#: Operator -> input position of its bias.
BIAS_INPUT: dict[str, int] = {"FULLY_CONNECTED": 2, "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "TRANSPOSE_CONV": 3}


def weight_role(op_type: str, position: int) -> tuple[bool, int | None]:
    """Whether input ``position`` of ``op_type`` is a weight, and its channel axis."""
    role = WEIGHT_ROLES.get(op_type)
    if role is None or position not in role[0]:
        return False, None
    return True, role[1]


@dataclass(frozen=True)
class WeightUse:
    """One read of a weight by an operator.

    Attributes:
        op_index: position of the operator in the subgraph.
        op_type: its builtin name.
        position: the input position the weight is read at.
        tensor: the tensor index read (the float32 tensor, the ``DEQUANTIZE`` output for float16 weights).
        is_weight: whether the position is a weight role (otherwise a plain constant operand).
        channel_axis: the output-channel axis, ``None`` where only per-tensor parameters apply.
    """

    op_index: int
    op_type: str
    position: int
    tensor: int
    is_weight: bool
    channel_axis: int | None

    @property
    def label(self) -> str:
        """``OP#index``, for reports."""
        return f"{self.op_type}#{self.op_index}"


@dataclass
class TfliteWeight:
    """A constant float tensor (or a group of tensors sharing one buffer) and every read of it.

    Attributes:
        name: the first tensor's name.
        buffer: the buffer holding the data (the float16 buffer for float16 weights).
        tensors: the float32 tensors operators read (shared buffers give several).
        array: the values as float32.
        source_type: ``FLOAT32``, or ``FLOAT16`` for weights behind ``DEQUANTIZE``.
        dequantize_ops: the ``DEQUANTIZE`` operators that turn float16 data into the tensors read.
        uses: every read by an operator.
        stored_bytes: bytes of the data as stored.
    """

    name: str
    buffer: int
    tensors: list[int]
    array: np.ndarray
    source_type: str
    dequantize_ops: list[int] = field(default_factory=list)
    uses: list[WeightUse] = field(default_factory=list)
    stored_bytes: int = 0

    @property
    def weight_uses(self) -> list[WeightUse]:
        """Reads at a weight role."""
        return [u for u in self.uses if u.is_weight]

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape."""
        return tuple(int(d) for d in self.array.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self.array.size)


def find_weights(model: Any, subgraph: int = 0) -> list[TfliteWeight]:
    """Every constant float tensor read by an operator in ``subgraph``, grouped by buffer, in tensor order."""
    g = Graph(model, subgraph)
    consumers = g.consumers()
    producers = g.producers()
    by_buffer: dict[int, TfliteWeight] = {}
    order: list[int] = []
    for t_idx, tensor in enumerate(g.sg.tensors):
        reads = consumers.get(t_idx, [])
        if not reads:
            continue
        source, deq = t_idx, None
        ttype = type_name(tensor.type)
        if ttype == "FLOAT32" and t_idx in producers:
            prod = g.sg.operators[producers[t_idx]]
            src = int(prod.inputs[0]) if g.op_type(prod) == "DEQUANTIZE" else -1
            if src >= 0 and type_name(g.sg.tensors[src].type) == "FLOAT16" and g.is_constant(src):
                source, deq = src, producers[t_idx]
            else:
                continue
        elif ttype not in ("FLOAT32",) or not g.is_constant(t_idx):
            continue
        arr = g.constant(source)
        if arr is None:
            continue
        buf = int(g.sg.tensors[source].buffer)
        w = by_buffer.get(buf)
        if w is None:
            w = TfliteWeight(
                name=tensor_name(g.sg.tensors[source]),
                buffer=buf,
                tensors=[],
                array=arr.astype(np.float32),
                source_type=type_name(g.sg.tensors[source].type),
                stored_bytes=int(arr.nbytes),
            )
            by_buffer[buf] = w
            order.append(buf)
        if t_idx not in w.tensors:
            w.tensors.append(t_idx)
        if deq is not None and deq not in w.dequantize_ops:
            w.dequantize_ops.append(deq)
        for op_i, pos in reads:
            op_type = g.op_type(g.sg.operators[op_i])
            is_weight, axis = weight_role(op_type, pos)
            if op_type == "BATCH_MATMUL" and pos == 0 and g.is_constant(int(g.sg.operators[op_i].inputs[1])):
                is_weight = False  # both operands constant: not a weight
            w.uses.append(WeightUse(op_i, op_type, pos, t_idx, is_weight, axis))
    return [by_buffer[b] for b in order]
