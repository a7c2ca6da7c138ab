"""Bias correction for static quantization: decide ``E[x]`` per input channel, then fold the expected
output error of each layer's int8 weights into its bias.

:func:`input_means` streams the calibration data once (per-channel means of the quantized layers' inputs);
:class:`BiasCorrector` turns a layer's weight error into a bias update (Conv and Gemm: their own bias, added
when the layer has none; MatMul: the constant of the ``Add`` that follows it, when it is the only reader).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx

from tensorslim.algorithms.bias_correction import conv_output_error, linear_output_error
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.data import Dataset
from tensorslim.passes._consts import Constants
from tensorslim.passes.calib_stats import channel_stats

__all__ = ["BiasCorrector", "input_means"]


def input_means(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], quantized: Mapping[str, object], data: Dataset
) -> dict[str, np.ndarray]:
    """Per-channel mean of the input activation of each node in ``nodes`` that is in ``quantized``."""
    axes: dict[str, int] = {}
    for n in nodes:
        x = n.input[0]
        if x in quantized:
            axes[x] = 1 if n.op_type == "Conv" else -1
    return {k: mean for k, (mean, _) in channel_stats(model, axes, data).items()}


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(onnx.helper.get_attribute_value(a))
    return default


class BiasCorrector:
    """Collects bias updates during weight quantization; :meth:`write` stores them in the graph.

    Args:
        model: the model being quantized (edited in place).
        means: per-channel input means, by activation name.
        names: a fresh-name generator (for biases added to layers without one).
    """

    def __init__(self, model: onnx.ModelProto, means: dict[str, np.ndarray], names: Callable[[str], str]) -> None:
        self.consts = Constants(model.graph)
        self.means = means
        self.names = names
        self.pending: dict[str, tuple[onnx.NodeProto, int, np.ndarray]] = {}
        self.added_names: set[str] = set()
        self.consumers = GraphIndex(model.graph).consumers
        self.corrected = 0
        self.added = 0

    def bias(self, name: str) -> np.ndarray | None:
        """The (corrected) float value of bias ``name``."""
        if name in self.pending:
            return self.pending[name][2]
        v = self.consts.get(name)
        return None if v is None else v.astype(np.float32)

    def correct(self, node: onnx.NodeProto, dw: np.ndarray, mean_x: np.ndarray) -> str:
        """Fold ``node``'s expected output error into its bias; a note for its record ('' when not done)."""
        try:
            if node.op_type == "Conv":
                delta = conv_output_error(dw, mean_x, groups=int(_attr(node, "group", 1)))
            else:
                trans_b = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
                delta = linear_output_error(dw, mean_x, trans_b=trans_b)
        except ValueError:
            return ""
        if node.op_type == "Gemm":
            delta = delta * _attr(node, "alpha", 1.0) / (_attr(node, "beta", 1.0) or 1.0)
        delta = delta.astype(np.float32)
        if node.op_type in ("Conv", "Gemm"):
            name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            if not name:
                if node.op_type == "Gemm" and _attr(node, "beta", 1.0) == 0.0:
                    return ""
                name = self.names(f"{node.name or node.output[0]}_bias")
                if len(node.input) > 2:
                    node.input[2] = name
                else:
                    node.input.append(name)
                self.pending[name] = (node, 2, -delta)
                self.added_names.add(name)
                self.added += 1
            else:
                b = self.bias(name)
                if b is None or b.ndim != 1 or b.size != delta.size:
                    return ""
                self.pending[name] = (node, 2, b - delta)
        else:  # MatMul: the bias is the constant of the Add that alone reads its output
            users = self.consumers.get(node.output[0], [])
            if len(users) != 1 or users[0].op_type != "Add":
                return ""
            add = users[0]
            idx = 1 if add.input[0] == node.output[0] else 0
            name = add.input[idx]
            b = self.bias(name)
            if b is None or b.size != delta.size or b.shape[-1] != delta.size:
                return ""
            self.pending[name] = (add, idx, b - delta.reshape(b.shape))
        self.corrected += 1
        return f"; bias corrected (mean |shift| {float(np.mean(np.abs(delta))):.3g})"

    def write(self) -> None:
        """Store every pending bias: in place when private to its node, else as a new initializer."""
        for name, (node, idx, value) in self.pending.items():
            if idx >= len(node.input) or node.input[idx] != name:
                continue  # the layer took a quantized bias instead
            if name in self.added_names:
                self.consts.add(name, value.astype(np.float32))
            elif self.consts.private(name):
                self.consts.set(name, value)
            else:
                node.input[idx] = self.consts.add(self.names(f"{name}_corrected"), value.astype(np.float32))
