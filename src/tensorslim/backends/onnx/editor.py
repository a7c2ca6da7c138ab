"""Small, explicit graph-editing helpers shared by the ONNX passes.

A :class:`GraphEditor` collects edits (nodes to insert before or in place of a node, tensors to add or
remove) and applies them in one go, so passes can decide first and rewrite once. New tensors are stored the
way the original weight was stored: as initializers, or as ``Constant`` nodes for models that keep their
weights in Constant nodes. Every name it creates is unique across the model and its subgraphs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.backends.onnx.weights import GraphScope, iter_graphs

__all__ = ["GraphEditor", "NameGenerator", "opset_version"]


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    """The model's opset for ``domain`` (the default ONNX domain unless given); 0 when not imported."""
    for imp in model.opset_import:
        if (imp.domain or "") in ((domain,) if domain else ("", "ai.onnx")):
            return int(imp.version)
    return 0


class NameGenerator:
    """Fresh value and node names that collide with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._used: set[str] = set()
        for scope in iter_graphs(model.graph):
            g = scope.graph
            self._used.update(t.name for t in g.initializer)
            self._used.update(v.name for v in [*g.input, *g.output, *g.value_info])
            for n in g.node:
                self._used.update(n.input)
                self._used.update(n.output)
                self._used.add(n.name)

    def __call__(self, base: str) -> str:
        base = base or "t"
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name


class GraphEditor:
    """Collects edits for every graph of one model, then applies them."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.names = NameGenerator(model)
        self._before: dict[int, list[onnx.NodeProto]] = defaultdict(list)
        self._replace: dict[int, list[onnx.NodeProto]] = {}
        self._drop_nodes: set[int] = set()
        self._new_tensors: dict[str, list[onnx.TensorProto]] = defaultdict(list)
        self._new_constants: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self._drop_initializers: dict[str, set[str]] = defaultdict(set)
        self._scopes: dict[str, GraphScope] = {}
        # node wrappers are keyed by id(); keep them alive so the ids stay valid until apply()
        self._keep: list[onnx.NodeProto] = []

    def add_tensor(self, scope: GraphScope, base: str, array: np.ndarray, *, as_constant: bool) -> str:
        """Store ``array`` in ``scope`` under a fresh name and return the name."""
        name = self.names(base)
        self._scopes[scope.path] = scope
        if as_constant:
            # the node's output names the tensor; the tensor itself and the node need no name of their own
            tensor = numpy_helper.from_array(np.ascontiguousarray(array))
            node = helper.make_node("Constant", [], [name], value=tensor)
            self._new_constants[scope.path].append(node)
        else:
            self._new_tensors[scope.path].append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def insert_before(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Insert ``nodes`` right before ``node`` in its graph."""
        self._keep.append(node)
        self._before[id(node)].extend(nodes)

    def replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Replace ``node`` by ``nodes`` (which must produce the node's outputs)."""
        self._keep.append(node)
        self._replace[id(node)] = nodes

    def drop_node(self, node: onnx.NodeProto) -> None:
        """Remove ``node`` (for example a Constant node whose value was replaced)."""
        self._keep.append(node)
        self._drop_nodes.add(id(node))

    def drop_initializer(self, scope: GraphScope, name: str) -> None:
        """Remove initializer ``name`` from ``scope`` (and from the graph inputs where it is listed)."""
        self._scopes[scope.path] = scope
        self._drop_initializers[scope.path].add(name)

    def drop_weight(self, scope: GraphScope, name: str, source: str) -> None:
        """Remove the stored tensor ``name`` of ``scope``: an initializer, or the Constant node that makes it."""
        if source == "initializer":
            self.drop_initializer(scope, name)
            return
        for n in scope.graph.node:
            if n.op_type == "Constant" and list(n.output) == [name]:
                self.drop_node(n)

    def node(self, op_type: str, inputs: list[str], outputs: list[str], base: str, **attrs: object) -> onnx.NodeProto:
        """Build a node with a fresh name; ``domain`` may be passed among the attributes."""
        domain = str(attrs.pop("domain", ""))
        return helper.make_node(
            op_type,
            inputs,
            outputs,
            name=self.names(base),
            domain=domain or None,
            **attrs,  # type: ignore[arg-type]
        )

    def apply(self) -> None:
        """Apply every collected edit to the model in place."""
        ir_version = self.model.ir_version
        # deepest graphs first: a parent graph copies its nodes, and with them its already-edited subgraphs
        for scope in reversed(list(iter_graphs(self.model.graph))):
            g = scope.graph
            new_nodes: list[onnx.NodeProto] = list(self._new_constants.get(scope.path, []))
            for n in g.node:
                new_nodes.extend(self._before.get(id(n), []))
                if id(n) in self._drop_nodes:
                    continue
                if id(n) in self._replace:
                    new_nodes.extend(self._replace[id(n)])
                else:
                    new_nodes.append(n)
            copies = [onnx.NodeProto() for _ in new_nodes]
            for c, n in zip(copies, new_nodes, strict=True):
                c.CopyFrom(n)
            del g.node[:]
            g.node.extend(copies)
            drop = self._drop_initializers.get(scope.path, set())
            if drop:
                keep = [t for t in g.initializer if t.name not in drop]
                del g.initializer[:]
                g.initializer.extend(keep)
                inputs = [i for i in g.input if i.name not in drop]
                del g.input[:]
                g.input.extend(inputs)
            added = self._new_tensors.get(scope.path, [])
            g.initializer.extend(added)
            if ir_version < 4 and scope.path == "":
                for t in added:
                    g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
