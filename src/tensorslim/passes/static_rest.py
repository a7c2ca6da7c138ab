"""The weights static int8 leaves float: int8 storage everywhere, and dynamic int8 compute where it measured faster.

Static int8 keeps a MatMul/Gemm float when its input activation does not survive one calibrated scale (a GELU
output with rare large values, a sensitive layer the output check moved back). Its weights still get int8
storage (weight-only: float compute, ONNX Runtime casts them once at load). Such a layer can instead run
*dynamic* int8 (``DynamicQuantizeLinear`` picks the activation's range on every run, ``MatMulInteger`` with the
int8 weights, fused by ONNX Runtime into ``DynamicQuantizeMatMul``): it keeps the activation's real range and
takes the integer kernel. Whether that pays is measured, like the rest of static's placement::

    float model  ->  static int8 (placement, ranges, Q/DQ)  ->  left-float MatMul/Gemm:
        weight-only   vs   dynamic int8      interleaved on a calibration sample (batch 1), and each one's
                                             output SQNR against float on calibration samples
        dynamic int8 is kept only when it is faster beyond noise, and its output SQNR is within 0.5 dB of
        weight-only's or at least 10 dB above static's own output target (30 dB by default)

The decision is a list of node names in the placement (``Placement.dynamic``), recorded in the output's metadata
and replayed by ``--placement`` without timing, for the same bytes on another machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import onnx

from tensorslim.backends.onnx.graph import walk_nodes
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.base import Pass, PassResult
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, plan_dynamic_quant
from tensorslim.passes.static_placement import PLACEMENT_METADATA_KEY, load_placement_json

__all__ = ["StaticRestPass", "choose_dynamic", "dynamic_candidates", "rest_config"]

# dynamic int8 may cost this much output SQNR against weight-only (its activations are quantized, weight-only's not)
MAX_SQNR_LOSS_DB = 0.5
# ... or any amount while the output keeps this much more than static's output target
SQNR_MARGIN_DB = 10.0
_COMPUTE = ("MatMul", "Gemm")


def rest_config(model: onnx.ModelProto, dynamic: Iterable[str], exclude: tuple[str, ...] = ()) -> DynamicQuantConfig:
    """The dynamic-quantization config of the weights static left float: weight-only, except the nodes
    ``dynamic``, whose MatMul/Gemm weights run integer kernels on run-time quantized activations."""
    chosen = set(dynamic)
    if not chosen:
        return DynamicQuantConfig(form="weight_only", exclude=exclude)
    others = sorted({n.name for n in walk_nodes(model.graph) if n.op_type in _COMPUTE and n.name not in chosen})
    return DynamicQuantConfig(
        form="auto", exclude=exclude, float_compute=tuple(f"^{re.escape(n)}$" for n in others), min_integer_macs=0
    )


def dynamic_candidates(
    model: onnx.ModelProto, exclude: tuple[str, ...] = (), op_types: tuple[str, ...] = _COMPUTE
) -> list[str]:  # fmt: skip
    """The nodes of ``op_types`` whose weights dynamic int8 would run on integer kernels (MatMul/Gemm with float
    weights; not those whose work per sample is too small to pay for it, ``DynamicQuantConfig.min_integer_macs``)."""
    plans = plan_dynamic_quant(model, DynamicQuantConfig(form="auto", exclude=exclude, range_method="minmax"))
    names = {u.node_name for p in plans if not p.skipped for u, f in p.forms
             if f.value == "integer_matmul" and u.op_type in op_types}  # fmt: skip
    return sorted(names)


def choose_dynamic(
    source: onnx.ModelProto, static: onnx.ModelProto, data: Dataset, exclude: tuple[str, ...] = (),
    *, op_types: tuple[str, ...] = _COMPUTE, target_db: float = 20.0, seconds: float = 3.0,
) -> tuple[tuple[str, ...], list[str]]:  # fmt: skip
    """Which of ``static``'s float MatMul/Gemm layers run dynamic int8: all of them when that is faster here than
    weight-only and keeps the output SQNR against ``source`` within :data:`MAX_SQNR_LOSS_DB` of weight-only's or
    :data:`SQNR_MARGIN_DB` above ``target_db``; else none."""
    from tensorslim.passes.calib_stats import mean_sample_sqnr
    from tensorslim.passes.static_latency import _session, check_threads, measure_ratio

    nodes = dynamic_candidates(static, exclude, op_types)
    if not nodes:
        return (), []
    weight_only = DynamicQuantPass(rest_config(static, (), exclude))(static).model
    dynamic = DynamicQuantPass(rest_config(static, nodes, exclude))(static).model
    sample = data.head(min(8, data.num_samples))
    s_wo, s_dyn = mean_sample_sqnr(source, weight_only, sample), mean_sample_sqnr(source, dynamic, sample)
    what = f"{len(nodes)} float MatMul/Gemm layer(s)"
    if s_dyn < s_wo - MAX_SQNR_LOSS_DB and s_dyn < target_db + SQNR_MARGIN_DB:
        return (), [f"{what} kept weight-only: dynamic int8 lowers the output SQNR {s_wo:.1f} -> {s_dyn:.1f} dB"]
    threads = check_threads()
    feeds = next(iter(data.batches(1)))[0]
    ratio, lo, hi = measure_ratio(_session(weight_only, threads), _session(dynamic, threads), feeds, seconds=seconds)
    timing = f"{ratio:.2f}x of weight-only [{lo:.2f}, {hi:.2f}] (batch 1, {threads} thread(s))"
    if hi < 1.0:
        return tuple(nodes), [f"{what} run dynamic int8 (run-time activation ranges): {timing}; output SQNR "
                              f"{s_wo:.1f} -> {s_dyn:.1f} dB"]  # fmt: skip
    return (), [f"{what} kept weight-only: dynamic int8 was not faster here ({timing})"]


class StaticRestPass(Pass):
    """Int8 storage for the weights static quantization left float; dynamic int8 compute for the MatMul/Gemm
    nodes its placement (the model's metadata) lists as ``dynamic``."""

    name = "static_rest"

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        self.exclude = exclude

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        text = next((p.value for p in model.metadata_props if p.key == PLACEMENT_METADATA_KEY), "")
        dynamic = load_placement_json(text, "the model's placement").dynamic if text else ()
        return DynamicQuantPass(rest_config(model, dynamic, self.exclude)).call(model)

