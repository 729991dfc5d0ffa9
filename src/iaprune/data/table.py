"""A table as a data source: a CSV file with a header line, or Parquet (needs pyarrow).

`target` names the label column (integers or text); every other column is a numeric feature.
A non-numeric feature column is refused, naming it: encoding categories (one-hot or otherwise)
is the user's step, since it decides what the input units are that pruning may remove. A
missing value (an empty cell, NA, N/A, NaN, null, None) is refused, naming its line and column.
The table has no test split of its own: one is carved (see iaprune.data.prepare).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from iaprune.data.dataset import DatasetError
from iaprune.data.prepare import RawData
from iaprune_runtime.table import MISSING  # the words refused as missing, in deploy too


def columns_of_csv(path: Path) -> tuple[dict[str, list[Any]], list[int]]:
    """({column: cells}, file line of each row) of a CSV file; blank lines are skipped."""
    columns: dict[str, list[Any]] = {}
    where: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise DatasetError(f"{path}: empty; a table needs a header line and rows")
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise DatasetError(f"{path}: column {duplicated[0]!r} appears twice in the "
                                   "header")
            columns = {name: [] for name in header}
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DatasetError(f"{path} line {reader.line_num}: {len(row)} fields, "
                                       f"the header has {len(header)}")
                for name, cell in zip(header, row, strict=True):
                    columns[name].append(cell.strip())
                where.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    return columns, where


def columns_of_parquet(path: Path) -> tuple[dict[str, list[Any]], list[int]]:
    """({column: values}, row numbers counted from 1) of a Parquet file."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow"
                           ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return columns, list(range(1, table.num_rows + 1))


def is_missing(value: Any) -> bool:
    """An empty cell, a NA-like word, None or a float NaN."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


def number(value: Any) -> float | None:
    """The value as a float, or None when it is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def labels_of(values: list[Any]) -> np.ndarray:
    """Integer labels when every value is an integer (or integer text), else text labels."""
    ints = []
    for value in values:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            ints.append(int(value))
            continue
        try:
            ints.append(int(str(value).strip()))
        except ValueError:
            return np.array([str(v).strip() for v in values])
    return np.array(ints, dtype=np.int64)


def table_data(columns: dict[str, list[Any]], where: list[int], target: str | None,
               source: Path, unit: str = "line") -> RawData:
    """Features (n, columns) and labels of a table read as {column: values}."""
    if target is None:
        raise DatasetError(f"{source}: a table needs its label column named (--target COLUMN "
                           f"or target=...); columns: {', '.join(columns)}")
    if target not in columns:
        raise DatasetError(f"{source}: no column {target!r}; columns: {', '.join(columns)}")
    features = [name for name in columns if name != target]
    if not features:
        raise DatasetError(f"{source}: no feature column besides the target {target!r}")
    if not where:
        raise DatasetError(f"{source}: the table has a header but no rows")
    for name in columns:  # missing values first, in file order, naming line and column
        for i, value in enumerate(columns[name]):
            if is_missing(value):
                raise DatasetError(f"{source} {unit} {where[i]}, column {name!r}: missing "
                                   "value (fill or drop it first)")
    x = np.empty((len(where), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        for i, value in enumerate(columns[name]):
            found = number(value)
            if found is None:
                raise DatasetError(f"{source}: column {name!r} is not numeric ({unit} "
                                   f"{where[i]}: {value!r}); encode it as numbers first "
                                   f"(e.g. one-hot), or drop it")
            x[i, j] = found
    if not np.isfinite(x).all():
        i, j = map(int, np.argwhere(~np.isfinite(x))[0])
        raise DatasetError(f"{source} {unit} {where[i]}, column {features[j]!r}: infinite "
                           "value")
    return RawData(x.astype(np.float32), labels_of(columns[target]),
                   features=tuple(features), target=target)


def read_table(path: Path, target: str | None) -> RawData:
    """The samples of a .csv or .parquet file."""
    if path.suffix.lower() == ".parquet":
        columns, where = columns_of_parquet(path)
        return table_data(columns, where, target, path, unit="row")
    columns, where = columns_of_csv(path)
    return table_data(columns, where, target, path)
