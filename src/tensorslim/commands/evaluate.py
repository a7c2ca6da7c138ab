"""``tensorslim eval REFERENCE CANDIDATE``: a candidate model's outputs against a reference model's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tensorslim.commands._kit import EXIT_OK, command, console, write_json
from tensorslim.commands._options import BatchAxisOption, JsonOption, ReportOption, data_option
from tensorslim.commands._tables import eval_table
from tensorslim.errors import InputError

__all__ = ["eval_cmd"]


@command("eval", """
    tensorslim eval model.onnx model.int8.onnx --data test.npz
    tensorslim eval model.onnx model.int8.onnx --json -
""", note="The .npz holds one array per model input, named after it (see --data); an optional integer 'label' "
    "array adds task accuracy.")
def eval_cmd(
    reference: Annotated[Path, typer.Argument(help="The original model.")],
    candidate: Annotated[Path, typer.Argument(help="The optimized model.")],
    data: Annotated[Path | None, data_option()] = None,
    batch_axis: BatchAxisOption = None,
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] = 32,
    max_samples: Annotated[int | None, typer.Option(help="Use at most this many samples.")] = None,
    json_out: JsonOption = None,
    report_html: ReportOption = None,
) -> int:
    """Compare a candidate model's outputs with a reference model's on the same inputs."""

    from tensorslim.evaluate import evaluate

    if batch_size < 1:
        raise InputError("--batch-size: must be at least 1")
    report = evaluate(reference, candidate, data, batch_size=batch_size, max_samples=max_samples)
    if json_out != "-":
        console.print(eval_table(report))
        for note in report.notes:
            console.print(f"note: {note}")
    if report_html is not None:
        from tensorslim.report import write_report

        write_report(
            report_html,
            evaluation=report,
            layers_of=(reference, candidate, data),
            title=f"tensorslim eval {candidate.name}",
        )
    write_json(json_out, report.to_dict())
    return EXIT_OK
