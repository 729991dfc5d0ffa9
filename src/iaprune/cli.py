"""Shared command-line behaviour: the project's own errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from iaprune.errors import UserError
from iaprune_runtime.budget import resource_problem

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's main(); a UserError becomes `error: ...` and exit code 2, and so does an
    OSError (the machine's state, not a bug: no space left, a read-only or forbidden folder),
    naming the path, and so does running out of memory or stack (budget.resource_problem).
    Any other exception is a bug and keeps its traceback."""
    try:
        return main(argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as exc:
        problem = resource_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE


def os_error_line(exc: OSError) -> str:
    """'PATH: No space left on device' (the path when the error names one)."""
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what
