"""The session record: every file and folder name a session holds, the columns of its two
tables, and how those tables are written and read. The one place these names are spelled.

    <session>/config.json                       every setting (a resumed run re-reads it)
    <session>/retain/retain.txt                 the schedule the run used (+ its two plots when
                                                iaprune.retain wrote the folder)
    <session>/<mode>/<i>/prune_w_retrain/       best_model.pth, train_results.txt,
                                                validation_results.txt, summary.txt
                                                (+ features.txt for a table)
    <session>/<mode>/prune_w_retrain_results/   validations.txt, accuracies.png, losses.png,
                                                tradeoff.png, recommended.txt, concatenate.json
                                                (comparison.png with --compare, features.txt
                                                for a table)

train_results.txt has one row per epoch (`EPOCH`), validation_results.txt one row (`VALIDATION`):
an iteration's final metrics. Each column is a `Column`: its header in the file, the attribute
name the code and the trackers (MLflow, TensorBoard) use, and its kind (how it is checked and
printed). How the folders are used (paths, completeness, the atomic commit) is iaprune.session.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iaprune.errors import UserError
from iaprune.files import atomic_write

# ---------------------------------------------------------------- names
MODES = {"iterative": "iterative_pruning", "one-shot": "one_shot_pruning"}  # mode -> its folder
CONFIG_FILE = "config.json"
LOCK_FILE = "session.lock"  # held (flock) by the run using the session; names its holder
BASE_MODEL_FILE = "base_model.pth"  # a base model given as a module, imported and saved here
ARCH_FILE = "arch.json"  # the spec of an architecture given as a module
SCHEDULE_DIR = "retain"  # iaprune.retain's output folder, and a session's copy of the schedule
SCHEDULE_FILE = "retain.txt"
SCHEDULE_PLOTS = ("pruneNodesIteration.png", "pruneNodesDistribution.png")
RETAIN_FILE = Path(SCHEDULE_DIR) / SCHEDULE_FILE  # in a session, and the default --retain
ITERATION_DIR = "prune_w_retrain"
PARTIAL_DIR = ITERATION_DIR + ".partial"  # an iteration being written
CHECKPOINT_FILE = "best_model.pth"
TRAIN_FILE = "train_results.txt"
VALIDATION_FILE = "validation_results.txt"  # written last: the iteration is complete
SUMMARY_FILE = "summary.txt"
# A table's input columns: in an iteration folder, the ones its model reads (one name a line);
# in the results folder, every iteration's (written only for data with column names).
FEATURES_FILE = "features.txt"
ITERATION_FILES = (SUMMARY_FILE, CHECKPOINT_FILE, TRAIN_FILE, VALIDATION_FILE, FEATURES_FILE)
RESULTS_DIR = "prune_w_retrain_results"
VALIDATIONS_FILE = "validations.txt"
ACCURACIES_PLOT = "accuracies.png"
LOSSES_PLOT = "losses.png"
TRADEOFF_PLOT = "tradeoff.png"
RECOMMENDED_FILE = "recommended.txt"
# The tolerance chosen for a mode folder and a fingerprint of what its outputs show.
SETTINGS_FILE = "concatenate.json"
RESULTS_FILES = (VALIDATIONS_FILE, ACCURACIES_PLOT, LOSSES_PLOT, TRADEOFF_PLOT, RECOMMENDED_FILE,
                 SETTINGS_FILE)
COMPARISON_PLOT = "comparison.png"  # results folder, only when runs are compared


# ---------------------------------------------------------------- columns
Kind = Literal["loss", "percent", "int", "label", "seconds"]
Value = float | int | str


@dataclass(frozen=True)
class Column:
    """One metric: its column in a results file, its attribute/tracking name, its kind."""

    name: str  # the column header in the file (seed-compatible spelling)
    key: str  # attribute of Metrics/EpochRecord and the tracked metric's name
    kind: Kind

    @property
    def fmt(self) -> str:
        """How tables (validations.txt, summaries) print the value."""
        return {"loss": "{:.4f}", "percent": "{:.2f}", "seconds": "{:.1f}"}.get(self.kind, "{}")


VALIDATION = (
    Column("Train_Loss", "train_loss", "loss"),
    Column("Test_Loss", "test_loss", "loss"),
    Column("Train_Accuracy", "train_accuracy", "percent"),
    Column("Test_Accuracy", "test_accuracy", "percent"),
    Column("PercentageRetain", "percent_retained", "percent"),
    Column("Val_Loss", "val_loss", "loss"),
    Column("Val_Accuracy", "val_accuracy", "percent"),
    Column("NoRetrain_Test_Accuracy", "no_retrain_test_accuracy", "percent"),
    Column("Hidden", "hidden", "label"),
    Column("Params", "params", "int"),
    Column("MACs", "macs", "int"),
)
EPOCH = (
    Column("Epoch", "epoch", "int"),
    Column("TrainLoss", "train_loss", "loss"),
    Column("TrainAccuracy", "train_accuracy", "percent"),
    Column("ValLoss", "val_loss", "loss"),
    Column("ValAccuracy", "val_accuracy", "percent"),
    Column("TestLoss", "test_loss", "loss"),
    Column("TestAccuracy", "test_accuracy", "percent"),
    Column("Seconds", "seconds", "seconds"),
)
# What the engine adds to an iteration's row besides its validation results.
RUN = (Column("Epochs", "epochs", "int"), Column("Seconds", "seconds", "seconds"))

VALIDATION_COLUMNS = tuple(c.name for c in VALIDATION)
EPOCH_COLUMNS = tuple(c.name for c in EPOCH)
BY_NAME = {c.name: c for c in (*VALIDATION, *RUN)}
COLUMN = {c.key: c.name for c in (*VALIDATION, *RUN)}  # key -> its column in an iteration's row
LOSS_COLUMNS = tuple(c.name for c in VALIDATION if c.kind == "loss")  # train, test, val
INT_COLUMNS = tuple(c.name for c in VALIDATION if c.kind == "int")
STR_COLUMNS = tuple(c.name for c in VALIDATION if c.kind == "label")
PERCENT_COLUMNS = tuple(c.name for c in VALIDATION if c.kind == "percent")
# How train_results.txt writes each kind (the file keeps more digits than the tables print).
EPOCH_FORMATS = {"int": "{}", "loss": "{:.6f}", "percent": "{:.4f}", "seconds": "{:.3f}"}


class ResultsError(UserError):
    """A results file or folder that cannot be used; the message is one line naming it."""


# ---------------------------------------------------------------- validation_results.txt
def validation_row(values: Mapping[str, Value]) -> dict[str, Value]:
    """{column: value} of validation_results.txt from values named by their keys
    (train_loss, ..., hidden, params, macs); every key exactly once."""
    keys = [c.key for c in VALIDATION]
    if set(values) != set(keys):
        raise ValueError(f"a validation row needs exactly {keys}, got {sorted(values)}")
    return {c.name: values[c.key] for c in VALIDATION}


def _check_value(column: str, value: object) -> Value:
    if column in STR_COLUMNS:
        if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
            raise ValueError(f"{column} must be a non-empty word without spaces, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{column} must be a number, got {value!r}")
    if column in INT_COLUMNS:
        if not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{column} must be an integer >= 0, got {value!r}")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{column} must be finite, got {value}")
    if column in PERCENT_COLUMNS and not 0.0 <= value <= 100.0:
        raise ValueError(f"{column} is a percentage in [0, 100], got {value}")
    return value


def write_validation_results(path: str | os.PathLike, values: Mapping[str, Value]) -> Path:
    """Write one iteration's final metrics: a header line and one row, atomically."""
    if set(values) != set(VALIDATION_COLUMNS):
        missing = [c for c in VALIDATION_COLUMNS if c not in values]
        extra = sorted(set(values) - set(VALIDATION_COLUMNS))
        raise ValueError(f"validation results need exactly {list(VALIDATION_COLUMNS)}; "
                         f"missing {missing}, unknown {extra}")
    checked = [_check_value(c, values[c]) for c in VALIDATION_COLUMNS]
    cells = [repr(v) if isinstance(v, float) else str(v) for v in checked]  # repr: lossless
    return atomic_write(path, " ".join(VALIDATION_COLUMNS) + "\n" + " ".join(cells) + "\n")


PARSERS = {**{c: str for c in STR_COLUMNS}, **{c: int for c in INT_COLUMNS}}


def _parse_cell(column: str, token: str, where: str) -> Value:
    parse = PARSERS.get(column, float)
    try:
        value = parse(token)
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise ResultsError(f"{where}: {column} must be {kind}, got {token!r}") from None
    try:
        return _check_value(column, value)
    except ValueError as exc:
        raise ResultsError(f"{where}: {exc}") from None


def read_validation_results(path: str | os.PathLike) -> dict[str, Value]:
    """Read one validation_results.txt into {column: value}; problems are one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no such file")
    try:
        lines = [(no, line.split()) for no, line in
                 enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None
    if not lines:
        raise ResultsError(f"{path}: empty file (expected a header line and one row of values)")
    (header_no, names), rows = lines[0], lines[1:]
    if sorted(names) != sorted(VALIDATION_COLUMNS):
        raise ResultsError(f"{path}:{header_no}: header must name the columns "
                           f"{' '.join(VALIDATION_COLUMNS)}, got {' '.join(names)!r}")
    if not rows:
        raise ResultsError(f"{path}: header but no row of values")
    if len(rows) > 1:
        raise ResultsError(f"{path}:{rows[1][0]}: expected one row of values, found {len(rows)}")
    row_no, tokens = rows[0]
    if len(tokens) != len(names):
        raise ResultsError(f"{path}:{row_no}: expected {len(names)} values as in the header, "
                           f"got {len(tokens)}")
    parsed = {c: _parse_cell(c, tok, f"{path}:{row_no}") for c, tok in zip(names, tokens,
                                                                          strict=True)}
    return {c: parsed[c] for c in VALIDATION_COLUMNS}


# ---------------------------------------------------------------- train_results.txt
def epoch_line(values: Mapping[str, float]) -> str:
    """One row of train_results.txt from an epoch's values named by their keys."""
    return " ".join(EPOCH_FORMATS[c.kind].format(values[c.key]) for c in EPOCH)


def write_epochs(path: str | os.PathLike, rows: list[Mapping[str, float]]) -> Path:
    """Write train_results.txt (header + one row per epoch, keyed like `EPOCH`), atomically."""
    return atomic_write(path, "\n".join([" ".join(EPOCH_COLUMNS)] +
                                        [epoch_line(r) for r in rows]) + "\n")


def read_epochs(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a train_results.txt as {column: value}."""
    path = Path(path)
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or lines[0] != list(EPOCH_COLUMNS):
        raise ResultsError(f"{path}: header must be {' '.join(EPOCH_COLUMNS)}")
    return [dict(zip(EPOCH_COLUMNS, map(float, row), strict=True)) for row in lines[1:]]


# ---------------------------------------------------------------- kept features
def write_features(path: str | os.PathLike, names: list[str]) -> Path:
    """features.txt of an iteration: the input columns its model reads, one name a line."""
    return atomic_write(path, "".join(f"{name}\n" for name in names))


def read_features(path: str | os.PathLike) -> list[str] | None:
    """The names in an iteration's features.txt (None: the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").splitlines()
