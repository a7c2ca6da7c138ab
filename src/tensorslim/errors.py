"""Errors raised by tensorslim.

Every error a user can cause carries a message that names the problem and the fix. The CLI maps
:class:`InputError` (and :class:`ConfigError`) to exit code 2 and :class:`TargetNotMetError` to exit code 1,
and prints the message on one line without a traceback. Anything else, a bare ``ValueError`` included, is a
tensorslim bug: exit code 3, with the traceback under ``--debug``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "TargetNotMetError", "TensorSlimError", "UnsupportedModelError"]


class TensorSlimError(Exception):
    """Base class of every error tensorslim raises on purpose."""


class InputError(TensorSlimError, ValueError):
    """The user's input (a file, an option, data) is unusable; the message says how to fix it."""


class ConfigError(InputError):
    """A config value (a pass option, a command-line flag) is not accepted.

    The message starts with the field it names (``"bits: 3 is not one of 4, 8"``); :attr:`field` holds that
    name, given or read from the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field if field is not None else message.split(":", 1)[0].strip()


class UnsupportedModelError(InputError):
    """The model is valid but holds nothing the requested technique can work on."""


class TargetNotMetError(TensorSlimError):
    """The job ran but could not reach a requested target (accuracy, size, latency)."""
