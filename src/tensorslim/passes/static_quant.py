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
from collections.abc import Callable
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
from tensorslim.algorithms.quantize import QuantParams, QuantScheme, choose_qparams, dequantize, quantize
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.weights import GraphScope, WeightRole, find_weights
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import run_with_outputs
from tensorslim.passes.float16 import float_values
from tensorslim.passes.static_placement import (
    CLAMPS,
    MAC_OPS,
    PLACEMENT_METADATA_KEY,
    VALUE_PRESERVING,
    Placement,
    candidate_nodes,
    data_inputs,
    decide,
    ensure_node_names,
    int8_components,
    load_placement,
    rewrite_for_int8,
)
from tensorslim.progress import progress_bar

__all__ = [
    "ActivationParams", "StaticQuantConfig", "StaticQuantPass", "calibrate_ranges", "decide_placement",
    "plan_static_quant",
]  # fmt: skip

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# a constant input (an Add's bias, a Mul's scale) stored as per-tensor uint8 must keep this much, or its node stays
# float: per-channel constants with outliers (SmoothQuant folds, LayerScale) lose their small channels otherwise
_CONSTANT_MIN_SQNR_DB = 40.0
CALIBRATION_METHODS = ("minmax", "moving_average", "percentile", "mse", "entropy")
IO_DTYPES = ("float", "uint8", "int8")


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
        placement: replay a recorded placement (a JSON file, a model tensorslim quantized, or a
            :class:`~tensorslim.passes.static_placement.Placement`) instead of deciding it: same input, data
            and placement give the same bytes on any machine.
        latency_check: time the result against the float model on this machine (interleaved runs) and move
            int8 regions back to float, the costliest first, until it is not slower; the decisions are recorded
            in the output's metadata (``tensorslim.static_placement``). Off for a replayed placement.
        latency_budget_s: seconds the latency check may spend at most.
        preprocess: apply ONNX Runtime's basic, provider-independent graph optimizations first (constant
            folding, Conv+Add/Mul fusion), as ONNX Runtime's ``quant_pre_process`` does.
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
    placement: str | Placement | None = None
    latency_check: bool = True
    latency_budget_s: float = 60.0
    preprocess: bool = True

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
        if self.placement is not None and not isinstance(self.placement, str | Placement):
            raise ValueError(f"placement: a file path or a Placement, got {type(self.placement).__name__}")
        if not self.latency_budget_s > 0:
            raise ValueError(f"latency_budget_s: must be > 0, got {self.latency_budget_s}")


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
    placement: Placement = field(default_factory=lambda: Placement(()))  # which nodes run int8, and why not
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # calibrated range of each activation
    bits: dict[str, int] = field(default_factory=dict)  # code width chosen for each activation


def _quantizable_nodes(model: onnx.ModelProto, cfg: StaticQuantConfig) -> list[onnx.NodeProto]:
    """Conv/Gemm/MatMul nodes with a constant float weight that ``cfg`` quantizes (SmoothQuant's candidates)."""
    patterns = [re.compile(p) for p in cfg.exclude]
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
    return chosen


class _Index:
    """Producers, consumers, constants and float values of the main graph, for one placement decision."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.nodes = list(g.node)
        self.constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
        self.floats = float_values(model)
        self.outputs = {o.name for o in g.output}
        self.inputs = {i.name for i in g.input} - self.constants
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in dict.fromkeys(n.input):
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.weights = {
            (u.node.name, u.input_index): w.name for w in find_weights(model) if w.is_float for u in w.weight_uses
            if u.role in (WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL) and u.input_index == 1
        }  # fmt: skip

    def activation_inputs(self, n: onnx.NodeProto) -> list[str]:
        return [i for i in data_inputs(n) if i in self.floats and i not in self.constants]

    def constant_inputs(self, n: onnx.NodeProto) -> list[int]:
        """Indices of float constant data inputs that are not a Conv/Gemm/MatMul weight."""
        out = []
        for k, i in enumerate(n.input):
            data = i and i in data_inputs(n) and i in self.constants and i in self.floats
            if data and (n.name, k) not in self.weights:
                out.append(k)
        return out

    def quantized(self, int8: set[str]) -> set[str]:
        """Activations that get a Q/DQ pair when the nodes ``int8`` run on int8 kernels."""
        quant: set[str] = set()
        for n in self.nodes:
            if n.name not in int8:
                continue
            quant.update(self.activation_inputs(n))
            for o in n.output:
                if not o or o not in self.floats:
                    continue
                if n.op_type in ("MatMul", "Gemm") and not any(
                    c.name in int8 and o in data_inputs(c) for c in self.consumers.get(o, [])
                ):
                    continue  # float-output integer kernels (MatMulIntegerToFloat, QGemm): no Q needed
                quant.add(o)
        return quant

    def absorbed(self, int8: set[str], quant: set[str]) -> dict[str, tuple[str, float]]:
        """``y -> (x, c)`` for int8 ``Mul(x, c)`` with ``c`` a positive scalar constant: ``y`` needs no kernel
        of its own, it is ``x``'s int8 codes read with ``c`` times ``x``'s scale."""
        out: dict[str, tuple[str, float]] = {}
        for n in self.nodes:
            if n.name not in int8 or n.op_type != "Mul" or len(n.input) != 2 or not n.output:
                continue
            if n.output[0] not in quant:
                continue
            for x, cn in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
                if x in quant and cn in self.constants:
                    v = _constant_value(self.model, cn)
                    if v is not None and v.size == 1 and v.dtype == np.float32 and np.isfinite(v).all():
                        c = float(v.reshape(-1)[0])
                        if c > 0:
                            out[n.output[0]] = (x, c)
                            break
        return out

    def ties(self, int8: set[str], quant: set[str]) -> tuple[dict[str, tuple[str, float]], set[str]]:
        """Tensors whose scales are tied: ``t -> (root, m)`` with ``scale(t) = m * scale(root)`` and the root's
        zero point (value-preserving ops and clamps: m = 1; an absorbed ``Mul`` by ``c``: m = c), and the clamp
        inputs whose range is their clamp's."""
        parent = {t: t for t in quant}
        mult = dict.fromkeys(quant, 1.0)

        def find(a: str) -> tuple[str, float]:
            m = 1.0
            path = []
            while parent[a] != a:
                path.append(a)
                m *= mult[a]
                a = parent[a]
            acc = m
            for p in path:  # compress: every node on the path points at the root with its total multiplier
                here = acc
                acc /= mult[p]
                parent[p], mult[p] = a, here
            return a, m

        def union(a: str, b: str, k: float) -> None:  # scale(b) = k * scale(a)
            ra, ma = find(a)
            rb, mb = find(b)
            if ra == rb:
                return
            if ra < rb:
                parent[rb], mult[rb] = ra, ma * k / mb
            else:
                parent[ra], mult[ra] = rb, mb / (ma * k)

        clamped: set[str] = set()
        for y, (x, c) in sorted(self.absorbed(int8, quant).items()):
            union(x, y, c)
        for n in self.nodes:
            if n.name not in int8 or not n.input or n.input[0] not in quant:
                continue
            x = n.input[0]
            outs = [o for o in n.output if o in quant]
            if n.op_type in VALUE_PRESERVING:
                for o in outs:
                    union(x, o, 1.0)
            elif (
                n.op_type in CLAMPS and outs and len(self.consumers.get(x, [])) == 1 and x not in self.outputs
                and x not in self.inputs
            ):  # fmt: skip
                union(x, outs[0], 1.0)
                clamped.add(x)
        return {t: find(t) for t in quant}, clamped

    def clamp_range(self, n: onnx.NodeProto) -> tuple[float, float]:
        if n.op_type == "Relu":
            return 0.0, 1.0
        lo, hi = -1.0, 1.0
        vals = {a.name: a.f for a in n.attribute}
        if "min" in vals or "max" in vals:
            lo, hi = vals.get("min", lo), vals.get("max", hi)
        for k, default in ((1, lo), (2, hi)):
            if len(n.input) > k and n.input[k]:
                v = _constant_value(self.model, n.input[k])
                val = float(v.reshape(-1)[0]) if v is not None and v.size else default
                lo, hi = (val, hi) if k == 1 else (lo, val)
        lo, hi = max(lo, -1e4), min(hi, 1e4)
        return (lo, hi) if hi > lo else (-1.0, 1.0)

    def macs(self, names: set[str]) -> int:
        """Weight elements of the MAC nodes among ``names`` (a rough measure of the int8 work they hold)."""
        sizes = {t.name: int(np.prod(t.dims)) for t in self.model.graph.initializer}
        total = 0
        for n in self.nodes:
            if n.name in names and n.op_type in MAC_OPS:
                total += sizes.get(n.input[1], 1) if len(n.input) > 1 else 1
        return total


def _constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
    return None


def _no_work_regions(index: _Index) -> Callable[[set[str]], dict[str, str]]:
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


def _group_params(
    index: _Index, int8: set[str], ranges: dict[str, tuple[float, float]], cfg: StaticQuantConfig,
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
    base = {r: _params(r, *span[r], _dtype(cfg.activation_scheme, 16 if r in wide else 8)) for r in sorted(span)}
    params: dict[str, ActivationParams] = {}
    for t in sorted(quant):
        r, m = root[t]
        if r not in base:
            continue
        ap = base[r]
        scale = ap.scale if m == 1.0 else float(np.float32(ap.scale * m))
        params[t] = ActivationParams(t, scale, ap.zero_point, ap.dtype, (ap.range[0] * m, ap.range[1] * m))
    return params


def _adjacent(index: _Index, tensors: set[str], int8: set[str]) -> set[str]:
    """Int8 nodes that read or write any of ``tensors``."""
    out = set()
    for n in index.nodes:
        if n.name in int8 and (tensors & set(n.input) or tensors & set(n.output)):
            out.add(n.name)
    return out


def _trial_params(index: _Index, int8: set[str], cfg: StaticQuantConfig) -> dict[str, ActivationParams]:
    """Stand-in scales for a placement trial: [-1, 1], or the clamp's range for tensors a clamp folds into."""
    quant = index.quantized(int8)
    root, clamped = index.ties(int8, quant)
    span: dict[str, tuple[float, float]] = {r: (-1.0, 1.0) for r, _ in root.values()}
    for t in sorted(clamped):
        r, m = root[t]
        lo, hi = index.clamp_range(index.consumers[t][0])
        span[r] = (lo / m, hi / m)
    return _tied_params(quant, root, span, cfg, {})


def _constant_sqnr_failures(index: _Index, nodes: list[onnx.NodeProto]) -> dict[str, str]:
    """Nodes whose constant data input would lose too much in per-tensor uint8: they stay float."""
    out = {}
    for n in nodes:
        for k in index.constant_inputs(n):
            v = _constant_value(index.model, n.input[k])
            if v is None or v.dtype != np.float32 or v.size == 0:
                out[n.name] = f"constant: input {n.input[k]!r} is not a float32 constant"
                continue
            ap = _params("c", float(min(v.min(), 0.0)), float(max(v.max(), 0.0)), "uint8")
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

    index = _Index(model)
    patterns = [re.compile(p) for p in cfg.exclude]
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
        _apply(m, int8, _trial_params(_Index(m), int8, trial_cfg), trial_cfg, {}, [])
        return m

    int8, reasons, rounds = decide(keep, build, region_ok=_no_work_regions(index))
    floats.update(reasons)
    return Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), rounds, ort.__version__)


def plan_static_quant(
    model: onnx.ModelProto, data: Dataset, cfg: StaticQuantConfig, placement: Placement | None = None,
    keep_float: dict[str, str] | None = None,
) -> StaticPlan:  # fmt: skip
    """Decide the int8 nodes (from ONNX Runtime's fusions, or ``placement``) and every activation's parameters;
    ``keep_float`` names nodes that stay float whatever the runtime fuses (with the reason)."""
    index = _Index(model)
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
        plan.placement = Placement((), tuple(sorted(floats.items())), placement.rounds, placement.runtime)
        return plan
    quant = index.quantized(int8)
    io = _io_tensors(model, cfg)
    bits = _activation_bits(model, sorted(quant), cfg)
    bits.update(dict.fromkeys(io, 8))  # integer model inputs/outputs are 8-bit
    plan.ranges = calibrate_ranges(model, list(dict.fromkeys([*sorted(quant), *io])), data, cfg, bits)
    plan.bits = bits
    params, clamped, missing = _group_params(index, int8, plan.ranges, cfg, bits)
    if missing:
        plan.notes.append(f"{len(missing)} activation(s) with no finite value in the calibration data: "
                          + ", ".join(missing[:10]) + "; their nodes stay float")  # fmt: skip
        drop = _adjacent(index, set(missing), int8)
        floats.update(dict.fromkeys(drop, "no-range: an activation had no finite calibration value"))
        int8 -= drop
    if cfg.fallback_sqnr_db > 0:
        params, clamped, _ = _group_params(index, int8, plan.ranges, cfg, bits)
        scored = {t: ap for t, ap in params.items() if t not in clamped}
        plan.sensitivity = activation_sqnr(model, scored, data) if scored else {}
        ranked = sorted(plan.sensitivity, key=plan.sensitivity.__getitem__)
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
    regions = _no_work_regions(index)(int8)
    floats.update(regions)
    int8 -= set(regions)
    params, _, _ = _group_params(index, int8, plan.ranges, cfg, bits)
    plan.activations = params
    plan.nodes = [n for n in index.nodes if n.name in int8]
    plan.placement = Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), placement.rounds,
                               placement.runtime)  # fmt: skip
    for t in io:
        lo, hi = plan.ranges.get(t, (0.0, 0.0))
        plan.io[t] = plan.activations.get(t) or _params(t, lo, hi, cfg.io_dtype)
    wide = sorted(t for t, ap in plan.activations.items() if ap.bits == 16)
    if wide:
        plan.notes.append(f"{len(wide)} activation(s) quantized to 16 bits (A16W8): " + ", ".join(wide[:20])
                          + (" ..." if len(wide) > 20 else ""))  # fmt: skip
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
        """Prepare, place (ONNX Runtime's fusions), calibrate, then insert Q/DQ pairs and int8 weights."""
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
        keep_float: dict[str, str] = {}
        if cfg.preprocess:
            pre_notes.extend(preprocess(model))
        ensure_node_names(model.graph)
        pre_notes.extend(rewrite_for_int8(model))
        if cfg.equalize:
            from tensorslim.passes.equalize import EqualizePass

            eq = EqualizePass().call(model)
            model = eq.model
            pre_notes.extend(eq.notes)
        if cfg.smooth_quant is not None:
            from tensorslim.passes.smooth_quant import smooth_model

            before = {n.name for n in model.graph.node}
            pre_notes.extend(smooth_model(model, self.data, cfg.smooth_quant, _quantizable_nodes(model, cfg)))
            ensure_node_names(model.graph)
            keep_float.update(dict.fromkeys(
                (n.name for n in model.graph.node if n.name not in before and n.op_type == "Mul"),
                "smoothing: SmoothQuant's explicit per-channel scale runs in float, before quantization"))  # fmt: skip
        replay = cfg.placement if isinstance(cfg.placement, Placement) or cfg.placement is None else load_placement(
            cfg.placement)  # fmt: skip
        plan = plan_static_quant(model, self.data, cfg, placement=replay, keep_float=keep_float)
        plan.notes[:0] = pre_notes
        if replay is None and cfg.latency_check and plan.nodes:
            from tensorslim.passes.static_latency import latency_fallback

            source = onnx.ModelProto()
            source.CopyFrom(model)
            index = _Index(source)

            def build(int8: set[str]) -> onnx.ModelProto:
                m = onnx.ModelProto()
                m.CopyFrom(source)
                params, _, _ = _group_params(index, int8, plan.ranges, cfg, plan.bits)
                _apply(m, int8, params, cfg, {}, [])
                return m

            plan.placement, latency_notes = latency_fallback(source, plan.placement, build, self.data, index,
                                                             time_budget_s=cfg.latency_budget_s)  # fmt: skip
            plan.notes.extend(latency_notes)
            int8 = set(plan.placement.int8)
            plan.nodes = [n for n in plan.nodes if n.name in int8]
            plan.activations, _, _ = _group_params(index, int8, plan.ranges, cfg, plan.bits)
        plan.notes.append(plan.placement.summary())
        means: dict[str, np.ndarray] = {}
        if cfg.bias_correction:
            from tensorslim.passes.bias_correction import input_means

            means = input_means(model, [n for n in plan.nodes if n.op_type in COMPUTE_OPS], plan.activations,
                                self.data)  # fmt: skip
        records = _apply(model, set(plan.placement.int8), plan.activations, cfg, means, plan.notes)
        from tensorslim.passes.fold_batchnorm import remove_unused_constants

        remove_unused_constants(model.graph)
        if plan.io:
            from tensorslim.passes.static_io import integer_io

            plan.notes.append(integer_io(model, plan.io))
        _set_metadata(model, PLACEMENT_METADATA_KEY, plan.placement.to_json())
        return PassResult(model, any(not r.skipped for r in records), records, list(plan.notes))


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def preprocess(model: onnx.ModelProto) -> list[str]:
    """ONNX Runtime's basic graph optimizations (constant folding, Conv+Add/Mul/BatchNorm fusion), in place.

    Only ONNX-standard, provider-independent rewrites (``ORT_ENABLE_BASIC``), as ONNX Runtime's own
    ``quant_pre_process`` does; skipped for models over 1.5 GB or that ONNX Runtime does not load.
    """
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    if model.ByteSize() > 1_500_000_000 or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    ):
        return []
    before = len(model.graph.node)
    with tempfile.TemporaryDirectory(prefix="tensorslim-pre-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(model.SerializeToString())
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        try:
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            out = onnx.load(str(dst))
            onnx.checker.check_model(out)
        except Exception:  # a model ONNX Runtime cannot optimize is quantized as it is
            return []
    if any(n.domain not in ("", "ai.onnx") for n in out.graph.node) or opset_version(out) != opset_version(model):
        return []
    metadata = list(model.metadata_props)
    model.CopyFrom(out)
    del model.metadata_props[:]
    model.metadata_props.extend(metadata)
    after = len(model.graph.node)
    return [f"graph simplified by ONNX Runtime's basic optimizations (constant folding, Conv+Add/Mul fusion): "
            f"{before} -> {after} nodes"] if after != before else []  # fmt: skip


def _apply(
    model: onnx.ModelProto,
    int8: set[str],
    params: dict[str, ActivationParams],
    cfg: StaticQuantConfig,
    means: dict[str, np.ndarray],
    notes: list[str],
) -> list[WeightRecord]:
    """Insert the Q/DQ pairs of the nodes ``int8`` with ``params``, int8 constants and int8 weights (in place)."""
    index = _Index(model)
    quant = {t for t in index.quantized(int8) if t in params}
    editor = GraphEditor(model)
    scope = GraphScope(model.graph, "")
    position = {n.name: i for i, n in enumerate(index.nodes)}
    wide_domain = "" if opset_version(model) >= 21 else "com.microsoft"
    shared: dict[tuple[float, int, str], tuple[str, str]] = {}
    dq_name: dict[str, str] = {}
    after: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}

    def qparams(ap: ActivationParams, base: str) -> tuple[str, str]:
        key = (ap.scale, ap.zero_point, ap.dtype)
        if key not in shared:
            shared[key] = (
                editor.add_tensor(scope, f"{base}_scale", np.array(ap.scale, np.float32), as_constant=False),
                editor.add_tensor(scope, f"{base}_zero_point", np.array(ap.zero_point, ap.dtype), as_constant=False),
            )
        return shared[key]

    absorbed = index.absorbed(int8, quant)
    qname: dict[str, str] = {}
    for t in sorted(quant):
        if t in absorbed:
            continue
        ap = params[t]
        s, z = qparams(ap, t)
        domain = wide_domain if ap.bits == 16 else ""
        q, dq = editor.names(f"{t}_quantized"), editor.names(f"{t}_dequantized")
        qname[t] = q
        prod = index.producer.get(t)
        readers = index.consumers.get(t, [])
        int8_producer = prod is not None and prod.name in int8
        if int8_producer and t in index.outputs:
            # the graph output keeps its name: the producer writes a fresh tensor, the DequantizeLinear the output
            assert prod is not None
            pre = editor.names(f"{t}_float")
            for k, o in enumerate(prod.output):
                if o == t:
                    prod.output[k] = pre
            after.setdefault(prod.name, []).extend([
                editor.node("QuantizeLinear", [pre, s, z], [q], f"{t}_QuantizeLinear", domain=domain),
                editor.node("DequantizeLinear", [q, s, z], [t], f"{t}_DequantizeLinear", domain=domain),
            ])  # fmt: skip
            producers[prod.name] = prod
            dq_name[t] = t
            continue
        users = readers if int8_producer else [u for u in readers if u.name in int8 and t in data_inputs(u)]
        if not users:
            continue
        first = min(users, key=lambda u: position[u.name])
        readers_of_dq = [u for u in users if not (u.op_type == "Mul" and u.output and u.output[0] in absorbed)]
        nodes = [editor.node("QuantizeLinear", [t, s, z], [q], f"{t}_QuantizeLinear", domain=domain)]
        if readers_of_dq:
            nodes.append(editor.node("DequantizeLinear", [q, s, z], [dq], f"{t}_DequantizeLinear", domain=domain))
        editor.insert_before(first, nodes)
        dq_name[t] = dq
        for u in readers_of_dq:
            for i, name in enumerate(u.input):
                if name == t:
                    u.input[i] = dq
    for y in sorted(absorbed):
        # Mul(x, c) -> DequantizeLinear(x's codes, c * x's scale): the same values with no kernel at all
        src = y
        while src in absorbed:
            src = absorbed[src][0]
        if src not in qname or y not in params:
            continue
        ap = params[y]
        s, z = qparams(ap, y)
        mul = index.producer[y]
        editor.replace(mul, [editor.node("DequantizeLinear", [qname[src], s, z], [y], f"{y}_DequantizeLinear")])
        dq_name[y] = y
    for name, extra in after.items():
        editor.replace(producers[name], [producers[name], *extra])
    for n in index.nodes:
        if n.name not in int8 or (n.op_type == "Mul" and n.output and n.output[0] in absorbed):
            continue
        for k in index.constant_inputs(n):
            v = _constant_value(model, n.input[k])
            if v is None:
                continue
            ap = _params(n.input[k], float(min(v.min(), 0.0)), float(max(v.max(), 0.0)), "uint8")
            codes = np.clip(np.round(v / ap.scale) + ap.zero_point, 0, 255).astype(np.uint8)
            cn = editor.add_tensor(scope, f"{n.input[k]}_quantized", codes, as_constant=False)
            s, z = qparams(ap, n.input[k])
            dq = editor.names(f"{n.input[k]}_dequantized")
            editor.insert_before(n, [editor.node("DequantizeLinear", [cn, s, z], [dq],
                                                 f"{n.input[k]}_DequantizeLinear")])  # fmt: skip
            n.input[k] = dq
    wide = any(params[t].bits == 16 for t in quant)
    if wide and wide_domain and not any(o.domain == wide_domain for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(wide_domain, 1))
    compute = {n.output[0] for n in index.nodes if n.name in int8 and n.op_type in COMPUTE_OPS and n.output}
    records = _quantize_weights(model, editor, compute, params, dq_name, cfg, means, notes)
    editor.apply()
    return records


def _bias_safe_scales(qp: QuantParams, bias: np.ndarray | None, x_scale: float) -> QuantParams:
    """Weight scales whose int32 bias codes (scale ``w_scale * x_scale``) neither divide by zero nor overflow:
    a channel with all-zero weights, or a bias too large for its tiny weight scale, gets a larger scale."""
    scale = np.asarray(qp.scale, np.float64).copy()
    floor = np.full(scale.shape, 1e-30)
    if bias is not None and bias.size in (1, scale.size):
        b = np.abs(np.asarray(bias, np.float64)).reshape(scale.shape if bias.size == scale.size else ())
        floor = np.maximum(floor, b / (max(x_scale, 1e-30) * (2**31 - 1)))
    need = ~(scale > floor)
    if not np.any(need):
        return qp
    scale[need] = np.maximum(floor[need] if floor.shape else floor, np.where(scale[need] > 0, scale[need], 1.0))
    return dataclasses.replace(qp, scale=scale.astype(np.float32))


def _quantize_weights(
    model: onnx.ModelProto,
    editor: GraphEditor,
    compute: set[str],
    params: dict[str, ActivationParams],
    dq_name: dict[str, str],
    cfg: StaticQuantConfig,
    means: dict[str, np.ndarray],
    notes: list[str],
) -> list[WeightRecord]:
    """Per-channel int8 weights (and int32 biases) of the Conv/Gemm/MatMul nodes whose outputs are ``compute``."""
    from tensorslim.passes.bias_correction import BiasCorrector

    records: list[WeightRecord] = []
    corrector = BiasCorrector(model, means, editor.names)
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
        bias_in = use.node.input[2] if len(use.node.input) > 2 and use.node.input[2] else ""
        qp = _bias_safe_scales(qp, corrector.bias(bias_in) if bias_in else None, params[x].scale)
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
        ap = params[x]
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
        notes.append(f"bias correction: {corrector.corrected} layer(s) corrected ({corrector.added} "
                          "bias(es) added) for the expected output error of their int8 weights")  # fmt: skip
    return records
