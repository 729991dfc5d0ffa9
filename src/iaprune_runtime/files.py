"""Small file helpers of the runtime (standard library only): the atomic write, the cleanup of
what a killed write leaves, the folder lock, JSON that cannot recurse, and one-line
descriptions of file problems. The library uses these
same functions (iaprune.files re-exports them)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# atomic_write's temp files: .<name>.<8 hex digits>.tmp
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """Create a fresh temp file next to `path`, with mode 0666 & ~umask like any new file.

    (tempfile.mkstemp makes it 0600, and os.replace would hand that private mode to `path`.)
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # TEMP_NAME
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a name clash with another writer: draw again
            continue


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` via a temp file in its folder + os.replace (never half-written).

    An OSError (no space, a read-only or forbidden folder, ...) names `path`, not the temp
    file, and leaves `path` as it was."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_temp_file(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        # OSError(errno, ...) is the same subclass (PermissionError, ...), naming the file
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temp_files(*folders: Path) -> list[Path]:
    """Remove the temp files a killed atomic_write left in `folders` (not below them); the
    removed paths. Call it only while holding the lock of the folders' owner (a session), so
    that no live writer's temp file is taken."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class LockHeld(Exception):
    """A lock that `holding(..., wait=False)` found held; the message names the holder."""


def holder_line() -> str:
    """Who holds a lock: host, pid and command line (the pid is the second word)."""
    command = " ".join([Path(sys.executable).name, *sys.argv]) if sys.argv else "python"
    return f"{socket.gethostname()} {os.getpid()} {command}"


@contextlib.contextmanager
def holding(lock: Path, wait: bool = True) -> Iterator[None]:
    """Hold `lock` (the kernel's flock): one process at a time in a session, cell or search.

    The kernel drops the lock with its process, so a killed holder never leaves a stale lock:
    the next process takes it over. The file is opened in place, not written atomically: a
    lock must stay the same file. It names the holder (host, pid, command) while held. With
    `wait=False` a lock held by another process raises LockHeld (naming that holder) instead
    of waiting for it. A lock file removed while waited for is opened again (a lock on the
    removed file would lock nothing).
    """
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a lock planted as a symbolic link is an error, never a file truncated
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise LockHeld(fh.read().strip() or "another process") from None
            try:
                if not _same_file(fh, lock):
                    continue
                fh.seek(0)
                fh.truncate()
                fh.write(holder_line() + "\n")
                fh.flush()
                yield
                return
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _same_file(fh, path: Path) -> bool:
    """Whether the open file `fh` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def parse_json(text: str) -> Any:
    """json.loads(text); a document nested too deeply for the parser's recursion is a
    ValueError (like any other invalid JSON), not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


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
