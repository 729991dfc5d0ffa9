"""Shared command-line behaviour: expected errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """A problem with the user's input or files, reported as one line (never a traceback)."""


def file_problem(path: Path, what: str = "file", inside: str | None = None) -> str | None:
    """Why `path` cannot be read as a `what` (missing, or a folder), or None when it is a file.

    A folder holding `inside` (e.g. best_model.pth) gets the path to pass instead.
    """
    if path.is_file():
        return None
    if path.is_dir():
        hint = f" (did you mean {path / inside}?)" if inside and (path / inside).is_file() else ""
        return f"{path}: is a folder, not a {what}{hint}"
    return f"{path}: no such {what}"


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's main(); ValueError/TypeError/OSError become `error: ...` and exit code 2."""
    try:
        return main(argv) or 0
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
