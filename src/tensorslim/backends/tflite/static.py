"""Full-integer (static) quantization of TFLite models: int8 activations and weights, int32 biases, ranges
calibrated through the LiteRT interpreter, as the converter writes with a ``representative_dataset``.

Decide, then apply. :func:`plan_static` decides which operators run in int8, the scale and zero point of
every activation (asymmetric int8 from its calibrated range, :func:`~tensorslim.algorithms.quantize.choose_qparams`),
of every weight (symmetric int8 in [-127, 127], per output channel) and of every bias (int32, scale
``input_scale * weight_scale``), as plain data (:class:`StaticPlan`); :class:`TfliteStaticPass` applies it.

* Operators whose int8 kernels need equal input and output parameters (pooling, reshapes, concatenation,
  slicing...) share one set, taken from the union of their tensors' ranges; SOFTMAX and LOGISTIC outputs
  use ``1/256, -128`` and TANH ``1/128, 0``, as LiteRT's kernels require.
* Edges: a float input gets a ``QUANTIZE``, a float output a ``DEQUANTIZE``; with ``io="int8"`` the model's
  inputs and outputs themselves become int8 (the converter's ``inference_input_type=tf.int8``).
* Float fallback: an operator with no int8 kernel in the list below, or a tensor with no calibration
  statistics, stays float between a ``DEQUANTIZE`` and a ``QUANTIZE``; the report lists each with its reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.quantize import QuantParams, RangeMethod, choose_qparams, dequantize, quantize
from tensorslim.backends.tflite.dynamic import TflitePassResult
from tensorslim.backends.tflite.graph import Graph, compact, quant_params, tensor_name
from tensorslim.backends.tflite.schema import type_name
from tensorslim.backends.tflite.weights import BIAS_INPUT, WEIGHT_ROLES
from tensorslim.passes._config import coerce_enums
from tensorslim.passes.base import WeightRecord
from tensorslim.passes.dynamic_quant import Granularity

__all__ = ["INT8_OPS", "IoType", "StaticPlan", "TfliteStaticConfig", "TfliteStaticPass", "plan_static"]

#: Operators given int8 kernels, with the operator-code version their int8 form needs.
INT8_OPS: dict[str, int] = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2,
    "RESHAPE": 1, "SQUEEZE": 1, "EXPAND_DIMS": 1, "SHAPE": 1, "SOFTMAX": 2, "LOGISTIC": 2, "TANH": 2,
    "ADD": 2, "SUB": 2, "MUL": 2, "MEAN": 2, "CONCATENATION": 2, "PAD": 2, "PADV2": 2, "RELU": 2,
    "RELU6": 2, "LEAKY_RELU": 2, "HARD_SWISH": 1, "TRANSPOSE": 2, "SLICE": 2, "STRIDED_SLICE": 2,
    "MAXIMUM": 2, "MINIMUM": 2, "RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 2, "SPLIT": 2,
    "PACK": 2, "UNPACK": 2, "GATHER": 2, "SPACE_TO_DEPTH": 2, "DEPTH_TO_SPACE": 2,
}  # fmt: skip
#: Operators whose int8 kernels need the same parameters on their float inputs and outputs.
_SAME_PARAMS = {
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PAD", "PADV2",
    "TRANSPOSE", "SLICE", "STRIDED_SLICE", "MAXIMUM", "MINIMUM", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "SPLIT", "PACK", "UNPACK", "GATHER", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
}  # fmt: skip
#: Output parameters fixed by LiteRT's int8 kernels: (scale, zero point).
_FIXED_OUTPUT = {"SOFTMAX": (1.0 / 256.0, -128), "LOGISTIC": (1.0 / 256.0, -128), "TANH": (1.0 / 128.0, 0)}


class IoType(StrEnum):
    """The type of the model's inputs and outputs after quantization."""

    FLOAT = "float"  # float inputs/outputs with QUANTIZE/DEQUANTIZE at the edges
    INT8 = "int8"  # integer-only inputs and outputs


@dataclass(frozen=True)
class TfliteStaticConfig:
    """Configuration of full-integer quantization.

    Attributes:
        io: ``float`` (QUANTIZE/DEQUANTIZE at the edges) or ``int8`` (integer-only inputs and outputs).
        granularity: weight scales ``per_channel`` (the converter's choice) or ``per_tensor``.
        weight_range: ``minmax`` (the converter's) or ``mse`` clipping for weights.
        float_ops: operator types kept in float on purpose.
    """

    io: IoType | str = IoType.FLOAT
    granularity: Granularity | str = Granularity.PER_CHANNEL
    weight_range: RangeMethod | str = RangeMethod.MINMAX
    float_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        coerce_enums(self, (("io", IoType), ("granularity", Granularity), ("weight_range", RangeMethod)))
        object.__setattr__(self, "float_ops", tuple(self.float_ops))


@dataclass
class StaticPlan:
    """The decisions: int8 operators, float fallbacks with reasons, and the parameters of every int8 tensor."""

    int8_ops: set[int] = field(default_factory=set)
    fallback: dict[int, str] = field(default_factory=dict)
    activation: dict[int, tuple[float, int]] = field(default_factory=dict)  # tensor -> (scale, zero point)
    weights: dict[int, QuantParams] = field(default_factory=dict)  # weight tensor -> parameters


def _float32(g: Graph, t: int) -> bool:
    return t >= 0 and type_name(g.sg.tensors[t].type) == "FLOAT32"


def _act_params(lo: float, hi: float) -> tuple[float, int]:
    qp = choose_qparams(np.asarray([lo, hi], np.float32), bits=8, scheme="asymmetric")
    return float(qp.scale), int(qp.zero_point) - 128


class _Groups:
    """Union-find over tensors that must share quantization parameters."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, t: int) -> int:
        self.parent.setdefault(t, t)
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def plan_static(model: Any, ranges: dict[int, tuple[float, float]], config: TfliteStaticConfig) -> StaticPlan:
    """Decide the int8 operators and every parameter, from calibrated ``ranges`` (tensor -> (min, max))."""
    g = Graph(model)
    plan = StaticPlan()
    for i, op in enumerate(g.sg.operators):
        kind = g.op_type(op)
        floats = [t for t in [*op.inputs, *op.outputs] if _float32(g, int(t))]
        if not floats:
            continue
        reason = _fallback_reason(g, op, kind, ranges, config)
        if reason:
            plan.fallback[i] = reason
        else:
            plan.int8_ops.add(i)
    groups = _Groups()
    fixed: dict[int, tuple[float, int]] = {}
    for i in sorted(plan.int8_ops):
        op = g.sg.operators[i]
        kind = g.op_type(op)
        if kind in _SAME_PARAMS:
            tied = [int(t) for t in [*op.inputs, *op.outputs] if _float32(g, int(t)) and not _is_weight(g, op, int(t))]
            for t in tied[1:]:
                groups.union(tied[0], t)
        if kind in _FIXED_OUTPUT:
            fixed[int(op.outputs[0])] = _FIXED_OUTPUT[kind]
    members: dict[int, list[int]] = {}
    for t in _activation_tensors(g, plan):
        members.setdefault(groups.find(t), []).append(t)
    for group in members.values():
        fixed_params = [fixed[t] for t in group if t in fixed]
        if fixed_params:
            params = fixed_params[0]
        else:
            los = [_range_of(g, t, ranges)[0] for t in group]
            his = [_range_of(g, t, ranges)[1] for t in group]
            params = _act_params(min(los), max(his))
        for t in group:
            plan.activation[t] = params
    for i in sorted(plan.int8_ops):
        op = g.sg.operators[i]
        kind = g.op_type(op)
        roles = WEIGHT_ROLES.get(kind)
        if roles is None or kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        w = int(op.inputs[1])
        if w not in plan.weights:
            arr = g.constant(w)
            assert arr is not None  # checked by _fallback_reason
            axis = roles[1] if config.granularity is Granularity.PER_CHANNEL else None
            qp = choose_qparams(arr, bits=8, scheme="symmetric", axis=axis, method=config.weight_range)
            if axis is None and kind == "DEPTHWISE_CONV_2D":
                c = arr.shape[3]
                qp = QuantParams(np.repeat(qp.scale.reshape(1), c), np.zeros(c, np.int8), 3, 8, qp.scheme)
            plan.weights[w] = qp
    return plan


def _is_weight(g: Graph, op: Any, t: int) -> bool:
    return g.is_constant(t)


def _range_of(g: Graph, t: int, ranges: dict[int, tuple[float, float]]) -> tuple[float, float]:
    if t in ranges:
        return ranges[t]
    arr = g.constant(t)
    if arr is not None and arr.size:
        return float(arr.min()), float(arr.max())
    return 0.0, 0.0


def _activation_tensors(g: Graph, plan: StaticPlan) -> list[int]:
    """Float32 non-weight tensors read or written by int8 operators (constants of plain operands included)."""
    out: dict[int, None] = {}
    for i in sorted(plan.int8_ops):
        op = g.sg.operators[i]
        kind = g.op_type(op)
        weight_pos = {1} if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else set()
        bias_pos = {BIAS_INPUT[kind]} if kind in BIAS_INPUT else set()
        for pos, t in enumerate(int(x) for x in op.inputs):
            if _float32(g, t) and pos not in weight_pos | bias_pos:
                out[t] = None
        for t in (int(x) for x in op.outputs):
            if _float32(g, t):
                out[t] = None
    return list(out)


def _fallback_reason(
    g: Graph, op: Any, kind: str, ranges: dict[int, tuple[float, float]], cfg: TfliteStaticConfig
) -> str:
    if kind in cfg.float_ops:
        return "kept float by --float-ops"
    if kind not in INT8_OPS:
        return f"no int8 kernel for {kind} in tensorslim's list"
    weight_pos = {1} if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else set()
    for pos, t in enumerate(int(x) for x in op.inputs):
        if t < 0 or not _float32(g, t):
            continue
        const = g.constant(t) if g.is_constant(t) else None
        if pos in weight_pos and const is None:
            return "weights are not constant"
        if const is not None:
            if not np.all(np.isfinite(const)):
                return f"constant {tensor_name(g.sg.tensors[t])!r} holds NaN or infinite values"
            continue
        if t not in ranges:
            return f"no calibration statistics for input {tensor_name(g.sg.tensors[t])!r}"
    for t in (int(x) for x in op.outputs):
        if _float32(g, t) and t not in ranges and kind not in _FIXED_OUTPUT:
            return f"no calibration statistics for output {tensor_name(g.sg.tensors[t])!r}"
    return ""


class TfliteStaticPass:
    """Apply a full-integer plan; the input model is never modified (the pass works on a copy).

    Args:
        config: the options.
        ranges: calibrated ``(min, max)`` of the activation tensors (main subgraph tensor indices).
    """

    name = "tflite_static"

    def __init__(self, config: TfliteStaticConfig, ranges: dict[int, tuple[float, float]]) -> None:
        self.config = config
        self.ranges = dict(ranges)

    def __call__(self, model: Any) -> TflitePassResult:
        """Plan, then rewrite a copy of ``model``."""
        model = copy.deepcopy(model)
        plan = plan_static(model, self.ranges, self.config)
        rw = _Rewriter(Graph(model), plan, IoType(self.config.io) is IoType.INT8)
        records = rw.constants()
        notes = rw.activations()
        rw.finish()
        body_done = False
        if len(model.subgraphs) > 1:  # WHILE/IF bodies are not calibrated: int8 weights, float (or hybrid) compute
            from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig, quantize_subgraphs

            body = quantize_subgraphs(model, TfliteDynamicConfig(), range(1, len(model.subgraphs)))
            records += body
            body_done = any(not r.skipped for r in body)
            if body_done:
                notes.append(
                    f"{sum(not r.skipped for r in body)} weights in {len(model.subgraphs) - 1} control-flow "
                    "subgraphs (WHILE/IF bodies): dynamic-range int8, float activations (not calibrated)"
                )
        compact(model)
        for i, reason in sorted(plan.fallback.items()):
            notes.append(f"float fallback: {rw.labels[i]} ({reason})")
        return TflitePassResult(model, bool(plan.int8_ops) or body_done, records, notes)


class _Rewriter:
    def __init__(self, g: Graph, plan: StaticPlan, io_int8: bool) -> None:
        self.g, self.plan, self.io_int8 = g, plan, io_int8
        self.ops = list(g.sg.operators)
        self.labels = [f"{g.op_type(op)}#{i}" for i, op in enumerate(self.ops)]
        self.first: list[Any] = []
        self.after: dict[int, list[Any]] = {}

    def _clone(self, t: int, type_name_: str, suffix: str, quant: Any = None, buffer: int = 0) -> int:
        src = self.g.sg.tensors[t]
        sig = None if src.shapeSignature is None else [int(d) for d in src.shapeSignature]
        shape = [int(d) for d in src.shape] if src.shape is not None else []
        name = tensor_name(src) + suffix
        return self.g.add_tensor(name, shape, type_name_, buffer=buffer, quantization=quant, shape_signature=sig)

    def _record(self, name: str, op: str, shape: tuple[int, ...], action: str, before: int, after: int,
                gran: str, err: float | None, reason: str = "") -> WeightRecord:  # fmt: skip
        return WeightRecord(name, op.split("#")[0], op, shape, action, reason, before, after, gran, err)

    def constants(self) -> list[WeightRecord]:
        """Weights to int8, biases to int32, other constant operands to int8 with their tensor's parameters."""
        g, plan = self.g, self.plan
        records: list[WeightRecord] = []
        done: dict[int, int] = {}
        for i in sorted(plan.int8_ops):
            op = self.ops[i]
            kind = g.op_type(op)
            orig = [int(x) for x in op.inputs]
            for pos, t in enumerate(orig):
                if t < 0 or not _float32(g, t) or not g.is_constant(t):
                    continue
                arr = g.constant(t)
                assert arr is not None
                arr = arr.astype(np.float32)
                name = tensor_name(g.sg.tensors[t])
                if t in plan.weights:
                    if t not in done:
                        qp = plan.weights[t]
                        codes = quantize(arr, qp)
                        buf = g.add_buffer(codes.astype(np.int8))
                        done[t] = self._clone(t, "INT8", "", quant_params(qp.scale, qp.zero_point, qp.axis), buf)
                        gran = "per_tensor" if qp.axis is None else f"per_channel(axis={qp.axis})"
                        err = round(sqnr_db(arr, dequantize(codes, qp)), 2)
                        after = codes.size + 12 * qp.scale.size
                        records.append(
                            self._record(name, self.labels[i], arr.shape, "int8", arr.nbytes, after, gran, err)
                        )
                    op.inputs[pos] = done[t]
                elif kind in BIAS_INPUT and pos == BIAS_INPUT[kind]:
                    s_in = plan.activation[orig[0]][0]
                    s_w = plan.weights[orig[1]].scale.astype(np.float64)
                    scale = (s_in * s_w).astype(np.float32)
                    if scale.size == 1:
                        scale = scale.reshape(1)
                    info = np.iinfo(np.int32)
                    codes = np.clip(np.round(arr / scale), info.min, info.max).astype(np.int32)
                    buf = g.add_buffer(codes)
                    op.inputs[pos] = self._clone(t, "INT32", "", quant_params(scale, np.zeros(scale.size), 0), buf)
                    err = round(sqnr_db(arr, codes * scale), 2)
                    records.append(
                        self._record(name, self.labels[i], arr.shape, "int32 bias", arr.nbytes, codes.nbytes, "", err)
                    )
                elif t in plan.activation:
                    if t not in done:
                        s, zp = plan.activation[t]
                        codes = np.clip(np.round(arr / s) + zp, -128, 127).astype(np.int8)
                        buf = g.add_buffer(codes)
                        done[t] = self._clone(t, "INT8", "", quant_params(np.asarray([s]), np.asarray([zp]), None), buf)
                    op.inputs[pos] = done[t]
            g.bump_version(op, INT8_OPS[kind])
        return records

    def activations(self) -> list[str]:
        """Activation tensors to int8, with QUANTIZE/DEQUANTIZE where int8 and float parts meet."""
        g, plan = self.g, self.plan
        producers = {int(t): i for i, op in enumerate(self.ops) for t in op.outputs}
        consumers: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(self.ops):
            for pos, t in enumerate(int(x) for x in op.inputs):
                consumers.setdefault(t, []).append((i, pos))
        graph_in, graph_out = set(g.inputs()), set(g.outputs())
        notes: list[str] = []
        for t, (s, zp) in plan.activation.items():
            if g.is_constant(t):
                continue
            quant = quant_params(np.asarray([s]), np.asarray([zp]), None)
            prod = producers.get(t)
            cons = consumers.get(t, [])
            int8_cons = [(i, p) for i, p in cons if i in plan.int8_ops]
            float_cons = [(i, p) for i, p in cons if i not in plan.int8_ops]
            tensor = g.sg.tensors[t]
            if t in graph_in or (
                prod is not None and prod in plan.int8_ops and not (t in graph_out and not self.io_int8)
            ):
                if t in graph_in and not self.io_int8:
                    if int8_cons:
                        t_q = self._clone(t, "INT8", "_int8", quant)
                        self.first.append(g.new_op("QUANTIZE", [t], [t_q], version=1))
                        self._rewire(int8_cons, t_q)
                    continue
                tensor.type, tensor.quantization = _INT8, quant
                if float_cons or (t in graph_out and not self.io_int8):
                    t_f = self._clone(t, "FLOAT32", "_float")
                    self._place(prod, g.new_op("DEQUANTIZE", [t], [t_f], version=2))
                    self._rewire(float_cons, t_f)
            elif prod is not None and prod in plan.int8_ops:  # an int8 result that is a float model output
                t_q = self._clone(t, "INT8", "_int8", quant)
                self.ops[prod].outputs = np.asarray(
                    [t_q if int(x) == t else int(x) for x in self.ops[prod].outputs], np.int32
                )
                self._place(prod, g.new_op("DEQUANTIZE", [t_q], [t], version=2))
                self._rewire(int8_cons, t_q)
            elif t in graph_out and self.io_int8 and prod is not None:  # a float result that is an int8 model output
                t_f = self._clone(t, "FLOAT32", "_float")
                self.ops[prod].outputs = np.asarray(
                    [t_f if int(x) == t else int(x) for x in self.ops[prod].outputs], np.int32
                )
                tensor.type, tensor.quantization = _INT8, quant
                self._place(prod, g.new_op("QUANTIZE", [t_f], [t], version=1))
                self._rewire(float_cons, t_f)
            elif int8_cons:  # a float result read by int8 operators
                t_q = self._clone(t, "INT8", "_int8", quant)
                self._place(prod, g.new_op("QUANTIZE", [t], [t_q], version=1))
                self._rewire(int8_cons, t_q)
        if self.io_int8:
            for t in sorted((graph_in | graph_out) - set(plan.activation)):
                if _float32(g, t):
                    notes.append(f"{tensor_name(g.sg.tensors[t])}: stays float (it does not touch an int8 operator)")
        return notes

    def _rewire(self, uses: list[tuple[int, int]], t: int) -> None:
        for i, pos in uses:
            self.ops[i].inputs[pos] = t

    def _place(self, producer: int | None, op: Any) -> None:
        if producer is None:
            self.first.append(op)
        else:
            self.after.setdefault(producer, []).append(op)

    def finish(self) -> None:
        out = list(self.first)
        for i, op in enumerate(self.ops):
            out.append(op)
            out.extend(self.after.get(i, []))
        self.g.sg.operators = out


_INT8 = 9  # schema TensorType.INT8
