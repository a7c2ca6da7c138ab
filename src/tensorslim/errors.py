"""Errors raised by tensorslim.

Every error a user can cause carries a message that names the problem and the fix. The CLI maps
:class:`InputError` to exit code 2 and :class:`TargetNotMetError` to exit code 1, and prints the message
on one line without a traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "TargetNotMetError", "TensorSlimError", "UnsupportedModelError"]


class TensorSlimError(Exception):
    """Base class of every error tensorslim raises on purpose."""


class InputError(TensorSlimError, ValueError):
    """The user's input (a file, an option, data) is unusable; the message says how to fix it."""


class UnsupportedModelError(InputError):
    """The model is valid but holds nothing the requested technique can work on."""


class TargetNotMetError(TensorSlimError):
    """The job ran but could not reach a requested target (accuracy, size, latency)."""
