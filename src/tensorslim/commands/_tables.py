"""Tables more than one command prints: the per-weight table and the evaluation table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

__all__ = ["FULL_COLUMNS", "SHORT_COLUMNS", "eval_table", "mb", "weights_table"]


def mb(n: float) -> str:
    """Bytes as megabytes (10^6 bytes), two decimals."""
    return f"{n / 1e6:.2f}"


#: Column -> cell of one weight record (a ``WeightRecord`` of any backend).
_CELLS: dict[str, Callable[[Any], str]] = {
    "weight": lambda r: r.name,
    "op": lambda r: r.ops,
    "shape": lambda r: "x".join(map(str, r.shape)),
    "action": lambda r: r.action,
    "granularity": lambda r: r.granularity,
    "SQNR dB": lambda r: "" if r.sqnr_db is None else f"{r.sqnr_db:.1f}",
    "bytes before": lambda r: f"{r.bytes_before:,}",
    "bytes after": lambda r: f"{r.bytes_after:,}",
    "note": lambda r: r.reason if r.skipped else "",
    "reason": lambda r: r.reason[:80],
}
#: The quantize and run table: every column, the skip reason of skipped weights.
FULL_COLUMNS = ("weight", "op", "shape", "action", "granularity", "SQNR dB", "bytes before", "bytes after", "note")
#: The prune and cluster table: what was done to each weight, and why (the first 80 characters).
SHORT_COLUMNS = ("weight", "op", "shape", "action", "SQNR dB", "reason")


def weights_table(
    records: Sequence[Any], limit: int, *, title: str = "weights", columns: Sequence[str] = FULL_COLUMNS
) -> Table:
    """Weight records, quantized first and largest first; ``limit`` rows (0: all) with a caption for the rest."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        table.add_column("note" if col == "reason" else col, overflow="fold")
    rows = sorted(records, key=lambda r: (r.skipped, -r.bytes_before))
    shown = rows[:limit] if limit > 0 else rows
    for r in shown:
        table.add_row(*(_CELLS[c](r) for c in columns))
    if columns == FULL_COLUMNS and len(rows) > len(shown):
        table.caption = f"{len(rows) - len(shown)} more weight(s) not shown (--show-all lists every weight)"
    return table


def eval_table(report: Any) -> Table:
    """One row per output of an evaluation: cosine, SQNR, error, top-1 agreement and accuracy."""
    t = Table(title=f"{report.candidate} vs {report.reference} on {report.num_samples} samples ({report.data_source})")
    for col in ("output", "cosine mean", "cosine min", "SQNR dB", "max abs err", "top-1 agree", "accuracy ref -> cand"):
        t.add_column(col)
    for o in report.outputs:
        acc = (
            f"{100 * o.reference_accuracy:.2f}% -> {100 * o.candidate_accuracy:.2f}%"
            if o.reference_accuracy is not None and o.candidate_accuracy is not None
            else "-"
        )
        t.add_row(
            o.name,
            f"{o.cosine_mean:.6f}",
            f"{o.cosine_min:.6f}",
            f"{o.sqnr_db:.2f}",
            f"{o.max_abs_error:.4g}",
            "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%",
            acc,
        )
    return t
