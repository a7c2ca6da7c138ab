"""Pruning and clustering of ``.tflite`` models: the ONNX passes' configs and NumPy algorithms on the float
weight buffers of every subgraph (Keras LSTM/GRU layers keep their weights in ``WHILE`` bodies).

Both rewrite the weight buffers in place; the graph, the tensors and their types are unchanged, so the model
runs in LiteRT exactly as the float one does::

    prune:    FULLY_CONNECTED(x, W)  ->  FULLY_CONNECTED(x, W * mask)
    cluster:  FULLY_CONNECTED(x, W)  ->  FULLY_CONNECTED(x, codebook[labels])     (float values, <= k distinct)

Clustered weights stay float in the file. LiteRT has no lookup-table weights: ``DEQUANTIZE`` is affine only,
and a ``GATHER`` of codes (int16 or int32 positions; no int8) runs at every inference, not once at load as ONNX
Runtime's constant folding does, and would store 2-4 bytes per weight. The float centroids in place keep float
speed and make each weight at most ``k`` distinct values, which ``tensorslim pack`` stores as palette indices
(about ``log2(k)`` bits per weight). Pruned weights are exact zeros, which pack stores as a bit mask.

ONNX op types of the configs map onto TFLite operators: ``Conv`` -> ``CONV_2D``, ``DEPTHWISE_CONV_2D``;
``ConvTranspose`` -> ``TRANSPOSE_CONV``; ``Gemm``/``MatMul`` -> ``FULLY_CONNECTED``, ``BATCH_MATMUL``;
``Gather`` -> ``GATHER``, ``EMBEDDING_LOOKUP``; ``LSTM`` -> ``UNIDIRECTIONAL_SEQUENCE_LSTM``. Only data-free
methods apply (magnitude pruning, plain k-means): the activation-aware ones collect activations through ONNX
Runtime.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import numpy as np

from tensorslim._regex import name_matcher
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.pruning import global_thresholds, magnitude_mask, nm_mask
from tensorslim.backends.tflite.dynamic import TflitePassResult
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.weights import TfliteWeight, find_weights
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.passes.base import WeightRecord
from tensorslim.passes.cluster import ClusterConfig, ClusterGranularity, ClusterPlan, cluster_weight
from tensorslim.passes.prune import PruneConfig, PruneMethod, PruneScope

__all__ = ["OP_TYPES", "TfliteClusterPass", "TflitePrunePass", "tflite_weights"]

log = logging.getLogger(__name__)

#: ONNX op type of the configs -> the TFLite operators it stands for.
OP_TYPES: dict[str, tuple[str, ...]] = {
    "Conv": ("CONV_2D", "DEPTHWISE_CONV_2D"),
    "ConvTranspose": ("TRANSPOSE_CONV",),
    "Gemm": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "MatMul": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "Gather": ("GATHER", "EMBEDDING_LOOKUP"),
    "LSTM": ("UNIDIRECTIONAL_SEQUENCE_LSTM",),
}


def _ops(op_types: tuple[str, ...]) -> set[str]:
    return {t for o in op_types for t in OP_TYPES.get(o, ())}


def tflite_weights(model: Any, ops: set[str]) -> list[tuple[int, TfliteWeight]]:
    """``(subgraph, weight)`` for every constant float weight read at a weight position by one of ``ops``, in
    every subgraph; a buffer read from several subgraphs is listed once (its first subgraph)."""
    seen: set[int] = set()
    out = []
    for si in range(len(model.subgraphs)):
        for w in find_weights(model, si):
            if w.buffer in seen or not any(u.op_type in ops for u in w.weight_uses):
                continue
            seen.add(w.buffer)
            out.append((si, w))
    return out


def _skip(model: Any, si: int, w: TfliteWeight, ops: set[str], excluded: Any, min_size: int) -> str:
    g = Graph(model, si)
    if any(u.op_type not in ops for u in w.weight_uses):
        return f"also read by {', '.join(sorted({u.op_type for u in w.weight_uses} - ops))}"
    if excluded(w.name, *(u.label for u in w.uses)):
        return "matches an exclude pattern"
    if w.size < min_size:
        return f"{w.size} elements < min size {min_size}"
    if any(t in set(g.outputs()) or g.sg.tensors[t].isVariable for t in w.tensors):
        return "a model output or variable"
    if not np.all(np.isfinite(w.array)):
        return "holds NaN or infinite values"
    return ""


def _write(model: Any, w: TfliteWeight, values: np.ndarray) -> None:
    """Overwrite the buffer of ``w`` with ``values`` in its stored type (float32, or float16 behind DEQUANTIZE)."""
    dtype = np.float16 if w.source_type == "FLOAT16" else np.float32
    data = np.ascontiguousarray(values.reshape(w.shape), dtype=np.dtype(dtype).newbyteorder("<"))
    model.buffers[w.buffer].data = np.frombuffer(data.tobytes(), np.uint8).copy()


def _record(w: TfliteWeight, action: str, reason: str = "", gran: str = "", err: float | None = None) -> WeightRecord:
    ops = ",".join(dict.fromkeys(u.op_type for u in w.uses))
    nodes = ",".join(dict.fromkeys(u.label for u in w.uses))
    return WeightRecord(w.name, ops, nodes, w.shape, action, reason, w.stored_bytes, w.stored_bytes, gran, err)


def _nm_view(w: TfliteWeight) -> tuple[np.ndarray, str] | str:
    """The ``out x in`` view of a weight for N:M groups along its reduction axis, or why there is none."""
    op = w.weight_uses[0].op_type
    if op in ("FULLY_CONNECTED", "CONV_2D") and w.array.ndim >= 2:  # [out, (h, w,) in]: the inputs are last
        return w.array.reshape(-1, w.array.shape[-1]), ""
    return f"pattern N:M applies to FULLY_CONNECTED and CONV_2D weights, not {op}"


class TflitePrunePass:
    """Magnitude pruning (unstructured or N:M, per layer or global) of a ``.tflite`` model's float weights; the
    input model is never modified (the pass works on a copy)."""

    name = "tflite_prune"

    def __init__(self, config: PruneConfig | None = None) -> None:
        self.config = config or PruneConfig()
        if self.config.method is not PruneMethod.MAGNITUDE:
            raise InputError(
                f"method {PruneMethod(self.config.method).value} needs activations, which tensorslim collects "
                "for ONNX models only; use method magnitude (the default without --data) for .tflite"
            )

    def __call__(self, model: Any) -> TflitePassResult:
        """Prune a copy of ``model``."""
        cfg = self.config
        model = copy.deepcopy(model)
        ops = _ops(cfg.op_types)
        excluded = name_matcher(cfg.exclude)
        nm = cfg.nm
        records: list[WeightRecord] = []
        active: list[tuple[TfliteWeight, np.ndarray]] = []  # weight, the scores view masks are decided on
        for si, w in tflite_weights(model, ops):
            reason = _skip(model, si, w, ops, excluded, cfg.min_size)
            if not reason and nm is not None:
                view = _nm_view(w)
                if isinstance(view, str):
                    reason = view
                elif view[0].shape[1] % nm[1]:
                    reason = f"pattern {cfg.pattern} needs the reduction axis to be a multiple of {nm[1]}"
            if reason:
                log.info("prune: %s skipped (%s)", w.name, reason)
                records.append(_record(w, "skipped", reason))
                continue
            active.append((w, np.abs(w.array.astype(np.float64))))
        if not active:
            reasons = sorted({r.reason for r in records}) or ["the model has no float conv/fully-connected weights"]
            raise UnsupportedModelError(
                f"no weight can be pruned with pattern {cfg.pattern} ({'; '.join(reasons[:3])})"
            )
        sparsities = [cfg.target_sparsity] * len(active)
        if cfg.scope is PruneScope.GLOBAL:
            sparsities = global_thresholds([s for _, s in active], cfg.target_sparsity, cfg.max_layer_sparsity)
        for (w, scores), s in zip(active, sparsities, strict=True):
            if nm is not None:
                mask = nm_mask(scores.reshape(-1, w.array.shape[-1]), *nm).reshape(w.shape)
            else:
                mask = magnitude_mask(scores, s)
            values = np.where(mask, w.array, np.float32(0.0)).astype(np.float32)
            _write(model, w, values)
            pct = 100 * (1 - float(mask.mean()))
            records.append(_record(w, f"pruned {pct:.1f}% {cfg.pattern} (magnitude)", err=sqnr_db(w.array, values)))
        return TflitePassResult(model, True, records)


class TfliteClusterPass:
    """k-means clustering of a ``.tflite`` model's float weights, the centroids written in place (float values,
    at most ``clusters`` distinct per codebook); the input model is never modified."""

    name = "tflite_cluster"

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()

    def __call__(self, model: Any) -> TflitePassResult:
        """Cluster a copy of ``model``."""
        cfg = self.config
        model = copy.deepcopy(model)
        ops = _ops(cfg.op_types)
        excluded = name_matcher(cfg.exclude)
        cb_dtype = np.dtype(cfg.codebook_dtype)
        records: list[WeightRecord] = []
        done = 0
        for si, w in tflite_weights(model, ops):
            reason = _skip(model, si, w, ops, excluded, cfg.min_size)
            axes = {u.channel_axis for u in w.weight_uses}
            per_channel = cfg.granularity is ClusterGranularity.PER_CHANNEL
            if not reason and per_channel and (len(axes) != 1 or None in axes):
                reason = "no single output-channel axis for per-channel codebooks"
            if reason:
                log.info("cluster: %s skipped (%s)", w.name, reason)
                records.append(_record(w, "skipped", reason))
                continue
            axis = next(iter(axes)) if per_channel else None
            plan = ClusterPlan(weight=cast(Any, w))  # only the weight's array is read
            cluster_weight(plan, axis, cfg, cb_dtype, None)
            values = plan.reconstruct().astype(np.float32)
            _write(model, w, values)
            gran = "per_tensor" if axis is None else f"per_channel(axis={axis})"
            records.append(_record(w, f"clustered k={cfg.clusters}", "; ".join(plan.notes), gran,
                                   sqnr_db(w.array, values)))  # fmt: skip
            done += 1
        if not done:
            reasons = sorted({r.reason for r in records}) or ["the model has no float conv/fully-connected weights"]
            raise UnsupportedModelError(f"no weight can be clustered ({'; '.join(reasons[:3])})")
        return TflitePassResult(model, True, records)
