"""Full-integer static quantization in QDQ form, calibrated on data, laid out so ONNX Runtime fuses it.

Decide, then apply. :func:`calibrate_ranges` streams the calibration data through the float model once and
keeps one observer per candidate activation (min/max, or a histogram for percentile ranges: memory is
bounded by the observers, never by the number of samples). :func:`plan_static_quant` turns ranges into
scales and zero points (inspectable data); :class:`StaticQuantPass` applies the plan::

    X -> Conv(W, b) -> Relu -> Y       becomes
    X -> Q -> DQ -> Conv(DQ(W_q), DQ(b_q int32)) -> Q -> DQ -> Relu -> Q -> DQ -> Y

which ONNX Runtime fuses into ``QLinearConv`` (Relu folded into the output range), ``QGemm``,
``QLinearMatMul``, ``QLinearAdd``, ``QLinearGlobalAveragePool``, ... Only activations that sit between
quantizable ops get Q/DQ pairs, so no pair is left where no integer kernel can consume it; graph outputs
stay float.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.version_converter

from tensorslim.algorithms.observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    entropy_range,
    mse_range,
)
from tensorslim.algorithms.quantize import QuantScheme, choose_qparams, dequantize, quantize
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.weights import GraphScope, WeightRole, find_weights
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import run_with_outputs
from tensorslim.passes.float16 import float_values
from tensorslim.progress import progress_bar

__all__ = ["ActivationParams", "StaticQuantConfig", "StaticQuantPass", "calibrate_ranges", "plan_static_quant"]

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
CALIBRATION_METHODS = ("minmax", "moving_average", "percentile", "mse", "entropy")
# ops with integer kernels (or pure data movement) in ONNX Runtime's QDQ fusion: their tensors stay int8
PASSTHROUGH_OPS = (
    "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Flatten", "Reshape", "Transpose",
    "Concat", "Squeeze", "Unsqueeze",
)  # fmt: skip
IO_DTYPES = ("float", "uint8", "int8")
# which inputs of each op carry activations to quantize
_DATA_INPUTS = {"Conv": (0,), "Gemm": (0,), "MatMul": (0,), "Add": (0, 1), "Concat": None}


@dataclass(frozen=True)
class StaticQuantConfig:
    """Configuration of static int8 quantization.

    Attributes:
        activation_scheme: ``asymmetric`` (uint8 activations) or ``symmetric`` (int8, zero point 0).
        granularity: weights ``per_channel`` (default) or ``per_tensor`` (int8 symmetric either way).
        calibration: ``minmax``, ``moving_average`` (EMA of per-batch min/max), or from a streamed histogram:
            ``percentile`` (keeps that share of values), ``mse`` (minimal expected squared error) or
            ``entropy`` (minimal KL divergence, TensorRT-style).
        percentile: share of values the percentile range keeps.
        op_types: compute ops to quantize (Conv, Gemm, MatMul); pass-through ops between them follow.
        exclude: regular expressions on node names that stay float.
        max_samples: calibration samples used at most.
        fallback_sqnr_db: activations whose int8 quantization SQNR on the calibration data is below this
            stay float (their consumers run float kernels); 0 turns the automatic fallback off.
        max_fallback: at most this share of the candidate activations falls back (the worst first).
        activation_bits: 8, or 16 for every activation (A16W8: weights stay int8, ONNX Runtime runs the 16-bit
            Q/DQ pairs with float kernels in between; 16-bit QuantizeLinear is the ONNX domain's from opset 21,
            ``com.microsoft``'s below).
        int16_nodes: regular expressions on node names whose input and output activations get 16 bits.
        io_dtype: ``float`` (default), or ``uint8``/``int8``: graph inputs and outputs become the quantized
            tensors (the first QuantizeLinear and last DequantizeLinear removed); their scales and zero points
            are in the model's ``metadata_props`` (``tensorslim.io_quantization``). Must match the activation
            type (``uint8``: asymmetric, ``int8``: symmetric).
        smooth_quant: SmoothQuant migration strength alpha in (0, 1) (e.g. 0.5) for MatMul/Gemm inputs with
            channel outliers; ``None`` turns it off.
        bias_correction: subtract the expected output error of the int8 weights, ``(W_q - W) E[x]``, from the
            bias of each quantized layer (E[x] from the calibration data).
        equalize: run data-free cross-layer equalization (:class:`~tensorslim.passes.equalize.EqualizePass`)
            on Conv pairs first.
    """

    activation_scheme: str = "asymmetric"
    granularity: str = "per_channel"
    calibration: str = "minmax"
    percentile: float = 99.999
    op_types: tuple[str, ...] = COMPUTE_OPS
    exclude: tuple[str, ...] = ()
    max_samples: int | None = 512
    fallback_sqnr_db: float = 20.0
    max_fallback: float = 0.25
    activation_bits: int = 8
    int16_nodes: tuple[str, ...] = ()
    io_dtype: str = "float"
    smooth_quant: float | None = None
    bias_correction: bool = False
    equalize: bool = False

    def __post_init__(self) -> None:
        for fname, allowed in (
            ("activation_scheme", ("asymmetric", "symmetric")),
            ("granularity", ("per_channel", "per_tensor")),
            ("calibration", CALIBRATION_METHODS),
            ("activation_bits", (8, 16)),
            ("io_dtype", IO_DTYPES),
        ):
            if getattr(self, fname) not in allowed:
                raise ValueError(f"{fname}: {getattr(self, fname)!r} is not one of {', '.join(map(str, allowed))}")
        if not 0.0 <= self.max_fallback <= 1.0:
            raise ValueError(f"max_fallback: must be in [0, 1], got {self.max_fallback}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile: must be in (50, 100], got {self.percentile}")
        ops = tuple(self.op_types)
        if not ops or any(o not in COMPUTE_OPS for o in ops):
            raise ValueError(f"op_types: {ops!r}; allowed: {', '.join(COMPUTE_OPS)}")
        object.__setattr__(self, "op_types", ops)
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        object.__setattr__(self, "int16_nodes", regex_tuple("int16_nodes", self.int16_nodes))
        if self.io_dtype != "float" and self.io_dtype != _dtype(self.activation_scheme, 8):
            raise ValueError(
                f"io_dtype: {self.io_dtype!r} needs activation_scheme="
                f"{'asymmetric' if self.io_dtype == 'uint8' else 'symmetric'} (the activations' own type)"
            )
        if self.smooth_quant is not None and not 0.0 < self.smooth_quant < 1.0:
            raise ValueError(f"smooth_quant: alpha must be in (0, 1), got {self.smooth_quant}")


@dataclass(frozen=True)
class ActivationParams:
    """Scale and zero point chosen for one activation tensor."""

    name: str
    scale: float
    zero_point: int
    dtype: str  # "uint8", "int8", "uint16" or "int16"
    range: tuple[float, float]

    @property
    def bits(self) -> int:
        """Code width: 8 or 16."""
        return 16 if self.dtype.endswith("16") else 8

    @property
    def qrange(self) -> tuple[int, int]:
        """Smallest and largest code."""
        return code_range(self.dtype)


def _dtype(scheme: str, bits: int) -> str:
    return ("int" if scheme == "symmetric" else "uint") + str(bits)


def code_range(dtype: str) -> tuple[int, int]:
    """Smallest and largest code of an integer type name (``uint8``, ``int16``...)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


@dataclass
class StaticPlan:
    """What static quantization will do: quantized nodes, activation parameters, notes."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    activations: dict[str, ActivationParams] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)  # activation -> int8 SQNR dB (ranked fallback)
    fallback: list[str] = field(default_factory=list)  # activations left float, worst first
    io: dict[str, ActivationParams] = field(default_factory=dict)  # graph inputs/outputs given integer types


def _quantizable_nodes(model: onnx.ModelProto, cfg: StaticQuantConfig) -> list[onnx.NodeProto]:
    patterns = [re.compile(p) for p in cfg.exclude]
    g = model.graph
    constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    # nodes are keyed by their first output (unique in a valid model): protobuf wrappers are not stable objects
    const_weights = {
        u.node.output[0] for w in find_weights(model) if w.is_float for u in w.weight_uses
        if u.role in (WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL) and u.input_index == 1
    }  # fmt: skip
    chosen = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or any(p.search(n.name or "") for p in patterns):
            continue
        if n.op_type in cfg.op_types and n.output and n.output[0] in const_weights:
            if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
                continue
            chosen.append(n)
        elif n.op_type in PASSTHROUGH_OPS:
            # a bias Add (one constant input) has no integer kernel of its own: it stays float
            if n.op_type == "Add" and any(i in constants for i in n.input):
                continue
            chosen.append(n)
    return chosen


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    idx = _DATA_INPUTS.get(node.op_type, (0,))
    if idx is None:
        return [i for i in node.input if i]
    return [node.input[i] for i in idx if i < len(node.input) and node.input[i]]


def _candidates(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[str]:
    """Activation tensors between quantized nodes (graph outputs and constants excluded)."""
    g = model.graph
    constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    outputs = {o.name for o in g.output}
    consumed: set[str] = set()
    for n in nodes:
        consumed.update(i for i in _data_inputs(n) if i not in constants)
    produced = {n.output[0] for n in nodes if n.output}
    has_compute = {i for n in nodes if n.op_type in COMPUTE_OPS for i in _data_inputs(n)}
    compute_out = {n.output[0] for n in nodes if n.op_type in COMPUTE_OPS}
    floats = float_values(model)  # shape computations (int64 Reshape/Concat inputs) are never quantized
    names = [
        t for t in dict.fromkeys([*consumed, *produced]) if t not in outputs and t not in constants and t in floats
    ]
    # keep tensors that feed a compute op, or link two quantized ops; a compute op's output that flows into
    # float ops stays float (ONNX Runtime then runs the op as MatMulIntegerToFloat / float-output kernels)
    del compute_out
    return [t for t in names if t in has_compute or (t in consumed and t in produced)]


def calibrate_ranges(
    model: onnx.ModelProto,
    tensors: list[str],
    data: Dataset,
    cfg: StaticQuantConfig,
    bits: dict[str, int] | None = None,
) -> dict[str, tuple[float, float]]:
    """Stream ``data`` through ``model`` once; the observed range of each tensor in ``tensors``.

    ``bits`` gives the code width each range is chosen for (``mse``/``entropy``; 8 when absent).
    """

    def make() -> MinMaxObserver | HistogramObserver | MovingAverageMinMaxObserver:
        if cfg.calibration in ("percentile", "mse", "entropy"):
            return HistogramObserver()
        return MovingAverageMinMaxObserver() if cfg.calibration == "moving_average" else MinMaxObserver()

    observers = {t: make() for t in tensors}
    if data.num_samples == 0:
        raise InputError("calibration data holds zero samples; give at least one sample")
    with progress_bar("calibrating", total=-(-data.num_samples // 8)) as bar:
        for batch in run_with_outputs(model, tensors, data, batch_size=8, prefetch=True):
            for t in tensors:
                observers[t].update(batch[t])
            bar.advance()
    ranges: dict[str, tuple[float, float]] = {}
    for t, obs in observers.items():
        b = (bits or {}).get(t, 8)
        if isinstance(obs, HistogramObserver):
            if obs.count:
                if cfg.calibration == "mse":
                    ranges[t] = mse_range(obs, bits=b)
                elif cfg.calibration == "entropy":
                    ranges[t] = entropy_range(obs, bits=b)
                else:
                    ranges[t] = obs.range(cfg.percentile)
        elif not obs.empty:
            ranges[t] = obs.range()
    return ranges


def _activation_bits(model: onnx.ModelProto, tensors: list[str], cfg: StaticQuantConfig) -> dict[str, int]:
    """16 for every tensor with ``activation_bits=16``, or read or written by an ``int16_nodes`` node."""
    if cfg.activation_bits == 16:
        return dict.fromkeys(tensors, 16)
    patterns = [re.compile(p) for p in cfg.int16_nodes]
    wide: set[str] = set()
    for n in model.graph.node:
        if patterns and any(p.search(n.name or "") for p in patterns):
            wide.update(n.input)
            wide.update(n.output)
    return {t: 16 if t in wide else 8 for t in tensors}


def _io_tensors(model: onnx.ModelProto, cfg: StaticQuantConfig) -> list[str]:
    """Float graph inputs and outputs that ``io_dtype`` turns into integer tensors."""
    if cfg.io_dtype == "float":
        return []
    g = model.graph
    inits = {t.name for t in g.initializer}
    return [v.name for v in [*g.input, *g.output]
            if v.name not in inits and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]  # fmt: skip


def _params(t: str, lo: float, hi: float, dtype: str) -> ActivationParams:
    symmetric = dtype.startswith("int")
    qp = choose_qparams(
        np.array([lo, hi], np.float32),
        bits=16 if dtype.endswith("16") else 8,
        scheme=QuantScheme.SYMMETRIC if symmetric else QuantScheme.ASYMMETRIC,
        narrow=False,
    )
    scale, zero_point = float(np.asarray(qp.scale).reshape(-1)[0]), int(np.asarray(qp.zero_point).reshape(-1)[0])
    return ActivationParams(t, scale, zero_point, dtype, (lo, hi))


def plan_static_quant(model: onnx.ModelProto, data: Dataset, cfg: StaticQuantConfig) -> StaticPlan:
    """Decide the quantized nodes and every activation's scale and zero point."""
    plan = StaticPlan(nodes=_quantizable_nodes(model, cfg))
    if not any(n.op_type in COMPUTE_OPS for n in plan.nodes):
        return plan
    tensors = _candidates(model, plan.nodes)
    io = _io_tensors(model, cfg)
    bits = _activation_bits(model, tensors, cfg)
    bits.update(dict.fromkeys(io, 8))  # integer model inputs/outputs are 8-bit
    ranges = calibrate_ranges(model, list(dict.fromkeys([*tensors, *io])), data, cfg, bits)
    for t in tensors:
        if t not in ranges:
            plan.notes.append(f"{t}: no finite value in the calibration data, left float")
            continue
        plan.activations[t] = _params(t, *ranges[t], _dtype(cfg.activation_scheme, bits[t]))
    for t in io:
        lo, hi = ranges.get(t, (0.0, 0.0))
        plan.io[t] = plan.activations.get(t) or _params(t, lo, hi, cfg.io_dtype)
    wide = sorted(t for t, ap in plan.activations.items() if ap.bits == 16)
    if wide:
        plan.notes.append(f"{len(wide)} activation(s) quantized to 16 bits (A16W8): " + ", ".join(wide[:20])
                          + (" ..." if len(wide) > 20 else ""))  # fmt: skip
    if cfg.fallback_sqnr_db > 0 and plan.activations:
        plan.sensitivity = activation_sqnr(model, plan.activations, data)
        ranked = sorted(plan.sensitivity, key=plan.sensitivity.__getitem__)
        budget = int(cfg.max_fallback * len(ranked))
        plan.fallback = [t for t in ranked if plan.sensitivity[t] < cfg.fallback_sqnr_db][:budget]
        for t in plan.fallback:
            del plan.activations[t]
        if plan.fallback:
            plan.notes.append(
                f"{len(plan.fallback)} activation(s) left float (int8 SQNR < {cfg.fallback_sqnr_db:g} dB on the "
                f"calibration data): " + ", ".join(f"{t} ({plan.sensitivity[t]:.1f} dB)" for t in plan.fallback)
            )
    return plan


def activation_sqnr(model: onnx.ModelProto, params: dict[str, ActivationParams], data: Dataset) -> dict[str, float]:
    """SQNR (dB) of quantizing each activation with its chosen parameters, streamed over ``data``."""
    signal = dict.fromkeys(params, 0.0)
    noise = dict.fromkeys(params, 0.0)
    for batch in run_with_outputs(model, list(params), data, batch_size=8):
        for t, ap in params.items():
            x = np.asarray(batch[t], np.float32)
            lo, hi = ap.qrange
            q = np.clip(np.round(x / ap.scale) + ap.zero_point, lo, hi)
            err = (q - ap.zero_point) * ap.scale - x
            signal[t] += float(np.sum(np.square(x, dtype=np.float64)))
            noise[t] += float(np.sum(np.square(err, dtype=np.float64)))
    return {t: (10 * float(np.log10(signal[t] / noise[t])) if noise[t] > 0 else float("inf")) for t in params}


class StaticQuantPass(Pass):
    """Static int8 QDQ quantization calibrated on ``data``."""

    name = "static_quant"

    def __init__(self, config: StaticQuantConfig | None = None, *, data: Dataset | None = None) -> None:
        self.config = config or StaticQuantConfig()
        if data is None:
            raise InputError("static quantization needs calibration data: pass --data CALIB.npz")
        self.data = data

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Plan on the calibration data, then insert Q/DQ pairs and quantized weights."""
        cfg = self.config
        upgrade_note = ""
        if opset_version(model) < 13:
            # per-channel DequantizeLinear (the axis attribute) needs opset 13
            try:
                upgraded = onnx.version_converter.convert_version(model, 13)
                onnx.checker.check_model(upgraded)
            except Exception as e:  # the converter raises several types
                if opset_version(model) < 10 or cfg.granularity == "per_channel":
                    cfg = dataclasses.replace(cfg, granularity="per_tensor")
                upgrade_note = (
                    f"opset {opset_version(model)} could not be raised to 13 ({type(e).__name__}): per-tensor weights"
                )
                if opset_version(model) < 10:
                    raise InputError(
                        f"opset {opset_version(model)} has no QuantizeLinear; re-export the model with opset >= 13"
                    ) from e
            else:
                upgrade_note = f"model converted from opset {opset_version(model)} to 13 for per-channel QDQ"
                model.CopyFrom(upgraded)
        pre_notes: list[str] = [upgrade_note] if upgrade_note else []
        if cfg.equalize:
            from tensorslim.passes.equalize import EqualizePass

            eq = EqualizePass().call(model)
            model = eq.model
            pre_notes.extend(eq.notes)
        if cfg.smooth_quant is not None:
            from tensorslim.passes.smooth_quant import smooth_model

            pre_notes.extend(smooth_model(model, self.data, cfg.smooth_quant, _quantizable_nodes(model, cfg)))
        plan = plan_static_quant(model, self.data, cfg)
        plan.notes[:0] = pre_notes
        means: dict[str, np.ndarray] = {}
        if cfg.bias_correction:
            from tensorslim.passes.bias_correction import input_means

            means = input_means(model, [n for n in plan.nodes if n.op_type in COMPUTE_OPS], plan.activations,
                                self.data)  # fmt: skip
        editor = GraphEditor(model)
        scope = GraphScope(model.graph, "")
        nodes = list(model.graph.node)
        position = {id(n): i for i, n in enumerate(nodes)}
        quantized_keys = {n.output[0] for n in plan.nodes if n.output}
        quantized = {id(n) for n in nodes if n.output and n.output[0] in quantized_keys}
        dq_name: dict[str, str] = {}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        wide_domain = "" if opset_version(model) >= 21 else "com.microsoft"
        for t, ap in sorted(plan.activations.items()):
            users = [u for u in consumers.get(t, []) if id(u) in quantized and t in _data_inputs(u)]
            if not users:
                users = consumers.get(t, [])
            if not users:
                continue
            first = min(users, key=lambda u: position[id(u)])
            domain = wide_domain if ap.bits == 16 else ""
            s = editor.add_tensor(scope, f"{t}_scale", np.array(ap.scale, np.float32), as_constant=False)
            z = editor.add_tensor(scope, f"{t}_zero_point", np.array(ap.zero_point, ap.dtype), as_constant=False)
            q, dq = editor.names(f"{t}_quantized"), editor.names(f"{t}_dequantized")
            editor.insert_before(first, [
                editor.node("QuantizeLinear", [t, s, z], [q], f"{t}_QuantizeLinear", domain=domain),
                editor.node("DequantizeLinear", [q, s, z], [dq], f"{t}_DequantizeLinear", domain=domain),
            ])  # fmt: skip
            dq_name[t] = dq
            for u in users:
                for i, name in enumerate(u.input):
                    if name == t and (id(u) in quantized):
                        u.input[i] = dq
        wide = any(ap.bits == 16 for ap in plan.activations.values())
        if wide and wide_domain and not any(o.domain == wide_domain for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(wide_domain, 1))
        records = self._weights(model, editor, plan, dq_name, cfg, means)
        editor.apply()
        from tensorslim.passes.fold_batchnorm import remove_unused_constants

        remove_unused_constants(model.graph)
        if plan.io:
            from tensorslim.passes.static_io import integer_io

            plan.notes.append(integer_io(model, plan.io))
        return PassResult(model, any(not r.skipped for r in records), records, list(plan.notes))

    def _weights(
        self,
        model: onnx.ModelProto,
        editor: GraphEditor,
        plan: StaticPlan,
        dq_name: dict[str, str],
        cfg: StaticQuantConfig,
        means: dict[str, np.ndarray],
    ) -> list[WeightRecord]:
        from tensorslim.passes.bias_correction import BiasCorrector

        records: list[WeightRecord] = []
        corrector = BiasCorrector(model, means, editor.names)
        compute = {n.output[0] for n in plan.nodes if n.op_type in COMPUTE_OPS and n.output}
        for w in find_weights(model):
            uses = [u for u in w.weight_uses if u.node.output[0] in compute and u.input_index == 1]
            base = dict(name=w.name, ops=",".join(dict.fromkeys(u.op_type for u in w.uses)),
                        nodes=",".join(dict.fromkeys(u.node_name for u in w.uses)),
                        shape=tuple(int(d) for d in w.array.shape), bytes_before=w.nbytes)  # fmt: skip
            if not uses or len(uses) != len(w.uses) or not w.is_float or w.array.dtype != np.float32:
                records.append(WeightRecord(**base, action="skipped", bytes_after=w.nbytes,  # type: ignore[arg-type]
                                            reason="not the weight of a quantized Conv/Gemm/MatMul"))  # fmt: skip
                continue
            use = uses[0]
            source = {v: k for k, v in dq_name.items()}
            x = source.get(use.node.input[0], "")
            if not x:
                records.append(WeightRecord(**base, action="skipped", bytes_after=w.nbytes,  # type: ignore[arg-type]
                                            reason="its input activation stays float"))  # fmt: skip
                continue
            axis = use.channel_axis if cfg.granularity == "per_channel" else None
            qp = choose_qparams(w.array, scheme=QuantScheme.SYMMETRIC, axis=axis)
            codes = quantize(w.array, qp)
            as_const = w.source == "constant"
            qn = editor.add_tensor(w.scope, f"{w.name}_quantized", codes, as_constant=as_const)
            sn = editor.add_tensor(w.scope, f"{w.name}_scale", qp.scale if axis is not None else qp.scale.reshape(()),
                                   as_constant=as_const)  # fmt: skip
            zn = editor.add_tensor(
                w.scope,
                f"{w.name}_zero_point",
                np.zeros(qp.scale.shape if axis is not None else (), np.int8),
                as_constant=as_const,
            )
            dq = editor.names(f"{w.name}_dequantized")
            attrs = {"axis": axis} if axis is not None else {}
            nodes = [editor.node("DequantizeLinear", [qn, sn, zn], [dq], f"{w.name}_DequantizeLinear", **attrs)]
            nbytes = codes.nbytes + qp.scale.nbytes
            detail = ""
            if x in means:
                detail = corrector.correct(use.node, dequantize(codes, qp) - w.array, means[x])
            bias_name = use.node.input[2] if len(use.node.input) > 2 and use.node.input[2] else ""
            ap = plan.activations[x]
            x_scale = ap.scale
            if bias_name and use.op_type in ("Conv", "Gemm") and ap.bits == 8:
                bias = corrector.bias(bias_name)
                if (bias is not None and bias.ndim == 1 and bias.shape[0] == qp.scale.size) or (
                    bias is not None and axis is None
                ):
                    bscale = (qp.scale.astype(np.float64) * x_scale).astype(np.float32)
                    bq = np.clip(np.round(bias / bscale), -(2**31), 2**31 - 1).astype(np.int32)
                    bqn = editor.add_tensor(w.scope, f"{bias_name}_quantized", bq, as_constant=as_const)
                    bsn = editor.add_tensor(w.scope, f"{bias_name}_scale", bscale.reshape(-1) if axis is not None
                                            else bscale.reshape(()), as_constant=as_const)  # fmt: skip
                    bzn = editor.add_tensor(w.scope, f"{bias_name}_zero_point",
                                            np.zeros(bscale.shape if axis is not None else (), np.int32),
                                            as_constant=as_const)  # fmt: skip
                    bdq = editor.names(f"{bias_name}_dequantized")
                    battrs = {"axis": 0} if axis is not None else {}
                    nodes.append(editor.node("DequantizeLinear", [bqn, bsn, bzn], [bdq],
                                             f"{bias_name}_DequantizeLinear", **battrs))  # fmt: skip
                    use.node.input[2] = bdq
            editor.insert_before(use.node, nodes)
            use.node.input[1] = dq
            action = "int8 static (QDQ)" if ap.bits == 8 else "int8 static (QDQ, A16W8)"
            records.append(WeightRecord(**base, action=action, bytes_after=int(nbytes),  # type: ignore[arg-type]
                                        granularity="per_tensor" if axis is None else f"per_channel(axis={axis})",
                                        reason=f"input scale {x_scale:.3g} ({ap.dtype}){detail}"))  # fmt: skip
        corrector.write()
        if corrector.corrected:
            plan.notes.append(f"bias correction: {corrector.corrected} layer(s) corrected ({corrector.added} "
                              "bias(es) added) for the expected output error of their int8 weights")  # fmt: skip
        return records
