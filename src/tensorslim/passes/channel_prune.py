"""Channel (filter) pruning that shrinks the graph: fewer output channels, and fewer inputs downstream.

Decide, then apply. :func:`plan_channel_prune` finds every *channel group*: a Conv/Gemm/MatMul producer
whose output channels flow, through channel-preserving ops only, into consumers that reduce over them.
Each group is plain data (:class:`ChannelGroup`): the kept channel indices, their scores, the nodes on the
path and the consumers; a group that cannot be pruned safely carries the reason. The rewrite::

    Conv_a(W_a[C, ...]) -> Relu -> MaxPool -> Conv_b(W_b[O, C, ...])
        ->  Conv_a(W_a[K, ...]) -> Relu -> MaxPool -> Conv_b(W_b'[O, K, ...])     (K kept of C channels)

Paths may run through unary ops (Relu, Clip, pooling...), BatchNormalization, elementwise ops with a
constant per-channel operand, depthwise convolutions (pruned alongside) and ``GlobalAveragePool ->
Flatten``. Residual ``Add``/``Concat`` with a non-constant operand, graph outputs, shared weights and
unknown ops stop a group (it is skipped with the reason), so the model stays valid.

With calibration data, channels are ranked by ``||X_c|| * ||W_b[:, c]||`` (their contribution to the
consumers) and each consumer is refitted by least squares, layer after layer, so that its output on the
pruned model's activations matches the original model's output (:func:`lstsq_refit`, bias included).
Without data, channels are ranked by the L1 norm of their filters and consumers are sliced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim._regex import name_matcher
from tensorslim.algorithms.pruning import lstsq_refit
from tensorslim.backends.onnx.graph import GraphIndex, lift_constants
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError, InputError, UnsupportedModelError
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import ConvGeometry, LayerInput, feature_sq_sums, run_with_outputs

__all__ = ["ChannelGroup", "ChannelPruneConfig", "ChannelPrunePass", "plan_channel_prune"]

log = logging.getLogger(__name__)

_UNARY = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
    "Gelu", "Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Clip",
}  # fmt: skip
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


@dataclass(frozen=True)
class ChannelPruneConfig:
    """Configuration of channel pruning.

    Attributes:
        ratio: fraction of each prunable layer's output channels removed, in [0, 1).
        exclude: regular expressions; a group whose producer node name matches stays whole.
        min_channels: a layer keeps at least this many channels.
        round_to: kept channel counts are rounded up to a multiple of this (vector-friendly sizes).
        refit: with calibration data, refit each consumer by least squares (recommended).
        damp: damping of the least-squares refit, a fraction of the mean Gram diagonal.
        max_positions: im2col rows per batch used for Conv refits.
    """

    ratio: float = 0.5
    exclude: tuple[str, ...] = ()
    min_channels: int = 8
    round_to: int = 8
    refit: bool = True
    damp: float = 1e-3
    max_positions: int = 2048

    def __post_init__(self) -> None:
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 <= r < 1.0:
            raise ConfigError(f"ratio: must be in [0, 1), got {r!r}")
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        for fname in ("min_channels", "round_to", "max_positions"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{fname}: must be a positive integer, got {v!r}")
        if not self.damp > 0:
            raise ConfigError(f"damp: must be positive, got {self.damp!r}")


@dataclass
class ChannelGroup:
    """One producer, the channel-preserving path after it and the consumers that reduce over its channels.

    Attributes:
        producer: the Conv/Gemm/MatMul node whose output channels are pruned.
        channels: its number of output channels.
        path: ``(node, kind)`` for every node between producer and consumers (``unary``, ``bn``,
            ``affine``, ``depthwise``, ``flatten``).
        consumers: ``(node, kind)`` with kind ``conv``, ``gemm`` or ``matmul``.
        keep: indices of the kept channels (ascending), once decided.
        scores: importance of each channel.
        skip_reason: why the group is left whole.
    """

    producer: onnx.NodeProto
    channels: int
    path: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)
    consumers: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)
    keep: np.ndarray | None = None
    scores: np.ndarray | None = None
    skip_reason: str = ""

    @property
    def name(self) -> str:
        """The producer's name."""
        return self.producer.name or self.producer.output[0]

    @property
    def skipped(self) -> bool:
        """Whether the group is left whole."""
        return self.keep is None


class _Graph(GraphIndex):
    """The main graph's index, with the node order and initializer reads and writes the planner needs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model.graph)
        self.model = model
        self.order = {id(n): i for i, n in enumerate(model.graph.node)}

    def const(self, name: str) -> np.ndarray | None:
        t = self.initializers.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def set(self, name: str, array: np.ndarray) -> None:
        self.initializers[name].CopyFrom(numpy_helper.from_array(np.asarray(array, order="C"), name))


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _producer_info(g: _Graph, node: onnx.NodeProto) -> tuple[int, int, int | None] | None:
    """``(channels, weight axis, activation rank)`` of a prunable producer, or ``None``."""
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    w = g.const(node.input[1])
    if w is None or w.dtype != np.float32:
        return None
    if node.op_type == "Conv":
        if int(_attrs(node).get("group", 1)) != 1 or w.ndim < 3:
            return None
        return w.shape[0], 0, w.ndim
    if node.op_type == "Gemm":
        a = _attrs(node)
        if w.ndim != 2 or int(a.get("transA", 0)):
            return None
        axis = 0 if int(a.get("transB", 0)) else 1
        return w.shape[axis], axis, 2
    return (w.shape[1], 1, None) if w.ndim == 2 else None


def _trace(g: _Graph, group: ChannelGroup, rank: int | None) -> str:
    """Follow the producer's output to its consumers; the reason the group is unsafe, or ``""``."""
    c = group.channels
    stack: list[tuple[str, int | None, bool]] = [(group.producer.output[0], rank, False)]
    seen: set[str] = set()
    while stack:
        name, r, pooled = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in g.outputs:
            return f"channels reach the graph output {name!r}"
        for n in g.consumers.get(name, []):
            op = n.op_type
            axis_last = r is None or r == 2
            if op in _UNARY and n.input[0] == name and all(g.const(i) is not None for i in n.input[1:] if i):
                if op == "PRelu":
                    return "PRelu slopes are not sliced"
                group.path.append((n, "unary"))
                stack.append((n.output[0], r, pooled or op.startswith("Global")))
            elif (
                op == "BatchNormalization" and n.input[0] == name and all(g.const(i) is not None for i in n.input[1:5])
            ):
                group.path.append((n, "bn"))
                stack.append((n.output[0], r, pooled))
            elif op in _ELEMENTWISE:
                other = [i for i in n.input if i != name]
                arr = g.const(other[0]) if len(other) == 1 else None
                if arr is None:
                    return f"channels meet another activation in {op} {n.name!r} (residual or merge)"
                ax = (arr.ndim - 1) if axis_last else (arr.ndim - (r or 0) + 1)
                if arr.ndim and 0 <= ax < arr.ndim and arr.shape[ax] not in (1, c):
                    return f"{op} {n.name!r} has a constant that does not broadcast per channel"
                if not g.single_use(other[0]) and 0 <= ax < arr.ndim and arr.shape[ax] == c:
                    return f"constant {other[0]!r} of {n.name!r} is shared"
                sliced = arr.ndim > 0 and 0 <= ax < arr.ndim and arr.shape[ax] == c
                group.path.append((n, f"affine@{ax}" if sliced else "affine"))
                stack.append((n.output[0], r, pooled))
            elif op == "Flatten" and pooled and int(_attrs(n).get("axis", 1)) == 1:
                group.path.append((n, "flatten"))
                stack.append((n.output[0], 2, pooled))
            elif op == "Conv" and n.input[0] == name and r is not None and r > 2:
                w = g.const(n.input[1])
                grp = int(_attrs(n).get("group", 1))
                if w is None or not g.single_use(n.input[1]):
                    return f"Conv {n.name!r} has a non-constant or shared weight"
                if grp == 1:
                    group.consumers.append((n, "conv"))
                elif grp == c and w.shape[0] == c and w.shape[1] == 1:
                    group.path.append((n, "depthwise"))
                    stack.append((n.output[0], r, pooled))
                else:
                    return f"grouped Conv {n.name!r} (group {grp}) cannot follow the pruned channels"
            elif op == "Gemm" and n.input[0] == name and r == 2 and not int(_attrs(n).get("transA", 0)):
                if g.const(n.input[1]) is None or not g.single_use(n.input[1]):
                    return f"Gemm {n.name!r} has a non-constant or shared weight"
                group.consumers.append((n, "gemm"))
            elif op == "MatMul" and n.input[0] == name and axis_last and n.input[1] != name:
                w = g.const(n.input[1])
                if w is None or w.ndim != 2 or not g.single_use(n.input[1]):
                    return f"MatMul {n.name!r} has a non-constant, batched or shared weight"
                group.consumers.append((n, "matmul"))
            else:
                return f"channels feed {op} {n.name!r}, which tensorslim does not prune through"
    if not group.consumers:
        return "no consumer reduces over the channels"
    return ""


def _find_groups(model: onnx.ModelProto, cfg: ChannelPruneConfig) -> list[ChannelGroup]:
    g = _Graph(model)
    excluded = name_matcher(cfg.exclude)
    groups = []
    for node in model.graph.node:
        info = _producer_info(g, node)
        if info is None:
            continue
        channels, _, rank = info
        grp = ChannelGroup(node, channels)
        groups.append(grp)
        if excluded(grp.name):
            grp.skip_reason = "matches an exclude pattern"
        elif not g.single_use(node.input[1]):
            grp.skip_reason = "its weight is shared"
        else:
            grp.skip_reason = _trace(g, grp, rank)
    return groups


def _n_keep(c: int, cfg: ChannelPruneConfig) -> int:
    k = max(cfg.min_channels, c - round(cfg.ratio * c))
    k = -(-k // cfg.round_to) * cfg.round_to
    return min(c, k)


def _consumer_axis(node: onnx.NodeProto, kind: str) -> int:
    if kind == "conv":
        return 1
    if kind == "gemm":
        return 1 if int(_attrs(node).get("transB", 0)) else 0
    return 0


def plan_channel_prune(
    model: onnx.ModelProto, config: ChannelPruneConfig, data: Dataset | None = None
) -> list[ChannelGroup]:
    """Find the channel groups of ``model`` and decide which channels each keeps.

    Raises:
        UnsupportedModelError: no group can be pruned.
    """
    groups = _find_groups(model, config)
    active = [grp for grp in groups if not grp.skip_reason]
    if not active:
        reasons = sorted({grp.skip_reason for grp in groups})
        detail = "; ".join(reasons[:3]) or "the model has no Conv/Gemm/MatMul layer with a constant weight"
        raise UnsupportedModelError(f"no layer's channels can be pruned ({detail})")
    g = _Graph(model)
    sq: dict[str, np.ndarray] = {}
    if data is not None:
        acts = {n.input[0]: (1 if kind == "conv" else -1) for grp in active for n, kind in grp.consumers}
        sq = feature_sq_sums(model, acts, data)
    for grp in active:
        w = g.const(grp.producer.input[1])
        assert w is not None
        info = _producer_info(g, grp.producer)
        assert info is not None
        axis = info[1]
        if sq:
            score = np.zeros(grp.channels)
            for n, kind in grp.consumers:
                wc = g.const(n.input[1])
                assert wc is not None
                cax = _consumer_axis(n, kind)
                wn = np.sqrt(np.sum(np.moveaxis(wc.astype(np.float64), cax, 0).reshape(grp.channels, -1) ** 2, 1))
                score += np.sqrt(sq[n.input[0]]) * wn
        else:
            score = np.sum(np.abs(np.moveaxis(w.astype(np.float64), axis, 0).reshape(grp.channels, -1)), axis=1)
        grp.scores = score
        k = _n_keep(grp.channels, config)
        grp.keep = np.sort(np.argsort(-score, kind="stable")[:k])
    return groups


def _slice(g: _Graph, name: str, keep: np.ndarray, axis: int, channels: int) -> None:
    arr = g.const(name)
    if arr is None or arr.ndim == 0 or arr.shape[axis] != channels:
        return  # a scalar or a broadcast dimension of 1
    g.set(name, np.take(arr, keep, axis=axis))


def _apply_group(g: _Graph, grp: ChannelGroup) -> None:
    keep, c = grp.keep, grp.channels
    assert keep is not None
    p = grp.producer
    info = _producer_info(g, p)
    assert info is not None
    _slice(g, p.input[1], keep, info[1], c)
    if len(p.input) > 2 and p.input[2]:
        b = g.const(p.input[2])
        if b is not None and b.ndim:
            _slice(g, p.input[2], keep, b.ndim - 1, c)
    for n, kind in grp.path:
        if kind == "bn":
            for i in n.input[1:5]:
                _slice(g, i, keep, 0, c)
        elif kind.startswith("affine@"):
            const = next(i for i in n.input if g.const(i) is not None)
            _slice(g, const, keep, int(kind.split("@")[1]), c)
        elif kind == "depthwise":
            _slice(g, n.input[1], keep, 0, c)
            if len(n.input) > 2 and n.input[2]:
                _slice(g, n.input[2], keep, 0, c)
            for a in n.attribute:
                if a.name == "group":
                    a.i = len(keep)
    for n, kind in grp.consumers:
        _slice(g, n.input[1], keep, _consumer_axis(n, kind), c)
    touched = {o for n, _ in grp.path for o in n.output} | set(p.output)
    keep_vi = [v for v in g.model.graph.value_info if v.name not in touched]
    del g.model.graph.value_info[:]
    g.model.graph.value_info.extend(keep_vi)


def _refit(
    original: onnx.ModelProto, current: onnx.ModelProto, grp: ChannelGroup, data: Dataset, cfg: ChannelPruneConfig
) -> list[str]:
    """Least-squares refit of each consumer of ``grp`` in ``current`` to the original consumer outputs."""
    g = _Graph(current)
    notes = []
    layers: dict[str, tuple[LayerInput, onnx.NodeProto, str, bool]] = {}
    for n, kind in grp.consumers:
        w = g.const(n.input[1])
        assert w is not None
        if kind == "conv" and (w.ndim != 4 or int(_attrs(n).get("group", 1)) != 1):
            notes.append(f"{n.name}: not refitted (only 2-D convolutions are)")
            continue
        if kind == "gemm":
            a = _attrs(n)
            if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
                notes.append(f"{n.name}: not refitted (alpha/beta)")
                continue
        bias = len(n.input) > 2 and bool(n.input[2]) and kind != "matmul"
        geo = ConvGeometry.from_node(n, w.shape) if kind == "conv" else None
        layers[n.name or n.output[0]] = (LayerInput(n.input[0], geo), n, kind, bias)
    if not layers:
        return notes
    grams: dict[str, np.ndarray] = {}
    cross: dict[str, np.ndarray] = {}
    cur_names = [li.activation for li, *_ in layers.values()]
    ref_names = [n.output[0] for _, n, _, _ in layers.values()]
    for cur_b, ref_b in zip(run_with_outputs(current, cur_names, data), run_with_outputs(original, ref_names, data),
                        strict=True):  # fmt: skip
        for key, (li, n, kind, bias) in layers.items():
            rows_a = li.rows(cur_b[li.activation], max_positions=cfg.max_positions)
            y: np.ndarray = ref_b[n.output[0]]
            if kind == "conv":
                y = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
                if y.shape[0] > cfg.max_positions:  # the same rows im2col sampled
                    idx = np.sort(np.random.default_rng(0).choice(y.shape[0], cfg.max_positions, replace=False))
                    y = y[idx]
            else:
                y = y.reshape(-1, y.shape[-1])
            if bias:
                rows_a = np.concatenate([rows_a, np.ones((rows_a.shape[0], 1))], axis=1)
            yy = np.asarray(y, np.float64)
            grams[key] = grams[key] + rows_a.T @ rows_a if key in grams else rows_a.T @ rows_a
            cross[key] = cross[key] + rows_a.T @ yy if key in cross else rows_a.T @ yy
    for key, (_, n, kind, bias) in layers.items():
        sol = lstsq_refit(grams[key], cross[key], damp=cfg.damp, keep_bias_column=bias)
        w = g.const(n.input[1])
        assert w is not None
        wt, b = (sol[:-1], sol[-1]) if bias else (sol, None)
        if kind == "conv":
            new_w = wt.T.reshape(w.shape)
        elif kind == "gemm":
            new_w = wt.T if int(_attrs(n).get("transB", 0)) else wt
        else:
            new_w = wt
        g.set(n.input[1], new_w.astype(w.dtype))
        if b is not None:
            old_b = g.const(n.input[2])
            assert old_b is not None
            g.set(n.input[2], np.broadcast_to(b, old_b.shape).astype(old_b.dtype))
    return notes


class ChannelPrunePass(Pass):
    """Remove output channels of Conv/Gemm/MatMul layers and the matching inputs downstream."""

    name = "channel_prune"

    def __init__(self, config: ChannelPruneConfig | None = None, data: Dataset | None = None) -> None:
        self.config = config or ChannelPruneConfig()
        self.data = data
        self.groups: list[ChannelGroup] = []

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Plan on ``model``, then prune group by group (refitting consumers when data was given)."""
        lift_constants(model)  # weights written as Constant nodes prune like initializers
        original = onnx.ModelProto()
        original.CopyFrom(model)
        self.groups = plan_channel_prune(model, self.config, self.data)
        g = _Graph(model)
        records = []
        for grp in sorted(self.groups, key=lambda x: g.order[id(x.producer)]):
            w_name = grp.producer.input[1]
            before = int(g.const(w_name).nbytes)  # type: ignore[union-attr]
            shape = tuple(g.const(w_name).shape)  # type: ignore[union-attr]
            if grp.skipped:
                log.info("channel prune: %s skipped (%s)", grp.name, grp.skip_reason)
                records.append(WeightRecord(w_name, grp.producer.op_type, grp.name, shape, "skipped", grp.skip_reason,
                                            before, before))  # fmt: skip
                continue
            _apply_group(g, grp)
            notes = []
            if self.data is not None and self.config.refit:
                try:
                    notes = _refit(original, model, grp, self.data, self.config)
                except ValueError as e:
                    raise InputError(f"{grp.name}: refit failed ({e})") from e
                g = _Graph(model)
            after = int(g.const(w_name).nbytes)  # type: ignore[union-attr]
            consumers = ", ".join(n.name for n, _ in grp.consumers)
            kept = len(grp.keep) if grp.keep is not None else grp.channels
            records.append(WeightRecord(w_name, grp.producer.op_type, grp.name, shape,
                                        f"channels {grp.channels} -> {kept}",
                                        "; ".join([f"consumers: {consumers}", *notes]), before, after))  # fmt: skip
        return PassResult(model, any(not grp.skipped for grp in self.groups), records)
