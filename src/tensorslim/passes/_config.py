"""Validation helpers shared by the frozen pass configs (ONNX and TFLite alike)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["regex_tuple"]


def regex_tuple(field: str, patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns`` as a tuple, each checked to compile.

    Raises:
        ValueError: a pattern is not a valid regular expression; the message names ``field``.
    """
    out = tuple(patterns)
    for p in out:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"{field}: {p!r} is not a valid regular expression ({e})") from None
    return out
