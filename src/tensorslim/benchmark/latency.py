"""Latency measurement: session creation, warm-up, interleaved timed runs and their statistics.

Timed runs of several models are interleaved round robin (``round_size`` runs of one model, then the
next, with the starting model rotating every round) so that clock-frequency changes, thermal drift and
noisy neighbours hit every model alike.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LatencyStats",
    "bootstrap_median_ci",
    "create_session",
    "interleaved_runs",
    "latency_stats",
    "session_options",
    "warm_up",
]

log = logging.getLogger(__name__)

#: Auto warm-up: compare the medians of two consecutive windows of this many runs.
STABLE_WINDOW = 5
#: Auto warm-up: the windows' medians must agree within this relative tolerance.
STABLE_TOL = 0.05
#: Auto warm-up never does more runs than this.
MAX_AUTO_WARMUP_RUNS = 200
#: Hard cap on timed runs per model, bounding memory for very fast models.
MAX_RUNS = 200_000


def session_options(threads: int = 1, *, allow_spinning: bool = True) -> Any:
    """Build the ``onnxruntime.SessionOptions`` every benchmark uses.

    Graph optimisation level ``ORT_ENABLE_ALL``, ``intra_op_num_threads = threads`` (0 = onnxruntime
    default), ``inter_op_num_threads = 1``, sequential execution.

    Args:
        threads: Intra-op threads; 0 lets onnxruntime choose.
        allow_spinning: Whether idle intra-op threads busy-wait (onnxruntime's default). Turning it off
            keeps one session's spinning pool from stealing cores from the next one when interleaving.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not allow_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def create_session(path: str, threads: int = 1, *, allow_spinning: bool = True) -> tuple[Any, float]:
    """Create a CPU ``InferenceSession`` and time it.

    Returns:
        The session and its creation time in ms.

    Raises:
        ValueError: onnxruntime cannot load the model; the message names the file.
    """
    import onnxruntime as ort

    so = session_options(threads, allow_spinning=allow_spinning)
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail / InvalidGraph / InvalidProtobuf / RuntimeError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: onnxruntime cannot load the model ({msg})") from None
    return sess, (time.perf_counter() - t0) * 1e3


def _time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def _is_stable(samples: Sequence[float], window: int = STABLE_WINDOW, tol: float = STABLE_TOL) -> bool:
    if len(samples) < 2 * window:
        return False
    cur = float(np.median(samples[-window:]))
    prev = float(np.median(samples[-2 * window : -window]))
    return prev > 0 and abs(cur - prev) / prev <= tol


def warm_up(fn: Callable[[], object], *, runs: int | None, time_budget_s: float) -> int:
    """Run ``fn`` untimed until latency settles.

    Args:
        fn: One inference call.
        runs: A fixed number of warm-up runs, or ``None`` for auto: run until the median of the last
            :data:`STABLE_WINDOW` runs is within :data:`STABLE_TOL` of the median of the window before,
            bounded by :data:`MAX_AUTO_WARMUP_RUNS` runs and ``time_budget_s`` (at least 1 run).

    Returns:
        The number of warm-up runs done.
    """
    if runs is not None:
        for _ in range(runs):
            fn()
        return runs
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        samples.append(_time_once(fn))
        if _is_stable(samples):
            break
        if len(samples) >= MAX_AUTO_WARMUP_RUNS or time.perf_counter() - start >= time_budget_s:
            log.debug("warm-up stopped at its bound after %d runs (not stable)", len(samples))
            break
    return len(samples)


def interleaved_runs(
    fns: Sequence[Callable[[], object]],
    *,
    min_runs: int,
    max_time_s: float,
    round_size: int = 5,
    round_warmup: int = 1,
) -> list[list[float]]:
    """Time every function in interleaved rounds until the time budget is spent.

    Each round runs every function ``round_size`` times back to back, after ``round_warmup`` untimed
    runs (only with several functions): the first run after switching models finds the caches full of
    the other model's data and is several times slower for small models, an artefact of interleaving
    that must not end up in the tail percentiles. The function that goes first rotates every round.
    Rounds continue while any function has fewer than ``min_runs`` samples or the total elapsed time is
    below ``max_time_s`` (and no function has :data:`MAX_RUNS` samples).
    The garbage collector is paused while timing.

    Args:
        fns: One zero-argument inference call per model.
        min_runs: Minimum timed runs per function.
        max_time_s: Time budget for all functions together, in s.
        round_size: Timed runs per function per round.
        round_warmup: Untimed runs at the start of each function's turn when there are several.

    Returns:
        The latencies in ms, one list per function, in measurement order.
    """
    n = len(fns)
    samples: list[list[float]] = [[] for _ in range(n)]
    if n == 0:
        return samples
    round_size = max(1, round_size)
    switch_runs = max(0, round_warmup) if n > 1 else 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    rnd = 0
    try:
        while True:
            done_min = min(len(s) for s in samples) >= min_runs
            if done_min and time.perf_counter() - start >= max_time_s:
                break
            if max(len(s) for s in samples) >= MAX_RUNS:
                break
            for k in range(n):
                i = (rnd + k) % n
                fn, out = fns[i], samples[i]
                for _ in range(switch_runs):
                    fn()
                for _ in range(round_size):
                    t0 = time.perf_counter_ns()
                    fn()
                    out.append((time.perf_counter_ns() - t0) / 1e6)
            rnd += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    log.debug("interleaved timing: %d rounds, %.2f s", rnd, time.perf_counter() - start)
    return samples


def bootstrap_median_ci(
    samples: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median.

    Args:
        samples: The measurements.
        n_boot: Number of resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator (fixed seed, reproducible interval).

    Returns:
        ``(low, high)``; both equal the single value for one sample.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    medians = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, min(n_boot, 4_000_000 // x.size))  # bound the index matrix to ~32 MB
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, x.size, size=(hi - lo, x.size))
        medians[lo:hi] = np.median(x[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [alpha, 1.0 - alpha])
    return (float(low), float(high))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one model's timed runs, in ms."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    ci_low: float
    ci_high: float
    runs: int


def latency_stats(samples_ms: Sequence[float], *, seed: int = 0, n_boot: int = 1000) -> LatencyStats:
    """Percentiles (linear interpolation), mean, min and the bootstrap CI of the median.

    Raises:
        ValueError: ``samples_ms`` is empty.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    lo, hi = bootstrap_median_ci(x, n_boot=n_boot, seed=seed)
    return LatencyStats(
        p50=p50,
        p90=p90,
        p99=p99,
        mean=float(x.mean()),
        min=float(x.min()),
        ci_low=lo,
        ci_high=hi,
        runs=int(x.size),
    )
