"""Inline SVG charts for the HTML report: scatter with Pareto front, latency distributions, bars, histograms.

Pure string building: no JavaScript, no fonts or images fetched, every label escaped. Each function returns
one ``<svg>`` element sized in CSS pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

__all__ = ["bars", "histogram", "latency_distributions", "pareto_front", "scatter"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1:
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _axes(
    w: int,
    h: int,
    m: tuple[int, int, int, int],
    xr: tuple[float, float],
    yr: tuple[float, float],
    xlabel: str,
    ylabel: str,
    *,
    yticks: bool = True,
) -> list[str]:
    left, top, right, bottom = m
    out = [f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" class="plot"/>']
    for t in _ticks(*xr):
        x = left + (t - xr[0]) / ((xr[1] - xr[0]) or 1) * (w - left - right)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{h - bottom}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{h - bottom + 14}" class="tick" text-anchor="middle">{_fmt(t)}</text>')
    if yticks:
        for t in _ticks(*yr):
            y = h - bottom - (t - yr[0]) / ((yr[1] - yr[0]) or 1) * (h - top - bottom)
            out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>')
    out.append(
        f'<text x="{(left + w - right) / 2}" y="{h - 4}" class="label" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{(top + h - bottom) / 2}" class="label" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + h - bottom) / 2})">{escape(ylabel)}</text>'
    )
    return out


def _range(vals: Sequence[float], pad: float = 0.08, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(vals), max(vals)
    if zero:
        lo = min(lo, 0.0)
    span = (hi - lo) or abs(hi) or 1.0
    return (lo - pad * span if not (zero and lo == 0) else 0.0, hi + pad * span)


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_y: bool = False) -> list[int]:
    """Indices of the points no other point beats on both axes (x lower is better; y lower, or higher with
    ``maximize_y``), sorted by x."""
    idx = []
    for i, (x, y) in enumerate(points):
        yi = -y if maximize_y else y
        dominated = any(
            (x2 <= x and (-y2 if maximize_y else y2) <= yi) and (x2 < x or (-y2 if maximize_y else y2) < yi)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def scatter(
    names: Sequence[str],
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    xlabel: str,
    ylabel: str,
    x_err: Sequence[tuple[float, float] | None] | None = None,
    sizes: Sequence[float] | None = None,
    maximize_y: bool = False,
    width: int = 560,
    height: int = 340,
) -> str:
    """Scatter plot with horizontal error bars, point area scaled by ``sizes``, and the Pareto front drawn."""
    m = (60, 16, 110, 40)
    lo_x = [e[0] if e else x for x, e in zip(xs, x_err or [None] * len(xs), strict=True)]
    hi_x = [e[1] if e else x for x, e in zip(xs, x_err or [None] * len(xs), strict=True)]
    xr, yr = _range([*lo_x, *hi_x], zero=True), _range(ys)
    pw, ph = width - m[0] - m[2], height - m[1] - m[3]

    def px(v: float) -> float:
        return m[0] + (v - xr[0]) / ((xr[1] - xr[0]) or 1) * pw

    def py(v: float) -> float:
        return height - m[3] - (v - yr[0]) / ((yr[1] - yr[0]) or 1) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(ylabel)} against {escape(xlabel)}">'
    ]
    out += _axes(width, height, m, xr, yr, xlabel, ylabel)
    front = pareto_front(list(zip(xs, ys, strict=True)), maximize_y=maximize_y)
    if len(front) > 1:
        pts = " ".join(f"{px(xs[i]):.1f},{py(ys[i]):.1f}" for i in front)
        out.append(f'<polyline points="{pts}" class="front"/>')
    smax = max(sizes) if sizes else 1.0
    for i, name in enumerate(names):
        c = PALETTE[i % len(PALETTE)]
        if x_err and x_err[i]:
            lo, hi = x_err[i]  # type: ignore[misc]
            out.append(
                f'<line x1="{px(lo):.1f}" x2="{px(hi):.1f}" y1="{py(ys[i]):.1f}" y2="{py(ys[i]):.1f}" '
                f'stroke="{c}" stroke-width="2"/>'
            )
        r = 4 + 8 * math.sqrt(sizes[i] / smax) if sizes and smax > 0 else 6
        ring = ' stroke="#111" stroke-width="2"' if i in front else ""
        out.append(
            f'<circle cx="{px(xs[i]):.1f}" cy="{py(ys[i]):.1f}" r="{r:.1f}" fill="{c}" fill-opacity="0.75"'
            f"{ring}><title>{escape(name)}: {_fmt(xs[i])}, {_fmt(ys[i])}</title></circle>"
        )
        out.append(f'<text x="{px(xs[i]) + r + 3:.1f}" y="{py(ys[i]) - 3:.1f}" class="pt">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def latency_distributions(names: Sequence[str], samples: Sequence[Sequence[float]], *, width: int = 560) -> str:
    """One row per model: box (p25-p75), whiskers (p1-p99), median line, and a density strip of all runs."""
    row_h, m = 34, (150, 10, 16, 36)
    height = m[1] + m[3] + row_h * len(names)
    allv = [v for s in samples for v in s]
    if not allv:
        return ""
    hi_all = float(np.percentile(allv, 99.5))
    xr = (0.0, hi_all * 1.05)
    pw = width - m[0] - m[2]

    def px(v: float) -> float:
        return m[0] + min(v, xr[1]) / (xr[1] or 1) * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'aria-label="latency distributions">'
    ]
    out += _axes(width, height, m, xr, (0, 1), "latency per run (ms)", "", yticks=False)
    for i, (name, s) in enumerate(zip(names, samples, strict=True)):
        if not s:
            continue
        c = PALETTE[i % len(PALETTE)]
        y = m[1] + row_h * i + row_h / 2
        p1, p25, p50, p75, p99 = np.percentile(s, [1, 25, 50, 75, 99])
        counts, edges = np.histogram(np.clip(s, 0, xr[1]), bins=60, range=xr)
        cmax = counts.max() or 1
        for k, cnt in enumerate(counts):
            if cnt:
                out.append(
                    f'<rect x="{px(edges[k]):.1f}" y="{y - 13:.1f}" width="{px(edges[k + 1]) - px(edges[k]):.1f}" '
                    f'height="4" fill="{c}" fill-opacity="{0.15 + 0.85 * cnt / cmax:.2f}"/>'
                )
        out.append(f'<line x1="{px(p1):.1f}" x2="{px(p99):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{c}"/>')
        out.append(
            f'<rect x="{px(p25):.1f}" y="{y - 7:.1f}" width="{max(1.0, px(p75) - px(p25)):.1f}" height="14" '
            f'fill="{c}" fill-opacity="0.3" stroke="{c}"/>'
        )
        out.append(
            f'<line x1="{px(p50):.1f}" x2="{px(p50):.1f}" y1="{y - 9:.1f}" y2="{y + 9:.1f}" stroke="#111" '
            f'stroke-width="2"><title>p50 {_fmt(float(p50))} ms</title></line>'
        )
        out.append(f'<text x="{m[0] - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{escape(name[:24])}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    xlabel: str,
    highlight: Sequence[bool] | None = None,
    width: int = 560,
    ref: float | None = None,
) -> str:
    """Horizontal bars (one per label); ``highlight`` bars are red; an optional dashed reference line."""
    row_h, m = 16, (240, 8, 16, 36)
    height = m[1] + m[3] + row_h * len(labels)
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    xr = (min(0.0, min(finite)), max(finite) * 1.08 or 1.0)
    pw = width - m[0] - m[2]

    def px(v: float) -> float:
        v = v if math.isfinite(v) else xr[1]
        return m[0] + (v - xr[0]) / ((xr[1] - xr[0]) or 1) * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(xlabel)}">'
    ]
    out += _axes(width, height, m, xr, (0, 1), xlabel, "", yticks=False)
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = m[1] + row_h * i
        c = "#dc2626" if highlight and highlight[i] else "#2563eb"
        out.append(
            f'<rect x="{px(min(0.0, v)):.1f}" y="{y + 2}" width="{abs(px(v) - px(0.0)):.1f}" '
            f'height="{row_h - 4}" fill="{c}"><title>{escape(lab)}: {_fmt(v)}</title></rect>'
        )
        short = lab if len(lab) <= 38 else "…" + lab[-37:]
        out.append(f'<text x="{m[0] - 4}" y="{y + row_h - 4}" class="tick" text-anchor="end">{escape(short)}</text>')
    if ref is not None and xr[0] <= ref <= xr[1]:
        out.append(f'<line x1="{px(ref):.1f}" x2="{px(ref):.1f}" y1="{m[1]}" y2="{height - m[3]}" class="ref"/>')
    out.append("</svg>")
    return "".join(out)


def histogram(
    counts: Sequence[float], edges: Sequence[float], *, title: str, width: int = 270, height: int = 150
) -> str:
    """A small histogram (log-scaled counts so that outliers stay visible)."""
    m = (36, 18, 8, 30)
    pw, ph = width - m[0] - m[2], height - m[1] - m[3]
    logc = [math.log10(1 + c) for c in counts]
    cmax = max(logc) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">'
    ]
    out.append(f'<text x="{m[0]}" y="12" class="pt">{escape(title if len(title) <= 40 else "…" + title[-39:])}</text>')
    out.append(f'<rect x="{m[0]}" y="{m[1]}" width="{pw}" height="{ph}" class="plot"/>')
    bw = pw / max(1, len(counts))
    for k, lc in enumerate(logc):
        h = lc / cmax * ph
        out.append(
            f'<rect x="{m[0] + k * bw:.1f}" y="{m[1] + ph - h:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
            f'height="{h:.1f}" fill="#2563eb"><title>{int(counts[k])}</title></rect>'
        )
    out.append(f'<text x="{m[0]}" y="{height - 14}" class="tick">{_fmt(edges[0])}</text>')
    out.append(f'<text x="{width - m[2]}" y="{height - 14}" class="tick" text-anchor="end">{_fmt(edges[-1])}</text>')
    out.append(
        f'<text x="{m[0] + pw / 2}" y="{height - 2}" class="tick" text-anchor="middle">weight value '
        "(log count)</text></svg>"
    )
    return "".join(out)
