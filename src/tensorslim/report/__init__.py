"""The ``--report report.html`` page: one self-contained HTML file (inline CSS and SVG, no network).

Typical use::

    from tensorslim.report import write_report

    write_report("r.html", bench=benchmark_models(["a.onnx", "b.onnx"]))
    write_report("r.html", evaluation=eval_report, diagnose=layer_report)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tensorslim.benchmark.latency import ratio_ci

from .html import ModelRow, ReportData, render_html, versions

__all__ = ["ModelRow", "ReportData", "ratio_ci", "render_html", "report_data", "versions", "write_report"]

log = logging.getLogger(__name__)


def _bench_rows(bench: Any) -> tuple[list[ModelRow], dict[str, list[float]]]:
    rows, lat = [], {}
    base = bench.models[0].latencies_ms
    for m in bench.models:
        rc = (m.p50_ratio_ci or ratio_ci(base, m.latencies_ms)) if m is not bench.models[0] else None
        rows.append(
            ModelRow(
                name=m.name,
                path=m.path,
                size_bytes=m.file_bytes,
                p50_ms=m.p50_ms,
                ci=(m.p50_ci_low_ms, m.p50_ci_high_ms),
                p90_ms=m.p90_ms,
                p99_ms=m.p99_ms,
                throughput=m.throughput,
                load_ms=m.load_ms,
                peak_mb=None if m.memory is None else m.memory.session_rss_bytes / 1e6,
                cold_load_ms=None if m.memory is None else m.memory.cold_load_ms,
                ratio_ci=rc,
            )
        )
        lat[m.name] = list(m.latencies_ms)
    return rows, lat


def _layers_or_note(layers_of: tuple[Any, Any, Any], notes: list[str]) -> Any:
    from tensorslim.diagnostics.layers import diagnose_layers

    f, q, d = layers_of
    try:
        return diagnose_layers(f, q, d, max_samples=32)
    except Exception as e:  # the page is still worth writing without the per-layer section
        notes.append(f"per-layer diagnosis skipped: {e}")
        return None


def report_data(
    *,
    bench: Any = None,
    evaluation: Any = None,
    optimize: Any = None,
    quantize: Any = None,
    quantize_input: str | os.PathLike[str] | None = None,
    speed_check: dict[str, Any] | None = None,
    diagnose: Any = None,
    layers_of: tuple[Any, Any, Any] | None = None,
    doctor: Any = None,
    search: Any = None,
    title: str | None = None,
    command: str = "",
) -> ReportData:
    """Gather the results of one command into :class:`ReportData` (every argument optional).

    Args:
        bench: A :class:`~tensorslim.benchmark.BenchReport`.
        evaluation: An :class:`~tensorslim.evaluate.EvalReport`.
        optimize: An :class:`~tensorslim.search.optimize.OptimizeResult`.
        quantize: A :class:`~tensorslim.api.QuantizeResult`.
        quantize_input: The model ``quantize`` read.
        speed_check: The ``quantize`` speed check dict (reference/candidate p50).
        diagnose: A :class:`~tensorslim.diagnostics.layers.LayerReport`.
        layers_of: ``(float_model, quant_model, data_or_None)``: run the per-layer diagnosis for the page
            (with ``optimize`` and no ``layers_of``, the first technique against the float model); a failure
            becomes a note on the page.
        doctor: A :class:`~tensorslim.diagnostics.doctor.DoctorReport`.
        search: A :class:`~tensorslim.search.SearchResult` (every candidate, the Pareto front, the choice).
        title: Page title.
        command: The command line to show (default: this process's arguments).
    """
    data = ReportData(title=title or "tensorslim report", command=command, layers=diagnose, doctor=doctor)
    if layers_of is None and optimize is not None:
        ok = [r for r in optimize.rows[1:] if not r.error]
        if ok:
            src = optimize.data_source if optimize.data_source not in ("", "generated") else None
            layers_of = (optimize.rows[0].path, ok[0].path, src)
    if diagnose is None and layers_of is not None:
        data.layers = _layers_or_note(layers_of, data.notes)
    if bench is not None:
        data.rows, data.latencies = _bench_rows(bench)
        data.env, data.settings = bench.env.to_dict(), dict(bench.settings)
        data.settings.pop("input_shapes", None)
    if optimize is not None:
        for r in optimize.rows:
            data.rows.append(
                ModelRow(
                    name=r.name,
                    path=str(r.path),
                    size_bytes=r.file_bytes or None,
                    p50_ms=r.p50_ms,
                    ci=r.p50_ci,
                    peak_mb=r.peak_mb,
                    accuracy=r.accuracy,
                    sqnr_db=r.sqnr_db,
                    cosine=r.cosine_mean,
                    note=r.error or r.description,
                )
            )
        data.env = dict(optimize.env)
        data.notes.extend(optimize.notes)
    if quantize is not None:
        sc = speed_check or {}
        data.rows.append(
            ModelRow(
                name=Path(quantize_input).name if quantize_input else "input",
                size_bytes=quantize.input_bytes,
                p50_ms=sc.get("reference_p50_ms"),
            )
        )
        out = quantize.output_path
        data.rows.append(
            ModelRow(
                name=Path(out).name if out else "quantized",
                size_bytes=quantize.output_bytes,
                p50_ms=sc.get("candidate_p50_ms"),
                note="slower than the input" if sc.get("slower") else "",
            )
        )
        if sc.get("input_shapes"):
            from tensorslim.benchmark.inputs import unsized_note

            shapes = "; ".join(f"{k} {'x'.join(map(str, v))}" for k, v in sc["input_shapes"].items())
            data.notes.append(f"speed check timed on {sc.get('inputs', 'generated inputs')}: {shapes}")
            warning = unsized_note(sc.get("unsized_inputs") or {}, sc["input_shapes"], command="tensorslim bench")
            if warning:
                data.notes.append(warning)
        recs = sorted(quantize.records, key=lambda r: -r.bytes_before)[:25]
        data.tables.append(
            (
                "Weights (25 largest)",
                ["weight", "op", "action", "SQNR dB", "bytes before", "bytes after", "note"],
                [
                    [
                        r.name,
                        r.ops,
                        r.action,
                        "–" if r.sqnr_db is None else f"{r.sqnr_db:.1f}",
                        f"{r.bytes_before:,}",
                        f"{r.bytes_after:,}",
                        r.reason if r.skipped else "",
                    ]
                    for r in recs
                ],
            )
        )
        data.notes.extend(quantize.notes)
    if evaluation is not None:
        rows = []
        for o in evaluation.outputs:
            acc = (
                "–"
                if o.reference_accuracy is None or o.candidate_accuracy is None
                else f"{100 * o.reference_accuracy:.2f}% → {100 * o.candidate_accuracy:.2f}%"
            )
            rows.append(
                [
                    o.name,
                    f"{o.cosine_mean:.6f}",
                    f"{o.cosine_min:.6f}",
                    f"{o.sqnr_db:.2f}",
                    f"{o.max_abs_error:.4g}",
                    "–" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%",
                    acc,
                ]
            )
        data.tables.append(
            (
                f"Fidelity: {Path(evaluation.candidate).name} vs {Path(evaluation.reference).name} on "
                f"{evaluation.num_samples} samples ({evaluation.data_source})",
                ["output", "cosine mean", "cosine min", "SQNR dB", "max abs err", "top-1 agree", "accuracy ref → cand"],
                rows,
            )
        )
        data.notes.extend(evaluation.notes)
    if search is not None:
        from .search import search_section

        html, table = search_section(search)
        data.sections.append(html)
        data.tables.append(table)
    if not data.env:
        try:
            from tensorslim.benchmark.sysinfo import env_info

            data.env = env_info(0).to_dict()
        except Exception:  # environment facts are decoration; the report is still useful without them
            log.debug("no environment info", exc_info=True)
    return data


def write_report(path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Render :func:`report_data` ``(**kwargs)`` to ``path`` (written atomically); return the path."""
    page = render_html(report_data(**kwargs))
    from tensorslim._files import write_text_atomic

    return write_text_atomic(path, page)
