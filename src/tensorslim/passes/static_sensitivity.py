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
from dataclasses import dataclass, field

import numpy as np
import onnx

from tensorslim.evaluate.data import Dataset
from tensorslim.passes.calib_stats import run_with_outputs

__all__ = ["Repair", "added_error", "repair_output"]


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


@dataclass
class Repair:
    """What :func:`repair_output` decided: nodes moved to float (with why), activations given another range
    method (tensor -> method), the output SQNR before and after, and notes."""

    floats: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, str] = field(default_factory=dict)
    before: float = 0.0
    after: float = 0.0
    notes: list[str] = field(default_factory=list)


def repair_output(
    int8: set[str],
    *,
    score: Callable[[set[str], dict[str, str]], float],
    groups: Callable[[set[str]], list[list[str]]],
    tensors_of: Callable[[list[str], set[str]], list[str]],
    methods: Callable[[str], tuple[str, ...]],
    cost: Callable[[str, set[str]], float],
    fixed: set[str],
    target_db: float,
    budget_ms: Callable[[], float],
    rounds: int = 3,
    unit: str = " ms",
) -> Repair:
    """Raise the int8 model's output SQNR (``score``) to ``target_db`` with the fixes that cost least time.

    The int8 nodes are cut into ``groups`` (runs of the graph in order); each round measures, for every group, the
    error each fix buys back at the output, and keeps one:

    1. another range method for the activations the group reads and writes (``methods(t)``): free, the kernels
       stay int8; the fix that gains most wins if it gains 0.1 dB or more;
    2. else the group's weightless nodes to float (``fixed``, the weighted layers where the int8 speed is, never
       move), priced by ``cost`` (measured ms, with the int8 regions that lose their last Conv/Gemm/MatMul): the
       most dB per ms among those that gain 0.1 dB and fit what is left of ``budget_ms()``.

    Stops at the target, when no fix helps, or after ``rounds``. ``unit`` names what ``cost`` counts in the notes.
    """
    current, ranges = set(int8), dict[str, str]()
    out = Repair()
    out.before = out.after = score(current, ranges)
    spent = 0.0
    for _ in range(rounds):
        if out.after >= target_db or not current:
            break
        parts = [g for g in groups(current) if g]
        best: tuple[float, dict[str, str], str] | None = None
        for k, part in enumerate(parts):
            tensors = tensors_of(part, current)
            for m in sorted({m for t in tensors for m in methods(t)}):
                trial = {**ranges, **{t: m for t in tensors if m in methods(t)}}
                if trial == ranges:
                    continue
                got = score(current, trial)
                if got >= out.after + 0.1 and (best is None or got > best[0]):
                    best = (got, trial, f"group {k + 1}/{len(parts)} ({part[0]} ...) to {m} ranges")
        if best is not None:
            out.notes.append(f"{best[2]}: {out.after:.1f} -> {best[0]:.1f} dB")
            out.after, ranges = best[0], best[1]
            out.ranges = dict(ranges)
            continue
        limit = 0.0
        pick: tuple[float, float, list[str], float] | None = None  # (dB per ms, gain, nodes, cost)
        tried: list[str] = []
        for part in parts:
            nodes = [n for n in part if n not in fixed]
            if not nodes:
                continue
            price = max(sum(cost(n, current) for n in nodes), 0.0)
            limit = budget_ms()  # after a cost: the first may measure what the budget is a share of
            if spent + price > limit:
                tried.append(f"{price:.1f}{unit} over budget")
                continue
            got = score(current - set(nodes), ranges)
            gain = got - out.after
            tried.append(f"{gain:+.1f} dB for {price:.1f}{unit}")
            rate = gain / max(price, limit / 100, 1e-6)
            if gain >= 0.1 and (pick is None or rate > pick[0]):
                pick = (rate, gain, nodes, price)
        if pick is None:
            out.notes.append(f"no further fix gains 0.1 dB within the budget ({limit:.1f}{unit}, {spent:.1f} spent; "
                             f"runs to float: {', '.join(tried)})")  # fmt: skip
            break
        _, gain, nodes, price = pick
        spent += price
        for n in nodes:
            out.floats[n] = f"output-repair: its run of the graph buys {gain:.1f} dB in float for {price:.2f}{unit}"
        out.notes.append(f"{len(nodes)} weightless node(s) ({nodes[0]} ...) to float for {price:.2f}{unit}: "
                         f"{out.after:.1f} -> {out.after + gain:.1f} dB")  # fmt: skip
        out.after += gain
        current -= set(nodes)
    return out
