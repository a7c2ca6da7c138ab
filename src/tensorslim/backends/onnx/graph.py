"""One index of an ONNX graph: who produces each tensor, who reads it, which tensors are initializers, and
the declared value infos; and one way to put rewritten nodes back into a graph.

Every pass and diagnostic that walks a graph reads these maps instead of building its own::

    index = GraphIndex(model.graph)            # the graph alone
    index = GraphIndex(model.graph, subgraphs=True)   # with the bodies of If, Loop and Scan (outer first)
    index.producer["y"]        -> the node writing y
    index.consumers["y"]       -> the nodes reading y, once per input slot (Mul(y, y) is there twice)
    index.uses["y"]            -> the same as (node, input position) pairs
    index.initializers["w"]    -> the TensorProto w

Absent optional inputs and outputs (empty names) are not indexed. The index is a snapshot: rebuild it after
adding or removing nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx

from tensorslim.backends.onnx.weights import iter_graphs

__all__ = ["GraphIndex", "all_graphs", "lift_constants", "replace_nodes", "subgraph_reads", "walk_nodes"]


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph below it (If branches, Loop and Scan bodies), depth first, outer first."""
    return (scope.graph for scope in iter_graphs(graph))


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, each node before the nodes of its own bodies."""
    for n in graph.node:
        yield n
        for sub in _bodies(n):
            yield from walk_nodes(sub)


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """The names that nodes inside ``graph``'s subgraphs read, at any depth: outer tensors an If branch or a Loop
    body captures by name keep their names (a rewrite of ``graph.node`` alone must treat them as graph outputs)."""
    return {i for n in graph.node for sub in _bodies(n) for m in walk_nodes(sub) for i in m.input if i}


def lift_constants(model: onnx.ModelProto) -> int:
    """Turn the main graph's ``Constant`` nodes that hold a tensor (``value``) into initializers of the same name,
    in place; returns how many. Exact: the same values under the same names. Exporters that write weights as
    ``Constant`` nodes (Paddle, some TensorFlow converters) otherwise hide them from a pass that reads initializers.
    Nothing is lifted from a model whose IR version (< 4) requires every initializer to be a graph input."""
    if model.ir_version and model.ir_version < 4:
        return 0
    g = model.graph
    keep: list[onnx.NodeProto] = []
    lifted: list[onnx.TensorProto] = []
    for n in g.node:
        value = next((a.t for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1 and value is not None:
            t = onnx.TensorProto()
            t.CopyFrom(value)
            t.name = n.output[0]
            lifted.append(t)
        else:
            keep.append(n)
    if lifted:
        g.initializer.extend(lifted)
        replace_nodes(g, keep)
    return len(lifted)


def _bodies(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


class GraphIndex:
    """Producer, consumers, initializers and value infos of one graph (and its subgraphs when asked).

    Args:
        graph: the graph.
        subgraphs: also index the nodes, initializers and value infos of every subgraph.
        nodes: index these nodes instead of ``graph.node`` (a caller that keeps its own list of node
            objects and compares them by identity).
    """

    def __init__(
        self, graph: onnx.GraphProto, *, subgraphs: bool = False, nodes: Iterable[onnx.NodeProto] | None = None
    ) -> None:
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.output_index: dict[str, int] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        graphs = list(all_graphs(graph)) if subgraphs else [graph]
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for g in graphs for t in g.initializer}
        self.value_infos: dict[str, onnx.ValueInfoProto] = {v.name: v for g in graphs for v in g.value_info}
        self.inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}
        if nodes is None:
            nodes = walk_nodes(graph) if subgraphs else graph.node
        for n in nodes:
            for i, name in enumerate(n.input):
                if name:
                    self.consumers.setdefault(name, []).append(n)
                    self.uses.setdefault(name, []).append((n, i))
            for i, name in enumerate(n.output):
                if name:
                    self.producer[name] = n
                    self.output_index[name] = i

    def readers(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading ``name`` (once per input slot); empty when nothing reads it."""
        return self.consumers.get(name, [])

    def single_use(self, name: str) -> bool:
        """Whether exactly one input slot of one node reads ``name``."""
        return len(self.consumers.get(name, [])) == 1


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Make ``nodes`` (which may be nodes of ``graph`` itself) the nodes of ``graph``, in this order.

    They are copied first: clearing ``graph.node`` would otherwise invalidate the node objects being put back.
    """
    copies = []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)
