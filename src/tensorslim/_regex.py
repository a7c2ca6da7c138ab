"""Regular expressions from users (``--exclude``, recipe rules), compiled with a guard against catastrophic
backtracking.

Python's ``re`` backtracks: a pattern with a quantifier inside an unbounded quantifier (``^(.+)+Q$``,
``(a*)*``, ``(\\w+\\s?)+$``) takes time exponential in the length of a name it fails to match, which hung
``run`` for minutes on a model with long node names. :func:`compile_user_regex` walks the parsed pattern and
refuses such nesting, and patterns over a length cap, with a ``ValueError`` that names the field and the fix;
atomic groups ``(?>...)`` and possessive quantifiers (``++``, ``*+``) do not backtrack and are accepted.

Before -> after: ``recipe check`` accepting ``^(.+)+Q$`` and ``run`` hanging -> both exit 2, one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

try:  # Python 3.11+
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser as _p  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _c
    import sre_parse as _p

__all__ = ["MAX_PATTERN_CHARS", "NameMatcher", "compile_user_regex", "name_matcher"]

#: longest pattern accepted (node names are matched against it)
MAX_PATTERN_CHARS = 1_000_000  # generated alternations of node names run long; compile time stays small
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_UNBOUNDED = 16  # a repeat allowing more than this many copies counts as unbounded


def _nested(items: Any, inside: bool) -> bool:
    """Whether a repeat of variable count sits inside an unbounded one (``inside``: we are in one)."""
    for op, av in items:
        if op in _REPEATS:
            lo, hi, sub = av
            wide = hi == _c.MAXREPEAT or hi > _UNBOUNDED
            if inside and hi > lo and _can_vary(sub):
                return True
            if _nested(sub, inside or wide):
                return True
        elif op is _c.SUBPATTERN:
            if _nested(av[-1], inside):
                return True
        elif op is _c.BRANCH:
            if any(_nested(b, inside) for b in av[1]):
                return True
        elif op in (_c.ASSERT, _c.ASSERT_NOT) and _nested(av[1], inside):
            return True
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into their body: safe
    return False


def _can_vary(sub: Any) -> bool:
    _lo, hi = sub.getwidth()
    return bool(hi > 0)


def compile_user_regex(pattern: str, field: str) -> re.Pattern[str]:
    """Compile a user's regex, refusing invalid ones and ones that can backtrack exponentially.

    Raises:
        ValueError: the pattern is not a string, too long, invalid, or nests unbounded quantifiers; the
            message names ``field``.
    """
    if not isinstance(pattern, str):
        raise ValueError(f"{field}: expected a regular expression (a string), got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"{field}: the pattern has {len(pattern):,} characters (at most {MAX_PATTERN_CHARS:,})")
    try:
        compiled = re.compile(pattern)
        parsed = _p.parse(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise ValueError(f"{field}: {pattern!r} is not a valid regular expression ({e})") from None
    try:
        nested = _nested(parsed, False)
    except RecursionError:
        raise ValueError(f"{field}: the pattern nests groups too deeply") from None
    if nested:
        raise ValueError(
            f"{field}: {pattern!r} nests a repeated group inside another repeat (like (x+)+), which can take "
            "exponential time on long names; write it without the nesting (e.g. ^.+Q$), or make the inner "
            "repeat possessive (x++) or atomic ((?>...))"
        )
    return compiled


class NameMatcher:
    """Compiled name patterns (``exclude``, ``float_compute``, ``block_nodes``): a name matches when any pattern
    is found in it (``re.search``)."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.patterns = patterns

    def __call__(self, *names: str) -> bool:
        """Whether a pattern is found in any of ``names``."""
        return any(p.search(n) for n in names for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)


def name_matcher(patterns: Iterable[str], field: str = "exclude") -> NameMatcher:
    """Compile a config's name patterns once, through :func:`compile_user_regex`.

    Raises:
        ValueError: a pattern is invalid or can backtrack exponentially; the message names ``field``.
    """
    return NameMatcher(tuple(compile_user_regex(p, field) for p in patterns))
