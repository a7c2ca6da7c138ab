"""Validation helpers shared by the frozen pass configs (ONNX and TFLite alike).

Every field with a fixed set of string values is a ``StrEnum`` (the user may pass the plain string), turned
into its member by :func:`coerce_enums` in the config's ``__post_init__``: one message format for a value that is
not allowed (``"field: 'x' is not one of a, b"``), raised as :class:`~tensorslim.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, StrEnum
from typing import Any

from tensorslim.errors import ConfigError

__all__ = ["Granularity", "coerce_enums", "op_tuple", "regex_tuple"]


class Granularity(StrEnum):
    """One scale (or codebook) per tensor, or one per output channel."""

    PER_CHANNEL = "per_channel"
    PER_TENSOR = "per_tensor"


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


def op_tuple(ops: Iterable[str], allowed: tuple[str, ...], field: str = "op_types") -> tuple[str, ...]:
    """``ops`` as a tuple: at least one, each among ``allowed``.

    Raises:
        ConfigError: empty, or an op outside ``allowed``; the message names ``field`` and the allowed ops.
    """
    out = tuple(ops)
    if not out or any(o not in allowed for o in out):
        raise ConfigError(f"{field}: {out!r}; allowed: {', '.join(allowed)}")
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
