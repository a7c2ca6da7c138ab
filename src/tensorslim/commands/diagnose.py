"""``tensorslim diagnose FLOAT QUANT --data D.npz``: which layers lost the accuracy, and how to keep them float."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tensorslim.commands._kit import EXIT_OK, command, console, write_json
from tensorslim.commands._options import BatchAxisOption, JsonOption, ReportOption, data_option
from tensorslim.errors import InputError

__all__ = ["diagnose"]


@command("diagnose", """
    tensorslim diagnose model.onnx model.int8.onnx --data test.npz
    tensorslim diagnose model.onnx model.int8.onnx --data test.npz --top 3 --json layers.json
""", note="rmse/scale is the TFLite quantization debugger's metric: ~0.29 is plain rounding noise, > 0.7 is suspect.")
def diagnose(
    float_model: Annotated[Path, typer.Argument(help="The float ONNX model.")],
    quant_model: Annotated[Path, typer.Argument(help="Its quantized version.")],
    data: Annotated[Path | None, data_option("Real data: ")] = None,
    batch_axis: BatchAxisOption = None,
    max_samples: Annotated[int, typer.Option(help="Use at most this many samples.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] = 8,
    top: Annotated[int, typer.Option(help="Worst layers named in the --exclude command.")] = 5,
    show: Annotated[int, typer.Option(help="Rows of the table (0: every layer).")] = 20,
    report: ReportOption = None,
    json_out: JsonOption = None,
) -> int:
    """Per-layer SQNR and rmse/scale of a quantized model against its float model, worst layers first."""

    from tensorslim.diagnostics.layers import diagnose_layers

    if max_samples < 1 or batch_size < 1 or top < 1:
        raise InputError("--max-samples, --batch-size and --top must be at least 1")
    quiet = json_out == "-"
    rep = diagnose_layers(
        float_model, quant_model, data, max_samples=max_samples, batch_size=batch_size, top=top, progress=not quiet
    )
    if not quiet:
        t = Table(
            title=f"{quant_model.name} vs {float_model.name}: {len(rep.layers)} layers on "
            f"{rep.num_samples} samples ({rep.data_source}), largest added error first"
        )
        for c in ("node", "op", "SQNR dB", "added SQNR dB", "rmse/scale", "max/p99.9", "weight"):
            t.add_column(c, overflow="fold")
        rows = sorted(rep.layers, key=lambda x: x.added_sqnr_db)
        for x in rows[:show] if show > 0 else rows:
            ros: str | Text = "-" if x.rmse_over_scale is None else f"{x.rmse_over_scale:.2f}"
            if x.rmse_over_scale is not None and x.rmse_over_scale > 0.7:
                ros = Text(f"{x.rmse_over_scale:.2f}", style="bold red")
            t.add_row(
                x.node,
                x.op_type,
                "inf" if math.isinf(x.sqnr_db) else f"{x.sqnr_db:.1f}",
                "inf" if math.isinf(x.added_sqnr_db) else f"{x.added_sqnr_db:.1f}",
                ros,
                f"{x.peak_to_p999:.1f}",
                x.weight or "",
            )
        console.print(t)
        if rep.exclude_command:
            console.print(
                f"keep the {len(rep.worst)} worst layers in float:\n  {rep.exclude_command}", soft_wrap=True
            )
    if report is not None:
        from tensorslim.report import write_report

        write_report(report, diagnose=rep, command="diagnose")
        if not quiet:
            console.print(f"wrote {report}")
    write_json(json_out, rep.to_dict())
    return EXIT_OK
