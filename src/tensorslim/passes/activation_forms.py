"""Written-out hard activations back into the ops ONNX Runtime fuses: same function, fewer float kernels.

Exporters (Paddle, TensorFlow, older PyTorch opsets) write HardSwish and HardSigmoid out as arithmetic::

    Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)      HardSwish, Paddle's form (also Mul(.., 1/6), either operand order)
    Div(Clip(Add(x, b), 0, c), c)              HardSigmoid(alpha = 1/c, beta = b/c)

In float, ONNX Runtime runs each of those nodes as a kernel of its own (four passes over the tensor, and the
NCHWc layout converted back and forth around them), while ``HardSigmoid`` and ``Mul(x, HardSigmoid(x))`` are
what its float fusions take: a HardSigmoid into the Conv before it, a ``Mul(x, HardSigmoid(x))`` into one
HardSwish that joins the Conv too. On RapidOCR's direction classifier, a MobileNetV3 from Paddle, the written-out
form costs 30 % of the float time (``benchmarks/README.md``). :func:`fuse_hard_activations` rewrites them::

    Div(Mul(x, Clip(Add(x, b), 0, c)), c)  ->  Mul(x, HardSigmoid(x, 1/c, b/c))
    Div(Clip(Add(x, b), 0, c), c)          ->  HardSigmoid(x, 1/c, b/c)

Exact in real arithmetic (``clip(x + b, 0, c) / c = clip(x / c + b / c, 0, 1)``); in float32 the results differ
by rounding only. Static int8's own rewrite (:func:`~tensorslim.passes.static_placement.rewrite_for_int8`) turns
the HardSigmoid into int8-capable ops where int8 pays and keeps this form where the nodes stay float.
Decide, then apply: :func:`plan_hard_activations` returns what matches as data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.backends.onnx.editor import NameGenerator
from tensorslim.backends.onnx.graph import replace_nodes, walk_nodes

__all__ = ["HardActivation", "fuse_hard_activations", "fused_note", "plan_hard_activations"]

_STANDARD = ("", "ai.onnx")


@dataclass(frozen=True)
class HardActivation:
    """One written-out hard activation.

    Attributes:
        kind: ``"HardSwish"`` (``x * hardsigmoid(x)``) or ``"HardSigmoid"``.
        nodes: the names of the nodes it replaces, in graph order (the last writes ``output``).
        x: the activation's input.
        output: the tensor the last node writes (kept, so readers need no change).
        alpha: HardSigmoid's slope, ``1/c``.
        beta: HardSigmoid's offset, ``b/c``.
    """

    kind: str
    nodes: tuple[str, ...]
    x: str
    output: str
    alpha: float
    beta: float


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if int(np.prod(t.dims)) == 1}
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in _STANDARD:
            for a in n.attribute:
                if a.name == "value" and int(np.prod(a.t.dims)) == 1:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _float_scalar(v: np.ndarray | None) -> float | None:
    if v is None or v.dtype != np.float32 or v.ndim > 1:
        return None  # a 1-element tensor of rank > 1 broadcasts into a bigger rank: not the same shape
    f = float(v.reshape(()))
    return f if np.isfinite(f) else None


def plan_hard_activations(model: onnx.ModelProto) -> list[HardActivation]:
    """The written-out HardSwish and HardSigmoid in ``model``'s main graph (see the module docstring)."""
    g = model.graph
    consts = _constants(g)
    graph_inputs = {i.name for i in g.input}  # an initializer that is also an input: a caller may override it
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    main = {id(n) for n in g.node}
    for n in walk_nodes(g):  # a subgraph reading an intermediate by name keeps it alive: counts twice
        for i in n.input:
            readers[i] = readers.get(i, 0) + (1 if id(n) in main else 2)
    names = Counter(n.name for n in g.node)  # the rewrite finds its nodes by name: each must be the only one

    def scalar(name: str) -> float | None:
        return _float_scalar(consts.get(name)) if name not in graph_inputs else None

    def only_reader(tensor: str) -> bool:
        return readers.get(tensor, 0) == 1 and tensor not in outputs

    def standard(n: onnx.NodeProto | None, op: str) -> bool:
        return n is not None and n.op_type == op and n.domain in _STANDARD

    def clip_of(tensor: str) -> tuple[onnx.NodeProto, onnx.NodeProto, str, float, float] | None:
        """``Clip(Add(x, b), 0, c)`` writing ``tensor``: (clip, add, x, b, c)."""
        clip = producer.get(tensor)
        if clip is None or not standard(clip, "Clip") or not only_reader(tensor):
            return None
        if len(clip.input) >= 3 and clip.input[1] and clip.input[2]:
            lo, hi = scalar(clip.input[1]), scalar(clip.input[2])
        else:  # opset < 11: min and max are attributes
            attrs = {a.name: a.f for a in clip.attribute}
            lo, hi = attrs.get("min"), attrs.get("max")
            if len(clip.input) > 1 and any(clip.input[1:]):
                return None
        if lo != 0.0 or hi is None or not hi > 0:
            return None
        add = producer.get(clip.input[0])
        if add is None or not standard(add, "Add") or len(add.input) != 2 or not only_reader(clip.input[0]):
            return None
        for xi, bi in ((0, 1), (1, 0)):
            b = scalar(add.input[bi])
            if b is not None and scalar(add.input[xi]) is None:
                return clip, add, add.input[xi], b, hi
        return None

    found: list[HardActivation] = []
    taken: set[str] = set()
    for s in g.node:  # the scale by 1/c ends every pattern
        if s.domain not in _STANDARD or s.op_type not in ("Div", "Mul") or len(s.input) != 2 or not s.name:
            continue
        factor, inner = None, ""
        if s.op_type == "Div":
            c = scalar(s.input[1])
            factor, inner = (1.0 / c, s.input[0]) if c else (None, "")
        else:
            for ki, ii in ((1, 0), (0, 1)):
                k = scalar(s.input[ki])
                if k is not None and scalar(s.input[ii]) is None:
                    factor, inner = k, s.input[ii]
                    break
        if factor is None or not only_reader(inner):
            continue
        direct = clip_of(inner)
        mul: onnx.NodeProto | None = None
        if direct is None:
            mul = producer.get(inner)
            if mul is None or not standard(mul, "Mul") or len(mul.input) != 2:
                continue
            for xi, ci in ((0, 1), (1, 0)):
                hit = clip_of(mul.input[ci])
                if hit is not None and hit[2] == mul.input[xi]:
                    direct = hit
                    break
            if direct is None:
                continue
        clip, add, x, b, c = direct
        if not np.isclose(factor * c, 1.0, rtol=1e-6, atol=0.0):
            continue  # clip(x + b, 0, c) * k is a HardSigmoid only when k = 1/c
        nodes = [add, clip] + ([mul] if mul is not None else []) + [s]
        found_names = tuple(n.name for n in nodes)
        if any(not n or n in taken or names[n] > 1 for n in found_names):
            continue
        taken.update(found_names)
        found.append(HardActivation("HardSwish" if mul is not None else "HardSigmoid", found_names, x, s.output[0],
                                    float(np.float32(1.0 / c)), float(np.float32(b / c))))  # fmt: skip
    return found


def fuse_hard_activations(model: onnx.ModelProto, found: Iterable[HardActivation] | None = None) -> dict[str, int]:
    """Rewrite the written-out hard activations ``found`` (default: :func:`plan_hard_activations`) in place.

    Returns how many of each kind. The new nodes take the replaced nodes' place (the first one's) and names: the
    ``HardSigmoid`` the Clip's, the ``Mul`` of a HardSwish the final scale's.
    """
    acts = list(plan_hard_activations(model) if found is None else found)
    if not acts:
        return {}
    g = model.graph
    fresh = NameGenerator(model)
    first = {a.nodes[0]: a for a in acts}
    dropped = {n for a in acts for n in a.nodes[1:]}
    out: list[onnx.NodeProto] = []
    counts: dict[str, int] = {}
    for n in g.node:
        if n.name in dropped:
            continue
        a = first.get(n.name)
        if a is None:
            out.append(n)
            continue
        clip_name, last = a.nodes[1], a.nodes[-1]
        if a.kind == "HardSigmoid":
            out.append(helper.make_node("HardSigmoid", [a.x], [a.output], name=clip_name, alpha=a.alpha, beta=a.beta))
        else:
            gate = fresh(f"{a.output}_hardsigmoid")
            out += [helper.make_node("HardSigmoid", [a.x], [gate], name=clip_name, alpha=a.alpha, beta=a.beta),
                    helper.make_node("Mul", [a.x, gate], [a.output], name=last)]  # fmt: skip
        counts[a.kind] = counts.get(a.kind, 0) + 1
    replace_nodes(g, out)
    return counts


def fused_note(counts: dict[str, int]) -> list[str]:
    """The note on what :func:`fuse_hard_activations` rewrote (none when nothing)."""
    if not counts:
        return []
    return ["written-out activations fused into the ops ONNX Runtime's float kernels take (same function): "
            + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))]

