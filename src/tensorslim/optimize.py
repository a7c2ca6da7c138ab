"""``tensorslim optimize``: find the smallest (or fastest) model that keeps accuracy within a budget.

:func:`optimize_search` runs the accuracy-aware search (:mod:`tensorslim.search`): the built-in recipes and
an Optuna study over recipes, each candidate scored on the evaluation data; the chosen model is written to the
output folder, re-measured on the test data and, with ``seconds > 0``, benchmarked against the float model
(interleaved, 95 % CI). :func:`run_optimize` is the older side-by-side comparison of fixed techniques.
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
    "Technique",
    "TechniqueResult",
    "default_techniques",
    "optimize_search",
    "render_optimize_table",
    "render_search_tables",
    "run_optimize",
]


@dataclass(frozen=True)
class Technique:
    """A named way to optimize a model: ``apply(src, dst)`` writes the optimized model."""

    name: str
    description: str
    apply: Callable[[Path, Path], Any]


@dataclass
class TechniqueResult:
    """Measurements of one model of the comparison."""

    name: str
    description: str
    path: Path
    file_bytes: int = 0
    p50_ms: float | None = None
    p50_ci: tuple[float, float] | None = None
    peak_mb: float | None = None
    accuracy: float | None = None
    cosine_mean: float | None = None
    sqnr_db: float | None = None
    error: str = ""


@dataclass
class OptimizeResult:
    """The comparison table's data."""

    model: Path
    data_source: str
    rows: list[TechniqueResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)

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
        }


def _dynamic(**kwargs: Any) -> Callable[[Path, Path], Any]:
    def apply(src: Path, dst: Path) -> Any:
        from tensorslim.api import quantize
        from tensorslim.passes.dynamic_quant import DynamicQuantConfig

        return quantize(src, dst, config=DynamicQuantConfig(**kwargs))

    return apply


def _bundled_calib(src: Path) -> Path | None:
    """The bundled calibration split when ``src`` is the bundled example (data-aware techniques)."""
    from tensorslim.examples import example_calib_data_path, example_model_path

    return example_calib_data_path() if Path(src).resolve() == example_model_path().resolve() else None


def _static() -> Callable[[Path, Path], Any]:
    def apply(src: Path, dst: Path) -> Any:
        from tensorslim.api import quantize
        from tensorslim.passes.static_quant import StaticQuantConfig

        data = _bundled_calib(src)
        if data is None:
            raise InputError("needs calibration data: tensorslim quantize MODEL --mode static --data CALIB.npz")
        return quantize(src, dst, config=StaticQuantConfig(), data=data)

    return apply


def _fp16() -> Callable[[Path, Path], Any]:
    def apply(src: Path, dst: Path) -> Any:
        from tensorslim.api import quantize
        from tensorslim.passes.float16 import Float16Config

        return quantize(src, dst, config=Float16Config(), data=_bundled_calib(src))

    return apply


def _channel_prune(ratio: float) -> Callable[[Path, Path], Any]:
    def apply(src: Path, dst: Path) -> Any:
        from tensorslim.compression import prune_channels
        from tensorslim.passes.channel_prune import ChannelPruneConfig

        return prune_channels(src, dst, config=ChannelPruneConfig(ratio=ratio), data=_bundled_calib(src))

    return apply


def _prune_cluster(sparsity: float, clusters: int) -> Callable[[Path, Path], Any]:
    def apply(src: Path, dst: Path) -> Any:
        from tensorslim.compression import cluster, prune
        from tensorslim.passes.cluster import ClusterConfig
        from tensorslim.passes.prune import PruneConfig

        data = _bundled_calib(src)
        pruned = prune(src, config=PruneConfig(sparsity=sparsity, method="sparsegpt" if data else "magnitude"),
                       data=data).model  # fmt: skip
        cfg = ClusterConfig(clusters=clusters, granularity="per_channel", codebook_dtype="float16")
        return cluster(pruned, dst, config=cfg, data=data)

    return apply


def default_techniques() -> list[Technique]:
    """The techniques available so far, in table order."""
    return [
        Technique("dynamic-int8", "int8 weights, default form (auto, per channel, MSE ranges)", _dynamic()),
        Technique(
            "dynamic-int8-integer",
            "int8 weights, integer kernels wherever one exists (ConvInteger included)",
            _dynamic(form="integer"),
        ),
        Technique(
            "dynamic-int8-weight-only",
            "int8 weights dequantized for float compute (DequantizeLinear)",
            _dynamic(form="weight_only", weight_encoding="dequantize_linear"),
        ),
        Technique(
            "dynamic-int8-per-tensor",
            "int8 weights, one scale per tensor, min/max range (the textbook recipe)",
            _dynamic(granularity="per_tensor", range_method="minmax"),
        ),
        Technique(
            "static-int8",
            "int8 activations and weights (QDQ fused into QLinearConv/QGemm), calibrated on data",
            _static(),
        ),
        Technique("fp16", "float16 weights and compute, float32 inputs/outputs", _fp16()),
        Technique(
            "channel-prune-50",
            "half the output channels removed, consumers refitted by least squares on calibration data",
            _channel_prune(0.5),
        ),
        Technique(
            "prune30-cluster16",
            "30% sparsity (OBS update), then 16 centroids per channel (indices + codebook; .tslim packs it)",
            _prune_cluster(0.3, 16),
        ),
    ]


def run_optimize(
    model: str | os.PathLike[str] | None = None,
    *,
    eval_data: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "tensorslim-out",
    techniques: list[Technique] | None = None,
    threads: int = 1,
    batch_size: int = 1,
    seconds: float = 3.0,
    progress: bool = False,
) -> OptimizeResult:
    """Optimize ``model`` (the bundled digits CNN when ``None``) with each technique and compare."""
    from rich.progress import Progress

    from tensorslim.backends.onnx.io import load_model
    from tensorslim.benchmark import benchmark_models
    from tensorslim.evaluate import evaluate, load_npz
    from tensorslim.examples import example_model_path, example_test_data_path
    from tensorslim.runtime.ort import OrtRuntime

    notes: list[str] = []
    if model is None:
        src = example_model_path()
        data_path: Path | None = Path(eval_data) if eval_data else example_test_data_path()
        notes.append(f"bundled example: {src.name}, test split {data_path.name if data_path else '-'}")
    else:
        src = Path(model)
        data_path = Path(eval_data) if eval_data else None
    load_model(src)  # clear errors for a bad model before any work
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: the folder is not writable; choose another --output-dir")
    ref_rt = OrtRuntime(src, threads=threads)
    dataset = load_npz(data_path, ref_rt.inputs) if data_path else None
    if dataset is None:
        notes.append("no --eval-data: fidelity is measured on generated inputs")
    techs = techniques if techniques is not None else default_techniques()
    rows = [TechniqueResult("float", "the input model", src)]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("optimizing", total=len(techs) + 2)
        for t in techs:
            bar.update(task, description=f"applying {t.name}")
            dst = out / f"{src.stem}.{t.name}.onnx"
            row = TechniqueResult(t.name, t.description, dst)
            try:
                t.apply(src, dst)
            except InputError as e:
                row.error = str(e)
            rows.append(row)
            bar.advance(task)
        bar.update(task, description="evaluating")
        for row in rows:
            if row.error:
                continue
            rep = evaluate(ref_rt, OrtRuntime(row.path, threads=threads), dataset, batch_size=64)
            o = rep.outputs[0]
            row.cosine_mean, row.sqnr_db = o.cosine_mean, o.sqnr_db
            row.accuracy = o.candidate_accuracy
        bar.advance(task)
        bar.update(task, description="benchmarking")
        ok = [r for r in rows if not r.error]
        bench = benchmark_models(
            [r.path for r in ok], threads=threads, batch_size=batch_size, max_time_s=seconds, min_runs=20
        )
        for r, b in zip(ok, bench.models, strict=True):
            r.file_bytes = b.file_bytes
            r.p50_ms = b.p50_ms
            r.p50_ci = (b.p50_ci_low_ms, b.p50_ci_high_ms)
            r.peak_mb = b.memory.session_rss_bytes / 2**20 if b.memory else None
        bar.advance(task)
    res = OptimizeResult(src, str(data_path) if data_path else "generated", rows, notes, bench.env.to_dict())
    return res


def render_optimize_table(result: OptimizeResult) -> Table:
    """The comparison table: one row per technique, ratios against the float model."""
    t = Table(title=f"tensorslim optimize: {result.model.name} (data: {Path(result.data_source).name})")
    for col in ("technique", "size MB", "size x", "p50 ms (95% CI)", "p50 x", "session MB", "accuracy", "Δ acc",
                "cosine", "SQNR dB"):  # fmt: skip
        t.add_column(col)
    base = result.rows[0]
    for r in result.rows:
        if r.error:
            t.add_row(r.name, "-", "-", "-", "-", "-", "-", "-", "-", r.error[:60])
            continue
        size_x = r.file_bytes / base.file_bytes if base.file_bytes else None
        p50_x = r.p50_ms / base.p50_ms if (r.p50_ms and base.p50_ms) else None
        ci = f"{r.p50_ms:.3f} ({r.p50_ci[0]:.3f}-{r.p50_ci[1]:.3f})" if r.p50_ms and r.p50_ci else "-"
        acc = f"{100 * r.accuracy:.2f}%" if r.accuracy is not None else "-"
        dacc = (
            f"{100 * (r.accuracy - base.accuracy):+.2f}"
            if r.accuracy is not None and base.accuracy is not None
            else "-"
        )
        t.add_row(
            r.name,
            f"{r.file_bytes / 1e6:.2f}",
            "-" if size_x is None else f"{size_x:.3f}x",
            ci,
            "-" if p50_x is None else f"{p50_x:.2f}x",
            "-" if r.peak_mb is None else f"{r.peak_mb:.1f}",
            acc,
            dacc,
            "-" if r.cosine_mean is None else f"{r.cosine_mean:.5f}",
            "-" if r.sqnr_db is None else ("inf" if r.sqnr_db == float("inf") else f"{r.sqnr_db:.1f}"),
        )
    env = result.env
    t.caption = (
        f"latency: batch 1, {env.get('threads', '?')} thread(s), onnxruntime {env.get('onnxruntime_version', '?')}, "
        f"{env.get('cpu_model', '?')}"
    )
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
    seconds: float = 0.0,
    progress: bool | None = None,
) -> OptimizeSearchResult:
    """Run the accuracy-aware search on ``model`` (the bundled digits CNN when ``None``).

    With no model, the bundled example's splits are used: ``digits_calib.npz`` for calibration,
    ``digits_val.npz`` for selection and ``digits_test.npz`` (held out) for the final check.

    Args:
        model: The float ONNX model.
        data: Calibration ``.npz``.
        eval_data: Selection ``.npz`` (candidates are scored on it).
        test_data: Held-out ``.npz`` (the chosen model is scored on it once).
        output_dir: Folder for the study, the cache and ``best.*``.
        config: A :class:`~tensorslim.search.SearchConfig`.
        threads: Intra-op threads of the final benchmark.
        batch_size: Batch size of the final benchmark.
        seconds: Time per model of the final benchmark of float vs chosen (0: skip it; the table then shows
            the search's single-thread latency).
        progress: Progress bar over trials.
    """
    from tensorslim.examples import (
        example_calib_data_path,
        example_model_path,
        example_test_data_path,
        example_val_data_path,
    )
    from tensorslim.search import SearchConfig, run_search

    notes: list[str] = []
    if model is None:
        src = example_model_path()
        data = data if data is not None else example_calib_data_path()
        eval_data = eval_data if eval_data is not None else example_val_data_path()
        test_data = test_data if test_data is not None else example_test_data_path()
        notes.append(
            f"bundled example {src.name}: calibration {Path(data).name}, selection {Path(eval_data).name}, "
            f"held-out test {Path(test_data).name}"
        )
    else:
        src = Path(model)
    from tensorslim._files import check_output_path

    for name in ("best.onnx", "best.tslim", "best.yaml"):  # the finish step replaces these: never an input
        check_output_path(Path(output_dir) / name, src, *(p for p in (data, eval_data, test_data) if p), folder=False)
    cfg = config if config is not None else SearchConfig()
    res = run_search(src, output_dir, data=data, eval_data=eval_data, test_data=test_data, config=cfg,
                     progress=progress)  # fmt: skip
    fc = SimpleNamespace(size_bytes=res.float_size_bytes, latency_ms=res.float_latency_ms,
                         score=res.reference_score, error="")  # fmt: skip
    float_row = _row("float", "the input model", src, fc, res.metric)
    rows = [float_row]
    if res.chosen is not None and res.chosen_path is not None:
        rows.append(_row(f"search: {res.chosen.name}", "chosen by the search (smallest/fastest within budget)",
                         res.chosen_path, res.chosen, res.metric))  # fmt: skip
    for c in res.candidates:
        if c.source == "builtin":
            desc = ("meets the budget" if c.feasible else "misses the budget") if c.ok else "failed"
            rows.append(_row(c.name, f"built-in recipe ({desc})", Path(""), c, res.metric))
    env: dict[str, Any] = {"threads": 1}
    if seconds > 0 and res.chosen_path is not None:
        from tensorslim.benchmark import benchmark_models

        bench = benchmark_models([src, res.chosen_path], threads=threads, batch_size=batch_size, max_time_s=seconds,
                                 min_runs=20)  # fmt: skip
        fb, cb = bench.models
        for r, b in zip(rows[:2], bench.models, strict=True):
            r.peak_mb = b.memory.session_rss_bytes / 2**20 if b.memory else None
        env = bench.env.to_dict()
        notes.append(
            f"interleaved benchmark ({threads} thread(s), batch {batch_size}): float p50 {fb.p50_ms:.3f} ms "
            f"({fb.p50_ci_low_ms:.3f}-{fb.p50_ci_high_ms:.3f}), chosen {cb.p50_ms:.3f} ms "
            f"({cb.p50_ci_low_ms:.3f}-{cb.p50_ci_high_ms:.3f}), {cb.p50_ms / fb.p50_ms:.2f}x"
        )
    notes.append("p50 column: the search's batch-1 single-thread median of each candidate")
    comp = OptimizeResult(src, str(eval_data) if eval_data else "generated", rows, notes + res.notes, env)
    return OptimizeSearchResult(res, comp)


def render_search_tables(result: OptimizeSearchResult) -> list[Table]:
    """The comparison table (float, chosen, built-in recipes) and the Pareto front of the search."""
    res = result.search
    first = render_optimize_table(result.comparison)
    first.title = (
        f"tensorslim optimize: {res.model.name} ({res.metric} >= {res.threshold:.4f}, float {res.reference_score:.4f})"
    )
    front = Table(title=f"Pareto front ({res.metric} vs {res.objective}) of {len(res.candidates)} candidates")
    for col in ("candidate", "source", res.metric, "size MB", "p50 ms", "meets budget"):
        front.add_column(col)
    for c in sorted(res.front, key=lambda c: c.size_bytes or 0):
        mark = " (chosen)" if res.chosen is not None and c.recipe_hash == res.chosen.recipe_hash else ""
        front.add_row(c.name + mark, c.source if c.trial is None else f"trial {c.trial}", f"{c.score:.4f}",
                      f"{(c.size_bytes or 0) / 1e6:.3f}", "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
                      "yes" if c.feasible else "no")  # fmt: skip
    front.caption = (
        f"{res.trials} trial(s), {res.evaluated} evaluated, {res.cache_hits} from the cache, {res.retries} retried"
    )
    return [first, front]
