"""Validation helpers shared by the frozen pass configs (ONNX and TFLite alike)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

__all__ = ["coerce_enums", "regex_tuple"]


def regex_tuple(field: str, patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns`` as a tuple, each checked to compile.

    Raises:
        ValueError: a pattern is not a valid regular expression, or one that can backtrack exponentially
            (see :mod:`tensorslim._regex`); the message names ``field``.
    """
    from tensorslim._regex import compile_user_regex

    out = tuple(patterns)
    for p in out:
        compile_user_regex(p, field)
    return out


def coerce_enums(config: Any, fields: Iterable[tuple[str, type[Enum]]]) -> None:
    """Replace each ``(field, enum)`` value of the frozen dataclass ``config`` by its enum member.

    Raises:
        ValueError: a value is not a member; the message names the field and the allowed values.
    """
    for fname, enum in fields:
        value = getattr(config, fname)
        try:
            object.__setattr__(config, fname, enum(value))
        except ValueError:
            allowed = ", ".join(str(e.value) for e in enum)
            raise ValueError(f"{fname}: {value!r} is not one of {allowed}") from None
