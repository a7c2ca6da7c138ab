"""Where static int8 goes: decided from ONNX Runtime's own optimized graph, not from a hand-written op list.

Every op whose data inputs are float activations is first *tried* in int8: its data inputs and outputs get
Q/DQ pairs (constant inputs become int8 constants behind a DequantizeLinear). The trial model is handed to the
installed ONNX Runtime (``ORT_ENABLE_ALL``, the optimized graph saved with ``optimized_model_filepath``) and
read back: a node that is still there with its own op type next to a DequantizeLinear or QuantizeLinear was
not fused into an integer kernel by this runtime, so it goes back to float, and the trial repeats until every
Q/DQ pair left is consumed by an integer kernel::

    X -> Conv -> Add(3) -> Clip(0, 6) -> Mul -> Div(6) -> HardSigmoid -> ...      float model
    X -> [Q DQ] Conv [Q DQ] Add [Q DQ] Clip ... HardSigmoid ...                     trial: every op in int8
    X -> QLinearConv -> QLinearAdd -> (Clip folded) -> QLinearMul -> QLinearMul     what ONNX Runtime fused
           ... DQ -> HardSigmoid -> Q ...  -> HardSigmoid goes back to float (no int8 kernel)

Rewrites that keep the function make more ops int8-capable: ``Div`` by a constant becomes ``Mul`` by its
reciprocal, ``Sub`` of a constant ``Add`` of its negative, ``HardSigmoid(x)`` becomes
``Clip(Add(Mul(x, alpha), beta), 0, 1)`` and ``HardSwish(x)`` ``Mul(x, HardSigmoid(x))``. Ops that only move
or select values (Reshape, Transpose, MaxPool, Resize, Slice, ...) share one scale between input and output
(ONNX Runtime drops their Q/DQ only then), and a ``Relu``/``Clip`` that is the only reader of its input gives
that input its own (clamped) range, so the clamp is folded into the producer's quantization.

A region of int8 nodes with no multiply-accumulate work (no Conv/ConvTranspose/Gemm/MatMul) would only add
Q/DQ pairs; it stays float. The result is a :class:`Placement`: plain data, recorded in the output model's
metadata and replayable with ``StaticQuantConfig.placement`` (``--placement FILE``) for the same bytes on
another machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.backends.onnx.graph import replace_nodes
from tensorslim.backends.onnx.io import load_model
from tensorslim.errors import InputError

__all__ = [
    "MAC_OPS",
    "PLACEMENT_METADATA_KEY",
    "Placement",
    "data_inputs",
    "ensure_node_names",
    "fused_anyway",
    "int8_components",
    "load_placement",
    "load_placement_json",
    "rewrite_for_int8",
    "rewrite_groups",
    "undo_float_rewrites",
    "unfused_nodes",
]

PLACEMENT_METADATA_KEY = "tensorslim.static_placement"
REWRITES_METADATA_KEY = "tensorslim.int8_rewrites"  # what rewrite_for_int8 replaced; removed by static_quant
# ops whose work is multiply-accumulate over weights or activations: what int8 kernels make faster
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# which inputs carry data (the rest are parameters: shapes, axes, scales, min/max); None: every float input
_DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0,), "ConvTranspose": (0,), "Gemm": (0,), "MatMul": (0, 1), "Add": (0, 1), "Mul": (0, 1),
    "Sub": (0, 1), "Div": (0, 1), "Concat": None, "Sum": None, "Max": None, "Min": None, "Where": (1, 2),
    "Resize": (0,), "Upsample": (0,), "Pad": (0,), "Clip": (0,), "Slice": (0,), "Gather": (0,),
    "GatherElements": (0,), "Split": (0,), "Expand": (0,), "Tile": (0,), "Reshape": (0,),
    "Squeeze": (0,), "Unsqueeze": (0,), "LayerNormalization": (0,), "InstanceNormalization": (0,),
}  # fmt: skip
# outputs are a selection or rearrangement of input values: one scale for input and outputs
VALUE_PRESERVING = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Slice", "Tile", "Gather",
    "GatherElements", "MaxPool", "Resize", "Upsample", "ReduceMax", "ReduceMin", "Split", "DepthToSpace",
    "SpaceToDepth", "Identity",
})  # fmt: skip
CLAMPS = frozenset({"Relu", "Clip"})
# never tried: no float data, control flow, or quantization itself
_NEVER = frozenset({
    "Shape", "Size", "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If",
    "Loop", "Scan", "Constant", "ConstantOfShape", "NonZero", "Range", "Identity", "Dropout", "RandomNormal",
    "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "EyeLike", "TopK", "NonMaxSuppression",
    "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "IsNaN", "IsInf", "BatchNormalization",
})  # fmt: skip


def data_inputs(node: onnx.NodeProto) -> list[str]:
    """The names of ``node``'s inputs that carry data (not shapes, axes or parameters)."""
    idx = _DATA_INPUTS.get(node.op_type, (0,))
    if idx is None:
        return [i for i in node.input if i]
    return [node.input[i] for i in idx if i < len(node.input) and node.input[i]]


@dataclass(frozen=True)
class Placement:
    """Which nodes run int8, which stay float and why: the decision, as data.

    Attributes:
        int8: names of the nodes that run on int8 kernels.
        float: node name -> why it stays float (unfused by ONNX Runtime, no int8 work in its region, slower
            when measured, excluded).
        rounds: trials with ONNX Runtime it took.
        runtime: the ONNX Runtime version that decided (empty for a replayed placement).
        dynamic: float MatMul/Gemm nodes whose weights run dynamic int8 instead (measured faster; see
            :mod:`tensorslim.passes.static_rest`).
    """

    int8: tuple[str, ...]
    float: tuple[tuple[str, str], ...] = ()
    rounds: int = 0
    runtime: str = ""
    dynamic: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Stable JSON (sorted) for the model's metadata and ``--placement`` files: the decision only, so a
        replay on another machine writes the same bytes."""
        raw: dict[str, object] = {"version": 1, "int8": sorted(self.int8), "float": dict(sorted(self.float))}
        if self.dynamic:
            raw["dynamic"] = sorted(self.dynamic)
        return json.dumps(raw, sort_keys=True)

    def summary(self) -> str:
        """One line: how many nodes run int8, how many stay float and the commonest reasons."""
        reasons: dict[str, int] = {}
        for _, why in self.float:
            reasons[why.split(":")[0]] = reasons.get(why.split(":")[0], 0) + 1
        top = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
        by = f" (decided by ONNX Runtime {self.runtime} in {self.rounds} trial(s))" if self.runtime else " (replayed)"
        dyn = f" ({len(self.dynamic)} of them dynamic int8)" if self.dynamic else ""
        return (f"placement: {len(self.int8)} node(s) int8, {len(self.float)} float{dyn}{': ' + top if top else ''}"
                f"{by}")  # fmt: skip


def load_placement(source: str | os.PathLike[str]) -> Placement:
    """A placement from a JSON file, or from the metadata of a model tensorslim quantized."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such placement file; give a JSON file or a model tensorslim quantized")
    text = ""
    if path.suffix == ".onnx":
        try:
            model = load_model(path, check=False, external_data=False)
        except Exception as e:
            raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
        text = next((p.value for p in model.metadata_props if p.key == PLACEMENT_METADATA_KEY), "")
        if not text:
            raise InputError(f"{path}: holds no static placement (quantize it with --mode static first)")
    else:
        text = path.read_text(errors="replace")[:50_000_000]
    return load_placement_json(text, str(path))


def load_placement_json(text: str, source: str) -> Placement:
    """A placement from its JSON text (``source`` names where it came from, for errors)."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise InputError(f"{source}: not a placement JSON ({e})") from e
    if (not isinstance(raw, dict) or not isinstance(raw.get("int8"), list) or not isinstance(raw.get("float", {}), dict)
            or not isinstance(raw.get("dynamic", []), list)):  # fmt: skip
        raise InputError(f"{source}: a placement is a JSON object with an 'int8' list and a 'float' object "
                         "(and optionally a 'dynamic' list)")  # fmt: skip
    if not all(isinstance(x, str) for x in [*raw["int8"], *raw.get("dynamic", [])]) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.get("float", {}).items()
    ):
        raise InputError(f"{source}: placement names must be strings")
    return Placement(tuple(sorted(raw["int8"])), tuple(sorted(raw.get("float", {}).items())),
                     dynamic=tuple(sorted(raw.get("dynamic", []))))  # fmt: skip


def ensure_node_names(graph: onnx.GraphProto) -> int:
    """Give every node of ``graph`` a unique name (placements and ONNX Runtime's fused nodes refer to them)."""
    seen: set[str] = set()
    renamed = 0
    for i, n in enumerate(graph.node):
        if not n.name or n.name in seen:
            base = n.name or f"{n.op_type}_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            n.name = name
            renamed += 1
        seen.add(n.name)
    return renamed


def _scalar_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if np.prod(t.dims) <= 1 << 16}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and np.prod(a.t.dims) <= 1 << 16:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _namer(g: onnx.GraphProto) -> Callable[[str], str]:
    """``fresh(base)``: ``base``, or ``base_1``, ``base_2``... whichever no node, tensor or earlier call uses."""
    used = {t.name for t in g.initializer} | {n.name for n in g.node}
    used |= {v for n in g.node for v in (*n.input, *n.output)}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    return fresh


def _conv_transpose_as_conv(model: onnx.ModelProto) -> int:
    """``ConvTranspose`` whose kernel equals its stride (no padding, one group) -> 1x1 ``Conv`` + ``DepthToSpace``.

    Such a layer writes each input pixel's ``k x k`` output block on its own: a 1x1 convolution to ``Co*k*k``
    channels (channel ``co*k*k + a*k + b`` holds block position ``(a, b)`` of channel ``co``) rearranged by
    ``DepthToSpace(k, CRD)``. ONNX Runtime has no int8 ConvTranspose on the CPU; it has an int8 Conv, and
    DepthToSpace moves int8 values as they are. A following per-channel ``Add`` of a constant and an inference
    ``BatchNormalization`` fold into the new Conv's weights and bias. Returns how many were rewritten.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    fresh = _namer(g)

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for n in g.node:
        if n.op_type != "ConvTranspose" or n.domain not in ("", "ai.onnx") or len(n.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = const(n.input[1])
        if w is None or w.ndim != 4 or w.dtype != np.float32:
            continue
        k = int(w.shape[2])
        if (w.shape[3] != k or k < 2 or list(attrs.get("strides", [1, 1])) != [k, k]
                or list(attrs.get("kernel_shape", [k, k])) != [k, k] or int(attrs.get("group", 1)) != 1
                or any(int(v) != 0 for v in attrs.get("pads", [0, 0, 0, 0]))
                or any(int(v) != 1 for v in attrs.get("dilations", [1, 1]))
                or any(int(v) != 0 for v in attrs.get("output_padding", [0, 0]))
                or "output_shape" in attrs
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):  # fmt: skip
            continue
        ci, co = int(w.shape[0]), int(w.shape[1])
        bias = const(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros(co, np.float32)
        if bias is None:
            continue
        scale = np.ones(co, np.float64)
        shift = bias.astype(np.float64).reshape(co)
        tail, out = [], n.output[0]
        while out not in outputs and len(readers.get(out, [])) == 1:  # fold per-channel Add and BatchNormalization
            r = readers[out][0]
            if r.op_type == "Add" and len(r.input) == 2:
                c = const(r.input[1] if r.input[0] == out else r.input[0])
                if c is None or (c.size != 1 and tuple(c.shape) not in ((co, 1, 1), (1, co, 1, 1))):
                    break  # not one value per channel
                shift = shift + c.astype(np.float64).reshape(-1)
            elif r.op_type == "BatchNormalization" and len(r.output) == 1 and r.input[0] == out:
                vals = [const(x) for x in r.input[1:5]]
                if any(v is None for v in vals):
                    break
                gamma, beta, mean, var = (np.asarray(v, np.float64).reshape(co) for v in vals)
                eps = float(next((a.f for a in r.attribute if a.name == "epsilon"), 1e-5))
                f = gamma / np.sqrt(var + eps)
                scale, shift = scale * f, (shift - mean) * f + beta
            else:
                break
            tail.append(r)
            out = r.output[0]
        w2 = (w.astype(np.float64) * scale[None, :, None, None]).transpose(1, 2, 3, 0).reshape(co * k * k, ci, 1, 1)
        b2 = np.repeat(shift, k * k)
        wn, bn, mid = fresh(f"{n.input[1]}_as_conv"), fresh(f"{n.name}_bias_as_conv"), fresh(f"{n.name}_blocks")
        g.initializer.extend([numpy_helper.from_array(w2.astype(np.float32), wn),
                              numpy_helper.from_array(b2.astype(np.float32), bn)])  # fmt: skip
        replaced[id(n)] = [
            helper.make_node("Conv", [n.input[0], wn, bn], [mid], name=n.name, kernel_shape=[1, 1]),
            helper.make_node("DepthToSpace", [mid], [out], name=fresh(f"{n.name}_DepthToSpace"), blocksize=k,
                             mode="CRD"),
        ]  # fmt: skip
        dropped.update(id(t) for t in tail)
    if replaced:
        replace_nodes(g, [m for n in g.node if id(n) not in dropped for m in replaced.get(id(n), [n])])
    return len(replaced)


def rewrite_for_int8(model: onnx.ModelProto) -> list[str]:
    """Rewrite ops with no int8 kernel into equivalent ones that have one (main graph; in place).

    ``Div(x, c)`` -> ``Mul(x, 1/c)``, ``Sub(x, c)`` -> ``Add(x, -c)`` for float constants ``c``;
    ``HardSigmoid`` -> ``Clip(Add(Mul(x, alpha), beta), 0, 1)``; ``HardSwish`` -> ``Mul(x, HardSigmoid(x))``
    (itself rewritten); a ``ConvTranspose`` whose kernel equals its stride -> 1x1 ``Conv`` + ``DepthToSpace``
    (see :func:`_conv_transpose_as_conv`). Returns notes on what was rewritten.
    """
    g = model.graph
    counts: dict[str, int] = {}
    transposed = _conv_transpose_as_conv(model)
    if transposed:
        counts["ConvTranspose"] = transposed
    consts = _scalar_constants(g)
    fresh = _namer(g)

    def const(base: str, value: np.ndarray) -> str:
        name = fresh(base)
        g.initializer.append(numpy_helper.from_array(np.array(value, order="C"), name))  # 0-d stays 0-d
        return name

    out: list[onnx.NodeProto] = []
    groups: list[dict[str, object]] = []  # what each rewrite replaced, to undo it where the nodes stay float
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def record(original: onnx.NodeProto, start: int) -> None:
        constants = {i: consts[i] for i in original.input if i in consts}
        groups.append({
            "nodes": [m.name for m in out[start:]],
            "node": base64.b64encode(original.SerializeToString()).decode("ascii"),
            "constants": {k: base64.b64encode(numpy_helper.from_array(np.asarray(v), k).SerializeToString())
                          .decode("ascii") for k, v in sorted(constants.items())},
        })  # fmt: skip

    # shape arithmetic in float (a size divided, then cast or rounded to an integer) is never int8 and must keep
    # its exact quotient: x * (1/c) can land just below the integer x / c is
    rounded = {i for n in g.node if n.op_type in ("Cast", "Floor", "Ceil", "Round") for i in n.input[:1]}
    for n in g.node:
        c = consts.get(n.input[1]) if n.op_type in ("Div", "Sub") and len(n.input) == 2 else None
        if c is not None and c.dtype == np.float32 and n.input[0] not in consts and not rounded & set(n.output):
            if n.op_type == "Div" and np.all(c != 0) and np.all(np.isfinite(1.0 / c)):
                start = len(out)
                out.append(helper.make_node("Mul", [n.input[0], const(f"{n.name}_reciprocal", (1.0 / c).astype(
                    np.float32))], list(n.output), name=n.name))  # fmt: skip
                counts["Div"] = counts.get("Div", 0) + 1
                record(n, start)
                continue
            if n.op_type == "Sub":
                start = len(out)
                out.append(helper.make_node("Add", [n.input[0], const(f"{n.name}_negated", (-c).astype(np.float32))],
                                            list(n.output), name=n.name))  # fmt: skip
                counts["Sub"] = counts.get("Sub", 0) + 1
                record(n, start)
                continue
        if n.op_type in ("HardSigmoid", "HardSwish") and n.domain in ("", "ai.onnx") and opset >= 11:
            attrs = {a.name: a.f for a in n.attribute}
            alpha = attrs.get("alpha", 0.2) if n.op_type == "HardSigmoid" else 1.0 / 6.0
            beta = attrs.get("beta", 0.5)
            x, y = n.input[0], n.output[0]
            scaled, shifted = fresh(f"{n.name}_scaled"), fresh(f"{n.name}_shifted")
            hs = fresh(f"{n.name}_hardsigmoid") if n.op_type == "HardSwish" else y
            start = len(out)
            out += [
                helper.make_node("Mul", [x, const(f"{n.name}_alpha", np.array(alpha, np.float32))], [scaled],
                                 name=fresh(f"{n.name}_Mul")),
                helper.make_node("Add", [scaled, const(f"{n.name}_beta", np.array(beta, np.float32))], [shifted],
                                 name=fresh(f"{n.name}_Add")),
                helper.make_node("Clip", [shifted, const(f"{n.name}_zero", np.array(0.0, np.float32)),
                                          const(f"{n.name}_one", np.array(1.0, np.float32))], [hs],
                                 name=n.name if n.op_type == "HardSigmoid" else fresh(f"{n.name}_Clip")),
            ]  # fmt: skip
            if n.op_type == "HardSwish":
                out.append(helper.make_node("Mul", [x, hs], [y], name=n.name))
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
            record(n, start)
            continue
        out.append(n)
    if not counts:
        return []
    if len(counts) == 1 and transposed:
        return ["rewritten into int8-capable equivalents (same function): " + f"ConvTranspose x{transposed}"]
    replace_nodes(g, out)
    _set_metadata(model, REWRITES_METADATA_KEY, json.dumps(groups, sort_keys=True))
    return ["rewritten into int8-capable equivalents (same function): " + ", ".join(
        f"{k} x{v}" for k, v in sorted(counts.items()))]  # fmt: skip


def _set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    keep = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if value is not None:
        model.metadata_props.add(key=key, value=value)


def rewrite_groups(model: onnx.ModelProto) -> dict[str, tuple[str, ...]]:
    """The int8-capable rewrites recorded in ``model``'s metadata (:func:`rewrite_for_int8`): the replaced node's
    name (one of the new nodes keeps it) -> the names of the nodes that replaced it."""
    text = next((p.value for p in model.metadata_props if p.key == REWRITES_METADATA_KEY), "")
    out: dict[str, tuple[str, ...]] = {}
    for group in json.loads(text) if text else []:
        original = onnx.NodeProto()
        original.ParseFromString(base64.b64decode(group["node"]))
        out[original.name] = tuple(group["nodes"])
    return out


def undo_float_rewrites(model: onnx.ModelProto, int8: Iterable[str]) -> int:
    """Undo :func:`rewrite_for_int8` wherever none of a rewrite's nodes runs int8 (in place; returns how many).

    The rewrites only pay where an int8 kernel takes the new ops; where they stay float, the original op is
    what ONNX Runtime's float fusions recognise (``Div`` by sqrt(2) in GELU, ``HardSigmoid`` after a Conv). The
    record of what was rewritten travels in the model's metadata and is removed here.
    """
    text = next((p.value for p in model.metadata_props if p.key == REWRITES_METADATA_KEY), "")
    _set_metadata(model, REWRITES_METADATA_KEY, None)
    if not text:
        return 0
    quantized = set(int8)
    g = model.graph
    by_name = {n.name: n for n in g.node}
    have = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    undone: dict[str, onnx.NodeProto] = {}  # first node of a rewrite -> the original node
    dropped: set[str] = set()
    for group in json.loads(text):
        names = list(group["nodes"])
        if not names or any(n in quantized or n not in by_name for n in names):
            continue
        original = onnx.NodeProto()
        original.ParseFromString(base64.b64decode(group["node"]))
        for name, blob in group["constants"].items():
            if name not in have:  # the constant went unused after the rewrite and was dropped: bring it back
                t = onnx.TensorProto()
                t.ParseFromString(base64.b64decode(blob))
                g.initializer.append(t)
                have.add(name)
        undone[names[0]] = original
        dropped.update(names[1:])
    if undone:
        replace_nodes(g, [undone.get(n.name, n) for n in g.node if n.name not in dropped])
    return len(undone)


def candidate_nodes(model: onnx.ModelProto, floats: set[str], constants: set[str],
                    exclude: Iterable[re.Pattern[str]]) -> tuple[list[onnx.NodeProto], dict[str, str]]:  # fmt: skip
    """Main-graph nodes worth trying in int8 (a float activation among their data inputs), and those excluded."""
    patterns = list(exclude)
    chosen: list[onnx.NodeProto] = []
    excluded: dict[str, str] = {}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type in _NEVER:
            continue
        acts = [i for i in data_inputs(n) if i in floats and i not in constants]
        if not acts or not n.output or not all(o in floats for o in n.output if o):
            continue
        if any(p.search(n.name or "") for p in patterns):
            excluded[n.name] = "excluded: matches --exclude"
            continue
        if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
            continue
        chosen.append(n)
    return chosen, excluded


def optimized_by_ort(model: onnx.ModelProto, *, basic: bool = False, extended: bool = False) -> onnx.ModelProto:
    """The graph ONNX Runtime runs for ``model``: ``ORT_ENABLE_ALL`` (its fusions), or only its basic,
    provider-independent rewrites with ``basic``, or those and its fusions without the CPU's layout changes
    (``ORT_ENABLE_EXTENDED``) with ``extended`` (saved with ``optimized_model_filepath``, read back)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="tensorslim-placement-") as tmp:
        src, dst = Path(tmp) / "trial.onnx", Path(tmp) / "optimized.onnx"
        src.write_bytes(model.SerializeToString())
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        level = ort.GraphOptimizationLevel
        so.graph_optimization_level = (level.ORT_ENABLE_BASIC if basic else level.ORT_ENABLE_EXTENDED if extended
                                       else level.ORT_ENABLE_ALL)  # fmt: skip
        so.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return load_model(dst, check=False)


_optimized = optimized_by_ort


_TOKEN = re.compile(r"_token_\d+$")


def unfused_nodes(optimized: onnx.ModelProto, tried: Iterable[onnx.NodeProto]) -> dict[str, str]:
    """Nodes of ``tried`` that ONNX Runtime left as float kernels next to a Q/DQ in its optimized graph."""
    g = optimized.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in g.node}
    out: dict[str, str] = {}
    for t in tried:
        n = by_name.get(t.name)
        if n is None or n.op_type != t.op_type or n.domain not in ("", "ai.onnx"):
            continue  # replaced by an integer kernel, or removed (a clamp folded into its Q)
        dq_in = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input if i)
        q_out = any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, []))
        if dq_in or q_out:
            out[t.name] = f"unfused: no int8 kernel for {t.op_type} in ONNX Runtime (kept float)"
    return out


def fused_anyway(
    optimized: onnx.ModelProto, stay_float: Iterable[onnx.NodeProto], readers: Mapping[str, list[onnx.NodeProto]],
    int8: set[str],
) -> dict[str, str]:
    """The int8 nodes to put back to float so that each node of ``stay_float`` really runs float.

    A float op whose inputs and outputs all keep their Q/DQ pairs (int8 neighbours on both sides) is fused by ONNX
    Runtime like an int8 one: a Softmax excluded between two int8 MatMuls still runs as ``QLinearSoftmax``. Where
    the optimized graph shows such a node as an integer kernel, the int8 nodes that read its outputs (directly or
    through reshapes and transposes, across which ONNX Runtime moves a QuantizeLinear: those go too) go back to
    float, with the reason. ``readers``: tensor name -> the nodes of the placed graph reading it
    (``StaticGraph.consumers``)."""
    fused = {n.name: n.op_type for n in optimized.graph.node if n.op_type.startswith("QLinear") or n.op_type == "QGemm"}
    out: dict[str, str] = {}
    for t in stay_float:
        if t.name not in fused:
            continue
        todo, seen = list(t.output), set()
        while todo:
            v = todo.pop()
            if v in seen:
                continue
            seen.add(v)
            for r in readers.get(v, ()):
                if r.name in int8:
                    out[r.name] = (f"float-neighbour: reads {t.name} ({t.op_type}, kept float), which ONNX Runtime "
                                   f"would otherwise fuse into {fused[t.name]} between int8 neighbours")  # fmt: skip
                if r.op_type in VALUE_PRESERVING:  # float or int8, the Q/DQ pair moves across it: the next reader
                    todo.extend(r.output)
    return out


def decide(
    nodes: list[onnx.NodeProto],
    build: Callable[[set[str]], onnx.ModelProto],
    *,
    max_rounds: int = 6,
    region_ok: Callable[[set[str]], dict[str, str]] | None = None,
    stay_float: tuple[list[onnx.NodeProto], Mapping[str, list[onnx.NodeProto]]] | None = None,
) -> tuple[set[str], dict[str, str], int]:
    """Trial placements with ONNX Runtime until every int8 node is fused; returns (int8 names, float, rounds).

    ``build(names)`` makes the trial model with those nodes in int8; ``region_ok(names)`` returns nodes to put
    back to float for reasons of the region they sit in (no int8 work); ``stay_float``: nodes that must run float
    (excluded, kept float by the caller) and the graph's readers of each tensor, for :func:`fused_anyway`.
    """
    int8 = {n.name for n in nodes}
    floats: dict[str, str] = {}
    rounds = 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 - the count is returned
        if region_ok is not None:
            drop = region_ok(int8)
            floats.update(drop)
            int8 -= set(drop)
        if not int8:
            break
        optimized = _optimized(build(int8))
        bad = unfused_nodes(optimized, [n for n in nodes if n.name in int8])
        if stay_float is not None:
            bad.update(fused_anyway(optimized, stay_float[0], stay_float[1], int8))
        if not bad:
            break
        floats.update(bad)
        int8 -= set(bad)
    return int8, floats, rounds


def int8_components(
    model: onnx.ModelProto, int8: set[str], quantized_tensors: Callable[[set[str]], set[str]]
) -> list[set[str]]:
    """Connected groups of int8 nodes, linked through the quantized tensors between them."""
    g = model.graph
    by_tensor: dict[str, list[str]] = {}
    for n in g.node:
        if n.name in int8:
            for v in (*n.input, *n.output):
                if v:
                    by_tensor.setdefault(v, []).append(n.name)
    parent = {n: n for n in int8}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    linked = quantized_tensors(int8)
    for t, names in by_tensor.items():
        if t in linked:
            for other in names[1:]:
                ra, rb = find(names[0]), find(other)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, set[str]] = {}
    for n in sorted(int8):
        groups.setdefault(find(n), set()).add(n)
    return [groups[k] for k in sorted(groups)]
