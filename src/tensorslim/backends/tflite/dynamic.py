"""Dynamic-range int8 quantization of TFLite models: int8 weights, activations quantized on the fly by
LiteRT's hybrid kernels, as the converter's ``Optimize.DEFAULT`` without data writes them.

Decide, then apply. :func:`plan_dynamic` decides for every weight (:func:`find_weights`) its scales and codes
(the same maths as the ONNX backend, :func:`~tensorslim.algorithms.quantize.choose_qparams`) and the form of
each use; :class:`TfliteDynamicPass` applies the plan to a copy. The rewrites, before -> after:

* hybrid (FULLY_CONNECTED, BATCH_MATMUL, UNIDIRECTIONAL_SEQUENCE_LSTM, EMBEDDING_LOOKUP; with the ``integer``
  form also CONV_2D and DEPTHWISE_CONV_2D)::

      OP(x, W float32)  ->  OP(x, W_q int8 {scale[C], zero_point 0, quantized_dimension})

  symmetric int8 in [-127, 127]; per output channel for FULLY_CONNECTED (axis 0), CONV_2D (axis 0) and
  DEPTHWISE_CONV_2D (axis 3), per tensor for the others, as the hybrid kernels expect;
  FULLY_CONNECTED also quantizes its inputs asymmetrically (``asymmetric_quantize_inputs``), as the
  converter sets it;
* weight-only (TRANSPOSE_CONV, which has no hybrid kernel; the convolutions in the default ``auto`` form; every
  op in the ``weight_only`` form, as Google's ai-edge-quantizer writes it)::

      OP(x, W)  ->  OP(x, DEQUANTIZE(W_q))      (LiteRT evaluates a DEQUANTIZE of a constant once)

  per output channel on any op (the DEQUANTIZE takes any axis: BATCH_MATMUL's output columns, an LSTM
  gate's units);
* embeddings through GATHER::

      GATHER(E, ids) -> y   ->   GATHER(E_q, ids) -> y_q int8 -> DEQUANTIZE -> y

Float16 weights behind ``DEQUANTIZE`` are quantized from their float16 values and their ``DEQUANTIZE`` is
dropped. Weights smaller than ``min_size`` elements (1024, the converter's threshold) stay float.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from tensorslim._regex import name_matcher
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.quantize import (
    QuantParams,
    RangeMethod,
    choose_qparams,
    dequantize,
    quantize,
    quantize_keeping_sums,
)
from tensorslim.backends.tflite.graph import Graph, compact, quant_params, tensor_name
from tensorslim.backends.tflite.weights import WEIGHT_ROLES, TfliteWeight, WeightUse, find_weights
from tensorslim.errors import ConfigError
from tensorslim.passes._config import coerce_enums, regex_tuple
from tensorslim.passes.base import PassResult, WeightRecord
from tensorslim.passes.dynamic_quant import Granularity, QuantForm

__all__ = [
    "DYNAMIC_OPS",
    "DynamicForm",
    "TfliteDynamicConfig",
    "TfliteDynamicPass",
    "TflitePassResult",
    "TfliteWeightPlan",
    "plan_dynamic",
    "quantize_subgraphs",
]

#: Operators whose weights the dynamic pass quantizes.
DYNAMIC_OPS: tuple[str, ...] = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "BATCH_MATMUL",
    "EMBEDDING_LOOKUP",
    "GATHER",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
)
_PER_CHANNEL_HYBRID = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "DEPTHWISE_CONV_2D": 3}
_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")  # a flat input: the same response at every position
_ASYMMETRIC_OPTION = ("FULLY_CONNECTED", "BATCH_MATMUL", "UNIDIRECTIONAL_SEQUENCE_LSTM")


class DynamicForm(StrEnum):
    """How one use of a quantized weight computes."""

    HYBRID = "hybrid"
    WEIGHT_ONLY = "weight_only"
    GATHER = "gather_dequantize"


@dataclass(frozen=True)
class TfliteDynamicConfig:
    """Configuration of TFLite dynamic-range quantization.

    Attributes:
        granularity: ``per_channel`` (where the hybrid kernel takes it) or ``per_tensor``.
        range_method: ``minmax`` (the converter's choice) or ``mse`` (MSE-optimal clipping per channel).
        op_types: operators whose weights are quantized.
        exclude: regular expressions on weight names and ``OP#index`` labels; a match stays float.
        min_size: weights with fewer elements stay float (the converter's threshold is 1024).
        asymmetric_inputs: hybrid kernels quantize their inputs asymmetrically (the converter's setting).
        form: ``auto`` (default: per op what is fast in LiteRT: hybrid kernels for FULLY_CONNECTED,
            BATCH_MATMUL and UNIDIRECTIONAL_SEQUENCE_LSTM, weight-only for the convolutions, whose float
            kernels LiteRT's default XNNPACK delegate runs faster than the hybrid ones), ``integer`` (hybrid
            kernels wherever LiteRT has one, the converter's choice) or ``weight_only`` (every weight int8
            behind a ``DEQUANTIZE`` that LiteRT evaluates once; float compute, per-channel scales).
        keep_conv_sums: round each output channel of a convolution's per-channel weights so that their sum stays
            the float sum (:func:`~tensorslim.algorithms.quantize.quantize_keeping_sums`): its response to a flat
            input (paper, sky, padding) stays float's. ``False``: each weight to nearest.
    """

    granularity: Granularity | str = Granularity.PER_CHANNEL
    range_method: RangeMethod | str = RangeMethod.MINMAX
    op_types: tuple[str, ...] = DYNAMIC_OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 1024
    asymmetric_inputs: bool = True
    form: QuantForm | str = QuantForm.AUTO
    keep_conv_sums: bool = True

    def __post_init__(self) -> None:
        coerce_enums(self, (("granularity", Granularity), ("range_method", RangeMethod), ("form", QuantForm)))
        check_selection(self, DYNAMIC_OPS)


def check_selection(cfg: Any, allowed: tuple[str, ...]) -> None:
    """Validate (and normalize, on the frozen ``cfg``) the weight selection fields a TFLite weight config shares:
    ``op_types`` (non-empty, within ``allowed``), ``exclude`` (regular expressions) and ``min_size``.

    Raises:
        ConfigError: an unknown or empty op list, a bad regular expression, a negative or non-integer size.
    """
    ops = tuple(cfg.op_types)
    unknown = [o for o in ops if o not in allowed]
    if unknown or not ops:
        raise ConfigError(
            f"op_types: unknown op {', '.join(map(repr, unknown)) or '(empty)'}; allowed: {', '.join(allowed)}"
        )
    object.__setattr__(cfg, "op_types", ops)
    object.__setattr__(cfg, "exclude", regex_tuple("exclude", cfg.exclude))
    if isinstance(cfg.min_size, bool) or not isinstance(cfg.min_size, int) or cfg.min_size < 0:
        raise ConfigError(f"min_size: must be a non-negative integer, got {cfg.min_size!r}")


@dataclass
class TfliteWeightPlan:
    """The decision for one weight: parameters, codes and the form of each use, or why it is skipped."""

    weight: TfliteWeight
    params: QuantParams | None = None
    codes: np.ndarray | None = None
    forms: list[DynamicForm] = field(default_factory=list)
    skip_reason: str = ""

    @property
    def skipped(self) -> bool:
        """Whether the weight stays as it is."""
        return self.params is None


#: A TFLite pass's outcome: the format-independent :class:`~tensorslim.passes.base.PassResult` over ``ModelT``.
TflitePassResult = PassResult


#: Operators whose hybrid kernel ``auto`` uses; the others compute in float on dequantized weights.
AUTO_HYBRID_OPS = frozenset({"FULLY_CONNECTED", "BATCH_MATMUL", "UNIDIRECTIONAL_SEQUENCE_LSTM", "EMBEDDING_LOOKUP"})


def _form(op_type: str, form: QuantForm) -> DynamicForm:
    if op_type == "GATHER":
        return DynamicForm.GATHER
    if op_type == "EMBEDDING_LOOKUP":  # its hybrid kernel dequantizes the looked-up rows: weight-only already
        return DynamicForm.HYBRID
    if op_type == "TRANSPOSE_CONV" or form is QuantForm.WEIGHT_ONLY:
        return DynamicForm.WEIGHT_ONLY
    if form is QuantForm.AUTO and op_type not in AUTO_HYBRID_OPS:
        return DynamicForm.WEIGHT_ONLY
    return DynamicForm.HYBRID


def _weight_only_axis(g: Graph, use: WeightUse, ndim: int) -> int | None:
    """The output-channel axis of a weight that a DEQUANTIZE turns into float (any axis works there)."""
    if use.op_type in _PER_CHANNEL_HYBRID or use.op_type == "TRANSPOSE_CONV":
        return WEIGHT_ROLES[use.op_type][1]
    if use.op_type == "BATCH_MATMUL" and ndim >= 2:
        opts = g.sg.operators[use.op_index].builtinOptions
        adj = bool(getattr(opts, "adjY" if use.position == 1 else "adjX", False)) if opts is not None else False
        if use.position == 1:
            return ndim - 2 if adj else ndim - 1
        return ndim - 1 if adj else ndim - 2
    if use.op_type == "UNIDIRECTIONAL_SEQUENCE_LSTM" and ndim == 2:
        return 0  # one scale per gate unit
    return None


def skip_reason(g: Graph, w: TfliteWeight, config: Any, excluded: Callable[..., bool]) -> str:
    """Why weight ``w`` stays float under a TFLite weight config (``op_types``, ``min_size``; ``excluded`` from
    its ``exclude``), or ``""`` when it can be quantized."""
    uses = w.weight_uses
    if not uses:
        readers = ", ".join(sorted({u.op_type for u in w.uses}))
        return f"read by {readers} as a bias or operand, not a weight; stays float32"
    if len(uses) != len(w.uses):
        other = next(u for u in w.uses if not u.is_weight)
        return f"also read by {other.label} as a plain operand; it must stay float"
    if blocked := [u for u in uses if u.op_type not in config.op_types]:
        return f"op {blocked[0].op_type} not in the op list ({', '.join(config.op_types)})"
    if excluded(w.name, *(u.label for u in uses)):
        return "excluded by --exclude"
    if w.size < config.min_size:
        return f"{w.size} elements < min size {config.min_size}"
    if not np.all(np.isfinite(w.array)):
        return "holds NaN or infinite values"
    if any(u.op_type == "GATHER" and _gather_axis(g, u.op_index) != 0 for u in uses):
        return "GATHER along an axis other than 0"
    return ""


def plan_dynamic(model: Any, config: TfliteDynamicConfig, subgraph: int = 0) -> list[TfliteWeightPlan]:
    """Decide, for every weight of ``subgraph`` (the main one by default), whether and how to quantize it."""

    def decide(g: Graph, plan: TfliteWeightPlan) -> None:
        w, uses = plan.weight, plan.weight.weight_uses
        forms = [_form(u.op_type, QuantForm(config.form)) for u in uses]
        axes = {
            _PER_CHANNEL_HYBRID.get(u.op_type)
            if f is DynamicForm.HYBRID
            else _weight_only_axis(g, u, w.array.ndim)
            if f is DynamicForm.WEIGHT_ONLY
            else None
            for u, f in zip(uses, forms, strict=True)
        }
        per_channel = config.granularity is Granularity.PER_CHANNEL and len(axes) == 1 and None not in axes
        axis = next(iter(axes)) if per_channel else None
        params = choose_qparams(w.array, bits=8, scheme="symmetric", axis=axis, method=config.range_method)
        if axis is None and any(
            u.op_type == "DEPTHWISE_CONV_2D" and f is DynamicForm.HYBRID for u, f in zip(uses, forms, strict=True)
        ):
            # the hybrid depthwise kernel takes per-channel parameters only: one scale repeated per channel
            c = w.array.shape[3]
            params = QuantParams(np.repeat(params.scale.reshape(1), c), np.zeros(c, np.int8), 3, 8, params.scheme)
        plan.params = params
        if config.keep_conv_sums and axis is not None and all(
            u.op_type in _CONVOLUTIONS and _PER_CHANNEL_HYBRID[u.op_type] == axis for u in uses
        ):
            plan.codes = quantize_keeping_sums(w.array, params, axis)
        else:
            plan.codes = quantize(w.array, params)
        plan.forms = forms

    return plan_weights(model, config, subgraph, decide)


def plan_weights(
    model: Any, config: Any, subgraph: int, decide: Callable[[Graph, TfliteWeightPlan], None]
) -> list[TfliteWeightPlan]:
    """One plan per weight of ``subgraph``: :func:`skip_reason` under ``config``'s selection, else ``decide``
    fills in its parameters, codes and forms."""
    g = Graph(model, subgraph)
    excluded = name_matcher(config.exclude)
    plans: list[TfliteWeightPlan] = []
    for w in find_weights(model, subgraph):
        plan = TfliteWeightPlan(w, skip_reason=skip_reason(g, w, config, excluded))
        plans.append(plan)
        if not plan.skip_reason:
            decide(g, plan)
    return plans


def _gather_axis(g: Graph, op_index: int) -> int:
    opts = g.sg.operators[op_index].builtinOptions
    return int(getattr(opts, "axis", 0) or 0) if opts is not None else 0


class TfliteDynamicPass:
    """Apply dynamic-range int8 quantization; the input model is never modified (the pass works on a copy)."""

    name = "tflite_dynamic"

    def __init__(self, config: TfliteDynamicConfig | None = None) -> None:
        self.config = config or TfliteDynamicConfig()

    def __call__(self, model: Any) -> TflitePassResult:
        """Plan, then rewrite a copy of ``model``: every subgraph (WHILE/IF bodies hold the weights of a recurrent
        model as Keras 3 converts it)."""
        model = copy.deepcopy(model)
        records = quantize_subgraphs(model, self.config, range(len(model.subgraphs)))
        compact(model)
        return TflitePassResult(model, any(not r.skipped for r in records), records)


def quantize_subgraphs(model: Any, config: TfliteDynamicConfig, subgraphs: Iterable[int]) -> list[WeightRecord]:
    """Plan and apply dynamic-range int8 to the weights of ``subgraphs`` of ``model``, in place (no compaction).

    The static pass uses it for WHILE/IF bodies, which it does not calibrate: their weights become int8, their
    compute stays float (or hybrid).
    """
    records: list[WeightRecord] = []
    for si in subgraphs:
        plans = plan_dynamic(model, config, si)
        edits = _Edits(Graph(model, si))
        records += [_apply(edits, p, config) for p in plans]
        _materialize_float16_operands(edits, plans)
        edits.finish()
    return records


class _Edits:
    """Operator insertions collected while applying a plan, placed once at the end (indices stay valid)."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.ops = list(g.sg.operators)
        self.first: list[Any] = []
        self.after: dict[int, list[Any]] = {}

    def finish(self) -> None:
        out = list(self.first)
        for i, op in enumerate(self.ops):
            out.append(op)
            out.extend(self.after.get(i, []))
        self.g.sg.operators = out


def _materialize_float16_operands(edits: _Edits, plans: list[TfliteWeightPlan]) -> None:
    """Hybrid kernels take float32 constants for their other operands (bias): in a float16 model, replace
    ``DEQUANTIZE(float16 constant)`` operands of the new hybrid ops by float32 constants."""
    g = edits.g
    producers = {int(t): i for i, op in enumerate(edits.ops) for t in op.outputs}
    done: dict[int, int] = {}
    for plan in plans:
        if plan.skipped:
            continue
        for use, form in zip(plan.weight.weight_uses, plan.forms, strict=True):
            op = edits.ops[use.op_index]
            if form is not DynamicForm.HYBRID:
                continue
            for pos, t in enumerate(int(x) for x in op.inputs):
                prod = producers.get(t)
                if t < 0 or pos == use.position or prod is None or g.op_type(edits.ops[prod]) != "DEQUANTIZE":
                    continue
                src = int(edits.ops[prod].inputs[0])
                values = g.constant(src)
                if values is None or values.dtype != np.float16:
                    continue
                if t not in done:
                    buf = g.add_buffer(values.astype(np.float32))
                    done[t] = g.add_tensor(tensor_name(g.sg.tensors[src]), list(values.shape), "FLOAT32", buffer=buf)
                op.inputs[pos] = done[t]


def _record(plan: TfliteWeightPlan, action: str, bytes_after: int, details: str) -> WeightRecord:
    w = plan.weight
    err = None
    if plan.params is not None and plan.codes is not None:
        err = round(sqnr_db(w.array, dequantize(plan.codes, plan.params)), 2)
    qp = plan.params
    gran = "" if qp is None else ("per_tensor" if qp.axis is None else f"per_channel(axis={qp.axis})")
    return WeightRecord(
        name=w.name,
        ops=",".join(dict.fromkeys(u.op_type for u in w.uses)),
        nodes=",".join(dict.fromkeys(u.label for u in w.uses)),
        shape=w.shape,
        action=action,
        reason=details,
        bytes_before=w.stored_bytes,
        bytes_after=bytes_after,
        granularity=gran,
        sqnr_db=err,
    )


def _hybrid_version(op_type: str, per_channel: bool, asymmetric: bool) -> int:
    if op_type == "FULLY_CONNECTED":
        return 12 if per_channel else (9 if asymmetric else 3)
    if op_type == "CONV_2D":
        return 5 if per_channel else 2
    if op_type == "DEPTHWISE_CONV_2D":
        return 6 if per_channel else 4
    if op_type == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        return 3 if asymmetric else 2
    if op_type == "EMBEDDING_LOOKUP":
        return 3
    return 1


def _apply(edits: _Edits, plan: TfliteWeightPlan, cfg: TfliteDynamicConfig) -> WeightRecord:
    if plan.skipped or plan.params is None or plan.codes is None:
        return _record(plan, "skipped", plan.weight.stored_bytes, plan.skip_reason)
    g = edits.g
    w, qp = plan.weight, plan.params
    per_channel = qp.axis is not None
    buf = g.add_buffer(plan.codes.astype(np.int8))
    w_q = g.add_tensor(
        w.name, list(w.shape), "INT8", buffer=buf, quantization=quant_params(qp.scale, qp.zero_point, qp.axis)
    )
    deq_out: int | None = None
    forms = set()
    for use, form in zip(w.weight_uses, plan.forms, strict=True):
        op = edits.ops[use.op_index]
        forms.add(form)
        if form is DynamicForm.HYBRID:
            op.inputs[use.position] = w_q
            g.bump_version(op, _hybrid_version(use.op_type, per_channel, cfg.asymmetric_inputs))
            if use.op_type in _ASYMMETRIC_OPTION and op.builtinOptions is not None:
                op.builtinOptions.asymmetricQuantizeInputs = bool(cfg.asymmetric_inputs)
        elif form is DynamicForm.WEIGHT_ONLY:
            if deq_out is None:
                deq_out = g.add_tensor(w.name + "_dequantized", list(w.shape), "FLOAT32")
                edits.first.append(g.new_op("DEQUANTIZE", [w_q], [deq_out], version=5 if per_channel else 2))
            op.inputs[use.position] = deq_out
        else:  # GATHER: gather int8 rows, then dequantize only the gathered rows
            out = int(op.outputs[0])
            t = g.sg.tensors[out]
            sig = None if t.shapeSignature is None else [int(d) for d in t.shapeSignature]
            q = quant_params(qp.scale, qp.zero_point, None)
            y_q = g.add_tensor(
                tensor_name(t) + "_int8", [int(d) for d in t.shape], "INT8", quantization=q, shape_signature=sig
            )
            op.inputs[use.position] = w_q
            op.outputs[0] = y_q
            g.bump_version(op, 2)
            edits.after.setdefault(use.op_index, []).append(g.new_op("DEQUANTIZE", [y_q], [out], version=2))
    scale_bytes = 4 * qp.scale.size + 8 * qp.zero_point.size
    action = "int8 " + "+".join(sorted(f.value for f in forms))
    src = " from float16" if w.source_type == "FLOAT16" else ""
    return _record(plan, action, int(plan.codes.size) + scale_bytes, f"symmetric int8{src}")
