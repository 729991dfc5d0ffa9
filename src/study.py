"""Studies: a grid of pruning sessions (criteria and their variants x seeds x modes x curves) run
as Ray tasks on this machine or a Ray cluster, or one after another in-process; then tables and
plots of the curves.

    python -m src.study [--dataset mnist] [--hidden 256 64] [--seeds 0 1 2] [--variants NAME ...]
        [--curves no-retrain retrain] [--modes iterative one-shot] [--default-only retrain ...]
        [--workers N | --address auto|ray://HOST:10001] [--out sessions/study] [--report-only]

For every seed one base model is trained once (a one-row session) and shared by every other cell
of that seed (--base-model), so that only the pruning settings differ. Each cell is an ordinary
engine session under OUT/cache/<dataset>-<hidden>/seed<s>/<track>/<variant>/:
- curve `no-retrain`: --retrain-epochs 0, the test accuracy right after each pruning step;
  curve `retrain`: the engine's retraining, the test accuracy after it;
- mode `iterative` (re-score every pruned model) or `one-shot` (score the base model once).
The session folders are the cache: a finished cell is read, not run; an unfinished one resumes
after its last complete iteration. On Ray a cell is a task on one CPU and one thread (N cores run
N cells) that waits for its seed's base model and is retried when its worker dies; every random
stream is derived from (seed, iteration), so the numbers equal a sequential run's, cell by cell.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import io
import json
import logging
import os
import shutil
import socket
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from src import __version__, cli
from src.concatenate import read_validation_results
from src.config import dumps
from src.data import DATASETS, data_root, load_dataset
from src.engine import read_config, run
from src.files import atomic_write, folder_problem
from src.retain import write_schedule
from src.session import check_session_folder
from src.study_grid import (
    CURVES,
    MODES,
    RETRAIN_LAST_ROW,
    ROOT,
    Cell,
    Plan,
    StudyConfig,
    StudyError,
    cell_done,
    check_cached,
    make_plan,
    read_curve,
    registry,
)
from src.study_report import write_reports
from src.tracking import sqlite_file

RAY_INSTALL = "pip install ray==2.60.0"
MLFLOW_INSTALL = "pip install mlflow-skinny==3.17.2 SQLAlchemy==2.1.9 alembic==1.20.1"


# ----------------------------------------------------------------------------------- one cell
def run_cell(cell: Cell, data_root: str | None, log: Callable[[str], None]) -> None:
    """Run (or resume) the cell's session with the engine: the study's one call into it."""
    if not cell.session.config.is_file():
        start_session(cell)
    # the session's own settings and schedule (check_cached fitted it): run() resumes it
    saved = read_config(cell.session)
    run(saved, cell.root, data_root=data_root, quiet=True, log=log)


def start_session(cell: Cell) -> None:
    """Create the cell's session folder with its config.json and schedule in one rename.

    A worker killed at any moment of the start leaves no folder that looks like a session
    (only a staging folder, which the next start replaces).
    """
    check_session_folder(cell.root)  # absent or empty: anything else is not the study's
    staging = cell.root.with_name(cell.root.name + ".start")
    shutil.rmtree(staging, ignore_errors=True)
    write_schedule(list(cell.schedule), staging / "retain" / "retain.txt")
    atomic_write(staging / "config.json", dumps(cell.config, version=__version__))
    if cell.root.is_dir():
        cell.root.rmdir()
    staging.rename(cell.root)


@dataclass(frozen=True)
class Outcome:
    """What running a cell did."""

    ran: bool  # False: it was complete already (another runner finished it)
    seconds: float


@contextlib.contextmanager
def holding(lock: Path) -> Iterator[None]:
    """Hold `lock` (the kernel's flock) while a cell runs: one runner per session folder.

    The kernel drops the lock with its process, so a killed runner never leaves one behind.
    The file is opened in place, not written atomically: a lock must stay the same file. It
    names the holder (host and pid) while held.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_running(cell: Cell) -> bool:
    """Whether some process holds the cell's lock now."""
    try:
        with open(cell.lock, encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return False


def execute(cell: Cell, data_root: str | None,
            on_line: Callable[[str], None] = lambda line: None) -> Outcome:
    """Run one cell in this process on one thread, its output appended to its log file."""
    started, threads = time.perf_counter(), torch.get_num_threads()
    buffer = io.StringIO()
    ran = False

    def log(line: str) -> None:
        print(line, file=buffer)
        on_line(line)

    try:
        torch.set_num_threads(1)  # one cell per core; the same numbers as any other run
        with holding(cell.lock), contextlib.redirect_stdout(buffer), \
                contextlib.redirect_stderr(buffer):
            ran = not cell_done(cell)  # another runner may have finished it meanwhile
            if ran:
                run_cell(cell, data_root, log)
    except BaseException:
        buffer.write(traceback.format_exc())
        raise
    finally:
        torch.set_num_threads(threads)
        if ran or buffer.getvalue():
            previous = cell.log.read_text() if cell.log.is_file() else ""
            atomic_write(cell.log, f"{previous}$ {cell.label} on {socket.gethostname()} pid "
                                   f"{os.getpid()}\n{buffer.getvalue()}\n")
    return Outcome(ran, time.perf_counter() - started)


def _ray_task(cell: Cell, data_root: str | None, *bases: Outcome) -> Outcome:
    """A cell as a Ray task; `bases` (its base model's outcome) only orders it after its base."""
    return execute(cell, data_root)


def first_line(exc: BaseException) -> str:
    """'ValueError: the first line of its message'."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ----------------------------------------------------------------------------------- progress
class Progress:
    """One bar over the cells (done / running / failed, time left); lines when not a terminal."""

    def __init__(self, total: int, cached: int, echo: Callable[[str], None] = print):
        self.total, self.done, self.failed, self.echo = total, cached, 0, echo
        self.bar = tqdm(total=total, initial=cached, unit="cell", smoothing=0,
                        dynamic_ncols=True, disable=not sys.stderr.isatty(),
                        bar_format="study: {percentage:3.0f}%|{bar}| {desc} "
                                   "[{elapsed}, {remaining} left]")
        self.update([])

    def status(self, running: int) -> str:
        return f"done {self.done}/{self.total}, running {running}, failed {self.failed}"

    def update(self, running: Sequence[Cell]) -> None:
        """Redraw; a running cell counts with the share of its rows complete (+1: its end)."""
        partial = sum(max(0, c.session.last_complete() + 1) / (c.rows + 1) for c in running)
        self.bar.n = min(self.total, self.done + self.failed + partial)
        self.bar.set_description_str(self.status(len(running)), refresh=False)
        self.bar.refresh()

    def line(self, text: str) -> None:
        if self.bar.disable:
            self.echo(text)
        else:
            self.bar.write(text)

    def finished(self, cell: Cell, outcome: Outcome) -> None:
        self.done += 1
        what = "ran" if outcome.ran else "cached"
        self.line(f"[{self.done + self.failed:>3}/{self.total}] {what:<6} {cell.label:<48} "
                  f"{cell.rows:>2} rows {outcome.seconds:7.1f}s")

    def fail(self, cell: Cell, why: str) -> None:
        self.failed += 1
        self.line(f"[{self.done + self.failed:>3}/{self.total}] FAILED {cell.label}: {why} "
                  f"(log: {cell.log})")

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Runner:
    """How the cells run; not part of the grid (every choice gives the same numbers)."""

    workers: int | None = None  # local Ray with this many CPUs (None: all); 0: in-process, no Ray
    address: str | None = None  # a Ray cluster ('auto', 'ray://HOST:10001'); None: a local Ray
    max_retries: int = 3  # times a cell whose worker died is run again (Ray)
    data_root: str | None = None  # folder holding MNIST/raw/ (None: $IAPRUNE_DATA, else data/)

    def __post_init__(self):
        if self.workers is not None and self.workers < 0:
            raise StudyError(f"--workers must be >= 0 (0: sequential), got {self.workers}")
        if self.address is not None and self.workers is not None:
            raise StudyError("--workers is for a local Ray; a cluster (--address) runs as many "
                             "cells at once as it has CPUs")
        if self.max_retries < 0:
            raise StudyError(f"--max-retries must be >= 0, got {self.max_retries}")

    @property
    def sequential(self) -> bool:
        return self.workers == 0

    def describe(self) -> str:
        if self.sequential:
            return "sequential, in this process"
        if self.address is not None:
            return f"Ray cluster at {self.address}"
        return f"local Ray, {self.workers or os.cpu_count()} workers"


def connect(runner: Runner) -> Any:
    """Import Ray and start a local Ray (or join the cluster at --address); returns `ray`."""
    try:
        import ray
        from ray.job_config import JobConfig
    except ImportError:
        raise StudyError(f"running cells on Ray needs the ray package ({RAY_INSTALL}); or run "
                         "them one after another with --workers 0") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload
    # Workers import src.study from the repository (the same path on every node of a cluster);
    # Ray Client (ray://) takes the path as the workers' PYTHONPATH instead of a JobConfig.
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if (runner.address or "").startswith("ray://"):
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    else:
        options["job_config"] = JobConfig(code_search_path=[str(ROOT)])
    if runner.address is not None:
        check_reachable(runner.address)
    try:
        if runner.address is None:  # "local": a new Ray, never a cluster `ray start` left here
            ray.init(address="local", num_cpus=runner.workers or os.cpu_count(),
                     include_dashboard=False, **options)
        else:
            ray.init(address=runner.address, **options)
    except ImportError as exc:  # ray:// needs the client extra
        raise StudyError(f"--address {runner.address}: {first_line(exc)}; pip install "
                         '"ray[client]==2.60.0"') from None
    except (ConnectionError, RuntimeError) as exc:
        where = "a local Ray" if runner.address is None else \
            f"the Ray cluster at --address {runner.address}"
        hint = "" if runner.address is None or os.environ.get("RAY_AUTH_MODE") else \
            ("; a cluster started with `ray start` checks a token: export RAY_AUTH_MODE=token "
             "and give this machine the head's ~/.ray/auth_token")
        raise StudyError(f"cannot start or reach {where}: {first_line(exc)}{hint}") from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse a HOST:PORT where nothing listens (Ray itself would wait for minutes)."""
    host, colon, port = address.rpartition(":")
    if "://" in address or not colon or not port.isdigit():
        return  # 'auto' and ray:// addresses fail quickly by themselves
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise StudyError(f"--address {address}: nothing answers there ({exc.strerror or exc}); "
                         "start the head node with `ray start --head` or check the address") \
            from None


def run_sequentially(cells: Sequence[Cell], runner: Runner, progress: Progress,
                     on_done: Callable[[Cell], None]) -> dict[str, str]:
    """Run `cells` one after another in this process; returns {cell id: why it failed}."""
    failures: dict[str, str] = {}
    for cell in cells:
        if cell.base in failures:
            failures[cell.id] = "its base model failed"
            progress.fail(cell, failures[cell.id])
            continue
        progress.update([cell])
        try:
            outcome = execute(cell, runner.data_root, lambda line, c=cell: progress.update([c]))
        except Exception as exc:  # noqa: BLE001 - one failed cell does not stop the others
            failures[cell.id] = first_line(exc)
            progress.fail(cell, failures[cell.id])
        else:
            progress.finished(cell, outcome)
            on_done(cell)
    progress.update([])
    return failures


def run_on_ray(ray: Any, cells: Sequence[Cell], runner: Runner, progress: Progress,
               on_done: Callable[[Cell], None]) -> dict[str, str]:
    """Run `cells` as Ray tasks, each after its base; returns {cell id: why it failed}."""
    # The task by its importable name: under `python -m src.study` this module is __main__,
    # which a worker cannot import.
    function = importlib.import_module("src.study")._ray_task
    task = ray.remote(num_cpus=1, max_retries=runner.max_retries)(function)
    refs: dict[str, Any] = {}
    pending: dict[Any, Cell] = {}
    for cell in cells:  # bases come first, so a cell's base is submitted before it
        ref = task.remote(cell, runner.data_root, *([refs[cell.base]] if cell.base in refs
                                                    else []))
        refs[cell.id], pending[ref] = ref, cell
    failures: dict[str, str] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
        for ref in sorted(ready, key=lambda r: pending[r].track is not None):  # bases first
            cell = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                failures[cell.id] = "its base model failed" if cell.base in failures else \
                    first_line(cause if isinstance(cause, BaseException) else exc)
                progress.fail(cell, failures[cell.id])
            else:
                progress.finished(cell, outcome)
                on_done(cell)
        progress.update([c for c in pending.values() if is_running(c)])
    return failures


def check_cache(plan: Plan) -> None:
    """Refuse cached sessions of other settings now, not after hours of other cells."""
    for cell in plan.cells:
        if cell.session.config.is_file():
            check_cached(cell)


def run_study(plan: Plan, runner: Runner, ray: Any = None,
              on_done: Callable[[Cell], None] = lambda cell: None) -> dict[str, str]:
    """Run every cell the cache does not hold yet (on Ray when `ray` is given); `on_done` is
    called in this process for each cell that finishes. Returns {cell id: why it failed}."""
    check_cache(plan)
    todo = [c for c in plan.cells if not cell_done(c)]
    progress = Progress(len(plan.cells), len(plan.cells) - len(todo))
    try:
        if not todo:
            return {}
        if ray is None:
            return run_sequentially(todo, runner, progress, on_done)
        return run_on_ray(ray, todo, runner, progress, on_done)
    finally:
        progress.close()


# ----------------------------------------------------------------------------------- MLflow
class StudyTracker:
    """The study in MLflow: one parent run (the grid as params, the report as artifacts) with
    one child run per finished cell (its settings as params, its accuracy per schedule row as
    the metric `accuracy`, step = row). The parent's id is kept in OUT/<name>.json, so a resumed
    study logs into the same parent; a cell already logged there is not logged again."""

    def __init__(self, uri: str, experiment: str | None, out: Path, name: str):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise StudyError(f"--mlflow needs MLflow ({first_line(exc)}): "
                             f"{MLFLOW_INSTALL}") from None
        self.Metric, self.Param, self.error = Metric, Param, MlflowException
        self.artifacts = None  # a local sqlite store keeps its artifacts beside its database
        if not uri:
            database = (out / "mlflow.db").resolve()
            database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates no folders
            uri, self.artifacts = f"sqlite:///{database.as_posix()}", \
                (database.parent / "mlartifacts").as_uri()
        elif (database := sqlite_file(uri)) is not None:
            problem = folder_problem(database.parent)  # MLflow would fail to make the folder
            if problem:
                raise StudyError(f"--mlflow {uri}: {problem}")
        self.uri, self.experiment = uri, experiment or name
        with self.errors("cannot open the tracking store"):
            self.client = MlflowClient(tracking_uri=uri)
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.logged: set[str] = set()

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """MLflow's errors become one-line ValueErrors naming the store."""
        try:
            yield
        except self.error as exc:
            raise StudyError(f"MLflow ({self.uri}): {what}: {first_line(exc)}") from None

    def start(self, plan: Plan, run_id: str | None) -> str:
        """Reattach to the parent run `run_id` when this store has it, else create one."""
        c = self.client
        with self.errors("cannot start the study's parent run"):
            run = None
            if run_id is not None:
                with contextlib.suppress(self.error):
                    run = c.get_run(run_id)
            if run is not None and run.info.lifecycle_stage == "active":
                self.parent_id, self.experiment_id = run_id, run.info.experiment_id
                c.update_run(run_id, status="RUNNING")
            else:
                found = c.get_experiment_by_name(self.experiment)
                self.experiment_id = found.experiment_id if found else c.create_experiment(
                    self.experiment, artifact_location=self.artifacts)
                run = c.create_run(self.experiment_id, run_name=plan.study.name,
                                   tags={"study": str(plan.cache.parent.parent)})
                self.parent_id = run.info.run_id
                c.log_batch(self.parent_id, params=[
                    self.Param(k, " ".join(map(str, v)) if isinstance(v, list) else str(v))
                    for k, v in plan.study.to_json().items()])
            children = c.search_runs([self.experiment_id],
                                     f"tags.mlflow.parentRunId = '{self.parent_id}'",
                                     max_results=50_000)
            self.logged = {r.data.tags.get("cell") for r in children
                           if r.info.status == "FINISHED"}
        return self.parent_id

    def cell(self, cell: Cell) -> None:
        """Log a finished cell as a child run (once)."""
        if cell.id in self.logged or not cell_done(cell):
            return
        rows = [read_validation_results(cell.session.final(i) / "validation_results.txt")
                for i in range(cell.rows)]
        now = int(time.time() * 1000)
        params = {"cell": cell.id, "seed": cell.seed, "rows": cell.rows}
        if cell.track is None:
            params["curve"] = "base"
            metrics = [self.Metric(name, float(rows[0][column]), now, 0) for column, name in
                       (("Test_Accuracy", "test_accuracy"), ("Val_Accuracy", "val_accuracy"))]
        else:
            params.update(curve=cell.track.curve, mode=cell.track.mode,
                          variant=cell.variant.name, **cell.variant.settings)
            curve = read_curve(cell)
            metrics = [self.Metric("accuracy", value, now, i) for i, value in enumerate(curve)]
            metrics += [self.Metric("percent_retained", float(r["PercentageRetain"]), now, i)
                        for i, r in enumerate(rows)]
            if len(curve) > 1:
                metrics.append(self.Metric("mean_accuracy", statistics.fmean(curve[1:]), now, 0))
        with self.errors(f"cannot log cell {cell.id}"):
            child = self.client.create_run(
                self.experiment_id, run_name=cell.id,
                tags={"mlflow.parentRunId": self.parent_id, "cell": cell.id,
                      "session": str(cell.root)})
            self.client.log_batch(child.info.run_id, metrics=metrics, params=[
                self.Param(k, str(v)) for k, v in params.items()])
            self.client.set_terminated(child.info.run_id, "FINISHED")
        self.logged.add(cell.id)

    def finish(self, files: Sequence[Path], status: str) -> None:
        """Log the report files on the parent run and close it with `status`."""
        with self.errors("cannot finish the study's parent run"):
            for path in files:
                self.client.log_artifact(self.parent_id, str(path), "report")
            self.client.set_terminated(self.parent_id, status)


# ----------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> tuple[StudyConfig, Runner, argparse.Namespace]:
    """The grid, how to run it, and the other flags (out, report_only, mlflow...)."""
    d = StudyConfig()
    p = argparse.ArgumentParser(
        prog="python -m src.study",
        description="Compare pruning criteria, their variants, seeds, modes and curves: every "
                    "cell an engine session (resumable; OUT/cache/), run on a local Ray, a Ray "
                    "cluster (--address) or sequentially (--workers 0); then tables and plots.")
    add = p.add_argument
    add("--dataset", help=f"{', '.join(DATASETS)} [{d.dataset}]")
    add("--hidden", type=int, nargs="+", metavar="SIZE", help="hidden layer sizes [256 64]")
    add("--retain", metavar="FILE", help="schedule file [retain/retain.txt if its first row is "
                                         "--hidden, else the q=0.8 geometric schedule]")
    add("--seeds", type=int, nargs="+", metavar="SEED", help="one base model per seed [0 1 2]")
    add("--variants", nargs="+", metavar="NAME",
        help=f"variants to compare [all: {', '.join(registry())}]; also 'default' or "
             "criterion/seed_mode/box/bias_fold[/measure]; the default is always included")
    add("--curves", nargs="+", choices=CURVES, help="[no-retrain retrain]")
    add("--modes", nargs="+", choices=MODES, help="[iterative]")
    add("--default-only", nargs="+", choices=CURVES + MODES, metavar="CURVE_OR_MODE",
        help="run only the default variant on these curves or modes (e.g. retrain) [none]")
    add("--rows", type=int, metavar="N", help="run every curve to schedule row N only "
                                              "[no-retrain: all rows; retrain: rows "
                                              f"0..{RETRAIN_LAST_ROW}]")
    add("--epochs", type=int, metavar="N", help="max epochs of base training [engine default]")
    add("--retrain-epochs", type=int, metavar="N",
        help="max retraining epochs per iteration, retrain curve [engine default]")
    add("--name", help=f"file-name prefix of the tables and plots [{d.name}]")
    add("--out", type=Path, default=Path("sessions/study"), metavar="DIR",
        help="tables and plots; sessions in OUT/cache/ [sessions/study]")
    add("--workers", type=int, metavar="N", help="cells at once on a local Ray [all cores]; 0: "
                                                 "one after another in this process, no Ray")
    add("--address", help="run on a Ray cluster: 'auto' (this node joined one with ray start) "
                          "or ray://HOST:10001 [a local Ray]")
    add("--max-retries", type=int, default=Runner.max_retries, metavar="N",
        help=f"retries of a cell whose worker died [{Runner.max_retries}]")
    add("--data-root", metavar="DIR", help="folder holding MNIST/raw/ [$IAPRUNE_DATA, else data/]")
    add("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
        help="log the study in MLflow: a parent run, one child run per cell [off; without a "
             "URI: sqlite OUT/mlflow.db]")
    add("--mlflow-experiment", metavar="NAME", help="MLflow experiment [the study's --name]")
    add("--report-only", action="store_true",
        help="only write the tables and plots from the cache (the grid of OUT/NAME.json, "
             "flags given override it)")
    a = p.parse_args(argv)
    problem = folder_problem(a.out)
    if problem:
        raise StudyError(f"{problem} (--out names the folder for the tables, plots and cache)")
    given = {f.name: getattr(a, f.name) for f in fields(StudyConfig)
             if getattr(a, f.name, None) is not None}
    saved = a.out / f"{given.get('name', d.name)}.json"
    base = d
    if a.report_only and saved.is_file():
        try:
            base = StudyConfig.from_json(json.loads(saved.read_text())["study"], str(saved))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise StudyError(f"{saved}: not a study settings file ({first_line(exc)})") from None
    study = replace(base, **given)
    root = a.data_root or os.environ.get("IAPRUNE_DATA")
    runner = Runner(a.workers, a.address, a.max_retries,
                    str(data_root(root).resolve()) if root else None)
    return study, runner, a


def saved_run_id(settings: Path) -> str | None:
    """The MLflow parent run of an earlier run of the study (None if there is none)."""
    try:
        return json.loads(settings.read_text()).get("mlflow_run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the study (or only its reports) and print where the outputs are."""
    study, runner, args = parse_args(argv)
    plan = make_plan(study, args.out)
    if args.report_only:
        for path in write_reports(plan, args.out):
            print(f"wrote {path}")
        return 0
    check_cache(plan)
    todo = [c for c in plan.cells if not cell_done(c)]
    if todo and runner.address is None:  # a missing dataset: one line now, not one per cell
        load_dataset(study.dataset, runner.data_root)
    tracker = None if args.mlflow is None else \
        StudyTracker(args.mlflow, args.mlflow_experiment, args.out, study.name)
    settings = args.out / f"{study.name}.json"
    ray = None if runner.sequential or not todo else connect(runner)
    try:
        run_id = saved_run_id(settings)
        if tracker is not None:
            run_id = tracker.start(plan, run_id)
            for cell in plan.cells:  # cells that finished before (or without --mlflow)
                tracker.cell(cell)
        atomic_write(settings, json.dumps({"version": __version__, "study": study.to_json(),
                                           **({"mlflow_run_id": run_id} if run_id else {})},
                                          indent=2) + "\n")
        print(f"study: {len(plan.cells)} cells ({len(study.seeds)} seeds, "
              f"{len(plan.variants)} variants, {len(plan.tracks)} tracks), "
              f"{len(plan.cells) - len(todo)} cached; {runner.describe()}; sessions in "
              f"{plan.cache}", flush=True)
        started = time.perf_counter()
        failures = run_study(plan, runner, ray, tracker.cell if tracker else lambda cell: None)
        print(f"cells done in {time.perf_counter() - started:.0f}s", flush=True)
    except KeyboardInterrupt:
        if tracker is not None and tracker.parent_id is not None:
            tracker.finish([], "KILLED")
        print("\ninterrupted; run the same command again to resume (finished cells and "
              "iterations are kept)", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    finally:
        if ray is not None:
            ray.shutdown()
    written = write_reports(plan, args.out)
    for path in written:
        print(f"wrote {path}")
    if tracker is not None:
        tracker.finish(written, "FAILED" if failures else "FINISHED")
        print(f"mlflow: parent run {tracker.parent_id} (experiment {tracker.experiment!r}) in "
              f"{tracker.uri}")
    if failures:
        print(f"error: {len(failures)} of {len(plan.cells)} cells failed (their logs are in "
              f"{plan.cache / 'logs'}); run again to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
