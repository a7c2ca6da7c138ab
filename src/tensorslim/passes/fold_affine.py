"""Fold constant scales and offsets into the Conv, Gemm or MatMul next to them: same function, fewer roundings.

Exporters leave elementwise ``Mul``/``Add`` by constants around linear layers: a learnable affine block
(``y = a * x + b`` with scalar ``a``, ``b``) after every activation, the ``/ 6`` of a written-out HardSwish, a
LayerScale, a BatchNormalization written as ``Mul`` + ``Add``. ONNX Runtime's Conv+Mul/Add fusion takes only the
op right after a Conv whose constant is the second input; every other such op stays a node. In static int8 each
one is an int8 kernel that rounds its output again (on RapidOCR's recognizer, eight roundings between two
convolutions where two are needed) and a Q/DQ boundary that costs time. Before -> after::

    Conv(W, B) -> Mul(., a) -> Add(., b)     ->  Conv(W * a, B * a + b)                 (a, b per output channel)
    Mul(x, c) -> Conv(., W, B)               ->  Conv(x, W * c, B)                      (c a scalar)
    Add(x, c) -> Conv(., W, B), no padding   ->  Conv(x, W, B + c * sum(W))             (c a scalar)

The same for Gemm (its ``C``) and, for scales only, MatMul with a constant 2-D weight. ``Sub``/``Div`` by a
constant count as ``Add``/``Mul`` of its negative/inverse. A fold is taken only when it is exact in real
arithmetic: the op's other input is the layer's only reader (or the layer's output is read only by the op), the
constant broadcasts without changing the tensor's shape, an offset goes into an input only where no padding sees
it, and a scale into an input only as a scalar (a per-channel scale there would reshape the weight's per-channel
ranges, which per-channel int8 weights would pay for). The static preparation folds only ops ONNX Runtime runs as
float kernels of their own (:func:`float_kernels`): a fold must not break one of its float fusions. Float32
weights in the graph's own initializers only (not external data, not graph inputs a caller can override).
Decide, then apply: :func:`plan_folds` returns the folds as data; :func:`fold_affine` applies them round by round
until none is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.backends.onnx.editor import NameGenerator
from tensorslim.backends.onnx.graph import replace_nodes, walk_nodes

__all__ = ["AffineFold", "float_kernels", "fold_affine", "plan_folds"]

_LAYERS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class AffineFold:
    """One constant op folded into a layer.

    Attributes:
        node: the ``Mul``/``Add``/``Sub``/``Div`` removed.
        layer: the Conv/Gemm/MatMul whose weight or bias absorbs it.
        side: ``"output"`` (the op read the layer's output) or ``"input"`` (the layer read the op's output).
        kind: ``"scale"`` or ``"offset"``.
        value: the scale or offset as it applies (``Div``'s inverse, ``Sub``'s negative), float64.
    """

    node: str
    layer: str
    side: str
    kind: str
    value: np.ndarray


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    """The maps one round of planning reads."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        overridable = {i.name for i in graph.input}
        self.inits = {t.name: t for t in graph.initializer if t.name not in overridable
                      and t.data_location != onnx.TensorProto.EXTERNAL}  # fmt: skip
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in walk_nodes(graph):  # a subgraph's read of an outer tensor counts: it keeps the tensor
            for i in n.input:
                if i:
                    self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        if t is None or t.data_type != onnx.TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(t)

    def only_reader(self, tensor: str) -> onnx.NodeProto | None:
        readers = self.readers.get(tensor, [])
        if tensor in self.outputs or len(readers) != 1:
            return None
        return readers[0]


def _as_affine(g: _Graph, node: onnx.NodeProto) -> tuple[str, str, np.ndarray] | None:
    """``(data input, kind, value)`` when ``node`` is ``x * c``, ``x / c``, ``x + c`` or ``x - c`` with a float
    constant ``c`` (``c * x`` and ``c + x`` too), else None."""
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2 or len(node.output) != 1:
        return None
    a, b = node.input
    ca, cb = g.const(a), g.const(b)
    if (ca is None) == (cb is None):
        return None
    if node.op_type in ("Sub", "Div") and cb is None:
        return None  # c - x, c / x: not a scale or an offset of x
    x, c = (b, ca) if cb is None else (a, cb)
    assert c is not None
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        return None
    if node.op_type == "Div":
        if np.any(c == 0):
            return None
        return x, "scale", 1.0 / c
    if node.op_type == "Sub":
        return x, "offset", -c
    return x, "scale" if node.op_type == "Mul" else "offset", c


def _layer_weight(g: _Graph, layer: onnx.NodeProto) -> np.ndarray | None:
    """The layer's constant float weight when it is a layer this module folds into, else None."""
    if layer.op_type not in _LAYERS or len(layer.input) < 2:
        return None
    w = g.const(layer.input[1])
    if w is None:
        return None
    if len(layer.input) > 2 and layer.input[2] and g.const(layer.input[2]) is None:
        return None  # a bias that is not a float constant of this graph
    if layer.op_type == "Conv" and w.ndim < 3:
        return None
    if layer.op_type in ("Gemm", "MatMul") and w.ndim != 2:
        return None
    if layer.op_type == "Gemm":
        attrs = _attrs(layer)
        if float(attrs.get("alpha", 1.0)) == 0.0 or float(attrs.get("beta", 1.0)) == 0.0:
            return None
    return w


def _per_output_channel(c: np.ndarray, layer: onnx.NodeProto, w: np.ndarray) -> np.ndarray | None:
    """``c`` as one value per output channel of ``layer``, when ``c`` broadcasts against its output without
    changing its shape and varies along the channel axis at most; else None."""
    rank = w.ndim if layer.op_type == "Conv" else 2  # Conv: N, C, spatial...; Gemm: M, N; MatMul: ..., N
    if c.size == 1:
        fits = c.ndim <= (1 if layer.op_type == "MatMul" else rank)
        return np.full(_channels(layer, w), float(c.flat[0])) if fits else None
    if layer.op_type == "MatMul" and c.ndim != 1:
        return None  # the output's rank is not known here: only a vector broadcasts without changing it
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    axis = 1 if layer.op_type == "Conv" else rank - 1
    n = _channels(layer, w)
    if shape[axis] != n or any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return c.reshape(-1).astype(np.float64)


def _channels(layer: onnx.NodeProto, w: np.ndarray) -> int:
    if layer.op_type == "Conv":
        return int(w.shape[0])
    if layer.op_type == "Gemm" and int(_attrs(layer).get("transB", 0)):
        return int(w.shape[0])
    return int(w.shape[1])


def _no_padding(layer: onnx.NodeProto) -> bool:
    attrs = _attrs(layer)
    pads = attrs.get("pads", ())
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    return auto_pad in ("NOTSET", "VALID") and not any(int(p) for p in pads)


def plan_folds(model: onnx.ModelProto, allowed: Callable[[str], bool] | None = None) -> list[AffineFold]:
    """The folds one round can take together: each layer and each op in one fold at most; only ops whose name
    ``allowed`` accepts (all when None)."""
    g = _Graph(model.graph)
    taken: set[str] = set()
    out: list[AffineFold] = []
    for node in model.graph.node:
        affine = _as_affine(g, node)
        if affine is None or node.name in taken or (allowed is not None and not allowed(node.name)):
            continue
        x, kind, c = affine
        # into the layer before: the op reads a layer's output, which nothing else reads
        before = g.producer.get(x, onnx.NodeProto())
        only = g.only_reader(x)
        if before.name and before.name not in taken and only is not None and only.name == node.name:
            w = _layer_weight(g, before)
            per = None if w is None else _per_output_channel(c, before, w)
            if w is not None and per is not None and not (kind == "offset" and before.op_type == "MatMul"):
                out.append(AffineFold(node.name, before.name, "output", kind, per))
                taken.update((node.name, before.name))
                continue
        # into the layer after: the op's output is read by one layer only, as its data input
        after = g.only_reader(node.output[0])
        if after is None or after.name in taken or c.size != 1 or c.ndim > 1:
            continue
        if after.input[0] != node.output[0] or node.output[0] in after.input[1:]:
            continue
        w = _layer_weight(g, after)
        if w is None:
            continue
        if kind == "offset" and (after.op_type == "MatMul" or (after.op_type == "Conv" and not _no_padding(after))):
            continue
        out.append(AffineFold(node.name, after.name, "input", kind, c.reshape(-1)))
        taken.update((node.name, after.name))
    return out


def _apply(model: onnx.ModelProto, folds: list[AffineFold]) -> None:
    g = _Graph(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    fresh = NameGenerator(model)

    def put(layer: onnx.NodeProto, slot: int, base: str, value: np.ndarray) -> None:
        name = fresh(f"{base}_folded")
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        while len(layer.input) <= slot:
            layer.input.append("")
        layer.input[slot] = name

    dropped: set[str] = set()
    for f in folds:
        op, layer = by_name[f.node], by_name[f.layer]
        w = g.const(layer.input[1])
        assert w is not None
        w64 = w.astype(np.float64)
        attrs = _attrs(layer)
        trans_b = layer.op_type == "Gemm" and bool(attrs.get("transB", 0))
        old_bias = g.const(layer.input[2]) if len(layer.input) > 2 and layer.input[2] else None
        if layer.op_type == "Gemm":
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if f.side == "output":
            n = f.value.shape[0]
            if layer.op_type == "Conv":
                bias = np.zeros(n) if old_bias is None else old_bias.astype(np.float64).reshape(-1)
                if f.kind == "scale":
                    put(layer, 1, layer.input[1], w64 * f.value.reshape((n,) + (1,) * (w.ndim - 1)))
                    bias = bias * f.value
                else:
                    bias = bias + f.value
                if f.kind == "offset" or old_bias is not None:  # a missing bias stays missing under a scale
                    put(layer, 2, layer.input[2] if old_bias is not None else layer.name + "_bias", bias)
            elif layer.op_type == "Gemm":
                c_old = np.zeros(n) if old_bias is None else old_bias.astype(np.float64)
                if f.kind == "scale":
                    put(layer, 1, layer.input[1], w64 * (f.value[:, None] if trans_b else f.value[None, :]))
                    if old_bias is not None:
                        put(layer, 2, layer.input[2], c_old * f.value)
                else:
                    put(layer, 2, layer.input[2] if old_bias is not None else layer.name + "_bias",
                        c_old + f.value / beta)  # fmt: skip
            else:  # MatMul, scale only
                put(layer, 1, layer.input[1], w64 * f.value[None, :])
            layer.output[0] = op.output[0]
        else:
            c = float(f.value[0])
            if f.kind == "scale":
                put(layer, 1, layer.input[1], w64 * c)
            elif layer.op_type == "Conv":
                add = c * w64.sum(axis=tuple(range(1, w.ndim)))
                bias = add if old_bias is None else old_bias.astype(np.float64).reshape(-1) + add
                put(layer, 2, layer.input[2] if old_bias is not None else layer.name + "_bias", bias)
            else:  # Gemm: alpha * (A + c) B = alpha * A B + alpha * c * (column sums of B)
                add = alpha * c * (w64.sum(axis=1) if trans_b else w64.sum(axis=0)) / beta
                put(layer, 2, layer.input[2] if old_bias is not None else layer.name + "_bias",
                    add if old_bias is None else old_bias.astype(np.float64) + add)  # fmt: skip
            data_in = next(i for i in op.input if g.const(i) is None)
            layer.input[0] = data_in
        dropped.add(op.name)
    gone = {by_name[f.node].output[0] if f.side == "input" else next(
        i for i in by_name[f.node].input if g.const(i) is None) for f in folds}  # fmt: skip
    replace_nodes(model.graph, [n for n in model.graph.node if n.name not in dropped])
    kept = [v for v in model.graph.value_info if v.name not in gone]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def fold_affine(
    model: onnx.ModelProto, *, allowed: Callable[[str], bool] | None = None, max_rounds: int = 32
) -> list[AffineFold]:
    """Fold every constant scale and offset this module can into its neighbouring layer (in place; main graph,
    node names must be unique; ``allowed``: which ops by name may go, see :func:`float_kernels`). Returns the
    folds taken, in order; unused constants are left for the caller."""
    names = [n.name for n in model.graph.node]
    if any(not n for n in names) or len(set(names)) != len(names):
        return []
    done: list[AffineFold] = []
    for _ in range(max_rounds):
        folds = plan_folds(model, allowed)
        if not folds:
            break
        _apply(model, folds)
        done.extend(folds)
    return done


def float_kernels(model: onnx.ModelProto) -> set[str] | None:
    """Names of the nodes ONNX Runtime keeps as kernels of their own in ``model``'s float graph after its fusions
    (``ORT_ENABLE_EXTENDED``: the CPU's NCHWc layout pass, which renames every node it touches, left out), or None
    where it cannot build the session. An op missing there was fused into a larger float kernel (GELU's
    ``* 0.5``, a LayerNorm's scale): folding it into a layer would break that fusion wherever the op stays float,
    so only the ops named here fold (on an exported GELU MLP, folding the ``* 0.5`` into the next MatMul left the
    GELU as five float kernels)."""
    from tensorslim.passes.static_placement import optimized_by_ort

    try:
        return {n.name for n in optimized_by_ort(model, extended=True).graph.node}
    except Exception:
        return None
