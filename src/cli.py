"""Shared command-line behaviour: expected errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """A problem with the user's input or files, reported as one line (never a traceback)."""


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's main(); ValueError/TypeError/OSError become `error: ...` and exit code 2."""
    try:
        return main(argv) or 0
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
