"""The pass registry: what each pass is, written once, read by the API, recipes, the search and the CLI.

One frozen :class:`PassEntry` per pass kind (the name a recipe's ``pass:`` takes) says where its config
dataclass and its runner live (dotted paths, imported on first use, so reading the table imports nothing
heavy), whether it needs calibration data, which config field keeps nodes untouched, what per-layer rules
it takes and how ``tensorslim optimize``'s search tries it (:class:`SearchChoice`). One :class:`ModeEntry`
per ``quantize --mode`` names the pass kind it runs and its help text.

Adding a pass is one module (its config, its :class:`~tensorslim.passes.base.Pass` and a runner) plus one
entry in :data:`PASSES`; the recipe schema, the rules, ``apply_recipe``, ``tensorslim recipe`` and (with a
``search`` choice) the search pick it up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tensorslim.passes.base import PassResult

__all__ = [
    "MODES",
    "PASSES",
    "ModeEntry",
    "PassEntry",
    "Runner",
    "SearchChoice",
    "modes_for",
    "pass_entry",
    "search_choices",
    "search_kind",
]  # fmt: skip

#: A pass's runner: ``(model, config, data, notes, target) -> PassResult``; ``notes`` collects what the
#: preparation steps report, ``target`` is the oldest runtime the output must load in (or ``None``).
Runner = Callable[..., "PassResult[Any]"]

#: What per-layer recipe rules a pass takes: ``config`` overrides (one run per group), ``skip`` only,
#: ``activation_bits`` (skip, or 16-bit activations: static quantization), or ``none``.
RuleSupport = Literal["config", "skip", "activation_bits", "none"]


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class SearchChoice:
    """How ``tensorslim optimize``'s search may try a pass.

    Attributes:
        stage: the stage of a candidate it fills (``pre``: pruning before quantization, ``quant``: the
            quantization or weight-sharing step).
        name: the value the stage's parameter takes for it (``quant: static``).
        rank: its place among the stage's choices (the order the sampler sees).
        needs_ops: tried only on models with one of these op types (empty: any model).
    """

    stage: Literal["pre", "quant"]
    name: str
    rank: int
    needs_ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassEntry:
    """One pass kind.

    Attributes:
        kind: the recipe name (``pass: dynamic_quant``).
        config: ``"module:Class"`` of its frozen config dataclass.
        runner: ``"module:function"`` of its :data:`Runner`.
        help: one line on what it does.
        exclude_field: the config field of regexes that keep nodes untouched (empty: no rules).
        rules: the per-layer rules it takes.
        why_skip_only: why its rules may only skip nodes (shown when a rule sets options).
        needs_data: it cannot run without calibration data.
        needs_data_when: ``(field, values)``: it needs data when ``field`` takes one of ``values``.
        quantizes: a quantization pass (a recipe records the last one for ``diagnose``).
        float16: its output computes in float16 (loaded in a child process to verify it).
        max_samples: calibration samples a recipe hands it at most (``None``: all).
        search: how the search tries it (``None``: never); one that ``needs_data`` only when there is data.
    """

    kind: str
    config: str
    runner: str
    help: str
    exclude_field: str = ""
    rules: RuleSupport = "none"
    why_skip_only: str = ""
    needs_data: bool = False
    needs_data_when: tuple[str, tuple[str, ...]] | None = None
    quantizes: bool = False
    float16: bool = False
    max_samples: int | None = None
    search: SearchChoice | None = None

    def config_class(self) -> type:
        """The config dataclass (imported now)."""
        cls: type = _load(self.config)
        return cls

    def run_function(self) -> Runner:
        """The runner (imported now)."""
        fn: Runner = _load(self.runner)
        return fn

    def data_needed(self, configs: Iterable[Mapping[str, Any]]) -> bool:
        """Whether the pass needs calibration data with any of ``configs`` (its config as written, one per rule)."""
        if self.needs_data:
            return True
        if self.needs_data_when is None:
            return False
        key, values = self.needs_data_when
        return any(c.get(key) in values for c in configs)


_RUN = "tensorslim.pipeline"
_COMPRESSION_SAMPLES = 256  # calibration samples of prune/cluster/channel_prune, as their commands use

#: Every pass kind, in the order recipes list them.
PASSES: tuple[PassEntry, ...] = (
    PassEntry("fold_batchnorm", "tensorslim.recipe.schema:FoldBatchNormConfig", f"{_RUN}:run_fold_batchnorm",
              "fold inference-mode BatchNormalization into the preceding Conv"),
    PassEntry("dynamic_quant", "tensorslim.passes.dynamic_quant:DynamicQuantConfig", f"{_RUN}:run_pipeline",
              "int8 weights with scales, no calibration data", exclude_field="exclude", rules="config",
              quantizes=True, search=SearchChoice("quant", "dynamic", 0)),
    PassEntry("qdq_opset", "tensorslim.passes.qdq_opset:QdqOpsetConfig", "tensorslim.passes.qdq_opset:run",
              "raise the opset to 13 for per-channel Q/DQ (static_quant's first step)"),
    PassEntry("static_prepare", "tensorslim.passes.static_prepare:StaticPrepareConfig",
              "tensorslim.passes.static_prepare:run",
              "ONNX Runtime's basic optimizations, node names, int8-friendly rewrites (static_quant's second step)"),
    PassEntry("equalize", "tensorslim.passes.equalize:EqualizeConfig", "tensorslim.passes.equalize:run",
              "cross-layer equalization of Conv pairs (static_quant's equalize)"),
    PassEntry("equalize_activations", "tensorslim.passes.act_equalize:ActivationEqualizeConfig",
              "tensorslim.passes.act_equalize:run", "raise the narrow channels of each depthwise Conv's input toward "
              "the widest (static_quant's equalize_activations)", needs_data=True),
    PassEntry("smooth_quant", "tensorslim.passes.smooth_quant:SmoothQuantConfig", "tensorslim.passes.smooth_quant:run",
              "SmoothQuant: move MatMul/Gemm input outliers into the weights (static_quant's smooth_quant)",
              exclude_field="exclude", rules="skip", needs_data=True,
              why_skip_only="SmoothQuant has no per-layer options (skip leaves a layer unsmoothed)"),
    PassEntry("static_quant", "tensorslim.passes.static_quant:StaticQuantConfig", f"{_RUN}:run_pipeline",
              "int8 weights and activations calibrated on data", exclude_field="exclude", rules="activation_bits",
              why_skip_only="calibration runs once; rules may only skip nodes or set activation_bits: 16",
              needs_data=True, quantizes=True, search=SearchChoice("quant", "static", 1)),
    PassEntry("blockwise_quant", "tensorslim.passes.blockwise_quant:BlockQuantConfig", f"{_RUN}:run_pipeline",
              "block-wise int4/int8 weights (GPTQ with data)", exclude_field="exclude", rules="config",
              needs_data_when=("method", ("gptq",)), quantizes=True,
              search=SearchChoice("quant", "blockwise", 4, needs_ops=("MatMul", "Gemm", "Gather"))),
    PassEntry("float16", "tensorslim.passes.float16:Float16Config", f"{_RUN}:run_pipeline",
              "float16 weights and compute, float32 inputs and outputs", exclude_field="block_nodes", rules="skip",
              why_skip_only="float16 has no per-layer options (skip keeps a node float32)", quantizes=True,
              float16=True, search=SearchChoice("quant", "fp16", 2)),
    PassEntry("prune", "tensorslim.passes.prune:PruneConfig", f"{_RUN}:run_prune",
              "zero weights by magnitude (Wanda/SparseGPT on data)", exclude_field="exclude", rules="skip",
              why_skip_only="pruned weights stay float, so a second run per group could prune them again",
              needs_data_when=("method", ("wanda", "sparsegpt")), max_samples=_COMPRESSION_SAMPLES,
              search=SearchChoice("pre", "prune", 0)),
    PassEntry("channel_prune", "tensorslim.passes.channel_prune:ChannelPruneConfig", f"{_RUN}:run_channel_prune",
              "remove whole output channels", exclude_field="exclude", rules="skip",
              why_skip_only="pruning one layer's channels reshapes its consumers, so groups are not independent",
              max_samples=_COMPRESSION_SAMPLES,
              search=SearchChoice("pre", "channel_prune", 1, needs_ops=("Conv", "Gemm"))),
    PassEntry("cluster", "tensorslim.passes.cluster:ClusterConfig", f"{_RUN}:run_cluster",
              "share weights: k-means centroids and indices", exclude_field="exclude", rules="config",
              max_samples=_COMPRESSION_SAMPLES, search=SearchChoice("quant", "cluster", 3)),
    PassEntry("gather_int8", "tensorslim.passes.gather_int8:GatherInt8Config", "tensorslim.passes.gather_int8:run",
              "int8 embedding tables, one scale per row, behind DequantizeLinear", exclude_field="exclude",
              rules="config"),
    PassEntry("uniform_quant", "tensorslim.passes.uniform_quant:UniformQuantConfig",
              "tensorslim.passes.uniform_quant:run", "int8 weights on one step per channel for a target SQNR, "
              "entropy coded by pack (GPTQ with data)", exclude_field="exclude", rules="config",
              needs_data_when=("method", ("gptq",)), quantizes=True, max_samples=_COMPRESSION_SAMPLES),
    PassEntry("pack", "tensorslim.pack:PackConfig", f"{_RUN}:run_pack",
              "write the packed .tslim file (the last pass)"),
)  # fmt: skip

_BY_KIND = {e.kind: e for e in PASSES}


def pass_entry(kind: str) -> PassEntry | None:
    """The entry of pass ``kind``, or ``None`` when there is none."""
    return _BY_KIND.get(kind)


def search_choices(stage: Literal["pre", "quant"], *, has_data: bool, op_types: Iterable[str]) -> dict[str, str]:
    """The search's choices for ``stage`` on a model with ``op_types`` (and calibration data when ``has_data``):
    choice name -> pass kind, in rank order."""
    ops = set(op_types)
    usable = [e for e in PASSES if e.search is not None and e.search.stage == stage and (has_data or not e.needs_data)
              and (not e.search.needs_ops or ops & set(e.search.needs_ops))]  # fmt: skip
    return {e.search.name: e.kind for e in sorted(usable, key=lambda e: e.search.rank if e.search else 0) if e.search}


@dataclass(frozen=True)
class ModeEntry:
    """One ``quantize --mode``.

    Attributes:
        name: the ``--mode`` value.
        format: the model format it applies to (``onnx`` or ``tflite``).
        help: what it does (the ``quantize --help`` mode table).
        kind: the pass kind it runs (ONNX modes).
    """

    name: str
    format: Literal["onnx", "tflite"]
    help: str
    kind: str = ""


#: Every ``quantize --mode``, ONNX first, in help order.
MODES: tuple[ModeEntry, ...] = (
    ModeEntry("dynamic", "onnx", "int8 weights with scales, no calibration data (the default)", "dynamic_quant"),
    ModeEntry("static", "onnx", "int8 weights and activations calibrated on --data (QLinearConv/QGemm after fusion; "
              "--activation-bits 16 for 16-bit activations)", "static_quant"),
    ModeEntry("int4", "onnx", "block-wise 4-bit weights: MatMul/Gemm on int8 kernels, Conv dequantized at load, "
              "Gather on GatherBlockQuantized; GPTQ with --data", "blockwise_quant"),
    ModeEntry("blockwise", "onnx", "block-wise weights with --bits 4 or 8 (8 bits: MatMulNBits for MatMul/Gemm and "
              "Gather)", "blockwise_quant"),
    ModeEntry("fp16", "onnx", "float16 weights and compute, float32 inputs and outputs (--data checks for overflow)",
              "float16"),
    ModeEntry("dynamic", "tflite", "int8 weights, hybrid kernels"),
    ModeEntry("fp16", "tflite", "float16 weights"),
    ModeEntry("static", "tflite", "int8 weights and activations, needs --data"),
    ModeEntry("int4", "tflite", "4-bit weights (INT4, per channel): hybrid kernels for FULLY_CONNECTED and CONV_2D, "
              "DEQUANTIZE elsewhere; with --data the weights that cost the output most stay int8"),
)  # fmt: skip


def modes_for(fmt: Literal["onnx", "tflite"]) -> dict[str, str]:
    """``--mode`` name -> help text for one model format, in help order."""
    return {m.name: m.help for m in MODES if m.format == fmt}


def search_kind(stage: Literal["pre", "quant"], name: str) -> str:
    """The pass kind of the search's choice ``name`` for ``stage``.

    Raises:
        KeyError: no pass is that choice.
    """
    for e in PASSES:
        if e.search is not None and (e.search.stage, e.search.name) == (stage, name):
            return e.kind
    raise KeyError(f"no {stage} choice {name!r} in the registry")
