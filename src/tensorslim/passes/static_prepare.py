"""Prepare a graph for static int8: ONNX Runtime's basic optimizations, unique node names, int8-friendly ops.

The step of static quantization's pipeline between the opset upgrade and the optional CLE/SmoothQuant steps:
:func:`preprocess` applies ONNX Runtime's provider-independent graph optimizations (constant folding, Conv+Add/Mul
fusion, as ONNX Runtime's own ``quant_pre_process`` does), every node gets a unique name (placements refer to
nodes by name), written-out HardSwish/HardSigmoid are fused back into the ops ONNX Runtime's float kernels take
(:mod:`~tensorslim.passes.activation_forms`), constant scales and offsets next to a Conv/Gemm/MatMul that ONNX
Runtime left as kernels of their own are folded into its weights and bias (:mod:`~tensorslim.passes.fold_affine`),
and ops with no int8 kernel are rewritten into equivalent ones that have one
(:func:`~tensorslim.passes.static_placement.rewrite_for_int8`). The float function is unchanged. All but the int8
rewrites are :func:`float_fusions`, which dynamic int8 runs on conv nets too (:class:`FloatFusionsPass`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from tensorslim.backends.onnx.editor import opset_version
from tensorslim.passes.base import Pass, PassResult
from tensorslim.passes.fold_affine import AffineFold, float_kernels, fold_affine

__all__ = ["FloatFusionsPass", "StaticPrepareConfig", "StaticPreparePass", "float_fusions", "preprocess", "run"]


@dataclass(frozen=True)
class StaticPrepareConfig:
    """Options of :class:`StaticPreparePass`.

    Attributes:
        preprocess: apply ONNX Runtime's basic graph optimizations first (see :func:`preprocess`), then fold
            constant scales and offsets into the neighbouring layers (:mod:`~tensorslim.passes.fold_affine`).
    """

    preprocess: bool = True


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` after ONNX Runtime's basic optimizations, or ``None`` where they do not apply."""
    from tensorslim.passes.static_placement import optimized_by_ort

    if model.ByteSize() > 1_500_000_000 or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    ):
        return None
    try:
        out = optimized_by_ort(model, basic=True)
        onnx.checker.check_model(out)
    except Exception:  # a model ONNX Runtime cannot optimize is quantized as it is
        return None
    if any(n.domain not in ("", "ai.onnx") for n in out.graph.node) or opset_version(out) != opset_version(model):
        return None
    if out.ByteSize() > 1.25 * model.ByteSize() + (1 << 20):
        return None  # constant folding materialized big tensors (an Expand, a ConstantOfShape): keep the graph small
    return out


def _replace(model: onnx.ModelProto, out: onnx.ModelProto) -> list[str]:
    """Put ``out`` in ``model``'s place, keeping ``model``'s metadata, opsets and IR version; the note."""
    before = len(model.graph.node)
    metadata, opsets, ir_version = list(model.metadata_props), list(model.opset_import), model.ir_version
    model.CopyFrom(out)
    # ONNX Runtime stamps every domain it knows and its own IR version: keep the model's own
    del model.metadata_props[:]
    model.metadata_props.extend(metadata)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    model.ir_version = ir_version
    after = len(model.graph.node)
    return [f"graph rewritten by ONNX Runtime's basic optimizations (constant folding, Conv+Add/Mul fusion): "
            f"{before} -> {after} nodes"] if after != before else []  # fmt: skip


def preprocess(model: onnx.ModelProto) -> list[str]:
    """ONNX Runtime's basic graph optimizations (constant folding, Conv+Add/Mul/BatchNorm fusion), in place.

    Only ONNX-standard, provider-independent rewrites (``ORT_ENABLE_BASIC``), as ONNX Runtime's own
    ``quant_pre_process`` does; skipped for models over 1.5 GB or that ONNX Runtime does not load.
    """
    out = _optimized(model)
    return [] if out is None else _replace(model, out)


def float_fusions(model: onnx.ModelProto, *, optimize: bool = True) -> tuple[bool, list[str]]:
    """The float graph ONNX Runtime runs fastest, same function (in place): whether it changed, and notes.

    ONNX Runtime's basic optimizations when ``optimize`` (see :func:`preprocess`), unique node names, written-out
    HardSwish/HardSigmoid fused (:mod:`~tensorslim.passes.activation_forms`; before the folds, which would take a
    HardSwish's ``/ 6``), constant scales and offsets folded into the neighbouring Conv/Gemm/MatMul
    (:mod:`~tensorslim.passes.fold_affine`, only on an optimized graph: ONNX Runtime loads it, and the weights are
    initializers).
    """
    from tensorslim.passes.activation_forms import fuse_hard_activations, fused_note
    from tensorslim.passes.static_placement import ensure_node_names

    notes: list[str] = []
    optimized = _optimized(model) if optimize else None
    if optimized is not None:
        notes.extend(_replace(model, optimized))
    renamed = ensure_node_names(model.graph)
    fused = fuse_hard_activations(model)
    notes.extend(fused_note(fused))
    kernels = float_kernels(model) if optimized is not None else None  # an optimized model: ORT loads it
    folded = fold_affine(model, allowed=kernels.__contains__) if kernels is not None else []
    if folded:
        from tensorslim.passes.fold_batchnorm import remove_unused_constants

        remove_unused_constants(model.graph)
        notes.append(f"constant scales and offsets folded into the neighbouring Conv/Gemm/MatMul weights (same "
                     f"function, fewer kernels; in int8 fewer roundings and Q/DQ pairs): "
                     f"{_counted(folded)}")  # fmt: skip
    return optimized is not None or renamed > 0 or bool(fused) or bool(folded), notes


class StaticPreparePass(Pass):
    """Optimize (optional), name every node, rewrite ops for int8 kernels (see the module docstring)."""

    name = "static_prepare"

    def __init__(self, config: StaticPrepareConfig | None = None) -> None:
        self.config = config or StaticPrepareConfig()

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Prepare this copy of ``model``; notes say what was simplified and rewritten."""
        from tensorslim.passes.static_placement import rewrite_for_int8

        changed, notes = float_fusions(model, optimize=self.config.preprocess)
        rewritten = rewrite_for_int8(model)
        notes.extend(rewritten)
        return PassResult(model, changed or bool(rewritten), [], notes)


class FloatFusionsPass(Pass):
    """Dynamic int8's preparation of a conv net: :func:`float_fusions`, for the layers it leaves float.

    Dynamic int8 keeps convolutions as float kernels (ONNX Runtime's ``ConvInteger`` is slower), so the fusions
    ONNX Runtime's float graph gets decide their speed: RapidOCR's recognizer, whose learnable affine blocks and
    written-out HardSwish sit between its convolutions, runs in 0.66x of its exported float time after them.
    Graphs without a Conv are left as they are (written-out activations apart): their MatMuls run on dynamic
    int8's integer kernels, which the dynamic pass places on the graph as exported.
    """

    name = "float_fusions"

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Fuse and fold this copy of ``model`` where it has a Conv; only name nodes and fuse activations elsewhere."""
        convs = any(n.op_type in ("Conv", "ConvTranspose") and n.domain in ("", "ai.onnx") for n in model.graph.node)
        changed, notes = float_fusions(model, optimize=convs)  # not optimized: nothing to fold into
        return PassResult(model, changed, [], notes)


def _counted(folds: list[AffineFold]) -> str:
    """``38 offset(s) (13 into the layer after), 48 scale(s) (20 into the layer after)``: the folds by kind."""
    ops: dict[str, list[AffineFold]] = {}
    for f in folds:
        ops.setdefault(f.kind, []).append(f)
    return ", ".join(
        f"{len(v)} {k}(s) ({sum(f.side == 'input' for f in v)} into the layer after)" for k, v in sorted(ops.items())
    )


def run(
    model: onnx.ModelProto, config: StaticPrepareConfig, data: Any = None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """The registry's runner of ``static_prepare``."""
    return StaticPreparePass(config)(model)
