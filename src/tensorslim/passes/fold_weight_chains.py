"""Fold the constant data-movement chains that feed a weight input, so that the weight becomes visible.

Exporters do not always fold constants: PyTorch's TorchScript exporter leaves the gate reordering of an LSTM or
GRU inside ``If``/``Loop`` bodies (and everywhere with ``do_constant_folding=False``) as ``Slice``/``Concat``
chains on the PyTorch weight, and some exporters feed ``MatMul`` through a ``Transpose`` of a constant. ONNX
Runtime folds those chains when it loads the model; a quantizer that looks for a constant on the weight input
sees only a ``Slice`` and leaves the weight in float32. Before -> after::

    W (initializer) -> Slice -> Concat -> Unsqueeze -> LSTM(X, ., R)   ->   W' (Constant) -> LSTM(X, W', R)

Only data-movement ops whose output is no larger than their inputs are folded (``Slice``, ``Concat``,
``Unsqueeze``, ``Squeeze``, ``Reshape``, ``Flatten``, ``Transpose``, ``Gather``, ``Split``, ``Identity``), only
when every input is a constant of the graph or an enclosing graph, and only when the result reaches a weight
input (:func:`tensorslim.backends.onnx.weights.classify_use`). The folded value is a ``Constant`` node in the
graph that consumed the chain; constants and chain nodes left unused are removed. Exact: values are copied,
never computed.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from tensorslim.backends.onnx.editor import NameGenerator
from tensorslim.backends.onnx.graph import replace_nodes
from tensorslim.backends.onnx.weights import WeightRole, classify_use, iter_graphs
from tensorslim.passes.base import Pass, PassResult

__all__ = ["FOLDABLE_OPS", "FoldWeightChainsPass"]

log = logging.getLogger(__name__)

FOLDABLE_OPS = frozenset(
    {"Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Gather", "Split", "Identity"}
)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Constant" or (node.domain or "") not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return numpy_helper.to_array(a.t)
    return None


def _evaluate(node: onnx.NodeProto, known: dict[str, np.ndarray], opsets: dict[str, int]) -> list[np.ndarray] | None:
    """Run one node on constant inputs with ONNX's reference evaluator (``None`` when it cannot)."""
    one = onnx.NodeProto()
    one.CopyFrom(node)
    del one.input[:]
    one.input.extend(f"in{i}" if name else "" for i, name in enumerate(node.input))
    del one.output[:]
    one.output.extend(f"out{i}" for i in range(len(node.output)))
    feeds = {f"in{i}": known[name] for i, name in enumerate(node.input) if name}
    graph = onnx.helper.make_graph(
        [one],
        "fold",
        [
            onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ],
        [onnx.helper.make_empty_tensor_value_info(o) for o in one.output],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opsets.get("", 13))])
    try:
        return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, feeds)]
    except Exception as e:  # an op the reference evaluator rejects is left to ONNX Runtime
        log.debug("not folding %s (%s): %s", node.name or node.op_type, node.op_type, e)
        return None


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Names consumed by the nodes of ``graph`` and of its subgraphs, and the graph's outputs."""
    used = {o.name for o in graph.output}
    for scope in iter_graphs(graph):
        for n in scope.graph.node:
            used.update(n.input)
        if scope.graph is not graph:
            used.update(o.name for o in scope.graph.output)
    return used


def _prune(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Remove the nodes of ``candidates`` (by first output) and constants left unused, until nothing changes."""
    while True:
        used = _used_names(model.graph)
        changed = False
        for scope in iter_graphs(model.graph):
            g = scope.graph
            keep = [
                n
                for n in g.node
                if not (
                    (n.op_type == "Constant" or (n.output and n.output[0] in candidates))
                    and n.output
                    and not any(o in used for o in n.output)
                )
            ]
            if len(keep) != len(g.node):
                replace_nodes(g, keep)
                changed = True
            inputs = {i.name for i in g.input}
            inits = [t for t in g.initializer if t.name in used or t.name in inputs]
            if len(inits) != len(g.initializer):
                del g.initializer[:]
                g.initializer.extend(inits)
                changed = True
        if not changed:
            return


class FoldWeightChainsPass(Pass):
    """Fold constant ``Slice``/``Concat``/``Transpose``... chains that feed weight inputs into one constant."""

    name = "fold_weight_chains"

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Fold every chain that reaches a weight input, in the main graph and in every subgraph."""
        opsets = {o.domain: o.version for o in model.opset_import}
        known: dict[str, np.ndarray] = {}
        producers: dict[str, tuple[onnx.NodeProto, onnx.GraphProto]] = {}
        targets: list[tuple[onnx.NodeProto, int, onnx.GraphProto]] = []
        for scope in iter_graphs(model.graph):  # depth first: an enclosing graph comes before its bodies
            g = scope.graph
            inputs = {i.name for i in g.input}
            for t in g.initializer:
                if t.name not in inputs and t.data_location != onnx.TensorProto.EXTERNAL:
                    known[t.name] = numpy_helper.to_array(t)
            for node in g.node:
                value = _constant_value(node)
                if value is not None:
                    known[node.output[0]] = value
                    continue
                live = [i for i in node.input if i]
                if (
                    node.op_type in FOLDABLE_OPS
                    and (node.domain or "") in ("", "ai.onnx")
                    and live
                    and all(i in known for i in live)
                ):
                    outs = _evaluate(node, known, opsets)
                    if outs is not None and sum(o.size for o in outs) <= sum(known[i].size for i in live):
                        for name, arr in zip(node.output, outs, strict=True):
                            known[name] = arr
                            producers[name] = (node, g)
                    continue
                for idx, name in enumerate(node.input):
                    if name in producers and known[name].dtype.kind == "f":
                        role, _ = classify_use(node, idx, known[name].ndim)
                        if role is not WeightRole.OTHER:
                            targets.append((node, idx, g))
        if not targets:
            return PassResult(model, False)
        names = NameGenerator(model)
        made: dict[tuple[int, str], str] = {}
        chain = {n.output[0] for n, _ in producers.values() if n.output}
        for node, idx, g in targets:
            src = node.input[idx]
            key = (id(g), src)
            if key not in made:
                name = names(f"{src}_folded")
                const = onnx.helper.make_node(
                    "Constant", [], [name], name=names(f"{name}_const"), value=numpy_helper.from_array(known[src], name)
                )
                g.node.insert(0, const)
                made[key] = name
            node.input[idx] = made[key]
        _prune(model, chain)
        return PassResult(model, True, [], [f"{len(made)} weight(s) folded from constant Slice/Concat chains"])
