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

The passes that prepare the graph run before this one, as steps of static quantization's pipeline
(:func:`tensorslim.pipeline.static_pipeline`): the opset upgrade (:mod:`~tensorslim.passes.qdq_opset`), ONNX
Runtime's basic optimizations and int8 rewrites (:mod:`~tensorslim.passes.static_prepare`), and, when the config
asks, cross-layer equalization (:mod:`~tensorslim.passes.equalize`) and SmoothQuant
(:mod:`~tensorslim.passes.smooth_quant`). The config's ``preprocess``, ``equalize`` and ``smooth_quant`` choose
those steps; :class:`StaticQuantPass` alone only places, calibrates and applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import onnx

from tensorslim._regex import name_matcher
from tensorslim.algorithms.observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    entropy_range,
    mse_range,
)
from tensorslim.algorithms.quantize import QuantScheme, choose_qparams
from tensorslim.backends.onnx.editor import opset_version
from tensorslim.backends.onnx.graph import walk_nodes
from tensorslim.backends.onnx.weights import WeightRole, find_weights
from tensorslim.errors import ConfigError, InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes._config import Granularity, coerce_enums, op_tuple, regex_tuple
from tensorslim.passes.base import Pass, PassResult
from tensorslim.passes.calib_stats import mean_sample_sqnr, require_data, run_with_outputs
from tensorslim.passes.empirical_bias import SAMPLES, BiasTarget, bias_targets, empirical_bias_correction
from tensorslim.passes.qdq_opset import check_qdq_opset
from tensorslim.passes.smooth_quant import explicit_scales, smoothing_candidates
from tensorslim.passes.static_apply import apply_qdq
from tensorslim.passes.static_graph import (
    ActivationParams,
    StaticGraph,
    activation_params,
    code_dtype,
    code_range,
    constant_value,
)
from tensorslim.passes.static_placement import (
    MAC_OPS,
    PLACEMENT_METADATA_KEY,
    Placement,
    candidate_nodes,
    decide,
    ensure_node_names,
    int8_components,
    load_placement,
    undo_float_rewrites,
)
from tensorslim.progress import progress_bar

__all__ = [
    "ActivationParams",
    "StaticQuantConfig",
    "StaticQuantPass",
    "calibrate_ranges",
    "code_range",
    "decide_placement",
    "plan_static_quant",
]  # fmt: skip

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# a constant input (an Add's bias, a Mul's scale) stored as per-tensor uint8 must keep this much, or its node stays
# float: per-channel constants with outliers (SmoothQuant folds, LayerScale) lose their small channels otherwise
_CONSTANT_MIN_SQNR_DB = 40.0
# an activation most of whose nonzero values round to its zero point in int8 stays float
_MAX_LOST_SHARE = 0.5


class CalibrationMethod(StrEnum):
    """How an activation's range is chosen from the calibration data."""

    MINMAX = "minmax"
    MOVING_AVERAGE = "moving_average"
    PERCENTILE = "percentile"
    MSE = "mse"
    ENTROPY = "entropy"
    AUTO = "auto"


class IoDtype(StrEnum):
    """The element type of the model's inputs and outputs."""

    FLOAT = "float"
    UINT8 = "uint8"
    INT8 = "int8"


CALIBRATION_METHODS = tuple(m.value for m in CalibrationMethod)
IO_DTYPES = tuple(d.value for d in IoDtype)
#: the range methods ``calibration="auto"`` compares (one histogram pass gives all three)
AUTO_METHODS = ("minmax", "percentile", "mse")
_RANGE_SAMPLES = 32  # calibration samples the auto range choice scores each candidate on


@dataclass(frozen=True)
class StaticQuantConfig:
    """Configuration of static int8 quantization.

    Attributes:
        activation_scheme: ``asymmetric`` (uint8 activations) or ``symmetric`` (int8, zero point 0).
        granularity: weights ``per_channel`` (default) or ``per_tensor`` (int8 symmetric either way).
        calibration: ``minmax``, ``moving_average`` (EMA of per-batch min/max), or from a streamed histogram:
            ``percentile`` (keeps that share of values), ``mse`` (minimal expected squared error) or
            ``entropy`` (minimal KL divergence, TensorRT-style); ``auto`` computes the min/max, percentile and MSE
            ranges from one histogram pass and keeps the set whose int8 model keeps the highest output SQNR against
            float on calibration samples (clipping outliers helps most conv nets and hurts models whose outliers
            carry signal, such as transformers' LayerNorm outputs).
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
        equalize_activations: with per-channel weights, raise the narrow channels of each activation that feeds a
            depthwise Conv toward its widest channel's range, the Conv that writes it scaled up and the depthwise
            weights down (:mod:`~tensorslim.passes.act_equalize`): the float function and the weights' rounding
            stay, the narrow channels get the activation's 256 levels (RapidOCR's recognizer: 0.1 vs 53).
        placement: replay a recorded placement (a JSON file, a model tensorslim quantized, or a
            :class:`~tensorslim.passes.static_placement.Placement`) instead of deciding it: same input, data
            and placement give the same bytes on any machine.
        latency_check: time the result against the float model on this machine (interleaved runs) and move
            int8 regions back to float, the costliest first, until it is not slower; the decisions are recorded
            in the output's metadata (``tensorslim.static_placement``). Off for a replayed placement.
        latency_budget_s: seconds the latency check may spend at most.
        latency_batch: the batch the latency check times besides batch 1 (the batch you serve): ``None`` picks
            one (as many calibration samples as run in about 0.25 s of float time, up to 32, when the inputs have
            a free batch axis); ``1`` times batch 1 only.
        preprocess: apply ONNX Runtime's basic, provider-independent graph optimizations first (constant
            folding, Conv+Add/Mul fusion), as ONNX Runtime's ``quant_pre_process`` does, then fold the constant
            scales and offsets left next to a Conv/Gemm/MatMul into it (:mod:`~tensorslim.passes.fold_affine`).
        node_fallback: also measure the error each int8 node adds through the QDQ graph
            (:mod:`~tensorslim.passes.static_sensitivity`) and put the nodes below ``fallback_sqnr_db`` back to
            float (off by default: on RapidOCR's recognizer it lowered accuracy; see the module).
        learned_rounding: round each int8 weight up or down to minimise its layer's output error on the
            calibration data (:mod:`~tensorslim.passes.adaround`: AdaRound's objective, solved by sequential
            floor/ceil rounding with coordinate descent) instead of to nearest; slower (minutes for large nets).
        empirical_bias: once the int8 graph is written, move the int32 bias of each int8 Conv/Gemm so that its mean
            output per channel matches float's on calibration samples, layer by layer in graph order
            (:mod:`~tensorslim.passes.empirical_bias`): the offsets that weight rounding, input rounding and
            clipping, and earlier layers leave. On RapidOCR's detector it raised the IoU with float's text map
            from 0.927 to 0.954.
        empirical_gain: with ``empirical_bias``, also scale each channel of the int8 Convs by a gain from its int8
            output onto float's (``var(f) / cov(f, q)``: the regression of the int8 output on float's, which
            rounding noise does not shrink), within 0.8-1.25, where its weight scale is per channel and the gain
            is clear of sampling noise (two jackknife standard errors over the calibration samples), and only if
            the model's output keeps at least the SQNR the offsets alone give on calibration samples the fit did
            not see (:func:`_gain_if_it_holds`). An offset alone cannot match both the flat regions and the
            detailed ones a layer sees. Free at run time (it is in the weight scales). With the suite's placements
            on RapidOCR: detector IoU with float 0.960 -> 0.968, recognizer lines decoded as float decodes them
            48 % -> 74.5 %; random-weight MobileNetV3/EfficientNet-B0 (CI's convnets check) keep offsets only.
        keep_weight_sums: round each output channel's int8 weights so that their sum stays the float sum (to
            half a step; :func:`~tensorslim.algorithms.quantize.quantize_keeping_sums`), which keeps each layer's
            response to a flat input: round to nearest gives edge-detecting kernels (weights that sum to almost
            nothing) a response to paper, sky or padding many times the float one. Off by default here: the
            empirical bias correction already removes most of that offset where flat regions dominate (RapidOCR's
            detector: IoU with float 0.9592 with it, 0.9597 without, same ranges); on RapidOCR's recognizer, whose
            lines are half text, it raised the lines decoded as float decodes them from 48 % to 58.5 % and the
            character accuracy from 0.927 to 0.939.
        output_sqnr_db: the int8 model's outputs must keep this SQNR against float on calibration samples (the
            mean over samples of each sample's SQNR in dB); while they do not, the nodes that add the most error go
            back to float, a tenth at a time (0 turns it off). With the latency check on, the guard counts what
            it costs in speed here: its moves together may cost at most a tenth of float's time (each state timed
            against float), and nodes whose estimated cost does not fit what is left stay int8.
    """

    activation_scheme: QuantScheme | str = QuantScheme.ASYMMETRIC
    granularity: Granularity | str = Granularity.PER_CHANNEL
    calibration: CalibrationMethod | str = CalibrationMethod.AUTO
    percentile: float = 99.999
    op_types: tuple[str, ...] = COMPUTE_OPS
    exclude: tuple[str, ...] = ()
    max_samples: int | None = 512
    fallback_sqnr_db: float = 20.0
    max_fallback: float = 0.25
    activation_bits: int = 8
    int16_nodes: tuple[str, ...] = ()
    io_dtype: IoDtype | str = IoDtype.FLOAT
    smooth_quant: float | None = None
    bias_correction: bool = False
    equalize: bool = False
    equalize_activations: bool = True
    placement: str | Placement | None = None
    latency_check: bool = True
    latency_budget_s: float = 60.0
    latency_batch: int | None = None
    preprocess: bool = True
    node_fallback: bool = False
    output_sqnr_db: float = 20.0
    learned_rounding: bool = False
    empirical_bias: bool = True
    empirical_gain: bool = True
    keep_weight_sums: bool = False

    def __post_init__(self) -> None:
        coerce_enums(self, (("activation_scheme", QuantScheme), ("granularity", Granularity),
                            ("calibration", CalibrationMethod)))  # fmt: skip
        if self.activation_bits not in (8, 16):
            raise ConfigError(f"activation_bits: {self.activation_bits!r} is not one of 8, 16")
        coerce_enums(self, (("io_dtype", IoDtype),))
        if not 0.0 <= self.max_fallback <= 1.0:
            raise ConfigError(f"max_fallback: must be in [0, 1], got {self.max_fallback}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile: must be in (50, 100], got {self.percentile}")
        object.__setattr__(self, "op_types", op_tuple(self.op_types, COMPUTE_OPS))
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        object.__setattr__(self, "int16_nodes", regex_tuple("int16_nodes", self.int16_nodes))
        if self.io_dtype != "float" and self.io_dtype != code_dtype(self.activation_scheme, 8):
            raise ConfigError(
                f"io_dtype: {self.io_dtype!r} needs activation_scheme="
                f"{'asymmetric' if self.io_dtype == 'uint8' else 'symmetric'} (the activations' own type)"
            )
        if self.smooth_quant is not None and not 0.0 < self.smooth_quant < 1.0:
            raise ConfigError(f"smooth_quant: alpha must be in (0, 1), got {self.smooth_quant}")
        if self.placement is not None and not isinstance(self.placement, str | Placement):
            raise ConfigError(f"placement: a file path or a Placement, got {type(self.placement).__name__}")
        if not self.latency_budget_s > 0:
            raise ConfigError(f"latency_budget_s: must be > 0, got {self.latency_budget_s}")
        if self.latency_batch is not None and (isinstance(self.latency_batch, bool) or not isinstance(
                self.latency_batch, int) or not 1 <= self.latency_batch <= 4096):  # fmt: skip
            raise ConfigError(f"latency_batch: {self.latency_batch!r} is not a batch size from 1 to 4096 (leave it "
                              "unset and the check picks one)", field="latency_batch")  # fmt: skip


@dataclass
class StaticPlan:
    """What static quantization will do: quantized nodes, activation parameters, notes."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    activations: dict[str, ActivationParams] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)  # activation -> int8 SQNR dB (ranked fallback)
    fallback: list[str] = field(default_factory=list)  # activations left float, worst first
    io: dict[str, ActivationParams] = field(default_factory=dict)  # graph inputs/outputs given integer types
    placement: Placement = field(default_factory=lambda: Placement(()))  # which nodes run int8, and why not
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # calibrated range of each activation
    bits: dict[str, int] = field(default_factory=dict)  # code width chosen for each activation
    node_sensitivity: dict[str, float] = field(default_factory=dict)  # int8 node -> added SQNR dB
    range_method: str = ""  # the range method calibration="auto" chose (empty otherwise)


def _no_work_regions(index: StaticGraph) -> Callable[[set[str]], dict[str, str]]:
    """Int8 regions without a MAC op would only add Q/DQ pairs: they go back to float."""

    def check(int8: set[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for comp in int8_components(index.model, int8, index.quantized):
            if not any(n.op_type in MAC_OPS for n in index.nodes if n.name in comp):
                out.update(dict.fromkeys(comp, "no-int8-work: its int8 region holds no Conv/Gemm/MatMul, so its "
                                               "Q/DQ pairs would cost more than they save"))  # fmt: skip
        return out

    return check


def calibrate_ranges(
    model: onnx.ModelProto,
    tensors: list[str],
    data: Dataset,
    cfg: StaticQuantConfig,
    bits: dict[str, int] | None = None,
) -> dict[str, tuple[float, float]]:
    """Stream ``data`` through ``model`` once; the observed range of each tensor in ``tensors``.

    ``bits`` gives the code width each range is chosen for (``mse``/``entropy``; 8 when absent). For
    ``calibration="auto"`` this is the min/max range (see :func:`calibrate_candidates`).
    """
    method = "minmax" if cfg.calibration == "auto" else cfg.calibration
    return calibrate_candidates(model, tensors, data, cfg, bits, (method,))[method]


def calibrate_candidates(
    model: onnx.ModelProto,
    tensors: list[str],
    data: Dataset,
    cfg: StaticQuantConfig,
    bits: dict[str, int] | None,
    methods: tuple[str, ...],
) -> dict[str, dict[str, tuple[float, float]]]:
    """One pass of ``data`` through ``model``; method -> the range of each tensor by that method."""
    histogram = any(m in ("percentile", "mse", "entropy") for m in methods)

    def make() -> MinMaxObserver | HistogramObserver | MovingAverageMinMaxObserver:
        if histogram:
            return HistogramObserver()
        return MovingAverageMinMaxObserver() if methods == ("moving_average",) else MinMaxObserver()

    observers = {t: make() for t in tensors}
    if data.num_samples == 0:
        raise InputError("calibration data holds zero samples; give at least one sample")
    with progress_bar("calibrating", total=-(-data.num_samples // 8)) as bar:
        for batch in run_with_outputs(model, tensors, data, batch_size=8, prefetch=True):
            for t in tensors:
                observers[t].update(batch[t])
            bar.advance()
    out: dict[str, dict[str, tuple[float, float]]] = {m: {} for m in methods}
    for t, obs in observers.items():
        b = (bits or {}).get(t, 8)
        if isinstance(obs, HistogramObserver):
            if not obs.count:
                continue
            for m in methods:
                if m == "mse":
                    out[m][t] = mse_range(obs, bits=b)
                elif m == "entropy":
                    out[m][t] = entropy_range(obs, bits=b)
                elif m == "percentile":
                    out[m][t] = obs.range(cfg.percentile)
                else:
                    out[m][t] = obs.minmax.range()
        elif not obs.empty:
            out[methods[0]][t] = obs.range()
    return out


def _activation_bits(model: onnx.ModelProto, tensors: list[str], cfg: StaticQuantConfig) -> dict[str, int]:
    """16 for every tensor with ``activation_bits=16``, or read or written by an ``int16_nodes`` node."""
    if cfg.activation_bits == 16:
        return dict.fromkeys(tensors, 16)
    patterns = list(name_matcher(cfg.int16_nodes, "int16_nodes").patterns)
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


def _group_params(
    index: StaticGraph, int8: set[str], ranges: dict[str, tuple[float, float]], cfg: StaticQuantConfig,
    bits: dict[str, int],
) -> tuple[dict[str, ActivationParams], set[str], list[str]]:  # fmt: skip
    """Scale and zero point of every quantized activation; tensors whose scales are tied get the union of their
    ranges (a clamp's input takes its clamp's range). Returns (params, clamped inputs, tensors with no range)."""
    quant = index.quantized(int8)
    root, clamped = index.ties(int8, quant)
    span: dict[str, tuple[float, float]] = {}
    for t in sorted(quant):
        if t in clamped or t not in ranges:
            continue
        r, m = root[t]
        lo, hi = ranges[t][0] / m, ranges[t][1] / m
        span[r] = (min(span[r][0], lo), max(span[r][1], hi)) if r in span else (lo, hi)
    return _tied_params(quant, root, span, cfg, bits), clamped, [t for t in sorted(quant) if root[t][0] not in span]


def _tied_params(
    quant: set[str], root: dict[str, tuple[str, float]], span: dict[str, tuple[float, float]],
    cfg: StaticQuantConfig, bits: dict[str, int],
) -> dict[str, ActivationParams]:  # fmt: skip
    wide = {root[t][0] for t in quant if bits.get(t, 8) == 16}
    base = {
        r: activation_params(r, *span[r], code_dtype(cfg.activation_scheme, 16 if r in wide else 8))
        for r in sorted(span)
    }
    params: dict[str, ActivationParams] = {}
    for t in sorted(quant):
        r, m = root[t]
        if r not in base:
            continue
        ap = base[r]
        scale = ap.scale if m == 1.0 else float(np.float32(ap.scale * m))
        params[t] = ActivationParams(t, scale, ap.zero_point, ap.dtype, (ap.range[0] * m, ap.range[1] * m))
    return params


def _adjacent(index: StaticGraph, tensors: set[str], int8: set[str]) -> set[str]:
    """Int8 nodes that read or write any of ``tensors``."""
    out = set()
    for n in index.nodes:
        if n.name in int8 and (tensors & set(n.input) or tensors & set(n.output)):
            out.add(n.name)
    return out


def _trial_params(index: StaticGraph, int8: set[str], cfg: StaticQuantConfig) -> dict[str, ActivationParams]:
    """Stand-in scales for a placement trial: [-1, 1], or the clamp's range for tensors a clamp folds into."""
    quant = index.quantized(int8)
    root, clamped = index.ties(int8, quant)
    span: dict[str, tuple[float, float]] = {r: (-1.0, 1.0) for r, _ in root.values()}
    for t in sorted(clamped):
        r, m = root[t]
        lo, hi = index.clamp_range(index.consumers[t][0])
        span[r] = (lo / m, hi / m)
    return _tied_params(quant, root, span, cfg, {})


def _constant_sqnr_failures(index: StaticGraph, nodes: list[onnx.NodeProto]) -> dict[str, str]:
    """Nodes whose constant data input would lose too much in per-tensor uint8: they stay float."""
    out = {}
    for n in nodes:
        for k in index.constant_inputs(n):
            v = constant_value(index.model, n.input[k])
            if v is None or v.dtype != np.float32 or v.size == 0:
                out[n.name] = f"constant: input {n.input[k]!r} is not a float32 constant"
                continue
            ap = activation_params("c", float(min(v.min(), 0.0)), float(max(v.max(), 0.0)), "uint8")
            q = np.clip(np.round(v / ap.scale) + ap.zero_point, 0, 255)
            err = (q - ap.zero_point) * ap.scale - v
            sig, noise = float(np.sum(np.square(v, dtype=np.float64))), float(np.sum(np.square(err, dtype=np.float64)))
            if noise > 0 and sig > 0 and 10 * np.log10(sig / noise) < _CONSTANT_MIN_SQNR_DB:
                out[n.name] = (f"constant: input {n.input[k]!r} keeps {10 * np.log10(sig / noise):.1f} dB in int8 "
                               f"(< {_CONSTANT_MIN_SQNR_DB:g} dB)")  # fmt: skip
    return out


def decide_placement(
    model: onnx.ModelProto, cfg: StaticQuantConfig, keep_float: dict[str, str] | None = None
) -> Placement:
    """Which nodes run int8: every candidate tried, kept where the installed ONNX Runtime fuses it."""
    import onnxruntime as ort

    index = StaticGraph(model)
    patterns = list(name_matcher(cfg.exclude).patterns)
    nodes, floats = candidate_nodes(model, index.floats, index.constants, patterns)
    keep = []
    for n in nodes:
        if n.name in (keep_float or {}):
            floats[n.name] = (keep_float or {})[n.name]
        elif n.op_type in MAC_OPS and n.op_type not in cfg.op_types:
            floats[n.name] = f"op-types: {n.op_type} not in op_types"
        else:
            keep.append(n)
    floats.update(_constant_sqnr_failures(index, keep))
    keep = [n for n in keep if n.name not in floats]
    trial_cfg = dataclasses.replace(cfg, bias_correction=False, activation_bits=8, int16_nodes=())

    def build(int8: set[str]) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        apply_qdq(m, int8, _trial_params(StaticGraph(m), int8, trial_cfg), trial_cfg, {}, [])
        return m

    stay = [n for n in index.nodes if n.name in floats]  # excluded, kept float: must not be fused either
    int8, reasons, rounds = decide(keep, build, region_ok=_no_work_regions(index), stay_float=(stay, index.consumers))
    floats.update(reasons)
    return Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), rounds, ort.__version__)


def plan_static_quant(
    model: onnx.ModelProto, data: Dataset, cfg: StaticQuantConfig, placement: Placement | None = None,
    keep_float: dict[str, str] | None = None,
) -> StaticPlan:  # fmt: skip
    """Decide the int8 nodes (from ONNX Runtime's fusions, or ``placement``) and every activation's parameters;
    ``keep_float`` names nodes that stay float whatever the runtime fuses (with the reason)."""
    index = StaticGraph(model)
    replay = placement is not None  # the placement decides: no fallback, guard or region moves are made again
    if placement is None:
        placement = decide_placement(model, cfg, keep_float or {})
    else:
        known = {n.name for n in index.nodes}
        unknown = sorted(set(placement.int8) - known)
        if unknown:
            raise InputError(
                f"the placement names {len(unknown)} node(s) this model does not have (e.g. {unknown[0]!r}); "
                "give the placement recorded for this same model"
            )
    int8 = set(placement.int8)
    floats = dict(placement.float)
    plan = StaticPlan(placement=placement)
    if not any(n.op_type in MAC_OPS for n in index.nodes if n.name in int8):
        plan.placement = Placement((), tuple(sorted(floats.items())), placement.rounds, placement.runtime,
                                   placement.dynamic)  # fmt: skip
        return plan
    quant = index.quantized(int8)
    io = _io_tensors(model, cfg)
    bits = _activation_bits(model, sorted(quant), cfg)
    bits.update(dict.fromkeys(io, 8))  # integer model inputs/outputs are 8-bit
    observed = list(dict.fromkeys([*sorted(quant), *io]))
    candidates: dict[str, dict[str, tuple[float, float]]] = {}
    if cfg.calibration == "auto":
        # the fallbacks and the output check decide on min/max ranges; the range set is chosen for what stays int8
        candidates = calibrate_candidates(model, observed, data, cfg, bits, AUTO_METHODS)
        plan.ranges = candidates["minmax"]
    else:
        plan.ranges = calibrate_ranges(model, observed, data, cfg, bits)
    plan.bits = bits
    params, clamped, missing = _group_params(index, int8, plan.ranges, cfg, bits)
    if missing:
        plan.notes.append(f"{len(missing)} activation(s) with no finite value in the calibration data: "
                          + ", ".join(missing[:10]) + "; their nodes stay float")  # fmt: skip
        drop = _adjacent(index, set(missing), int8)
        floats.update(dict.fromkeys(drop, "no-range: an activation had no finite calibration value"))
        int8 -= drop
    if cfg.fallback_sqnr_db > 0 and not replay:
        params, clamped, _ = _group_params(index, int8, plan.ranges, cfg, bits)
        scored = {t: ap for t, ap in params.items() if t not in clamped}
        lost: dict[str, float] = {}
        plan.sensitivity = activation_sqnr(model, scored, data, lost) if scored else {}
        # most of the values wiped out (a mask add, attention probabilities): float whatever the SQNR says
        flattened = sorted(t for t, share in lost.items() if share > _MAX_LOST_SHARE)
        if flattened:
            plan.notes.append(
                f"{len(flattened)} activation(s) left float (more than {_MAX_LOST_SHARE:.0%} of their nonzero values "
                "round to zero in int8: masks, fill values, probabilities): "
                + ", ".join(f"{t} ({lost[t]:.0%})" for t in flattened[:10])
                + (" ..." if len(flattened) > 10 else "")
            )
            drop = _adjacent(index, set(flattened), int8)
            floats.update(dict.fromkeys(drop, "flattened: most values of an activation round to zero in int8"))
            int8 -= drop
        ranked = sorted((t for t in plan.sensitivity if t not in flattened), key=plan.sensitivity.__getitem__)
        budget = int(cfg.max_fallback * len(ranked))
        plan.fallback = [t for t in ranked if plan.sensitivity[t] < cfg.fallback_sqnr_db][:budget]
        if plan.fallback:
            drop = _adjacent(index, set(plan.fallback), int8)
            floats.update(dict.fromkeys(drop, f"sensitive: an activation keeps < {cfg.fallback_sqnr_db:g} dB in int8"))
            int8 -= drop
            plan.notes.append(
                f"{len(plan.fallback)} activation(s) left float (int8 SQNR < {cfg.fallback_sqnr_db:g} dB on the "
                f"calibration data): " + ", ".join(f"{t} ({plan.sensitivity[t]:.1f} dB)" for t in plan.fallback)
            )
    if cfg.node_fallback and cfg.fallback_sqnr_db > 0 and int8 and not replay:
        sensitive = _sensitive_nodes(model, index, int8, data, cfg, bits, plan)
        floats.update(sensitive)
        int8 -= set(sensitive)
    if cfg.output_sqnr_db > 0 and int8 and not replay:
        guarded = _output_guard(model, index, int8, data, cfg, bits, plan, costed=cfg.latency_check)
        floats.update(guarded)
        int8 -= set(guarded)
    regions = _no_work_regions(index)(int8)
    floats.update(regions)
    int8 -= set(regions)
    if candidates and int8:
        plan.ranges = _choose_ranges(model, index, int8, data, cfg, bits, candidates, plan)
    params, _, _ = _group_params(index, int8, plan.ranges, cfg, bits)
    plan.activations = params
    plan.nodes = [n for n in index.nodes if n.name in int8]
    plan.placement = Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), placement.rounds,
                               placement.runtime, placement.dynamic)  # fmt: skip
    for t in io:
        lo, hi = plan.ranges.get(t, (0.0, 0.0))
        plan.io[t] = plan.activations.get(t) or activation_params(t, lo, hi, cfg.io_dtype)
    wide = sorted(t for t, ap in plan.activations.items() if ap.bits == 16)
    if wide:
        plan.notes.append(f"{len(wide)} activation(s) quantized to 16 bits (A16W8): " + ", ".join(wide[:20])
                          + (" ..." if len(wide) > 20 else ""))  # fmt: skip
    return plan


def _choose_ranges(
    model: onnx.ModelProto, index: StaticGraph, int8: set[str], data: Dataset, cfg: StaticQuantConfig,
    bits: dict[str, int], candidates: dict[str, dict[str, tuple[float, float]]], plan: StaticPlan,
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """The candidate range set whose int8 model keeps the highest output SQNR on calibration samples, averaged
    over the samples in dB (ties: the first, min/max); the comparison goes into the plan's notes.

    Per sample, so that one sample with extreme values (whose energy would dominate a pooled SQNR) does not
    decide for all: tasks are scored per image, line or sentence."""
    sample = data.head(_RANGE_SAMPLES) if data.num_samples > _RANGE_SAMPLES else data
    scores: dict[str, float] = {}
    for method, ranges in candidates.items():
        params, _, _ = _group_params(index, int8, ranges, cfg, bits)
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        apply_qdq(trial, set(int8), params, cfg, {}, [])
        scores[method] = mean_sample_sqnr(model, trial, sample)
    best = max(candidates, key=lambda m: (scores[m], -list(candidates).index(m)))
    plan.range_method = best
    plan.notes.append(
        f"activation ranges: {best} (mean int8 output SQNR against float on {sample.num_samples} "
        "calibration samples: " + ", ".join(f"{m} {scores[m]:.1f} dB" for m in candidates) + ")"
    )
    return candidates[best]


def _output_guard(
    model: onnx.ModelProto, index: StaticGraph, int8: set[str], data: Dataset, cfg: StaticQuantConfig,
    bits: dict[str, int], plan: StaticPlan, *, costed: bool = False,
) -> dict[str, str]:  # fmt: skip
    """While the int8 model's outputs keep less than ``output_sqnr_db`` against float on calibration samples, move
    the nodes that add the most error (measured through the QDQ graph) back to float, a tenth at a time.

    The SQNR is each sample's, averaged in dB: pooled over samples, a few high-energy samples decide, and on
    RapidOCR's recognizer moving 105 nodes raised the pooled figure by 1.6 dB while the recognized text agreed
    with float on fewer lines (0.53 -> 0.38); the per-sample mean fell, as the text did.

    ``costed`` (the latency check is on): the guard counts what its moves cost in speed on this machine. Each state
    is timed against float (interleaved, batch 1) and the moves together may cost at most a tenth of float's time;
    a round whose state costs more (its whole 95 % interval) is retried with the worse half of its moves (twice at
    most), then the guard stops. Within a round, nodes are taken in error order while their estimated costs
    (:func:`~tensorslim.passes.static_latency.float_move_costs`, from ONNX Runtime's per-node profiles of the float
    and the current int8 model) fit what is left of the budget; the others stay int8 and are named. Uncounted, on
    RapidOCR's detector at 736 x 960 the guard moved 112 nodes (a float DepthToSpace and Resizes on the upsampled
    maps among them) for 2.3 dB and the model went from 0.56x to 0.79x float's time."""
    from tensorslim.passes.static_sensitivity import added_error

    sample = data.head(8) if data.num_samples > 8 else data
    moved: dict[str, str] = {}
    current = set(int8)
    states: list[tuple[dict[str, str], float]] = []  # (moved so far, output SQNR) after each round
    weighted = {node for node, _ in index.weights}
    budget = _MoveBudget.start(model, sample) if costed else None
    before: tuple[set[str], dict[str, str]] = (set(current), dict(moved))  # the last round's start
    round_moves: dict[str, str] = {}  # the last round's moves, worst first, with their reasons
    retries = 0
    while len(states) < 8:
        params, _, _ = _group_params(index, current, plan.ranges, cfg, bits)
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        apply_qdq(trial, current, params, cfg, {}, [])
        if budget is not None and not budget.affords(_as_written(model, current, params, cfg), first=not states):
            if len(round_moves) < 2 or retries == 2:
                break  # the states before this one are the choice
            retries += 1  # the round again with the worse half of its moves
            round_moves = dict(list(round_moves.items())[: len(round_moves) // 2])
            current, moved = set(before[0]) - set(round_moves), {**before[1], **round_moves}
            current -= set(_no_work_regions(index)(current))
            continue
        retries = 0
        states.append((dict(moved), mean_sample_sqnr(model, trial, sample)))
        if budget is not None:
            budget.accept()
        if states[-1][1] >= cfg.output_sqnr_db or not current:
            break
        # nodes with a weight keep int8 (their int8 kernels are where the speed is); the guard moves the rest:
        # elementwise ops, Softmax, products of two activations (attention)
        added = added_error(model, trial, [n for n in index.nodes if n.name in current and n.name not in weighted],
                            sample, index.activation_inputs)  # fmt: skip
        ranked = sorted((n for n in added if added[n] < 2 * cfg.output_sqnr_db), key=lambda n: (added[n], n))
        quota = max(1, -(-len(current) // 10))
        worst = ranked[:quota] if budget is None else budget.take(ranked, quota, trial)
        if not worst:
            break
        round_moves = {n: (f"output-guard: the int8 model's output kept {states[-1][1]:.1f} dB < "
                           f"{cfg.output_sqnr_db:g} dB; this node adds {added[n]:.1f} dB"
                           + ("" if budget is None else f", costs ~{budget.cost[n]:.2f} ms in float here"))
                       for n in worst}  # fmt: skip
        before = (set(current), dict(moved))
        moved.update(round_moves)
        current -= set(worst)
        current -= set(_no_work_regions(index)(current))
    # the best state, unless all the moving bought less than _GUARD_GAIN_DB: then the error is in the weighted layers
    # and moving more would only cost speed, so nothing moves
    first = states[0][1]
    best = max(sq for _, sq in states)
    at = next(i for i, (_, sq) in enumerate(states) if sq == best) if best >= first + _GUARD_GAIN_DB else 0
    chosen, last = states[at]
    if chosen:
        plan.notes.append(f"output check: int8 output SQNR {first:.1f} dB against float on {sample.num_samples} "
                          f"calibration samples (< {cfg.output_sqnr_db:g} dB): {len(chosen)} node(s) that add the "
                          f"most error moved back to float -> {last:.1f} dB"
                          + (budget.said(chosen, at) if budget is not None else ""))  # fmt: skip
    else:
        plan.notes.append(f"output check: int8 output SQNR {first:.1f} dB against float on {sample.num_samples} "
                          f"calibration samples" + (f"; moving weightless nodes to float bought < "
                          f"{_GUARD_GAIN_DB:g} dB (best {best:.1f} dB), so none moved" if len(states) > 1 else "")
                          + (budget.said({}, 0) if budget is not None else ""))  # fmt: skip
    return chosen


_GUARD_SHARE = 0.10  # the output guard's moves together may cost at most this share of float's time
# the output guard keeps its moves only when they raise the output SQNR by this much (half the noise power): on
# RapidOCR's detector, once its constant scales and offsets were folded, 61 moves bought 1.7 dB (9.2 -> 10.9 dB) for
# a tenth of float's time and the text map's IoU with float fell (0.9611 -> 0.9586); on MiniLM they buy 13 dB
_GUARD_GAIN_DB = 3.0


def _as_written(
    model: onnx.ModelProto, int8: set[str], params: dict[str, ActivationParams], cfg: StaticQuantConfig
) -> onnx.ModelProto:
    """``model`` with ``int8`` in int8 as the pass writes it: the int8-capable rewrites of the nodes left float
    undone (their original ops keep ONNX Runtime's float fusions), then the Q/DQ pairs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    undo_float_rewrites(m, int8)
    apply_qdq(m, int8, params, cfg, {}, [])
    return m


@dataclasses.dataclass
class _MoveBudget:
    """The speed the output guard may spend on accuracy: the float model's per-node profile and session, each
    accepted state's measured time, the estimated cost of every node considered."""

    float_prof: dict[str, float]
    feeds: dict[str, np.ndarray]
    threads: int
    ref: Any  # the float model's session
    total: float = 0.0  # the float model's time in its profile, ms
    fused: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # its fusions (static_latency)
    cost: dict[str, float] = dataclasses.field(default_factory=dict)  # ms, each node considered
    kept: set[str] = dataclasses.field(default_factory=set)  # nodes left int8 for their cost
    timed: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the last state timed, x float [95 % interval]
    ratios: list[float] = dataclasses.field(default_factory=list)  # each accepted state's, x float
    intervals: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # their 95 % intervals
    over: float | None = None  # the last state timed cost more than the budget: its ratio
    spent: bool = False  # a round found nothing left of the budget (the accepted states' times already used it)

    @classmethod
    def start(cls, model: onnx.ModelProto, sample: Dataset) -> _MoveBudget:
        """Profiles ``model`` (the graph the guard quantizes, its int8-capable rewrites in place: the float form of
        each node the guard may move) and opens a session of the float model as the user runs it (every rewrite
        undone), which the states are timed against."""
        from tensorslim.passes.static_latency import _session, check_threads, fusions, profile_nodes

        feeds = next(iter(sample.batches(1)))[0]
        threads = check_threads()
        prof = profile_nodes(model, feeds, threads)
        reference = onnx.ModelProto()
        reference.CopyFrom(model)
        undo_float_rewrites(reference, ())
        total = sum(v for k, v in prof.items() if not k.endswith("/bytes"))
        return cls(prof, feeds, threads, _session(reference, threads), total=total, fused=fusions(model, prof))

    def left(self) -> float:
        """What the moves may still cost, as a share of float's time (measured at the last accepted state)."""
        return _GUARD_SHARE - max(0.0, self.ratios[-1] - self.ratios[0]) if self.ratios else _GUARD_SHARE

    def affords(self, trial: onnx.ModelProto, *, first: bool) -> bool:
        """Times ``trial`` against float (interleaved, batch 1): whether it may be within a tenth of float's time
        of the guard's first state (``first``: this is it). Accuracy first: only a state whose whole 95 % interval
        is over the budget is refused (timed inside a quantization that has run many sessions, the intervals are
        wide: on RapidOCR's detector +-20 %)."""
        from tensorslim.passes.static_latency import _session, measure_ratio

        seconds = min(4.0, max(1.0, 20 * self.total / 1000))
        self.timed = measure_ratio(self.ref, _session(trial, self.threads), self.feeds, seconds=seconds)
        fits = first or self.timed[1] - self.ratios[0] <= _GUARD_SHARE
        self.over = None if fits else self.timed[0]
        return fits

    def accept(self) -> None:
        """The state last timed is kept: its time is what the next moves are counted from."""
        self.ratios.append(self.timed[0])
        self.intervals.append(self.timed[1:])

    def take(self, ranked: list[str], quota: int, trial: onnx.ModelProto) -> list[str]:
        """Up to ``quota`` of ``ranked`` (worst error first) whose estimated costs fit what is left of the budget."""
        from tensorslim.passes.static_latency import float_move_costs

        room = self.left() * self.total
        if room <= 0:  # the states accepted so far were timed at (or, by noise, past) the budget: nothing to weigh
            self.spent = True
            return []
        costs, _ = float_move_costs(self.float_prof, trial, self.feeds, self.threads, fused=self.fused)
        out: list[str] = []
        for n in ranked:
            c = max(costs.get(n, 0.0), 0.0)
            self.cost[n] = c
            if c > room:
                self.kept.add(n)
                continue
            out.append(n)
            room -= c
            if len(out) == quota:
                break
        return out

    def said(self, chosen: dict[str, str], state: int) -> str:
        """The note's clause on speed: what the chosen moves (``state``: after that many rounds) cost, whether the
        guard stopped at its budget, which nodes stayed int8 for their cost."""
        def timed(i: int) -> str:
            ci = f" [{self.intervals[i][0]:.2f}, {self.intervals[i][1]:.2f}]" if i < len(self.intervals) else ""
            return f"{self.ratios[i]:.2f}x{ci}"

        text = ""
        if chosen and len(self.ratios) > state:
            text = f" (timed here: {timed(state)} float's time with them, {timed(0)} without)"
        if self.over is not None:
            text += (f"; the guard stopped where its moves would cost more than {_GUARD_SHARE:.0%} of float's time "
                     f"({self.over:.2f}x float, timed)")  # fmt: skip
        elif self.spent:
            text += f"; the guard stopped where its moves had used the {_GUARD_SHARE:.0%} of float's time it may spend"
        kept = sorted(self.kept - set(chosen), key=lambda n: (-self.cost[n], n))
        if kept:
            named = ", ".join(f"{n} +{self.cost[n]:.2f} ms" for n in kept[:6]) + (" ..." if len(kept) > 6 else "")
            share = f"{_GUARD_SHARE:.0%} of float's {self.total:.2f} ms"
            text += (f"; {len(kept)} node(s) that add error kept int8: in float they would cost more than was "
                     f"left of the {share} the guard may spend ({named})")  # fmt: skip
        return text


def _sensitive_nodes(
    model: onnx.ModelProto, index: StaticGraph, int8: set[str], data: Dataset, cfg: StaticQuantConfig,
    bits: dict[str, int], plan: StaticPlan,
) -> dict[str, str]:  # fmt: skip
    """Int8 nodes whose output loses more than ``fallback_sqnr_db`` to their own quantization (inputs, weights,
    kernel), measured through the QDQ graph: the worst go back to float, at most ``max_fallback`` of them."""
    from tensorslim.passes.static_sensitivity import added_error

    params, _, _ = _group_params(index, int8, plan.ranges, cfg, bits)
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    apply_qdq(trial, int8, params, cfg, {}, [])
    added = added_error(model, trial, [n for n in index.nodes if n.name in int8], data, index.activation_inputs)
    plan.node_sensitivity = added
    ranked = sorted((n for n in added if added[n] < cfg.fallback_sqnr_db), key=lambda n: (added[n], n))
    worst = ranked[: int(cfg.max_fallback * len(int8))]
    if worst:
        plan.notes.append(
            f"{len(worst)} node(s) left float (their int8 form adds more than 1/{10 ** (cfg.fallback_sqnr_db / 10):g}"
            f" of error, < {cfg.fallback_sqnr_db:g} dB, on the calibration data): "
            + ", ".join(f"{n} ({added[n]:.1f} dB)" for n in worst[:12])
            + (" ..." if len(worst) > 12 else "")
        )
    return {n: f"sensitive: its int8 form adds error ({added[n]:.1f} dB < {cfg.fallback_sqnr_db:g} dB)"
            for n in worst}  # fmt: skip


def activation_sqnr(
    model: onnx.ModelProto, params: dict[str, ActivationParams], data: Dataset, lost: dict[str, float] | None = None
) -> dict[str, float]:
    """SQNR (dB) of quantizing each activation with its chosen parameters, streamed over ``data``.

    ``lost``, when given, receives the share of each tensor's nonzero values that round to its zero point (less
    than half a step): the values int8 wipes out, which an SQNR dominated by a few huge entries (an attention mask
    of -1e4, a fill value) does not show. An activation that a normalization reads (LayerNorm's residual input)
    is scored as the normalization's output sees it too (:class:`_NormView`: each row at unit deviation), and
    keeps the worse of the two figures.
    """
    signal = dict.fromkeys(params, 0.0)
    noise = dict.fromkeys(params, 0.0)
    nonzero = dict.fromkeys(params, 0)
    wiped = dict.fromkeys(params, 0)
    centred = _normalized_views(model, set(params))
    csignal = dict.fromkeys(centred, 0.0)
    cnoise = dict.fromkeys(centred, 0.0)
    for batch in run_with_outputs(model, list(params), data, batch_size=8):
        for t, ap in params.items():
            x = np.asarray(batch[t], np.float32)
            lo, hi = ap.qrange
            q = np.clip(np.round(x / ap.scale) + ap.zero_point, lo, hi)
            err = (q - ap.zero_point) * ap.scale - x
            signal[t] += float(np.sum(np.square(x, dtype=np.float64)))
            noise[t] += float(np.sum(np.square(err, dtype=np.float64)))
            nz = x != 0
            nonzero[t] += int(np.count_nonzero(nz))
            wiped[t] += int(np.count_nonzero(nz & (q == ap.zero_point)))
            view = centred.get(t)
            if view is not None:  # what a normalization makes of it: each row divided by its own deviation
                vs, vn = view.energies(x, err)
                csignal[t] += vs
                cnoise[t] += vn
    if lost is not None:
        lost.update({t: wiped[t] / nonzero[t] if nonzero[t] else 0.0 for t in params})

    def db(s: float, n: float) -> float:
        return 10 * float(np.log10(s / n)) if n > 0 and s > 0 else (float("inf") if n <= 0 else float("-inf"))

    out = {t: db(signal[t], noise[t]) for t in params}
    for t in centred:  # an activation a normalization reads keeps the worse of the two views
        if cnoise[t] > 0:
            out[t] = min(out[t], db(csignal[t], cnoise[t]))
    return out


@dataclass(frozen=True)
class _NormView:
    """How a normalization reads a tensor: the axes it normalizes (``first``: from this axis to the last, else
    ``axes``), and its constant scale (``gamma``, broadcast from ``gamma_axis``: -1 trailing axes, 1 channels)."""

    first: int | None = None
    axes: tuple[int, ...] = ()
    gamma: np.ndarray | None = None
    gamma_axis: int = -1

    def energies(self, x: np.ndarray, e: np.ndarray) -> tuple[float, float]:
        """Signal and noise energy of the normalization's output: each row centred and divided by its own
        deviation (from the float values), noise ``e`` through the same map, both times the scale."""
        r = x.ndim
        axes = tuple(range(self.first % r, r)) if self.first is not None and r else tuple(
            sorted({a % r for a in self.axes if -r <= a < r}))  # fmt: skip
        if not axes:
            return float(np.sum(np.square(x, dtype=np.float64))), float(np.sum(np.square(e, dtype=np.float64)))
        xc = x - x.mean(axis=axes, keepdims=True, dtype=np.float64)
        ec = e - e.mean(axis=axes, keepdims=True, dtype=np.float64)
        sd = np.sqrt(np.mean(np.square(xc), axis=axes, keepdims=True)) + 1e-12
        xc, ec = xc / sd, ec / sd
        g = self.gamma
        if g is not None and self.gamma_axis == 1 and r >= 2 and g.size == x.shape[1]:
            g = g.reshape(-1, *[1] * (r - 2))
        if g is not None and (self.gamma_axis == 1 or g.shape == x.shape[r - g.ndim :]):
            with contextlib.suppress(ValueError):  # a scale that does not broadcast: the normalized view alone
                xc, ec = xc * g, ec * g
        return float(np.sum(np.square(xc))), float(np.sum(np.square(ec)))


def _normalized_views(model: onnx.ModelProto, tensors: set[str]) -> dict[str, _NormView]:
    """For each of ``tensors`` that a normalization reads as its data, how it reads it: LayerNormalization
    (``axis`` to the last, scale over those axes), InstanceNormalization (spatial axes, scale per channel),
    MeanVarianceNormalization (``axes``). Quantization noise passes the same map, so a tensor that keeps a high
    SQNR as a whole can lose most of it there: rows whose deviation is small next to the int8 step are scaled up
    to unit deviation (a residual stream read by LayerNorm), an offset the normalization removes."""
    from onnx import numpy_helper

    consts = {i.name: i for i in model.graph.initializer}

    def scale_of(node: onnx.NodeProto) -> np.ndarray | None:
        if len(node.input) > 1 and node.input[1] in consts:
            return np.asarray(numpy_helper.to_array(consts[node.input[1]]), np.float64)
        return None

    out: dict[str, _NormView] = {}
    for node in model.graph.node:
        if not node.input or node.input[0] not in tensors:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "LayerNormalization":
            out[node.input[0]] = _NormView(first=int(attrs.get("axis", -1)), gamma=scale_of(node))
        elif node.op_type == "InstanceNormalization":
            out[node.input[0]] = _NormView(first=2, gamma=scale_of(node), gamma_axis=1)
        elif node.op_type == "MeanVarianceNormalization":
            out[node.input[0]] = _NormView(axes=tuple(int(a) for a in attrs.get("axes", (0, 2, 3))))
    # a normalization written out (LayerNorm below opset 17): Sub(t, ReduceMean(t)), the mean over its axes
    means: dict[str, tuple[str, tuple[int, ...]]] = {}
    for node in model.graph.node:
        if node.op_type == "ReduceMean" and node.input and node.input[0] in tensors:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            axes = attrs.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1] in consts:
                axes = numpy_helper.to_array(consts[node.input[1]]).reshape(-1).tolist()
            if axes and int(attrs.get("keepdims", 1)):
                means[node.output[0]] = (node.input[0], tuple(int(a) for a in axes))
    for node in model.graph.node:
        if node.op_type == "Sub" and len(node.input) == 2 and node.input[1] in means:
            src, axes = means[node.input[1]]
            if node.input[0] == src and src not in out:
                out[src] = _NormView(axes=axes)
    return out


class StaticQuantPass(Pass):
    """Static int8 QDQ quantization calibrated on ``data``."""

    name = "static_quant"

    def __init__(self, config: StaticQuantConfig | None = None, *, data: Dataset | None = None) -> None:
        self.config = config or StaticQuantConfig()
        self.data = require_data(data, "static quantization")

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Place (ONNX Runtime's fusions), calibrate, then insert Q/DQ pairs and int8 weights.

        The preparation runs before, as steps of the pipeline (:func:`tensorslim.pipeline.static_pipeline`): the
        opset upgrade, the graph preparation, cross-layer equalization and SmoothQuant. Bias correction and
        integer inputs/outputs happen here: both use the plan (the int8 layers' input means, the calibrated
        ranges of the graph inputs and outputs).
        """
        cfg = self.config
        if opset_version(model) < 13:  # below per-channel DequantizeLinear (the pipeline's upgrade failed)
            check_qdq_opset(model)
            cfg = dataclasses.replace(cfg, granularity="per_tensor")
        ensure_node_names(model.graph)
        keep_float = dict.fromkeys(explicit_scales(model), "smoothing: SmoothQuant's explicit per-channel scale runs "
                                                           "in float, before quantization")  # fmt: skip
        replay = cfg.placement if isinstance(cfg.placement, Placement) or cfg.placement is None else load_placement(
            cfg.placement)  # fmt: skip
        plan = plan_static_quant(model, self.data, cfg, placement=replay, keep_float=keep_float)
        measure = replay is None and cfg.latency_check
        source = onnx.ModelProto()
        if measure:  # the float model the timings and the dynamic-int8 check compare against
            source.CopyFrom(model)
        if measure and plan.nodes:
            from tensorslim.passes.static_latency import latency_fallback

            index = StaticGraph(source)

            def build(int8: set[str]) -> onnx.ModelProto:
                """The model as it will be written with ``int8`` in int8."""
                params, _, _ = _group_params(index, int8, plan.ranges, cfg, plan.bits)
                return _as_written(source, int8, params, cfg)

            # timed against the float model as it runs without tensorslim, every int8-capable rewrite undone: a
            # HardSwish as Mul(x, Clip(Add(Mul(x)))) runs slower in float than ONNX Runtime's one HardSwish kernel
            reference = onnx.ModelProto()
            reference.CopyFrom(source)
            undo_float_rewrites(reference, ())
            plan.placement, latency_notes = latency_fallback(source, plan.placement, build, self.data, index,
                                                             time_budget_s=cfg.latency_budget_s,
                                                             reference=reference, batch=cfg.latency_batch)  # fmt: skip
            plan.notes.extend(latency_notes)
            int8 = set(plan.placement.int8)
            plan.nodes = [n for n in plan.nodes if n.name in int8]
            plan.activations, _, _ = _group_params(index, int8, plan.ranges, cfg, plan.bits)
        if measure:
            from tensorslim.passes.static_rest import choose_dynamic

            trial = onnx.ModelProto()
            trial.CopyFrom(source)
            undo_float_rewrites(trial, plan.placement.int8)
            apply_qdq(trial, set(plan.placement.int8), plan.activations, cfg, {}, [])
            try:
                dynamic, dynamic_notes = choose_dynamic(source, trial, self.data, cfg.exclude, op_types=cfg.op_types,
                                                        target_db=cfg.output_sqnr_db)  # fmt: skip
            except Exception as e:  # the weight-only default stands; the check is an optimization
                dynamic, dynamic_notes = (), [f"float MatMul/Gemm layers kept weight-only: the dynamic int8 trial "
                                              f"failed ({type(e).__name__}: {str(e)[:160]})"]  # fmt: skip
            plan.placement = dataclasses.replace(plan.placement, dynamic=dynamic)
            plan.notes.extend(dynamic_notes)
        undone = undo_float_rewrites(model, plan.placement.int8)
        if undone:
            plan.notes.append(f"{undone} rewrite(s) for int8 undone where the nodes stay float (the original ops keep "
                              "ONNX Runtime's float fusions)")  # fmt: skip
        plan.notes.append(plan.placement.summary())
        nested = sum(n.op_type in cfg.op_types for n in walk_nodes(model.graph)) - sum(
            n.op_type in cfg.op_types for n in model.graph.node)
        if nested:
            plan.notes.append(f"{nested} {'/'.join(cfg.op_types)} node(s) inside If/Loop/Scan bodies keep float "
                              "compute: static int8 places Q/DQ in the main graph only (their constant weights are "
                              "stored as in weight-only mode); export the model without control flow for int8 kernels "
                              "there")  # fmt: skip
        means: dict[str, np.ndarray] = {}
        if cfg.bias_correction:
            from tensorslim.passes.bias_correction import input_means

            means = input_means(model, [n for n in plan.nodes if n.op_type in COMPUTE_OPS], plan.activations,
                                self.data)  # fmt: skip
        learned = _learned_codes(model, set(plan.placement.int8), self.data, cfg, plan) if cfg.learned_rounding else {}
        if learned:
            learned = _keep_if_better(model, set(plan.placement.int8), self.data, cfg, plan, means, learned)
        sample = self.data.head(SAMPLES) if self.data.num_samples > SAMPLES else self.data
        correct = cfg.empirical_bias and bool(plan.placement.int8) and sample.num_samples >= 2
        if cfg.empirical_bias and sample.num_samples < 2:
            plan.notes.append("empirical bias correction skipped: one calibration sample cannot tell a layer's "
                              f"offset from that sample's own values (it looks at {SAMPLES}; give at least 2)")
        float_ref = onnx.ModelProto()  # the float function, for the final accuracy figure
        if cfg.output_sqnr_db > 0 and plan.placement.int8:
            if source.graph.node:  # the latency check's float copy (its rewrites keep the function)
                float_ref = source
            else:
                float_ref.CopyFrom(model)
        float_model = onnx.ModelProto()  # the graph before its Q/DQ pairs, node names kept, for the correction
        if correct:
            if float_ref is not source and float_ref.graph.node:
                float_model = float_ref
            else:
                float_model.CopyFrom(model)
        records = apply_qdq(model, set(plan.placement.int8), plan.activations, cfg, means, plan.notes, learned)
        if correct:
            with _skipped_on_error(plan.notes):
                targets = bias_targets(model, set(plan.placement.int8))
                if cfg.empirical_gain:
                    held = self.data.window(SAMPLES, SAMPLES) if self.data.num_samples > SAMPLES else sample
                    note = _gain_if_it_holds(model, targets, float_model, sample, held)
                else:
                    note = empirical_bias_correction(model, targets, float_model, sample, gain=False)
                if note:
                    plan.notes.append(note)
        del float_model
        if float_ref.graph.node:
            with _skipped_on_error(plan.notes, "accuracy: the int8 model's output SQNR could not be measured"):
                plan.notes.append(_accuracy_note(mean_sample_sqnr(float_ref, model, sample), sample.num_samples, cfg))
        from tensorslim.passes.fold_batchnorm import remove_unused_constants

        remove_unused_constants(model.graph)
        if plan.io:
            from tensorslim.passes.static_io import integer_io

            plan.notes.append(integer_io(model, plan.io))
        _set_metadata(model, PLACEMENT_METADATA_KEY, plan.placement.to_json())
        return PassResult(model, any(not r.skipped for r in records), records, list(plan.notes))


def _gain_if_it_holds(
    model: onnx.ModelProto, targets: list[BiasTarget], float_model: onnx.ModelProto, sample: Dataset, held: Dataset
) -> str:
    """The empirical correction with per-channel gains, kept only where the whole model's output agrees: corrected
    with the gains and with offsets only, the version whose outputs keep the higher SQNR against float on ``held``
    (calibration samples the fit did not see, where there are any) is the one left in ``model``; a note.

    Each layer's line is fitted for that layer on the fitting samples; downstream, a gain can
    still cost (on random-weight MobileNetV3 / EfficientNet-B0 nets, whose layers keep 5-10 dB, the gains
    lowered the output's agreement with float on other images), so the model's output decides."""
    names = {n for t in targets for n in (t.codes, t.bias_scale, t.weight_scale) if n}
    inits = {i.name: i for i in model.graph.initializer if i.name in names}

    def snapshot() -> dict[str, onnx.TensorProto]:
        out = {}
        for k, v in inits.items():
            out[k] = onnx.TensorProto()
            out[k].CopyFrom(v)
        return out

    def restore(saved: dict[str, onnx.TensorProto]) -> None:
        for k, v in saved.items():
            inits[k].CopyFrom(v)

    rounded = snapshot()
    with_gain = empirical_bias_correction(model, targets, float_model, sample, gain=True)
    scales = {t.weight_scale for t in targets if t.weight_scale}
    if all(inits[k] == rounded[k] for k in scales):  # no channel's gain was clear of noise: offsets alone applied
        return with_gain
    gained, gain_db = snapshot(), mean_sample_sqnr(float_model, model, held)
    restore(rounded)
    offset_only = empirical_bias_correction(model, targets, float_model, sample, gain=False)
    offset_db = mean_sample_sqnr(float_model, model, held)
    where = "calibration samples the fit did not see" if held is not sample else "the fitting samples (no others)"
    if gain_db >= offset_db:
        restore(gained)
        return f"{with_gain}; kept: output SQNR {gain_db:.1f} dB with the gains, {offset_db:.1f} dB without, on {where}"
    return (f"{offset_only}; per-channel gains were fitted too and left out: output SQNR {gain_db:.1f} dB with them, "
            f"{offset_db:.1f} dB without, on {where}")


def _accuracy_note(db: float, samples: int, cfg: StaticQuantConfig) -> str:
    """The written model's output SQNR against float, and what to try when it misses ``output_sqnr_db``."""
    said = (f"accuracy: the int8 model keeps {db:.1f} dB of output SQNR against float on {samples} calibration "
            "sample(s) (the mean of each sample's)")  # fmt: skip
    if db >= cfg.output_sqnr_db:
        return said
    return (f"{said}, below the {cfg.output_sqnr_db:g} dB the output check aims for: check it on your task "
            "(tensorslim eval) and, if it lost too much, try another --range (auto compares min/max, percentile and "
            "MSE ranges), 16-bit activations (--int16-nodes REGEX on the layers that lose most, which tensorslim "
            "diagnose ranks, or --activation-bits 16: float-kernel speed there), or --exclude REGEX to keep layers "
            "float")


@contextlib.contextmanager
def _skipped_on_error(
    notes: list[str], what: str = "empirical bias correction skipped, the biases stay as rounded"
) -> Iterator[None]:  # fmt: skip
    """A step after the placement fails (empirical bias correction or the final accuracy figure, on a model the
    unoptimized session cannot run a sample at a time): what it would have changed stays as it is (the biases are
    written only at the end) and the notes say ``what`` and why."""
    try:
        yield
    except Exception as e:
        notes.append(f"{what} ({type(e).__name__}: {str(e)[:160]})")


def _learned_codes(
    model: onnx.ModelProto, int8: set[str], data: Dataset, cfg: StaticQuantConfig, plan: StaticPlan
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Learned-rounding codes (and the scales they were rounded for) of the int8 Conv/Gemm/MatMul weights."""
    from tensorslim.passes.adaround import AdaRoundConfig, adaround_codes, unsupported_reason

    layers, scales = [], {}
    for w in find_weights(model):
        uses = [u for u in w.weight_uses if u.node.name in int8 and u.input_index == 1
                and u.role in (WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL)]  # fmt: skip
        if len(uses) != 1 or len(w.uses) != 1 or not w.is_float or unsupported_reason(uses[0].node, w.array):
            continue
        axis = uses[0].channel_axis if cfg.granularity == "per_channel" else None
        scales[w.name] = np.asarray(choose_qparams(w.array, scheme=QuantScheme.SYMMETRIC, axis=axis).scale)
        layers.append((uses[0].node, w.array))
    if not layers:
        return {}
    done = adaround_codes(model, data, layers, scales, AdaRoundConfig())
    if done:
        rtn = sum(r.mse_rtn for r in done.values())
        ratio = sum(r.mse for r in done.values()) / rtn if rtn > 0 else 1.0
        plan.notes.append(f"learned rounding: {len(done)} weight(s), layer output error {ratio:.2f}x "
                          f"round-to-nearest's on the calibration data ({sum(r.flipped for r in done.values())} "
                          "weights rounded the other way)")  # fmt: skip
    return {name: (scales[name], r.codes) for name, r in done.items()}


def _keep_if_better(
    model: onnx.ModelProto, int8: set[str], data: Dataset, cfg: StaticQuantConfig, plan: StaticPlan,
    means: dict[str, np.ndarray], learned: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The learned codes if the int8 model keeps a higher output SQNR with them than with round-to-nearest codes
    (mean per-sample SQNR on calibration samples), else none: each layer's rounding minimises that layer's output
    error for float inputs, which need not lower the model's (on RapidOCR's recognizer it lowered the output
    SQNR from 18.1 to 16.9 dB and the lines read as float from 0.64 to 0.60)."""
    sample = data.head(_RANGE_SAMPLES) if data.num_samples > _RANGE_SAMPLES else data
    scores = []
    for codes in ({}, learned):
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        apply_qdq(trial, int8, plan.activations, cfg, means, [], codes)
        scores.append(mean_sample_sqnr(model, trial, sample))
    kept = scores[1] > scores[0]
    plan.notes.append(f"learned rounding {'kept' if kept else 'dropped'}: int8 output SQNR against float on "
                      f"{sample.num_samples} calibration samples {scores[1]:.1f} dB with it, {scores[0]:.1f} dB with "
                      f"round-to-nearest")  # fmt: skip
    return learned if kept else {}


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def _quantizable_nodes(model: onnx.ModelProto, cfg: StaticQuantConfig) -> list[onnx.NodeProto]:
    """Conv/Gemm/MatMul nodes with a constant float weight that ``cfg`` quantizes (SmoothQuant's candidates)."""
    return smoothing_candidates(model, cfg.op_types, cfg.exclude)


# names the tests and earlier code import
_Index = StaticGraph
_apply = apply_qdq
