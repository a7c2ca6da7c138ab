"""Small, explicit graph-editing helpers shared by the ONNX passes.

A :class:`GraphEditor` collects edits (nodes to insert before or in place of a node, tensors to add or
remove) and applies them in one go, so passes can decide first and rewrite once. New tensors are stored the
way the original weight was stored: as initializers, or as ``Constant`` nodes for models that keep their
weights in Constant nodes. Every name it creates is unique across the model and its subgraphs.

Float tensors can also be stored as float16 behind a ``Cast`` back to float (:meth:`GraphEditor.add_float16`),
which ONNX Runtime folds once at session load. Those of one graph whose shapes differ only in their first
dimension are packed into one float16 initializer, one ``Cast`` and one ``Split``: a few bytes per tensor
instead of a node and an initializer each, which matters for models with many small tensors.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


def _contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous with its own shape: ``np.ascontiguousarray`` turns a 0-d array (a scalar scale or
    zero point) into shape ``[1]``, which older ONNX Runtime releases refuse and whose QDQ selectors do not fuse."""
    a = np.asarray(array)
    return np.ascontiguousarray(a).reshape(a.shape)


@dataclass(frozen=True)
class _Half:
    """A float16 tensor waiting to be stored: the float value it must provide, and where it is first needed."""

    scope: GraphScope
    array: np.ndarray
    output: str
    base: str
    before: onnx.NodeProto


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
        self._halves: list[_Half] = []
        # node wrappers are keyed by id(); keep them alive so the ids stay valid until apply()
        self._keep: list[onnx.NodeProto] = []

    def add_tensor(self, scope: GraphScope, base: str, array: np.ndarray, *, as_constant: bool) -> str:
        """Store ``array`` in ``scope`` under a fresh name and return the name."""
        name = self.names(base)
        self._scopes[scope.path] = scope
        if as_constant:
            # the node's output names the tensor; the tensor itself and the node need no name of their own
            tensor = numpy_helper.from_array(_contiguous(array))
            node = helper.make_node("Constant", [], [name], value=tensor)
            self._new_constants[scope.path].append(node)
        else:
            self._new_tensors[scope.path].append(numpy_helper.from_array(_contiguous(array), name))
        return name

    def add_float16(
        self, scope: GraphScope, output: str, array: np.ndarray, before: onnx.NodeProto, base: str = ""
    ) -> None:
        """Provide the float32 value ``output`` from ``array`` stored as float16, before ``before`` runs.

        ``output`` must be a fresh name (or the name of a tensor being removed); ``base`` names what is
        stored. Tensors of one graph with the same shape past the first dimension share one packed
        initializer, ``Cast`` and ``Split`` (see the module docstring); a lone one gets its own ``Cast``.
        """
        half = np.ascontiguousarray(np.asarray(array).astype(np.float16))
        self._scopes[scope.path] = scope
        self._keep.append(before)
        self._halves.append(_Half(scope, half, output, base or f"{output}_float16", before))

    def _emit_float16(self) -> None:
        groups: dict[tuple[str, tuple[int, ...]], list[_Half]] = defaultdict(list)
        for h in self._halves:
            key = (h.scope.path, tuple(h.array.shape[1:])) if h.array.ndim else (h.scope.path, (-1, id(h)))
            groups[key].append(h)
        opset = opset_version(self.model)
        for (path, _), members in groups.items():
            scope = self._scopes[path]
            if len(members) == 1:
                h = members[0]
                stored = self.add_tensor(scope, h.base, h.array, as_constant=False)
                cast = self.node("Cast", [stored], [h.output], f"{h.base}_Cast", to=TensorProto.FLOAT)
                self._prepend(h.before, [cast])
                continue
            packed = self.add_tensor(
                scope, "float16_pack", np.concatenate([h.array for h in members]), as_constant=False
            )
            as_float = self.names(f"{packed}_float")
            sizes = np.array([h.array.shape[0] for h in members], np.int64)
            if opset >= 13:
                split_in = [as_float, self.add_tensor(scope, f"{packed}_split", sizes, as_constant=False)]
                attrs: dict[str, object] = {"axis": 0}
            else:
                split_in, attrs = [as_float], {"axis": 0, "split": [int(x) for x in sizes]}
            nodes = [
                self.node("Cast", [packed], [as_float], f"{packed}_Cast", to=TensorProto.FLOAT),
                self.node("Split", split_in, [h.output for h in members], f"{packed}_Split", **attrs),
            ]
            # the packed values feed nodes all over the graph: provide them before its first node
            self._prepend(scope.graph.node[0], nodes)

    def _prepend(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Insert ``nodes`` before ``node`` and before anything already inserted there (which may use them)."""
        self._keep.append(node)
        self._before[id(node)][0:0] = nodes

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
        self._emit_float16()
        self._halves = []
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
