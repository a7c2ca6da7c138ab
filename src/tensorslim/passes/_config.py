"""Validation helpers shared by the frozen pass configs (ONNX and TFLite alike)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

from tensorslim.errors import ConfigError

__all__ = ["coerce_enums", "regex_tuple"]


def regex_tuple(field: str, patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns`` as a tuple, each checked to compile.

    Raises:
        ConfigError: a pattern is not a valid regular expression, or one that can backtrack exponentially
            (see :mod:`tensorslim._regex`); the message names ``field``.
    """
    from tensorslim._regex import compile_user_regex

    out = tuple(patterns)
    for p in out:
        try:
            compile_user_regex(p, field)
        except ValueError as e:
            raise ConfigError(str(e), field=field) from None
    return out


def coerce_enums(config: Any, fields: Iterable[tuple[str, type[Enum]]]) -> None:
    """Replace each ``(field, enum)`` value of the frozen dataclass ``config`` by its enum member.

    Raises:
        ConfigError: a value is not a member; the message names the field and the allowed values.
    """
    for fname, enum in fields:
        value = getattr(config, fname)
        try:
            object.__setattr__(config, fname, enum(value))
        except ValueError:
            allowed = ", ".join(str(e.value) for e in enum)
            raise ConfigError(f"{fname}: {value!r} is not one of {allowed}", field=fname) from None
