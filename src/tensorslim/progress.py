"""One progress bar for every long job (calibration, benchmarks, search), shown on stderr.

Bars are on by default only when stderr is a terminal, so pipes, ``--json`` output and CI logs stay clean;
``TENSORSLIM_PROGRESS=1`` forces them on and ``TENSORSLIM_PROGRESS=0`` off.

Usage::

    with progress_bar("calibrating", total=len(batches)) as bar:
        for batch in batches:
            ...
            bar.advance()

    for item in track(items, "evaluating"):
        ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["ProgressHandle", "progress_bar", "progress_enabled", "track"]

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to draw bars: ``enabled`` when given, else the environment, else whether stderr is a terminal."""
    if enabled is not None:
        return enabled
    env = os.environ.get("TENSORSLIM_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressHandle:
    """What :func:`progress_bar` yields: advance the bar or change its description."""

    def __init__(self, bar: object | None, task: int | None) -> None:
        self._bar = bar
        self._task = task

    def advance(self, steps: float = 1.0) -> None:
        """Move the bar forward by ``steps``."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, steps)  # type: ignore[attr-defined]

    def describe(self, description: str) -> None:
        """Replace the text shown beside the bar."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=description)  # type: ignore[attr-defined]

    def set_total(self, total: float | None) -> None:
        """Set (or clear) the number of steps."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)  # type: ignore[attr-defined]


@contextmanager
def progress_bar(
    description: str, total: float | None = None, *, enabled: bool | None = None
) -> Iterator[ProgressHandle]:
    """A transient bar on stderr (a no-op handle when bars are off)."""
    if not progress_enabled(enabled):
        yield ProgressHandle(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield ProgressHandle(bar, task)


def track(
    items: Iterable[T], description: str, *, total: int | None = None, enabled: bool | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
