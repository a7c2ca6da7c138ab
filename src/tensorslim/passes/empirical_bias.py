"""Empirical bias correction: after the int8 graph is written, match each int8 Conv/Gemm's mean output per
channel to the float model's on calibration samples, layer by layer in graph order.

The expected weight error (:mod:`tensorslim.passes.bias_correction`) is one source of offset; the input's own
rounding and clipping, and the offsets that earlier layers' errors leave after a nonlinearity, are others. A
layer whose filters nearly cancel (edge filters, a sum of reparameterized branches) turns a small offset of its
input into a large one of its output, and the next normalization scales it up. So the offset is measured, not
predicted: the quantized graph (Q/DQ run as float ops) and the float graph see the same samples, and each
layer's int32 bias moves by the difference of their means (:func:`~tensorslim.algorithms.bias_correction.mean_shift`,
only where it is clear of sampling noise). Layers are corrected in order, each after the ones before it, since a
correction upstream changes what reaches the layers below.

Deciding (the float means, the shifts) happens on a copy whose int32 biases are session inputs, so one
ONNX Runtime session serves every layer; applying is writing the new int32 codes into the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.algorithms.bias_correction import mean_shift
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.data import Dataset
from tensorslim.passes.calib_stats import calibration_session, run_with_outputs

__all__ = ["BiasTarget", "bias_targets", "empirical_bias_correction", "sample_channel_means"]

_CHANNEL_AXIS = {"Conv": 1, "Gemm": -1}  # the layers corrected, and their outputs' channel axis
SAMPLES = 8  # calibration samples the correction looks at: a fixed number, so the same data gives the same bytes


@dataclass(frozen=True)
class BiasTarget:
    """One int8 layer whose int32 bias the correction may move: its output (channel ``axis``), the bias codes'
    initializer and the bias scale (one per channel, or one)."""

    node: str
    output: str
    axis: int
    codes: str
    scale: np.ndarray


def _channel_means(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    ax = axis % x.ndim
    return x.mean(axis=tuple(i for i in range(x.ndim) if i != ax))


def sample_channel_means(model: onnx.ModelProto, nodes: set[str], data: Dataset) -> dict[str, np.ndarray]:
    """``[samples, channels]``: each sample's mean output per channel of each Conv/Gemm node of ``nodes``, by
    node name (the name its output keeps once Q/DQ pairs go in may differ)."""
    outputs = {n.name: (n.output[0], _CHANNEL_AXIS[n.op_type]) for n in model.graph.node
               if n.name in nodes and n.op_type in _CHANNEL_AXIS}  # fmt: skip
    rows: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    if not outputs:
        return {}
    for got in run_with_outputs(model, [t for t, _ in outputs.values()], data, batch_size=1):
        for n, (t, axis) in outputs.items():
            rows[n].append(_channel_means(got[t], axis))
    return {n: np.stack(v) for n, v in rows.items() if v and len({r.shape for r in v}) == 1}


def bias_targets(model: onnx.ModelProto, nodes: set[str]) -> list[BiasTarget]:
    """The Conv/Gemm nodes of ``nodes`` (in graph order) whose bias is an int32 DequantizeLinear of an
    initializer read by nothing else, with a constant scale and zero point 0."""
    index = GraphIndex(model.graph)
    inits = {i.name: i for i in model.graph.initializer}

    def readers(name: str) -> int:
        return len(index.consumers.get(name, []))

    out = []
    for n in model.graph.node:
        if n.name not in nodes or n.op_type not in _CHANNEL_AXIS or len(n.input) < 3 or not n.input[2]:
            continue
        dq = index.producer.get(n.input[2])
        if dq is None or dq.op_type != "DequantizeLinear" or readers(n.input[2]) != 1:
            continue
        codes, scale = inits.get(dq.input[0]), inits.get(dq.input[1]) if len(dq.input) > 1 else None
        if codes is None or scale is None or codes.data_type != onnx.TensorProto.INT32 or readers(codes.name) != 1:
            continue
        if len(dq.input) > 2 and dq.input[2]:
            zp = inits.get(dq.input[2])
            if zp is None or np.any(numpy_helper.to_array(zp)):
                continue
        out.append(BiasTarget(n.name, n.output[0], _CHANNEL_AXIS[n.op_type], codes.name,
                              np.asarray(numpy_helper.to_array(scale), np.float64)))  # fmt: skip
    return out


def empirical_bias_correction(
    model: onnx.ModelProto, targets: list[BiasTarget], float_means: dict[str, np.ndarray], data: Dataset,
    *, budget_s: float = 600.0,
) -> str:  # fmt: skip
    """Move the int32 biases of ``targets`` (in place) so each layer's mean output per channel matches
    ``float_means`` (from :func:`sample_channel_means` on the float model, same ``data``); a note ('' when
    nothing moved). The cost is one run of the quantized graph on ``data`` per layer; past ``budget_s`` seconds
    the layers left keep their biases, and the note says how many."""
    targets = [t for t in targets if t.node in float_means]
    if not targets:
        return ""
    inits = {i.name: i for i in model.graph.initializer}
    codes = {t.codes: numpy_helper.to_array(inits[t.codes]).astype(np.int64) for t in targets}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    kept = [i for i in probe.graph.initializer if i.name not in codes]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(kept)
    for name, v in codes.items():
        probe.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT32, list(v.shape)))
    sess = calibration_session(probe, [t.output for t in targets])
    del probe
    names = {i.name for i in sess.get_inputs()}
    feeds = [{k: v for k, v in f.items() if k in names} for f, _ in data.batches(1)]
    start = time.monotonic()
    moved = layers = done = 0
    for t in targets:
        if done and time.monotonic() - start > budget_s:
            break
        current = {n: v.astype(np.int32) for n, v in codes.items()}
        got = np.stack([_channel_means(sess.run([t.output], {**f, **current})[0], t.axis) for f in feeds])
        ref = float_means[t.node]
        done += 1
        if got.shape != ref.shape or got.shape[1] != codes[t.codes].size:
            continue
        shift = mean_shift(ref, got)
        shift = np.where(np.isfinite(shift), shift, 0.0)  # a sample with inf/NaN there: no evidence either way
        steps = np.round(np.divide(shift, t.scale, out=np.zeros_like(shift), where=t.scale > 0)).astype(np.int64)
        if np.any(steps):
            codes[t.codes] = np.clip(codes[t.codes] - steps.reshape(codes[t.codes].shape), -(2**31), 2**31 - 1)
            moved += int(np.count_nonzero(steps))
            layers += 1
    for name, v in codes.items():
        inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.int32), name))
    if not moved:
        return ""
    left = len(targets) - done
    return (f"empirical bias correction: {moved} channel(s) of {layers} int8 Conv/Gemm layer(s) shifted so their mean "
            f"output matches float's on {len(feeds)} calibration samples, layer by layer"
            + (f"; {left} later layer(s) left as they were (the {budget_s:g} s budget ran out)" if left else ""))
