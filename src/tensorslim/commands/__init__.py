"""The ``tensorslim`` command line: :func:`build_app` builds the Typer app from the command modules.

Each module here marks its command functions with :func:`~tensorslim.commands._kit.command` (a name and an
epilog, no app); nothing registers at import. Exit codes: 0 success; 1 the job ran but a requested target was
not reached; 2 bad input (missing or corrupt file, bad option, bad data), with a one-line message naming the
problem and the fix; 3 an internal error (a tensorslim bug: rerun with ``--debug`` for the traceback and report
it).
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
    """A new Typer app with the commands of :data:`COMMAND_MODULES` and the root options (``--debug``...).

    A module's ``GROUPS`` (name -> help) declares the command groups its commands name (``recipe list``).
    """
    from tensorslim.commands._kit import CommandSpec, as_callback, new_typer, root_callback

    app = new_typer(
        "tensorslim",
        "Make trained neural networks smaller and faster for deployment, and prove it with measurements.",
    )
    app.callback()(root_callback)
    groups: dict[str, typer.Typer] = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for fn in list(vars(module).values()):
            spec = getattr(fn, "command_spec", None)
            if not isinstance(spec, CommandSpec) or fn.__module__ != module.__name__:
                continue
            target = app
            if spec.group is not None:
                if spec.group not in groups:
                    groups[spec.group] = new_typer(spec.group, module.GROUPS[spec.group])
                    app.add_typer(groups[spec.group], name=spec.group)
                target = groups[spec.group]
            target.command(spec.name, epilog=spec.epilog)(as_callback(fn))
    return app
