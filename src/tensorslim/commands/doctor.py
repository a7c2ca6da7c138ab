"""``tensorslim doctor MODEL``: pre-flight check of whether a (quantized) model will be fast on this CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tensorslim.commands._kit import EXIT_OK, command, console, write_json
from tensorslim.commands._options import JsonOption

__all__ = ["doctor"]


@command("doctor", """
    tensorslim doctor model.int8.onnx
    tensorslim doctor model.qdq.onnx --baseline model.onnx --json doctor.json
    tensorslim doctor model.int8.onnx --data inputs.npz    # real inputs for the timings
    tensorslim doctor model.int8.onnx --no-measure      # static checks only (one session creation)
""", exits="Exit codes: 0 ok (findings are not errors), 2 bad input, 3 internal error.")
def doctor(
    model: Annotated[Path, typer.Argument(help="ONNX model to check (usually the quantized one).")],
    baseline: Annotated[
        Path | None, typer.Option(help="The float model it came from: time and profile both side by side.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Real inputs for the timings: .npz or folder of .npz (made up if absent)."),
    ] = None,
    measure: Annotated[bool, typer.Option(help="Run the measured checks (timings, profile, ConvInteger).")] = True,
    threads: Annotated[int, typer.Option(help="Intra-op threads for the timings.")] = 1,
    seconds: Annotated[float, typer.Option(help="Timing budget per model.")] = 1.5,
    json_out: JsonOption = None,
) -> int:
    """Integer instructions of this CPU, unfused Q/DQ pairs, int4/fp16/ConvInteger/S8S8 pitfalls, each with its fix."""

    from tensorslim.benchmark.inputs import real_inputs
    from tensorslim.diagnostics.doctor import doctor as run_doctor
    from tensorslim.diagnostics.doctor import render_doctor

    inputs = None if data is None or not measure else real_inputs(model, data)
    rep = run_doctor(model, baseline=baseline, inputs=inputs, measure=measure, threads=threads, seconds=seconds)
    if json_out != "-":
        render_doctor(rep, console)
    write_json(json_out, rep.to_dict())
    return EXIT_OK
