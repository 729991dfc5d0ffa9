"""One entry point for every data source, and the fingerprint that ties a session to its data.

A source is a built-in name (mnist, fashion-mnist, digits), a path (an image folder, .npz,
.csv, .parquet), an (x, y) pair of arrays or tensors, a torch Dataset of (x, y) items, or a
Dataset already loaded. A path's fingerprint is its files' names, sizes and modification times;
a Python object's is the sha256 of its tensors.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iaprune.data import arrays, images, table
from iaprune.data import stream as stream_mod
from iaprune.data.builtin import DATASETS, load_builtin
from iaprune.data.dataset import Dataset, DatasetError
from iaprune.data.prepare import prepare

PYTHON_OBJECT = "python object"  # the source recorded for data given as a Python object
KINDS = {".npz": "arrays", ".csv": "table", ".parquet": "table"}  # file suffix -> kind


def is_path(source: str) -> bool:
    """A dataset string that names a path rather than a built-in set."""
    return (source not in DATASETS and source != PYTHON_OBJECT and
            (os.sep in source or "/" in source or Path(source).suffix.lower() in KINDS or
             Path(source).exists()))


def holds_data(source: Any) -> bool:
    """Whether a dataset setting is the data itself, held in Python: a Dataset, a torch Dataset
    or an (x, y) pair (of arrays or tensors), rather than a name or a path."""
    return isinstance(source, (Dataset, torch.utils.data.Dataset)) or (
        isinstance(source, (tuple, list)) and len(source) == 2)


def check_name(source: Any) -> None:
    """A dataset setting is a built-in name, the Python-object marker, a path, or data held in
    Python (`holds_data`)."""
    if holds_data(source):
        return
    if not isinstance(source, str):
        raise DatasetError(f"the dataset setting takes a built-in name, a path, an (x, y) pair "
                           f"of arrays or tensors, or a torch Dataset; got a "
                           f"{type(source).__name__}")
    if source not in DATASETS and source != PYTHON_OBJECT and not is_path(source):
        raise DatasetError(f"unknown dataset {source!r}; choose from {', '.join(DATASETS)}, or "
                           "give a path to an image folder, .npz, .csv or .parquet file")


def kind_of(path: Path) -> str:
    """'images' for a folder, else the kind of the file's suffix."""
    if path.is_dir():
        return "images"
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(f"{path}: unknown kind of data file; use an image folder or a "
                           f"{', '.join(KINDS)} file")
    return kind


def path_fingerprint(path: Path) -> dict[str, Any]:
    """{files, bytes, modified, sha256}: the sha256 over every file's name, size and mtime."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, total, newest = hashlib.sha256(), 0, 0
    for file in files:
        stat = file.stat()
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        total, newest = total + stat.st_size, max(newest, stat.st_mtime_ns)
    modified = datetime.datetime.fromtimestamp(newest / 1e9, datetime.UTC)
    return {"files": len(files), "bytes": total,
            "modified": modified.isoformat(timespec="seconds"), "sha256": digest.hexdigest()}


def content_fingerprint(data: Dataset) -> dict[str, Any]:
    """{sha256}: over the classes and every split's tensors (shape, dtype, bytes)."""
    digest = hashlib.sha256("\n".join(data.classes).encode())
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return {"sha256": digest.hexdigest()}


def fingerprint_change(saved: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """How the data differs from the session's record (None: the same, or no record)."""
    if not saved or saved.get("fingerprint") == now.get("fingerprint"):
        return None
    before, after = saved.get("fingerprint") or {}, now.get("fingerprint") or {}
    if "files" not in after:
        return f"its content differs (sha256 {after.get('sha256', '?')[:12]}, the session " \
               f"was run on {before.get('sha256', '?')[:12]})"
    show = lambda f: f"{f.get('files')} files, {f.get('bytes')} bytes, newest modified " \
                     f"{f.get('modified')}"  # noqa: E731
    if show(before) == show(after):
        return "its file names or modification times differ (same count, size and newest date)"
    return f"it has {show(after)} (the session was run on {show(before)})"


def load_dataset(source: Any, root: str | os.PathLike | None = None,
                 val_size: int | None = None, seed: int = 0, *, target: str | None = None,
                 image_size: int | tuple[int, int] | None = None,
                 scaling: dict[str, Any] | None = None, stream: bool | None = None) -> Dataset:
    """Load a dataset from a built-in name, a path or a Python object.

    Built-in sets keep their own splits (see iaprune.data.builtin). Other sources: a given test
    split is used as is, else 20 % is carved (stratified, fixed seed); the validation split is
    carved from the training split (stratified, `seed`); scaling comes from the training split
    only (iaprune.data.prepare has the rules).

    Args:
        source: 'mnist', 'fashion-mnist', 'digits'; a path to an image folder
            (ROOT/<class>/*.png or ROOT/train/<class>, ROOT/test/<class>), an .npz
            (x_train, y_train[, x_test, y_test] or x, y), a .csv or .parquet table; an (x, y)
            pair of arrays or tensors; a torch Dataset of (x, y) items; or a Dataset.
        root: the folder holding MNIST/raw/ and FashionMNIST/raw/ (default $IAPRUNE_DATA, else
            data/); missing IDX files are downloaded and md5-checked.
        val_size: validation samples (default 5000 for the IDX sets, 180 for digits, else
            10 % of the training split).
        seed: the seed of the validation split.
        target: a table's label column.
        image_size: an image folder's size, N (square) or (height, width) [the most common].
        scaling: a model's recorded input_info whose scaling is applied instead of computing
            it (to evaluate a model on other data exactly as it was trained).
        stream: an image folder is read from disk in batches (DataLoader workers) instead of
            held in memory: True always, False never, None [when its model inputs would take
            more than half the available memory]. Results are the same either way.

    Returns:
        Dataset: `train`, `val`, `test` splits (each `.x` (n, features) and `.y` (n,)),
        `input_shape`, `num_classes`, `classes` and `input_info()` for checkpoints.

    Example:
        >>> from iaprune import load_dataset
        >>> data = load_dataset("digits")
        >>> data.input_shape, data.num_classes, len(data.train.x)
        ((1, 8, 8), 10, 1257)
    """
    if not isinstance(source, (str, os.PathLike)) and (target, image_size) != (None, None):
        raise DatasetError("--target and --image-size apply to files and folders, not to data "
                           "given as a Python object")
    if not isinstance(source, (str, os.PathLike)) and stream:
        raise DatasetError("streaming reads image folders from disk; data given as a Python "
                           "object is held in memory (drop stream=True)")
    if isinstance(source, Dataset):
        return source if source.record else replace(source, record={
            "source": PYTHON_OBJECT, "kind": "python", "fingerprint": content_fingerprint(source)})
    if isinstance(source, str) and not is_path(source):
        check_name(source)
        if source == PYTHON_OBJECT:
            raise DatasetError("this data was a Python object; pass it again with "
                               "run(config, session, data=...)")
        for given, flag in ((target, "--target"), (image_size, "--image-size"),
                            (stream or None, "--stream")):
            if given is not None:
                raise DatasetError(f"{flag} applies to your own data, not to the built-in "
                                   f"{source}")
        return load_builtin(source, root, val_size, seed)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        kind = kind_of(path)
        if target is not None and kind != "table":
            raise DatasetError(f"--target applies to tables (.csv, .parquet), not to {path}")
        if image_size is not None and kind != "images":
            raise DatasetError(f"--image-size applies to image folders, not to {path}")
        if stream and kind != "images":
            raise DatasetError(f"--stream applies to image folders, not to {path} (held in "
                               "memory)")
        record = {"source": str(source), "kind": kind, "fingerprint": path_fingerprint(path)}
        if kind == "images":
            scan = images.scan_folder(path, image_size)
            if stream_mod.streams(scan, stream):
                return stream_mod.stream_folder(scan, str(source), val_size, seed, record,
                                                scaling)
        readers = {"images": lambda: images.decode_folder(scan),
                   "arrays": lambda: arrays.read_npz(path),
                   "table": lambda: table.read_table(path, target)}
        return prepare(readers[kind](), str(source), val_size, seed, record, scaling)
    data = prepare(arrays.from_python(source), PYTHON_OBJECT, val_size, seed, None, scaling)
    return replace(data, record={"source": PYTHON_OBJECT, "kind": "python",
                                 "fingerprint": content_fingerprint(data)})
