"""Option declarations shared by the commands: one ``Annotated`` alias (or one builder, where the help names
the command's use) per option, so ``--json`` and ``--data`` mean the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tensorslim.runtime.targets import TARGET_HELP

__all__ = [
    "DATA_HELP",
    "BatchAxisOption",
    "JsonOption",
    "ReportOption",
    "ShowAllOption",
    "TargetRuntimeOption",
    "data_option",
    "output_option",
    "with_batch_axes",
]

#: Help of every ``--data`` option: the one data contract (README "Data").
DATA_HELP = (
    ".npz with one array per model input, named after it (a .npy for a one-input model), or a folder of .npz "
    "(one feed each). Arrays may hold samples along the model's batch axis ([N, 16, 96] for an input [1, 16, 96]), "
    "a stack of per-sample feeds ([N, 1, 16, 96]), [N] for a scalar input, or one sample; an integer 'label' "
    "array adds accuracy. Shapes are read against the model's inputs; --batch-axis settles the rest."
)

BatchAxisOption = Annotated[
    list[str] | None,
    typer.Option(
        "--batch-axis",
        help="NAME=AXIS: the batch axis of an input whose shape does not tell it (e.g. state=1 for [2, batch, "
        "128]; state=none for no batch axis). Repeatable.",
    ),
]

#: ``--json FILE|-``: the command's result as JSON (``-``: stdout only, the tables are not printed).
JsonOption = Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")]

#: ``--report FILE``: the self-contained HTML report.
ReportOption = Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")]

#: ``--show-all``: every weight in the weights table instead of the 25 largest.
ShowAllOption = Annotated[bool, typer.Option("--show-all", help="List every weight, not the 25 largest.")]

#: ``--target-runtime``: the runtime (and version) the output must load in.
TargetRuntimeOption = Annotated[str | None, typer.Option(help=TARGET_HELP)]


def data_option(purpose: str = "", more: str = "") -> Any:
    """The ``--data`` option: its help is ``purpose``, the data contract (:data:`DATA_HELP`), then ``more``."""
    return typer.Option(help=purpose + DATA_HELP + more)


def output_option(help: str) -> Any:
    """The ``--output``/``-o`` option of a command that writes one file."""
    return typer.Option("--output", "-o", help=help)


def with_batch_axes(items: list[str] | None, body: Callable[[], int]) -> Callable[[], int]:
    """``body`` run with the ``--batch-axis`` values as the default batch axes of every data load."""

    def run() -> int:
        from tensorslim.data import parse_batch_axes, using_batch_axes

        with using_batch_axes(parse_batch_axes(items)):
            return body()

    return run
