"""Latency-aware static int8: never return a model slower than float on the machine that quantizes.

The placement (:mod:`tensorslim.passes.static_placement`) keeps every op that ONNX Runtime fuses into an int8
kernel. Whether an int8 region pays for the Q/DQ pairs at its borders (and the layout transposes ONNX Runtime
adds around NHWC int8 convolutions) depends on the CPU, so it is measured here: the float and the int8 model
run interleaved (rounds of at most 0.1 s; :func:`~tensorslim.benchmark.latency.timed_ratio`) on one
calibration sample (batch 1, the session threads the caller set); when the int8 model
is slower, ONNX Runtime's per-node profile of both models gives each int8 region's cost (its fused kernels and
border Q/DQ) against the same nodes in float, and regions go back to float, the worst first, re-timed after
each, until the model is not slower or nothing is left in int8::

    ratio 1.12x  ->  region {Conv_7, Mul_3, ...} back to float (+0.41 ms in int8)  ->  ratio 0.93x: keep

Every decision is a reason in the returned :class:`~tensorslim.passes.static_placement.Placement` (recorded in
the output's metadata, replayable with ``--placement``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_placement import (
    Placement,
    fused_anyway,
    int8_components,
    optimized_by_ort,
    rewrite_groups,
)

__all__ = [
    "check_threads", "float_move_costs", "fusions", "latency_fallback", "measure_ratio", "profile_nodes", "split_fused",
]

_TOKEN = re.compile(r"(_token_\d+)+$")
_NCHWC = "_nchwc"  # the suffix of the nodes ONNX Runtime's NCHWc transformer makes of float Convs
_SETTLED = 0.1  # a timed ratio whose 95 % interval is wider than this share of it is timed again


def _session(model: onnx.ModelProto, threads: int, profile_dir: str | None = None, *, save: bool = False) -> Any:
    """A session timing ``model``; with ``profile_dir``, profiling into it, and with ``save``, ONNX Runtime's
    optimized graph written there too (``optimized.onnx``, the weights apart in ``optimized.bin``)."""
    import onnxruntime as ort

    from tensorslim.benchmark.latency import session_options

    so = session_options(threads, allow_spinning=False)
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "profile")
        if save:
            so.optimized_model_filepath = os.path.join(profile_dir, "optimized.onnx")
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.bin")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def check_threads() -> int:
    """The intra-op threads the latency check times with: ``$TENSORSLIM_THREADS``, else the cores, at most 4."""
    from tensorslim.runtime.ort import thread_budget

    return thread_budget() or min(os.cpu_count() or 1, 4)


def measure_ratio(ref: Any, cand: Any, feeds: dict[str, np.ndarray], *, seconds: float) -> tuple[float, float, float]:
    """Latency of ``cand`` over ``ref`` and its 95 % interval, timed interleaved
    (:func:`~tensorslim.benchmark.latency.timed_ratio`: the median over rounds of each round's ratio).

    An interval wider than a tenth of the ratio (the first runs of a new session growing its memory arena, a burst
    of other work) is timed once more, the sessions now warm, and the narrower of the two is returned: a decision
    on a +-15 % interval is a coin toss (a model 1.3x float's time read 1.00x [0.85, 1.20] at batch 32)."""
    from tensorslim.benchmark.latency import timed_ratio

    names_r = {i.name for i in ref.get_inputs()}
    names_c = {i.name for i in cand.get_inputs()}
    fr = {k: v for k, v in feeds.items() if k in names_r}
    fc = {k: v for k, v in feeds.items() if k in names_c}
    first = timed_ratio(lambda: ref.run(None, fr), lambda: cand.run(None, fc), seconds=seconds, max_round=3)
    if first[2] - first[1] <= _SETTLED * first[0]:
        return first
    again = timed_ratio(lambda: ref.run(None, fr), lambda: cand.run(None, fc), seconds=seconds, max_round=3)
    return min(first, again, key=lambda r: (r[2] - r[1]) / max(r[0], 1e-9))


def profile_nodes(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, runs: int = 5
) -> dict[str, float]:
    """Mean time per run (ms) of each node of ``model``'s optimized graph, by node name; under the key
    ``"<op>/<name>/bytes"`` the node's input + output bytes. Kernels ONNX Runtime made are under the node of
    ``model`` whose work they do: a float Conv that the NCHWc layout transformer replaced (named after its output,
    ``<output>_nchwc``) under the original node, a fusion (``<node>/QuickGeluFusion/``) under the node it is named
    after, and the layout kernels it added (``ReorderInput``/``ReorderOutput`` around NCHWc Convs, ``Transpose``
    around NHWC int8 ones) under the node they convert for, found in the optimized graph (their bytes are not the
    node's own)."""
    producer = {o: n.name for n in model.graph.node for o in n.output if o and n.name}
    nodes = {n.name for n in model.graph.node if n.name}
    with tempfile.TemporaryDirectory(prefix="tensorslim-profile-") as tmp:
        try:
            sess = _session(model, threads, tmp, save=True)
        except Exception:  # the optimized graph could not be written: profile without it
            sess = _session(model, threads, tmp)
        names = {i.name for i in sess.get_inputs()}
        f = {k: v for k, v in feeds.items() if k in names}
        for _ in range(runs):
            sess.run(None, f)
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
        saved = Path(tmp) / "optimized.onnx"
        try:
            optimized = onnx.load(str(saved), load_external_data=False).graph if saved.exists() else None
        except Exception:
            optimized = None
    layout = _layout_owners(optimized, nodes, producer) if optimized is not None else {}
    out: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            name = str(e["name"])[: -len("_kernel_time")]
            mine = _own_node(name, nodes, producer)
            own = mine is not None or name not in layout  # a layout kernel's bytes are not its node's own
            name = mine or layout.get(name, name)
            out[name] = out.get(name, 0.0) + float(e.get("dur", 0)) / 1000.0 / runs
            if own:
                args = e.get("args", {})
                size = float(args.get("activation_size", 0) or 0) + float(args.get("output_size", 0) or 0)
                out[f"{args.get('op_name', '')}/{name}/bytes"] = size
    return out


def _layout_owners(optimized: onnx.GraphProto, nodes: set[str], producer: dict[str, str]) -> dict[str, str]:
    """Kernels of ONNX Runtime's ``optimized`` graph that are no node of the original graph (layout conversions,
    reshapes it added) -> the original node they work for: a ReorderOutput, the kernel whose output it brings back
    to NCHW (a Conv that took in its HardSwish, though the reorder writes the HardSwish's output); else the one
    whose output they write; else the one their only reader works for (a ReorderInput feeds its Conv)."""
    index = GraphIndex(optimized)
    owner: dict[str, str | None] = {}

    def find(n: onnx.NodeProto, depth: int = 0) -> str | None:
        if n.name in owner:
            return owner[n.name]
        found = _own_node(n.name, nodes, producer)
        src = index.producer.get(n.input[0]) if n.op_type == "ReorderOutput" and n.input else None
        if found is None and src is not None and depth < 8:
            found = find(src, depth + 1)
        if found is None:
            found = next((producer[o] for o in n.output if o in producer), None)
        if found is None and depth < 8:
            after = {find(r, depth + 1) for o in n.output for r in index.readers(o)}
            found = after.pop() if len(after) == 1 else None
        owner[n.name] = found
        return found

    out = {}
    for n in optimized.node:
        if n.name and n.name not in nodes:
            got = find(n)
            if got is not None:
                out[n.name] = got
    return out


def _own_node(name: str, nodes: set[str], producer: dict[str, str]) -> str | None:
    """The node of the original graph that a kernel of ONNX Runtime's optimized graph named ``name`` computes:
    itself, the Conv an NCHWc kernel replaced (named after its output, ``<output>_nchwc``), or the node a fusion is
    named after; None for a kernel ONNX Runtime added (a layout conversion)."""
    if name in nodes:
        return name
    if name.endswith(_NCHWC) and name[: -len(_NCHWC)] in producer:
        return producer[name[: -len(_NCHWC)]]
    return _fused_name(_TOKEN.sub("", name), nodes)


def _fused_name(name: str, names: set[str]) -> str | None:
    """The graph node an ONNX Runtime fusion named its node after: the longest ``/``-delimited prefix of ``name``
    that is a node of the graph (``<Mul's name>/QuickGeluFusion/``, ``<MatMul's name>/MatMulAddFusion``)."""
    cut = name.rfind("/")
    while cut > 0:
        if name[:cut] in names:
            return name[:cut]
        cut = name.rfind("/", 0, cut)
    return None


_HEAVY = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})  # ops ONNX Runtime fuses what follows into


def fusions(model: onnx.ModelProto, prof: dict[str, float]) -> dict[str, tuple[str, ...]]:
    """The nodes of ``model`` that ONNX Runtime fused with a neighbour, from its profile (:func:`profile_nodes`):
    timed node -> the nodes of its fused kernel, itself last.

    A fused kernel is timed under one of its nodes' names, which varies with the fusion: a Conv + HardSwish under
    the Conv, a Conv + Relu made NCHWc under the Relu (named after the fused output), x * Sigmoid(x) under the Mul of
    its QuickGelu. A node with no kernel of its own belongs to the neighbour it was fused with: an elementwise node
    to the producer whose output only it reads (an activation into its Conv, a residual Add into the Conv before
    it), else to its only reader; a Conv, Gemm or MatMul to its only reader. Groups with no timed node join the only
    node they feed; groups with two timed nodes are left out (no fusion makes one)."""
    timed = {k for k in prof if not k.endswith("/bytes")}
    g = model.graph
    index = GraphIndex(g)
    producer, ends = index.producer, index.outputs
    consts = set(index.initializers) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    parent = {n.name: n.name for n in g.node if n.name and n.op_type != "Constant"}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    def only_reader(nodes: list[onnx.NodeProto]) -> str | None:
        """The one node (outside ``nodes``) that reads the outputs of ``nodes``, none of them a graph output."""
        inside = {n.name for n in nodes}
        outs = [o for n in nodes for o in n.output if o]
        if any(o in ends for o in outs):
            return None
        found = {r.name for o in outs for r in index.readers(o) if r.name not in inside}
        return next(iter(found)) if len(found) == 1 and next(iter(found)) in parent else None

    for n in g.node:
        if n.name not in parent or n.name in timed:
            continue
        if n.op_type not in _HEAVY:
            feeders = [producer[i] for i in dict.fromkeys(n.input) if i and i not in consts and i in producer
                       and i not in ends and len({r.name for r in index.readers(i)}) == 1
                       and producer[i].name in parent]  # fmt: skip
            if feeders:
                best = min(feeders, key=lambda p: (p.op_type not in _HEAVY, p.name not in timed, p.name))
                join(n.name, best.name)
                continue
        r = only_reader([n])
        if r is not None:
            join(n.name, r)
    comps: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        if n.name in parent:
            comps.setdefault(root(n.name), []).append(n)
    for members in comps.values():
        if len(members) > 1 and not any(m.name in timed for m in members):
            r = only_reader(members)
            if r is not None:
                join(members[0].name, r)
    groups: dict[str, list[str]] = {}
    for n in g.node:
        if n.name in parent:
            groups.setdefault(root(n.name), []).append(n.name)
    out: dict[str, tuple[str, ...]] = {}
    for names in groups.values():
        keys = [m for m in names if m in timed]
        if len(names) > 1 and len(keys) == 1:
            out[keys[0]] = (*sorted(m for m in names if m != keys[0]), keys[0])
    return dict(sorted(out.items()))


def split_fused(
    float_prof: dict[str, float], groups: dict[str, tuple[str, ...]], kernel: dict[str, float]
) -> dict[str, float]:
    """``float_prof`` with each fused group's float time (:func:`fusions`) spread over its members in proportion to
    their int8 kernel time ``kernel`` (a Conv + Relu's time goes to the Conv when the QLinearConv takes the Relu;
    all on the timed node where no member has a kernel)."""
    out = dict(float_prof)
    for key, members in groups.items():
        weights = {m: kernel.get(m, 0.0) for m in members}
        total = sum(weights.values())
        if key not in out or total <= 0:
            continue
        t = out[key]
        for m, w in weights.items():
            out[m] = t * w / total
    return out


def _qdq_cost_per_element(prof: dict[str, float]) -> float:
    """Measured ms per element of the QuantizeLinear/DequantizeLinear kernels of a profile (each moves one
    int8 and one float per element: 5 bytes)."""
    ms = nbytes = 0.0
    for key, size in prof.items():
        op, _, rest = key.partition("/")
        if op in ("QuantizeLinear", "DequantizeLinear") and rest.endswith("/bytes"):
            name = rest[: -len("/bytes")]
            ms += prof.get(name, 0.0)
            nbytes += size
    return ms / (nbytes / 5.0) if nbytes > 0 else 1e-7


def _by_node(prof: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """A profile's kernel ms and bytes per node, the kernels of a fused node (``<name>_token_N``) under its name."""
    kernel: dict[str, float] = {}
    nbytes: dict[str, float] = {}
    for key, v in prof.items():
        if key.endswith("/bytes"):
            base = _TOKEN.sub("", key.split("/", 1)[1][: -len("/bytes")])
            nbytes[base] = nbytes.get(base, 0.0) + v
        else:
            base = _TOKEN.sub("", key)
            kernel[base] = kernel.get(base, 0.0) + v
    return kernel, nbytes


def float_move_costs(
    float_prof: dict[str, float], quantized: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, runs: int = 5,
    fused: dict[str, tuple[str, ...]] | None = None,
) -> tuple[dict[str, float], float]:
    """What each int8 node of ``quantized`` would add to the run time (ms) if it ran in float instead, from ONNX
    Runtime's per-node profiles on ``feeds``: its float kernel's time (``float_prof``, the float model's
    :func:`profile_nodes`; ``fused``, the float model's :func:`fusions`: a fused kernel's time is spread over the
    int8 nodes that do its work) plus a Q/DQ on its inputs and output (at the per-element Q/DQ cost measured in
    ``quantized``'s profile), minus its int8 kernels' time; and the float model's total node time.

    An estimate for ranking, not a timing: regions, fusions that a move breaks or forms and cache effects are not in
    it (the latency check times the result)."""
    int8_prof = profile_nodes(quantized, feeds, threads, runs)
    per_element = _qdq_cost_per_element(int8_prof)
    kernel, elements = _by_node(int8_prof)  # int8 kernels read and write one byte per element
    total = sum(v for k, v in float_prof.items() if not k.endswith("/bytes"))
    float_prof = split_fused(float_prof, fused or {}, kernel)
    names = {n.name for n in quantized.graph.node if n.name and n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    costs = {n: float_prof.get(n, 0.0) + per_element * elements.get(n, 0.0) - kernel.get(n, 0.0)
             for n in sorted(names & (set(kernel) | set(float_prof)))}  # fmt: skip
    return costs, total


def _slow_nodes(
    int8: set[str], absorbed: set[str], int8_prof: dict[str, float], float_prof: dict[str, float],
    groups: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, float]:
    """Int8 nodes whose kernel takes longer than the same node in float plus the Q/DQ it would need alone.

    ``groups``: the nodes that replaced one float op (:func:`~tensorslim.passes.static_placement.rewrite_groups`,
    keyed by the name the float op had, which ``float_prof`` times): judged together, their int8 kernels against
    that op; all of them are slow or none (the time is put on the named node).
    """
    per_element = _qdq_cost_per_element(int8_prof)
    kernel, nbytes = _by_node(int8_prof)
    members: dict[str, tuple[str, ...]] = {}
    for name, nodes in (groups or {}).items():
        if name in nodes and set(nodes) <= int8 - absorbed:
            members[name] = nodes
            for m in nodes:
                if m != name:
                    kernel[name] = kernel.get(name, 0.0) + kernel.pop(m, 0.0)
                    nbytes[name] = nbytes.get(name, 0.0) + nbytes.pop(m, 0.0)
    out = {}
    for n in sorted(int8 - absorbed):
        if n not in kernel or n not in float_prof:
            continue
        border = per_element * nbytes.get(n, 0.0)  # int8 kernels read and write one byte per element
        if kernel[n] > float_prof[n] + border:
            out[n] = kernel[n] - float_prof[n] - border
            out.update({m: 0.0 for m in members.get(n, ()) if m != n})
    return out


def _listed(names: Any, *, sort: bool = True, most: int = 6) -> str:
    """Up to ``most`` of ``names`` for a note, ``...`` for the rest (every one is in the placement's reasons)."""
    items = sorted(names) if sort else list(names)
    return ", ".join(items[:most]) + (f" ... ({len(items)} in all)" if len(items) > most else "")


def _slower(ratio: float, low: float) -> bool:
    """Slower than float beyond timing noise: the median is 5 % above parity, or 2 % above with the whole interval
    above parity (a 1 % gap with a tight interval is what a model timed against itself shows on a busy machine)."""
    return ratio > 1.05 or (low > 1.0 and ratio > 1.02)


def _region_costs(
    comps: list[set[str]], int8_prof: dict[str, float], float_prof: dict[str, float], borders: dict[str, set[str]]
) -> list[float]:
    """Per region: its int8 time (fused kernels + border Q/DQ) minus the same nodes' float time, in ms."""
    by_node, _ = _by_node(int8_prof)
    costs = []
    for comp in comps:
        q = sum(by_node.get(n, 0.0) for n in comp)
        q += sum(by_node.get(b, 0.0) for b in borders.get(min(comp), set()))
        f = sum(float_prof.get(n, 0.0) for n in comp)
        costs.append(q - f)
    return costs


_BATCH_MAX = 32  # the largest batch the check times
_BATCH_FLOAT_S = 0.25  # at most this much float time per run of the larger batch


def _larger_batch(
    data: Dataset, float_s: float, model: onnx.ModelProto | None = None, size: int | None = None
) -> dict[str, np.ndarray] | None:
    """A second, larger batch of calibration samples to time, when the inputs have a free batch axis (in the data's
    layout and in ``model``'s declared input shapes): ``size`` samples (as many as the data holds in one shape), or
    when ``size`` is None up to 32, as many as the data holds and as run in about 0.25 s of float time (``float_s``:
    float's time at batch 1), a power of two; None when that is under 2 samples."""
    if data.call_size(2) < 2:
        return None  # a fixed batch, or an input with no batch axis
    for i in model.graph.input if model is not None else ():
        axis = data.batch_axes.get(i.name, 0)
        dims = i.type.tensor_type.shape.dim
        if axis is not None and axis < len(dims) and dims[axis].HasField("dim_value"):
            return None  # the model declares a fixed batch
    if size is not None:
        want = min(size, max((g.stop - g.start for _, g in data.batches(size)), default=0))
    else:
        fit = int(_BATCH_FLOAT_S / max(float_s, 1e-6))
        held = max((g.stop - g.start for _, g in data.batches(_BATCH_MAX)), default=0)
        want = min(_BATCH_MAX, held, fit)
        want = 1 << (want.bit_length() - 1) if want >= 2 else want
    if want < 2:
        return None
    return next(f for f, g in data.batches(want) if g.stop - g.start == want)


def _float_seconds(sess: Any, feeds: dict[str, np.ndarray], runs: int = 5) -> float:
    """Median seconds of one run of ``sess`` on ``feeds``."""
    names = {i.name for i in sess.get_inputs()}
    f = {k: v for k, v in feeds.items() if k in names}
    sess.run(None, f)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, f)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _batch_of(feeds: dict[str, np.ndarray], data: Dataset) -> int:
    name, value = next(iter(feeds.items()))
    axis = data.batch_axes.get(name, 0)
    return 1 if axis is None else int(value.shape[axis])


def latency_fallback(
    source: onnx.ModelProto,
    placement: Placement,
    build: Callable[[set[str]], onnx.ModelProto],
    data: Dataset,
    index: Any,
    *,
    time_budget_s: float = 60.0,
    reference: onnx.ModelProto | None = None,
    batch: int | None = None,
) -> tuple[Placement, list[str]]:
    """Move int8 regions back to float until the model is not slower than float here; notes on what moved.

    ``build(names)`` makes the quantized model with the nodes ``names`` in int8; ``index`` gives
    ``quantized(names)`` (the activations with Q/DQ pairs) for finding the regions. Every ratio is timed against
    ``reference`` (default ``source``): the float model as the user runs it, which may differ from ``source``
    (the graph the placement names, with ops rewritten into int8-capable equivalents that are slower in float).
    The float per-node profile is also ``reference``'s: a rewritten op's time is under its own name, which one of
    the nodes that replaced it keeps, and the nodes of one rewrite are judged together.

    The check times batch 1, then, when the inputs have a free batch axis, a larger batch of calibration samples
    (up to 32, as many as run in about 0.25 s of float time; ``batch``, when given: that many, 1 for none): int8's
    gain shrinks as the batch grows (Q/DQ and layout transposes scale with it, float convolutions get more
    efficient), so a model faster at batch 1 can be slower at 32. Regions go back to float until neither batch is
    slower; batch 1 is re-timed when the larger batch moved any. When the larger batch moves every node back, the
    note gives batch 1's figure and the option that keeps it (``latency_batch=1``: batch 1 only).
    """
    threads = check_threads()
    float_model = source if reference is None else reference
    ref = _session(float_model, threads)
    check = _Check(source, build, index, ref, threads, float_model, rewrite_groups(source) if reference is not None
                   else {}, max(1.0, min(4.0, time_budget_s / 12)), time.perf_counter() + time_budget_s)  # fmt: skip
    one = next(iter(data.batches(1)))[0]
    placement, notes, _ = _fallback_at(check, placement, one, "batch 1")
    if batch == 1 or not placement.int8:
        return placement, notes
    big = _larger_batch(data, _float_seconds(ref, one), float_model, batch)
    if big is None:
        if batch is not None:
            notes.append(f"latency check: batch {batch} not timed (the inputs have no free batch axis, or the "
                         "calibration data holds fewer than 2 samples of one shape)")  # fmt: skip
        return placement, notes
    size = _batch_of(big, data)
    if batch is not None and size < batch:
        notes.append(f"latency check: batch {batch} asked, the calibration data holds {size} samples of one shape: "
                     f"batch {size} timed")  # fmt: skip
    if time.perf_counter() > check.deadline:
        notes.append(f"latency check: batch {size} not timed (the {time_budget_s:.0f} s budget is spent; raise "
                     "latency_budget_s)")  # fmt: skip
        return placement, notes
    try:  # a free batch axis in the signature, but a Reshape inside may fix it
        _float_seconds(ref, big, runs=1)
    except Exception as e:
        notes.append(f"latency check: batch {size} not timed: the float model does not run at batch {size} "
                     f"({str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__})")  # fmt: skip
        return placement, notes
    at_one = placement
    placement, more, moved = _fallback_at(check, placement, big, f"batch {size}")
    notes.extend(more)
    if not placement.int8:
        notes.append(f"latency check: batch 1's {len(at_one.int8)} int8 node(s) (its figure above) are given up for "
                     f"batch {size}; if you serve batch 1, quantize with --latency-batch 1 (latency_batch=1) to keep "
                     "them")  # fmt: skip
    if moved and placement.int8:
        placement, again, _ = _fallback_at(check, placement, one, "batch 1, again")
        notes.extend(again)
    return placement, notes


@dataclass(frozen=True)
class _Check:
    """What every timing of one latency check shares: the models, the float session, threads and time."""

    source: onnx.ModelProto
    build: Callable[[set[str]], onnx.ModelProto]
    index: Any
    ref: Any  # the float session
    threads: int
    float_model: onnx.ModelProto  # the model ``ref`` runs, profiled node by node
    groups: dict[str, tuple[str, ...]]
    step: float  # seconds per timing
    deadline: float  # perf_counter() after which regions move without timing


def _unfuse(c: _Check, int8: set[str], slow: dict[str, float]) -> dict[str, str]:
    """The int8 nodes that must go to float with ``slow`` for those to run float at all: a slow node left with Q/DQ
    pairs on every side is fused into the same int8 kernel again (:func:`~tensorslim.passes.static_placement.
    fused_anyway`, read from ONNX Runtime's optimized graph of the placement without them)."""
    if not slow or not int8 - set(slow):
        return {}
    fewer = int8 - set(slow)
    stay = [n for n in c.index.nodes if n.name in slow]
    return fused_anyway(optimized_by_ort(c.build(fewer)), stay, c.index.consumers, fewer)


def _readers_said(readers: dict[str, str]) -> str:
    return (f", with {len(readers)} int8 node(s) reading them ({_listed(readers)}: else ONNX Runtime fuses them "
            "again)") if readers else ""  # fmt: skip


def _fallback_at(
    c: _Check, placement: Placement, feeds: dict[str, np.ndarray], label: str
) -> tuple[Placement, list[str], bool]:
    """The check on one batch ``feeds`` (``label`` names it in the notes): the placement, the notes and whether
    any node moved back to float."""
    source, build, index, ref, threads, groups, step = (
        c.source, c.build, c.index, c.ref, c.threads, c.groups, c.step)  # fmt: skip
    int8 = set(placement.int8)
    ratio, lo, hi = measure_ratio(ref, _session(build(int8), threads), feeds, seconds=step)
    notes = [f"latency check: static int8 {ratio:.2f}x float [{lo:.2f}, {hi:.2f}] ({label}, {threads} thread(s), "
             "interleaved runs on calibration samples)"]  # fmt: skip
    if lo > 1.0 and not _slower(ratio, lo):  # measurably slower, by less than the check acts on: said, not hidden
        notes[0] += (f"; slower than float by {100 * (ratio - 1):.1f} %, within the check's tolerance for timing "
                     "noise (2 %), so nothing moves for it")  # fmt: skip
    floats = dict(placement.float)
    prof_runs = 5
    # the float time of each node as the user runs it; a rewritten op's time is under its name, which one of the
    # nodes that replaced it keeps (the others have none): regions and slow nodes count the op once
    profiled = profile_nodes(c.float_model, feeds, threads, prof_runs)
    fused = fusions(c.float_model, profiled)
    int8_prof = profile_nodes(build(int8), feeds, threads, prof_runs)
    float_prof = split_fused(profiled, fused, _by_node(int8_prof)[0])
    absorbed = set(index.absorbed(int8, index.quantized(int8)))
    absorbed = {n.name for n in index.nodes if n.output and n.output[0] in absorbed}
    slow = _slow_nodes(int8, absorbed, int8_prof, float_prof, groups)
    readers = _unfuse(c, int8, slow)
    if not _slower(ratio, lo):
        if not slow or not int8 - set(slow) - set(readers):
            return placement, notes, False
        # faster than float already; nodes whose own int8 kernel is slower than float go back when that is
        # measured to pay (the int8 models timed against each other)
        fewer = int8 - set(slow) - set(readers)
        gain, glo, ghi = measure_ratio(_session(build(int8), threads), _session(build(fewer), threads), feeds,
                                       seconds=step)  # fmt: skip
        if ghi >= 1.0:
            return placement, notes, False
        for n, extra in slow.items():
            floats[n] = f"slower: its int8 kernel takes {extra:+.3f} ms more than float + Q/DQ on this CPU ({label})"
        floats.update(readers)
        notes.append(f"latency check: {len(slow)} node(s) whose int8 kernel is slower than float here "
                     f"({_listed(slow)}) moved back to float" + _readers_said(readers) + f": {gain:.2f}x of the "
                     f"all-int8 time [{glo:.2f}, {ghi:.2f}] ({label})")  # fmt: skip
        return Placement(tuple(sorted(fewer)), tuple(sorted(floats.items())), placement.rounds,
                         placement.runtime), notes, True  # fmt: skip
    moved: list[str] = []
    if slow:
        # single nodes first: their int8 kernel alone is slower than float here (e.g. a depthwise Conv, a pool)
        int8 -= set(slow) | set(readers)
        for n, extra in slow.items():
            floats[n] = f"slower: its int8 kernel takes {extra:+.3f} ms more than float + Q/DQ on this CPU ({label})"
        floats.update(readers)
        moved.append(f"{len(slow)} node(s) whose int8 kernel is slower than float here ({_listed(slow)})"
                     + _readers_said(readers))  # fmt: skip
        if int8:
            int8_prof = profile_nodes(build(int8), feeds, threads, prof_runs)
            float_prof = split_fused(profiled, fused, _by_node(int8_prof)[0])
            ratio, lo, hi = measure_ratio(ref, _session(build(int8), threads), feeds, seconds=step)
    if not _slower(ratio, lo) and int8:
        notes.append(f"latency check: {', '.join(moved)} moved back to float; now {ratio:.2f}x [{lo:.2f}, {hi:.2f}] "
                     f"({label})")  # fmt: skip
        return Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), placement.rounds,
                         placement.runtime), notes, True  # fmt: skip
    comps = int8_components(source, int8, index.quantized)
    quant = index.quantized(int8)
    borders: dict[str, set[str]] = {}
    for comp in comps:
        touched = {v for n in index.nodes if n.name in comp for v in (*n.input, *n.output) if v in quant}
        borders[min(comp)] = {f"{t}_{op}" for t in touched for op in ("QuantizeLinear", "DequantizeLinear")}
    costs = _region_costs(comps, int8_prof, float_prof, borders)
    # worst first: the regions that cost most in int8 against their float time; ties by less int8 work
    order = sorted(range(len(comps)), key=lambda i: (-costs[i], index.macs(comps[i]), min(comps[i])))
    for i in order:
        comp = comps[i]
        int8 -= comp
        why = f"slower: int8 region cost {costs[i]:+.2f} ms against float on this CPU (latency check, {label})"
        floats.update(dict.fromkeys(comp, why))
        moved.append(f"{min(comp)} (+{len(comp) - 1} node(s), {costs[i]:+.2f} ms)")
        if not int8:
            break
        if time.perf_counter() > c.deadline:
            continue  # out of time: keep moving regions without timing, to be sure not to be slower
        ratio, lo, hi = measure_ratio(ref, _session(build(int8), threads), feeds, seconds=step)
        if not _slower(ratio, lo):
            break
    result = Placement(tuple(sorted(int8)), tuple(sorted(floats.items())), placement.rounds, placement.runtime)
    if int8:
        notes.append(f"latency check: {len(moved)} int8 region(s) moved back to float to be no slower than float "
                     f"({_listed(moved, sort=False)}); now {ratio:.2f}x "
                     f"[{lo:.2f}, {hi:.2f}] ({label})")  # fmt: skip
    else:
        first = f" (after {moved[0]})" if slow else ""
        notes.append(f"latency check: static int8 is slower than float on this CPU in every region ({label}){first}; "
                     "every node moved back to float (weights keep int8 storage); try --mode dynamic")  # fmt: skip
    return result, notes, True
