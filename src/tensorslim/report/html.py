"""One self-contained HTML page from whatever a command measured.

The page has inline CSS and inline SVG only: no script, no font, no image or stylesheet fetched, so it
opens offline and shows no console errors. Sections appear when their data is there: comparison table,
size / latency / accuracy scatter with the Pareto front, latency distributions, doctor findings, per-layer
error bars, weight histograms of the worst layers, and the exact command and versions.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from . import svg

__all__ = ["ModelRow", "ReportData", "render_html", "versions"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;margin:0;background:#f8fafc}
main{max-width:1180px;margin:0 auto;padding:18px 24px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #cbd5e1}
.sub{color:#475569;margin:0 0 8px}
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e2e8f0;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f1f5f9}td:first-child,th:first-child{text-align:left}
tr.base td{font-weight:600}
.grid2{display:flex;flex-wrap:wrap;gap:14px}.card{background:#fff;border:1px solid #e2e8f0;padding:8px}
.hists{display:flex;flex-wrap:wrap;gap:8px}
svg .plot{fill:#fff;stroke:#94a3b8}svg .grid{stroke:#e2e8f0}svg .tick{font-size:10px;fill:#334155}
svg .label{font-size:11px;fill:#111}svg .pt{font-size:11px;fill:#111}
svg .front{fill:none;stroke:#111;stroke-dasharray:4 3}svg .ref{stroke:#dc2626;stroke-dasharray:4 3}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#fff;border:1px solid #e2e8f0;
padding:8px;white-space:pre-wrap;word-break:break-all}
.sev-warning{color:#b45309;font-weight:600}.sev-error{color:#b91c1c;font-weight:600}.sev-ok{color:#15803d}
.sev-info{color:#0369a1}.note{color:#475569}
"""


@dataclass
class ModelRow:
    """One model in the comparison (any field may be missing)."""

    name: str
    path: str = ""
    size_bytes: float | None = None
    p50_ms: float | None = None
    ci: tuple[float, float] | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    load_ms: float | None = None
    cold_load_ms: float | None = None
    ratio_ci: tuple[float, float] | None = None
    peak_mb: float | None = None
    accuracy: float | None = None
    sqnr_db: float | None = None
    cosine: float | None = None
    note: str = ""


@dataclass
class ReportData:
    """Everything the page can show."""

    title: str
    command: str = ""
    rows: list[ModelRow] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    layers: Any = None  # tensorslim.diagnostics.layers.LayerReport
    doctor: Any = None  # tensorslim.diagnostics.doctor.DoctorReport
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # ready-made HTML blocks (e.g. the search's plots)


def versions() -> dict[str, str]:
    """Versions of the software that produced the numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("tensorslim", "onnxruntime", "onnx", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # a missing optional package is reported as such
            out[mod] = "not installed"
    return out


def _f(x: float | None, fmt: str = ".3f", dash: str = "–") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return dash
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, fmt)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], base_first: bool = False) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in headers)
    body = []
    for i, r in enumerate(rows):
        cls = ' class="base"' if base_first and i == 0 else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _comparison(rows: list[ModelRow]) -> str:
    base = rows[0]
    cols = [
        "model",
        "size MB",
        "size ×",
        "p50 ms",
        "95% CI of p50",
        "p50 ×",
        "p90 ms",
        "p99 ms",
        "throughput /s",
        "load ms",
        "cold load ms",
        "session MB",
        "accuracy",
        "SQNR dB",
        "cosine",
        "note",
    ]
    keep = {c: False for c in cols}
    out = []
    for r in rows:
        size_x = r.size_bytes / base.size_bytes if r.size_bytes and base.size_bytes else None
        p50_x = r.p50_ms / base.p50_ms if r.p50_ms and base.p50_ms else None
        cells = {
            "model": r.name,
            "size MB": _f(None if r.size_bytes is None else r.size_bytes / 1e6, ".2f"),
            "size ×": _f(size_x, ".3f"),
            "p50 ms": _f(r.p50_ms),
            "95% CI of p50": f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci else "–",
            "p50 ×": _f(p50_x, ".3f") + (f" [{r.ratio_ci[0]:.3f}, {r.ratio_ci[1]:.3f}]" if r.ratio_ci else ""),
            "p90 ms": _f(r.p90_ms),
            "p99 ms": _f(r.p99_ms),
            "throughput /s": _f(r.throughput, ",.1f"),
            "load ms": _f(r.load_ms, ".1f"),
            "cold load ms": _f(r.cold_load_ms, ".1f"),
            "session MB": _f(r.peak_mb, ".1f"),
            "accuracy": "–" if r.accuracy is None else f"{100 * r.accuracy:.2f}%",
            "SQNR dB": _f(r.sqnr_db, ".1f"),
            "cosine": _f(r.cosine, ".5f"),
            "note": r.note,
        }
        for c, v in cells.items():
            keep[c] = keep[c] or v not in ("–", "")
        out.append(cells)
    shown = [c for c in cols if keep[c] or c == "model"]
    return _table(shown, [[cells[c] for c in shown] for cells in out], base_first=True)


def _scatters(rows: list[ModelRow]) -> str:
    ok = [r for r in rows if r.p50_ms is not None and r.size_bytes is not None]
    if len(ok) < 2:
        return ""
    names = [r.name for r in ok]
    p50 = [float(r.p50_ms or 0.0) for r in ok]
    size = [float(r.size_bytes or 0.0) / 1e6 for r in ok]
    cis = [r.ci for r in ok]
    parts = [svg.scatter(names, p50, size, xlabel="p50 latency (ms, bar: 95% CI)", ylabel="size (MB)", x_err=cis)]
    quality: list[float | None] = [None if r.accuracy is None else 100 * r.accuracy for r in ok]
    label = "accuracy (%)"
    if any(q is None for q in quality):
        quality = [r.cosine for r in ok]
        label = "output cosine vs float"
    if all(q is not None for q in quality):
        qs = [float(q or 0.0) for q in quality]
        parts.append(
            svg.scatter(
                names,
                p50,
                qs,
                xlabel="p50 latency (ms, bar: 95% CI)",
                ylabel=label,
                x_err=cis,
                sizes=size,
                maximize_y=True,
            )
        )
    cap = (
        "Pareto front (dashed; ringed points): no other model is both faster and smaller"
        + (" / more accurate" if len(parts) > 1 else "")
        + ". Point area in the second chart: size."
    )
    return (
        "<h2>Size, latency, accuracy</h2><div class='grid2'>"
        + "".join(f"<div class='card'>{p}</div>" for p in parts)
        + f"</div><p class='note'>{escape(cap)}</p>"
    )


def _layers(rep: Any) -> str:
    if rep is None or not rep.layers:
        return ""
    ranked = sorted(rep.layers, key=lambda x: x.added_sqnr_db)[:30]
    worst = set(rep.worst)
    labels = [f"{x.node} ({x.op_type})" for x in ranked]
    vals = [min(x.added_sqnr_db, 120.0) for x in ranked]
    parts = [
        "<h2>Per-layer error</h2>",
        f"<p class='sub'>{escape(Path(rep.quant_model).name)} vs {escape(Path(rep.float_model).name)} on "
        f"{rep.num_samples} samples ({escape(str(rep.data_source))}); {len(rep.layers)} layers matched by tensor "
        "name. Added SQNR: the SQNR each layer would have if it were the only error source (lower is worse; "
        "red: the layers named in the exclude command).</p>",
        "<div class='grid2'><div class='card'>",
        svg.bars(labels, vals, xlabel="added SQNR (dB), worst first", highlight=[x.node in worst for x in ranked]),
        "</div>",
    ]
    ros = [x for x in ranked if x.rmse_over_scale is not None]
    if ros:
        parts.append("<div class='card'>")
        parts.append(
            svg.bars(
                [f"{x.node}" for x in ros],
                [float(x.rmse_over_scale) for x in ros],
                xlabel="rmse / scale (0.29 healthy, > 0.7 suspect)",
                highlight=[float(x.rmse_over_scale) > 0.7 for x in ros],
                ref=0.7,
            )
        )
        parts.append("</div>")
    parts.append("</div>")
    rows = [
        [
            x.node,
            x.op_type,
            _f(x.sqnr_db, ".1f"),
            _f(x.added_sqnr_db, ".1f"),
            _f(x.rmse_over_scale, ".2f"),
            x.scale_source,
            _f(x.peak_to_p999, ".1f"),
            x.weight or "",
        ]
        for x in ranked[:15]
    ]
    parts.append(_table(["node", "op", "SQNR dB", "added SQNR dB", "rmse/scale", "scale", "max/p99.9", "weight"], rows))
    if rep.exclude_command:
        parts.append(f"<p>Keep the {len(rep.worst)} worst layers in float:</p><pre>{escape(rep.exclude_command)}</pre>")
    if rep.histograms:
        parts.append("<h2>Weights of the worst layers</h2><div class='hists'>")
        for node, h in rep.histograms.items():
            parts.append(f"<div class='card'>{svg.histogram(h['counts'], h['edges'], title=node)}</div>")
        parts.append("</div>")
    return "".join(parts)


def _doctor(rep: Any) -> str:
    if rep is None:
        return ""
    items = "".join(
        f"<li><span class='sev-{escape(f.severity)}'>{escape(f.severity)}</span> <b>{escape(f.code)}</b>: "
        f"{escape(f.message)}" + (f"<br><i>fix:</i> {escape(f.fix)}" if f.fix else "") + "</li>"
        for f in rep.findings
    )
    return f"<h2>Doctor: {escape(Path(rep.model).name)}</h2><ul>{items}</ul>"


def render_html(data: ReportData) -> str:
    """The page as one string."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(data.title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(data.title)}</h1><p class='sub'>tensorslim report · {now}</p>",
    ]
    env = data.env
    if env:
        parts.append(
            f"<p class='sub'>{escape(str(env.get('cpu_model', '?')))} ({escape(str(env.get('machine', '')))})"
            f" · ISA: {escape(' '.join(env.get('cpu_flags', [])) or 'none')} · onnxruntime "
            f"{escape(str(env.get('onnxruntime_version', '?')))} · {escape(str(env.get('execution_provider', '')))}"
            f" · threads {escape(str(env.get('threads', '?')))}</p>"
        )
    if data.rows:
        parts.append("<h2>Comparison</h2>" + _comparison(data.rows))
        if any(r.ci for r in data.rows):
            parts.append(
                "<p class='note'>p50: median latency of one run; 95% CI: percentile bootstrap of the median. "
                "Models timed interleaved in one process; ratios (×) against the first row, with the 95% bootstrap "
                "CI of the ratio of medians.</p>"
            )
    parts.append(_scatters(data.rows))
    if data.latencies:
        names = list(data.latencies)
        parts.append(
            "<h2>Latency distributions</h2><div class='card'>"
            + svg.latency_distributions(names, [data.latencies[n] for n in names], width=760)
            + "</div><p class='note'>Box: p25–p75; whiskers: p1–p99; black bar: median; strip: density of "
            "all timed runs.</p>"
        )
    parts.extend(data.sections)
    parts.append(_doctor(data.doctor))
    parts.append(_layers(data.layers))
    for title, headers, rows in data.tables:
        parts.append(f"<h2>{escape(title)}</h2>" + _table(headers, rows))
    if data.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in data.notes) + "</ul>")
    ver = versions()
    parts.append("<h2>Reproduce</h2><pre>" + escape(data.command or _command_line()) + "</pre>")
    if data.settings:
        parts.append(
            "<p class='note'>settings: " + escape(", ".join(f"{k}={v}" for k, v in data.settings.items())) + "</p>"
        )
    parts.append(_table(["software", "version"], [[k, v] for k, v in ver.items()]))
    parts.append("</main></body></html>")
    return "".join(parts)


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("tensorslim", "__main__.py", "cli.py"):
        argv[0] = "tensorslim"
    return shlex.join(argv)
