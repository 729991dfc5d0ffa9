"""Small file utilities: the one atomic-write helper, the first line of an error, and why a path
cannot be read as a file or used as a folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """Create a fresh temp file next to `path`, with mode 0666 & ~umask like any new file.

    (tempfile.mkstemp makes it 0600, and os.replace would hand that private mode to `path`.)
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a name clash with another writer: draw again
            continue


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` via a temp file in its folder + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def folder_problem(path: Path, what: str = "folder") -> str | None:
    """Why `path` cannot be used as (or created as) a `what`: it is a file, or lies below one;
    None when it is a folder or can be made one."""
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is None or blocker.is_dir():
        return None
    if blocker == path:
        return f"{path}: is a file, not a {what}"
    return f"{path}: {blocker} is a file, not a folder"
