"""Enumerate every weight a technique can touch, wherever it lives in an ONNX model.

A weight is a constant float tensor that feeds a weight input of a known op. It can live in:

* the initializers of the main graph or of a subgraph (``If``/``Loop``/``Scan`` bodies),
* the ``value`` attribute of a ``Constant`` node (exporters that fold weights into Constant nodes, such as
  the OCR models of ``rapidocr-onnxruntime``),

and it can be shared by several nodes, in the same graph or in nested subgraphs. For each use we record
the consuming node, the input slot, the role of the tensor for that op and the output-channel axis, which
is what per-channel quantization and channel pruning need.

The result is plain data (:class:`WeightInfo`), decided once and applied by passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["GraphScope", "WeightInfo", "WeightRole", "WeightUse", "find_weights", "iter_graphs"]


class WeightRole(StrEnum):
    """What a constant tensor is to the node that consumes it."""

    CONV = "conv"
    CONV_TRANSPOSE = "conv_transpose"
    GEMM = "gemm"
    MATMUL = "matmul"  # constant right operand B of MatMul
    MATMUL_LHS = "matmul_lhs"  # constant left operand A of MatMul
    EMBEDDING = "embedding"  # data input of Gather
    RNN_W = "rnn_input_weight"  # W of LSTM / GRU / RNN
    RNN_R = "rnn_recurrence_weight"  # R of LSTM / GRU / RNN
    OTHER = "other"  # consumed by an op that has no weight role (Add, Reshape, Transpose...)


@dataclass(frozen=True)
class GraphScope:
    """One graph of the model: the main graph (``path == ""``) or a subgraph, addressed by its path."""

    graph: onnx.GraphProto
    path: str

    def __hash__(self) -> int:
        return hash(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GraphScope) and other.path == self.path


@dataclass(frozen=True)
class WeightUse:
    """One consumption of a weight by a node."""

    node: onnx.NodeProto
    input_index: int
    role: WeightRole
    channel_axis: int | None
    scope: GraphScope

    @property
    def op_type(self) -> str:
        """The consuming node's op type."""
        return self.node.op_type

    @property
    def node_name(self) -> str:
        """The consuming node's name (its first output when unnamed)."""
        return self.node.name or (self.node.output[0] if self.node.output else self.node.op_type)


@dataclass
class WeightInfo:
    """A constant tensor and every place that consumes it.

    Attributes:
        name: the tensor's value name.
        source: ``"initializer"`` or ``"constant"`` (a ``Constant`` node's ``value``).
        scope: the graph that holds the tensor.
        array: the tensor's values (a NumPy array; shares nothing with the model).
        uses: every consuming node, in any graph that can see the tensor.
        graph_input: the initializer is also a graph input, so it can be overridden at run time.
    """

    name: str
    source: str
    scope: GraphScope
    array: np.ndarray
    uses: list[WeightUse] = field(default_factory=list)
    graph_input: bool = False

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self.array.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored values."""
        return int(self.array.nbytes)

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds floating-point values (the only kind techniques compress)."""
        return self.array.dtype in (np.float32, np.float16, np.float64) or self.array.dtype.name == "bfloat16"

    @property
    def weight_uses(self) -> list[WeightUse]:
        """The uses with a weight role (not :attr:`WeightRole.OTHER`)."""
        return [u for u in self.uses if u.role is not WeightRole.OTHER]

    @property
    def primary(self) -> WeightUse | None:
        """The first use with a weight role, which decides the channel axis."""
        uses = self.weight_uses
        return uses[0] if uses else None


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def classify_use(node: onnx.NodeProto, index: int, ndim: int) -> tuple[WeightRole, int | None]:
    """Role and output-channel axis of input ``index`` of ``node`` for a constant of rank ``ndim``."""
    op = node.op_type
    domain = node.domain or ""
    if domain not in ("", "ai.onnx"):
        return WeightRole.OTHER, None
    if op == "Conv" and index == 1 and ndim >= 3:
        return WeightRole.CONV, 0
    if op == "ConvTranspose" and index == 1 and ndim >= 3:
        return WeightRole.CONV_TRANSPOSE, 1
    if op == "Gemm" and index == 1 and ndim == 2:
        return WeightRole.GEMM, (0 if _attr(node, "transB", 0) else 1)
    if op == "MatMul" and ndim >= 2:
        if index == 1:
            return WeightRole.MATMUL, ndim - 1
        if index == 0:
            return WeightRole.MATMUL_LHS, ndim - 2
    if op == "Gather" and index == 0 and ndim >= 2:
        # an embedding table: its channels are the features (last axis) when rows are gathered
        return WeightRole.EMBEDDING, (ndim - 1 if _attr(node, "axis", 0) % ndim == 0 else None)
    if op in ("LSTM", "GRU", "RNN") and ndim == 3:
        if index == 1:
            return WeightRole.RNN_W, 1
        if index == 2:
            return WeightRole.RNN_R, 1
    return WeightRole.OTHER, None


def iter_graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[GraphScope]:
    """The graph and all its subgraphs, depth first, each with a path such as ``"loop_node/body"``."""
    yield GraphScope(graph, path)
    for node in graph.node:
        for attr in node.attribute:
            label = f"{path}/{node.name or node.op_type}/{attr.name}".lstrip("/")
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g, label)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for i, g in enumerate(attr.graphs):
                    yield from iter_graphs(g, f"{label}[{i}]")


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or (node.domain or "") not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return a.t
    return None


def find_weights(model: onnx.ModelProto) -> list[WeightInfo]:
    """Every constant tensor of the model that at least one node consumes, with all its uses.

    Tensors are returned in a deterministic order: graph by graph, initializers first, then Constant
    nodes, each in file order. ONNX names are unique across a model and its subgraphs, so a name
    identifies a tensor everywhere; a subgraph that consumes an outer-scope weight is listed as a use.
    """
    weights: dict[str, WeightInfo] = {}
    order: list[str] = []
    scopes = list(iter_graphs(model.graph))
    for scope in scopes:
        inputs = {i.name for i in scope.graph.input}
        for init in scope.graph.initializer:
            if init.name in weights or init.name == "":
                continue
            weights[init.name] = WeightInfo(
                init.name, "initializer", scope, numpy_helper.to_array(init), graph_input=init.name in inputs
            )
            order.append(init.name)
        for node in scope.graph.node:
            tensor = _constant_tensor(node)
            if tensor is not None and node.output[0] not in weights:
                weights[node.output[0]] = WeightInfo(node.output[0], "constant", scope, numpy_helper.to_array(tensor))
                order.append(node.output[0])
    for scope in scopes:
        for node in scope.graph.node:
            for idx, name in enumerate(node.input):
                info = weights.get(name)
                if info is None:
                    continue
                role, axis = classify_use(node, idx, info.array.ndim)
                info.uses.append(WeightUse(node, idx, role, axis, scope))
    return [weights[n] for n in order if weights[n].uses]
