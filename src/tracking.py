"""Optional experiment tracking of a pruning run (MLflow); the engine talks to a Tracker.

With `--mlflow [URI]` a session is one MLflow *parent* run (the config as params, the base
model's metrics as `base_*`, the results table and plots as artifacts under `results/`) with one
nested *child* run per iteration, named `iteration-<i>` (iteration 0 is the base model): its
neurons per layer and % retained as params, the kept model's metrics, the per-epoch history
(`epoch/<metric>`, step = epoch) and its files as artifacts. The parent's id is kept in the
session's config.json (`mlflow_run_id`), so a resumed run logs into the same parent; a redone
iteration's old child runs (that iteration and every later one) are tagged `superseded_by` and
deleted (MLflow keeps deleted runs restorable until `mlflow gc`). Iterations completed while
tracking was off or failed are logged from their folders when a tracked run starts.

MLflow is imported here only, and only when tracking is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from src.concatenate import read_validation_results
from src.errors import UserError
from src.files import atomic_write
from src.metrics import EPOCH, EPOCH_COLUMNS, RUN, VALIDATION
from src.session import ITERATION_FILES, MODES

INSTALL = "pip install mlflow-skinny sqlalchemy alembic (or mlflow, which also has the `mlflow ui`)"
DEFAULT_STORE = "mlflow.db"  # the default local store, in the folder holding the session
ARTIFACTS = "mlartifacts"  # artifacts of a local sqlite store, beside its database file
RUN_ID_KEY = "mlflow_run_id"  # the parent run's id in config.json
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # stores that need SQLAlchemy + alembic
# validation row (and the engine's Epochs, Seconds) -> metric of the kept model
ROW_METRICS = {c.name: c.key for c in (*VALIDATION, *RUN) if c.kind != "label"}
# train_results.txt column -> per-epoch metric (step = the Epoch column)
EPOCH_METRICS = {c.name: f"epoch/{c.key}" for c in EPOCH if c.name != "Epoch"}



class TrackingError(UserError):
    """Tracking that cannot start or log: a missing package, an unreachable store."""


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


def default_uri(session_root: Path) -> str:
    """The local store used by `--mlflow` without a URI: sqlite mlflow.db beside the session."""
    return f"sqlite:///{(session_root.parent / DEFAULT_STORE).resolve().as_posix()}"


def make_tracker(uri: str | None, experiment: str | None, session_root: Path) -> Tracker:
    """NullTracker when uri is None (no --mlflow); MLflow tracking otherwise ("" = default)."""
    if uri is None:
        return NullTracker()
    return MlflowTracker(uri or default_uri(session_root), experiment, session_root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local sqlite URI (None for other stores)."""
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
    return Path(path).resolve() if path and not path.startswith(":memory:") else None


def read_epochs(path: Path) -> list[dict[str, float]]:
    """The rows of a train_results.txt as {column: value}."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or lines[0] != list(EPOCH_COLUMNS):
        raise ValueError(f"{path}: header must be {' '.join(EPOCH_COLUMNS)}")
    return [dict(zip(EPOCH_COLUMNS, map(float, row), strict=True)) for row in lines[1:]]


class MlflowTracker:
    """Logs a session into MLflow: one parent run, one nested child run per iteration."""

    def __init__(self, uri: str, experiment: str | None, session_root: Path, log=print):
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackingError(f"--mlflow needs MLflow ({_first_line(exc)}): {INSTALL}") from None
        scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
        missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
        if scheme in SQL_SCHEMES and missing:
            raise TrackingError(f"--mlflow {uri}: a {scheme} store needs {' and '.join(missing)}: "
                             f"{INSTALL}")
        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        self._error = MlflowException
        self.uri, self.session_root, self.log = uri, session_root, log
        self.asked_experiment = experiment  # --mlflow-experiment (None: the session's name)
        self.experiment = experiment or session_root.resolve().name
        self.config: dict[str, Any] = {}
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.mode_dir: Path | None = None
        database = sqlite_file(uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates no folders
        with self._errors("cannot open the tracking store"):
            self.client = MlflowClient(tracking_uri=uri)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """MLflow's errors become one-line ValueErrors naming the store."""
        try:
            yield
        except self._error as exc:
            raise TrackingError(f"MLflow ({self.uri}): {what}: {_first_line(exc)}") from None

    # ------------------------------------------------------------------------- the parent run
    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        """Create the parent run (or reattach to config.json's) and log missing iterations."""
        self.config, self.mode_dir = config, config_path.parent / MODES[config["mode"]]
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        with self._errors("cannot start the parent run"):
            if saved.get(RUN_ID_KEY):
                self._reattach(saved[RUN_ID_KEY], config, config_path)
            else:
                self._create_parent(config)
                atomic_write(config_path, json.dumps({**saved, RUN_ID_KEY: self.parent_id},
                                                     indent=2) + "\n")
            for path in (config_path, config_path.parent / "retain" / "retain.txt"):
                if path.is_file():
                    self.client.log_artifact(self.parent_id, str(path), "session")
            self._backfill(begin)
        self.log(f"mlflow: run {self.parent_id} (experiment {self.experiment!r}) in {self.uri}")

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            database = sqlite_file(self.uri)  # a local store keeps its artifacts beside it
            location = (database.parent / ARTIFACTS).as_uri() if database else None
            return self.client.create_experiment(self.experiment, artifact_location=location)
        if found.lifecycle_stage != "active":
            raise TrackingError(f"MLflow ({self.uri}): experiment {self.experiment!r} is deleted; "
                             "restore it or choose another --mlflow-experiment")
        return found.experiment_id

    def _create_parent(self, config: dict[str, Any]) -> None:
        self.experiment_id = self._experiment_id()
        tags = {"session": str(self.session_root.resolve()), "mode": str(config["mode"]),
                "criterion": str(config["criterion"])}
        run = self.client.create_run(self.experiment_id, run_name=self.session_root.resolve().name,
                                     tags=tags)
        self.parent_id = run.info.run_id
        self.client.log_batch(self.parent_id, params=[self.Param(k, str(v))
                                                      for k, v in sorted(config.items())])

    def _reattach(self, run_id: str, config: dict[str, Any], config_path: Path) -> None:
        """Resume into the stored parent run; settings changed on resume become tags."""
        try:
            run = self.client.get_run(run_id)
        except self._error:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            raise TrackingError(f"MLflow ({self.uri}): {config_path} names parent run {run_id}, "
                             "which this store does not have (or it is deleted); use the "
                             f"--mlflow store the session was tracked in, or remove "
                             f"{RUN_ID_KEY!r} from config.json to start a new parent run")
        experiment = self.client.get_experiment(run.info.experiment_id).name
        if self.asked_experiment not in (None, experiment):
            raise TrackingError(f"--mlflow-experiment {self.experiment!r}: this session is tracked "
                             f"in experiment {experiment!r}; leave the flag out to resume")
        self.parent_id, self.experiment_id, self.experiment = run_id, run.info.experiment_id, \
            experiment
        logged = run.data.params
        changed = [self.RunTag(f"resumed.{k}", str(v)) for k, v in sorted(config.items())
                   if k in logged and logged[k] != str(v)]
        new = [self.Param(k, str(v)) for k, v in sorted(config.items()) if k not in logged]
        self.client.log_batch(run_id, params=new, tags=changed)
        self.client.update_run(run_id, status="RUNNING")

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        """Log the results table and plots on the parent run and close it with `status`."""
        if self.parent_id is None:
            return
        if status != "FINISHED":  # the run already failed: never hide why behind a tracking error
            try:
                self.client.set_terminated(self.parent_id, status)
            except Exception as exc:  # noqa: BLE001 - best effort while the run is failing
                print(f"warning: MLflow could not mark run {self.parent_id} {status}: "
                      f"{_first_line(exc)}", file=sys.stderr)
            return
        with self._errors("cannot finish the parent run"):
            if results_dir is not None and results_dir.is_dir():
                self.client.log_artifacts(self.parent_id, str(results_dir), "results")
            self.client.set_terminated(self.parent_id, status)

    # ------------------------------------------------------------------------ the child runs
    def children(self) -> list:
        """The parent's active (not superseded) child runs."""
        return self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=50_000)

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        """Log iteration i as child run `iteration-<i>`, superseding older runs of i and later."""
        with self._errors(f"cannot log iteration {i}"):
            self._log_iteration(i, row, folder)

    def _log_iteration(self, i: int, row: dict[str, Any], folder: Path,
                       backfilled: bool = False) -> None:
        """One child run; it supersedes the older runs of i and, unless backfilled, of later
        iterations too (the engine deletes their folders when it redoes i)."""
        old = [r for r in self.children() if int(r.data.tags.get("iteration", -1)) == i or
               (not backfilled and int(r.data.tags.get("iteration", -1)) > i)]
        tags = {"mlflow.parentRunId": self.parent_id, "iteration": str(i)}
        if backfilled:
            tags["backfilled"] = "true"
        child = self.client.create_run(self.experiment_id, run_name=f"iteration-{i}", tags=tags)
        run_id, now = child.info.run_id, int(time.time() * 1000)
        neurons = [int(n) for n in str(row["Hidden"]).split("-")]
        params = {"iteration": i, "hidden": row["Hidden"], "percent_retained":
                  f"{row['PercentageRetain']:.2f}", "criterion": self.config["criterion"],
                  "mode": self.config["mode"],
                  **{f"h{layer}": n for layer, n in enumerate(neurons, start=1)}}
        metrics = [self.Metric(name, float(row[key]), now, 0)
                   for key, name in ROW_METRICS.items() if key in row]
        for epoch in read_epochs(folder / "train_results.txt"):
            metrics += [self.Metric(name, epoch[column], now, int(epoch["Epoch"]))
                        for column, name in EPOCH_METRICS.items()]
        self.client.log_batch(run_id, metrics=metrics,
                              params=[self.Param(k, str(v)) for k, v in params.items()])
        for name in ITERATION_FILES:
            if (folder / name).is_file():
                self.client.log_artifact(run_id, str(folder / name))
        self.client.set_terminated(run_id, "FINISHED")
        if i == 0:
            self.client.log_batch(self.parent_id, metrics=[
                self.Metric(f"base_{name}", float(row[key]), now, 0)
                for key, name in ROW_METRICS.items() if key in row])
        for run in old:  # only now that the new child is complete
            self.client.set_tag(run.info.run_id, "superseded_by", run_id)
            self.client.delete_run(run.info.run_id)

    def _backfill(self, begin: int) -> None:
        """Log the complete iterations before `begin` that have no finished child run."""
        done = {int(r.data.tags["iteration"]) for r in self.children()
                if r.info.status == "FINISHED" and "iteration" in r.data.tags}
        for i in range(begin):
            folder = self.mode_dir / str(i) / "prune_w_retrain"
            if i in done or not (folder / "validation_results.txt").is_file():
                continue
            row = {"iteration": i, **read_validation_results(folder / "validation_results.txt"),
                   "Epochs": len(read_epochs(folder / "train_results.txt"))}
            self._log_iteration(i, row, folder, backfilled=True)
