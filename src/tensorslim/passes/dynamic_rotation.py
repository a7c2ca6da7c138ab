"""Run-time block-Hadamard rotations of the activations that feed integer MatMul kernels (dynamic-range int8).

One rotation per rotated activation is inserted before its first consumer::

    X  ->  Reshape(MatMul(Reshape(X, [-1, K/b, b]), H_b), Shape(X))

except where :func:`fold_rotations` can rotate the constants that produce the activation instead (exact in
float; e.g. the value projection in front of a transformer's attention output projection).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.algorithms.rotation import hadamard, rotate_input_channels
from tensorslim.backends.onnx.editor import GraphEditor
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, WeightUse
from tensorslim.passes._dynamic_plan import UseForm, WeightPlan

__all__ = ["fold_rotations", "insert_rotations", "rotation_groups"]

log = logging.getLogger(__name__)


def rotation_groups(plans: list[WeightPlan]) -> dict[tuple[str, str], tuple[WeightUse, int, int, set[int]]]:
    """``{(graph path, activation): (first consumer, block, K, ids of all rotated consumers)}``."""
    groups: dict[tuple[str, str], tuple[WeightUse, int, int, set[int]]] = {}
    positions: dict[str, dict[int, int]] = {}
    for plan in plans:
        if not plan.rotation_block:
            continue
        for use, form in plan.forms:
            if form is not UseForm.INTEGER_MATMUL:
                continue
            pos = positions.setdefault(use.scope.path, {id(n): i for i, n in enumerate(use.scope.graph.node)})
            k = plan.weight.array.shape[1 if use.role is WeightRole.GEMM and use.channel_axis == 0 else 0]
            key = (use.scope.path, use.node.input[0])
            ids = groups[key][3] if key in groups else set()
            ids.add(id(use.node))
            if key not in groups or pos[id(use.node)] < pos[id(groups[key][0].node)]:
                groups[key] = (use, plan.rotation_block, k, ids)
    return groups


def insert_rotations(
    editor: GraphEditor, plans: list[WeightPlan], folded: frozenset[str] = frozenset()
) -> dict[tuple[str, str], str]:
    """Insert one run-time rotation per rotated activation, before its first consumer.

    ``X  ->  Reshape(MatMul(Reshape(X, [-1, K/b, b]), H_b), Shape(X))``; an activation in ``folded`` (main
    graph) already arrives rotated (see :func:`fold_rotations`). Returns ``{(graph path, activation name):
    rotated activation name}``.
    """
    groups = rotation_groups(plans)
    names: dict[tuple[str, str], str] = {}
    hadamards: dict[tuple[str, int], str] = {}
    for (path, act), (use, block, k, _) in sorted(groups.items()):
        if not path and act in folded:
            names[(path, act)] = act
            continue
        h_key = (path, block)
        if h_key not in hadamards:
            hadamards[h_key] = editor.add_tensor(use.scope, f"hadamard_{block}", hadamard(block), as_constant=False)
        blocks = editor.add_tensor(use.scope, f"{act}_hadamard_blocks", np.array([-1, k // block, block], np.int64),
                                   as_constant=False)  # fmt: skip
        shape, flat, rot, out = (editor.names(f"{act}_{x}") for x in ("shape", "blocked", "blocked_rotated", "rotated"))
        editor.insert_before(
            use.node,
            [
                editor.node("Shape", [act], [shape], f"{act}_Shape"),
                editor.node("Reshape", [act, blocks], [flat], f"{act}_ReshapeBlocks"),
                editor.node("MatMul", [flat, hadamards[h_key]], [rot], f"{act}_Hadamard"),
                editor.node("Reshape", [rot, shape], [out], f"{act}_ReshapeBack"),
            ],
        )
        names[(path, act)] = out
    return names


_FOLD_MAX_STEPS = 16


def fold_rotations(model: onnx.ModelProto, plans: list[WeightPlan]) -> frozenset[str]:
    """Fold run-time rotations into the constants that produce the rotated activations, where that is exact.

    An activation of the main graph whose value comes from a constant-weight ``MatMul`` through ops that
    act on each block of ``b`` channels of the last axis alike (``Reshape`` keeping both last dims multiples
    of ``b``, ``Transpose`` keeping the last axis last, the right operand of a ``MatMul``, ``Add`` of a
    constant with a full last axis), each intermediate read by nothing else, arrives rotated when those
    constants are rotated along their last axis: ``P @ (X W + c) H == P @ (X (W H) + c H)``. The attention
    output projection of a transformer (its input comes from the value projection) is the typical case.
    Rotates those constants in ``model`` (in place) and returns the activations that need no run-time
    rotation any more; nothing when shape inference fails.
    """
    groups = {act: g for (path, act), g in rotation_groups(plans).items() if not path}
    if not groups:
        return frozenset()
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # shape inference is best effort: without it, nothing is folded
        log.debug("fold_rotations: shape inference failed (%s)", exc)
        return frozenset()
    dims: dict[str, list[int | None]] = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            dims[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    constants = {p.weight.name: p.weight for p in plans if p.weight.scope.path == "" and not p.weight.graph_input}
    outputs = {o.name for o in graph.output}
    producers = GraphIndex(graph).producer
    consumers = GraphIndex(graph, subgraphs=True).consumers  # a subgraph reading the value counts too
    folded: set[str] = set()
    changed: dict[str, np.ndarray] = {}
    for act, (_, block, k, ids) in sorted(groups.items()):
        if act in outputs or any(id(n) not in ids for n in consumers.get(act, [])):
            continue
        targets = _fold_path(act, k, block, producers, consumers, outputs, dims, constants)
        if targets is None or any(name in changed for name, _ in targets):
            continue
        for name, axis in targets:
            changed[name] = rotate_input_channels(constants[name].array, block, axis)
        folded.add(act)
    for name, array in changed.items():
        w = constants[name]
        tensor = numpy_helper.from_array(array, name)
        if w.source == "initializer":
            next(t for t in graph.initializer if t.name == name).CopyFrom(tensor)
        else:
            node = producers[name]
            value = next(a for a in node.attribute if a.name == "value")
            tensor.name = value.t.name
            value.t.CopyFrom(tensor)
    return frozenset(folded)


def _fold_path(
    act: str,
    k: int,
    block: int,
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    dims: dict[str, list[int | None]],
    constants: dict[str, WeightInfo],
) -> list[tuple[str, int]] | None:
    """The constants (name, axis) to rotate so that ``act`` (last dim ``k``) arrives rotated, or ``None``."""

    def last_dim(name: str) -> int | None:
        d = dims.get(name)
        return d[-1] if d else None

    def sole_float_use(name: str, node: onnx.NodeProto, last: int) -> bool:
        w = constants.get(name)
        return (
            w is not None
            and w.array.dtype == np.float32
            and w.array.ndim >= 1
            and w.array.shape[-1] == last
            and len(w.uses) == 1
            and w.uses[0].node is node
            and name not in outputs
        )

    targets: list[tuple[str, int]] = []
    cur, last = act, k  # the value traced, and the size of its last axis
    last_known: int | None = k
    for _ in range(_FOLD_MAX_STEPS):
        node = producers.get(cur)
        if node is None or (node.domain or "") not in ("", "ai.onnx") or last_known is None or last_known % block:
            return None
        last = last_known
        if cur != act and (cur in outputs or len(consumers.get(cur, [])) != 1):
            return None
        if node.op_type == "Reshape":
            cur = node.input[0]
            last_known = last_dim(cur)
        elif node.op_type == "Transpose":
            perm = [int(p) for a in node.attribute if a.name == "perm" for p in a.ints]
            if not perm or perm[-1] != len(perm) - 1:
                return None
            cur = node.input[0]
        elif node.op_type == "Add" and len(node.input) == 2:
            const = [x for x in node.input if x in constants]
            if len(const) != 1 or not sole_float_use(const[0], node, last):
                return None
            targets.append((const[0], constants[const[0]].array.ndim - 1))
            cur = node.input[1] if node.input[0] == const[0] else node.input[0]
        elif node.op_type == "MatMul" and len(node.input) == 2:
            right = node.input[1]
            if right in constants:
                if constants[right].array.ndim < 2 or not sole_float_use(right, node, last):
                    return None
                targets.append((right, constants[right].array.ndim - 1))
                return targets
            if len(dims.get(right) or []) < 2:  # the product's last axis is the right operand's
                return None
            cur = right
        else:
            return None
    return None
