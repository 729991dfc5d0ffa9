"""The session folder at work: its paths, the completeness rule, the atomic commit. What the
folder holds and the names of its files are iaprune.records.

An iteration is complete when its validation_results.txt exists. It is written into
`prune_w_retrain.partial/` and renamed into place only when complete, so a killed run never
leaves complete-looking files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iaprune.errors import UserError
from iaprune.files import TEMP_NAME, LockHeld, folder_problem, holding, remove_temp_files
from iaprune.records import (
    ARCH_FILE,
    BASE_MODEL_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ITERATION_DIR,
    LOCK_FILE,
    MODES,
    PARTIAL_DIR,
    RESULTS_DIR,
    RETAIN_FILE,
    VALIDATION_FILE,
)

READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)  # a write refused: permissions, read-only fs


class SessionError(UserError):
    """A folder that is not a usable session, or a session that cannot do what was asked."""


@dataclass(frozen=True)
class Session:
    """Paths of a session folder (sessions/<name>/) for one mode."""

    root: Path
    mode: str = "iterative"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.mode not in MODES:
            raise SessionError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def retain(self) -> Path:
        return self.root / RETAIN_FILE

    @property
    def mode_dir(self) -> Path:
        return self.root / MODES[self.mode]

    @property
    def results_dir(self) -> Path:
        return self.mode_dir / RESULTS_DIR

    def final(self, i: int) -> Path:
        return self.mode_dir / str(i) / ITERATION_DIR

    def partial(self, i: int) -> Path:
        return self.mode_dir / str(i) / PARTIAL_DIR

    def complete(self, i: int) -> bool:
        return is_complete(self.final(i))

    def checkpoint(self, i: int) -> Path:
        return self.final(i) / CHECKPOINT_FILE

    def validation(self, i: int) -> Path:
        """Iteration i's validation_results.txt (its final metrics)."""
        return self.final(i) / VALIDATION_FILE

    def remove_temp_files(self) -> list[Path]:
        """Remove the temp files a killed write left: in the session, retain/, the mode
        folder, its results folder and its iteration folders (hold the session's lock)."""
        folders = [self.root, self.retain.parent, self.mode_dir, self.results_dir]
        folders += [folder / ITERATION_DIR for _, folder in iteration_dirs(self.mode_dir)]
        return remove_temp_files(*folders)

    def last_complete(self) -> int:
        """The last iteration i such that 0..i are all complete (-1 if none)."""
        i = -1
        while self.complete(i + 1):
            i += 1
        return i

    def commit(self, i: int) -> None:
        """Swap iteration i's .partial folder into place; later folders of an older run go
        (this run writes them again)."""
        final, partial = self.final(i), self.partial(i)
        old = final.with_name(ITERATION_DIR + ".old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        if old.exists():
            shutil.rmtree(old)
        for later, folder in iteration_dirs(self.mode_dir):
            if later > i:
                shutil.rmtree(folder)

    def abandon(self, i: int) -> None:
        """Remove iteration i's unfinished files (Ctrl+C, error)."""
        partial = self.partial(i)
        if partial.exists():
            shutil.rmtree(partial)
        parent = partial.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


def holds_results(root: Path) -> bool:
    """Whether any mode folder of a session holds a complete iteration."""
    return any(any((root / folder).glob(f"*/{ITERATION_DIR}/{VALIDATION_FILE}"))
               for folder in MODES.values())


def is_complete(iteration_dir: Path) -> bool:
    """The completeness rule: an iteration folder is complete once validation_results.txt is in
    it (written last, atomically)."""
    return (iteration_dir / VALIDATION_FILE).is_file()


def iteration_dirs(mode_dir: Path) -> list[tuple[int, Path]]:
    """Numbered iteration folders of a mode folder, in numeric order (2 before 10)."""
    if not mode_dir.is_dir():
        return []
    found = [(int(p.name), p) for p in mode_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)


def mode_dirs(path: str | os.PathLike) -> list[Path]:
    """[path] for a mode folder; its mode subfolders (sorted) for a session folder."""
    path = Path(path)
    if not path.is_dir():
        raise SessionError(f"{path}: no such folder")
    if iteration_dirs(path):
        return [path]
    modes = sorted(p for p in path.iterdir() if p.is_dir() and iteration_dirs(p))
    if not modes:
        raise SessionError(f"{path}: no iteration folders (0/, 1/, ...) here nor in a mode "
                           f"subfolder ({', '.join(m + '/' for m in MODES.values())})")
    return modes


@contextlib.contextmanager
def locked(root: Path, wait: bool = False) -> Iterator[None]:
    """Hold the session's lock (root/session.lock) while a run uses it: a second run is
    refused naming the holder (or waits, with `wait`); a killed holder's lock is free.

    A session folder this call creates is removed again when the run wrote nothing into it.
    """
    root = Path(root)
    created = not root.exists()
    lock = root / LOCK_FILE
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(holding(lock, wait))
        except LockHeld as held:
            raise SessionError(f"{root}: in use by {holder(str(held))}; wait for it to "
                               "finish, or run again with --wait") from None
        except OSError as exc:
            if exc.errno not in READ_ONLY:
                raise  # a read-only session: no run can write it, a lock guards nothing
        try:
            yield
        finally:
            if created and [p.name for p in root.iterdir()] == [LOCK_FILE]:
                lock.unlink()  # still held: a waiter finds its file gone and opens it anew
                with contextlib.suppress(OSError):
                    root.rmdir()


def holder(line: str) -> str:
    """'pid P on HOST (COMMAND)' from a lock's holder line 'HOST PID COMMAND'."""
    parts = line.split(maxsplit=2)
    if len(parts) < 2 or not parts[1].isdigit():
        return line
    host, pid, *command = parts
    return f"pid {pid} on {host}" + (f" ({command[0]})" if command else "")


def check_session_folder(root: Path) -> None:
    """A session must be a new/empty folder or a session (one with config.json); its lock, the
    temp file of a run killed while writing its config.json and the networks saved from
    modules by such a run do not count."""
    problem = folder_problem(root, "session folder")  # a file, or a path below one
    if problem:
        raise SessionError(problem)
    if root.is_dir() and any(p.name not in (LOCK_FILE, BASE_MODEL_FILE, ARCH_FILE)
                             and not TEMP_NAME.fullmatch(p.name) for p in root.iterdir()) and \
            not (root / CONFIG_FILE).is_file():
        raise SessionError(f"{root} is not a session folder (no {CONFIG_FILE}) and not empty; "
                           "choose a new --session")
