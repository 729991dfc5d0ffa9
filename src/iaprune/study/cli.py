"""Studies: a grid of pruning sessions (criteria and their variants x seeds x modes x curves) run
as Ray tasks on this machine or a Ray cluster, or one after another in-process; then tables and
plots of the curves.

    python -m iaprune.study [--dataset mnist] [--arch mlp|lenet5|cnn3|FILE.json] [--hidden 256 64]
        [--seeds 0 1 2] [--variants NAME ...]
        [--curves no-retrain retrain] [--modes iterative one-shot] [--default-only retrain ...]
        [--workers N | --address auto|ray://HOST:10001] [--out sessions/study] [--report-only]

For every seed one base model is trained once (a one-row session) and shared by every other cell
of that seed (--base-model), so that only the pruning settings differ. Each cell is an ordinary
engine session under OUT/cache/<dataset>-<network>/seed<s>/<track>/<variant>/ (the network:
the mlp's hidden sizes, '256-64', else its name and units, 'lenet5-20-50-500'):
- curve `no-retrain`: --retrain-epochs 0, the test accuracy right after each pruning step;
  curve `retrain`: the engine's retraining, the test accuracy after it;
- mode `iterative` (re-score every pruned model) or `one-shot` (score the base model once).
The session folders are the cache: a finished cell is read, not run; an unfinished one resumes
after its last complete iteration. On Ray a cell is a task on one CPU and one thread (N cores run
N cells) that waits for its seed's base model and is retried when its worker dies; every random
stream is derived from (seed, iteration), so the numbers equal a sequential run's, cell by cell.

`--search` runs iaprune.study.search instead of the grid: Ray Tune and Optuna's TPE sampler pick
one retention factor q per prunable group (hidden layer, conv layer) for the smallest model within
--max-accuracy-drop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path

from iaprune import __version__, cli
from iaprune.data import DATASETS, data_root
from iaprune.files import atomic_write, folder_problem
from iaprune.records import COLUMN, read_validation_results
from iaprune.study.grid import (
    CURVES,
    MODES,
    RETRAIN_LAST_ROW,
    Cell,
    Plan,
    StudyConfig,
    StudyError,
    cell_done,
    make_plan,
    read_curve,
    registry,
    write_network,
)
from iaprune.study.report import write_reports
from iaprune.study.runner import Runner, check_cache, connect, first_line, run_cells
from iaprune.study.search import SearchConfig, load_records, make_search, run_search
from iaprune.study.search_report import write_search_report
from iaprune.tracking import sqlite_file

MLFLOW_INSTALL = "pip install mlflow-skinny==3.17.2 SQLAlchemy==2.1.9 alembic==1.20.1"


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
        rows = [read_validation_results(cell.session.validation(i)) for i in range(cell.rows)]
        now = int(time.time() * 1000)
        params = {"cell": cell.id, "seed": cell.seed, "rows": cell.rows}
        if cell.track is None:
            params["curve"] = "base"
            metrics = [self.Metric(key, float(rows[0][COLUMN[key]]), now, 0)
                       for key in ("test_accuracy", "val_accuracy")]
        else:
            params.update(curve=cell.track.curve, mode=cell.track.mode,
                          variant=cell.variant.name, **cell.variant.settings)
            curve = read_curve(cell)
            metrics = [self.Metric("accuracy", value, now, i) for i, value in enumerate(curve)]
            metrics += [self.Metric("percent_retained", float(r[COLUMN["percent_retained"]]),
                                    now, i) for i, r in enumerate(rows)]
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
GRID_ONLY = ("retain", "variants", "curves", "modes", "default_only", "rows", "mlflow",
             "mlflow_experiment")
SEARCH_ONLY = ("trials", "max_accuracy_drop", "curve", "q_range", "sampler_seed")


def parse_args(argv: list[str] | None
               ) -> tuple[StudyConfig | SearchConfig, Runner, argparse.Namespace]:
    """The grid (or with --search the search), how to run it, and the other flags (out,
    report_only, mlflow...)."""
    d, s = StudyConfig(), SearchConfig()
    p = argparse.ArgumentParser(
        prog="python -m iaprune.study",
        description="Compare pruning criteria, their variants, seeds, modes and curves: every "
                    "cell an engine session (resumable; OUT/cache/), run on a local Ray, a Ray "
                    "cluster (--address) or sequentially (--workers 0); then tables and plots. "
                    "With --search: Ray Tune and Optuna pick per-layer retention factors q.")
    add = p.add_argument
    add("--dataset", help=f"{', '.join(DATASETS)}, or a path to your own data (an image "
                          f"folder, .npz, .csv or .parquet) [{d.dataset}]")
    add("--target", metavar="COLUMN", help="label column of a .csv or .parquet table")
    add("--image-size", type=int, metavar="N",
        help="image folder: resize every image to N x N [the most common size]")
    add("--arch", metavar="PRESET_OR_FILE",
        help="architecture: a preset (mlp, lenet5, cnn3) or a JSON spec file, as in "
             "iaprune.iterativeprune [mlp]")
    add("--hidden", type=int, nargs="+", metavar="SIZE",
        help="hidden layer sizes of --arch mlp [256 64]")
    add("--retain", metavar="FILE", help="schedule file, its first row the network's units "
                                         "[retain/retain.txt if its first row is, else the "
                                         "q=0.8 geometric schedule]")
    add("--seeds", type=int, nargs="+", metavar="SEED",
        help="one base model per seed [0 1 2; --search: 0]")
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
    add("--name", help=f"file-name prefix of the tables and plots [{d.name}; --search: "
                       f"{s.name}]")
    add("--out", type=Path, default=Path("sessions/study"), metavar="DIR",
        help="tables and plots; sessions in OUT/cache/ [sessions/study]")
    add("--workers", type=int, metavar="N", help="cells (trials) at once on a local Ray [all "
                                                 "cores]; 0: one after another in this "
                                                 "process, no Ray")
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
        help="only write the tables and plots from the cache (the settings of OUT/NAME.json, "
             "flags given override them)")
    search = p.add_argument_group(
        "search", "--search: Ray Tune (Optuna's TPE sampler) picks one retention factor q per "
                  "prunable group (hidden layer, conv layer) to find the smallest model whose "
                  "validation accuracy stays within --max-accuracy-drop of the base model's; "
                  "compared with q = 0.8")
    add = search.add_argument
    add("--search", action="store_true", help="run the search instead of the grid")
    add("--trials", type=int, metavar="N", help=f"completed trials [{s.trials}]")
    add("--max-accuracy-drop", type=float, metavar="POINTS",
        help=f"validation accuracy points below the base model's [{s.max_accuracy_drop:g}]")
    add("--curve", choices=CURVES, help=f"[{s.curve}]")
    add("--q-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help=f"each q on the 0.01 grid in this range [{' '.join(map(str, s.q_range))}]")
    add("--sampler-seed", type=int, metavar="N", help=f"seed of the TPE sampler [{s.sampler_seed}]")
    a = p.parse_args(argv)
    kind, other = (SearchConfig, GRID_ONLY) if a.search else (StudyConfig, SEARCH_ONLY)
    wrong = [n for n in other if getattr(a, n) is not None]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        raise StudyError(f"{flag} is for the grid, not --search" if a.search else
                         f"{flag} needs --search")
    problem = folder_problem(a.out)
    if problem:
        raise StudyError(f"{problem} (--out names the folder for the tables, plots and cache)")
    given = {f.name: getattr(a, f.name) for f in fields(kind)
             if getattr(a, f.name, None) is not None}
    default = kind()
    saved = a.out / f"{given.get('name', default.name)}.json"
    key = "search" if a.search else "study"
    if a.report_only and saved.is_file():
        try:
            default = kind.from_json(json.loads(saved.read_text())[key], str(saved))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise StudyError(f"{saved}: not a {key} settings file ({first_line(exc)})") \
                from None
    if given.get("arch", default.arch) != default.arch and "hidden" not in given:
        given["hidden"] = None  # the default's (or saved) mlp sizes are not another network's
    config = replace(default, **given)
    # resolved: Tune runs each trial in a folder of its own
    runner = Runner(a.workers, a.address, a.max_retries,
                    str(data_root(a.data_root).resolve()))
    return config, runner, a


def saved_run_id(settings: Path, plan: Plan) -> str | None:
    """The MLflow parent run of an earlier run of the study (None if there is none, or if that
    run pruned another network: its cells are not this study's)."""
    try:
        saved = json.loads(settings.read_text())
        grid = StudyConfig.from_json(saved["study"], str(settings))
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, StudyError):
        return None
    same = (grid.data, grid.arch, grid.hidden) == (plan.study.data, plan.study.arch,
                                                   plan.study.hidden) \
        and saved.get("spec", plan.network.spec) == plan.network.spec
    return saved.get("mlflow_run_id") if same else None


def main(argv: list[str] | None = None) -> int:
    """Run the study (or only its reports) and print where the outputs are."""
    study, runner, args = parse_args(argv)
    if isinstance(study, SearchConfig):
        return search_main(study, runner, args.out, args.report_only)
    plan = make_plan(study, args.out)
    if args.report_only:
        for path in write_reports(plan, args.out):
            print(f"wrote {path}")
        return 0
    check_cache(plan.cells)
    todo = [c for c in plan.cells if not cell_done(c)]
    if todo and runner.address is None:  # a missing dataset: one line now, not one per cell
        study.data.load(runner.data_root)
    tracker = None if args.mlflow is None else \
        StudyTracker(args.mlflow, args.mlflow_experiment, args.out, study.name)
    settings = args.out / f"{study.name}.json"
    ray = None if runner.sequential or not todo else connect(runner)
    try:
        run_id = saved_run_id(settings, plan)
        write_network(plan.cache, plan.network)
        if tracker is not None:
            run_id = tracker.start(plan, run_id)
            for cell in plan.cells:  # cells that finished before (or without --mlflow)
                tracker.cell(cell)
        atomic_write(settings, json.dumps({"version": __version__, "study": study.to_json(),
                                           "spec": plan.network.spec,
                                           **({"mlflow_run_id": run_id} if run_id else {})},
                                          indent=2) + "\n")
        print(f"study: {len(plan.cells)} cells ({len(study.seeds)} seeds, "
              f"{len(plan.variants)} variants, {len(plan.tracks)} tracks), "
              f"{len(plan.cells) - len(todo)} cached; {runner.describe()}; sessions in "
              f"{plan.cache}", flush=True)
        started = time.perf_counter()
        failures = run_cells(plan.cells, runner, ray,
                             tracker.cell if tracker else lambda cell: None)
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


def search_main(config: SearchConfig, runner: Runner, out: Path, report_only: bool) -> int:
    """Run the search (or only its report) and print where the outputs are."""
    search = make_search(config, out)
    if report_only:
        for path in write_search_report(search, load_records(search)):
            print(f"wrote {path}")
        return 0
    started = time.perf_counter()
    try:
        trials, failed = run_search(search, runner)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume (finished trials and "
              "iterations are kept)", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    print(f"search done in {time.perf_counter() - started:.0f}s", flush=True)
    for path in write_search_report(search, trials):
        print(f"wrote {path}")
    if failed:
        print(f"error: {len(failed)} failed ({'; '.join(f'{k}: {v}' for k, v in failed.items())}"
              f"); logs in {search.cache / 'logs'}; run again to retry", file=sys.stderr)
        return 1
    return 0


def entry(argv: list[str] | None = None) -> int:
    """The console entry point: main() with expected errors as one line, exit code 2."""
    return cli.run(main, argv)
