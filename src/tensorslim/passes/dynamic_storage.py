"""Compact storage of dynamic-range int8 models: float16-exact per-channel scales, and float16 storage (behind a
load-time ``Cast``) of the small float tensors int8 leaves alone (see ``DynamicQuantConfig.compact``)."""

from __future__ import annotations

import numpy as np
import onnx

from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.quantize import QuantParams, dequantize, quantize
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.passes._dynamic_plan import UseForm, WeightPlan

__all__ = ["float16_scales", "plan_float16_storage"]

_FLOAT16_MIN_ELEMENTS = 16  # below this a float16 tensor and its Cast node take more bytes than they save
_FLOAT16_MAX = 65504.0
_FLOAT16_MIN_NORMAL = 2.0**-14
_FLOAT16_MIN_SQNR_DB = 60.0  # float16 rounding of a well-scaled tensor: about 70 dB
_FLOAT16_SCALE_MAX_LOSS_DB = 0.02
_BIAS_OPS = ("Conv", "ConvTranspose", "Gemm")


def float16_scales(qp: QuantParams, values: np.ndarray) -> QuantParams | None:
    """``qp`` with its scales rounded to the nearest float16, or ``None`` when that saves nothing or costs fidelity.

    The codes are then computed with the rounded scales, so the float16 tensor stored in the model is
    exactly the scale the codes were made for. Scales outside float16's normal range, or a rounding that
    costs the weight more than :data:`_FLOAT16_SCALE_MAX_LOSS_DB` of reconstruction SQNR, keep float32.
    (Rounding is to the nearest value on purpose: always rounding up, or picking per channel the neighbour
    with the lower squared error, both measurably lowered the output fidelity of a detection model.)
    """
    s = qp.scale
    if qp.axis is None or s.size < _FLOAT16_MIN_ELEMENTS:
        return None
    if float(s.min()) < _FLOAT16_MIN_NORMAL or float(s.max()) > _FLOAT16_MAX / 2:
        return None
    half = QuantParams(s.astype(np.float16).astype(np.float32), qp.zero_point, qp.axis, qp.bits, qp.scheme)
    before = sqnr_db(values, dequantize(quantize(values, qp), qp))
    after = sqnr_db(values, dequantize(quantize(values, half), half))
    return half if after >= before - _FLOAT16_SCALE_MAX_LOSS_DB else None


def plan_float16_storage(plans: list[WeightPlan], small: set[int]) -> None:
    """Mark for float16 storage (behind a load-time ``Cast``) the float tensors that int8 leaves alone:

    * weights below ``min_size`` (ids in ``small``): they stay float, in float16;
    * the biases of the layers whose weights are dequantized at load time or stored float16: a Conv /
      ConvTranspose / Gemm bias input, or the constant of an ``Add`` to such a layer's output (directly,
      or through a ``Reshape`` / ``Unsqueeze``).

    Those layers already compute with int8-rounded (or float16-rounded) weights; float16 adds a relative
    error of at most 2^-11 per element (a tensor whose rounding costs more, :data:`_FLOAT16_MIN_SQNR_DB`,
    stays float32), and ONNX Runtime casts it back once at session load. Nothing is done when no weight
    is quantized to int8.
    """
    if all(p.skipped for p in plans):
        return  # a complement to int8 quantization, never on its own
    eligible = [
        p
        for p in plans
        if p.skipped
        and p.weight.array.dtype == np.float32
        and p.weight.size >= _FLOAT16_MIN_ELEMENTS
        and not p.weight.graph_input
        and all(u.scope == p.weight.scope for u in p.weight.uses)
        and _float16_sqnr(p.weight.array) >= _FLOAT16_MIN_SQNR_DB
    ]
    for p in eligible:
        if id(p) in small:
            p.float16 = True
            p.notes.append(f"{p.weight.size} elements < min size: stays float, stored as float16")
    # nodes that compute with load-time dequantized (or float16) weights
    layers = {
        id(u.node)
        for p in plans
        for u, f in ([(u, UseForm.CAST) for u in p.weight.uses] if p.float16 else p.forms)
        if f is UseForm.CAST and u.input_index == 1 and u.op_type in (*_BIAS_OPS, "MatMul")
    }
    outputs: dict[str, set[str]] = {}  # scope path -> outputs of those nodes
    consumers: dict[str, dict[str, list[onnx.NodeProto]]] = {}
    for p in plans:
        for u in p.weight.uses:
            if id(u.node) in layers:
                outputs.setdefault(u.scope.path, set()).add(u.node.output[0])

    def bias_add(node: onnx.NodeProto, value: str, path: str) -> bool:
        return (
            node.op_type == "Add"
            and not node.domain
            and any(x != value and x in outputs.get(path, ()) for x in node.input)
        )

    for p in eligible:
        w = p.weight
        if p.float16:
            continue
        path = w.scope.path
        ok = bool(w.uses)
        for u in w.uses:
            if u.op_type in _BIAS_OPS and u.input_index == 2 and id(u.node) in layers:
                continue
            if bias_add(u.node, w.name, path):
                continue
            if u.op_type in ("Reshape", "Unsqueeze") and u.input_index == 0 and not u.node.domain:
                if path not in consumers:
                    consumers[path] = GraphIndex(w.scope.graph).consumers
                users = consumers[path].get(u.node.output[0], [])
                if users and all(bias_add(n, u.node.output[0], path) for n in users):
                    continue
            ok = False
            break
        if ok:
            p.float16 = True
            p.notes.append("bias of a layer with int8 weights dequantized at load: stored as float16")


def _float16_sqnr(a: np.ndarray) -> float:
    if not np.all(np.isfinite(a)) or float(np.abs(a).max()) > _FLOAT16_MAX:
        return float("-inf")
    return sqnr_db(a, a.astype(np.float16).astype(np.float32))
