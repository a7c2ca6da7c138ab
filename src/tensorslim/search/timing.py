"""Latency of search candidates, taken in the parent process with ``tensorslim bench``'s harness.

Workers only apply recipes and score them; no worker ever times anything, so no measurement shares the CPU with
a candidate being built or scored. The parent times candidates when the workers are idle: between batches of
trials when the objective needs latency, and once more for the finalists (the built-in recipes, the Pareto front
and the chosen model) after the accuracy work. Each timing is one interleaved run of
:func:`~tensorslim.benchmark.benchmark_models` (the function ``tensorslim bench`` runs) over the float model and a
group of at most ``group`` candidates, so every ratio is against a float model timed in the same rounds, with a
paired 95 % interval; the machine's load during the run is recorded with it.

Flow::

    paths of candidates -> groups of <= group -> benchmark_models([float, *group]) -> Timing per candidate
                                                 (p50 + CI, ratio vs float + CI, session bytes, conditions)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorslim.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Timing", "TimingSettings", "conditions_match", "time_against_float"]


@dataclass(frozen=True)
class TimingSettings:
    """How candidates are timed (the defaults are ``tensorslim bench``'s: one thread, batch 1).

    Attributes:
        threads: Intra-op threads (0: the ONNX Runtime default).
        batch_size: Size of a dynamic first dimension.
        seconds: Timed-run budget per model of each interleaved run.
        min_runs: At least this many timed runs per model.
        memory: Measure each model's session memory in a fresh process.
        group: Candidates per interleaved run (each run also times the float model).
    """

    threads: int = 1
    batch_size: int = 1
    seconds: float = 1.0
    min_runs: int = 20
    memory: bool = True
    group: int = 6

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"threads: {self.threads} must be >= 0 (0: the ONNX Runtime default)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be >= 1")
        if self.seconds < 0:
            raise ConfigError(f"seconds: {self.seconds} must be >= 0")
        if self.min_runs < 1:
            raise ConfigError(f"min_runs: {self.min_runs} must be >= 1")
        if self.group < 1:
            raise ConfigError(f"group: {self.group} must be >= 1")


@dataclass
class Timing:
    """One model's latency from an interleaved run with the float model.

    Attributes:
        p50_ms: Median latency of one run, in ms.
        p50_ci: 95 % interval of the median, ``(low, high)`` in ms.
        ratio: ``p50_ms`` over the float model's median of the same run (1.0 for the float model).
        ratio_ci: 95 % interval of the ratio, paired by interleaving block (``None`` for the float model).
        session_bytes: Session memory (peak RSS of a fresh process minus its baseline), or ``None``.
        conditions: What the figure depends on: ``role`` (``batch`` during the search, ``final`` for the
            finalists), threads, batch, seconds, onnxruntime version, CPU, ``busy`` with the load average and
            preemptions per run, and ``taken`` (UTC time).
    """

    p50_ms: float
    p50_ci: tuple[float, float]
    ratio: float
    ratio_ci: tuple[float, float] | None
    session_bytes: int | None = None
    conditions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        """Inverse of :meth:`to_dict` (lists back to tuples)."""
        ci = d.get("ratio_ci")
        return cls(float(d["p50_ms"]), (float(d["p50_ci"][0]), float(d["p50_ci"][1])), float(d["ratio"]),
                   None if ci is None else (float(ci[0]), float(ci[1])), d.get("session_bytes"),
                   dict(d.get("conditions") or {}))  # fmt: skip


_SAME = ("threads", "batch_size", "input_shapes", "onnxruntime_version", "cpu_model")


def conditions_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two timings were taken with the same threads, batch, runtime and CPU, neither on a busy machine."""
    return all(a.get(k) == b.get(k) for k in _SAME) and not a.get("busy") and not b.get("busy")


def _conditions(report: Any, role: str, s: TimingSettings) -> dict[str, Any]:
    c = dict(report.settings.get("contention") or {})
    return {
        "role": role,
        "threads": s.threads,
        "batch_size": s.batch_size,
        "input_shapes": report.settings.get("input_shapes"),
        "seconds": s.seconds,
        "onnxruntime_version": report.env.onnxruntime_version,
        "cpu_model": report.env.cpu_model,
        "busy": bool(c.get("busy")),
        "load_avg_1m": c.get("load_avg_1m"),
        "cpus": c.get("cpus"),
        "preemptions_per_run": c.get("preemptions_per_run"),
        "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _timing(m: Any, ratio: float, ratio_ci: tuple[float, float] | None, cond: dict[str, Any]) -> Timing:
    mem = None if m.memory is None else int(m.memory.session_rss_bytes)
    return Timing(float(m.p50_ms), (float(m.p50_ci_low_ms), float(m.p50_ci_high_ms)), float(ratio),
                  ratio_ci, mem, cond)  # fmt: skip


def time_against_float(
    float_model: Path,
    paths: Sequence[Path],
    *,
    settings: TimingSettings,
    role: str = "final",
    on_step: Callable[[str], None] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[Timing, list[Timing], list[str]]:
    """Time ``paths`` against ``float_model``, a group at a time, each group interleaved with the float model.

    Args:
        float_model: The reference of every ratio (timed in every group).
        paths: Candidate ``.onnx`` or ``.tslim`` files.
        settings: Threads, batch, time per model, memory, group size.
        role: ``batch`` (a search step) or ``final`` (finalists), recorded in the conditions.
        on_step: Called with a one-line description before each group.
        inputs: The feeds every model is timed on (the search passes the first batch of its evaluation data);
            generated from the float model's signature when ``None``.

    Returns:
        The float model's timing (from the first group), one :class:`Timing` per path in order, and notes
        (one per group timed on a busy machine, worded as ``tensorslim bench`` words it).

    Raises:
        ValueError: a model cannot be loaded or run with the benchmark inputs (the message names it).
    """
    from tensorslim.benchmark import benchmark_models
    from tensorslim.benchmark.table import busy_note

    groups = [list(paths[i : i + settings.group]) for i in range(0, len(paths), settings.group)] or [[]]
    ref: Timing | None = None
    out: list[Timing] = []
    notes: list[str] = []
    for gi, group in enumerate(groups):
        if on_step is not None:
            on_step(f"timing {len(group)} model(s) against the float model, interleaved "
                    f"({gi + 1}/{len(groups)}, {settings.seconds:g} s per model)")  # fmt: skip
        rep = benchmark_models(
            [float_model, *group], threads=settings.threads, batch_size=settings.batch_size,
            max_time_s=settings.seconds, min_runs=settings.min_runs, measure_memory=settings.memory, inputs=inputs,
        )  # fmt: skip
        cond = _conditions(rep, role, settings)
        note = busy_note(rep)
        if note and note not in notes:
            notes.append(note)
        f = rep.models[0]
        if ref is None:
            ref = _timing(f, 1.0, None, cond)
        for m in rep.models[1:]:
            out.append(_timing(m, m.p50_ratio if m.p50_ratio is not None else float("nan"), m.p50_ratio_ci, cond))
    assert ref is not None
    return ref, out, notes
