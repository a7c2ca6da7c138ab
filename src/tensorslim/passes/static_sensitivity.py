"""Which int8 nodes hurt the output most? Error each node *adds*, measured through the quantized graph.

The activation fallback of :mod:`tensorslim.passes.static_quant` scores each tensor's own rounding; a kernel
can add more than that (a Softmax whose input lost its small values, an attention MatMul of two quantized
operands, a residual Add of very different ranges). Here the float model and the QDQ model (Q/DQ run as
float ops, the placement and scales as they will be written) run side by side on a few calibration samples;
for every int8 node the noise-to-signal ratio of its output minus the worst of its inputs is what it adds::

    added NSR(n) = NSR(out(n)) - max(NSR(in) for in in inputs(n))      ranked, worst first

Nodes that add more than the threshold allows go back to float, at most a given share of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx

from tensorslim.evaluate.data import Dataset
from tensorslim.passes.calib_stats import run_with_outputs

__all__ = ["added_error"]


def added_error(
    source: onnx.ModelProto,
    quantized: onnx.ModelProto,
    nodes: Iterable[onnx.NodeProto],
    data: Dataset,
    inputs_of: Callable[[onnx.NodeProto], list[str]],
    *,
    max_samples: int = 16,
) -> dict[str, float]:
    """Added SQNR (dB) of each node of ``nodes`` (its float output compared in both models)."""
    nodes = list(nodes)
    q_names = {o for n in quantized.graph.node for o in n.output}
    f_names = {o for n in source.graph.node for o in n.output} | {i.name for i in source.graph.input}
    tensors = sorted({t for n in nodes for t in (*inputs_of(n), *n.output[:1]) if t in q_names | f_names
                      and t in f_names and (t in q_names or t in {i.name for i in quantized.graph.input})})  # fmt: skip
    if not tensors:
        return {}
    sample = data.head(max_samples) if data.num_samples > max_samples else data
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    batch = 1 if sample.num_samples <= 4 else 4
    for ref, got in zip(run_with_outputs(source, tensors, sample, batch_size=batch),
                        run_with_outputs(quantized, tensors, sample, batch_size=batch), strict=True):  # fmt: skip
        for t in tensors:
            a, b = np.asarray(ref[t], np.float64), np.asarray(got[t], np.float64)
            if a.shape != b.shape:
                continue
            signal[t] += float(np.sum(a * a))
            noise[t] += float(np.sum((a - b) ** 2))
    nsr = {t: noise[t] / signal[t] if signal[t] > 0 else 0.0 for t in tensors}
    out: dict[str, float] = {}
    for n in nodes:
        if not n.output or n.output[0] not in nsr:
            continue
        before = max((nsr[i] for i in inputs_of(n) if i in nsr), default=0.0)
        added = max(nsr[n.output[0]] - before, 0.0)
        out[n.name] = float("inf") if added <= 0 else -10.0 * float(np.log10(added))
    return out
