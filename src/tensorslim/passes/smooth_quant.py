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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim._regex import name_matcher
from tensorslim.algorithms.smoothing import fold_into_affine, outlier_ratio, scale_weight_rows, smoothing_scales
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.backends.onnx.weights import WeightRole, find_weights
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError
from tensorslim.passes._config import op_tuple, regex_tuple
from tensorslim.passes._consts import Constants
from tensorslim.passes.base import Pass, PassResult
from tensorslim.passes.calib_stats import channel_stats, require_data

__all__ = [
    "EXPLICIT_MIN_RATIO",
    "SmoothGroup",
    "SmoothQuantConfig",
    "SmoothQuantPass",
    "apply_smoothing",
    "explicit_scales",
    "plan_smoothing",
    "run",
    "smooth_model",
    "smoothing_candidates",
]  # fmt: skip

# an explicit Mul (one float op) is inserted only for activations whose largest channel maximum is at least
# this many times the median one: below that, per-tensor int8 loses little and the Mul costs time
EXPLICIT_MIN_RATIO = 8.0


_COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class SmoothQuantConfig:
    """Options of :class:`SmoothQuantPass` (static quantization's ``smooth_quant``, ``op_types`` and ``exclude``).

    Attributes:
        alpha: migration strength in (0, 1): how much of an activation's channel range moves into the weights.
        op_types: the compute ops that will be quantized (Conv, Gemm, MatMul); MatMul/Gemm among them are smoothed.
        exclude: regular expressions on node names that stay float (not smoothed).
    """

    alpha: float = 0.5
    op_types: tuple[str, ...] = _COMPUTE_OPS
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha: must be in (0, 1), got {self.alpha}")
        object.__setattr__(self, "op_types", op_tuple(self.op_types, _COMPUTE_OPS))
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))


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
    return _smooth(model, data, alpha, nodes)[1]


def _smooth(model: onnx.ModelProto, data: Dataset, alpha: float, nodes: list[onnx.NodeProto]) -> tuple[int, list[str]]:
    plan = plan_smoothing(model, data, alpha, nodes)
    n = apply_smoothing(model, plan)
    folded = sum(1 for grp in plan if grp.fold in ("LayerNormalization", "Mul"))
    explicit = sum(1 for grp in plan if grp.fold == "explicit")
    skipped = sum(1 for grp in plan if not grp.fold)
    return n, [
        f"SmoothQuant (alpha {alpha:g}): {n} layer(s) smoothed over {folded + explicit} activation(s) "
        f"({folded} folded into LayerNormalization/Mul, {explicit} with an explicit Mul; {skipped} left as they "
        f"were, channel max/median < {EXPLICIT_MIN_RATIO:g})"
    ]


def smoothing_candidates(
    model: onnx.ModelProto, op_types: Sequence[str], exclude: Sequence[str] = ()
) -> list[onnx.NodeProto]:
    """Conv/Gemm/MatMul nodes among ``op_types`` with a constant float weight, not excluded by name (static
    quantization's candidates: :func:`plan_smoothing` smooths the MatMul/Gemm ones)."""
    patterns = list(name_matcher(tuple(exclude)).patterns)
    const_weights = {
        u.node.output[0] for w in find_weights(model) if w.is_float for u in w.weight_uses
        if u.role in (WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL) and u.input_index == 1
    }  # fmt: skip
    chosen = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or any(p.search(n.name or "") for p in patterns):
            continue
        if n.op_type in op_types and n.output and n.output[0] in const_weights:
            if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
                continue
            chosen.append(n)
    return chosen


def explicit_scales(model: onnx.ModelProto) -> list[str]:
    """Names of the explicit per-channel ``Mul`` nodes :func:`apply_smoothing` inserted (``X_smoothed = X *
    X_smoothed_inv_scale``): they divide an activation by its scales in float, before quantization, so static
    quantization keeps them float. Recognised by that naming, so the mark survives a saved model."""
    inits = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Mul" and len(n.input) == 2 and len(n.output) == 1 and "_smoothed" in n.output[0]
            and n.input[1] == f"{n.output[0]}_inv_scale" and n.input[1] in inits]  # fmt: skip


@dataclass(frozen=True)
class SmoothQuantPass(Pass):
    """SmoothQuant on the MatMul/Gemm candidates of static quantization, calibrated on ``data`` (required)."""

    config: SmoothQuantConfig = SmoothQuantConfig()
    data: Dataset | None = None
    name = "smooth_quant"

    def __post_init__(self) -> None:
        require_data(self.data, "SmoothQuant")

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Plan the scales on the data, fold them (or insert explicit Muls) in this copy of ``model``."""
        from tensorslim.passes.static_placement import ensure_node_names

        cfg, data = self.config, require_data(self.data, "SmoothQuant")
        n, notes = _smooth(model, data, cfg.alpha, smoothing_candidates(model, cfg.op_types, cfg.exclude))
        ensure_node_names(model.graph)
        return PassResult(model, n > 0, [], notes)


def run(
    model: onnx.ModelProto, config: SmoothQuantConfig, data: Dataset | None = None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """The registry's runner of ``smooth_quant``."""
    return SmoothQuantPass(config, data=data)(model)
