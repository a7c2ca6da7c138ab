"""Each quantization mode as a named pipeline of real passes, and the one runner the API and recipes call.

:func:`mode_pipeline` spells out what a config runs::

    dynamic_quant:   fold_weight_chains -> fold_batchnorm -> float_fusions -> dynamic_quant
    static_quant:    fold_weight_chains -> fold_batchnorm -> [[qdq_opset -> static_prepare -> (equalize)
                     -> (smooth_quant) -> static_quant] -> static_rest]
    blockwise_quant: fold_weight_chains -> fold_batchnorm -> blockwise_quant
                     (a target without GatherBlockQuantized: blockwise for all but Gather -> int8 Gathers)
    float16:         fold_weight_chains -> fold_batchnorm -> float16 (nodes that overflow on data stay float32)

Dynamic int8 leaves convolutions float, so its ``float_fusions`` step gives them the graph ONNX Runtime runs
fastest (:class:`~tensorslim.passes.static_prepare.FloatFusionsPass`: written-out HardSwish/HardSigmoid fused,
constant scales and offsets folded into the layers; static_prepare does the same before its int8 rewrites). The
two folds and that step prepare the graph: they never count as the pipeline's change (a model with nothing to quantize
is still reported as such); neither do static quantization's preparation steps (:func:`static_pipeline`: the
opset raised to 13, ONNX Runtime's basic optimizations and int8-friendly rewrites, then cross-layer equalization
and SmoothQuant when the config's ``equalize`` and ``smooth_quant`` ask for them). :func:`run_pipeline` runs it;
``ts.quantize`` and ``apply_recipe`` both call it.
The other runners here are the registry's for the compression passes (see :mod:`tensorslim.registry`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import onnx

from tensorslim.errors import InputError
from tensorslim.passes.base import Pass, PassResult, Pipeline, Step, WeightRecord

if TYPE_CHECKING:
    from tensorslim.data import Dataset
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig
    from tensorslim.runtime.targets import TargetRuntime

__all__ = ["Float16FallbackPass", "Note", "mode_pipeline", "run_pipeline", "static_pipeline"]


class Note(Pass):
    """A step that changes nothing and reports ``text`` (why the pipeline took the shape it has)."""

    name = "note"

    def __init__(self, text: str) -> None:
        self.text = text

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Report the note."""
        return PassResult(model, False, [], [self.text])

    def __call__(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        return self.call(model)  # the model is not touched: no copy


def _fill_skipped(runs: list[list[WeightRecord]]) -> list[WeightRecord]:
    """The first run's records, each skipped weight replaced by the later run's record when that one quantized it,
    then the later run's records of weights the first did not report."""
    first, later = runs[0], [r for run in runs[1:] for r in run]
    done = {r.name: r for r in later if not r.skipped}
    names = {r.name for r in first}
    return [done.get(r.name, r) if r.skipped else r for r in first] + [r for r in later if r.name not in names]


def _replaced_by_second(runs: list[list[WeightRecord]]) -> list[WeightRecord]:
    """Two runs: the first's records of weights the second did not quantize, then the second's quantized ones.
    One run (the second alone): all of its records."""
    if len(runs) == 1:
        return list(runs[0])
    first, second = runs[0], runs[1]
    done = {r.name for r in second if not r.skipped}
    return [r for r in first if r.name not in done] + [r for r in second if not r.skipped]


def _prepare() -> list[Step]:
    from tensorslim.passes.fold_batchnorm import FoldBatchNormPass
    from tensorslim.passes.fold_weight_chains import FoldWeightChainsPass

    return [
        Step(FoldWeightChainsPass(), counts=False),
        Step(FoldBatchNormPass(), counts=False, note="BatchNormalization folded into the preceding Conv layers"),
    ]


def mode_pipeline(config: Any, data: Dataset | None = None, target: TargetRuntime | None = None) -> Pipeline:
    """The named pipeline of passes that ``config`` (a quantization config) runs on an ONNX model.

    Args:
        config: a :class:`DynamicQuantConfig`, :class:`StaticQuantConfig` (``data`` required),
            :class:`BlockQuantConfig` or :class:`Float16Config`.
        data: calibration data.
        target: the oldest runtime the output must load in: a block-wise config whose target lacks
            GatherBlockQuantized quantizes embeddings to int8 Gathers instead.

    Raises:
        TypeError: ``config`` is not a quantization config.
    """
    from tensorslim.passes.blockwise_quant import BlockQuantConfig, BlockQuantPass
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    steps: list[Pass | Step] = [*_prepare()]
    if isinstance(config, BlockQuantConfig):
        from tensorslim.runtime.targets import gather_block_quantized

        if target is not None and "Gather" in config.op_types and not target.has(gather_block_quantized(config.bits)):
            steps.append(_blocks_without_gbq(config, data, target))
        else:
            steps.append(BlockQuantPass(config, data=data))
        return Pipeline(steps, name="blockwise_quant")
    if isinstance(config, StaticQuantConfig):
        if data is not None and config.max_samples is not None and data.num_samples > config.max_samples:
            data = data.head(config.max_samples)
        # weights left float (embeddings, layers that fell back) still get int8 storage, computed in float or,
        # where the placement measured it faster, in dynamic int8
        from tensorslim.passes.static_rest import StaticRestPass

        rest = StaticRestPass(exclude=config.exclude)
        static = Pipeline([static_pipeline(config, data), Step(rest, notes=False)], name="static_then_weight_only",
                          records=_fill_skipped)  # fmt: skip
        return Pipeline([*steps, static], name="static_quant")
    if isinstance(config, Float16Config):
        return Pipeline([*steps, Float16FallbackPass(config, data)], name="float16")
    if isinstance(config, DynamicQuantConfig):
        from tensorslim.passes.static_prepare import FloatFusionsPass

        # the layers dynamic int8 leaves float (convolutions) run as ONNX Runtime's fused float kernels
        return Pipeline([*steps, Step(FloatFusionsPass(), counts=False), DynamicQuantPass(config)],
                        name="dynamic_quant")
    raise TypeError(f"{type(config).__name__} is not a quantization config")


def static_pipeline(config: StaticQuantConfig, data: Dataset | None) -> Pipeline:
    """Static quantization with its preparation, each a pass: the opset raised to 13 (per-channel Q/DQ), the graph
    prepared (ONNX Runtime's basic optimizations when ``config.preprocess``, node names, int8-friendly rewrites),
    cross-layer equalization (``config.equalize``), activation equalization before depthwise Convs
    (``config.equalize_activations``, with per-channel weights), SmoothQuant (``config.smooth_quant``), then
    :class:`~tensorslim.passes.static_quant.StaticQuantPass`. The preparation never counts as the change.

    Raises:
        InputError: ``data`` is ``None``.
    """
    from tensorslim.passes.act_equalize import ActivationEqualizePass
    from tensorslim.passes.equalize import EqualizePass
    from tensorslim.passes.qdq_opset import QdqOpsetPass
    from tensorslim.passes.smooth_quant import SmoothQuantConfig, SmoothQuantPass
    from tensorslim.passes.static_prepare import StaticPrepareConfig, StaticPreparePass
    from tensorslim.passes.static_quant import StaticQuantPass

    static = StaticQuantPass(config, data=data)  # first: no data is the user's error before anything runs
    prepare: list[Pass] = [QdqOpsetPass(), StaticPreparePass(StaticPrepareConfig(preprocess=config.preprocess))]
    if config.equalize:
        prepare.append(EqualizePass())
    if config.equalize_activations and config.granularity == "per_channel":
        prepare.append(ActivationEqualizePass(data=data))
    if config.smooth_quant is not None:
        smooth = SmoothQuantConfig(alpha=config.smooth_quant, op_types=config.op_types, exclude=config.exclude)
        prepare.append(SmoothQuantPass(smooth, data=data))
    return Pipeline([*(Step(p, counts=False) for p in prepare), static], name="static_quant")


def run_pipeline(
    model: onnx.ModelProto, config: Any, data: Dataset | None = None, target: TargetRuntime | None = None
) -> PassResult[onnx.ModelProto]:
    """Run the pipeline of ``config`` (see :func:`mode_pipeline`) on ``model`` (never modified).

    Returns:
        The model, whether the quantization step changed it, one record per weight, and the notes of every step.
    """
    return mode_pipeline(config, data, target)(model)


def _blocks_without_gbq(cfg: BlockQuantConfig, data: Dataset | None, target: TargetRuntime) -> Pipeline:
    """Block-wise weights for a target without GatherBlockQuantized: embeddings become int8 Gathers instead."""
    from tensorslim.passes.blockwise_quant import BlockQuantPass
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass
    from tensorslim.runtime.targets import gather_block_quantized

    rest = tuple(o for o in cfg.op_types if o != "Gather")
    embed = DynamicQuantConfig(op_types=("Gather",), form="weight_only", exclude=cfg.exclude, min_size=cfg.min_size)
    need = gather_block_quantized(cfg.bits).onnxruntime
    note = (f"embeddings int8 (Gather on an int8 table): {target} lacks int{cfg.bits} GatherBlockQuantized "
            f"(onnxruntime>={need[0]}.{need[1]})")  # fmt: skip
    first: list[Pass | Step] = [BlockQuantPass(dataclasses.replace(cfg, op_types=rest), data=data)] if rest else []
    steps = [*first, DynamicQuantPass(embed), Step(Note(note), counts=False)]
    return Pipeline(steps, name="blockwise_then_int8_gather", records=_replaced_by_second)


class Float16FallbackPass(Pass):
    """Convert to float16; nodes that overflow on the data fall back to float32 (three rounds at most).

    Without data, one made-up feed per sample in the model's own shapes checks for overflow.
    """

    name = "float16"

    def __init__(self, config: Float16Config, data: Dataset | None = None) -> None:
        self.config = config
        self.data = data

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Convert, check on the feeds, fall back where a node overflows, repeat."""
        from tensorslim.data import batch_size_for, generate_runnable
        from tensorslim.passes.float16 import Float16Pass, find_overflows
        from tensorslim.runtime.ort import OrtRuntime

        cfg, notes = self.config, []
        if self.data is None:
            # four made-up feeds in the model's own layout (a fixed batch, a batch on another axis, a scalar input),
            # the sizes it leaves open at the first that runs (a detector fails at 1x1)
            rt = OrtRuntime(model)
            made = generate_runnable(rt, 4, bounds=rt.index_bounds())
            feeds = [batch for batch, _ in made.batches(batch_size_for(rt.inputs, 1))][:4]
            notes.append("float16 overflow check ran on generated inputs; pass --data for a real check")
        else:
            size = batch_size_for(OrtRuntime(model).inputs, 8)  # a model with a fixed batch takes that many a call
            feeds = [batch for batch, _ in self.data.batches(size)][:8]
        result = Float16Pass(cfg)(model)
        for _ in range(3):
            try:
                culprits = find_overflows(result.model, feeds)
            except Exception as e:  # ONNX Runtime raises private types: a kernel missing in float16, a shape it rejects
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise InputError(
                    f"the float16 model does not run in ONNX Runtime ({msg}); keep the op types it names in float32 "
                    "with --ops (block list), or pass --data with samples the model takes"
                ) from e
            if not culprits:
                break
            notes.append(f"float32 fallback for node(s) that overflow in float16: {', '.join(culprits)}")
            cfg = dataclasses.replace(cfg, block_nodes=(*cfg.block_nodes, *(f"^{re.escape(c)}$" for c in culprits)))
            result = Float16Pass(cfg)(model)
        return PassResult(result.model, result.modified, result.records, [*notes, *result.notes])


# --- the registry's runners: (model, config, data, target) -> PassResult -------------------------------------


def run_fold_batchnorm(
    model: onnx.ModelProto, config: Any, data: Dataset | None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """``fold_batchnorm``: Conv -> BatchNormalization pairs folded."""
    from tensorslim.passes.fold_batchnorm import FoldBatchNormPass

    return FoldBatchNormPass()(model)


def _through_api(kind: str, name: str) -> Callable[..., PassResult[onnx.ModelProto]]:
    """The runner of compression pass ``kind``: the API function ``name`` (it checks the output before it is handed
    on), with the command's calibration data."""

    def run(
        model: onnx.ModelProto, config: Any, data: Dataset | None, target: Any = None
    ) -> PassResult[onnx.ModelProto]:
        from tensorslim.api import compression

        result: PassResult[onnx.ModelProto] = getattr(compression, name)(model, config=config, data=data)
        return result

    run.__name__ = run.__qualname__ = f"run_{kind}"
    run.__doc__ = f"``{kind}``, through :func:`tensorslim.api.{name}`."
    return run


run_prune = _through_api("prune", "prune")
run_channel_prune = _through_api("channel_prune", "prune_channels")
run_cluster = _through_api("cluster", "cluster")


def run_pack(
    model: onnx.ModelProto, config: Any, data: Dataset | None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """``pack`` writes the recipe's output file itself (``apply_recipe``); as a step it changes nothing."""
    raise AssertionError("pack is the last pass of a recipe and writes the output; it is not run as a step")
