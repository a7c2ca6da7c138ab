"""Which integer model inputs index constant tables, and how large those tables are.

Generated inputs (benchmarks, evaluation without data) must keep token ids, token type ids and positions
inside the embedding tables they index, or ONNX Runtime rejects the run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["index_bounds"]

_PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice"})


def index_bounds(model: Any) -> dict[str, int]:
    """For each graph input used as ``Gather`` indices into a constant table (possibly through Cast, Reshape
    and other shape-only ops), the table's size along the gathered axis: generated values must stay below it.
    """
    graph = model.graph
    sizes = {t.name: list(t.dims) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    sizes[n.output[0]] = list(a.t.dims)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    out: dict[str, int] = {}
    for inp in graph.input:
        if inp.name in sizes:
            continue
        stack, seen = [inp.name], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, pos in consumers.get(name, []):
                if node.op_type == "Gather" and pos == 1 and node.input[0] in sizes:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = sizes[node.input[0]]
                    if dims:
                        bound = int(dims[axis % len(dims)])
                        out[inp.name] = min(out.get(inp.name, bound), bound)
                elif node.op_type in _PASS_THROUGH and pos == 0:
                    stack.extend(o for o in node.output if o)
    return out
