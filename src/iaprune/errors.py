"""The project's one error base class: what the command lines report as one line."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, settings or files, reported as one line `error: ...`
    with exit code 2 (never a traceback). Every other exception is a bug and keeps its
    traceback."""
