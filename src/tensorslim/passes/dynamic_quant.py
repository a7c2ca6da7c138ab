"""Dynamic-range int8 quantization: int8 weights, float activations quantized (or not) at run time.

Decide, then apply. :func:`plan_dynamic_quant` looks at every weight (:func:`find_weights`) and decides,
as plain data (:class:`WeightPlan`), its scales and zero points and, for each consuming node, the form
of the rewrite. :class:`DynamicQuantPass` then applies the plan. The rewrites, before -> after:

* integer kernel, MatMul / Gemm (activations quantized at run time; ONNX Runtime fuses the chain into
  ``DynamicQuantizeMatMul``)::

      MatMul(A, W)  ->  DynamicQuantizeLinear(A) -> MatMulInteger(a_q, W_q, a_zp, w_zp)
                        -> Cast -> Mul(a_s * w_s)

* integer kernel, Conv: ``DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul [-> Add bias]``
  (weights stored as uint8 with one zero point, as ONNX Runtime's ConvInteger requires);
* weight-only, any op: ``Op(X, W)  ->  Op(X, Mul(Sub(Cast(W_q), zp), s))`` (the default ``cast``
  encoding, which ONNX Runtime folds once at session load: float speed, small file), or with the
  ``dequantize_linear`` encoding ``Op(X, DequantizeLinear(W_q, s, zp, axis))``, the standard QDQ form,
  which ONNX Runtime evaluates on every run (measured several times slower than float on CPU);
* embeddings: ``Gather(E, ids)  ->  Mul(Cast(Gather(E_q, ids)), Gather(s, ids))``: only the gathered
  rows are dequantized.

``weight_bits=4`` stores weights as 4-bit *ladder* blocks (see :mod:`tensorslim.algorithms.blockwise`):
blocks of ``block_size`` values along the input axis, each scale an integer multiple of the channel's int8
step, so that the int8 weight is exactly ``q * m``. The file holds the packed codes and one multiplier per
block; ``Cast -> Div/Mul/Sub -> Concat -> Mul -> Transpose (or Reshape) -> Cast``, all on constants, rebuild
the int8 weight, and ONNX Runtime folds them once at session load: a 4-bit file that runs on the int8
``DynamicQuantizeMatMul`` kernels (MatMul/Gemm), or on float kernels for load-time dequantized weights (Conv).
With calibration data the codes are chosen by GPTQ.

Rotated activations (``rotation="hadamard"``) are rotated at run time by a block-Hadamard ``MatMul``, one
per activation, except where :func:`fold_rotations` can rotate the constants that produce the activation
instead (exact in float; e.g. the value projection in front of a transformer's attention output projection).

The default form (``auto``) picks, per op, what is fast on ONNX Runtime's CPU kernels: integer kernels
for MatMul/Gemm, load-time dequantization for Conv-like ops and recurrent weights (ONNX Runtime's
ConvInteger is slower than its float Conv), gather-then-dequantize for embeddings. A MatMul/Gemm whose
work per sample is known from the graph's shapes and below :data:`MIN_INTEGER_MACS` multiply-adds stays
weight-only too: quantizing its input at run time (and rotating it) costs more than the integer kernel saves
(:func:`sample_macs`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import onnx
from onnx import TensorProto

from tensorslim._regex import name_matcher
from tensorslim.algorithms.blockwise import ladder_steps, ladder_values, pack_nibbles, quantize_blocks_ladder
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.gptq import gptq_blocks
from tensorslim.algorithms.quantize import (
    QuantParams,
    QuantScheme,
    RangeMethod,
    choose_qparams,
    dequantize,
    quantize,
    quantize_keeping_sums,
)
from tensorslim.algorithms.rotation import rotate_input_channels
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, WeightUse, find_weights
from tensorslim.errors import ConfigError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes._config import Granularity, coerce_enums, regex_tuple
from tensorslim.passes._dynamic_plan import UseForm, WeightPlan
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import ConvGeometry, LayerInput, LazyGrams
from tensorslim.passes.dynamic_rotation import fold_rotations, insert_rotations
from tensorslim.passes.dynamic_storage import float16_scales, plan_float16_storage
from tensorslim.passes.fold_weight_chains import FoldWeightChainsPass

__all__ = [
    "SUPPORTED_OPS",
    "DynamicQuantConfig",
    "DynamicQuantPass",
    "Granularity",
    "QuantForm",
    "Rotation",
    "UseForm",
    "WeightEncoding",
    "WeightPlan",
    "fold_rotations",
    "plan_dynamic_quant",
    "sample_macs",
]

log = logging.getLogger(__name__)

SUPPORTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM", "GRU", "RNN")

#: ``auto`` keeps a MatMul/Gemm with fewer multiply-adds per sample weight-only. Measured here (ONNX Runtime
#: 1 thread, one layer, its Hadamard rotation included; integer vs float latency): 2.6 k (128x20, 1 row) 1.13x,
#: 16 k (128x128, 1 row) 1.41x, 66 k (256x256, 1 row) 1.21x, 82 k (128x20, 32 rows) 0.99x, 131 k (64x64, 32
#: rows) 0.96x, 147 k (384x384, 1 row) 0.86x, 590 k (768x768, 1 row) 0.52x; weight-only 0.99-1.03x throughout.
MIN_INTEGER_MACS = 1 << 17


class QuantForm(StrEnum):
    """What the quantized model computes with."""

    AUTO = "auto"  # per op, the form that is fast on ONNX Runtime's CPU kernels
    INTEGER = "integer"  # integer kernels wherever one exists (activations quantized at run time)
    WEIGHT_ONLY = "weight_only"  # int8 weights dequantized in front of the float op


class WeightEncoding(StrEnum):
    """How weight-only uses turn int8 codes back into floats."""

    AUTO = "auto"  # the load-time cast: ONNX Runtime evaluates DequantizeLinear on every run
    DEQUANTIZE_LINEAR = "dequantize_linear"  # standard DequantizeLinear node, evaluated at run time
    CAST = "cast"  # Cast + Sub + Mul on constants, folded by ONNX Runtime once at session load


class Rotation(StrEnum):
    """Rotation of the activations of integer MatMul/Gemm kernels (see :mod:`tensorslim.algorithms.rotation`)."""

    HADAMARD = "hadamard"  # block-Hadamard: spreads outlier channels, no data needed
    NONE = "none"


@dataclass(frozen=True)
class DynamicQuantConfig:
    """Configuration of dynamic-range quantization.

    Attributes:
        form: ``auto`` (default), ``integer`` or ``weight_only``; see :class:`QuantForm`.
        scheme: ``symmetric`` int8 codes (zero point 0) or ``asymmetric`` uint8 codes over [0, 255].
        granularity: ``per_channel`` (one scale per output channel, axis-aware per op) or ``per_tensor``.
        range_method: ``mse`` (per-channel MSE-optimal clipping search) or ``minmax``.
        op_types: op types whose weights are quantized.
        exclude: regular expressions; a node whose name matches any of them keeps float weights.
        min_size: weights with fewer elements stay float.
        weight_encoding: how weight-only uses dequantize; see :class:`WeightEncoding`.
        float_compute: regular expressions; a matching node keeps int8 weights but computes in float
            (weight-only), for layers whose activations do not survive run-time quantization.
        rotation: ``hadamard`` (default) rotates the input channels of integer MatMul/Gemm layers with a
            block-Hadamard matrix (weights offline, activations at run time) so that outlier channels stop
            dictating the run-time quantization step; ``none`` turns it off.
        rotation_block: size of the Hadamard blocks (a power of two); layers whose input channels are
            not a multiple of it are not rotated.
        compact: store the file compactly (default). The per-channel scales of load-time-dequantized
            weights are float16 values (rounded to the nearest at plan time, the codes computed with them;
            a weight whose SQNR that rounding lowers by more than 0.02 dB keeps float32 scales); they, the
            biases of those layers and the weights below ``min_size`` (which stay float) are stored as
            float16 behind a ``Cast``, packed per graph (ONNX Runtime casts once, at session load); new
            tensors are initializers, and the tensors and nodes the pass creates get short names (the
            dequantized weight keeps its original name). ``False``: float32 scales and biases,
            descriptive names, new tensors stored as the model stores its weights.
        weight_bits: 8 (default), or 4: the weights of integer MatMul/Gemm kernels and the load-time
            dequantized weights with channels first (Conv) are stored as 4-bit ladder blocks of ``block_size``
            values along their input axis and rebuilt as int8 at session load (needs the symmetric scheme and
            per-channel granularity); other weights stay 8-bit.
        block_size: values per 4-bit block, a power of two from 16 to 256.
        min_integer_macs: with ``form="auto"``, a MatMul/Gemm doing fewer multiply-adds per sample (known from
            the graph's shapes, :func:`sample_macs`) stays weight-only; 0 turns the rule off. Default
            :data:`MIN_INTEGER_MACS`.
        keep_conv_sums: round each output channel of a Conv weight so that its sum stays the float sum
            (:func:`~tensorslim.algorithms.quantize.quantize_keeping_sums`): the layer's response to a flat
            input (paper, sky, padding) stays float's. With int8 weights and float activations it raised the
            output SQNR of RapidOCR's three nets, the digits CNN, YOLOv8n and PP-LCNet by 1 to 2.8 dB
            (``benchmarks/keep_sums.py``, benchmarks/README). ``False``: to nearest.
    """

    form: QuantForm | str = QuantForm.AUTO
    scheme: QuantScheme | str = QuantScheme.SYMMETRIC
    granularity: Granularity | str = Granularity.PER_CHANNEL
    range_method: RangeMethod | str = RangeMethod.MSE
    op_types: tuple[str, ...] = SUPPORTED_OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 256
    weight_encoding: WeightEncoding | str = WeightEncoding.AUTO
    float_compute: tuple[str, ...] = ()
    rotation: Rotation | str = Rotation.HADAMARD
    rotation_block: int = 32
    compact: bool = True
    weight_bits: int = 8
    block_size: int = 32
    min_integer_macs: int = MIN_INTEGER_MACS
    keep_conv_sums: bool = True

    def __post_init__(self) -> None:
        coerce_enums(
            self,
            (
                ("form", QuantForm),
                ("scheme", QuantScheme),
                ("granularity", Granularity),
                ("range_method", RangeMethod),
                ("weight_encoding", WeightEncoding),
                ("rotation", Rotation),
            ),
        )
        ops = tuple(self.op_types)
        unknown = [o for o in ops if o not in SUPPORTED_OPS]
        if unknown:
            raise ConfigError(
                f"op_types: unknown op {', '.join(map(repr, unknown))}; allowed: {', '.join(SUPPORTED_OPS)}"
            )
        if not ops:
            raise ConfigError(f"op_types: empty; give at least one of {', '.join(SUPPORTED_OPS)}")
        object.__setattr__(self, "op_types", ops)
        for fname in ("exclude", "float_compute"):
            object.__setattr__(self, fname, regex_tuple(fname, getattr(self, fname)))
        for fname in ("min_size", "min_integer_macs"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{fname}: must be a non-negative integer, got {v!r}")
        b = self.rotation_block
        if isinstance(b, bool) or not isinstance(b, int) or b < 2 or b & (b - 1) or b > 1024:
            raise ConfigError(f"rotation_block: must be a power of two between 2 and 1024, got {b!r}")
        if not isinstance(self.compact, bool):
            raise ConfigError(f"compact: must be True or False, got {self.compact!r}")
        if self.weight_bits not in (4, 8) or isinstance(self.weight_bits, bool):
            raise ConfigError(f"weight_bits: {self.weight_bits!r} is not one of 8, 4")
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 16 or bs > 256 or bs & (bs - 1):
            raise ConfigError(f"block_size: must be a power of two from 16 to 256, got {bs!r}")
        if self.weight_bits == 4 and (
            self.scheme is not QuantScheme.SYMMETRIC or self.granularity is not Granularity.PER_CHANNEL
        ):
            raise ConfigError("weight_bits: 4-bit ladder blocks need scheme 'symmetric' and granularity 'per_channel'")


def sample_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds per sample of the main graph's MatMul/Gemm nodes with a constant right operand, by output,
    where ONNX shape inference gives the left operand's shape: rows (every axis but the last, an axis named as a
    graph input's first axis counting as one sample) x K x N. Nodes whose rows depend on a size only known at run
    time (a sequence length) are left out, as is everything when shape inference fails (models over 2 GB)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_shapes_only(model))
    except Exception as exc:  # best effort: without shapes, no node counts as small
        log.debug("sample_macs: shape inference failed (%s)", exc)
        return {}
    batch = {i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input
             if i.type.tensor_type.HasField("shape") and len(i.type.tensor_type.shape.dim) > 0} - {""}  # fmt: skip
    dims: dict[str, list[int | None]] = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            dims[v.name] = [
                d.dim_value if d.HasField("dim_value") else (1 if i == 0 and d.dim_param in batch else None)
                for i, d in enumerate(t.shape.dim)
            ]
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in weights:
            continue
        if any(a.name == "transA" and a.i for a in node.attribute):
            continue
        a, w = dims.get(node.input[0]), weights[node.input[1]]
        if not a or len(w) != 2 or any(d is None for d in a[:-1]):
            continue
        rows = int(np.prod([d for d in a[:-1] if d is not None], dtype=np.int64))
        out[node.output[0]] = rows * w[0] * w[1]
    return out


def _shapes_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` for shape inference: initializers over 64 values become typed graph inputs (no data copied)."""
    g = model.graph
    big = [t for t in g.initializer if int(np.prod(t.dims, dtype=np.int64)) > 64]
    names = {i.name for i in g.input}
    inputs = [*g.input, *(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                          for t in big if t.name not in names)]  # fmt: skip
    small = [t for t in g.initializer if int(np.prod(t.dims, dtype=np.int64)) <= 64]
    graph = onnx.helper.make_graph(list(g.node), g.name, inputs, list(g.output), small, value_info=list(g.value_info))
    return onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _small_work(model: onnx.ModelProto, cfg: DynamicQuantConfig) -> dict[str, int]:
    """The MatMul/Gemm nodes (by output) that ``auto`` keeps weight-only for their small work, with that work."""
    if cfg.form is not QuantForm.AUTO or not cfg.min_integer_macs:
        return {}
    return {k: v for k, v in sample_macs(model).items() if v < cfg.min_integer_macs}


def _granularity_label(qp: QuantParams | None) -> str:
    if qp is None:
        return ""
    return "per_tensor" if qp.axis is None else f"per_channel(axis={qp.axis})"


def _integer_ok(use: WeightUse, cfg: DynamicQuantConfig, opset: int, qp_axis: int | None) -> UseForm | None:
    """The integer rewrite usable for ``use``, or ``None``."""
    if opset < 11:
        return None
    node = use.node
    if use.role is WeightRole.MATMUL and use.channel_axis == 1 and qp_axis in (None, 1):
        return UseForm.INTEGER_MATMUL
    if use.role is WeightRole.GEMM and qp_axis in (None, use.channel_axis):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if int(attrs.get("transA", 0)) == 0:
            return UseForm.INTEGER_MATMUL
    if use.role is WeightRole.CONV and cfg.form is QuantForm.INTEGER and qp_axis in (None, 0):
        return UseForm.INTEGER_CONV
    return None


def plan_dynamic_quant(
    model: onnx.ModelProto, config: DynamicQuantConfig, hessians: Mapping[str, np.ndarray] | None = None,
    int8_weights: Mapping[str, str] | None = None,
) -> list[WeightPlan]:  # fmt: skip
    """Decide, for every weight of ``model``, whether and how to quantize it.

    ``hessians``: ``X^T X`` of the (rotated) inputs of weights, by weight name; with ``weight_bits=4`` those
    weights get GPTQ codes instead of round-to-nearest. ``int8_weights``: with ``weight_bits=4``, weights
    (by name) that keep int8 codes, each with the reason (the int4 output check's decisions).
    """
    opset = opset_version(model)
    is_excluded = name_matcher(config.exclude)
    float_compute = name_matcher(config.float_compute, "float_compute")
    small_work = _small_work(model, config)
    plans: list[WeightPlan] = []
    small: set[int] = set()  # ids of the plans of weights below min_size
    for w in find_weights(model):
        plan = WeightPlan(w)
        plans.append(plan)
        role_uses = w.weight_uses
        if not role_uses:
            plan.skip_reason = f"consumed only by {', '.join(sorted({u.op_type for u in w.uses}))} (no weight role)"
            continue
        if not w.is_float:
            plan.skip_reason = f"{w.array.dtype} tensor, not float (already quantized?)"
            continue
        if w.array.dtype != np.float32:
            plan.skip_reason = f"{w.array.dtype} weights; dynamic int8 quantization takes float32 models"
            continue
        if w.graph_input and model.ir_version >= 4:
            plan.skip_reason = "initializer is also a graph input (it can be overridden at run time)"
            continue
        blocked = [u for u in role_uses if u.op_type not in config.op_types]
        if blocked:
            plan.skip_reason = f"op {blocked[0].op_type} not in the op list ({', '.join(config.op_types)})"
            continue
        excluded = [u for u in w.uses if is_excluded(u.node_name)]
        if excluded:
            plan.skip_reason = f"node {excluded[0].node_name!r} matches an exclude pattern"
            continue
        if w.size < config.min_size:
            plan.skip_reason = f"{w.size} elements < min size {config.min_size}"
            small.add(id(plan))
            continue
        if not np.all(np.isfinite(w.array)):
            plan.skip_reason = "holds NaN or infinite values"
            continue
        primary = role_uses[0]
        axis = primary.channel_axis if config.granularity is Granularity.PER_CHANNEL else None
        if w.array.ndim == 0:
            axis = None
        integer_forms = {
            id(u.node): (
                None if float_compute(u.node_name) else _integer_ok(u, config, opset, axis)
            )
            for u in role_uses
        }
        for u in role_uses:
            macs = small_work.get(u.node.output[0]) if u.node.output else None
            if macs is not None and integer_forms[id(u.node)] is UseForm.INTEGER_MATMUL:
                integer_forms[id(u.node)] = None
                plan.notes.append(
                    f"{u.node_name}: {macs} multiply-adds per sample, below {config.min_integer_macs}: weight-only "
                    "(quantizing its input at run time costs more than the integer kernel saves; --form integer "
                    "forces it)"
                )
        conv_integer = any(f is UseForm.INTEGER_CONV for f in integer_forms.values())
        scheme = QuantScheme(config.scheme)
        # embeddings are looked up, not multiplied: their outliers carry meaning, so their range is never clipped
        method = RangeMethod.MINMAX if primary.role is WeightRole.EMBEDDING else RangeMethod(config.range_method)
        values = w.array
        block = _rotation_block(w, role_uses, integer_forms, config)
        if block:
            k_axis = 1 if primary.role is WeightRole.GEMM and primary.channel_axis == 0 else 0
            values = rotate_input_channels(w.array, block, k_axis)
            plan.rotation_block = block
            plan.notes.append(f"input channels rotated (Hadamard blocks of {block})")
        qp = choose_qparams(values, bits=8, scheme=scheme, axis=axis, method=method)
        if conv_integer and scheme is QuantScheme.ASYMMETRIC and axis is not None:
            # ConvInteger takes one weight zero point: asymmetric per-channel cannot use it
            integer_forms = {k: (None if v is UseForm.INTEGER_CONV else v) for k, v in integer_forms.items()}
            plan.notes.append("ConvInteger takes one weight zero point: Conv uses weight-only")
        for use in w.uses:
            plan.forms.append((use, _use_form(use, config, opset, axis, integer_forms.get(id(use.node)))))
        if config.compact and all(f is UseForm.CAST for _, f in plan.forms):
            half = float16_scales(qp, values)
            if half is not None:
                qp = half
                plan.scale_float16 = True
                plan.notes.append("float16 scales")
        plan.params = qp
        conv = config.keep_conv_sums and all(u.role is WeightRole.CONV for u in w.uses)
        plan.codes = (quantize_keeping_sums(values, qp, primary.channel_axis)
                      if conv and primary.channel_axis is not None else quantize(values, qp))  # fmt: skip
        plan.target = values
        if config.weight_bits == 4 and int8_weights and w.name in int8_weights:
            plan.notes.append(f"int8: {int8_weights[w.name]}")
        elif config.weight_bits == 4:
            _plan_int4(plan, values, config, (hessians or {}).get(w.name))
    if config.compact:
        plan_float16_storage(plans, small)
    return plans


def _int4_rows(plan: WeightPlan, values: np.ndarray) -> tuple[np.ndarray, bool, bool | str] | str:
    """The ``[channels, K]`` rows of a weight for 4-bit blocks, or why there are none.

    Also whether the rows are the weight transposed, and whether the rebuilt tensor is the rows transposed
    (``[K, N]``, what MatMulInteger takes) rather than reshaped to the weight's shape. Integer MatMul/Gemm
    uses, and load-time dequantized uses whose channels are the first axis (Conv, Gemm with ``transB``) or the
    last axis of a 2-D weight (MatMul).
    """
    forms = {f for _, f in plan.forms}
    axis = plan.params.axis if plan.params is not None else None
    if forms == {UseForm.INTEGER_MATMUL} and values.ndim == 2:
        use = plan.forms[0][0]
        k_axis = 1 if use.role is WeightRole.GEMM and use.channel_axis == 0 else 0
        return (values, False, True) if k_axis == 1 else (values.T, True, True)
    if forms == {UseForm.CAST} and axis == 0 and values.ndim >= 2:
        return values.reshape(values.shape[0], -1), False, False
    if forms == {UseForm.CAST} and axis == 1 and values.ndim == 2:
        return values.T, True, True
    if forms == {UseForm.CAST} and axis == 1 and values.ndim == 3 and plan.forms[0][0].role in _RNN_ROLES:
        # LSTM/GRU/RNN W [dirs, gates*hidden, input] and R [dirs, gates*hidden, hidden]: one row per gate unit
        # holding every direction's inputs (the per-channel step is shared by the directions, as int8's scale is)
        d, c, k = values.shape
        return values.transpose(1, 0, 2).reshape(c, d * k), False, "gates"
    return "int8: 4-bit blocks take integer MatMul/Gemm weights and load-time dequantized weights with channels first"


_RNN_ROLES = (WeightRole.RNN_W, WeightRole.RNN_R)


def _plan_int4(plan: WeightPlan, values: np.ndarray, cfg: DynamicQuantConfig, hessian: np.ndarray | None) -> None:
    """Turn the int8 plan of a weight into 4-bit ladder blocks along its input axis (GPTQ with ``hessian``)."""
    found = _int4_rows(plan, values) if plan.forms else "int8: no use takes 4-bit blocks"
    if isinstance(found, str):
        plan.notes.append(found)
        return
    rows = np.ascontiguousarray(found[0], dtype=np.float32)
    _, rows_are_transposed, expand_transposed = found
    block = cfg.block_size
    if rows.shape[1] % block:
        plan.notes.append(f"int8: K={rows.shape[1]} is not a multiple of the block size {block}")
        return
    step = ladder_steps(rows, block=block, method=cfg.range_method)
    if hessian is not None and hessian.shape != (rows.shape[1], rows.shape[1]):
        plan.notes.append(f"no GPTQ: input statistics of shape {list(hessian.shape)} do not match K={rows.shape[1]}")
        hessian = None
    if hessian is not None:
        bq = gptq_blocks(rows, hessian, bits=4, block=block, step=step)
    else:
        bq = quantize_blocks_ladder(rows, step, block=block)
    ints, multipliers = ladder_values(bq, step)
    assert plan.params is not None and plan.params.axis is not None  # per channel (validated by the config)
    plan.params = QuantParams(
        scale=step.astype(np.float32), zero_point=np.zeros(step.shape, np.int8), axis=plan.params.axis,
        bits=8, scheme=QuantScheme.SYMMETRIC,
    )  # fmt: skip
    if plan.scale_float16:  # the steps are new float32 values
        plan.scale_float16 = False
        plan.notes = [n for n in plan.notes if n != "float16 scales"]
    if expand_transposed == "gates":  # rows [C, dirs*K] -> [dirs, C, K]
        d, c, k = values.shape
        plan.codes = np.ascontiguousarray(ints.reshape(c, d, k).transpose(1, 0, 2))
    else:
        plan.codes = np.ascontiguousarray(ints.T) if rows_are_transposed else ints.reshape(values.shape)
    plan.int4 = (pack_nibbles(bq.codes), multipliers, expand_transposed)
    how = "GPTQ" if hessian is not None else str(RangeMethod(cfg.range_method))
    plan.notes.append(f"symmetric int4 blocks of {block} ({how}) on the int8 grid")


def _rotation_block(
    w: WeightInfo, role_uses: list[WeightUse], integer_forms: dict[int, UseForm | None], cfg: DynamicQuantConfig
) -> int:
    """The Hadamard block size for ``w``, or 0 when its uses cannot all take rotated inputs."""
    if Rotation(cfg.rotation) is Rotation.NONE or cfg.form is QuantForm.WEIGHT_ONLY or w.array.ndim != 2:
        return 0
    if len(role_uses) != len(w.uses):
        return 0
    if any(integer_forms.get(id(u.node)) is not UseForm.INTEGER_MATMUL for u in role_uses):
        return 0
    k_axis = 1 if role_uses[0].role is WeightRole.GEMM and role_uses[0].channel_axis == 0 else 0
    if any((1 if u.role is WeightRole.GEMM and u.channel_axis == 0 else 0) != k_axis for u in role_uses):
        return 0
    block = cfg.rotation_block
    if w.size < 16 * block * block:  # the run-time rotation would cost more than it can save on a tiny layer
        return 0
    return block if w.array.shape[k_axis] % block == 0 else 0


def _use_form(
    use: WeightUse, cfg: DynamicQuantConfig, opset: int, axis: int | None, integer: UseForm | None
) -> UseForm:
    if use.role is WeightRole.EMBEDDING and axis in (None, use.channel_axis):
        return UseForm.GATHER
    if (
        integer is not None
        and cfg.form is not QuantForm.WEIGHT_ONLY
        and (cfg.form is QuantForm.INTEGER or integer is UseForm.INTEGER_MATMUL)
    ):
        return integer
    dq_possible = opset >= 13 or (opset >= 10 and axis is None)
    enc = WeightEncoding(cfg.weight_encoding)
    if enc is WeightEncoding.AUTO:
        enc = WeightEncoding.CAST
    if enc is WeightEncoding.DEQUANTIZE_LINEAR and dq_possible:
        return UseForm.DEQUANTIZE_LINEAR
    return UseForm.CAST


class DynamicQuantPass(Pass):
    """Apply dynamic-range int8 quantization to every eligible weight."""

    name = "dynamic_quant"

    def __init__(
        self, config: DynamicQuantConfig | None = None, *, data: Dataset | None = None,
        int8_weights: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """``data``: calibration data, used by ``weight_bits=4`` (GPTQ); ignored otherwise. ``int8_weights``:
        with ``weight_bits=4``, weights (by name) that keep int8 codes, with the reason of each."""
        self.config = config or DynamicQuantConfig()
        self.data = data if self.config.weight_bits == 4 else None
        self.int8_weights = dict(int8_weights or {})

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Plan, then rewrite ``model`` in place (the base class hands us a copy)."""
        cfg = self.config
        chains = FoldWeightChainsPass().call(model)  # weights behind constant Slice/Concat chains (If bodies)
        model = chains.model
        folded: frozenset[str] = frozenset()
        rotate = cfg.rotation is Rotation.HADAMARD and cfg.form is not QuantForm.WEIGHT_ONLY
        hessians: Mapping[str, np.ndarray] = {}
        if rotate or self.data is not None:
            # forms and rotations do not depend on the range method or the bits: a quick plan finds them
            quick = plan_dynamic_quant(model, replace(cfg, range_method=RangeMethod.MINMAX, weight_bits=8))
            if rotate:
                folded = fold_rotations(model, quick)
            if self.data is not None:
                hessians = _input_hessians(model, cfg, folded, self.data)
        plans = plan_dynamic_quant(model, cfg, hessians, self.int8_weights)
        editor = GraphEditor(model)
        rotated = insert_rotations(editor, plans, folded)
        compact = self.config.compact
        records = [_apply_weight(editor, p, rotated, f"q{i}" if compact else "") for i, p in enumerate(plans)]
        editor.apply()
        modified = any(not r.skipped for r in records)
        return PassResult(model, modified, records, chains.notes if modified else [])


def _input_hessians(
    model: onnx.ModelProto, cfg: DynamicQuantConfig, folded: frozenset[str], data: Dataset
) -> Mapping[str, np.ndarray]:
    """``X^T X`` of the inputs of the main graph's 4-bit candidates, read from the int8 version of the model.

    There each layer sees the inputs it will see once the layers before it are quantized, rotated like its
    weight. GPTQ on these beats GPTQ on the float model's inputs (MiniLM, 4-bit blocks of 32: mean embedding
    cosine 0.990 against 0.983). Integer MatMul/Gemm weights, and load-time dequantized 2-D Conv weights
    (group 1; rows of ``C_in * kh * kw`` input patches). Computed lazily, a group of layers at a time, in the
    order the plan reads them (:class:`LazyGrams`: memory bounded whatever the number of layers).
    """
    int8 = onnx.ModelProto()
    int8.CopyFrom(model)
    plans = plan_dynamic_quant(int8, replace(cfg, weight_bits=8))
    acts: dict[str, tuple[tuple[str, str], ConvGeometry | None]] = {}
    sizes: dict[str, int] = {}
    for p in plans:
        if p.skipped or len(p.forms) != 1 or p.weight.scope.path or p.forms[0][0].scope.path:
            continue
        use, form = p.forms[0]
        shape = p.weight.array.shape
        if form is UseForm.INTEGER_MATMUL and len(shape) == 2:
            acts[p.weight.name] = (("", use.node.input[0]), None)
            sizes[p.weight.name] = shape[1 if use.role is WeightRole.GEMM and use.channel_axis == 0 else 0]
        elif form is UseForm.CAST and use.role is WeightRole.CONV and _plain_conv(use.node, p.weight.array):
            acts[p.weight.name] = (("", use.node.input[0]), ConvGeometry.from_node(use.node, shape))
            sizes[p.weight.name] = int(np.prod(shape[1:]))
    if not acts:
        return {}
    editor = GraphEditor(int8)
    rotated = insert_rotations(editor, plans, folded)
    for i, p in enumerate(plans):
        _apply_weight(editor, p, rotated, f"q{i}")
    editor.apply()
    layers = {name: LayerInput(activation=rotated.get(key, key[1]), conv=geo) for name, (key, geo) in acts.items()}
    return LazyGrams(int8, layers, data, sizes)


def _plain_conv(node: onnx.NodeProto, w: np.ndarray) -> bool:
    """A 2-D Conv with group 1 and explicit pads: what :func:`im2col` reads patches for."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    return w.ndim == 4 and int(attrs.get("group", 1)) == 1 and auto in ("NOTSET", "")


def _record(
    plan: WeightPlan, action: str, bytes_after: int, details: str, stored: np.ndarray | None = None
) -> WeightRecord:
    w = plan.weight
    err = None
    if plan.params is not None and plan.codes is not None:
        target = plan.target if plan.target is not None else w.array
        err = round(sqnr_db(target, dequantize(plan.codes, plan.params)), 2)
    elif stored is not None:
        err = round(sqnr_db(w.array, stored.astype(np.float32)), 2)
    return WeightRecord(
        name=w.name,
        ops=",".join(dict.fromkeys(u.op_type for u in w.uses)),
        nodes=",".join(dict.fromkeys(u.node_name for u in w.uses)),
        shape=tuple(int(d) for d in w.array.shape),
        action=action,
        reason=details,
        bytes_before=w.nbytes,
        bytes_after=bytes_after,
        granularity=(
            f"per_block({plan.int4[0].shape[1] * 2 // plan.int4[1].shape[1]})"
            if plan.int4 is not None and plan.codes is not None
            else _granularity_label(plan.params)
        ),
        sqnr_db=err,
    )


class _Stored:
    """Tensors of one weight, created lazily and shared by all its uses.

    ``prefix`` (compact configs) replaces the weight's name in the names of the tensors and nodes created
    for it, and puts new tensors into initializers (a ``Constant`` node costs more bytes than an initializer).
    """

    def __init__(self, editor: GraphEditor, plan: WeightPlan, prefix: str = "") -> None:
        self.editor = editor
        self.plan = plan
        self.prefix = prefix
        self.cache: dict[str, str] = {}
        self.nbytes = 0
        self.dq_outputs: dict[str, str] = {}
        self.name_reused = False

    def base(self, short: str, long: str) -> str:
        """The base of a name created for this weight: ``prefix + short``, or ``<weight name>_<long>``."""
        return f"{self.prefix}{short}" if self.prefix else f"{self.plan.weight.name}_{long}"

    def name(self, short: str, long: str) -> str:
        """A fresh value name for something created for this weight."""
        return self.editor.names(self.base(short, long))

    def tensor(self, key: str, array: np.ndarray, short: str = "") -> str:
        if key not in self.cache:
            w = self.plan.weight
            constant = w.source == "constant" and not self.prefix
            self.cache[key] = self.editor.add_tensor(w.scope, self.base(short or key, key), array, as_constant=constant)
            self.nbytes += int(np.asarray(array).nbytes)
        return self.cache[key]

    def output_name(self, use: WeightUse, short: str, long: str) -> str:
        """The dequantized weight's name: compact, the weight's own name for the first one in the weight's graph."""
        if self.prefix and not self.name_reused and use.scope == self.plan.weight.scope:
            self.name_reused = True
            return self.plan.weight.name
        return self.name(short, long)


def _apply_weight(
    editor: GraphEditor, plan: WeightPlan, rotated: dict[tuple[str, str], str], prefix: str = ""
) -> WeightRecord:
    w = plan.weight
    if plan.float16:
        return _apply_float16(editor, plan, prefix)
    if plan.skipped or plan.params is None or plan.codes is None:
        return _record(plan, "skipped", w.nbytes, plan.skip_reason)
    qp, codes = plan.params, plan.codes
    store = _Stored(editor, plan, prefix)
    bits = "int4 ladder " if plan.int4 is not None else "int8 "
    used_forms: list[str] = []
    for use, form in plan.forms:
        if form is UseForm.INTEGER_MATMUL:
            x = rotated.get((use.scope.path, use.node.input[0])) if plan.rotation_block else None
            _rewrite_integer_matmul(editor, store, use, qp, codes, x)
        elif form is UseForm.INTEGER_CONV:
            _rewrite_integer_conv(editor, store, use, qp, codes)
        elif form is UseForm.GATHER:
            _rewrite_gather(editor, store, use, qp, codes)
        else:
            _rewrite_weight_only(editor, store, use, qp, codes, form)
        used_forms.append(f"{use.op_type}:{form.value}")
    editor.drop_weight(w.scope, w.name, w.source)
    forms = sorted({f.value for _, f in plan.forms})
    action = bits + "+".join(forms)
    details = "; ".join([*plan.notes, ", ".join(dict.fromkeys(used_forms))])
    return _record(plan, action, store.nbytes, details)


def _apply_float16(editor: GraphEditor, plan: WeightPlan, prefix: str) -> WeightRecord:
    """``W  ->  Cast(W16, to=float)`` (possibly packed with others, see :meth:`GraphEditor.add_float16`), the
    float value keeping the tensor's name; ONNX Runtime folds it at session load."""
    w = plan.weight
    first = w.uses[0].node  # every use is in the tensor's own graph, in graph order
    editor.add_float16(w.scope, w.name, w.array, first, f"{prefix}h" if prefix else "")
    editor.drop_weight(w.scope, w.name, w.source)
    half = w.array.astype(np.float16)
    return _record(plan, "float16 load_time_cast", int(half.nbytes), "; ".join(plan.notes), half)


def _scale_zp_shaped(qp: QuantParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    s, z = qp.broadcast(ndim)
    return np.asarray(s, np.float32), np.asarray(z)


def _rewrite_weight_only(
    editor: GraphEditor, store: _Stored, use: WeightUse, qp: QuantParams, codes: np.ndarray, form: UseForm
) -> None:
    key = f"{use.scope.path}|{form.value}"
    out = store.dq_outputs.get(key)
    if out is None:
        out = store.output_name(use, "d", "dq")
        q = _expanded_int4(editor, store, use) if store.plan.int4 is not None else store.tensor("q", codes, "q")
        if form is UseForm.DEQUANTIZE_LINEAR:
            s = store.tensor("scale", qp.scale if qp.axis is not None else qp.scale.reshape(()), "s")
            z = store.tensor("zero_point", qp.zero_point if qp.axis is not None else qp.zero_point.reshape(()), "z")
            attrs = {"axis": qp.axis} if qp.axis is not None else {}
            nodes = [editor.node("DequantizeLinear", [q, s, z], [out], store.base("DQ", "DequantizeLinear"), **attrs)]
        else:
            s_b, z_b = _scale_zp_shaped(qp, codes.ndim)
            qf = store.name("f", "qf")
            nodes = [editor.node("Cast", [q], [qf], store.base("C", "Cast"), to=TensorProto.FLOAT)]
            if np.any(z_b != 0):
                zf = store.tensor("zero_point_float", z_b.astype(np.float32), "z")
                centered = store.name("c", "centered")
                nodes.append(editor.node("Sub", [qf, zf], [centered], store.base("S", "Sub")))
                qf = centered
            if store.plan.scale_float16:
                s = store.name("s", "s")
                editor.add_float16(use.scope, s, s_b, use.node, store.base("h", "scale_float16"))
                store.nbytes += s_b.size * 2
            else:
                s = store.tensor("s", s_b, "s")
            nodes.append(editor.node("Mul", [qf, s], [out], store.base("M", "Mul")))
        editor.insert_before(use.node, nodes)
        store.dq_outputs[key] = out
    use.node.input[use.input_index] = out


def _gemm_attrs(node: onnx.NodeProto) -> dict[str, float]:
    return {a.name: float(onnx.helper.get_attribute_value(a)) for a in node.attribute}


def _rewrite_integer_matmul(
    editor: GraphEditor, store: _Stored, use: WeightUse, qp: QuantParams, codes: np.ndarray, x: str | None = None
) -> None:
    node = use.node
    base = node.name or node.output[0]
    alpha, beta, bias = 1.0, 1.0, None
    if use.role is WeightRole.GEMM:
        attrs = _gemm_attrs(node)
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if store.plan.int4 is not None:
        q = _expanded_int4(editor, store, use)
    elif use.role is WeightRole.GEMM:
        if int(attrs.get("transB", 0)):
            codes_kn = np.ascontiguousarray(codes.T)
            q = store.tensor("quantized_t", codes_kn, "t")
        else:
            q = store.tensor("q", codes, "q")
    else:
        q = store.tensor("q", codes, "q")
    n_cols = codes.shape[0] if (use.role is WeightRole.GEMM and qp.axis == 0) else codes.shape[-1]
    scale: np.ndarray = qp.scale.reshape(-1) * np.float32(alpha)
    zp: np.ndarray = qp.zero_point.reshape(-1)
    if qp.axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    elif scale.shape != (n_cols,):  # pragma: no cover - guarded by _integer_ok
        raise RuntimeError(f"{use.node_name}: per-channel scales do not match the {n_cols} output columns")
    s = store.tensor(f"scale_a{alpha:g}", scale.astype(np.float32), "a")
    if not np.any(zp):  # symmetric: one zero point serves every column (scales are applied afterwards)
        zp = zp.reshape(-1)[:1].reshape(())
    z = store.tensor("zero_point" if zp.ndim else "zero_point_scalar", zp, "z")
    a_q, a_s, a_z = (editor.names(f"{base}_{x}") for x in ("input_quantized", "input_scale", "input_zero_point"))
    y_int, y_f, ss = (editor.names(f"{base}_{x}") for x in ("output_int32", "output_float", "scale"))
    y = node.output[0]
    out = editor.names(f"{base}_unbiased") if bias else y
    nodes = [
        editor.node("DynamicQuantizeLinear", [x or node.input[0]], [a_q, a_s, a_z], f"{base}_DynamicQuantizeLinear"),
        editor.node("MatMulInteger", [a_q, q, a_z, z], [y_int], f"{base}_MatMulInteger"),
        editor.node("Cast", [y_int], [y_f], f"{base}_Cast", to=TensorProto.FLOAT),
        editor.node("Mul", [a_s, s], [ss], f"{base}_ScaleMul"),
        editor.node("Mul", [y_f, ss], [out], f"{base}_OutputMul"),
    ]
    if bias:
        b = bias
        if beta != 1.0:
            b = editor.names(f"{base}_bias_scaled")
            beta_t = store.tensor(f"beta_{beta:g}", np.array(beta, np.float32), "b")
            nodes.append(editor.node("Mul", [bias, beta_t], [b], f"{base}_BetaMul"))
        nodes.append(editor.node("Add", [out, b], [y], f"{base}_BiasAdd"))
    editor.replace(node, nodes)


def _expanded_int4(editor: GraphEditor, store: _Stored, use: WeightUse) -> str:
    """The int8 weight rebuilt from 4-bit ladder blocks by ops on constants only (ONNX Runtime folds them at
    session load): ``q = lo/hi nibble - 8`` (``Div``/``Mul``/``Sub`` in int32), ``q * m`` per block, rows to the
    ``[K, N]`` MatMul layout (``Transpose``) or to the weight's shape (``Reshape``), ``Cast`` to int8."""
    key = f"int4|{use.scope.path}"  # the rebuilt weight lives in the graph of the use that first needs it
    if key in store.cache:
        return store.cache[key]
    assert store.plan.int4 is not None
    packed, multipliers, transposed = store.plan.int4
    n, half = packed.shape
    k, nb = half * 2, multipliers.shape[1]
    p = store.tensor("int4_codes", packed, "p")
    m = store.tensor("int4_multipliers", multipliers.reshape(n, nb, 1), "m")
    c16 = store.tensor("int4_16", np.array(16, np.int32), "c16")
    c8 = store.tensor("int4_8", np.array(8, np.int32), "c8")
    pairs_shape = store.tensor("int4_pairs_shape", np.array([n, half, 1], np.int64), "ps")
    blocks_shape = store.tensor("int4_blocks_shape", np.array([n, nb, k // nb], np.int64), "bs")
    rows_shape = store.tensor("int4_rows_shape", np.array([n, k], np.int64), "rs")
    steps = ("p32", "hi", "hi16", "lo", "lo3", "hi3", "pairs", "blocks", "signed", "m32", "values", "rows", "cols")
    v = {x: store.name(f"4{x[0]}{i}", f"int4_{x}") for i, x in enumerate(steps)}
    out = store.name("4q", "int4_expanded")
    i32 = TensorProto.INT32

    def mk(op: str, ins: list[str], o: str, **attrs: object) -> onnx.NodeProto:
        return editor.node(op, ins, [o], store.base(f"4{op}", f"int4_{op}"), **attrs)

    nodes = [
        mk("Cast", [p], v["p32"], to=i32),
        mk("Div", [v["p32"], c16], v["hi"]),
        mk("Mul", [v["hi"], c16], v["hi16"]),
        mk("Sub", [v["p32"], v["hi16"]], v["lo"]),
        mk("Reshape", [v["lo"], pairs_shape], v["lo3"]),
        mk("Reshape", [v["hi"], pairs_shape], v["hi3"]),
        mk("Concat", [v["lo3"], v["hi3"]], v["pairs"], axis=2),
        mk("Reshape", [v["pairs"], blocks_shape], v["blocks"]),
        mk("Sub", [v["blocks"], c8], v["signed"]),
        mk("Cast", [m], v["m32"], to=i32),
        mk("Mul", [v["signed"], v["m32"]], v["values"]),
        mk("Reshape", [v["values"], rows_shape], v["rows"]),
    ]
    if transposed == "gates":  # [C, dirs*K] -> [C, dirs, K] -> the [dirs, C, K] of LSTM/GRU/RNN W and R
        d, _, kd = store.plan.weight.array.shape
        gshape = store.tensor("int4_gates_shape", np.array([n, d, kd], np.int64), "gs")
        gates = store.name("4g", "int4_gates")
        nodes.append(mk("Reshape", [v["rows"], gshape], gates))
        nodes.append(mk("Transpose", [gates], v["cols"], perm=[1, 0, 2]))
    elif transposed:  # [N, K] -> the [K, N] of MatMul
        nodes.append(mk("Transpose", [v["rows"]], v["cols"], perm=[1, 0]))
    else:  # [C, K] -> the weight's own shape (e.g. Conv's [C, C_in, kh, kw])
        shape = store.tensor("int4_weight_shape", np.array(store.plan.weight.array.shape, np.int64), "ws")
        nodes.append(mk("Reshape", [v["rows"], shape], v["cols"]))
    nodes.append(mk("Cast", [v["cols"]], out, to=TensorProto.INT8))
    editor.insert_before(use.node, nodes)
    store.cache[key] = out
    return out


def _rewrite_integer_conv(
    editor: GraphEditor, store: _Stored, use: WeightUse, qp: QuantParams, codes: np.ndarray
) -> None:
    node = use.node
    base = node.name or node.output[0]
    if qp.scheme is QuantScheme.SYMMETRIC:
        codes_u8 = (codes.astype(np.int16) + 128).astype(np.uint8)
        zp = np.array(128, np.uint8)
    else:
        codes_u8 = codes.astype(np.uint8)
        zp = np.asarray(qp.zero_point.reshape(-1)[0], np.uint8)
    q = store.tensor("quantized_u8", codes_u8, "u")
    z = store.tensor("zero_point_u8", zp, "uz")
    spatial = codes.ndim - 2
    scale = qp.scale.reshape(-1, *([1] * spatial)) if qp.axis is not None else qp.scale.reshape(())
    s = store.tensor("scale_conv", scale.astype(np.float32), "s")
    x_q, x_s, x_z = (editor.names(f"{base}_{x}") for x in ("input_quantized", "input_scale", "input_zero_point"))
    y_int, y_f, ss = (editor.names(f"{base}_{x}") for x in ("output_int32", "output_float", "scale"))
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    y = node.output[0]
    out = editor.names(f"{base}_unbiased") if bias else y
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    nodes = [
        editor.node("DynamicQuantizeLinear", [node.input[0]], [x_q, x_s, x_z], f"{base}_DynamicQuantizeLinear"),
        editor.node("ConvInteger", [x_q, q, x_z, z], [y_int], f"{base}_ConvInteger", **attrs),
        editor.node("Cast", [y_int], [y_f], f"{base}_Cast", to=TensorProto.FLOAT),
        editor.node("Mul", [x_s, s], [ss], f"{base}_ScaleMul"),
        editor.node("Mul", [y_f, ss], [out], f"{base}_OutputMul"),
    ]
    if bias:
        shape = store.tensor("bias_shape", np.array([-1, *([1] * spatial)], np.int64), "bs")
        b = editor.names(f"{base}_bias_reshaped")
        nodes.append(editor.node("Reshape", [bias, shape], [b], f"{base}_BiasReshape"))
        nodes.append(editor.node("Add", [out, b], [y], f"{base}_BiasAdd"))
    editor.replace(node, nodes)


def _rewrite_gather(editor: GraphEditor, store: _Stored, use: WeightUse, qp: QuantParams, codes: np.ndarray) -> None:
    """``Gather(E, ids)  ->  Mul(Sub(Cast(Gather(E_q, ids)), zp), s)``, scales per feature (last axis)."""
    node = use.node
    base = node.name or node.output[0]
    gather_axis = next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 0)
    q = store.tensor("q", codes, "q")
    rows_q, rows_f = editor.names(f"{base}_rows_quantized"), editor.names(f"{base}_rows_float")
    nodes = [
        editor.node("Gather", [q, node.input[1]], [rows_q], f"{base}_GatherQuantized", axis=gather_axis),
        editor.node("Cast", [rows_q], [rows_f], f"{base}_Cast", to=TensorProto.FLOAT),
    ]
    # per tensor: scalars; per channel (the last axis): 1-D vectors that broadcast over the gathered rows
    s_name = store.tensor("scale_features", qp.scale.reshape(-1) if qp.axis is not None else qp.scale.reshape(()), "s")
    centered = rows_f
    if np.any(qp.zero_point != 0):
        zp = qp.zero_point.astype(np.float32)
        z_name = store.tensor("zero_point_features", zp.reshape(-1) if qp.axis is not None else zp.reshape(()), "z")
        centered = editor.names(f"{base}_rows_centered")
        nodes.append(editor.node("Sub", [rows_f, z_name], [centered], f"{base}_Sub"))
    nodes.append(editor.node("Mul", [centered, s_name], [node.output[0]], f"{base}_Mul"))
    editor.replace(node, nodes)


def quantize_model(model: onnx.ModelProto, config: DynamicQuantConfig | None = None) -> PassResult:
    """Convenience: run :class:`DynamicQuantPass` on a copy of ``model``."""
    return DynamicQuantPass(config)(model)


def summarize(records: Sequence[WeightRecord]) -> dict[str, int]:
    """Counts and byte totals of a pass's records."""
    done = [r for r in records if not r.skipped]
    return {
        "weights": len(records),
        "quantized": len(done),
        "skipped": len(records) - len(done),
        "bytes_before": sum(r.bytes_before for r in done),
        "bytes_after": sum(r.bytes_after for r in done),
    }
