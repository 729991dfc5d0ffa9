"""Optional experiment tracking of a pruning run (MLflow, TensorBoard); the engine talks to a
Tracker, and both trackers may be on at once.

With `--mlflow [URI]` a session is one MLflow *parent* run (the config as params, the base
model's metrics as `base_*`, the results table and plots as artifacts under `results/`) with one
nested *child* run per iteration, named `iteration-<i>` (iteration 0 is the base model): its
neurons per layer and % retained as params, the kept model's metrics, the per-epoch history
(`epoch/<metric>`, step = epoch) and its files as artifacts. The parent's id is kept in the
session's config.json (`mlflow_run_id`), so a resumed run logs into the same parent; a redone
iteration's old child runs (that iteration and every later one) are tagged `superseded_by` and
deleted (MLflow keeps deleted runs restorable until `mlflow gc`). Iterations completed while
tracking was off or failed are logged from their folders when a tracked run starts. An http(s)
server that does not answer within SERVER_TIMEOUT seconds is refused before anything is written
(MLflow's own client retries for minutes).

With `--tensorboard DIR` the session writes event files under DIR/<session name>/: one run per
iteration, `iteration-<i>/` (its per-epoch curves `epoch/<metric>`, step = epoch; the histogram of
each hidden layer's significance scores, `significance/h<l>` (and `significance/inputs` when the
input features are pruned), step = i; and an HParams session:
% retained, hidden sizes, params and MACs against the kept model's metrics `final/<metric>`),
and a run `summary/` with one point per iteration (`pruning/<metric>`, step = iteration). The
DIR/<session name>/ folder always mirrors the session's complete iterations: a run is written
into a `.partial` folder and renamed into place, replacing the older run of that iteration; the
runs of later iterations go when the engine removes their folders; `summary/` is rewritten from
the iteration folders. Iterations done while tracking was off are logged from their folders,
without histograms (the scores are not saved).

MLflow and TensorBoard are imported here only, and only when tracking is asked for.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from iaprune.errors import UserError
from iaprune.files import atomic_write, first_line, folder_problem
from iaprune.model import parse_hidden_label
from iaprune.records import (
    COLUMN,
    CONFIG_FILE,
    EPOCH,
    FEATURES_FILE,
    ITERATION_DIR,
    ITERATION_FILES,
    MODES,
    RETAIN_FILE,
    RUN,
    TRAIN_FILE,
    VALIDATION,
    VALIDATION_FILE,
    read_epochs,
    read_features,
    read_validation_results,
)

INSTALL = "pip install mlflow-skinny sqlalchemy alembic (or mlflow, which also has the `mlflow ui`)"
DEFAULT_STORE = "mlflow.db"  # the default local store, in the folder holding the session
ARTIFACTS = "mlartifacts"  # artifacts of a local sqlite store, beside its database file
RUN_ID_KEY = "mlflow_run_id"  # the parent run's id in config.json
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # stores that need SQLAlchemy + alembic
SERVER_TIMEOUT = 5.0  # seconds an http(s) tracking server gets to answer before it is refused
TB_INSTALL = "pip install tensorboard==2.21.0"
TB_MARKER = "session.json"  # in DIR/<session name>/: the session whose runs the folder holds
TB_STAMP = "source.sha256"  # in each iteration's run: the hash of the files it was logged from
# validation row (and the engine's Epochs, Seconds) -> metric of the kept model
ROW_METRICS = {c.name: c.key for c in (*VALIDATION, *RUN) if c.kind != "label"}
# train_results.txt column -> per-epoch metric (step = the Epoch column)
EPOCH_METRICS = {c.name: f"epoch/{c.key}" for c in EPOCH if c.name != "Epoch"}
# validation row columns that TensorBoard's HParams view plots against % retained, params, MACs
FINAL_COLUMNS = tuple(c.name for c in VALIDATION if c.kind in ("percent", "loss")
                      and c.name != "PercentageRetain")


class TrackingError(UserError):
    """Tracking that cannot start or log: a missing package, an unreachable store."""


class Tracker(Protocol):
    """What the engine reports while it runs."""

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        """A run of the session (config.json at config_path) starts at iteration `begin`."""

    def scores(self, i: int, scores: list[Tensor]) -> None:
        """Iteration i >= 1 scored the model it prunes: one 1-D tensor per hidden layer."""

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        """Iteration i is complete: its validation row and its prune_w_retrain/ folder."""

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        """The run ended (results_dir: prune_w_retrain_results/, None when it did not finish)."""


class NullTracker:
    """Tracks nothing (the default)."""

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        pass

    def scores(self, i: int, scores: list[Tensor]) -> None:
        pass

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        pass

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        pass


class Trackers:
    """Several trackers at once (--mlflow and --tensorboard): each event goes to every one."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        for tracker in self.trackers:
            tracker.start(config_path, config, begin)

    def scores(self, i: int, scores: list[Tensor]) -> None:
        for tracker in self.trackers:
            tracker.scores(i, scores)

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        for tracker in self.trackers:
            tracker.iteration(i, row, folder)

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        for tracker in self.trackers:
            tracker.finish(results_dir, status)


def default_uri(session_root: Path) -> str:
    """The local store used by `--mlflow` without a URI: sqlite mlflow.db beside the session."""
    return f"sqlite:///{(session_root.parent / DEFAULT_STORE).resolve().as_posix()}"


def make_tracker(uri: str | None, experiment: str | None, session_root: Path,
                 tensorboard: str | Path | None = None) -> Tracker:
    """The trackers asked for: MLflow unless uri is None ("" = the default store), TensorBoard
    unless tensorboard (its DIR) is None; the NullTracker when neither is."""
    trackers: list[Tracker] = []
    if tensorboard is not None:
        trackers.append(TensorBoardTracker(Path(tensorboard), session_root))
    if uri is not None:
        trackers.append(MlflowTracker(uri or default_uri(session_root), experiment, session_root))
    if not trackers:
        return NullTracker()
    return trackers[0] if len(trackers) == 1 else Trackers(trackers)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local sqlite URI (None for other stores)."""
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
    return Path(path).resolve() if path and not path.startswith(":memory:") else None


def check_server(uri: str, timeout: float = SERVER_TIMEOUT) -> None:
    """Refuse an http(s) tracking URI where no server answers within `timeout` seconds.

    Any HTTP answer counts, even an error status (the server is there; MLflow reports what is
    wrong), and so does a TLS failure (MLflow has its own certificate settings). Other URIs
    (sqlite, file, databricks, ...) are not checked here."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host, port = parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError as exc:
        raise TrackingError(f"--mlflow {uri}: not a valid URI ({exc})") from None
    if parts.scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return
        why = exc.reason if isinstance(exc.reason, BaseException) else Exception(exc.reason)
    except ssl.SSLError:
        return
    except (OSError, http.client.HTTPException) as exc:  # a timeout while reading, a hang-up
        why = exc
    reason = f"no answer within {timeout:g} s" if isinstance(why, TimeoutError) \
        else first_line(why)
    raise TrackingError(
        f"--mlflow {uri}: no MLflow server answers there ({reason}); "
        f"start one with `mlflow server --host {host or '127.0.0.1'} --port {port}` "
        "(pip install mlflow), or use the local store: --mlflow without a URI")


class MlflowTracker:
    """Logs a session into MLflow: one parent run, one nested child run per iteration."""

    def __init__(self, uri: str, experiment: str | None, session_root: Path, log=print):
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackingError(f"--mlflow needs MLflow ({first_line(exc)}): {INSTALL}") from None
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
        check_server(uri)
        database = sqlite_file(uri)
        if database is not None:
            problem = folder_problem(database.parent)
            if problem:
                raise TrackingError(f"--mlflow {uri}: {problem}")
            database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates no folders
        with self._errors("cannot open the tracking store"):
            self.client = MlflowClient(tracking_uri=uri)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """MLflow's errors become one-line ValueErrors naming the store."""
        try:
            yield
        except self._error as exc:
            raise TrackingError(f"MLflow ({self.uri}): {what}: {first_line(exc)}") from None

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
            for path in (config_path, config_path.parent / RETAIN_FILE):
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
                      f"{first_line(exc)}", file=sys.stderr)
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

    def scores(self, i: int, scores: list[Tensor]) -> None:
        """Not logged to MLflow (TensorBoard draws them as histograms)."""

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
        names = read_features(folder / FEATURES_FILE)
        if names is not None:  # a table: the columns the model reads, by name
            tags["features_kept"] = features_text(names)
        if backfilled:
            tags["backfilled"] = "true"
        child = self.client.create_run(self.experiment_id, run_name=f"iteration-{i}", tags=tags)
        run_id, now = child.info.run_id, int(time.time() * 1000)
        inputs, neurons = parse_hidden_label(row["Hidden"])
        params = {"iteration": i, "hidden": row["Hidden"], "percent_retained":
                  f"{row['PercentageRetain']:.2f}", "criterion": self.config["criterion"],
                  "mode": self.config["mode"], **({} if inputs is None else {"inputs": inputs}),
                  **{f"h{layer}": n for layer, n in enumerate(neurons, start=1)}}
        metrics = [self.Metric(name, float(row[key]), now, 0)
                   for key, name in ROW_METRICS.items() if key in row]
        for epoch in read_epochs(folder / TRAIN_FILE):
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
            folder = self.mode_dir / str(i) / ITERATION_DIR
            if i in done or not (folder / VALIDATION_FILE).is_file():
                continue
            self._log_iteration(i, {"iteration": i, **read_row(folder)}, folder, backfilled=True)


# ------------------------------------------------------------------------------- TensorBoard
def features_text(names: list[str]) -> str:
    """How trackers show the input columns a model reads: '2: radius, area'."""
    return f"{len(names)}: {', '.join(names)}"


def iteration_files(mode_dir: Path) -> dict[int, Path]:
    """{i: prune_w_retrain/ folder} of the complete iterations in a session's mode folder."""
    if not mode_dir.is_dir():
        return {}
    folders = {int(p.name): p / ITERATION_DIR for p in mode_dir.iterdir() if p.name.isdigit()}
    return {i: f for i, f in sorted(folders.items()) if (f / VALIDATION_FILE).is_file()}


def source_hash(folder: Path) -> str:
    """What an iteration's run was logged from: the hash of its results files."""
    digest = hashlib.sha256()
    for name in (VALIDATION_FILE, TRAIN_FILE):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def read_row(folder: Path) -> dict[str, Any]:
    """An iteration's validation row plus its number of epochs, from its folder."""
    return {**read_validation_results(folder / VALIDATION_FILE),
            COLUMN["epochs"]: len(read_epochs(folder / TRAIN_FILE))}


class TensorBoardTracker:
    """Writes a session as TensorBoard runs under DIR/<session name>/ (see the module docstring)."""

    def __init__(self, logdir: Path, session_root: Path, log=print):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as exc:
            raise TrackingError(f"--tensorboard needs TensorBoard ({first_line(exc)}): "
                             f"{TB_INSTALL}") from None
        self.SummaryWriter, self.hparams, self.log = SummaryWriter, hparams, log
        self.session = session_root.resolve()
        self.logdir, self.root = logdir, logdir / self.session.name
        self.mode_dir: Path | None = None
        self._scores: dict[int, list[Tensor]] = {}  # scored, not yet complete iterations
        problem = folder_problem(self.root)  # DIR/<name>, DIR or a folder above is a file
        if problem:
            raise TrackingError(f"--tensorboard {logdir}: {problem}")
        owner = self._owner()
        if owner is None and self.root.is_dir() and any(self.root.iterdir()):
            raise TrackingError(f"--tensorboard {logdir}: {self.root} exists and holds no "
                             "IA-Prune session's runs; choose another DIR")
        if owner not in (None, self.session) and (owner / CONFIG_FILE).is_file():
            raise TrackingError(f"--tensorboard {logdir}: {self.root} holds the runs of session "
                             f"{owner}; choose another DIR for this session")

    def _owner(self) -> Path | None:
        """The session whose runs DIR/<session name>/ holds (None: not ours, or no marker)."""
        try:
            return Path(json.loads((self.root / TB_MARKER).read_text(encoding="utf-8"))["session"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, config_path: Path, config: dict[str, Any], begin: int) -> None:
        """Make DIR/<session name>/ mirror the session's complete iterations (log the missing or
        outdated ones from their folders, drop runs of iterations the session no longer has)."""

        self.mode_dir = config_path.parent / MODES[config["mode"]]
        atomic_write(self.root / TB_MARKER, json.dumps({"session": str(self.session)}) + "\n")
        for leftover in self.root.glob("*.partial"):  # a run killed while writing one
            shutil.rmtree(leftover)
        complete = iteration_files(self.mode_dir)
        for i, run in self.runs().items():
            if i not in complete:
                shutil.rmtree(run)
        stale = [i for i, folder in complete.items() if self._stamp(i) != source_hash(folder)]
        for i in stale:
            self._write_iteration(i, complete[i], None)
        self._write_summary()
        self.log(f"tensorboard: {self.root} (view with: tensorboard --logdir {self.logdir})")
        if stale:
            lost = ", without significance histograms (the scores are not saved)" \
                if max(stale) > 0 else ""
            self.log(f"tensorboard: logged iteration(s) {', '.join(map(str, stale))} from "
                     f"their folders{lost}")

    def runs(self) -> dict[int, Path]:
        """{i: run folder iteration-<i>/} of the iterations logged so far."""
        runs = {p.name.removeprefix("iteration-"): p for p in self.root.glob("iteration-*")
                if p.is_dir()}
        return {int(i): p for i, p in sorted(runs.items()) if i.isdigit()}

    def _stamp(self, i: int) -> str | None:
        path = self.root / f"iteration-{i}" / TB_STAMP
        return path.read_text(encoding="utf-8").strip() if path.is_file() else None

    def scores(self, i: int, scores: list[Tensor]) -> None:
        """Keep iteration i's scores until the iteration is complete."""
        self._scores[i] = [s.detach().cpu().clone() for s in scores]

    def iteration(self, i: int, row: dict[str, Any], folder: Path) -> None:
        """Write iteration i's run (replacing an older one), drop later runs, redo the summary."""
        self._write_iteration(i, folder, self._scores.pop(i, None))
        for later, run in self.runs().items():
            if later > i:  # the engine removed their folders: this run will write them again
                shutil.rmtree(run)
        self._write_summary()

    def finish(self, results_dir: Path | None, status: str = "FINISHED") -> None:
        """Nothing left to write: every run is complete once its iteration is."""

    def _replace(self, name: str, write) -> None:
        """Write run `name` into a .partial folder with write(writer), then rename it into place.

        purge_step=0 tells a TensorBoard that already read the old run to drop its points."""
        run, partial = self.root / name, self.root / f"{name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        with self.SummaryWriter(str(partial), purge_step=0, max_queue=10_000,
                                flush_secs=3600) as writer:
            write(writer)
        if run.exists():
            shutil.rmtree(run)
        partial.rename(run)

    def _write_iteration(self, i: int, folder: Path, scores: list[Tensor] | None) -> None:
        """Run iteration-<i>: per-epoch curves, significance histograms, an HParams session."""
        row, epochs = read_row(folder), read_epochs(folder / TRAIN_FILE)

        def write(writer) -> None:
            for epoch in epochs:
                for column, name in EPOCH_METRICS.items():
                    writer.add_scalar(name, epoch[column], int(epoch["Epoch"]))
            names = [f"h{layer}" for layer in range(1, len(scores or []) + 1)]
            if scores and parse_hidden_label(row["Hidden"])[0] is not None:  # inputs first
                names = ["inputs", *names[:-1]]
            for name, values in zip(names, scores or [], strict=True):
                writer.add_histogram(f"significance/{name}", values, i)
            settings = {"iteration": i, "hidden": row["Hidden"],
                        "percent_retained": float(row["PercentageRetain"]),
                        "params": int(row["Params"]), "macs": int(row["MACs"])}
            final = {f"final/{ROW_METRICS[key]}": float(row[key]) for key in FINAL_COLUMNS}
            for summary in self.hparams(settings, final):
                writer.file_writer.add_summary(summary, i)
            for tag, value in final.items():
                writer.add_scalar(tag, value, i)
            names = read_features(folder / FEATURES_FILE)
            if names is not None:  # a table: the columns the model reads, by name
                writer.add_text("features_kept", features_text(names), i)
            atomic_write(Path(writer.get_logdir()) / TB_STAMP, source_hash(folder) + "\n")

        self._replace(f"iteration-{i}", write)

    def _write_summary(self) -> None:
        """Run summary/: every complete iteration's row as `pruning/<metric>`, step = iteration."""
        rows = {i: read_row(folder) for i, folder in iteration_files(self.mode_dir).items()}

        def write(writer) -> None:
            for i, row in rows.items():
                for key, name in ROW_METRICS.items():
                    if key in row:
                        writer.add_scalar(f"pruning/{name}", float(row[key]), i)

        self._replace("summary", write)
