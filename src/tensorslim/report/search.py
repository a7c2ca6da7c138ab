"""The search's part of the report: every candidate tried (score against size), its Pareto front, a table."""

from __future__ import annotations

from html import escape
from typing import Any

from . import svg

__all__ = ["search_section"]


def search_section(res: Any) -> tuple[str, tuple[str, list[str], list[list[str]]]]:
    """The scatter (HTML) and the candidates table of a :class:`~tensorslim.search.SearchResult`."""
    ok = [c for c in res.candidates if c.ok]
    parts = []
    if len(ok) >= 2:
        names = [c.name if c.trial is None else f"#{c.trial}" for c in ok]
        sizes = [float(c.size_bytes or 0) / 1e6 for c in ok]
        scores = [float(c.score) for c in ok]
        parts.append(svg.scatter(names, sizes, scores, xlabel="size (MB)", ylabel=res.metric, maximize_y=True,
                                 width=760, height=420))  # fmt: skip
        if all(c.latency_ms is not None for c in ok):
            lats = [float(c.latency_ms) for c in ok]
            parts.append(svg.scatter(names, lats, scores, xlabel="p50 ms (batch 1, 1 thread)", ylabel=res.metric,
                                     maximize_y=True, width=760, height=420))  # fmt: skip
    chosen = res.chosen.name if res.chosen is not None else "none met the budget"
    html = (
        "<h2>Search</h2>"
        f"<p class='sub'>{escape(res.metric)} must stay ≥ {res.threshold:.4f} (float {res.reference_score:.4f}); "
        f"objective: {escape(res.objective)}; {res.trials} trials, {res.evaluated} evaluated, {res.cache_hits} from "
        f"the cache; chosen: <b>{escape(chosen)}</b></p>"
        + "".join(f"<div class='card'>{p}</div>" for p in parts)
        + "<p class='note'>Every candidate tried (built-in recipes by name, trials by number); dashed line and "
        "ringed points: the Pareto front (no other candidate is both smaller/faster and more accurate).</p>"
    )
    rows = []
    for c in res.candidates:
        rows.append([
            c.name, "built-in" if c.trial is None else f"trial {c.trial}",
            "–" if c.score is None else f"{c.score:.4f}",
            "–" if c.size_bytes is None else f"{c.size_bytes / 1e6:.3f}",
            "–" if c.latency_ms is None else f"{c.latency_ms:.3f}",
            "yes" if c.feasible else "no", "yes" if c.pareto else "", c.error[:120],
        ])  # fmt: skip
    table = ("Search candidates", ["candidate", "source", res.metric, "size MB", "p50 ms", "meets budget", "front",
                                   "error"], rows)  # fmt: skip
    return html, table
