"""``tensorslim inspect MODEL``: per-weight statistics that predict quantization trouble."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tensorslim.commands._kit import EXIT_OK, command, console, write_json
from tensorslim.commands._options import JsonOption

__all__ = ["inspect"]


@command("inspect", """
    tensorslim inspect model.onnx
    tensorslim inspect model.onnx --json stats.json
""")
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX or TFLite model to inspect.")],
    top: Annotated[int, typer.Option(help="Show the N weights with the worst per-tensor SQNR (0: all).")] = 20,
    json_out: JsonOption = None,
) -> int:
    """Per-weight statistics that predict quantization trouble, and recommended settings."""

    from tensorslim.backends.onnx.io import load_model
    from tensorslim.backends.tflite.io import is_tflite
    from tensorslim.diagnostics.inspect import inspect_model

    if is_tflite(model):
        from tensorslim.backends.tflite.inspect import inspect_tflite
        from tensorslim.backends.tflite.io import load_model as load_tflite

        report = inspect_tflite(load_tflite(model), name=str(model))
    else:
        report = inspect_model(load_model(model), name=str(model))
    if json_out != "-":
        t = Table(title=f"{model}: {len(report.weights)} weights (worst per-tensor SQNR first)")
        for col in (
            "weight", "op", "shape", "min", "max", "outliers >6σ", "max/p99.9", "ch. spread",
            "SQNR tensor", "SQNR channel", "SQNR ch.+mse",
        ):  # fmt: skip
            t.add_column(col, overflow="fold")
        rows = sorted(report.weights, key=lambda w: w.sqnr_per_tensor_db)
        for w in rows[:top] if top > 0 else rows:
            t.add_row(
                w.name, w.op_type, "x".join(map(str, w.shape)), f"{w.min:.3g}", f"{w.max:.3g}",
                f"{100 * w.outlier_ratio:.3f}%", f"{w.peak_to_p999:.2f}", f"{w.channel_range_spread:.2f}",
                f"{w.sqnr_per_tensor_db:.1f}",
                "-" if w.sqnr_per_channel_db is None else f"{w.sqnr_per_channel_db:.1f}",
                "-" if w.sqnr_per_channel_mse_db is None else f"{w.sqnr_per_channel_mse_db:.1f}",
            )  # fmt: skip
        console.print(t)
        console.print("recommendations", style="bold")
        for r in report.recommendations:
            console.print(f"  - {r}")
    write_json(json_out, report.to_dict())
    return EXIT_OK
