"""Weight clustering: each weight becomes small integer indices into a codebook of ``k`` centroids.

Decide, then apply. :func:`plan_cluster` runs 1-D k-means (:mod:`tensorslim.algorithms.kmeans`) on every
weight of a supported op, per tensor or per output channel, and returns the centroids and labels as plain
data (:class:`ClusterPlan`). :class:`ClusterPass` rewrites the model so that the file holds uint8 indices
and a float codebook, expanded by ONNX Runtime once, when the session loads (all inputs are constants, so
its constant folding computes the float weight; the running graph is the float graph)::

    per tensor:   Op(X, W)  ->  Op(X, Gather(codebook[k], Cast(indices_u8, int64)))
    per channel:  Op(X, W)  ->  Op(X, Gather(codebook[C * k], Add(Cast(indices_u8, int64), c * k)))

Recurrent layers' input and recurrence weights (``W`` and ``R`` of ``LSTM``/``GRU``/``RNN``, per channel along
the gates axis) are clustered too: the expansion is constant, so ONNX Runtime folds it before the recurrent kernel
packs its weights. Weights that reach their op through constant ``Slice``/``Concat`` chains (PyTorch's gate
reordering inside ``If`` bodies) are folded first (:class:`~tensorslim.passes.fold_weight_chains.FoldWeightChainsPass`).

Sparsity is preserved: when a weight holds exact zeros, index 0 is reserved for the centroid 0.0 and the
non-zero values share the other ``k - 1`` centroids, so pruned weights stay exactly zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import onnx
from onnx import TensorProto

from tensorslim._regex import name_matcher
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.kmeans import KMeansInit, assign, error_feedback_assign, kmeans_rows
from tensorslim.algorithms.pruning import damped_inverse_cholesky
from tensorslim.backends.onnx.editor import GraphEditor
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, find_weights
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError, UnsupportedModelError
from tensorslim.passes._config import Granularity, coerce_enums, regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import LayerInput, gram_matrices
from tensorslim.passes.fold_weight_chains import FoldWeightChainsPass

__all__ = [
    "CLUSTER_OPS",
    "ClusterConfig",
    "ClusterGranularity",
    "ClusterPass",
    "ClusterPlan",
    "CodebookDtype",
    "cluster_weight",
    "plan_cluster",
]

log = logging.getLogger(__name__)

CLUSTER_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM", "GRU", "RNN")
_ROLES = {WeightRole.CONV, WeightRole.CONV_TRANSPOSE, WeightRole.GEMM, WeightRole.MATMUL, WeightRole.EMBEDDING,
          WeightRole.RNN_W, WeightRole.RNN_R}  # fmt: skip


#: One codebook per tensor, or one per output channel: the quantizers' :class:`~tensorslim.passes._config.Granularity`.
ClusterGranularity = Granularity


class CodebookDtype(StrEnum):
    """How the centroids are stored (float16 halves the codebook bytes; cast back at load time)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


@dataclass(frozen=True)
class ClusterConfig:
    """Configuration of weight clustering.

    Attributes:
        clusters: centroids per codebook, 2 to 256.
        granularity: ``per_tensor`` or ``per_channel`` (axis-aware per op, as for quantization).
        init: ``kmeans++`` (default), ``linear`` or ``density``.
        codebook_dtype: ``float32`` or ``float16`` (halves the codebook bytes; cast back at load time).
        op_types: op types whose weights are clustered.
        exclude: regular expressions; a weight consumed by a matching node stays float.
        min_size: weights with fewer elements stay float.
        max_iter: Lloyd iterations at most.
        seed: seed of the k-means++ sampling (the output is deterministic for a fixed seed).
        preserve_sparsity: keep exact zeros exactly zero (index 0 is the centroid 0.0).
        damp: diagonal damping of the activation-aware assignment (with calibration data).
    """

    clusters: int = 16
    granularity: Granularity | str = Granularity.PER_TENSOR
    init: KMeansInit | str = KMeansInit.KMEANS_PP
    codebook_dtype: CodebookDtype | str = CodebookDtype.FLOAT32
    op_types: tuple[str, ...] = CLUSTER_OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 256
    max_iter: int = 30
    seed: int = 0
    preserve_sparsity: bool = True
    damp: float = 0.01

    def __post_init__(self) -> None:
        coerce_enums(self, (("granularity", Granularity), ("init", KMeansInit), ("codebook_dtype", CodebookDtype)))
        k = self.clusters
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 256:
            raise ConfigError(f"clusters: must be an integer from 2 to 256, got {k!r}")
        unknown = [o for o in self.op_types if o not in CLUSTER_OPS]
        if unknown or not self.op_types:
            raise ConfigError(f"op_types: {list(self.op_types)!r}; allowed: {', '.join(CLUSTER_OPS)}")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        for fname in ("min_size", "max_iter", "seed"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{fname}: must be a non-negative integer, got {v!r}")
        if not self.damp > 0:
            raise ConfigError(f"damp: must be positive, got {self.damp!r}")


@dataclass
class ClusterPlan:
    """The decision for one weight: codebook (``channels x k``) and labels (the weight's shape), or a skip."""

    weight: WeightInfo
    axis: int | None = None
    centroids: np.ndarray | None = None
    labels: np.ndarray | None = None
    skip_reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        """Whether the weight stays float."""
        return self.centroids is None

    def reconstruct(self) -> np.ndarray:
        """The float weight the indices and codebook stand for (what ONNX Runtime computes at load)."""
        assert self.centroids is not None and self.labels is not None
        w = self.weight.array
        if self.axis is None:
            return self.centroids.reshape(-1)[self.labels.astype(np.int64)].astype(w.dtype)
        moved = np.moveaxis(self.labels, self.axis, 0).reshape(self.centroids.shape[0], -1).astype(np.int64)
        vals = np.take_along_axis(self.centroids, moved, axis=1)
        return np.moveaxis(vals.reshape(np.moveaxis(w, self.axis, 0).shape), 0, self.axis).astype(w.dtype)


def _out_in(w: WeightInfo, arr: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """``out x in`` view of a MatMul/Gemm weight (and whether it is the transpose), else ``None``."""
    use = w.primary
    if use is None or arr.ndim != 2 or use.role not in (WeightRole.MATMUL, WeightRole.GEMM):
        return None
    return (arr, False) if (use.role is WeightRole.GEMM and use.channel_axis == 0) else (arr.T, True)


def cluster_weight(
    plan: ClusterPlan, axis: int | None, config: ClusterConfig, cb_dtype: np.dtype, hessian: np.ndarray | None
) -> None:
    w = plan.weight
    arr = w.array.astype(np.float64)
    rows = arr.reshape(1, -1) if axis is None else np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    sparse = config.preserve_sparsity and bool(np.any(rows == 0))
    k = config.clusters - 1 if sparse else config.clusters
    view = _out_in(w, arr) if hessian is not None else None
    sample_weight = None
    if view is not None and hessian is not None:
        d = np.maximum(np.diag(hessian), 0.0) + 1e-12 * float(np.mean(np.diag(hessian)) + 1e-30)
        imp = np.broadcast_to(d[None, :], view[0].shape)  # importance of each weight: its input's energy
        imp_arr = imp.T if view[1] else imp
        sample_weight = (imp_arr.reshape(1, -1) if axis is None else
                         np.moveaxis(imp_arr, axis, 0).reshape(arr.shape[axis], -1))  # fmt: skip
    res = kmeans_rows(rows, k, init=config.init, valid=(rows != 0) if sparse else None,
                      max_iter=config.max_iter, seed=config.seed, sample_weight=sample_weight)  # fmt: skip
    cents = res.centroids.astype(cb_dtype).astype(np.float64)
    if sparse:
        cents = np.concatenate([np.zeros((cents.shape[0], 1)), cents], axis=1)
        plan.notes.append(f"{100 * float(np.mean(rows == 0)):.1f}% zeros kept at index 0")
    if view is not None and hessian is not None:
        # error feedback in the out x in layout: labels minimise the layer's output error
        u = damped_inverse_cholesky(hessian, config.damp)
        labels_oi = error_feedback_assign(view[0], cents, u, keep_zero=sparse)
        lab_arr = labels_oi.T if view[1] else labels_oi
        labels = lab_arr.reshape(1, -1) if axis is None else np.moveaxis(lab_arr, axis, 0).reshape(cents.shape[0], -1)
        plan.notes.append("activation-aware (weighted k-means + error feedback)")
    else:
        labels = assign(np.where(rows == 0, 0.0, rows), cents) if not sparse else np.where(rows != 0, res.labels + 1, 0)
    plan.axis = axis
    plan.centroids = cents.astype(cb_dtype)
    shape = arr.shape if axis is None else np.moveaxis(arr, axis, 0).shape
    lab = labels.reshape(shape)
    plan.labels = (lab if axis is None else np.moveaxis(lab, 0, axis)).astype(np.uint8)


def plan_cluster(model: onnx.ModelProto, config: ClusterConfig, data: Dataset | None = None) -> list[ClusterPlan]:
    """Cluster every eligible weight of ``model``; skipped weights carry their reason.

    With calibration ``data``, MatMul/Gemm weights are clustered activation-aware: k-means weighted by
    each input's energy, then labels assigned column by column with error feedback (GPTQ-style).
    """
    excluded = name_matcher(config.exclude)
    cb_dtype = np.dtype(config.codebook_dtype)
    hessians: dict[str, np.ndarray] = {}
    if data is not None:
        layers = {}
        for w in find_weights(model):
            if w.array.dtype == np.float32 and _out_in(w, w.array) is not None and w.size >= config.min_size:
                use = w.primary
                assert use is not None
                layers[use.node.input[0]] = LayerInput(use.node.input[0])
        grams = gram_matrices(model, layers, data)
        for w in find_weights(model):
            use = w.primary
            if use is not None and use.node.input[0] in grams and _out_in(w, w.array) is not None:
                hessians[w.name] = grams[use.node.input[0]]
    plans = []
    for w in find_weights(model):
        plan = ClusterPlan(w)
        uses = w.weight_uses
        if not uses or not {u.role for u in uses} <= _ROLES:
            continue
        plans.append(plan)
        axes = {u.channel_axis for u in uses}
        if w.array.dtype != np.float32:
            plan.skip_reason = f"{w.array.dtype} tensor; clustering takes float32 weights"
        elif any(u.op_type not in config.op_types for u in w.uses if u.role is not WeightRole.OTHER):
            plan.skip_reason = f"op not in the op list ({', '.join(config.op_types)})"
        elif excluded(*(u.node_name for u in w.uses)):
            plan.skip_reason = "matches an exclude pattern"
        elif w.size < config.min_size:
            plan.skip_reason = f"{w.size} elements < min size {config.min_size}"
        elif w.graph_input and model.ir_version >= 4:
            plan.skip_reason = "initializer is also a graph input"
        elif not np.all(np.isfinite(w.array)):
            plan.skip_reason = "holds NaN or infinite values"
        elif config.granularity is ClusterGranularity.PER_CHANNEL and (len(axes) != 1 or None in axes):
            plan.skip_reason = "no single output-channel axis for per-channel codebooks"
        if plan.skip_reason:
            continue
        axis = next(iter(axes)) if config.granularity is ClusterGranularity.PER_CHANNEL else None
        cluster_weight(plan, axis, config, cb_dtype, hessians.get(w.name))
    return plans


def _apply(editor: GraphEditor, plan: ClusterPlan) -> int:
    w = plan.weight
    assert plan.centroids is not None and plan.labels is not None
    const = w.source == "constant"
    idx = editor.add_tensor(w.scope, f"{w.name}_cluster_indices", plan.labels, as_constant=const)
    cb = editor.add_tensor(w.scope, f"{w.name}_codebook", plan.centroids.reshape(-1), as_constant=const)
    nbytes = plan.labels.nbytes + plan.centroids.nbytes
    idx64 = editor.names(f"{w.name}_indices_i64")
    nodes = [editor.node("Cast", [idx], [idx64], f"{w.name}_IndicesCast", to=TensorProto.INT64)]
    if plan.axis is not None:
        k = plan.centroids.shape[1]
        shape = [1] * w.array.ndim
        shape[plan.axis] = plan.centroids.shape[0]
        offsets = (np.arange(plan.centroids.shape[0], dtype=np.int64) * k).reshape(shape)
        off = editor.add_tensor(w.scope, f"{w.name}_codebook_offsets", offsets, as_constant=const)
        nbytes += offsets.nbytes
        shifted = editor.names(f"{w.name}_indices_offset")
        nodes.append(editor.node("Add", [idx64, off], [shifted], f"{w.name}_IndicesOffset"))
        idx64 = shifted
    if plan.centroids.dtype != np.float32:
        gathered = editor.names(f"{w.name}_clustered_half")
        nodes.append(editor.node("Gather", [cb, idx64], [gathered], f"{w.name}_CodebookGather", axis=0))
        nodes.append(editor.node("Cast", [gathered], [w.name], f"{w.name}_CodebookCast", to=TensorProto.FLOAT))
    else:
        nodes.append(editor.node("Gather", [cb, idx64], [w.name], f"{w.name}_CodebookGather", axis=0))
    # the expansion produces the weight under its own name at the top of the graph that holds it
    editor.insert_before(w.scope.graph.node[0], nodes)
    editor.drop_weight(w.scope, w.name, w.source)
    return nbytes


class ClusterPass(Pass):
    """Apply :func:`plan_cluster`: indices + codebook in the file, float weights after session load."""

    name = "cluster"

    def __init__(self, config: ClusterConfig | None = None, data: Dataset | None = None) -> None:
        self.config = config or ClusterConfig()
        self.data = data
        self.plans: list[ClusterPlan] = []

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Cluster the weights of ``model`` (a copy made by :meth:`Pass.__call__`)."""
        model = FoldWeightChainsPass().call(model).model  # weights behind constant Slice/Concat chains (If bodies)
        self.plans = plan_cluster(model, self.config, self.data)
        if not any(not p.skipped for p in self.plans):
            reasons = sorted({p.skip_reason for p in self.plans}) or [
                "the model has no Conv/Gemm/MatMul/Gather weights"
            ]
            raise UnsupportedModelError(f"no weight can be clustered ({'; '.join(reasons[:3])})")
        editor = GraphEditor(model)
        records = []
        for p in self.plans:
            w = p.weight
            ops = ",".join(sorted({u.op_type for u in w.uses}))
            nodes = ",".join(u.node_name for u in w.uses)
            if p.skipped:
                log.info("cluster: %s skipped (%s)", w.name, p.skip_reason)
                records.append(WeightRecord(w.name, ops, nodes, w.array.shape, "skipped", p.skip_reason, w.nbytes,
                                            w.nbytes))  # fmt: skip
                continue
            after = _apply(editor, p)
            gran = "per_tensor" if p.axis is None else f"per_channel(axis={p.axis})"
            records.append(WeightRecord(w.name, ops, nodes, w.array.shape, f"clustered k={self.config.clusters}",
                                        "; ".join(p.notes), w.nbytes, after, gran,
                                        sqnr_db(w.array, p.reconstruct())))  # fmt: skip
        editor.apply()
        return PassResult(model, True, records)
