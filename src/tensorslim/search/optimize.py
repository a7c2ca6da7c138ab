"""``tensorslim optimize``'s entry point: find the smallest (or fastest) model that keeps accuracy within a budget.

:func:`optimize_search` runs the accuracy-aware search (:mod:`tensorslim.search`): the built-in recipes and
an Optuna study over recipes, each candidate scored on the selection data; the finalists (float, built-in
recipes, Pareto front, chosen model) are timed afterwards in this process with ``tensorslim bench``'s interleaved
harness against the float model (95 % intervals, machine load recorded); the chosen model is written to the
output folder and re-measured on the test data.

Sizes are in MB = 10^6 bytes everywhere in tensorslim.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.table import Table

from tensorslim.errors import InputError

__all__ = [
    "OptimizeResult",
    "OptimizeSearchResult",
    "TechniqueResult",
    "optimize_search",
    "optimize_table_cells",
    "render_optimize_table",
    "render_search_tables",
]


@dataclass
class TechniqueResult:
    """Measurements of one model of the comparison (the float model, the chosen one, a built-in recipe)."""

    name: str
    description: str
    path: Path
    file_bytes: int = 0
    p50_ms: float | None = None
    p50_ci: tuple[float, float] | None = None
    peak_mb: float | None = None  # session memory, MB = 10^6 bytes
    accuracy: float | None = None
    cosine_mean: float | None = None
    sqnr_db: float | None = None
    error: str = ""
    p50_ratio: float | None = None
    p50_ratio_ci: tuple[float, float] | None = None
    changed: bool | None = None  # False: no pass changed the model (the technique does not apply to it)


@dataclass
class OptimizeResult:
    """The comparison table's data."""

    model: Path
    data_source: str
    rows: list[TechniqueResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    split: str = ""  # which data the accuracy column is on, e.g. "selection split digits_val.npz"
    busy: str = ""  # the busy-machine note of the timing, "" on a quiet machine

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        from dataclasses import asdict

        rows = []
        for r in self.rows:
            d = asdict(r)
            d["path"] = str(r.path)
            rows.append(d)
        return {
            "model": str(self.model),
            "data": self.data_source,
            "rows": rows,
            "notes": self.notes,
            "env": self.env,
            "split": self.split,
            "busy": self.busy,
        }


def _ms(x: float) -> str:
    return f"{x:.1f}" if x >= 100 else (f"{x:.3f}" if x >= 1 else f"{x:.4f}")


def _ci_ms(p50: float | None, ci: Any) -> str:
    if p50 is None:
        return "-"
    # a batch-means interval on a very busy machine can reach below zero; no latency is negative
    return f"{_ms(p50)} ({_ms(max(0.0, ci[0]))}-{_ms(ci[1])})" if ci else _ms(p50)


def _ratio(r: TechniqueResult, base: TechniqueResult) -> str:
    if r is base:
        return "1.00x" if r.p50_ms is not None else "-"
    if r.p50_ratio is None:
        return "-"
    ci = f" ({r.p50_ratio_ci[0]:.2f}-{r.p50_ratio_ci[1]:.2f})" if r.p50_ratio_ci else ""
    return f"{r.p50_ratio:.2f}x{ci}"


def _sqnr(x: float | None) -> str:
    return "-" if x is None else ("inf" if x == float("inf") else f"{x:.1f}")


def optimize_table_cells(result: OptimizeResult) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the comparison table, keeping only the columns that have a value on some row.

    A technique whose passes changed nothing is marked ``(no change)``; a failed one shows its error.
    """
    acc_head = f"accuracy ({result.split})" if result.split else "accuracy"
    heads = ["technique", "size MB", "size x", "p50 ms (95% CI)", "p50 x (95% CI)", "session MB", acc_head,
             "Δ acc", "cosine", "SQNR dB", "note"]  # fmt: skip
    base = result.rows[0]
    rows: list[list[str]] = []
    for r in result.rows:
        if r.error:
            rows.append([r.name] + ["-"] * 9 + [r.error[:60]])
            continue
        size_x = r.file_bytes / base.file_bytes if base.file_bytes else None
        dacc = (f"{100 * (r.accuracy - base.accuracy):+.2f}"
                if r.accuracy is not None and base.accuracy is not None and r is not base else "-")  # fmt: skip
        rows.append([
            r.name, f"{r.file_bytes / 1e6:.2f}", "-" if size_x is None else f"{size_x:.3f}x",
            _ci_ms(r.p50_ms, r.p50_ci), _ratio(r, base), "-" if r.peak_mb is None else f"{r.peak_mb:.1f}",
            "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%", dacc,
            "-" if r.cosine_mean is None else f"{r.cosine_mean:.5f}", _sqnr(r.sqnr_db),
            "no change: the same model as float" if r.changed is False else "",
        ])  # fmt: skip
    keep = [i for i in range(len(heads)) if i == 0 or any(row[i] not in ("-", "") for row in rows)]
    return [heads[i] for i in keep], [[row[i] for i in keep] for row in rows]


def render_optimize_table(result: OptimizeResult) -> Table:
    """The comparison table: one row per technique, ratios against the float model (empty columns dropped)."""
    t = Table(title=f"tensorslim optimize: {result.model.name} (data: {Path(result.data_source).name})")
    heads, rows = optimize_table_cells(result)
    for col in heads:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    env = result.env
    t.caption = (
        f"latency: batch {env.get('batch_size', 1)}, {env.get('threads', '?')} thread(s), interleaved with the float "
        f"model (tensorslim bench's harness), onnxruntime {env.get('onnxruntime_version', '?')}, "
        f"{env.get('cpu_model', '?')}; MB = 10^6 bytes"
    )
    if result.busy:
        t.caption += f"\n{result.busy}"
    return t


@dataclass
class OptimizeSearchResult:
    """The search's result and its comparison table (float, chosen model, built-in recipes)."""

    search: Any  # tensorslim.search.SearchResult
    comparison: OptimizeResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the comparison's keys plus ``search``."""
        d = self.comparison.to_dict()
        d["search"] = self.search.to_dict()
        return d


def _row(name: str, description: str, path: Path, c: Any, metric: str) -> TechniqueResult:
    row = TechniqueResult(name, description, path, file_bytes=c.size_bytes or 0, p50_ms=c.latency_ms, error=c.error)
    ci, rci = c.latency_ci, c.latency_ratio_ci
    row.p50_ci = None if ci is None else (float(ci[0]), float(ci[1]))
    row.p50_ratio = c.latency_ratio
    row.p50_ratio_ci = None if rci is None else (float(rci[0]), float(rci[1]))
    row.peak_mb = None if c.session_bytes is None else c.session_bytes / 1e6
    row.changed = c.changed
    row.cosine_mean, row.sqnr_db = c.cosine, c.sqnr_db
    if metric == "top1":
        row.accuracy = c.score
    elif metric in ("cosine", "embedding-cosine"):
        row.cosine_mean = c.score
    elif metric == "sqnr":
        row.sqnr_db = c.score
    return row


def optimize_search(
    model: str | os.PathLike[str] | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    test_data: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "tensorslim-out",
    config: Any = None,
    threads: int = 1,
    batch_size: int = 1,
    seconds: float = 2.0,
    progress: bool | None = None,
    on_step: Callable[[str], None] | None = None,
) -> OptimizeSearchResult:
    """Run the accuracy-aware search on ``model`` (the bundled digits CNN when ``None``).

    With no model, the bundled example's splits are used: ``digits_calib.npz`` for calibration,
    ``digits_val.npz`` for selection and ``digits_test.npz`` (held out) for the final check; none of them was
    trained on.

    Args:
        model: The float ONNX model.
        data: Calibration ``.npz``.
        eval_data: Selection ``.npz`` (candidates are scored on it).
        test_data: Held-out ``.npz`` (the chosen model is scored on it once).
        output_dir: Folder for the study, the cache and ``best.*``.
        config: A :class:`~tensorslim.search.SearchConfig` (its ``timing`` is replaced by the three options below).
        threads: Intra-op threads of the latency measurements (``tensorslim bench``'s default: 1).
        batch_size: Batch size of the latency measurements.
        seconds: Timed-run budget per model of each interleaved timing run (0: no latency at all).
        progress: Progress bar over trials.
        on_step: Called with one plain line per step (for pipes and logs).
    """
    import dataclasses

    from tensorslim.examples import (
        example_calib_data_path,
        example_model_path,
        example_test_data_path,
        example_val_data_path,
    )
    from tensorslim.search import SearchConfig, run_search
    from tensorslim.search.timing import TimingSettings

    notes: list[str] = []
    if model is None:
        src = example_model_path()
        data = data if data is not None else example_calib_data_path()
        eval_data = eval_data if eval_data is not None else example_val_data_path()
        test_data = test_data if test_data is not None else example_test_data_path()
        notes.append(
            f"bundled example {src.name}: calibration {Path(data).name}, selection {Path(eval_data).name}, "
            f"held-out test {Path(test_data).name}; the model was trained on none of them"
        )
    else:
        src = Path(model)
    from tensorslim._files import check_output_path

    for name in ("best.onnx", "best.tslim", "best.yaml"):  # the finish step replaces these: never an input
        check_output_path(Path(output_dir) / name, src, *(p for p in (data, eval_data, test_data) if p), folder=False)
    cfg = config if config is not None else SearchConfig()
    try:
        timing = TimingSettings(threads=threads, batch_size=batch_size, seconds=seconds)
    except ValueError as e:
        raise InputError(f"--{e}") from None
    cfg = dataclasses.replace(cfg, timing=timing, latency_runs=cfg.latency_runs if seconds > 0 else 0)
    res = run_search(src, output_dir, data=data, eval_data=eval_data, test_data=test_data, config=cfg,
                     progress=progress, on_step=on_step)  # fmt: skip
    ft = res.float_timing or {}
    fc = SimpleNamespace(size_bytes=res.float_size_bytes, latency_ms=res.float_latency_ms, score=res.reference_score,
                         error="", latency_ci=ft.get("p50_ci"), latency_ratio=1.0 if ft else None,
                         latency_ratio_ci=None, session_bytes=ft.get("session_bytes"), changed=None,
                         cosine=1.0, sqnr_db=float("inf"))  # fmt: skip
    rows = [_row("float", "the input model", src, fc, res.metric)]
    if res.chosen is not None and res.chosen_path is not None:
        rows.append(_row(f"search: {res.chosen.name}", "chosen by the search (smallest/fastest within budget)",
                         res.chosen_path, res.chosen, res.metric))  # fmt: skip
    for c in res.candidates:
        if c.source == "builtin":
            desc = ("meets the budget" if c.feasible else "misses the budget") if c.ok else "failed"
            rows.append(_row(c.name, f"built-in recipe ({desc})", Path(c.file or ""), c, res.metric))
    env: dict[str, Any] = {"threads": threads, "batch_size": batch_size}
    cond = ft.get("conditions") or {}
    env.update({k: cond[k] for k in ("onnxruntime_version", "cpu_model") if k in cond})
    if seconds > 0:
        notes.append(
            f"latency: every model timed after the search in this process, interleaved with the float model "
            f"({seconds:g} s per model, {threads} thread(s), batch {batch_size}), as tensorslim bench does"
        )
    busy = res.busy
    split = f"selection split {Path(eval_data).name}" if eval_data else ("calibration data" if data else "generated")
    comp = OptimizeResult(src, str(eval_data) if eval_data else "generated", rows, notes + res.notes, env,
                          split=split, busy=busy)  # fmt: skip
    return OptimizeSearchResult(res, comp)


def render_search_tables(result: OptimizeSearchResult) -> list[Table]:
    """The comparison table (float, chosen, built-in recipes) and the Pareto front of the search."""
    res = result.search
    first = render_optimize_table(result.comparison)
    first.title = (
        f"tensorslim optimize: {res.model.name} ({res.metric} >= {res.threshold:.4f}, float {res.reference_score:.4f}"
        f" on the {result.comparison.split})"
    )
    front = Table(title=f"Pareto front ({res.metric} vs {res.objective}) of {len(res.candidates)} candidates")
    cells = []
    for c in sorted(res.front, key=lambda c: c.size_bytes or 0):
        mark = " (chosen)" if res.chosen is not None and c.recipe_hash == res.chosen.recipe_hash else ""
        p50 = _ci_ms(c.latency_ms, c.latency_ci)
        rci = c.latency_ratio_ci
        ratio = ("-" if c.latency_ratio is None
                 else f"{c.latency_ratio:.2f}x" + (f" ({rci[0]:.2f}-{rci[1]:.2f})" if rci else ""))  # fmt: skip
        cells.append([c.name + mark + (" (no change)" if c.changed is False else ""),
                      c.source if c.trial is None else f"trial {c.trial}", f"{c.score:.4f}",
                      f"{(c.size_bytes or 0) / 1e6:.3f}", p50, ratio, "yes" if c.feasible else "no"])  # fmt: skip
    heads = ["candidate", "source", f"{res.metric} ({result.comparison.split})", "size MB", "p50 ms (95% CI)",
             "p50 x (95% CI)", "meets budget"]  # fmt: skip
    keep = [i for i in range(len(heads)) if i < 3 or any(row[i] != "-" for row in cells)]
    for i in keep:
        front.add_column(heads[i])
    for row in cells:
        front.add_row(*(row[i] for i in keep))
    front.caption = (
        f"{res.trials} trial(s), {res.evaluated} evaluated, {res.cache_hits} from the cache, {res.retries} retried"
        + ("; latency ratios against the float model timed in the same interleaved run" if res.float_timing else "")
    )
    return [first, front]
