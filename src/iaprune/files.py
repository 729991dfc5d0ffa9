"""Small file utilities: the one atomic-write helper and the removal of its leftovers, the
folder lock, the first line of an error, and why a path cannot be read as a file or used as a
folder. Most live in the runtime's iaprune_runtime.files (it cannot import the library) and are
re-exported here."""

from __future__ import annotations

from pathlib import Path

# one implementation, shared with the runtime (which cannot import the library): re-exported
from iaprune_runtime.files import TEMP_NAME as TEMP_NAME
from iaprune_runtime.files import LockHeld as LockHeld
from iaprune_runtime.files import atomic_write as atomic_write
from iaprune_runtime.files import file_problem as file_problem
from iaprune_runtime.files import first_line as first_line
from iaprune_runtime.files import holder_line as holder_line
from iaprune_runtime.files import holding as holding
from iaprune_runtime.files import parse_json as parse_json
from iaprune_runtime.files import remove_temp_files as remove_temp_files


def folder_problem(path: Path, what: str = "folder") -> str | None:
    """Why `path` cannot be used as (or created as) a `what`: it is a file, or lies below one;
    None when it is a folder or can be made one."""
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is None or blocker.is_dir():
        return None
    if blocker == path:
        return f"{path}: is a file, not a {what}"
    return f"{path}: {blocker} is a file, not a folder"
