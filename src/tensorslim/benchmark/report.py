"""Result data classes of the benchmark: :class:`EnvInfo`, :class:`MemoryStats`, :class:`ModelBench`,
:class:`BenchReport`.

All classes are frozen dataclasses with a ``to_dict()`` that returns plain JSON-serialisable values
(``float('nan')`` never appears; missing values are ``None``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["METRICS", "BenchReport", "EnvInfo", "MemoryStats", "ModelBench"]

#: Metric names accepted by :meth:`ModelBench.metric` and :meth:`BenchReport.ratio`.
METRICS: tuple[str, ...] = (
    "file_bytes",
    "weight_bytes",
    "load_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "min_ms",
    "throughput",
    "peak_rss_bytes",
    "session_rss_bytes",
)


@dataclass(frozen=True)
class EnvInfo:
    """Where a benchmark ran.

    Attributes:
        onnxruntime_version: ``onnxruntime.__version__``.
        execution_provider: First provider of the session, e.g. ``"CPUExecutionProvider"``.
        threads: Requested intra-op thread count (0 means the onnxruntime default).
        cpu_model: CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``).
        cpu_flags: ISA flags relevant to int8/fp16 kernels that the CPU reports, sorted.
        machine: ``platform.machine()``, e.g. ``"x86_64"``.
        python_version: ``platform.python_version()``.
    """

    onnxruntime_version: str
    execution_provider: str
    threads: int
    cpu_model: str
    cpu_flags: tuple[str, ...]
    machine: str
    python_version: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with the attribute names as keys (``cpu_flags`` as a list)."""
        return {**asdict(self), "cpu_flags": list(self.cpu_flags)}


@dataclass(frozen=True)
class MemoryStats:
    """Resident memory of a fresh subprocess that loads and runs one model.

    Attributes:
        baseline_rss_bytes: RSS of the worker after importing numpy/onnxruntime and creating the inputs,
            before any session exists.
        peak_rss_session_bytes: Peak RSS (high-water mark) up to the end of session creation.
        peak_rss_inference_bytes: Peak RSS up to the end of the inference runs (>= the previous value).
        source: How the peak was read: ``"VmHWM"`` (Linux ``/proc/self/status``, exact for the process)
            or ``"ru_maxrss"`` (fallback).
        cold_load_ms: Creation time of the worker's session, the first one in a fresh process (cold load;
            ``load_ms`` of :class:`ModelBench` is the warm figure).
    """

    baseline_rss_bytes: int
    peak_rss_session_bytes: int
    peak_rss_inference_bytes: int
    source: str
    cold_load_ms: float | None = None

    @property
    def peak_rss_bytes(self) -> int:
        """Peak RSS of the whole worker process."""
        return max(self.peak_rss_session_bytes, self.peak_rss_inference_bytes)

    @property
    def session_rss_bytes(self) -> int:
        """Memory attributable to the session: peak RSS minus the interpreter baseline."""
        return max(0, self.peak_rss_bytes - self.baseline_rss_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Return the attributes plus the derived ``peak_rss_bytes`` and ``session_rss_bytes``."""
        return {
            "baseline_rss_bytes": self.baseline_rss_bytes,
            "peak_rss_session_bytes": self.peak_rss_session_bytes,
            "peak_rss_inference_bytes": self.peak_rss_inference_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "session_rss_bytes": self.session_rss_bytes,
            "source": self.source,
            "cold_load_ms": self.cold_load_ms,
        }


@dataclass(frozen=True)
class ModelBench:
    """Measurements of one model.

    Attributes:
        name: Display name (the file name, or the path when file names collide).
        path: Path of the ``.onnx`` file as given.
        file_bytes: Bytes on disk: the model file plus every external-data file it references.
        weight_bytes: Raw bytes of all initializers (dense and sparse) and ``Constant`` tensors,
            subgraphs and functions included; external tensors counted by their ``length`` entry.
        load_ms: Mean wall time of creating an ``InferenceSession`` (``load_ms_runs`` holds each try).
        load_ms_runs: Every session-creation time measured, in ms.
        p50_ms: Median latency of one ``run()`` call, in ms.
        p90_ms: 90th percentile latency, in ms.
        p99_ms: 99th percentile latency, in ms.
        mean_ms: Mean latency, in ms.
        min_ms: Fastest run, in ms.
        p50_ci_low_ms: Lower end of the 95 % confidence interval of the median: the wider of the bootstrap
            over single runs and the batch-means interval over ``ci_blocks`` consecutive blocks of rounds
            (see :mod:`tensorslim.benchmark.latency`).
        p50_ci_high_ms: Upper end of that interval.
        runs: Number of timed runs.
        warmup_runs: Number of untimed warm-up runs before them.
        batch_size: Samples per run, used for ``throughput``.
        throughput: Samples per second, ``batch_size / mean latency``.
        memory: Subprocess memory measurement, ``None`` when disabled or when the worker failed.
        memory_error: Why ``memory`` is ``None`` although it was requested, else ``None``.
        env: Environment the model was measured in.
        latencies_ms: Every timed run in ms, in the order measured.
        ci_blocks: Blocks of the batch-means interval (0: too few runs, bootstrap over single runs only).
        p50_ratio: ``p50_ms / first model's p50_ms`` (``None`` for the first model).
        p50_ratio_ci: 95 % interval of that ratio (paired by interleaving block, see
            :func:`~tensorslim.benchmark.latency.paired_ratio_ci`); ``None`` for the first model.
    """

    name: str
    path: str
    file_bytes: int
    weight_bytes: int
    load_ms: float
    load_ms_runs: tuple[float, ...]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    p50_ci_low_ms: float
    p50_ci_high_ms: float
    runs: int
    warmup_runs: int
    batch_size: int
    throughput: float
    memory: MemoryStats | None
    env: EnvInfo
    memory_error: str | None = None
    latencies_ms: tuple[float, ...] = field(default=(), repr=False)
    ci_blocks: int = 0
    p50_ratio: float | None = None
    p50_ratio_ci: tuple[float, float] | None = None

    def metric(self, name: str) -> float | None:
        """Return one metric by name (see :data:`METRICS`); memory metrics are ``None`` without memory.

        Raises:
            KeyError: ``name`` is not a known metric.
        """
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        if name in ("peak_rss_bytes", "session_rss_bytes"):
            return None if self.memory is None else float(getattr(self.memory, name))
        return float(getattr(self, name))

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        """Return a JSON-ready dict.

        Keys: ``name``, ``path``, ``file_bytes``, ``weight_bytes``, ``load_ms``, ``load_ms_runs``,
        ``latency_ms`` (a dict with ``p50``, ``p90``, ``p99``, ``mean``, ``min``, ``p50_ci95`` = [low, high],
        ``ci_blocks``), ``p50_ratio`` (``None`` for the first model, else ``{"value", "ci95": [low, high]}``),
        ``runs``, ``warmup_runs``, ``batch_size``, ``throughput`` (samples/s), ``memory``
        (:meth:`MemoryStats.to_dict` or ``None``), ``memory_error``, ``env`` (:meth:`EnvInfo.to_dict`), and
        ``latencies_ms`` (list of every run) only when ``include_samples`` is true.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "path": self.path,
            "file_bytes": self.file_bytes,
            "weight_bytes": self.weight_bytes,
            "load_ms": self.load_ms,
            "load_ms_runs": list(self.load_ms_runs),
            "latency_ms": {
                "p50": self.p50_ms,
                "p90": self.p90_ms,
                "p99": self.p99_ms,
                "mean": self.mean_ms,
                "min": self.min_ms,
                "p50_ci95": [self.p50_ci_low_ms, self.p50_ci_high_ms],
                "ci_blocks": self.ci_blocks,
            },
            "p50_ratio": None
            if self.p50_ratio is None
            else {"value": self.p50_ratio, "ci95": None if self.p50_ratio_ci is None else list(self.p50_ratio_ci)},
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "batch_size": self.batch_size,
            "throughput": self.throughput,
            "memory": None if self.memory is None else self.memory.to_dict(),
            "memory_error": self.memory_error,
            "env": self.env.to_dict(),
        }
        if include_samples:
            out["latencies_ms"] = list(self.latencies_ms)
        return out


@dataclass(frozen=True)
class BenchReport:
    """Side-by-side measurements of one or more models; ratios are against the first model.

    Attributes:
        models: One :class:`ModelBench` per path, in the order given.
        env: Environment of the run (identical to each model's ``env``).
        settings: The parameters used (``threads``, ``batch_size``, ``warmup``, ``min_runs``,
            ``max_time_s``, ``round_size``, ``seed``, ``interleaved``, ``allow_spinning``,
            ``input_shapes``).
    """

    models: tuple[ModelBench, ...]
    env: EnvInfo
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> ModelBench:
        """The first model, the reference of every ratio."""
        return self.models[0]

    def ratio(self, metric: str) -> tuple[float | None, ...]:
        """Return ``model.metric / first_model.metric`` for every model (the first one gives 1.0).

        Args:
            metric: A name from :data:`METRICS`, e.g. ``"file_bytes"`` or ``"p50_ms"``.

        Returns:
            One ratio per model; ``None`` where a value is missing or the reference is 0.
        """
        ref = self.baseline.metric(metric)
        out: list[float | None] = []
        for m in self.models:
            val = m.metric(metric)
            if ref is None or val is None or ref == 0 or not math.isfinite(ref):
                out.append(None)
            else:
                out.append(val / ref)
        return tuple(out)

    def size_ratios(self) -> tuple[float | None, ...]:
        """File size on disk of each model relative to the first one."""
        return self.ratio("file_bytes")

    def latency_ratios(self) -> tuple[float | None, ...]:
        """Median latency of each model relative to the first one (< 1 means faster)."""
        return self.ratio("p50_ms")

    def latency_ratio_cis(self) -> tuple[tuple[float, float] | None, ...]:
        """95 % interval of each model's median-latency ratio to the first model (``None`` for the first)."""
        return tuple(None if i == 0 else m.p50_ratio_ci for i, m in enumerate(self.models))

    def speedups(self) -> tuple[float | None, ...]:
        """How many times faster than the first model each model is (first p50 / p50)."""
        return tuple(None if r is None or r == 0 else 1.0 / r for r in self.latency_ratios())

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        """Return a JSON-ready dict.

        Keys: ``env`` (:meth:`EnvInfo.to_dict`), ``settings`` (see the class attributes), ``models``
        (list of :meth:`ModelBench.to_dict`), and ``ratios``: a dict from each name in :data:`METRICS` to
        the list of per-model ratios against the first model (``None`` where undefined), and
        ``ratio_ci95``: ``{"p50_ms": [null, [low, high], ...]}``, the 95 % interval of each median-latency
        ratio (``None`` for the first model and where undefined).
        """
        return {
            "env": self.env.to_dict(),
            "settings": dict(self.settings),
            "models": [m.to_dict(include_samples=include_samples) for m in self.models],
            "ratios": {name: list(self.ratio(name)) for name in METRICS},
            "ratio_ci95": {"p50_ms": [None if ci is None else list(ci) for ci in self.latency_ratio_cis()]},
        }
