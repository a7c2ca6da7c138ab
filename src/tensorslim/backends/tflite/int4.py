"""4-bit weights for TFLite models: ``INT4`` constants (two codes per byte) that LiteRT reads directly.

Decide, then apply, as the dynamic pass (:mod:`~tensorslim.backends.tflite.dynamic`) does, with 4-bit codes:
:func:`plan_int4` chooses for every weight its scales (symmetric, codes in [-7, 7], one scale per output
channel wherever the consuming form takes one; ``mse`` clipping by default) and the form of each use;
:class:`TfliteInt4Pass` applies the plan to a copy, every subgraph (WHILE/IF bodies too). The rewrites,
before -> after:

* hybrid (FULLY_CONNECTED and CONV_2D in the ``auto`` and ``integer`` forms; activations quantized to int8 at
  run time by the kernel)::

      OP(x, W float32)  ->  OP(x, W_q int4 {scale[C], zero_point 0, quantized_dimension 0})

* weight-only (every other op, and every op in the ``weight_only`` form)::

      OP(x, W)  ->  OP(x, DEQUANTIZE(W_q int4))      (a DEQUANTIZE of a constant runs once, at load)

  GATHER and EMBEDDING_LOOKUP tables are dequantized whole, one scale per row;
* ``auto`` keeps DEPTHWISE_CONV_2D weights in int8 behind a DEQUANTIZE (the dynamic mode's form): LiteRT has no
  hybrid INT4 depthwise kernel, and the INT4 DEQUANTIZE in front of a convolution takes it out of XNNPACK
  (measured several times slower), for weights that are a few kB each. ``integer`` stores them in 4 bits.

Speed (LiteRT 2.3.0, one thread, x86, busy machine: orders of magnitude only): the hybrid INT4
FULLY_CONNECTED is several times faster than float on large layers (a 1024-2048-1024 MLP: 0.13 ms against
0.63 ms); every INT4 DEQUANTIZE feeding a FULLY_CONNECTED or a convolution runs outside XNNPACK (the whole
MobileNetV2 that way: 5x slower than float); the hybrid CONV_2D is faster than float on ResNet50 but 1.5x
slower on MobileNetV2 (small 1x1 convolutions). A model can thus come out slower: ``tensorslim quantize``'s
speed check (on by default) times it and says so.

The codes are stored as the schema's ``INT4`` tensor type (value 17), packed two per byte over the flattened
tensor, the even element in the low nibble. What LiteRT (ai-edge-litert 2.3.0) was found to accept, on
hand-built models, each form checked against the same model with the dequantized weights stored as float32
(the supported forms and the refusal are pinned in ``tests/test_tflite_int4.py``):

===============================================  ==========================  ==============================
form                                             XNNPACK (default)           builtin kernels only
===============================================  ==========================  ==============================
DEQUANTIZE(INT4), per tensor / per channel       exact, any axis             exact, any axis
FULLY_CONNECTED, INT4 filter, float input        runs (int8 activations)     runs (int8 activations)
CONV_2D, INT4 filter, float input                runs (int8 activations)     runs (int8 activations)
DEPTHWISE_CONV_2D, INT4 filter, float input      refused: "Type FLOAT32 with filter type INT4 not currently
                                                 supported" (both)
BlockwiseQuantization details, FULLY_CONNECTED   runs with FLOAT16 scales    WRONG results, silently
                                                 (FLOAT32 scales refused)    (the details are ignored)
BlockwiseQuantization details, DEQUANTIZE        WRONG results, silently     WRONG results, silently
===============================================  ==========================  ==============================

Block-wise scales are therefore not written: a model run without XNNPACK (another delegate, a node XNNPACK
declines) would compute garbage without an error. The high nibble first gives wrong values everywhere.

Weights smaller than ``min_size`` elements (1024, the dynamic mode's threshold) stay float. Float16 weights
behind ``DEQUANTIZE`` are quantized from their float16 values and their ``DEQUANTIZE`` is dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from tensorslim.algorithms.blockwise import pack_nibbles
from tensorslim.algorithms.quantize import RangeMethod, choose_qparams, quantize
from tensorslim.backends.tflite.dynamic import (
    DYNAMIC_OPS,
    DynamicForm,
    TflitePassResult,
    TfliteWeightPlan,
    _Edits,
    _materialize_float16_operands,
    _record,
    _weight_only_axis,
    check_selection,
    plan_weights,
)
from tensorslim.backends.tflite.graph import Graph, compact, quant_params
from tensorslim.backends.tflite.weights import WeightUse
from tensorslim.errors import ConfigError
from tensorslim.passes._config import coerce_enums
from tensorslim.passes.base import WeightRecord

__all__ = ["INT4_OPS", "Int4Form", "TfliteInt4Config", "TfliteInt4Pass", "plan_int4"]

#: Operators whose weights the int4 pass quantizes (those of the dynamic mode).
INT4_OPS: tuple[str, ...] = DYNAMIC_OPS
#: Operators LiteRT runs with an INT4 filter and float activations (hybrid), and the filter's channel axis.
INT4_HYBRID_OPS: dict[str, int] = {"FULLY_CONNECTED": 0, "CONV_2D": 0}
_HYBRID_VERSION = {"FULLY_CONNECTED": 13, "CONV_2D": 7}
_HYBRID_VERSION_INT8 = {"FULLY_CONNECTED": 12, "CONV_2D": 5}


class Int4Form(StrEnum):
    """What the 4-bit model computes with."""

    AUTO = "auto"  # hybrid INT4 FULLY_CONNECTED and CONV_2D, int8 depthwise, DEQUANTIZE elsewhere
    INTEGER = "integer"  # the same with 4-bit depthwise weights (slower: outside XNNPACK)
    WEIGHT_ONLY = "weight_only"  # every weight behind a DEQUANTIZE, float compute


#: Operators whose weights the ``auto`` form keeps in int8.
AUTO_INT8_OPS = frozenset({"DEPTHWISE_CONV_2D"})


@dataclass(frozen=True)
class TfliteInt4Config:
    """Configuration of TFLite 4-bit weight quantization (bits fixed at 4, symmetric, per output channel).

    Attributes:
        range_method: ``mse`` (default: the clipping of each channel's range with the lowest squared error, which
            matters at 4 bits) or ``minmax``.
        op_types: operators whose weights are quantized.
        exclude: regular expressions on weight names and ``OP#index`` labels; a match stays float.
        min_size: weights with fewer elements stay float (the dynamic mode's threshold, 1024).
        form: ``auto`` (hybrid INT4 kernels for FULLY_CONNECTED and CONV_2D, depthwise weights int8, DEQUANTIZE
            elsewhere), ``integer`` (the same with 4-bit depthwise weights) or ``weight_only`` (every weight
            4-bit behind a DEQUANTIZE: float compute, but outside XNNPACK).
        target_cosine: with calibration data, the output cosine (against the float model, on the data) that
            holding the most sensitive weights at int8 must reach (:mod:`~tensorslim.backends.tflite.int4_data`).
    """

    range_method: RangeMethod | str = RangeMethod.MSE
    op_types: tuple[str, ...] = INT4_OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 1024
    form: Int4Form | str = Int4Form.AUTO
    target_cosine: float = 0.99

    def __post_init__(self) -> None:
        coerce_enums(self, (("range_method", RangeMethod), ("form", Int4Form)))
        check_selection(self, INT4_OPS)
        if (
            isinstance(self.target_cosine, bool)
            or not isinstance(self.target_cosine, int | float)
            or not (0.0 < self.target_cosine <= 1.0)
        ):
            raise ConfigError(f"target_cosine: must be a number in (0, 1], got {self.target_cosine!r}")


def _form(op_type: str, form: Int4Form) -> DynamicForm:
    if form is Int4Form.WEIGHT_ONLY or op_type not in INT4_HYBRID_OPS:
        return DynamicForm.WEIGHT_ONLY
    return DynamicForm.HYBRID


def _bits(op_type: str, form: Int4Form) -> int:
    """4, or 8 where ``auto`` keeps int8: DEPTHWISE_CONV_2D (no hybrid INT4 kernel; an INT4 DEQUANTIZE takes the
    convolution out of XNNPACK, several times slower, for a weight a few kB large)."""
    return 8 if form is Int4Form.AUTO and op_type in AUTO_INT8_OPS else 4


def _axis(g: Graph, use: WeightUse, form: DynamicForm, ndim: int) -> int | None:
    if form is DynamicForm.HYBRID:
        return INT4_HYBRID_OPS[use.op_type]
    if use.op_type in ("GATHER", "EMBEDDING_LOOKUP"):
        return 0  # one scale per row of the table
    return _weight_only_axis(g, use, ndim)


def plan_int4(
    model: Any, config: TfliteInt4Config, subgraph: int = 0, *, int8: frozenset[str] = frozenset()
) -> list[TfliteWeightPlan]:
    """Decide, for every weight of ``subgraph``, whether and how to store it in 4 bits (in 8 bits: the weights
    named in ``int8``, and those of :data:`AUTO_INT8_OPS` in the ``auto`` form)."""

    def decide(g: Graph, plan: TfliteWeightPlan) -> None:
        w, uses = plan.weight, plan.weight.weight_uses
        form = Int4Form(config.form)
        forms = [_form(u.op_type, form) for u in uses]
        bits = 8 if w.name in int8 or any(_bits(u.op_type, form) == 8 for u in uses) else 4
        axes = {_axis(g, u, f, w.array.ndim) for u, f in zip(uses, forms, strict=True)}
        if len(axes) > 1 and DynamicForm.HYBRID in forms:  # uses disagree on the axis: all through DEQUANTIZE
            forms = [DynamicForm.WEIGHT_ONLY] * len(uses)
            axes = {_axis(g, u, DynamicForm.WEIGHT_ONLY, w.array.ndim) for u in uses}
        axis = next(iter(axes)) if len(axes) == 1 else None
        params = choose_qparams(w.array, bits=bits, scheme="symmetric", axis=axis, method=config.range_method)
        plan.params = params
        plan.codes = quantize(w.array, params)
        plan.forms = forms

    return plan_weights(model, config, subgraph, decide)


class TfliteInt4Pass:
    """Apply 4-bit weight quantization; the input model is never modified (the pass works on a copy)."""

    name = "tflite_int4"

    def __init__(
        self, config: TfliteInt4Config | None = None, *, int8: dict[int, frozenset[str]] | None = None
    ) -> None:
        self.config = config or TfliteInt4Config()
        self.int8 = dict(int8 or {})

    def __call__(self, model: Any) -> TflitePassResult:
        """Plan, then rewrite a copy of ``model``: every subgraph (WHILE/IF bodies included)."""
        model = copy.deepcopy(model)
        records: list[WeightRecord] = []
        for si in range(len(model.subgraphs)):
            plans = plan_int4(model, self.config, si, int8=self.int8.get(si, frozenset()))
            edits = _Edits(Graph(model, si))
            held = self.int8.get(si, frozenset())
            records += [_apply(edits, p, held) for p in plans]
            _materialize_float16_operands(edits, plans)
            edits.finish()
        compact(model)
        return TflitePassResult(model, any(not r.skipped for r in records), records)


def _apply(edits: _Edits, plan: TfliteWeightPlan, held: frozenset[str] = frozenset()) -> WeightRecord:
    if plan.skipped or plan.params is None or plan.codes is None:
        return _record(plan, "skipped", plan.weight.stored_bytes, plan.skip_reason)
    g = edits.g
    w, qp = plan.weight, plan.params
    int8 = qp.bits == 8
    data = plan.codes.astype(np.int8) if int8 else pack_nibbles(plan.codes.astype(np.int8).reshape(-1))
    w_q = g.add_tensor(w.name, list(w.shape), "INT8" if int8 else "INT4", buffer=g.add_buffer(data),
                       quantization=quant_params(qp.scale, qp.zero_point, qp.axis))  # fmt: skip
    deq_out: int | None = None
    for use, form in zip(w.weight_uses, plan.forms, strict=True):
        op = edits.ops[use.op_index]
        if form is DynamicForm.HYBRID:
            op.inputs[use.position] = w_q
            g.bump_version(op, (_HYBRID_VERSION_INT8 if int8 else _HYBRID_VERSION)[use.op_type])
            if use.op_type == "FULLY_CONNECTED" and op.builtinOptions is not None:
                op.builtinOptions.asymmetricQuantizeInputs = True
        else:
            if deq_out is None:
                deq_out = g.add_tensor(w.name + "_dequantized", list(w.shape), "FLOAT32")
                version = (5 if qp.axis is not None else 2) if int8 else 6
                edits.first.append(g.new_op("DEQUANTIZE", [w_q], [deq_out], version=version))
            op.inputs[use.position] = deq_out
    kind = "int8" if int8 else "int4"
    action = f"{kind} " + "+".join(sorted({f.value for f in plan.forms}))
    src = " from float16" if w.source_type == "FLOAT16" else ""
    scale_bytes = 4 * qp.scale.size + 8 * qp.zero_point.size
    why = ""
    if int8:
        why = (", held: at 4 bits it costs the output most (checked on the data)" if w.name in held
               else ", kept: LiteRT has no INT4 depthwise kernel and an INT4 DEQUANTIZE leaves XNNPACK")  # fmt: skip
    return _record(plan, action, int(data.size) + scale_bytes, f"symmetric {kind}{src}{why}")
