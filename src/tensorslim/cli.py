"""The ``tensorslim`` console script: runs the app :func:`tensorslim.commands.build_app` builds.

Exit codes: 0 success; 1 the job ran but a requested target was not reached; 2 bad input (missing or
corrupt file, bad option, bad data), with a one-line message naming the problem and the fix; 3 an
internal error (a tensorslim bug: rerun with ``--debug`` for the traceback and report it).
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Console-script entry point."""
    from tensorslim.commands import build_app

    build_app()()


if __name__ == "__main__":  # pragma: no cover
    main()
