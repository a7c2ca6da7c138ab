"""``benchmark_litert``: size, load time and latency of ``.tflite`` models in the LiteRT interpreter, side
by side, with the same interleaved timing and statistics as the ONNX Runtime benchmark
(:mod:`tensorslim.benchmark.latency`).

Inputs are generated once from the first model's signature and fed to every model in its own dtype
(quantized beforehand for integer-only models, so that the timed call is the interpreter alone). Peak
memory is not measured for LiteRT models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.benchmark.latency import interleaved_runs, latency_stats, warm_up
from tensorslim.benchmark.report import BenchReport, EnvInfo, ModelBench
from tensorslim.benchmark.sysinfo import cpu_info
from tensorslim.data import generate_runnable
from tensorslim.errors import InputError
from tensorslim.runtime.litert import LiteRTRuntime

__all__ = ["benchmark_litert"]


def _weight_bytes(path: Path) -> int:
    from tensorslim.backends.tflite.io import load_model

    model = load_model(path)
    used = {int(t.buffer) for sg in model.subgraphs for t in sg.tensors or []}
    return sum(len(model.buffers[b].data) for b in used if model.buffers[b].data is not None)


def _env(threads: int) -> EnvInfo:
    import platform

    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        litert = "unknown"
    import onnxruntime as ort

    model, flags = cpu_info()
    return EnvInfo(str(ort.__version__), f"LiteRT CPU (ai-edge-litert {litert})", threads, model, flags,
                   platform.machine(), platform.python_version())  # fmt: skip


def _call(rt: LiteRTRuntime, arrays: list[np.ndarray]) -> Callable[[], object]:
    def fn() -> object:
        return rt.invoke(arrays)

    return fn


def benchmark_litert(
    paths: Sequence[str | Path],
    *,
    threads: int = 1,
    batch_size: int = 1,
    min_runs: int = 20,
    max_time_s: float = 5.0,
    seed: int = 0,
    round_size: int = 5,
    round_warmup: int = 1,
    load_repeats: int = 3,
) -> BenchReport:
    """Measure ``.tflite`` models side by side; ratios in the report are against the first model.

    Raises:
        InputError: no paths or bad arguments.
        InputError: a file LiteRT cannot load, or inputs that do not fit a model.
    """
    if isinstance(paths, str | Path) or len(paths) == 0:
        raise InputError("paths must be a non-empty sequence of model paths")
    if threads < 0 or batch_size < 1 or min_runs < 1 or max_time_s < 0:
        raise InputError("threads >= 0, batch_size >= 1, min_runs >= 1 and max_time_s >= 0 are required")
    model_paths = [Path(p) for p in paths]
    names = [p.name if [q.name for q in model_paths].count(p.name) == 1 else str(p) for p in model_paths]
    runtimes: list[Any] = [None] * len(model_paths)
    load_ms: list[list[float]] = [[] for _ in model_paths]
    from tensorslim.backends.tflite.safety import vet

    for p in model_paths:  # the safety checks run once, outside the timed loads
        vet(p, label=str(p))
    for _ in range(max(1, load_repeats)):
        for i, p in enumerate(model_paths):
            runtimes[i] = None
            t0 = time.perf_counter()
            runtimes[i] = LiteRTRuntime(p, threads=threads)
            load_ms[i].append((time.perf_counter() - t0) * 1e3)
    bounds: dict[str, int] = {}
    for rt in runtimes:  # shared inputs fit every model's tables
        for name, bound in rt.index_bounds().items():
            bounds[name] = min(bounds.get(name, bound), bound)
    data = generate_runnable(runtimes[0], num_samples=batch_size, seed=seed, bounds=bounds)
    fns: list[Callable[[], object]] = []
    for rt in runtimes:
        arrays = rt.prepare(data.inputs)
        rt.invoke(arrays)  # resizes once, outside the timed runs
        fns.append(_call(rt, arrays))
    warmups = [warm_up(fn, runs=None, time_budget_s=0.3 * max_time_s) for fn in fns]
    from tensorslim.benchmark.runner import _busy, _contention

    busy_before = _busy()
    samples_ms = interleaved_runs(
        fns, min_runs=min_runs, max_time_s=max_time_s * len(fns), round_size=round_size, round_warmup=round_warmup
    )
    contention = _contention(busy_before, _busy(), sum(len(s) for s in samples_ms))
    env = _env(threads)
    results = []
    for i, p in enumerate(model_paths):
        st = latency_stats(samples_ms[i], seed=seed, round_size=round_size)
        results.append(
            ModelBench(
                name=names[i], path=str(p), file_bytes=p.stat().st_size, weight_bytes=_weight_bytes(p),
                load_ms=float(np.mean(load_ms[i])), load_ms_runs=tuple(load_ms[i]), p50_ms=st.p50, p90_ms=st.p90,
                p99_ms=st.p99, mean_ms=st.mean, min_ms=st.min, p50_ci_low_ms=st.ci_low, p50_ci_high_ms=st.ci_high,
                runs=st.runs, warmup_runs=warmups[i], batch_size=batch_size,
                throughput=batch_size / (st.mean / 1e3) if st.mean > 0 else float("inf"), memory=None,
                memory_error="not measured for LiteRT models", env=env, latencies_ms=tuple(samples_ms[i]),
                ci_blocks=st.ci_blocks,
            )
        )  # fmt: skip
    settings: dict[str, Any] = {
        "runtime": "litert",
        "threads": threads,
        "batch_size": batch_size,
        "min_runs": min_runs,
        "max_time_s": max_time_s,
        "round_size": round_size,
        "seed": seed,
        "interleaved": len(fns) > 1,
        "input_shapes": {k: list(v.shape) for k, v in data.inputs.items()},
        "contention": contention,
    }
    from tensorslim.benchmark.runner import with_ratio_cis

    results = with_ratio_cis(results, round_size=round_size, seed=seed)
    return BenchReport(models=tuple(results), env=env, settings=settings)
