"""SmoothQuant scale migration for static int8: decide per-channel scales from calibration data, then fold.

:func:`plan_smoothing` groups the quantized MatMul/Gemm layers by their input activation, streams the
per-channel abs-max of those activations (bounded memory) and chooses ``s`` per group
(:func:`~tensorslim.algorithms.smoothing.smoothing_scales`, with the weight maxima taken over every layer
of the group). :func:`apply_smoothing` scales the weight rows by ``s`` and divides the activation by ``s``:
folded into the producer when it is a LayerNormalization or a Mul by a constant read by the group alone,
otherwise with an explicit Mul, inserted only when the activation has real outliers
(:data:`EXPLICIT_MIN_RATIO`). The float function is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.algorithms.smoothing import fold_into_affine, outlier_ratio, scale_weight_rows, smoothing_scales
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.data import Dataset
from tensorslim.passes._consts import Constants
from tensorslim.passes.calib_stats import channel_stats

__all__ = ["EXPLICIT_MIN_RATIO", "SmoothGroup", "apply_smoothing", "plan_smoothing", "smooth_model"]

# an explicit Mul (one float op) is inserted only for activations whose largest channel maximum is at least
# this many times the median one: below that, per-tensor int8 loses little and the Mul costs time
EXPLICIT_MIN_RATIO = 8.0


@dataclass
class SmoothGroup:
    """The layers that read one activation, and the scales chosen for it."""

    activation: str
    layers: list[onnx.NodeProto]
    scales: np.ndarray
    outlier_ratio: float
    fold: str  # "LayerNormalization", "Mul", "explicit" or "" (skipped)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _input_axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0


def plan_smoothing(
    model: onnx.ModelProto, data: Dataset, alpha: float, nodes: list[onnx.NodeProto]
) -> list[SmoothGroup]:
    """Scales per activation for the MatMul/Gemm layers among ``nodes`` (constant 2-D private weights)."""
    g = model.graph
    consts = Constants(g)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        if n.op_type not in ("MatMul", "Gemm") or (n.op_type == "Gemm" and _attr(n, "transA", 0)):
            continue
        w = consts.get(n.input[1])
        if w is None or w.ndim != 2 or w.dtype != np.float32 or not consts.private(n.input[1]):
            continue
        groups.setdefault(n.input[0], []).append(n)
    if not groups:
        return []
    stats = channel_stats(model, dict.fromkeys(groups, -1), data)
    index = GraphIndex(g)
    plan = []
    for t, layers in groups.items():
        if t not in stats:
            continue
        act = stats[t][1]
        wmax = np.max([np.max(np.abs(consts.get(n.input[1])), axis=1 - _input_axis(n)) for n in layers],  # type: ignore[arg-type]
                      axis=0)  # fmt: skip
        if act.size != wmax.size:
            continue
        s = smoothing_scales(act, wmax, alpha)
        ratio = outlier_ratio(act)
        p = index.producer.get(t)
        only_group = len(index.readers(t)) == len(layers) and t not in index.outputs
        fold = ""
        if p is not None and only_group and _foldable(p, consts, act.size):
            fold = p.op_type
        elif ratio >= EXPLICIT_MIN_RATIO:
            fold = "explicit"
        plan.append(SmoothGroup(t, layers, s, ratio, fold))
    return plan


def _foldable(p: onnx.NodeProto, consts: Constants, k: int) -> bool:
    """Whether the per-channel division can be folded into producer ``p``."""
    if p.op_type == "LayerNormalization" and _attr(p, "axis", -1) == -1 and len(p.output) == 1:
        gamma = consts.get(p.input[1])
        ok = gamma is not None and gamma.size == k and consts.private(p.input[1])
        if len(p.input) > 2 and p.input[2]:
            beta = consts.get(p.input[2])
            ok = ok and beta is not None and beta.size == k and consts.private(p.input[2])
        return ok
    if p.op_type == "Mul":
        c = next((i for i in p.input if i in consts), None)
        v = consts.get(c) if c else None
        return v is not None and consts.private(c) and v.ndim <= 1 and v.size in (1, k)  # type: ignore[arg-type]
    return False


def apply_smoothing(model: onnx.ModelProto, plan: list[SmoothGroup]) -> int:
    """Apply the planned scales to ``model`` in place; the number of layers smoothed."""
    g = model.graph
    consts = Constants(g)
    used = {o for n in g.node for o in (*n.input, *n.output)} | {t.name for t in g.initializer}
    done = 0
    for grp in plan:
        if not grp.fold:
            continue
        s = grp.scales
        for n in grp.layers:
            consts.set(n.input[1], scale_weight_rows(consts.get(n.input[1]), s, input_axis=_input_axis(n)))  # type: ignore[arg-type]
        p = next((n for n in g.node if grp.activation in n.output), None)
        if grp.fold == "LayerNormalization" and p is not None:
            for idx in (1, 2):
                if len(p.input) > idx and p.input[idx]:
                    consts.set(p.input[idx], fold_into_affine(consts.get(p.input[idx]), s))  # type: ignore[arg-type]
        elif grp.fold == "Mul" and p is not None:
            c = next(i for i in p.input if i in consts)
            consts.set(c, fold_into_affine(consts.get(c), s))  # type: ignore[arg-type]
        else:
            name, i = f"{grp.activation}_smoothed", 0
            while name in used or f"{name}_inv_scale" in used:
                i += 1
                name = f"{grp.activation}_smoothed_{i}"
            used.update((name, f"{name}_inv_scale"))
            g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), f"{name}_inv_scale"))
            first = min(list(g.node).index(n) for n in grp.layers)
            g.node.insert(first, helper.make_node("Mul", [grp.activation, f"{name}_inv_scale"], [name], name=name))
            for n in grp.layers:
                n.input[0] = name
        done += len(grp.layers)
    return done


def smooth_model(model: onnx.ModelProto, data: Dataset, alpha: float, nodes: list[onnx.NodeProto]) -> list[str]:
    """Plan and apply SmoothQuant on ``model`` in place; notes saying what was done."""
    plan = plan_smoothing(model, data, alpha, nodes)
    n = apply_smoothing(model, plan)
    folded = sum(1 for grp in plan if grp.fold in ("LayerNormalization", "Mul"))
    explicit = sum(1 for grp in plan if grp.fold == "explicit")
    skipped = sum(1 for grp in plan if not grp.fold)
    return [
        f"SmoothQuant (alpha {alpha:g}): {n} layer(s) smoothed over {folded + explicit} activation(s) "
        f"({folded} folded into LayerNormalization/Mul, {explicit} with an explicit Mul; {skipped} left as they "
        f"were, channel max/median < {EXPLICIT_MIN_RATIO:g})"
    ]
