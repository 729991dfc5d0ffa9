"""A CSV table with a header line as model inputs: the columns a model reads, found by name.

A model trained on a table records its feature names; after input pruning it reads only some of
them, and a CSV needs only those columns (others, the label column among them, are ignored).
Cells are read as the training data was: numbers as Python floats; a missing kept column, an
empty or NA-like cell or a non-number is one error naming it (standard library only).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MISSING = {"", "na", "n/a", "nan", "null", "none"}  # the words training refused as missing


def header_of(reader, path: Path) -> list[str]:
    """The stripped column names of the first line."""
    header = [name.strip() for name in next(reader, [])]
    if not any(header):
        raise ValueError(f"{path}: empty; a table needs a header line naming its columns")
    return header


def cell_value(cell: str, path: Path, line: int, name: str) -> float:
    """One feature cell as a float; a missing or non-numeric cell is a ValueError naming it."""
    text = cell.strip()
    if text.lower() in MISSING:
        raise ValueError(f"{path} line {line}, column {name!r}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path} line {line}, column {name!r}: not a number ({text!r})"
                         ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path} line {line}, column {name!r}: infinite value")
    return value


def read_table(path: str | Path, features: Sequence[str] | None,
               reads: Sequence[int]) -> np.ndarray:
    """(rows, len(features)) float64 raw values: the columns features[j] for j in `reads`
    taken from the CSV by name; the columns the model does not read are left at 0."""
    path = Path(path)
    if features is None:
        raise ValueError(f"{path}: the model records no column names (it was not trained on a "
                         "table); pass its inputs as a .npy array")
    wanted = [features[j] for j in reads]
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = header_of(reader, path)
            missing = [name for name in wanted if name not in header]
            if missing:
                raise ValueError(f"{path}: no column {missing[0]!r}, which the model reads "
                                 f"(it reads {', '.join(wanted)})")
            where = [header.index(name) for name in wanted]
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(f"{path} line {reader.line_num}: {len(row)} fields, the "
                                     f"header has {len(header)}")
                values = np.zeros(len(features))
                for j, k, name in zip(reads, where, wanted, strict=True):
                    values[j] = cell_value(row[k], path, reader.line_num, name)
                rows.append(values)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows")
    return np.stack(rows)
