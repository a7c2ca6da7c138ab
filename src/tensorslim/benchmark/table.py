"""Rich table rendering of a :class:`~tensorslim.benchmark.report.BenchReport`."""

from __future__ import annotations

from rich.table import Table

from .report import BenchReport

__all__ = ["busy_note", "render_bench_table"]

_MB = 1e6  # MB = 10^6 bytes, as everywhere in tensorslim


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / _MB:.2f}"


def _ms(x: float) -> str:
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.3f}"
    return f"{x:.4f}"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _ratio_ci(r: float | None, ci: tuple[float, float] | None) -> str:
    if r is None or ci is None:
        return _ratio(r)
    return f"{r:.2f}x ({ci[0]:.2f}-{ci[1]:.2f})"


def _throughput(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def busy_note(report: BenchReport) -> str:
    """A warning when other processes competed for the CPU while timing, else ``""``."""
    c = report.settings.get("contention") or {}
    if not c.get("busy"):
        return ""
    load = c.get("load_avg_1m")
    load_txt = f"load {load:.1f} on {c.get('cpus')} CPU(s), " if load is not None else ""
    return (
        f"machine busy while timing ({load_txt}{c.get('preemptions_per_run', 0):.2f} preemptions per run): the "
        "intervals cover this run's conditions only; compare ratios, or rerun on a quiet machine"
    )


def shape_note(report: BenchReport, *, command: str = "") -> str:
    """A warning when generated inputs made dims the model leaves open size 1 (see
    :func:`~tensorslim.benchmark.inputs.unsized_dims`), else ``""``; ``command`` names the command to time with
    real sizes when the warning's own command has no ``--data``/``--shape``."""
    from .inputs import unsized_note

    settings = report.settings
    return unsized_note(settings.get("unsized_inputs") or {}, settings.get("input_shapes") or {}, command=command)


_COLUMNS: tuple[str, ...] = (
    "file MB",
    "weights MB",
    "load ms",
    "p50 ms (±CI)",
    "p90 ms",
    "p99 ms",
    "throughput /s",
    "peak MB",
    "session MB",
    "size x",
    "p50 x (95% CI)",
)
_COMPACT_DROP = frozenset({"weights MB", "p90 ms", "session MB"})


def render_bench_table(report: BenchReport, *, title: str | None = "tensorslim bench", compact: bool = False) -> Table:
    """Build a table with one row per model.

    Columns: model, file MB, weights MB, load ms, p50 ms (± half-width of the 95 % bootstrap CI), p90 ms,
    p99 ms, throughput (samples/s), peak MB (peak RSS of the worker), session MB (peak minus the
    interpreter baseline), and ratios against the first model: size x (file bytes) and p50 x with the 95 %
    confidence interval of the ratio (paired over interleaving blocks).
    The caption names onnxruntime version, provider, threads, batch, CPU and its relevant ISA flags.
    The full table needs about 130 columns; ``compact`` drops weights MB, p90 and session MB (~100).

    Args:
        report: The benchmark report.
        title: Table title, or ``None`` for none.
        compact: Drop the less important columns for narrow terminals.

    Returns:
        A :class:`rich.table.Table` ready for ``Console.print``.
    """
    columns = [c for c in _COLUMNS if not (compact and c in _COMPACT_DROP)]
    table = Table(title=title, header_style="bold")
    table.add_column("model", overflow="fold", min_width=8)
    for header in columns:
        # Headers may wrap on narrow terminals; numbers never get cut (min_width).
        table.add_column(header, justify="right", min_width=5)

    size_ratios = report.ratio("file_bytes")
    p50_ratios = report.ratio("p50_ms")
    for i, m in enumerate(report.models):
        half_ci = (m.p50_ci_high_ms - m.p50_ci_low_ms) / 2
        mem = m.memory
        cells = {
            "file MB": _mb(m.file_bytes),
            "weights MB": _mb(m.weight_bytes),
            "load ms": f"{m.load_ms:.1f}",
            "p50 ms (±CI)": f"{_ms(m.p50_ms)} ±{_ms(half_ci)}",
            "p90 ms": _ms(m.p90_ms),
            "p99 ms": _ms(m.p99_ms),
            "throughput /s": _throughput(m.throughput),
            "peak MB": _mb(None if mem is None else mem.peak_rss_bytes),
            "session MB": _mb(None if mem is None else mem.session_rss_bytes),
            "size x": _ratio(size_ratios[i]),
            "p50 x (95% CI)": _ratio_ci(p50_ratios[i], m.p50_ratio_ci if i else None),
        }
        table.add_row(m.name, *(cells[c] for c in columns), style="bold" if i == 0 else None)

    env = report.env
    settings = report.settings
    flags = " ".join(env.cpu_flags) or "none"
    table.caption = (
        f"onnxruntime {env.onnxruntime_version} · {env.execution_provider} · "
        f"threads {env.threads or 'default'} · batch {settings.get('batch_size', '?')} · "
        f"{env.cpu_model} ({env.machine}) · flags: {flags}\n"
        f"ratios vs {report.baseline.name}; runs interleaved: {settings.get('interleaved', False)}; MB = 10^6 bytes"
    )
    busy = busy_note(report)
    if busy:
        table.caption += f"\n{busy}"
    return table
