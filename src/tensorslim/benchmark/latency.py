"""Latency measurement: session creation, warm-up, interleaved timed runs and their statistics.

Timed runs of several models are interleaved round robin (``round_size`` runs of one model, then the
next, with the starting model rotating every round) so that clock-frequency changes, thermal drift and
noisy neighbours hit every model alike.

Confidence intervals. Run times on a shared machine are not independent draws: the speed of the
machine drifts over seconds and minutes (other tenants, clock frequency), so a bootstrap that resamples
single runs gives an interval of a fraction of a percent that a second run of the same command misses
by several percent. The stated 95 % interval of a median is therefore the wider of two intervals:

* the percentile bootstrap over single runs (:func:`bootstrap_median_ci`), right for a quiet machine;
* a batch-means interval (:func:`block_median_ci`): the runs are cut into up to :data:`CI_BLOCKS`
  consecutive blocks of whole rounds, and the spread of the block medians (Student t, blocks - 1
  degrees of freedom) gives the half-width around the overall median. Drift during the run widens it.

Ratios between models (:func:`paired_ratio_ci`) use the same blocks *paired*: in each block both models
ran interleaved in the same seconds, so drift common to both cancels in the block's ratio.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorslim.errors import InputError

__all__ = [
    "CI_BLOCKS",
    "LatencyStats",
    "block_bounds",
    "block_median_ci",
    "bootstrap_median_ci",
    "create_session",
    "interleaved_runs",
    "latency_stats",
    "paired_ratio_ci",
    "ratio_ci",
    "session_options",
    "timed_ratio",
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
#: Batch-means confidence intervals cut the timed runs into at most this many consecutive blocks.
CI_BLOCKS = 16
#: :func:`timed_ratio`: a round (every model's turn) lasts about this long at most, so that the models of a
#: round see the machine in the same state (a shared host's speed changes over seconds).
ROUND_S = 0.1
#: ... and each block holds at least this many runs (fewer blocks for short runs).
MIN_BLOCK_RUNS = 3
#: Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (index = df - 1).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def session_options(threads: int = 1, *, allow_spinning: bool = True, denormal_as_zero: bool = False) -> Any:
    """Build the ``onnxruntime.SessionOptions`` every benchmark uses.

    Graph optimisation level ``ORT_ENABLE_ALL``, ``intra_op_num_threads = threads`` (0 = onnxruntime
    default), ``inter_op_num_threads = 1``, sequential execution.

    Args:
        threads: Intra-op threads; 0 lets onnxruntime choose.
        allow_spinning: Whether idle intra-op threads busy-wait (onnxruntime's default). Turning it off
            keeps one session's spinning pool from stealing cores from the next one when interleaving.
        denormal_as_zero: Flush denormal floats to zero (``session.set_denormal_as_zero``). Softmax over
            masked attention scores produces denormals that slow x86 float units several-fold; a deployment
            can set this option, and a comparison must set it for every model alike.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # failures come back as exceptions, worded by the caller: no ONNX Runtime log line
    if not allow_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if denormal_as_zero:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return so


def create_session(
    path: str, threads: int = 1, *, allow_spinning: bool = True, denormal_as_zero: bool = False
) -> tuple[Any, float]:
    """Create a CPU ``InferenceSession`` and time it.

    Returns:
        The session and its creation time in ms.

    Raises:
        InputError: onnxruntime cannot load the model; the message names the file.
    """
    import onnxruntime as ort

    so = session_options(threads, allow_spinning=allow_spinning, denormal_as_zero=denormal_as_zero)
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail / InvalidGraph / InvalidProtobuf / RuntimeError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: onnxruntime cannot load the model ({msg})") from None
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
    on_round: Callable[[float], None] | None = None,
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
        on_round: Called after every round with the seconds elapsed so far (for a progress bar).

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
            if on_round is not None:
                on_round(time.perf_counter() - start)
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


def ratio_ci(
    ref: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of ``median(cand) / median(ref)``, each sample resampled independently.

    Returns:
        ``(low, high)``, or ``None`` when either sample has fewer than 2 values.
    """
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, min(n_boot, 4_000_000 // max(a.size, b.size)))  # bound the index matrices to ~32 MB each
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        ma = np.median(a[rng.integers(0, a.size, (hi - lo, a.size))], axis=1)
        mb = np.median(b[rng.integers(0, b.size, (hi - lo, b.size))], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[lo:hi] = mb / ma
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _t975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.5 / df


def block_bounds(n: int, round_size: int = 1, max_blocks: int = CI_BLOCKS) -> list[tuple[int, int]]:
    """Cut ``n`` runs measured in rounds of ``round_size`` into consecutive blocks of whole rounds.

    Returns:
        ``[(start, stop), ...]`` sample index ranges; empty when fewer than 3 blocks of at least
        :data:`MIN_BLOCK_RUNS` runs fit (too few runs for a batch-means interval).
    """
    round_size = max(1, round_size)
    rounds = -(-n // round_size)
    b = min(max_blocks, rounds, n // MIN_BLOCK_RUNS)
    if b < 3:
        return []
    edges = [min(n, round(i * rounds / b) * round_size) for i in range(b + 1)]
    edges[-1] = n
    return [(edges[i], edges[i + 1]) for i in range(b) if edges[i + 1] > edges[i]]


def block_median_ci(
    samples: Sequence[float] | np.ndarray, *, round_size: int = 1, max_blocks: int = CI_BLOCKS
) -> tuple[float, float] | None:
    """Batch-means 95 % interval of the median of runs measured in order.

    The runs are cut into consecutive blocks (:func:`block_bounds`); the half-width is Student's t times
    the standard deviation of the block medians over the square root of the number of blocks, centred on
    the median of all runs. On a steady machine it matches the bootstrap; drift during the run widens it.

    Returns:
        ``(low, high)``, or ``None`` when there are too few runs for 3 blocks.
    """
    x = np.asarray(samples, dtype=np.float64)
    bounds = block_bounds(x.size, round_size, max_blocks)
    if len(bounds) < 3:
        return None
    meds = np.array([np.median(x[a:b]) for a, b in bounds])
    half = _t975(meds.size - 1) * float(meds.std(ddof=1)) / np.sqrt(meds.size)
    centre = float(np.median(x))
    return centre - half, centre + half


def paired_ratio_ci(
    ref: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    *,
    round_size: int = 1,
    max_blocks: int = CI_BLOCKS,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95 % interval of ``median(cand) / median(ref)`` for two models timed in the same interleaved rounds.

    The wider of the independent bootstrap (:func:`ratio_ci`) and a paired batch-means interval: the
    log of the ratio of block medians, block by block (both models ran in the same seconds), Student t
    over the blocks, centred on the log of the overall ratio. Drift that slows both models alike cancels.

    Returns:
        ``(low, high)`` around the ratio of the medians, or ``None`` when either model has fewer than 2 runs.
    """
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    iid = ratio_ci(a, b, n_boot=n_boot, seed=seed)
    if iid is None:
        return None
    ma, mb = float(np.median(a)), float(np.median(b))
    bounds = block_bounds(min(a.size, b.size), round_size, max_blocks)
    if ma <= 0 or mb <= 0 or len(bounds) < 3:
        return iid
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.array([np.log(np.median(b[s:e]) / np.median(a[s:e])) for s, e in bounds])
    if not np.all(np.isfinite(logs)):
        return iid
    half = _t975(logs.size - 1) * float(logs.std(ddof=1)) / np.sqrt(logs.size)
    point = mb / ma
    return min(iid[0], point * float(np.exp(-half))), max(iid[1], point * float(np.exp(half)))


def timed_ratio(
    ref: Callable[[], object], cand: Callable[[], object], *, seconds: float, min_runs: int = 10, max_round: int = 5
) -> tuple[float, float, float]:
    """How long ``cand`` takes against ``ref``, timed interleaved: ``(ratio, low, high)``, its 95 % interval.

    The ratio is the median over rounds of each round's ``median(cand) / median(ref)``: the two models of a round
    ran within :data:`ROUND_S` of each other, so a change of the machine's speed between rounds (on a shared
    host, by a third for seconds at a time) cancels in every round, where the ratio of the overall medians mixes
    the slow and the fast seconds unevenly. The round's runs per model (1 to ``max_round``) follow the models'
    time, measured on two warm-up runs; the interval is :func:`paired_ratio_ci`'s, widened to hold the ratio.
    """
    for _ in range(2):
        ref()
        cand()
    t0 = time.perf_counter()
    ref()
    cand()
    per_pair = time.perf_counter() - t0
    size = int(max(1, min(max_round, ROUND_S // max(per_pair, 1e-9))))
    a, b = interleaved_runs([ref, cand], min_runs=min_runs, max_time_s=seconds, round_size=size)
    n = min(len(a), len(b)) // size
    with np.errstate(divide="ignore", invalid="ignore"):
        per_round = (np.median(np.asarray(b[: n * size]).reshape(n, size), axis=1)
                     / np.median(np.asarray(a[: n * size]).reshape(n, size), axis=1))  # fmt: skip
    per_round = per_round[np.isfinite(per_round)]
    ratio = float(np.median(per_round)) if per_round.size else float(np.median(b) / np.median(a))
    ci = paired_ratio_ci(a, b, round_size=size) or (ratio, ratio)
    return ratio, min(float(ci[0]), ratio), max(float(ci[1]), ratio)


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
    ci_blocks: int = 0


def latency_stats(
    samples_ms: Sequence[float],
    *,
    seed: int = 0,
    n_boot: int = 1000,
    round_size: int = 1,
    max_blocks: int = CI_BLOCKS,
) -> LatencyStats:
    """Percentiles (linear interpolation), mean, min and the 95 % CI of the median.

    The CI is the union of the bootstrap over single runs and the batch-means interval over consecutive
    blocks of rounds (see the module docstring); ``ci_blocks`` is the number of blocks (0: too few runs,
    bootstrap only).

    Args:
        samples_ms: Latencies in measurement order.
        seed: Seed of the bootstrap.
        n_boot: Bootstrap resamples.
        round_size: Runs per interleaving round (blocks hold whole rounds).
        max_blocks: Most blocks of the batch-means interval; 0 turns it off.

    Raises:
        InputError: ``samples_ms`` is empty.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    lo, hi = bootstrap_median_ci(x, n_boot=n_boot, seed=seed)
    blocks = block_bounds(x.size, round_size, max_blocks) if max_blocks >= 3 else []
    batch = block_median_ci(x, round_size=round_size, max_blocks=max_blocks) if blocks else None
    if batch is not None:
        lo, hi = min(lo, batch[0]), max(hi, batch[1])
    return LatencyStats(
        p50=p50,
        p90=p90,
        p99=p99,
        mean=float(x.mean()),
        min=float(x.min()),
        ci_low=lo,
        ci_high=hi,
        runs=int(x.size),
        ci_blocks=len(blocks) if batch is not None else 0,
    )
