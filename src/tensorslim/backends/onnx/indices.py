"""Which integer model inputs index constant tables, and how large those tables are.

Generated inputs (``bench``, ``eval``, ``doctor``, ``profile``, ``optimize`` without data) must keep token ids,
token type ids and positions inside the embedding tables they index, or ONNX Runtime rejects the run. The
table need not be a plain initializer; its shape is followed through the producers quantizers put in front of
it::

    Gather(E, ids)                                  E an initializer or a Constant node
    Gather(DequantizeLinear(E_q, s, zp), ids)       static QDQ (ONNX Runtime's quantize_static), block-wise too
    Gather(Mul(Cast(E_q), s), ids)                  load-time dequantization
    Gather(Reshape(E, shape) / Transpose(E), ids)   shape-only ops with constant shapes / permutations
    If(cond) { Gather(E, ids) } else { ... }        Gathers inside subgraphs indexing outer-scope inputs
    GatherBlockQuantized(E_packed, ids, s)          com.microsoft block-wise int4/int8 embeddings

A shape no rule finds is taken from ONNX shape inference when that can tell it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorslim.backends.onnx.graph import GraphIndex

__all__ = ["index_bounds"]

#: Ops an index input passes through with its values unchanged (the bound still applies after them).
_PASS_THROUGH = frozenset(
    {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice", "Transpose", "Tile"}
)
#: Ops whose output has the shape of their first input.
_SAME_SHAPE = frozenset(
    {
        "Cast", "CastLike", "Identity", "DequantizeLinear", "QuantizeLinear", "Neg", "Abs", "Relu", "Sqrt",
        "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Clip", "Round", "Floor", "Ceil", "Sign",
    }
)  # fmt: skip
_BROADCAST = frozenset({"Mul", "Add", "Sub", "Div", "Pow", "Where", "Max", "Min"})
_GATHERS = frozenset({"Gather", "GatherElements", "GatherBlockQuantized"})

Shape = list[int]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _broadcast(shapes: list[Shape]) -> Shape | None:
    try:
        return list(np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError:
        return None


class _Shapes:
    """Static shapes of constant-derived tensors, found through their producers (memoised)."""

    def __init__(self, model: Any, index: GraphIndex) -> None:
        import onnx

        self.known: dict[str, Shape | None] = {}
        self.values: dict[str, np.ndarray] = {}  # small int64 constants (Reshape shapes)
        self.index = index
        for t in index.initializers.values():
            self.known[t.name] = list(t.dims)
            if t.data_type == onnx.TensorProto.INT64 and len(t.dims) == 1 and t.dims[0] <= 16:
                self.values[t.name] = onnx.numpy_helper.to_array(t)
        self._model = model
        self._inferred: dict[str, Shape] | None = None

    def _constant(self, node: Any) -> Shape | None:
        import onnx

        for a in node.attribute:
            if a.name in ("value", "sparse_value"):
                t = a.t if a.name == "value" else a.sparse_tensor
                if a.name == "value" and t.data_type == onnx.TensorProto.INT64 and len(t.dims) <= 1:
                    self.values[node.output[0]] = onnx.numpy_helper.to_array(t).reshape(-1)
                return list(t.dims)
            if a.name in ("value_floats", "value_ints", "value_strings"):
                return [len(onnx.helper.get_attribute_value(a))]
            if a.name in ("value_float", "value_int", "value_string"):
                return []
        return None

    def shape(self, name: str, depth: int = 0) -> Shape | None:
        if name in self.known:
            return self.known[name]
        self.known[name] = None  # guards cycles (Loop-carried values)
        got = self._derive(name, depth) if depth < 64 else None
        if got is None:
            got = self._infer().get(name)
        self.known[name] = got
        return got

    def _derive(self, name: str, depth: int) -> Shape | None:
        if name not in self.index.producer:
            return None
        node, idx = self.index.producer[name], self.index.output_index[name]
        op = node.op_type
        if op == "Constant":
            return self._constant(node)
        if not node.input:
            return None
        first = self.shape(node.input[0], depth + 1) if idx == 0 else None
        if op in _SAME_SHAPE or (op == "DequantizeLinear" and node.domain == "com.microsoft"):
            return first
        if op in _BROADCAST:
            shapes = [self.shape(x, depth + 1) for x in node.input if x]
            return None if any(s is None for s in shapes) else _broadcast([s for s in shapes if s is not None])
        if op == "Transpose" and first is not None:
            perm = _attr(node, "perm") or list(reversed(range(len(first))))
            return [first[p] for p in perm] if len(perm) == len(first) else None
        if op == "Reshape" and first is not None and len(node.input) > 1:
            self.shape(node.input[1], depth + 1)  # records a Constant's value
            target = self.values.get(node.input[1])
            if target is None:
                return None
            return _reshaped(first, [int(v) for v in target], bool(_attr(node, "allowzero", 0)))
        if op == "If":
            branches = [self._branch_output(_attr(node, b), idx, depth) for b in ("then_branch", "else_branch")]
            if all(b is not None for b in branches) and len({len(b or []) for b in branches}) == 1:
                a, b = branches[0] or [], branches[1] or []
                return [min(x, y) for x, y in zip(a, b, strict=True)]
        return None

    def _branch_output(self, graph: Any, idx: int, depth: int) -> Shape | None:
        if graph is None or idx >= len(graph.output):
            return None
        return self.shape(graph.output[idx].name, depth + 1)

    def _infer(self) -> dict[str, Shape]:
        """Shapes ONNX shape inference finds (computed once, only when a rule found none)."""
        if self._inferred is None:
            import onnx

            self._inferred = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self._model)
            except Exception:  # inference is a fallback: a model it cannot type keeps the rules' answers
                return self._inferred
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
                dims = vi.type.tensor_type.shape.dim
                if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                    self._inferred[vi.name] = [int(d.dim_value) for d in dims]
        return self._inferred


def _reshaped(shape: Shape, target: list[int], allowzero: bool) -> Shape | None:
    out = [shape[i] if (v == 0 and not allowzero and i < len(shape)) else v for i, v in enumerate(target)]
    total = int(np.prod(shape)) if shape else 1
    if out.count(-1) == 1:
        rest = int(np.prod([v for v in out if v != -1])) if len(out) > 1 else 1
        if rest <= 0 or total % rest:
            return None
        out[out.index(-1)] = total // rest
    return out if all(v >= 0 for v in out) else None


def _gather_bound(node: Any, shapes: _Shapes) -> int | None:
    """The exclusive bound on the indices of one gather node, or ``None`` when its table's shape is unknown."""
    dims = shapes.shape(node.input[0])
    if not dims:
        return None
    if node.op_type == "GatherBlockQuantized":
        axis = int(_attr(node, "gather_axis", 0)) % len(dims)
        bits = int(_attr(node, "bits", 4))
        packed = axis == len(dims) - 1 and bits == 4 and _is_uint8(shapes, node.input[0])
        return int(dims[axis]) * (2 if packed else 1)
    axis = int(_attr(node, "axis", 0)) % len(dims)
    return int(dims[axis])


def _is_uint8(shapes: _Shapes, name: str) -> bool:
    import onnx

    t = shapes.index.initializers.get(name)
    return t is not None and t.data_type == onnx.TensorProto.UINT8


def index_bounds(model: Any) -> dict[str, int]:
    """For each graph input used as gather indices into a constant-derived table (possibly through Cast,
    Reshape and other value-preserving ops, and inside If/Loop/Scan bodies), the table's size along the
    gathered axis: generated values must stay below it (the smallest such size when it indexes several).
    """
    graph = model.graph
    index = GraphIndex(graph, subgraphs=True)
    shapes = _Shapes(model, index)
    initialized = {t.name for t in graph.initializer}
    out: dict[str, int] = {}
    for inp in graph.input:
        if inp.name in initialized:
            continue
        stack, seen = [inp.name], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, pos in index.uses.get(name, []):
                if node.op_type in _GATHERS and pos == 1:
                    bound = _gather_bound(node, shapes)
                    if bound is not None:
                        out[inp.name] = min(out.get(inp.name, bound), bound)
                elif node.op_type in _PASS_THROUGH and pos == 0:
                    stack.extend(o for o in node.output if o)
    return out
