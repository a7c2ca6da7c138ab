"""The ``tensorslim`` command line: :func:`build_app` builds the Typer app from the command modules.

Each module here defines its commands as plain functions and adds them in ``register(app)``; nothing registers
at import. Exit codes: 0 success; 1 the job ran but a requested target was not reached; 2 bad input (missing or
corrupt file, bad option, bad data), with a one-line message naming the problem and the fix; 3 an internal error
(a tensorslim bug: rerun with ``--debug`` for the traceback and report it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["COMMAND_MODULES", "build_app"]

#: The command modules, in the order their commands are listed by ``tensorslim --help``.
COMMAND_MODULES = (
    "quantize",
    "evaluate",
    "bench",
    "inspection",
    "optimize",
    "compress",
    "diagnose",
    "doctor",
    "profile",
    "recipe",
)


def build_app() -> typer.Typer:
    """A new Typer app with every command of :data:`COMMAND_MODULES` and the root options."""
    from tensorslim.commands._kit import new_typer, root_callback

    app = new_typer(
        "tensorslim",
        "Make trained neural networks smaller and faster for deployment, and prove it with measurements.",
    )
    app.callback()(root_callback)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app)
    return app
