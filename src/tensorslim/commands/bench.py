"""``tensorslim bench MODEL...``: size, load time, latency, throughput and memory side by side (ONNX Runtime
or LiteRT)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from tensorslim.commands._kit import EXIT_OK, command, console, warn, write_json
from tensorslim.commands._options import JsonOption, ReportOption
from tensorslim.errors import InputError

__all__ = ["bench"]


def _parse_dims(dims: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dims or []:
        name, sep, value = d.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--dim: {d!r} is not NAME=SIZE (e.g. --dim sequence=128)")
        out[name.strip()] = int(value)
    return out


@command("bench", """
    tensorslim bench model.onnx model.int8.onnx
    tensorslim bench model.onnx q.onnx --batch-size 32 --dim sequence=128 --threads 2 --json bench.json
    tensorslim bench det.onnx det.int8.onnx --shape x=1x3x640x640
    tensorslim bench det.onnx det.int8.onnx --data calib.npz
""", note="Ratios are against the first model.")
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX (or .tflite) models; the first is the baseline.")],
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: ONNX Runtime default).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch size for dynamic first dimensions.")] = 1,
    dim: Annotated[list[str] | None, typer.Option(help="Size of a named dynamic dim, NAME=SIZE.")] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(help="Whole shape of a generated input, INPUT=SIZExSIZE... (sizes its unnamed dims too).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Real inputs instead of generated ones: .npz or folder of .npz (the first --batch-size "
                     "samples)."),
    ] = None,
    seconds: Annotated[float, typer.Option(help="Time budget per model for the timed runs.")] = 5.0,
    memory: Annotated[bool, typer.Option(help="Measure peak memory in a fresh process per model.")] = True,
    denormal_as_zero: Annotated[
        bool,
        typer.Option(
            "--denormal-as-zero",
            help="Flush denormal floats to zero in every session (ONNX Runtime's session.set_denormal_as_zero); "
            "Softmax over masked attention produces denormals that are several times slower on x86.",
        ),
    ] = False,
    json_out: JsonOption = None,
    report_html: ReportOption = None,
) -> int:
    """Measure size, load time, latency percentiles, throughput and peak memory side by side."""

    from tensorslim.benchmark import benchmark_models, render_bench_table
    from tensorslim.benchmark.inputs import parse_shape, real_inputs

    if batch_size < 1:
        raise InputError("--batch-size: must be at least 1")
    from tensorslim.backends.tflite.io import is_tflite

    shapes = dict(parse_shape(s) for s in shape or [])
    if data is not None and (shapes or dim):
        raise InputError("--data gives the input shapes; drop --shape and --dim")
    if any(is_tflite(m) for m in models):
        if data is not None or shapes:
            raise InputError("--data and --shape apply to ONNX models; drop them for .tflite")
        return _bench_tflite(models, threads=threads, batch_size=batch_size, seconds=seconds, json_out=json_out)
    report = benchmark_models(
        models,
        threads=threads,
        batch_size=batch_size,
        inputs=None if data is None else real_inputs(models[0], data, batch_size=batch_size),
        dim_overrides=_parse_dims(dim),
        shapes=shapes,
        max_time_s=seconds,
        measure_memory=memory,
        denormal_as_zero=denormal_as_zero,
    )
    if json_out != "-":
        console.print(render_bench_table(report))
    from tensorslim.benchmark.table import busy_note, shape_note

    for note in (shape_note(report), busy_note(report)):
        if note:
            warn(note)
    if report_html is not None:
        from tensorslim.report import write_report

        pair = (models[0], models[1], None) if len(models) == 2 else None
        write_report(report_html, bench=report, title="tensorslim bench", layers_of=pair)
    write_json(json_out, report.to_dict())
    return EXIT_OK


def _bench_tflite(
    models: Sequence[Path],
    *,
    threads: int,
    batch_size: int,
    seconds: float,
    json_out: str | None,
) -> int:
    """``tensorslim bench a.tflite b.tflite``: LiteRT latency side by side."""
    from tensorslim.backends.tflite.io import is_tflite
    from tensorslim.benchmark import render_bench_table
    from tensorslim.benchmark.litert import benchmark_litert

    if not all(is_tflite(m) for m in models):
        raise InputError("bench compares models of one format: give only .tflite files (or only .onnx files)")
    for m in models:
        if not Path(m).is_file():
            raise InputError(f"{m}: no such file; check the path")
    report = benchmark_litert(models, threads=threads, batch_size=batch_size, max_time_s=seconds)
    if json_out != "-":
        console.print(render_bench_table(report))
    write_json(json_out, report.to_dict())
    return EXIT_OK
