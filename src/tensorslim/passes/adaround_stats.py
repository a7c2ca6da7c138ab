"""Input Gram matrices ``X^T X`` of Conv/Gemm/MatMul layers, streamed from calibration data, for learned rounding.

A layer's input rows ``X`` are what its weight rows (:func:`~tensorslim.algorithms.adaround.to_rows`) multiply:

* MatMul/Gemm: one row per token, ``x.reshape(-1, K)`` (``x^T`` for Gemm with ``transA=1``);
* Conv (2-D, any ``group``, strides, dilations, pads): one row per output position, the input patch in the
  weight's column order ``(c, i, j)``; with ``g`` groups the patch splits into ``g`` parts of ``K = C / g * kh
  * kw`` columns and each group gets its own ``K x K`` matrix (``[g, K, K]``: a depthwise Conv keeps ``C``
  matrices of ``kh*kw`` squared, not one of ``(C kh kw)^2``).

Conv positions are subsampled to ``max_positions`` per batch *before* the patches are gathered (the same
positions as :func:`~tensorslim.passes.calib_stats.im2col`), so memory is one batch of activations plus
``max_positions x C kh kw`` values plus the matrices. Layers are cut into groups whose matrices fit
``max_bytes`` together, one pass over the data per group, computed lazily in order (like
:class:`~tensorslim.passes.calib_stats.LazyGrams`): with the default budget most models take a single pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from tensorslim.algorithms.adaround import WeightLayout
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.calib_stats import GRAM_BUDGET_BYTES, ConvGeometry, GroupedLazy, conv_windows, run_with_outputs

__all__ = ["InputGram", "LayerInputSpec", "input_grams", "layer_input_spec", "patch_rows"]


@dataclass(frozen=True)
class LayerInputSpec:
    """How to read one layer's input rows and lay out its weight.

    Attributes:
        weight: the weight's tensor name (``node.input[1]``).
        activation: the layer's input tensor.
        layout: the weight's layout (see :class:`~tensorslim.algorithms.adaround.WeightLayout`).
        k: columns of one group's rows.
        groups: Conv groups (1 for Gemm/MatMul).
        conv: the Conv geometry, ``None`` for Gemm/MatMul.
        trans_a: Gemm reads ``x^T``.
    """

    weight: str
    activation: str
    layout: WeightLayout
    k: int
    groups: int = 1
    conv: ConvGeometry | None = None
    trans_a: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of this layer's float64 ``[groups, k, k]`` matrices."""
        return 8 * self.groups * self.k * self.k


@dataclass(frozen=True)
class InputGram:
    """``sum X^T X`` over the calibration rows of one layer (``[groups, K, K]``) and the number of rows."""

    gram: np.ndarray
    rows: int


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def layer_input_spec(node: onnx.NodeProto, weight: np.ndarray) -> LayerInputSpec:
    """The input rows and weight layout of ``node`` whose ``input[1]`` is ``weight``.

    Raises:
        ValueError: a layer learned rounding does not handle, with the reason (not Conv/Gemm/MatMul, a
            weight that is not ``input[1]``'s 2-D matrix or 4-D Conv kernel, ``auto_pad``, Gemm with
            ``alpha != 1``).
    """
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        raise ValueError(f"{op} is not a Conv, Gemm or MatMul with a weight input")
    a = _attrs(node)
    name, x = node.input[1], node.input[0]
    if op == "Conv":
        if weight.ndim != 4:
            raise ValueError(f"only 2-D Conv is handled (weight of rank {weight.ndim})")
        groups = int(a.get("group", 1))  # type: ignore[call-overload]
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"group {groups} does not divide the {weight.shape[0]} output channels")
        geo = ConvGeometry.from_node(node, weight.shape)  # raises ValueError on auto_pad
        return LayerInputSpec(name, x, WeightLayout.CONV, int(np.prod(weight.shape[1:])), groups, geo)
    if weight.ndim != 2:
        raise ValueError(f"{op} weight of rank {weight.ndim} (a matrix is handled)")
    if op == "Gemm":
        if float(a.get("alpha", 1.0)) != 1.0:  # type: ignore[arg-type]
            raise ValueError("Gemm with alpha != 1")
        trans_b = bool(a.get("transB", 0))
        layout = WeightLayout.OUT_IN if trans_b else WeightLayout.IN_OUT
        k = weight.shape[1] if trans_b else weight.shape[0]
        return LayerInputSpec(name, x, layout, int(k), trans_a=bool(a.get("transA", 0)))
    return LayerInputSpec(name, x, WeightLayout.IN_OUT, int(weight.shape[0]))


def patch_rows(x: np.ndarray, geo: ConvGeometry, *, max_positions: int | None = None, seed: int = 0) -> np.ndarray:
    """Patches of ``x`` ``[N, C, H, W]`` as rows ``[positions, C kh kw]`` (float64), the same values as
    :func:`~tensorslim.passes.calib_stats.im2col`, but only the sampled positions are ever copied."""
    n, c = x.shape[:2]
    kh, kw = geo.kernel
    win = conv_windows(x, geo)
    oh, ow = win.shape[2], win.shape[3]
    total = n * oh * ow
    if max_positions is not None and total > max_positions:
        idx = np.sort(np.random.default_rng(seed).choice(total, max_positions, replace=False))
    else:
        idx = np.arange(total)
    ni, rest = np.divmod(idx, oh * ow)
    oi, wi = np.divmod(rest, ow)
    rows = win[ni, :, oi, wi]  # [P, C, kh, kw]: advanced indices first, then the sliced axes
    return np.ascontiguousarray(rows.reshape(idx.size, c * kh * kw), np.float64)


def _rows(spec: LayerInputSpec, x: np.ndarray, max_positions: int) -> np.ndarray:
    """One batch's input rows ``[P, groups, K]``."""
    if spec.conv is not None:
        a = patch_rows(x, spec.conv, max_positions=max_positions)
        return a.reshape(a.shape[0], spec.groups, spec.k)
    arr = np.asarray(x, np.float64)
    if spec.trans_a:
        arr = arr.T
    return arr.reshape(-1, 1, spec.k)


def _budget_groups(specs: Mapping[str, LayerInputSpec], max_bytes: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    used = 0
    for key, spec in specs.items():
        if groups[-1] and used + spec.nbytes > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += spec.nbytes
    return [g for g in groups if g]


def _grams(
    model: onnx.ModelProto, specs: Mapping[str, list[LayerInputSpec]], data: Dataset, batch_size: int,
    max_positions: int,
) -> dict[str, InputGram]:  # fmt: skip
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    names = [s.activation for group in specs.values() for s in group]
    for batch in run_with_outputs(model, names, data, batch_size=batch_size):
        for key, group in specs.items():
            for spec in group:
                a = _rows(spec, batch[spec.activation], max_positions)
                g = np.matmul(a.transpose(1, 2, 0), a.transpose(1, 0, 2))  # [groups, K, K]
                sums[key] = sums[key] + g if key in sums else g
                counts[key] = counts.get(key, 0) + a.shape[0]
    return {k: InputGram(sums[k], counts[k]) for k in sums}


def input_grams(
    model: onnx.ModelProto,
    data: Dataset,
    layers: Sequence[tuple[onnx.NodeProto, np.ndarray]],
    *,
    batch_size: int = 8,
    max_positions: int = 4096,
    max_bytes: int = GRAM_BUDGET_BYTES,
) -> Mapping[str, InputGram]:
    """Per weight (``node.input[1]``), ``X^T X`` of its layer's input rows over ``data``, and the row count.

    ``layers`` are main-graph nodes of ``model`` with their weights. A weight used by several nodes (same
    ``K`` and groups) sums their statistics: its rounding then minimises the sum of their output errors.
    The mapping is lazy (see the module docstring): read it in the order of ``layers`` for one pass per group.

    Raises:
        ValueError: a layer :func:`layer_input_spec` rejects, or a shared weight whose uses disagree.
    """
    specs: dict[str, list[LayerInputSpec]] = {}
    for node, w in layers:
        spec = layer_input_spec(node, np.asarray(w))
        first = specs.setdefault(spec.weight, [spec])[0]
        if first is not spec:
            if (first.k, first.groups) != (spec.k, spec.groups):
                raise ValueError(f"{spec.weight}: its uses read inputs of different shapes")
            specs[spec.weight].append(spec)
    groups = _budget_groups({k: v[0] for k, v in specs.items()}, max_bytes)
    return GroupedLazy(groups, lambda keys: _grams(model, {k: specs[k] for k in keys}, data, batch_size, max_positions))
