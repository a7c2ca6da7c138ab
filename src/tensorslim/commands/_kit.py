"""Shared pieces of the command line: consoles, exit codes, error mapping, JSON output, the root options.

Command modules wrap their bodies in :func:`run_command`, which turns :class:`~tensorslim.errors.InputError`
into exit code 2 with a one-line message, :class:`~tensorslim.errors.TargetNotMetError` into exit code 1,
and anything unexpected into exit code 3. :func:`tensorslim.commands.build_app` builds the Typer app.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from tensorslim._files import command_scope, write_text_atomic
from tensorslim.commands._options import with_batch_axes
from tensorslim.errors import ConfigError, InputError, TargetNotMetError

__all__ = [
    "EXIT_CODES",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_TARGET",
    "CommandSpec",
    "as_callback",
    "command",
    "console",
    "err_console",
    "new_typer",
    "root_callback",
    "run_command",
    "user_config",
    "warn",
    "write_json",
]



def new_typer(name: str, help: str) -> typer.Typer:
    """A Typer app (or sub-app) with the settings every tensorslim command shares."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
    )

# pipes and CI logs get a wide table instead of rich's 80-column default
# markup=False: names, paths and regexes from the user are printed as text ("w[/x]" is not a closing tag);
# styled words are built as rich Text (see warn())
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 160)

T = TypeVar("T")

EXIT_OK, EXIT_TARGET, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
_DEBUG = {"on": False}


def _fail(code: int, message: str) -> typer.Exit:
    one_line = " ".join(message.split())  # runtime messages carry newlines: the contract is one line
    err_console.print(Text.assemble(("error:", "bold red"), " ", one_line), soft_wrap=True)
    return typer.Exit(code)


_OUTPUT_PARAMS = ("output", "json_out", "report", "report_html")
_OUTPUT_DIR_FILES = ("best.onnx", "best.tslim", "best.yaml")


def _declared_paths() -> tuple[list[Path], list[Path]]:
    """The current command's inputs and outputs, read from its parameters by name.

    Outputs: ``--output``, ``--json``, ``--report`` (and the ``best.*`` files of ``--output-dir``); inputs:
    every other parameter whose value names an existing file or folder.
    """
    import importlib

    try:  # typer 0.2x carries its own copy of click
        ctx = importlib.import_module("typer._click.globals").get_current_context(silent=True)
    except ImportError:  # pragma: no cover - older typer on the real click
        ctx = importlib.import_module("click").get_current_context(silent=True)
    if ctx is None:
        return [], []
    inputs: list[Path] = []
    outputs: list[Path] = []
    for name, value in ctx.params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if not isinstance(v, str | Path) or str(v) in ("", "-"):
                continue
            if name in _OUTPUT_PARAMS:
                outputs.append(Path(v))
            elif name == "output_dir":
                outputs.extend(Path(v) / f for f in _OUTPUT_DIR_FILES)
            else:
                with contextlib.suppress(OSError, ValueError):
                    if os.path.lexists(v):
                        inputs.append(Path(v))
    return inputs, outputs


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (the message as text, never markup)."""
    err_console.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True)


def run_command(fn: Callable[[], int | None]) -> None:
    """Run a command body, mapping errors to exit codes and one-line messages.

    The command's declared outputs are checked against its inputs (and each other) before the body runs, and
    every file it writes follows :mod:`tensorslim._files` (see :func:`tensorslim._files.command_scope`).
    """
    try:
        inputs, outputs = _declared_paths()
        with command_scope(inputs, outputs):
            code = fn()
    except InputError as e:  # the user's input: one line, exit 2 (a bare ValueError is a bug: exit 3 below)
        if _DEBUG["on"]:
            raise
        raise _fail(EXIT_INPUT, str(e)) from None
    except TargetNotMetError as e:
        raise _fail(EXIT_TARGET, str(e)) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as e:
        if _DEBUG["on"]:
            raise
        raise _fail(
            EXIT_INTERNAL, f"internal error: {type(e).__name__}: {e} (rerun with --debug and report it)"
        ) from None
    if code:
        raise typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from tensorslim import __version__

        console.print(f"tensorslim {__version__}")
        raise typer.Exit()


def root_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each pass does.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """tensorslim: quantize, evaluate, benchmark and inspect ONNX models.

    Exit codes: 0 ok, 1 a requested target was not reached, 2 bad input, 3 internal error.
    """
    _DEBUG["on"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def write_json(target: str | None, payload: dict[str, Any]) -> None:
    if target is None:
        return
    text = json.dumps(payload, indent=2, default=str)
    if target == "-":
        sys.stdout.write(text + "\n")
        return
    write_text_atomic(target, text + "\n")


def user_config(factory: Callable[..., T], /, **values: Any) -> T:
    """``factory(**values)`` for a config built from command-line values: a ``ValueError`` its validation raises
    is the user's (a :class:`~tensorslim.errors.ConfigError`, exit 2), with the message unchanged."""
    try:
        return factory(**values)
    except InputError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class CommandSpec:
    """What :func:`command` records on a command function: its name, help epilog and group (``recipe``)."""

    name: str
    epilog: str
    group: str | None = None


#: The exit codes most commands document (``optimize`` adds 1, ``recipe`` invalid recipes).
EXIT_CODES = "Exit codes: 0 ok, 2 bad input, 3 internal error."


def command(
    name: str, examples: str, *, note: str = "", exits: str = EXIT_CODES, group: str | None = None
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Mark a function as the command ``name`` (a subcommand of ``group``); registers nothing.

    Its ``--help`` epilog lists ``examples`` (one command line per line; a line indented deeper continues the one
    above it), then ``note`` and ``exits``.
    :func:`tensorslim.commands.build_app` finds the marked functions of each command module and adds them to the
    app it builds, each run by :func:`as_callback`. The function returns its exit code.
    """
    tail = " ".join(t for t in (note, exits) if t)
    lines: list[str] = []
    for line in textwrap.dedent(examples).strip("\n").splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line.strip())
    epilog = "Examples:\n\n" + "\n\n".join(f"    {e}" for e in lines) + (f"\n\n{tail}" if tail else "")

    def mark(fn: Callable[..., int]) -> Callable[..., int]:
        fn.__dict__["command_spec"] = CommandSpec(name, epilog, group)
        return fn

    return mark


def as_callback(fn: Callable[..., int]) -> Callable[..., None]:
    """``fn`` as a Typer callback: run by :func:`run_command` (exit codes, one-line errors, the declared files),
    within its ``--batch-axis`` values when it takes that option. Typer reads ``fn``'s own signature."""

    @functools.wraps(fn)
    def callback(**params: Any) -> None:
        def body() -> int:
            return fn(**params)

        run_command(with_batch_axes(params["batch_axis"], body) if "batch_axis" in params else body)

    return callback
