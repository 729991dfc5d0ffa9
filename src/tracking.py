"""Optional experiment tracking of a pruning run (MLflow); the engine talks to a Tracker."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What the engine reports while it runs."""

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        """A run of the session (config.json at config_path) starts at iteration `begin`."""

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        """Iteration i is complete: its validation row and its prune_w_retrain/ folder."""

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        """The run ended (results_dir: prune_w_retrain_results/, None when it did not finish)."""


class NullTracker:
    """Tracks nothing (the default)."""

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        pass

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        pass

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        pass


def make_tracker(uri: str | None, experiment: str | None, session_root: Path) -> Tracker:
    """NullTracker when uri is None (no --mlflow); MLflow tracking otherwise."""
    if uri is None:
        return NullTracker()
    raise ValueError("MLflow tracking is not available yet")
