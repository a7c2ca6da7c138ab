"""``benchmark_models``: measure one or more ONNX models side by side (what ``tensorslim bench`` runs)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.backends.onnx.indices import index_bounds
from tensorslim.errors import InputError
from tensorslim.progress import progress_bar

from .inputs import InputSpec, feeds_for, runnable_inputs, specs_from_session, unsized_dims
from .latency import create_session, interleaved_runs, latency_stats, paired_ratio_ci, warm_up
from .memory import measure_memory as _measure_memory
from .model_info import file_bytes, load_model_proto, weight_bytes
from .report import BenchReport, MemoryStats, ModelBench
from .sysinfo import env_info

__all__ = ["benchmark_models", "with_ratio_cis"]

log = logging.getLogger(__name__)


def _display_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def _runner(sess: Any, feeds: dict[str, Any]) -> Callable[[], object]:
    run = sess.run
    output_names = [o.name for o in sess.get_outputs()]

    def fn() -> object:
        return run(output_names, feeds)

    return fn


def _unpack_packed(model_paths: list[Path]) -> tuple[dict[int, int], list[Any]]:
    """Replace ``.tslim`` entries by unpacked temporary ONNX files; ``{index: .tslim size}`` and the temp dirs."""
    sizes: dict[int, int] = {}
    keep: list[Any] = []
    for i, p in enumerate(model_paths):
        if p.suffix.lower() == ".tslim":
            from tensorslim.pack import unpack_to_temp

            if not p.is_file():
                raise InputError(f"{p}: no such file; check the path")
            sizes[i] = p.stat().st_size
            model_paths[i], tmp = unpack_to_temp(p)
            keep.append(tmp)
    return sizes, keep


def with_ratio_cis(models: Sequence[ModelBench], *, round_size: int, seed: int = 0) -> list[ModelBench]:
    """Fill ``p50_ratio`` and ``p50_ratio_ci`` of every model after the first from the timed runs."""
    if not models:
        return []
    ref = models[0]
    out = [ref]
    for m in models[1:]:
        ratio = m.p50_ms / ref.p50_ms if ref.p50_ms > 0 else None
        ci = paired_ratio_ci(ref.latencies_ms, m.latencies_ms, round_size=round_size, seed=seed) if ratio else None
        out.append(dataclasses.replace(m, p50_ratio=ratio, p50_ratio_ci=ci))
    return out


def _busy() -> tuple[float | None, int]:
    """The 1-minute load average (``None`` where unknown) and this process's involuntary context switches."""
    import os
    import resource

    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, int(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)


def _contention(before: tuple[float | None, int], after: tuple[float | None, int], runs: int) -> dict[str, Any]:
    """How busy the machine was while timing: load average and preemptions of this process per timed run.

    Medians and intervals describe the machine as it was during the run; when other processes compete for
    the CPU (load above the core count, frequent preemption) a run at another moment can differ by more
    than the interval, which only covers the variation seen within the run.
    """
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    loads = [x for x in (before[0], after[0]) if x is not None]
    load = max(loads) if loads else None
    per_run = (after[1] - before[1]) / runs if runs else 0.0
    busy = (load is not None and load > cpus - 0.5) or per_run > 0.05
    return {"load_avg_1m": load, "cpus": cpus, "preemptions_per_run": per_run, "busy": bool(busy)}


def _check_args(
    paths: Sequence[Any], threads: int, batch_size: int, min_runs: int, max_time_s: float, round_size: int
) -> None:
    if isinstance(paths, str | Path):
        raise ValueError("paths must be a sequence of model paths, not a single path")
    if len(paths) == 0:
        raise InputError("no model paths given")
    if threads < 0:
        raise InputError(f"threads must be >= 0 (0 = onnxruntime default), got {threads}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if min_runs < 1:
        raise InputError(f"min_runs must be >= 1, got {min_runs}")
    if max_time_s < 0:
        raise InputError(f"max_time_s must be >= 0, got {max_time_s}")
    if round_size < 1:
        raise InputError(f"round_size must be >= 1, got {round_size}")


def _resolve_inputs(
    names: Sequence[str],
    sessions: Sequence[Any],
    specs: Sequence[list[InputSpec]],
    inputs: Mapping[str, np.ndarray] | None,
    batch_size: int,
    dim_overrides: Mapping[str, int] | None,
    seed: int,
    bounds: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, np.ndarray], int, list[dict[str, Any]]]:
    if inputs is None:
        shared, samples, _ = runnable_inputs(
            sessions, batch_size=batch_size, dim_overrides=dim_overrides, seed=seed, model_name=names[0], bounds=bounds,
            shapes=shapes,
        )  # fmt: skip
    else:
        shared = {k: np.asarray(v) for k, v in inputs.items()}
        samples = batch_size
        known = {s.name for model_specs in specs for s in model_specs}
        unknown = sorted(set(shared) - known)
        if unknown:
            raise InputError(f"inputs {unknown} are not inputs of any model ({', '.join(names)})")
    feeds = [feeds_for(name, model_specs, shared) for name, model_specs in zip(names, specs, strict=True)]
    return shared, samples, feeds


def benchmark_models(
    paths: Sequence[str | Path],
    *,
    threads: int = 1,
    batch_size: int = 1,
    inputs: Mapping[str, np.ndarray] | None = None,
    dim_overrides: Mapping[str, int] | None = None,
    warmup: int | None = None,
    min_runs: int = 20,
    max_time_s: float = 5.0,
    measure_memory: bool = True,
    seed: int = 0,
    round_size: int = 5,
    round_warmup: int = 1,
    load_repeats: int = 3,
    allow_spinning: bool | None = None,
    memory_runs: int = 5,
    memory_timeout_s: float = 600.0,
    denormal_as_zero: bool = False,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> BenchReport:
    """Measure size, load time, latency, throughput and memory of ONNX models, side by side.

    Timed runs of all models are interleaved in the same process (round robin, ``round_size`` runs per
    model per round) so drift affects all alike; ratios in the report are against the first model.
    Memory is measured in a fresh subprocess per model (see :mod:`tensorslim.benchmark.memory`).

    Args:
        paths: The ``.onnx`` files; the first one is the reference of all ratios.
        threads: Intra-op threads (0 = onnxruntime default); inter-op threads are 1, execution sequential.
        batch_size: Size of a dynamic first input dimension, and samples per run for ``throughput``.
        inputs: Feed dict shared by all models; generated from the first model's signature when ``None``.
        dim_overrides: Sizes of named symbolic dimensions for generated inputs, e.g. ``{"sequence": 128}``.
        warmup: Warm-up runs per model; ``None`` = until the median of the last 5 runs is stable within
            5 % (bounded by 200 runs and 30 % of ``max_time_s``).
        min_runs: Minimum timed runs per model.
        max_time_s: Timed-run budget per model, in s (the interleaved loop runs ``max_time_s * len(paths)``).
        measure_memory: Measure peak RSS in a subprocess per model.
        seed: Seed of generated inputs and of the bootstrap.
        round_size: Timed runs of one model per interleaving round.
        round_warmup: Untimed runs before each model's turn in a round (when several models), so that the
            cache-cold first run after a model switch does not pollute the percentiles.
        load_repeats: Session creations averaged into ``load_ms``.
        allow_spinning: Let idle onnxruntime threads busy-wait; ``None`` = on, except when several models
            are interleaved with ``threads != 1`` (spinning pools would steal cores from the next model).
        memory_runs: Inference runs in the memory worker.
        memory_timeout_s: Time limit of one memory worker.
        denormal_as_zero: Flush denormal floats to zero in every session (ONNX Runtime's
            ``session.set_denormal_as_zero``); recorded in the settings.
        shapes: Whole shapes of generated inputs by input name (``--shape x=1x3x224x224``). Dims the model leaves
            open that neither this nor ``dim_overrides`` sizes are generated at 1 (the first at ``batch_size``):
            the settings list them (``unsized_inputs``) and :func:`~tensorslim.benchmark.table.shape_note` warns.

    Returns:
        The :class:`BenchReport`.

    Raises:
        InputError: A path is missing or not a loadable ONNX model, an argument is out of range, inputs
            cannot be generated, or one input dict cannot feed every model. The message names the file
            (or model) and the problem.
    """
    _check_args(paths, threads, batch_size, min_runs, max_time_s, round_size)
    model_paths = [Path(p) for p in paths]
    names = _display_names(model_paths)
    packed, _keep_alive = _unpack_packed(model_paths)  # .tslim files are timed from a temporary unpacked ONNX
    spinning = allow_spinning if allow_spinning is not None else not (len(model_paths) > 1 and threads != 1)

    # Static facts; fails fast on missing / unparsable files.
    static: list[tuple[int, int]] = []
    bounds: dict[str, int] = {}  # integer inputs that index constant tables stay below the table size
    for i, p in enumerate(model_paths):
        proto = load_model_proto(p)
        static.append((packed.get(i, 0) or file_bytes(proto, p), weight_bytes(proto)))
        for name, bound in index_bounds(proto).items():  # shared inputs fit every model's tables
            bounds[name] = min(bounds.get(name, bound), bound)
        del proto

    # Session creation, interleaved across models after one untimed creation that pays the
    # process-wide onnxruntime start-up cost.
    create_session(str(model_paths[0]), threads, allow_spinning=spinning, denormal_as_zero=denormal_as_zero)
    sessions: list[Any] = [None] * len(model_paths)
    load_ms: list[list[float]] = [[] for _ in model_paths]
    with progress_bar("loading sessions", total=max(1, load_repeats) * len(model_paths)) as bar:
        for _ in range(max(1, load_repeats)):
            for i, p in enumerate(model_paths):
                sessions[i] = None  # release the previous session before creating the next one
                sessions[i], ms = create_session(
                    str(p), threads, allow_spinning=spinning, denormal_as_zero=denormal_as_zero
                )
                load_ms[i].append(ms)
                bar.advance()
    env = env_info(threads, sessions[0].get_providers()[0])

    specs = [specs_from_session(s) for s in sessions]
    shared, samples, feeds = _resolve_inputs(
        names, sessions, specs, inputs, batch_size, dim_overrides, seed, bounds, shapes
    )
    unsized = {} if inputs is not None else unsized_dims(specs[0], dim_overrides, shapes)
    fns = [_runner(s, f) for s, f in zip(sessions, feeds, strict=True)]
    for p, fn in zip(model_paths, fns, strict=True):
        try:
            fn()
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fed = ", ".join(f"{k}{list(np.shape(v))}" for k, v in shared.items())
            fix = "check that the data fits the model" if inputs is not None else \
                "pass real inputs: --data DATA.npz or --shape NAME=SIZES"
            raise InputError(f"{p}: inference fails with the benchmark inputs {fed} ({msg}); {fix}") from None

    memory: list[MemoryStats | None] = [None] * len(model_paths)
    memory_errors: list[str | None] = [None] * len(model_paths)
    if measure_memory:
        with progress_bar("memory (fresh process per model)", total=len(model_paths)) as bar:
            for i, p in enumerate(model_paths):
                bar.describe(f"memory: {names[i]}")
                try:
                    memory[i] = _measure_memory(
                        p, feeds[i], threads=threads, runs=memory_runs, timeout_s=memory_timeout_s
                    )
                except RuntimeError as exc:
                    log.warning("%s", exc)
                    memory_errors[i] = str(exc)
                bar.advance()

    warmups = []
    with progress_bar("warm-up", total=len(fns)) as bar:
        for name, fn in zip(names, fns, strict=True):
            bar.describe(f"warm-up: {name}")
            warmups.append(1 + warm_up(fn, runs=warmup, time_budget_s=0.3 * max_time_s))  # 1 = the check run
            bar.advance()
    if len(fns) > 1:  # one untimed interleaved round re-warms caches after the other models' warm-up
        interleaved_runs(fns, min_runs=1, max_time_s=0.0, round_size=round_size, round_warmup=round_warmup)
        warmups = [w + round_size + round_warmup for w in warmups]
    log.info("timing %d model(s) interleaved for ~%.1f s", len(fns), max_time_s * len(fns))
    budget = max_time_s * len(fns)
    busy_before = _busy()
    with progress_bar(f"timing {len(fns)} model(s) interleaved (s)", total=round(budget, 1)) as bar:
        shown = [0.0]

        def on_round(elapsed: float) -> None:
            step = min(elapsed, budget) - shown[0]
            if step >= 0.1:
                bar.advance(step)
                shown[0] += step

        samples_ms = interleaved_runs(
            fns,
            min_runs=min_runs,
            max_time_s=budget,
            round_size=round_size,
            round_warmup=round_warmup,
            on_round=on_round,
        )
    contention = _contention(busy_before, _busy(), sum(len(s) for s in samples_ms))

    results = []
    for i in range(len(model_paths)):
        st = latency_stats(samples_ms[i], seed=seed, round_size=round_size)
        results.append(
            ModelBench(
                name=names[i],
                path=str(paths[i]),
                file_bytes=static[i][0],
                weight_bytes=static[i][1],
                load_ms=float(np.mean(load_ms[i])),
                load_ms_runs=tuple(load_ms[i]),
                p50_ms=st.p50,
                p90_ms=st.p90,
                p99_ms=st.p99,
                mean_ms=st.mean,
                min_ms=st.min,
                p50_ci_low_ms=st.ci_low,
                p50_ci_high_ms=st.ci_high,
                runs=st.runs,
                warmup_runs=warmups[i],
                batch_size=samples,
                throughput=samples / (st.mean / 1e3) if st.mean > 0 else float("inf"),
                memory=memory[i],
                memory_error=memory_errors[i],
                env=env,
                latencies_ms=tuple(samples_ms[i]),
                ci_blocks=st.ci_blocks,
            )
        )
    settings: dict[str, Any] = {
        "threads": threads,
        "batch_size": samples,
        "warmup": "auto" if warmup is None else warmup,
        "min_runs": min_runs,
        "max_time_s": max_time_s,
        "round_size": round_size,
        "round_warmup": round_warmup if len(fns) > 1 else 0,
        "seed": seed,
        "interleaved": len(fns) > 1,
        "allow_spinning": spinning,
        "denormal_as_zero": denormal_as_zero,
        "input_shapes": {k: list(v.shape) for k, v in shared.items()},
        "unsized_inputs": unsized,
        "ci": "95%: wider of bootstrap over runs and batch means over <= 16 blocks of rounds; ratios paired by block",
        "contention": contention,
    }
    results = with_ratio_cis(results, round_size=round_size, seed=seed)
    return BenchReport(models=tuple(results), env=env, settings=settings)
