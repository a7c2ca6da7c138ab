"""Per-op attribution from ONNX Runtime's profiler: where the time goes, and where it went after quantization.

ONNX Runtime writes one ``Node`` event per kernel call when ``SessionOptions.enable_profiling`` is on
(``"name": "<node>_kernel_time"``, ``"dur"`` in µs, ``"args": {"op_name": ..., "provider": ...}``). The
events are of the *optimized* graph, so fused kernels appear under their fused names (``QLinearConv``,
``DynamicQuantizeMatMul``, ``FusedConv``...). :func:`profile_model` runs a model ``warmup + runs`` times,
drops the warm-up calls, and keeps the median duration of every node; op-type totals are the sums of
their nodes' medians. :func:`diff_profiles` lines two models up by op type (before -> after)::

    a = profile_model("model.onnx"); b = profile_model("model.int8.onnx")
    for row in diff_profiles(a, b).rows: print(row.op_type, row.a_us, row.b_us, row.delta_us)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.backends.onnx.indices import index_bounds
from tensorslim.errors import InputError
from tensorslim.progress import track

from .inputs import PASS_REAL_INPUTS, feeds_for, runnable_inputs, specs_from_session, unsized_dims
from .latency import create_session, session_options

__all__ = ["NodeTime", "OpDiffRow", "OpProfile", "ProfileDiff", "diff_profiles", "parse_profile", "profile_model"]


@dataclass(frozen=True)
class NodeTime:
    """Median kernel time of one node of the optimized graph.

    Attributes:
        name: Node name in ONNX Runtime's optimized graph.
        op_type: The kernel's op type (after fusion, e.g. ``QLinearMatMul``).
        provider: Execution provider that ran it.
        median_us: Median duration per run, in µs.
        calls: Timed calls that were measured.
    """

    name: str
    op_type: str
    provider: str
    median_us: float
    calls: int


@dataclass(frozen=True)
class OpProfile:
    """Per-node and per-op-type times of one model.

    Attributes:
        path: The model file.
        runs: Timed runs (warm-up excluded).
        run_median_us: Median wall time of a whole ``run()`` as the profiler saw it, in µs.
        nodes: Every node, slowest first.
        threads: Intra-op threads of the session.
    """

    path: str
    runs: int
    run_median_us: float
    nodes: tuple[NodeTime, ...]
    threads: int = 1

    @property
    def kernel_us(self) -> float:
        """Sum of the node medians (time inside kernels), in µs."""
        return float(sum(n.median_us for n in self.nodes))

    def by_op_type(self) -> dict[str, float]:
        """Total median µs per op type, slowest first."""
        acc: dict[str, float] = defaultdict(float)
        for n in self.nodes:
            acc[n.op_type] += n.median_us
        return dict(sorted(acc.items(), key=lambda kv: -kv[1]))

    def count_by_op_type(self) -> dict[str, int]:
        """Number of nodes per op type."""
        acc: dict[str, int] = defaultdict(int)
        for n in self.nodes:
            acc[n.op_type] += 1
        return dict(acc)

    def to_dict(self, *, top_nodes: int = 50) -> dict[str, Any]:
        """JSON-ready dict: ``path``, ``runs``, ``threads``, ``run_median_us``, ``kernel_us``, ``by_op_type``
        (op -> {``us``, ``share``, ``nodes``}) and the ``top_nodes`` slowest ``nodes``."""
        total = self.kernel_us or 1.0
        counts = self.count_by_op_type()
        return {
            "path": self.path,
            "runs": self.runs,
            "threads": self.threads,
            "run_median_us": self.run_median_us,
            "kernel_us": self.kernel_us,
            "by_op_type": {
                op: {"us": us, "share": us / total, "nodes": counts[op]} for op, us in self.by_op_type().items()
            },
            "nodes": [
                {"name": n.name, "op_type": n.op_type, "provider": n.provider, "median_us": n.median_us}
                for n in self.nodes[:top_nodes]
            ],
        }


@dataclass(frozen=True)
class OpDiffRow:
    """One op type in two models: total µs and node count in each, and the change."""

    op_type: str
    a_us: float
    b_us: float
    a_nodes: int
    b_nodes: int

    @property
    def delta_us(self) -> float:
        """``b_us - a_us`` (positive: the second model spends more time here)."""
        return self.b_us - self.a_us


@dataclass(frozen=True)
class ProfileDiff:
    """Op-type comparison of two profiles, largest absolute change first."""

    a: OpProfile
    b: OpProfile
    rows: tuple[OpDiffRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: both profiles and one row per op type."""
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "kernel_us": [self.a.kernel_us, self.b.kernel_us],
            "rows": [
                {
                    "op_type": r.op_type,
                    "a_us": r.a_us,
                    "b_us": r.b_us,
                    "delta_us": r.delta_us,
                    "a_nodes": r.a_nodes,
                    "b_nodes": r.b_nodes,
                }
                for r in self.rows
            ],
        }


def parse_profile(events: list[dict[str, Any]], *, skip_runs: int = 0) -> tuple[list[NodeTime], list[float], int]:
    """Turn ONNX Runtime profiler events into per-node medians.

    Args:
        events: The parsed JSON array ONNX Runtime wrote.
        skip_runs: Leading ``model_run`` calls to drop (the warm-up).

    Returns:
        The nodes (slowest first), the duration of every kept ``model_run`` in µs, and how many runs were kept.
    """
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    kept = runs[skip_runs:]
    t_start = kept[0]["ts"] if kept else 0
    per_node: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < t_start:
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        per_node[name].append(float(e.get("dur", 0)))
        meta[name] = (str(args.get("op_name", "?")), str(args.get("provider", "?")))
    nodes = [NodeTime(name, meta[name][0], meta[name][1], float(np.median(d)), len(d)) for name, d in per_node.items()]
    nodes.sort(key=lambda n: -n.median_us)
    return nodes, [float(e.get("dur", 0)) for e in kept], len(kept)


def profile_model(
    path: str | os.PathLike[str],
    *,
    runs: int = 30,
    warmup: int = 5,
    threads: int = 1,
    inputs: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 1,
    dim_overrides: Mapping[str, int] | None = None,
    seed: int = 0,
) -> OpProfile:
    """Profile one ONNX model with ONNX Runtime's profiler.

    Args:
        path: The ``.onnx`` file.
        runs: Timed runs kept.
        warmup: Runs before them, dropped from the statistics.
        threads: Intra-op threads (0: onnxruntime default).
        inputs: Feed dict; generated from the signature when ``None``.
        batch_size: Size of a dynamic first dimension for generated inputs.
        dim_overrides: Sizes of named dynamic dimensions for generated inputs.
        seed: Seed of generated inputs.

    Returns:
        The :class:`OpProfile`.

    Raises:
        InputError: The file is missing, onnxruntime cannot load it, the inputs do not fit, or ``runs < 1``.
    """
    import onnxruntime as ort

    if runs < 1 or warmup < 0:
        raise InputError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; check the path")
    with tempfile.TemporaryDirectory(prefix="tensorslim-prof-") as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        try:
            sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{p}: onnxruntime cannot load the model ({msg})") from None
        specs = specs_from_session(sess)
        if inputs is None:
            from tensorslim.backends.onnx.io import load_model

            bounds = index_bounds(load_model(p, check=False, external_data=False))
            # sizes the model leaves open are tried on a session of their own: the profile counts only its runs
            probe = [create_session(str(p), threads)[0]] if unsized_dims(specs, dim_overrides) else [sess]
            shared, _, _ = runnable_inputs(
                probe, batch_size=batch_size, dim_overrides=dim_overrides, seed=seed, model_name=p.name, bounds=bounds
            )
            del probe
        else:
            shared = {k: np.asarray(v) for k, v in inputs.items()}
        feeds = feeds_for(p.name, specs, shared)
        out_names = [o.name for o in sess.get_outputs()]
        try:
            for _ in track(range(warmup + runs), f"profiling {p.name}"):
                sess.run(out_names, feeds)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            made = "made-up " if inputs is None else ""
            hint = f"; {PASS_REAL_INPUTS}" if inputs is None else "; check that the data fits the model"
            raise InputError(f"{p}: inference fails with the {made}profiling inputs ({msg}){hint}") from None
        prof_file = sess.end_profiling()
        events = json.loads(Path(prof_file).read_text(encoding="utf-8"))
    nodes, run_us, kept = parse_profile(events, skip_runs=warmup)
    return OpProfile(str(p), kept, float(np.median(run_us)) if run_us else 0.0, tuple(nodes), threads)


def diff_profiles(a: OpProfile, b: OpProfile) -> ProfileDiff:
    """Line two profiles up by op type, largest absolute change first."""
    ta, tb = a.by_op_type(), b.by_op_type()
    ca, cb = a.count_by_op_type(), b.count_by_op_type()
    rows = [OpDiffRow(op, ta.get(op, 0.0), tb.get(op, 0.0), ca.get(op, 0), cb.get(op, 0)) for op in set(ta) | set(tb)]
    rows.sort(key=lambda r: -abs(r.delta_us))
    return ProfileDiff(a, b, tuple(rows))
