"""Fold ``BatchNormalization`` into the ``Conv`` before it.

Before -> after::

    Conv(X, W, b) -> BatchNormalization(scale, B, mean, var, eps)   ->   Conv(X, W', b')
    W' = W * s[:, None, None, None],  b' = (b - mean) * s + B,  s = scale / sqrt(var + eps)

Exact up to float rounding; it removes a node per layer, and the folded weights are what the quantizer then
sees (ONNX Runtime fuses the pair at load time anyway). Only folds when the Conv output feeds the
BatchNormalization alone and every parameter is a constant (initializer or Constant node) of the main
graph; parameters left unused are removed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.backends.onnx.editor import NameGenerator
from tensorslim.backends.onnx.graph import GraphIndex, replace_nodes
from tensorslim.passes.base import Pass, PassResult

__all__ = ["FoldBatchNormPass", "remove_unused_constants"]


def remove_unused_constants(graph: onnx.GraphProto) -> None:
    """Drop initializers and Constant nodes of ``graph`` that no node or output uses (subgraphs included)."""
    used = {o.name for o in graph.output}

    def collect(g: onnx.GraphProto) -> None:
        for n in g.node:
            used.update(n.input)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        collect(sub)

    collect(graph)
    inputs = {i.name for i in graph.input}
    keep_inits = [t for t in graph.initializer if t.name in used or t.name in inputs]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    keep_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output and n.output[0] not in used)]
    if len(keep_nodes) != len(graph.node):
        replace_nodes(graph, keep_nodes)


class FoldBatchNormPass(Pass):
    """Fold inference-mode BatchNormalization into the preceding Conv."""

    name = "fold_batchnorm"

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Fold every eligible Conv -> BatchNormalization pair of the main graph."""
        g = model.graph
        nodes = list(g.node)
        names = NameGenerator(model)
        inits = {t.name: t for t in g.initializer}
        consts = {n.output[0]: n for n in nodes if n.op_type == "Constant" and n.output}
        graph_inputs = {i.name for i in g.input}
        index = GraphIndex(g, nodes=nodes)
        outputs, producer = index.outputs, index.producer

        def value(name: str) -> np.ndarray | None:
            if name in inits and name not in graph_inputs:
                return numpy_helper.to_array(inits[name])
            if name in consts:
                attr = next((a for a in consts[name].attribute if a.name == "value"), None)
                return numpy_helper.to_array(attr.t) if attr is not None else None
            return None

        new_consts: list[onnx.NodeProto] = []

        def store(base: str, arr: np.ndarray, as_constant: bool) -> str:
            name = names(base)
            tensor = numpy_helper.from_array(arr.astype(np.float32), name)
            if as_constant:
                new_consts.append(
                    onnx.helper.make_node("Constant", [], [name], name=names(name + "_const"), value=tensor)
                )
            else:
                g.initializer.append(tensor)
            return name

        dropped: set[int] = set()
        for bn in nodes:
            if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or len(bn.input) != 5:
                continue
            conv = producer.get(bn.input[0])
            if conv is None or conv.op_type != "Conv" or conv.output[0] in outputs:
                continue
            if not index.single_use(conv.output[0]):
                continue
            params = [value(n) for n in bn.input[1:]]
            w = value(conv.input[1])
            has_bias = len(conv.input) > 2 and bool(conv.input[2])
            b = value(conv.input[2]) if has_bias else None
            if w is None or w.dtype != np.float32 or any(p is None for p in params) or (has_bias and b is None):
                continue
            scale, shift, mean, var = (np.asarray(p, np.float64) for p in params)
            eps = next((float(onnx.helper.get_attribute_value(a)) for a in bn.attribute if a.name == "epsilon"), 1e-5)
            s = scale / np.sqrt(var + eps)
            new_w = w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))
            new_b = ((b.astype(np.float64) if b is not None else 0.0) - mean) * s + shift
            as_constant = conv.input[1] in consts
            x = conv.input[0]
            wname = store(f"{conv.input[1]}_bnfolded", new_w, as_constant)
            bname = store(f"{bn.output[0]}_bias", new_b, as_constant)
            del conv.input[:]
            conv.input.extend([x, wname, bname])
            conv.output[0] = bn.output[0]
            dropped.add(id(bn))
        if not dropped:
            return PassResult(model, False, [])
        replace_nodes(g, [*new_consts, *(n for n in nodes if id(n) not in dropped)])
        remove_unused_constants(g)
        return PassResult(model, True, [])
