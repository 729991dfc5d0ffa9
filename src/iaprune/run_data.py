"""The data of a pruning run: which source a session reads, its record in config.json, and the
check that a resumed session reads the same data.

`run(config, session, data=...)` takes a Dataset or anything `load_dataset` takes; a path
becomes the config's dataset setting, any other object is recorded as "python object" with the
sha256 of its tensors. config.json keeps the source's record under "data" (for a path: its files'
count, size, newest modification time and a sha256 over names, sizes and times).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from iaprune.config import PruneConfig
from iaprune.data import (
    DEFAULT_VAL_SIZE,
    PYTHON_OBJECT,
    Dataset,
    DatasetError,
    fingerprint_change,
    holds_data,
    load_dataset,
)
from iaprune.files import parse_json
from iaprune.session import Session


class DataChangedError(DatasetError):
    """A resumed session given other data than it was run on."""


def config_for(config: PruneConfig, data: Any) -> tuple[PruneConfig, Any]:
    """(config, data) of a run given `data` (None: the config's own dataset, which may be the
    data itself: PruneConfig(dataset=(x, y))). `data` replaces the dataset setting: its path, or
    "python object"; a val_size equal to the built-in default of the replaced dataset is taken as
    unset (the new data's default applies)."""
    if holds_data(config.dataset):
        if data is not None:
            raise DatasetError("the data is given twice, as PruneConfig(dataset=...) and as "
                               "run(..., data=...): give it once")
        data = config.dataset
    if data is None:
        return config, None
    name = str(data) if isinstance(data, (str, os.PathLike)) else PYTHON_OBJECT
    replaced = PYTHON_OBJECT if holds_data(config.dataset) else config.dataset
    val_size = None if config.val_size == DEFAULT_VAL_SIZE.get(replaced) else config.val_size
    return replace(config, dataset=name, val_size=val_size), data


def load_run_data(config: PruneConfig, data: Any, data_root: str | Path | None) -> Dataset:
    """The run's Dataset: `data` when it is one or a Python object, else the config's source."""
    source = config.dataset if data is None or isinstance(data, (str, os.PathLike)) else data
    return load_dataset(source, data_root, val_size=config.val_size, target=config.target,
                        image_size=config.image_size, stream=config.stream or None)


def saved_record(session: Session) -> dict[str, Any] | None:
    """The "data" record of the session's config.json (None: none or unreadable)."""
    try:
        record = parse_json(session.config.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def check_same_data(session: Session, data: Dataset) -> None:
    """A resumed session must read the data it was run on; else one line naming the change."""
    change = fingerprint_change(saved_record(session), data.record or {})
    if change:
        source = (data.record or {}).get("source", data.name)
        raise DataChangedError(f"{session.root} was run on other data: {source} changed since "
                               f"({change}); use a new --session for new data")
