"""The ``--data`` help and the ``--batch-axis`` option, shared by every command that takes data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

__all__ = ["DATA_HELP", "BatchAxisOption", "with_batch_axes"]

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


def with_batch_axes(items: list[str] | None, body: Callable[[], int]) -> Callable[[], int]:
    """``body`` run with the ``--batch-axis`` values as the default batch axes of every data load."""

    def run() -> int:
        from tensorslim.data import parse_batch_axes, using_batch_axes

        with using_batch_axes(parse_batch_axes(items)):
            return body()

    return run
