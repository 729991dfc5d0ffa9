"""The metric schema: one place for every metric's file column, attribute name and format.

Two tables are written per iteration: train_results.txt (one row per epoch, `EPOCH_COLUMNS`)
and validation_results.txt (one row, `VALIDATION_COLUMNS`); concatenate reads the second and
the trackers (MLflow, TensorBoard) log both under the `key` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["loss", "percent", "int", "label", "seconds"]


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
