"""Read and rewrite the constant tensors of a graph (initializers or ``Constant`` nodes) in place.

Used by the passes that fold scales into weights (SmoothQuant, cross-layer equalization, bias correction):
they change values, never shapes' meaning, and only of constants no other node reads.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.backends.onnx.graph import GraphIndex

__all__ = ["Constants"]


class Constants:
    """The constant tensors of one graph, by name, with their consumer counts."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        index = GraphIndex(graph)
        self._init = index.initializers
        self._const = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1}
        self.uses = {name: len(readers) for name, readers in index.consumers.items()}
        for o in graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self._inputs = index.inputs

    def __contains__(self, name: str) -> bool:
        return name in self._init or name in self._const

    def get(self, name: str) -> np.ndarray | None:
        """The value of constant ``name``, or ``None`` when it is not a constant."""
        if name in self._init:
            return numpy_helper.to_array(self._init[name])
        node = self._const.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def private(self, name: str) -> bool:
        """Whether ``name`` is a constant read by exactly one node (and not a graph input or output)."""
        return name in self and self.uses.get(name, 0) == 1 and name not in self._inputs

    def set(self, name: str, value: np.ndarray) -> None:
        """Replace the value of constant ``name`` (its dtype kept)."""
        old = self.get(name)
        if old is None:
            raise KeyError(name)
        arr = np.asarray(np.asarray(value).astype(old.dtype), order="C")
        if name in self._init:
            self._init[name].CopyFrom(numpy_helper.from_array(arr, name))
            return
        for a in self._const[name].attribute:
            if a.name == "value":
                a.t.CopyFrom(numpy_helper.from_array(arr))

    def add(self, name: str, value: np.ndarray) -> str:
        """Add an initializer ``name`` (unique in the graph) holding ``value``."""
        tensor = numpy_helper.from_array(np.asarray(value, order="C"), name)
        self.graph.initializer.append(tensor)
        self._init[name] = self.graph.initializer[-1]
        return name
