"""Post-training weight pruning: unstructured or N:M, by magnitude or activation-aware, with an OBS update.

Decide, then apply. :func:`plan_prune` looks at every Conv/Gemm/MatMul weight (:func:`find_weights`) and
decides, as plain data (:class:`PrunePlan`), its sparsity and its keep-mask; with ``method="sparsegpt"``
it also computes the updated remaining weights. :class:`PrunePass` then writes the pruned values back in
place (same tensor, same name, same dtype; the graph is unchanged)::

    Conv(X, W)  ->  Conv(X, W * mask)        (W' = OBS-updated weights with method="sparsegpt")

Masks are decided in an ``out x in`` view of each weight, the reduction along the columns:
MatMul ``W[K, N]`` -> ``W^T``; Gemm by ``transB``; Conv ``W[O, I, kh, kw]`` -> ``O x (I kh kw)``, and for
N:M patterns ``(O kh kw) x I`` so that groups run along the input channels.

Methods: ``magnitude`` (|W|, no data), ``wanda`` (|W| x ||X_j||, calibration data), ``sparsegpt`` (the wanda
mask, then the remaining weights of each row are updated to minimise the layer's output error on the
calibration activations, see :func:`tensorslim.algorithms.pruning.obs_update`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim._regex import name_matcher
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.pruning import global_thresholds, magnitude_mask, nm_mask, obs_update, wanda_scores
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, find_weights
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError, InputError, UnsupportedModelError
from tensorslim.passes._config import coerce_enums, regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import ConvGeometry, LayerInput, feature_sq_sums, gram_matrices

__all__ = [
    "PRUNABLE_OPS",
    "PruneConfig",
    "PruneMethod",
    "PrunePass",
    "PrunePlan",
    "PruneScope",
    "plan_prune",
    "replace_weight",
]

log = logging.getLogger(__name__)

PRUNABLE_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
_NM = re.compile(r"^(\d+):(\d+)$")


class PruneMethod(StrEnum):
    """How weights are scored (and updated)."""

    MAGNITUDE = "magnitude"
    WANDA = "wanda"
    SPARSEGPT = "sparsegpt"


class PruneScope(StrEnum):
    """One sparsity for every layer, or one global magnitude ranking."""

    PER_LAYER = "per_layer"
    GLOBAL = "global"


@dataclass(frozen=True)
class PruneConfig:
    """Configuration of weight pruning.

    Attributes:
        sparsity: fraction of weights set to zero, in [0, 1); ``None``: 0.5 for ``unstructured``, and
            implied by an N:M pattern (``(M - N) / M``).
        pattern: ``unstructured`` or ``N:M`` (e.g. ``2:4``, ``4:8``) along the reduction axis.
        method: ``magnitude``, ``wanda`` or ``sparsegpt`` (the last two need calibration data).
        scope: ``per_layer`` or ``global`` (one magnitude ranking over all layers, unstructured only).
        max_layer_sparsity: cap of any layer's sparsity under the ``global`` scope, in (0, 1].
        op_types: op types whose weights are pruned.
        exclude: regular expressions; weights consumed by a matching node stay dense.
        min_size: weights with fewer elements stay dense.
        damp: diagonal damping of the ``sparsegpt`` update, a fraction of the mean Hessian diagonal.
        max_positions: im2col rows per batch used for Conv statistics.
    """

    sparsity: float | None = None
    pattern: str = "unstructured"
    method: PruneMethod | str = PruneMethod.MAGNITUDE
    scope: PruneScope | str = PruneScope.PER_LAYER
    max_layer_sparsity: float = 1.0
    op_types: tuple[str, ...] = PRUNABLE_OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 256
    damp: float = 0.01
    max_positions: int = 2048

    def __post_init__(self) -> None:
        coerce_enums(self, (("method", PruneMethod), ("scope", PruneScope)))
        nm = self.nm
        if self.pattern != "unstructured" and nm is None:
            raise ConfigError(f"pattern: {self.pattern!r} is not one of unstructured, N:M (e.g. 2:4, 4:8)")
        if nm is not None and not (0 < nm[0] < nm[1] <= 64):
            raise ConfigError(f"pattern: {self.pattern!r} needs 0 < N < M <= 64")
        s = self.sparsity
        if s is not None and (isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= s < 1.0):
            raise ConfigError(f"sparsity: must be in [0, 1), got {s!r}")
        if nm is not None and s is not None and abs(s - (nm[1] - nm[0]) / nm[1]) > 1e-9:
            raise ConfigError(
                f"sparsity: {s} conflicts with pattern {self.pattern}, which prunes {(nm[1] - nm[0]) / nm[1]:g}; "
                "leave sparsity out"
            )
        if nm is not None and self.scope is PruneScope.GLOBAL:
            raise ConfigError("scope: global ranking needs pattern unstructured; N:M patterns are per group")
        if not 0.0 < self.max_layer_sparsity <= 1.0:
            raise ConfigError(f"max_layer_sparsity: must be in (0, 1], got {self.max_layer_sparsity!r}")
        unknown = [o for o in self.op_types if o not in PRUNABLE_OPS]
        if unknown or not self.op_types:
            raise ConfigError(f"op_types: {list(self.op_types)!r}; allowed: {', '.join(PRUNABLE_OPS)}")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 0:
            raise ConfigError(f"min_size: must be a non-negative integer, got {self.min_size!r}")
        if not self.damp > 0:
            raise ConfigError(f"damp: must be positive, got {self.damp!r}")

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` of an N:M pattern, else ``None``."""
        m = _NM.match(self.pattern)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def target_sparsity(self) -> float:
        """The sparsity every pruned layer gets (per-layer scope)."""
        nm = self.nm
        if nm is not None:
            return (nm[1] - nm[0]) / nm[1]
        return 0.5 if self.sparsity is None else float(self.sparsity)

    @property
    def needs_data(self) -> bool:
        """Whether the method needs calibration activations."""
        return self.method is not PruneMethod.MAGNITUDE


@dataclass
class PrunePlan:
    """The decision for one weight: its keep-mask (in the weight's own shape) and new values, or a skip."""

    weight: WeightInfo
    mask: np.ndarray | None = None
    values: np.ndarray | None = None
    skip_reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        """Whether the weight stays dense."""
        return self.mask is None

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights."""
        return 0.0 if self.mask is None else 1.0 - float(self.mask.mean())


def _to_2d(w: WeightInfo, array: np.ndarray, nm: bool) -> tuple[np.ndarray, str]:
    """``out x in`` view of ``array`` and a layout tag that :func:`_from_2d` inverts."""
    use = w.primary
    assert use is not None
    if use.role is WeightRole.MATMUL:
        return array.T, "t"
    if use.role is WeightRole.GEMM:
        return (array, "id") if use.channel_axis == 0 else (array.T, "t")
    if nm:  # Conv, groups along the input channels
        i = array.shape[1]
        return array.transpose(0, *range(2, array.ndim), 1).reshape(-1, i), "conv_nm"
    return array.reshape(array.shape[0], -1), "flat"


def _from_2d(view: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    if layout == "t":
        return view.T.reshape(shape)
    if layout == "conv_nm":
        o, i, *k = shape
        return view.reshape(o, *k, i).transpose(0, len(shape) - 1, *range(1, len(shape) - 1))
    return view.reshape(shape)


def _candidates(model: onnx.ModelProto, cfg: PruneConfig) -> list[PrunePlan]:
    excluded = name_matcher(cfg.exclude)
    nm = cfg.nm
    plans = []
    for w in find_weights(model):
        plan = PrunePlan(w)
        role_uses = w.weight_uses
        roles = {u.role for u in role_uses}
        if not role_uses or not roles <= {WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL}:
            continue  # biases, embeddings and the like are not pruning candidates
        plans.append(plan)
        if w.array.dtype not in (np.float32, np.float16, np.float64):
            plan.skip_reason = f"{w.array.dtype} tensor, not float"
        elif len(roles) > 1 or len({u.channel_axis for u in role_uses}) > 1:
            plan.skip_reason = "consumed in different roles"
        elif any(u.op_type not in cfg.op_types for u in role_uses):
            plan.skip_reason = f"op not in the op list ({', '.join(cfg.op_types)})"
        elif excluded(*(u.node_name for u in w.uses)):
            plan.skip_reason = "matches an exclude pattern"
        elif w.size < cfg.min_size:
            plan.skip_reason = f"{w.size} elements < min size {cfg.min_size}"
        elif w.array.ndim != 2 and WeightRole.CONV not in roles:
            plan.skip_reason = f"{w.array.ndim}-D weight (batched MatMul)"
        elif w.array.ndim < 3 and WeightRole.CONV in roles:
            plan.skip_reason = "1-D convolution weight without spatial axes"
        elif nm is not None:
            view, _ = _to_2d(w, w.array, True)
            if view.shape[1] % nm[1]:
                plan.skip_reason = (
                    f"pattern {cfg.pattern} needs the reduction axis to be a multiple of {nm[1]}, "
                    f"it has {view.shape[1]}"
                )
    return plans


def _layer_input(plan: PrunePlan) -> LayerInput:
    use = plan.weight.primary
    assert use is not None
    if use.role is WeightRole.CONV:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in use.node.attribute}
        if int(attrs.get("group", 1)) != 1 or plan.weight.array.ndim != 4:
            raise ValueError("grouped or non-2-D convolution")
        return LayerInput(use.node.input[0], ConvGeometry.from_node(use.node, plan.weight.array.shape))
    return LayerInput(use.node.input[0])


def plan_prune(model: onnx.ModelProto, config: PruneConfig, data: Dataset | None = None) -> list[PrunePlan]:
    """Decide the keep-mask (and, for ``sparsegpt``, the new values) of every prunable weight.

    Raises:
        InputError: the method needs data and none was given, or no weight can take the pattern.
    """
    if config.needs_data and data is None:
        raise InputError(f"method {PruneMethod(config.method).value} needs calibration data; pass --data calib.npz")
    plans = _candidates(model, config)
    active = [p for p in plans if not p.skip_reason]
    if not active:
        reasons = sorted({p.skip_reason for p in plans})
        detail = "; ".join(reasons[:3]) or "the model has no Conv/Gemm/MatMul weights"
        raise UnsupportedModelError(f"no weight can be pruned with pattern {config.pattern} ({detail})")
    nm = config.nm
    sparsities = [config.target_sparsity] * len(active)
    if config.scope is PruneScope.GLOBAL:
        sparsities = global_thresholds(
            [np.abs(p.weight.array) for p in active], config.target_sparsity, config.max_layer_sparsity
        )
    sq: dict[str, np.ndarray] = {}
    grams: dict[str, np.ndarray] = {}
    if config.needs_data and data is not None:
        acts = {}
        for p in active:
            use = p.weight.primary
            assert use is not None
            acts[use.node.input[0]] = 1 if use.role is WeightRole.CONV else -1
        sq = feature_sq_sums(model, acts, data)
        if config.method is PruneMethod.SPARSEGPT:
            layers = {}
            for p in active:
                try:
                    layers[p.weight.name] = _layer_input(p)
                except ValueError as e:
                    p.notes.append(f"no OBS update ({e})")
            grams = gram_matrices(model, layers, data, max_positions=config.max_positions)
    for p, s in zip(active, sparsities, strict=True):
        w = p.weight
        arr = np.asarray(w.array, np.float64)
        scores = np.abs(arr)
        use = w.primary
        assert use is not None
        if sq:
            norm = sq[use.node.input[0]]
            if use.role is WeightRole.CONV:
                o, i_per_group = arr.shape[:2]
                groups = max(1, norm.size // i_per_group)
                # input channel of weight [o, i]: (o // (O / groups)) * (I / groups) + i
                chan = (np.arange(o)[:, None] // max(1, o // groups)) * i_per_group + np.arange(i_per_group)[None, :]
                scores = scores * np.sqrt(norm[chan]).reshape(o, i_per_group, *([1] * (arr.ndim - 2)))
            else:
                view, layout = _to_2d(w, scores, False)
                scores = _from_2d(wanda_scores(view, norm), layout, arr.shape)
        if nm is not None:
            view, layout = _to_2d(w, scores, True)
            mask = _from_2d(nm_mask(view, *nm), layout, arr.shape)
        elif config.method is PruneMethod.MAGNITUDE:
            mask = magnitude_mask(scores, s)
        else:  # activation-aware scores are compared within each output row (Wanda)
            view, layout = _to_2d(w, scores, False)
            rows = np.stack([magnitude_mask(r, s) for r in view]) if view.size else view.astype(bool)
            mask = _from_2d(rows, layout, arr.shape)
        p.mask = np.ascontiguousarray(mask)
        values = arr * p.mask
        if w.name in grams:
            wv, layout = _to_2d(w, arr, False)
            mv, _ = _to_2d(w, p.mask, False)
            values = _from_2d(obs_update(wv, mv, grams[w.name], damp=config.damp), layout, arr.shape)
        p.values = values.astype(w.array.dtype)
    return plans


def replace_weight(w: WeightInfo, array: np.ndarray) -> None:
    """Overwrite the stored values of ``w`` (initializer or Constant node) in its graph, same name."""
    tensor = numpy_helper.from_array(np.asarray(array, order="C"), w.name)
    if w.source == "initializer":
        for t in w.scope.graph.initializer:
            if t.name == w.name:
                t.CopyFrom(tensor)
                return
    for n in w.scope.graph.node:
        if n.op_type == "Constant" and list(n.output) == [w.name]:
            for a in n.attribute:
                if a.name == "value":
                    a.t.CopyFrom(tensor)
                    return
    raise RuntimeError(f"{w.name}: stored tensor not found")  # pragma: no cover - find_weights found it


class PrunePass(Pass):
    """Apply :func:`plan_prune`'s masks (and updated values) to a model."""

    name = "prune"

    def __init__(self, config: PruneConfig | None = None, data: Dataset | None = None) -> None:
        self.config = config or PruneConfig()
        self.data = data
        self.plans: list[PrunePlan] = []

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Decide on ``model`` and write the pruned weights into it."""
        self.plans = plan_prune(model, self.config, self.data)
        records = []
        method = PruneMethod(self.config.method).value
        for p in self.plans:
            w = p.weight
            ops = ",".join(sorted({u.op_type for u in w.uses}))
            nodes = ",".join(u.node_name for u in w.uses)
            if p.skipped or p.values is None:
                log.info("prune: %s skipped (%s)", w.name, p.skip_reason)
                records.append(WeightRecord(w.name, ops, nodes, w.array.shape, "skipped", p.skip_reason,
                                            w.nbytes, w.nbytes))  # fmt: skip
                continue
            replace_weight(w, p.values)
            action = f"pruned {100 * p.sparsity:.1f}% {self.config.pattern} ({method})"
            records.append(WeightRecord(w.name, ops, nodes, w.array.shape, action, "; ".join(p.notes), w.nbytes,
                                        w.nbytes, "", sqnr_db(w.array, p.values)))  # fmt: skip
        return PassResult(model, any(not p.skipped for p in self.plans), records)
