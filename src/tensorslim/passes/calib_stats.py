"""Activation statistics for data-aware pruning: run ONNX Runtime with intermediate tensors exposed.

Statistics are accumulated batch by batch (memory bounded by one batch plus the statistics):

* :func:`feature_sq_sums`: per input feature, the sum of squared activations (Wanda's ``||X_j||^2``);
* :func:`channel_stats`: per channel of each activation, the mean and the largest magnitude (bias
  correction's ``E[x]``, SmoothQuant's ``max |X_j|``);
* :func:`gram_matrices`: ``A^T A`` (and optionally ``A^T B``) of a layer's input rows ``A``, where a row is
  a token (MatMul/Gemm) or an im2col patch (Conv, positions subsampled).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import psutil

from tensorslim.data import Dataset
from tensorslim.errors import InputError
from tensorslim.runtime.ort import thread_budget

V = TypeVar("V")

__all__ = [
    "GRAM_BUDGET_BYTES", "ConvGeometry", "GroupedLazy", "LayerInput", "LazyGrams", "calibration_session",
    "channel_stats", "conv_windows", "feature_sq_sums", "gram_groups", "gram_matrices", "im2col", "mean_sample_sqnr",
    "require_data", "run_with_outputs",
]  # fmt: skip


def require_data(data: Dataset | None, who: str) -> Dataset:
    """``data``, or the user's error that ``who`` (a pass) needs calibration data."""
    if data is None:
        raise InputError(f"{who} needs calibration data: pass --data CALIB.npz")
    return data


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, strides, pads and dilations of a 2-D convolution (group 1)."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)

    @classmethod
    def from_node(cls, node: onnx.NodeProto, weight_shape: Sequence[int]) -> ConvGeometry:
        """Geometry of a Conv node (``auto_pad`` other than NOTSET is not supported)."""
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        auto = a.get("auto_pad", b"NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else str(auto)) not in ("NOTSET", ""):
            raise ValueError(f"{node.name}: auto_pad is not supported for calibration statistics")
        kh, kw = int(weight_shape[2]), int(weight_shape[3])
        return cls(
            (kh, kw),
            tuple(a.get("strides", (1, 1))),
            tuple(a.get("pads", (0, 0, 0, 0))),
            tuple(a.get("dilations", (1, 1))),
        )


def conv_windows(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The receptive fields of a Conv over ``x`` ``[N, C, H, W]``: a view ``[N, C, oh, ow, kh, kw]`` of the padded
    input (strides and dilations applied)."""
    t, lft, b, r = geo.pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (lft, r)))
    kh, kw = geo.kernel
    dh, dw = geo.dilations
    sh, sw = geo.strides
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    return np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]


def im2col(x: np.ndarray, geo: ConvGeometry, *, max_positions: int | None = None, seed: int = 0) -> np.ndarray:
    """Patches of an ``N x C x H x W`` input as rows ``(n, oh, ow) x (C * kh * kw)`` (weight column order)."""
    n, c, _, _ = x.shape
    kh, kw = geo.kernel
    win = conv_windows(x, geo)
    oh, ow = win.shape[2], win.shape[3]
    rows = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    if max_positions is not None and rows.shape[0] > max_positions:
        idx = np.sort(np.random.default_rng(seed).choice(rows.shape[0], max_positions, replace=False))
        rows = rows[idx]
    return np.ascontiguousarray(rows, np.float64)


def _cores() -> int:
    """Physical cores this process may run on (ONNX Runtime's default thread count)."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else physical
    return max(1, min(physical, allowed))


def calibration_session(
    model: onnx.ModelProto, outputs: Sequence[str], *, spare_core: bool = False
) -> ort.InferenceSession:
    """An unoptimized CPU session of ``model`` (edited in place: ``outputs`` become graph outputs), so that every
    tensor keeps the value the graph defines (Q/DQ pairs run as written, nothing fused away).

    ``spare_core`` leaves the calling thread a core: one ONNX Runtime thread less, and idle ones do not spin.
    """
    present = {o.name for o in model.graph.output}
    graph_inputs = {i.name for i in model.graph.input}
    for name in dict.fromkeys(outputs):
        if name not in present and name not in graph_inputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    cores = thread_budget() or _cores()
    so.intra_op_num_threads = cores - 1 if spare_core and cores > 1 else cores
    if spare_core:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_with_outputs(
    model: onnx.ModelProto, names: Sequence[str], data: Dataset, *, batch_size: int = 32, prefetch: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """Run ``model`` on ``data`` batch by batch and yield the values of the tensors ``names``.

    With ``prefetch``, the next batch runs in a background thread (ONNX Runtime releases the GIL, and gets one
    core less than its default) while the caller works on the current one; as without it, two batches of
    outputs are alive at a time.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph_inputs = {i.name for i in m.graph.input}
    prefetch = prefetch and (thread_budget() or _cores()) > 1  # with one core, a second thread takes another
    sess = calibration_session(m, names, spare_core=prefetch)
    wanted = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    feed_names = {i.name for i in sess.get_inputs()}
    fixed = {i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
    if fixed == {1}:  # a model exported with a fixed batch of 1 takes one sample a call
        batch_size = 1

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        run_feeds = {k: v for k, v in feeds.items() if k in feed_names}
        outs = sess.run(wanted, run_feeds) if wanted else []
        got = {k: np.asarray(v) for k, v in zip(wanted, outs, strict=True)}
        got.update({k: np.asarray(run_feeds[k]) for k in names if k in graph_inputs})
        return got

    batches = (feeds for feeds, _ in data.batches(batch_size))
    if not prefetch:
        yield from map(run, batches)
        return
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for feeds in batches:
            if pending is None:
                pending = pool.submit(run, feeds)
                continue
            done = pending.result()
            pending = pool.submit(run, feeds)
            yield done
            del done
        if pending is not None:
            yield pending.result()


@dataclass(frozen=True)
class LayerInput:
    """How to read the input rows of one layer from its input activation.

    Attributes:
        activation: the name of the layer's input tensor.
        conv: the convolution geometry, for Conv layers; ``None`` for MatMul/Gemm (features on the last axis).
    """

    activation: str
    conv: ConvGeometry | None = None

    def rows(self, x: np.ndarray, *, max_positions: int | None = None) -> np.ndarray:
        """The layer's input rows from one batch of its input activation."""
        if self.conv is not None:
            return im2col(x, self.conv, max_positions=max_positions)
        return np.asarray(x, np.float64).reshape(-1, x.shape[-1])


def feature_sq_sums(
    model: onnx.ModelProto, activations: dict[str, int], data: Dataset, *, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Per feature of each activation (``name -> feature axis``), the sum of squares over the data."""
    sums: dict[str, np.ndarray] = {}
    for batch in run_with_outputs(model, list(activations), data, batch_size=batch_size):
        for name, axis in activations.items():
            x = np.asarray(batch[name], np.float64)
            ax = axis % x.ndim
            s = np.sum(x * x, axis=tuple(i for i in range(x.ndim) if i != ax))
            sums[name] = sums[name] + s if name in sums else s
    return sums


def _channel_views(
    model: onnx.ModelProto, activations: dict[str, int], data: Dataset, batch_size: int
) -> Iterator[tuple[str, np.ndarray, int, tuple[int, ...]]]:
    """Each batch's value of each activation (``name -> channel axis``) as float64 with non-finite values zeroed,
    with its channel axis and the other axes: ``(name, x, axis, rest)``."""
    for batch in run_with_outputs(model, list(activations), data, batch_size=batch_size):
        for name, axis in activations.items():
            x = np.asarray(batch[name], np.float64)
            x = np.where(np.isfinite(x), x, 0.0)
            ax = axis % x.ndim
            yield name, x, ax, tuple(i for i in range(x.ndim) if i != ax)


def channel_stats(
    model: onnx.ModelProto, activations: dict[str, int], data: Dataset, *, batch_size: int = 8
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per channel of each activation (``name -> channel axis``): ``(mean, max |x|)`` over the data.

    Streamed batch by batch: memory is one batch plus two vectors per activation. Non-finite values count
    as zero.
    """
    sums: dict[str, np.ndarray] = {}
    peaks: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for name, x, ax, rest in _channel_views(model, activations, data, batch_size):
        s, p = np.sum(x, axis=rest), np.max(np.abs(x), axis=rest)
        sums[name] = sums[name] + s if name in sums else s
        peaks[name] = np.maximum(peaks[name], p) if name in peaks else p
        counts[name] = counts.get(name, 0) + x.size // x.shape[ax]
    return {n: (sums[n] / max(counts[n], 1), peaks[n]) for n in sums}


def channel_extents(
    model: onnx.ModelProto, activations: dict[str, int], data: Dataset, *, batch_size: int = 8
) -> dict[str, np.ndarray]:
    """Per channel of each activation (``name -> channel axis``): the width of the smallest range holding its
    values and 0 (``max(x, 0) - min(x, 0)`` over the data: what one uint8 scale must cover for that channel).

    Streamed batch by batch like :func:`channel_stats`. Non-finite values count as zero.
    """
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for name, x, _, rest in _channel_views(model, activations, data, batch_size):
        a, b = np.minimum(np.min(x, axis=rest), 0.0), np.maximum(np.max(x, axis=rest), 0.0)
        lo[name] = np.minimum(lo[name], a) if name in lo else a
        hi[name] = np.maximum(hi[name], b) if name in hi else b
    return {n: hi[n] - lo[n] for n in hi}


GRAM_BUDGET_BYTES = 1 << 30  # float64 K x K matrices accumulated together in one pass over the data


def gram_groups(sizes: dict[str, int], max_bytes: int = GRAM_BUDGET_BYTES) -> list[list[str]]:
    """Layers (by input width ``K``) in order, cut into groups whose ``K x K`` float64 matrices fit ``max_bytes``
    together; a layer larger than the budget gets a group of its own."""
    groups: list[list[str]] = [[]]
    used = 0
    for key, k in sizes.items():
        need = 8 * int(k) * int(k)
        if groups[-1] and used + need > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += need
    return [g for g in groups if g]


def gram_matrices(
    model: onnx.ModelProto,
    layers: dict[str, LayerInput],
    data: Dataset,
    *,
    batch_size: int = 32,
    max_positions: int = 4096,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``A^T A`` of each layer's input rows, keyed like ``layers``; ``transform`` may edit rows first."""
    grams: dict[str, np.ndarray] = {}
    names = [li.activation for li in layers.values()]
    for batch in run_with_outputs(model, names, data, batch_size=batch_size):
        for key, li in layers.items():
            a = li.rows(batch[li.activation], max_positions=max_positions)
            if transform is not None:
                a = transform(key, a)
            g = a.T @ a
            grams[key] = grams[key] + g if key in grams else g
    return grams


class GroupedLazy(Mapping[str, V]):
    """A mapping computed one group of keys at a time, on first access: ``compute(keys)`` gives the group's values.

    Only the last group read is held (it is dropped before the next is computed), so memory is bounded by the
    largest group; reading out of group order recomputes groups, with the same values.
    """

    def __init__(self, groups: list[list[str]], compute: Callable[[list[str]], dict[str, V]]) -> None:
        self.groups = groups
        self._compute = compute
        self._where = {k: i for i, g in enumerate(groups) for k in g}
        self._current = -1
        self._cache: dict[str, V] = {}

    def __getitem__(self, key: str) -> V:
        i = self._where[key]
        if i != self._current:
            self._cache = {}
            self._cache = self._compute(self.groups[i])
            self._current = i
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class LazyGrams(GroupedLazy[np.ndarray]):
    """:func:`gram_matrices` one group of layers at a time (see :func:`gram_groups`), on first access.

    Reading the layers in the order of ``sizes`` holds at most one group's matrices (the previous group is
    dropped before the next is computed): memory bounded by ``max_bytes`` whatever the number of layers, for
    one pass over the data per group. Reading out of order recomputes groups; the values are the same.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        layers: dict[str, LayerInput],
        data: Dataset,
        sizes: dict[str, int],
        *,
        batch_size: int = 8,
        max_positions: int = 4096,
        max_bytes: int = GRAM_BUDGET_BYTES,
    ) -> None:
        def compute(keys: list[str]) -> dict[str, np.ndarray]:
            return gram_matrices(model, {k: layers[k] for k in keys}, data, batch_size=batch_size,
                                 max_positions=max_positions)  # fmt: skip

        super().__init__(gram_groups({k: sizes[k] for k in layers}, max_bytes), compute)


def mean_sample_sqnr(model: onnx.ModelProto, trial: onnx.ModelProto, data: Dataset, cap: float = 100.0) -> float:
    """Mean over samples of the worst float output SQNR (dB, at most ``cap``), ``trial`` against ``model``: per
    sample, so that a few high-energy samples do not decide (the output checks of static and int4 use it)."""
    names = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    scores = []
    for ref, got in zip(run_with_outputs(model, names, data, batch_size=1),
                        run_with_outputs(trial, names, data, batch_size=1), strict=True):  # fmt: skip
        worst = cap
        for t in names:
            a, b = np.asarray(ref[t], np.float64), np.asarray(got[t], np.float64)
            signal, noise = float(np.sum(a * a)), float(np.sum((a - b) ** 2))
            if signal > 0:
                worst = min(worst, cap if noise == 0 else 10 * float(np.log10(signal / noise)))
        scores.append(worst)
    return float(np.mean(scores)) if scores else cap
