"""What the ``quantize`` and ``bench`` commands do with ``.tflite`` files (``eval`` needs nothing
special: :func:`~tensorslim.runtime.base.open_runtime` opens them in LiteRT). The command definitions stay in
:mod:`tensorslim.cli`; it hands ``.tflite`` inputs to these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tensorslim.clikit import EXIT_OK, console, warn, write_json
from tensorslim.errors import InputError

__all__ = ["bench_tflite_command", "quantize_tflite_command"]


def _config(mode: str, *, form: str, granularity: str, range_method: str | None, exclude: Sequence[str],
            min_size: int | None, ops: tuple[str, ...] | None, io: str) -> Any:  # fmt: skip
    from tensorslim.backends.tflite.dynamic import DYNAMIC_OPS, TfliteDynamicConfig
    from tensorslim.backends.tflite.fp16 import TfliteFloat16Config
    from tensorslim.backends.tflite.static import TfliteStaticConfig

    try:
        if mode == "dynamic":
            kwargs: dict[str, Any] = {"granularity": granularity, "exclude": tuple(exclude), "form": form}
            if range_method is not None:
                kwargs["range_method"] = range_method
            if min_size is not None:
                kwargs["min_size"] = min_size
            if ops is not None:
                unknown = [o for o in ops if o not in DYNAMIC_OPS]
                if unknown or not ops:
                    raise InputError(
                        f"--ops: unknown TFLite op {', '.join(map(repr, unknown)) or '(empty)'}; "
                        f"allowed: {', '.join(DYNAMIC_OPS)}"
                    )
                kwargs["op_types"] = ops
            return TfliteDynamicConfig(**kwargs)
        if form != "auto":
            raise InputError(f"--form applies to --mode dynamic; drop it for --mode {mode}")
        if mode == "fp16":
            return TfliteFloat16Config(exclude=tuple(exclude), min_size=min_size or 0)
        if mode == "static":
            return TfliteStaticConfig(io=io, granularity=granularity, weight_range=range_method or "minmax")
    except ValueError as e:
        raise InputError(f"--{str(e).replace('_', '-', 1) if str(e).startswith('range') else e}") from None
    raise InputError(f"--mode: {mode!r} is not available for .tflite models; use dynamic, fp16 or static")


def quantize_tflite_command(
    model: Path,
    output: Path,
    *,
    mode: str,
    form: str = "auto",
    data: Path | None,
    granularity: str,
    range_method: str | None,
    exclude: Sequence[str],
    min_size: int | None,
    ops: tuple[str, ...] | None,
    io: str,
    json_out: str | None,
    show_all: bool,
    check_speed: bool,
    table: Callable[[list[Any], int], Any],
) -> int:
    """``tensorslim quantize model.tflite -o out.tflite``: quantize, report as for ONNX, optional speed check."""
    from tensorslim.backends.tflite.quantize import quantize_tflite

    cfg = _config(mode, form=form, granularity=granularity, range_method=range_method, exclude=exclude,
                  min_size=min_size, ops=ops, io=io)  # fmt: skip
    if data is not None and mode != "static":
        raise InputError("--data is used by --mode static only (calibration); drop it or add --mode static")
    result = quantize_tflite(model, output, mode=mode, config=cfg, data=data)
    quiet = json_out == "-"
    if not quiet:
        console.print(table(result.records, 0 if show_all else 25))
        for note in result.notes:
            console.print(f"note: {note}")
        s = result.summary()
        console.print(
            f"{mode}: quantized {s['quantized']} of {s['weights']} weights: {s['bytes_before'] / 1e6:.2f} MB -> "
            f"{s['bytes_after'] / 1e6:.2f} MB; model {result.input_bytes / 1e6:.2f} MB -> "
            f"{result.output_bytes / 1e6:.2f} MB ({result.size_ratio:.3f}x) in {result.seconds:.1f} s"
        )
        console.print(f"wrote {result.output_path}")
    payload = result.to_dict()
    if check_speed:
        payload["speed_check"] = _speed_check(model, output, quiet=quiet)
    write_json(json_out, payload)
    return EXIT_OK


def _speed_check(reference: Path, candidate: Path, *, quiet: bool) -> dict[str, Any]:
    from tensorslim.benchmark.litert import benchmark_litert
    from tensorslim.benchmark.verdict import speed_verdict

    rep = benchmark_litert([reference, candidate], threads=1, max_time_s=1.0, min_runs=10, load_repeats=1)
    ref, cand = rep.models
    v = speed_verdict(rep)
    if not quiet:
        if v.warn:
            rerun = f"tensorslim bench {reference} {candidate}"
            warn(v.message("in LiteRT", ref.p50_ms, cand.p50_ms, rerun))
        else:
            console.print(
                f"speed check (LiteRT): p50 {ref.p50_ms:.3f} ms -> {cand.p50_ms:.3f} ms ({v.ratio:.2f}x, batch 1)"
            )
    return {"reference_p50_ms": ref.p50_ms, "candidate_p50_ms": cand.p50_ms, "ratio": v.ratio,
            "slower": v.kind == "slower", "verdict": v.kind, "busy": v.busy}  # fmt: skip


def bench_tflite_command(
    models: Sequence[Path],
    *,
    threads: int,
    batch_size: int,
    seconds: float,
    json_out: str | None,
    table: Callable[[Any], Any],
) -> int:
    """``tensorslim bench a.tflite b.tflite``: LiteRT latency side by side."""
    from tensorslim.backends.tflite.io import is_tflite
    from tensorslim.benchmark.litert import benchmark_litert

    if not all(is_tflite(m) for m in models):
        raise InputError("bench compares models of one format: give only .tflite files (or only .onnx files)")
    for m in models:
        if not Path(m).is_file():
            raise InputError(f"{m}: no such file; check the path")
    report = benchmark_litert(models, threads=threads, batch_size=batch_size, max_time_s=seconds)
    if json_out != "-":
        console.print(table(report))
    write_json(json_out, report.to_dict())
    return EXIT_OK
