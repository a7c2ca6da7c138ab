"""Benchmarking of ONNX models: size, weight bytes, load time, latency, throughput and peak memory.

Typical use::

    from tensorslim.benchmark import benchmark_models, render_bench_table

    report = benchmark_models(["model.onnx", "model.int8.onnx"], threads=1, max_time_s=5)
    rich.print(render_bench_table(report))
    report.ratio("file_bytes")  # (1.0, 0.26)

Timed runs of several models are interleaved in one process; memory is measured in a fresh subprocess
per model. Every result records the onnxruntime version, provider, threads, CPU model and ISA flags.
"""

from __future__ import annotations

from .inputs import InputSpec, make_inputs
from .latency import bootstrap_median_ci, session_options
from .model_info import file_bytes, load_model_proto, weight_bytes
from .report import METRICS, BenchReport, EnvInfo, MemoryStats, ModelBench
from .runner import benchmark_models
from .table import render_bench_table

__all__ = [
    "METRICS",
    "BenchReport",
    "EnvInfo",
    "InputSpec",
    "MemoryStats",
    "ModelBench",
    "benchmark_models",
    "bootstrap_median_ci",
    "file_bytes",
    "load_model_proto",
    "make_inputs",
    "render_bench_table",
    "session_options",
    "weight_bytes",
]
