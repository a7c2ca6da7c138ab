"""``tensorslim profile MODEL [OTHER]``: time per op type and per node from ONNX Runtime's profiler."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tensorslim.commands._kit import EXIT_OK, command, console, warn, write_json
from tensorslim.commands._options import JsonOption
from tensorslim.errors import InputError

if TYPE_CHECKING:
    from tensorslim.benchmark.profile import NodeTime

__all__ = ["profile_cmd"]


@command("profile", """
    tensorslim profile model.onnx
    tensorslim profile model.onnx model.int8.onnx --runs 50 --json prof.json
    tensorslim profile model.onnx --data inputs.npz --batch-size 8   # real inputs, first 8 samples
""", note="Times are medians per run of ONNX Runtime's kernels in its optimized graph (fused ops keep their "
    "fused names).")
def profile_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model to profile.")],
    other: Annotated[Path | None, typer.Argument(help="A second model: show where the time moved.")] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Real inputs: .npz or folder of .npz, first --batch-size samples (made up if absent)."),
    ] = None,
    runs: Annotated[int, typer.Option(help="Profiled runs (after the warm-up).")] = 30,
    warmup: Annotated[int, typer.Option(help="Runs dropped before the profiled ones.")] = 5,
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: ONNX Runtime default).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch size for dynamic first dimensions.")] = 1,
    top: Annotated[int, typer.Option(help="Slowest nodes listed per model.")] = 10,
    json_out: JsonOption = None,
) -> int:
    """Per-op-type and per-node time of one model, or the difference between two."""

    from tensorslim.benchmark.profile import diff_profiles, profile_model

    if runs < 1 or warmup < 0 or batch_size < 1:
        raise InputError("--runs and --batch-size must be at least 1, --warmup at least 0")
    from tensorslim.benchmark.inputs import real_inputs

    feeds = None if data is None else real_inputs(model, data, batch_size=batch_size)
    if feeds is None and json_out != "-":
        from tensorslim.benchmark.inputs import unsized_in_model, unsized_said

        unsized, shapes = unsized_in_model(model, batch_size)
        if unsized:
            said = unsized_said(unsized, shapes)
            warn(f"profiling generated inputs that make up the sizes the model leaves open: {said}, which says "
                 f"little about real inputs; pass --data D.npz")  # fmt: skip
    a = profile_model(model, runs=runs, warmup=warmup, threads=threads, batch_size=batch_size, inputs=feeds)
    b = None
    if other is not None:
        b = profile_model(other, runs=runs, warmup=warmup, threads=threads, batch_size=batch_size, inputs=feeds)
    quiet = json_out == "-"
    if b is None:
        if not quiet:
            t = Table(title=f"{model.name}: {a.runs} runs, median run {a.run_median_us / 1e3:.3f} ms")
            for c in ("op type", "nodes", "µs / run", "share"):
                t.add_column(c, justify="right" if c != "op type" else "left")
            counts = a.count_by_op_type()
            for op, us in a.by_op_type().items():
                t.add_row(op, str(counts[op]), f"{us:.1f}", f"{100 * us / (a.kernel_us or 1):.1f}%")
            console.print(t)
            _nodes_table(a.path, a.nodes[:top])
        write_json(json_out, a.to_dict())
        return EXIT_OK
    diff = diff_profiles(a, b)
    if not quiet:
        t = Table(title=f"where the time went: {model.name} -> {other.name if other else ''} (µs per run)")
        for c in ("op type", "nodes A", "nodes B", "A µs", "B µs", "Δ µs"):
            t.add_column(c, justify="right" if c != "op type" else "left")
        for r in diff.rows:
            t.add_row(
                r.op_type, str(r.a_nodes), str(r.b_nodes), f"{r.a_us:.1f}", f"{r.b_us:.1f}", f"{r.delta_us:+.1f}"
            )
        t.caption = (
            f"kernels {a.kernel_us:.0f} -> {b.kernel_us:.0f} µs; whole run (median) "
            f"{a.run_median_us:.0f} -> {b.run_median_us:.0f} µs; {threads} thread(s)"
        )
        console.print(t)
        _nodes_table(b.path, b.nodes[:top])
    write_json(json_out, diff.to_dict())
    return EXIT_OK


def _nodes_table(path: str, nodes: Sequence[NodeTime]) -> None:
    t = Table(title=f"slowest nodes of {Path(path).name}")
    for c in ("node", "op type", "µs / run"):
        t.add_column(c, overflow="fold", justify="right" if c == "µs / run" else "left")
    for n in nodes:
        t.add_row(n.name, n.op_type, f"{n.median_us:.1f}")
    console.print(t)
