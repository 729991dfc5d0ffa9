"""Small file utilities: the one atomic-write helper and the removal of its leftovers, the
folder lock, the first line of an error, and why a path cannot be read as a file or used as a
folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

# one implementation, shared with the runtime (which cannot import the library): re-exported
from iaprune_runtime.files import TEMP_NAME as TEMP_NAME
from iaprune_runtime.files import atomic_write as atomic_write
from iaprune_runtime.files import file_problem as file_problem
from iaprune_runtime.files import first_line as first_line
from iaprune_runtime.files import parse_json as parse_json
from iaprune_runtime.files import remove_temp_files as remove_temp_files


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
        with open(lock, "a+", encoding="utf-8") as fh:
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


def folder_problem(path: Path, what: str = "folder") -> str | None:
    """Why `path` cannot be used as (or created as) a `what`: it is a file, or lies below one;
    None when it is a folder or can be made one."""
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is None or blocker.is_dir():
        return None
    if blocker == path:
        return f"{path}: is a file, not a {what}"
    return f"{path}: {blocker} is a file, not a folder"
