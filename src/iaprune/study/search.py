"""A search over per-layer retention factors q: Ray Tune runs the trials, Optuna's TPE sampler
picks each trial's q's, to find the smallest model whose validation accuracy stays within
--max-accuracy-drop points of the base model's; the fixed q = 0.8 runs beside it as the
reference.

    python -m iaprune.study --search [--arch mlp|lenet5|cnn3|FILE.json] [--trials 16]
        [--max-accuracy-drop 1] [--curve no-retrain] [--q-range 0.5 0.95] [--seeds 0]
        [--workers N | --address ...] [--out DIR]

A trial is one engine session per seed, pruned from the seed's base model (the grid's
OUT/cache/<dataset>-<network>/seed<s>/base, shared) along the geometric schedule of its q's (one
per prunable group: hidden layer or conv layer; iaprune.groups) down to one unit per group, with
the engine's max_accuracy_drop: it stops at
the first iteration whose validation accuracy falls more than D below the base model's. The
trial's objective (minimised) is the parameter count of the smallest iteration before that stop,
on every seed: validation accuracy chooses, test accuracy is only reported. Each finished
iteration is reported to Tune. The q's lie on a 0.01 grid and name the trial's session folder
(seed<s>/search-<curve>/q0.81-0.65), so a trial run before is read from the cache.

The search's memory is an Optuna study in OUT/<name>/optuna.journal: a re-run continues it up
to --trials completed trials and first retries the trials a killed run left unfinished (their
sessions resume). Tune's files of the last run are in OUT/<name>/tune/. With --workers 0 the
trials run one after another in this process through Optuna alone, without Ray.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from iaprune import __version__
from iaprune.checkpoint import atomic_write
from iaprune.records import COLUMN, read_validation_results
from iaprune.retain import geometric_schedule
from iaprune.study.grid import (
    CURVE_COLUMN,
    Cell,
    Network,
    StudyConfig,
    StudyData,
    StudyError,
    Track,
    Variant,
    base_cells,
    cache_folder,
    cell_done,
    check_cached,
    check_network,
    default_variant,
    network_flags,
    pruning_config,
    registry,
    resolve_network,
    training_settings,
    write_network,
)
from iaprune.study.runner import (
    Job,
    LockHeld,
    Progress,
    Runner,
    check_cache,
    connect,
    execute,
    first_line,
    holding,
    run_cells,
    run_in_turn,
)

SEARCH_INSTALL = 'pip install "ray[tune]==2.60.0" optuna==5.0.0'
OPTUNA_INSTALL = "pip install optuna==5.0.0"
REFERENCE_Q = 0.8  # the fixed retention factor every group gets in the reference trial
STEP = 0.01  # the q grid: equal q's share one session folder
STUDY = "search"  # the Optuna study's name in its journal
METRIC = "objective"  # what a trial reports to Tune: parameters of its smallest model


@dataclass(frozen=True)
class SearchConfig:
    """A search (saved to OUT/<name>.json); the command line maps onto it."""

    dataset: str = "mnist"  # mnist, fashion-mnist, digits, or a path to your own data
    arch: str = "mlp"  # a preset (mlp, lenet5, cnn3) or a JSON spec file (its absolute path)
    hidden: tuple[int, ...] | None = None  # the mlp's hidden sizes (None: 256 64; others: None)
    target: str | None = None  # your table's label column
    image_size: int | None = None  # your image folder: every image resized to N x N
    seeds: tuple[int, ...] = (0,)  # every trial runs on each seed's base model
    curve: str = "no-retrain"  # no-retrain (prune only) or retrain (retrain after each step)
    trials: int = 16  # completed trials the search runs (the q = 0.8 reference on top)
    max_accuracy_drop: float = 1.0  # points of validation accuracy below the base model's
    q_range: tuple[float, float] = (0.5, 0.95)  # each q on the 0.01 grid in this range
    sampler_seed: int = 0  # seed of Optuna's TPE sampler
    epochs: int | None = None  # max epochs of base training (None: engine default)
    retrain_epochs: int | None = None  # max retraining epochs, retrain curve (None: default)
    name: str = "search"  # OUT/<name>.md, .png, .json and the state folder OUT/<name>/

    def __post_init__(self):
        for name in ("seeds", "q_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        arch, hidden = network_flags(self.arch, self.hidden)
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "hidden", hidden)
        # the checks the grid makes of the same settings
        StudyConfig(dataset=self.dataset, arch=self.arch, hidden=self.hidden,
                    target=self.target, image_size=self.image_size, seeds=self.seeds,
                    curves=(self.curve,), epochs=self.epochs,
                    retrain_epochs=self.retrain_epochs, name=self.name)
        object.__setattr__(self, "dataset", self.data.dataset)  # a path: absolute
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise StudyError(f"--trials must be an integer >= 1, got {self.trials!r}")
        if not (isinstance(self.max_accuracy_drop, int | float)
                and 0 <= self.max_accuracy_drop < math.inf):
            raise StudyError("--max-accuracy-drop must be a number >= 0 (percentage points), "
                             f"got {self.max_accuracy_drop!r}")
        low, high = (self.q_range + (math.nan, math.nan))[:2]
        if len(self.q_range) != 2 or not 0 < low < high < 1 or \
                any(abs(v / STEP - round(v / STEP)) > 1e-6 for v in self.q_range):
            raise StudyError(f"--q-range needs LOW HIGH with 0 < LOW < HIGH < 1, multiples of "
                             f"{STEP}, got {' '.join(map(str, self.q_range))}")

    @property
    def data(self) -> StudyData:
        return StudyData(self.dataset, self.target, self.image_size)

    def to_json(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_json(cls, values: dict[str, Any], source: str) -> SearchConfig:
        """Rebuild from OUT/<name>.json; an unknown key is an error naming the file."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise StudyError(f"{source}: unknown settings {sorted(unknown)}")
        return cls(**values)

    def command(self, out: Path) -> str:
        """The command line that runs this search into `out` (the main settings always, the
        others where they are not the defaults)."""
        default, words = SearchConfig(), ["python -m iaprune.study --search"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (value != getattr(default, f.name) or f.name in (
                    "dataset", "curve", "trials", "max_accuracy_drop")):
                shown = " ".join(map(str, value)) if isinstance(value, tuple) else \
                    f"{value:g}" if isinstance(value, float) else \
                    shorter(Path(value)) if f.name == "arch" and "/" in value else str(value)
                words.append(f"--{f.name.replace('_', '-')} {shown}")
        return " ".join([*words, f"--out {shorter(out)}"])

    def differences(self, saved: SearchConfig) -> list[str]:
        """The settings other than --trials that differ from an earlier run's."""
        return [f"{f.name}: saved {getattr(saved, f.name)!r}, wanted {getattr(self, f.name)!r}"
                for f in fields(self) if f.name != "trials"
                and getattr(saved, f.name) != getattr(self, f.name)]


def shorter(path: Path) -> Path:
    """`path` relative to the working folder when it lies inside it (a report's command line)."""
    here = Path.cwd().resolve()
    return path.resolve().relative_to(here) if path.resolve().is_relative_to(here) else path


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Row:
    """One iteration of a trial's session, as the search reads it."""

    iteration: int  # schedule row (0 = the base model)
    hidden: str  # units kept per layer, '98-20'
    params: int
    val: float  # validation accuracy (%): what the search judges by
    test: float  # test accuracy (%) on the trial's curve: only reported


def read_row(cell: Cell, i: int) -> Row:
    """Row i of a cell's session (complete)."""
    values = read_validation_results(cell.session.validation(i))
    return Row(i, str(values[COLUMN["hidden"]]), int(values[COLUMN["params"]]),
               float(values[COLUMN["val_accuracy"]]), float(values[CURVE_COLUMN[cell.track.curve]]))


def smallest_within(rows: Sequence[Row], drop: float) -> int:
    """Index of the smallest row within `drop` points of row 0's validation accuracy: the row
    before the first that falls further (where the engine stops), else the last row."""
    for i, row in enumerate(rows):
        if row.val < rows[0].val - drop:
            return i - 1
    return len(rows) - 1


@dataclass(frozen=True)
class Found:
    """What a trial found: its rows per seed and the smallest row within the drop on all."""

    q: tuple[float, ...]
    rows: Mapping[int, Sequence[Row]]  # seed -> its session's rows 0.. (up to the stop)
    drop: float

    @property
    def index(self) -> int:
        """The smallest schedule row within the drop on every seed."""
        return min(smallest_within(r, self.drop) for r in self.rows.values())

    def at(self, i: int) -> list[Row]:
        return [r[i] for r in self.rows.values()]

    @property
    def params(self) -> int:
        """The objective: parameters of the model at `index` (the same on every seed)."""
        return max(r.params for r in self.at(self.index))

    @property
    def hidden(self) -> str:
        return self.at(self.index)[0].hidden

    @property
    def val(self) -> float:
        """Mean over seeds of the validation accuracy at `index`."""
        return statistics.fmean(r.val for r in self.at(self.index))

    @property
    def test(self) -> float:
        return statistics.fmean(r.test for r in self.at(self.index))

    @property
    def base(self) -> Row:
        """The first seed's base model (row 0)."""
        return next(iter(self.rows.values()))[0]

    @property
    def stopped(self) -> bool:
        """Whether some seed's session stopped on the drop (else every row is within it)."""
        return any(smallest_within(r, self.drop) < len(r) - 1 for r in self.rows.values())


def q_text(q: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in q)


# ----------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Search:
    """What a search runs: its base models, its trials' cells (by q's) and its state folder."""

    config: SearchConfig
    network: Network
    out: Path  # absolute
    cache: Path  # OUT/cache/<dataset>-<network>/, shared with the grid
    training: Mapping[str, Any]
    bases: tuple[Cell, ...]
    variant: Variant  # the engine's default criterion and fold

    @property
    def names(self) -> tuple[str, ...]:
        """The search space's parameters: one q per prunable group, 'q_h1', 'q_h2' for the
        mlp's hidden layers, 'q_g1', 'q_g2', ... for the groups of another network."""
        letter = "h" if self.network.mlp else "g"
        return tuple(f"q_{letter}{i}" for i in range(1, len(self.network.units) + 1))

    @property
    def reference(self) -> tuple[float, ...]:
        return (REFERENCE_Q,) * len(self.network.units)

    @property
    def state(self) -> Path:
        """OUT/<name>/: the Optuna journal, Tune's files, the lock."""
        return self.out / self.config.name

    @property
    def journal(self) -> Path:
        return self.state / "optuna.journal"

    def in_range(self, q: Sequence[float]) -> bool:
        low, high = self.config.q_range
        return all(low - 1e-9 <= v <= high + 1e-9 for v in q)

    def q_of(self, params: Mapping[str, float]) -> tuple[float, ...]:
        """The q's of a trial's parameters, on the grid (0.8200000000000001 -> 0.82)."""
        return tuple(round(round(float(params[n]) / STEP) * STEP, 6) for n in self.names)

    def params_of(self, q: Sequence[float]) -> dict[str, float]:
        return {n: round(v, 2) for n, v in zip(self.names, q, strict=True)}

    def cells(self, q: Sequence[float]) -> tuple[Cell, ...]:
        """The trial's sessions, one per seed: the geometric schedule of its q's to the floor,
        stopped by the engine at the drop."""
        c, q, first = self.config, tuple(round(v, 2) for v in q), list(self.network.units)
        # enough exponents t for every group to reach 1 unit (round(h * q**t) < 1.5)
        steps = max(math.ceil(math.log(max(h, 1.5) / 1.5) / -math.log(v))
                    for h, v in zip(first, q, strict=True)) + 2
        schedule = tuple(geometric_schedule(first, list(q), iterations=steps))
        track = Track(c.curve, "iterative", len(schedule), (self.variant.name,))
        folder = f"search-{c.curve}/q{q_text(q).replace(' ', '-')}"
        return tuple(Cell(b.seed, track, self.variant, pruning_config(
            dict(self.training), self.variant, b, "iterative", c.curve, c.retrain_epochs,
            c.max_accuracy_drop), self.cache, f"seed{b.seed}/{folder}", schedule, b.id,
            f" q {q_text(q)}") for b in self.bases)

    def found(self, q: Sequence[float]) -> Found | None:
        """What the trial of `q` found, read from its sessions (None: some seed has no row)."""
        rows = {cell.seed: complete_rows(cell) for cell in self.cells(q)}
        if any(not r for r in rows.values()):
            return None
        return Found(tuple(q), rows, self.config.max_accuracy_drop)


def complete_rows(cell: Cell) -> list[Row]:
    """A session's complete rows up to the first beyond the drop (rows a run with a larger
    drop added after it are not this search's)."""
    rows: list[Row] = []
    for i in range(cell.session.last_complete() + 1):
        rows.append(read_row(cell, i))
        if rows[-1].val < rows[0].val - cell.config.max_accuracy_drop:
            break
    return rows


def make_search(config: SearchConfig, out: Path) -> Search:
    """The search of `config`, its sessions under OUT/cache/."""
    c = config
    network = resolve_network(c.data, c.arch, c.hidden)
    if all(n == 1 for n in network.units):
        every = "layer" if network.mlp else "group"
        raise StudyError(f"{network.flag}: every {every} has 1 unit already; nothing to prune")
    cache = cache_folder(out, c.data, network)
    check_network(cache, network)
    training = training_settings(c.data, network, cache, c.epochs)
    first = geometric_schedule(list(network.units))[0]
    return Search(c, network, out.resolve(), cache, training,
                  tuple(base_cells(training, c.seeds, first, cache)),
                  default_variant(registry(network.measure), network.measure))


# ----------------------------------------------------------------------------------- a trial
def run_trial(search: Search, q: Sequence[float], data_root: str | None,
              report: Callable[[dict[str, Any]], None] = lambda metrics: None) -> Found:
    """Run (or read from the cache) the trial's session on every seed, in this process on one
    thread; `report` gets every iteration up to the stop, with the objective so far."""
    rows: dict[int, list[Row]] = {}
    for cell in search.cells(q):
        if cell.session.config.is_file():
            check_cached(cell)
        mine = rows.setdefault(cell.seed, [])

        def send(line: str = "", cell: Cell = cell, mine: list[Row] = mine) -> None:
            while (not mine or mine[-1].val >= mine[0].val - cell.config.max_accuracy_drop) \
                    and len(mine) <= cell.session.last_complete():
                mine.append(read_row(cell, len(mine)))
                found = Found(tuple(q), rows, search.config.max_accuracy_drop)
                report({METRIC: found.params, "seed": cell.seed, "iteration": len(mine) - 1,
                        "params": mine[-1].params, "val_accuracy": mine[-1].val,
                        "hidden": mine[-1].hidden})

        execute(cell, data_root, send)
        send()  # a cached session's rows, and the last ones
    return Found(tuple(q), rows, search.config.max_accuracy_drop)


def tune_trial(config: dict[str, Any], search: Search, data_root: str | None) -> None:
    """A trial as Ray Tune's function trainable (runs in a Ray worker)."""
    from ray import tune

    run_trial(search, search.q_of(config), data_root, tune.report)


# ----------------------------------------------------------------------------------- progress
def trials_progress(total: int, done: int) -> Progress:
    """The bar over the search's trials, its note the best so far."""
    return Progress("search", "trial", total, done)


def best_note(progress: Progress) -> Callable[[Found], None]:
    """A function that shows each finished trial to the bar: its note is the best so far."""
    best: list[Found] = []

    def see(found: Found) -> None:
        if not best or found.params < best[0].params:
            best[:] = [found]
            progress.note = f", best {found.params:,} params"

    return see


def trial_line(found: Found, seconds: float) -> str:
    stop = f", stopped at row {found.index + 1}" if found.stopped else ", no stop"
    return f"q {q_text(found.q)}: {found.hidden:>9} {found.params:>9,} params, val " \
           f"{found.val:6.2f}% (row {found.index}{stop}) {seconds:7.1f}s"


def trial_failure(q: Sequence[float], why: str) -> str:
    return f"q {q_text(q)}: {why}"


# ----------------------------------------------------------------------------------- Optuna
def load_optuna() -> Any:
    """Import Optuna (one line naming the pip command when it is missing); quiet logging."""
    try:
        import optuna
    except ImportError as exc:
        raise StudyError(f"--search needs Optuna ({first_line(exc)}): {OPTUNA_INSTALL}") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def load_tune() -> Any:
    """Import Ray Tune and its Optuna searcher (one line naming the pip command)."""
    # Tune's own console tables off (our bar instead), and Ctrl+C a KeyboardInterrupt as in
    # the grid (run again to resume), not Tune's graceful stop.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as exc:
        raise StudyError(f"--search on Ray needs Ray Tune and Optuna ({first_line(exc)}): "
                         f"{SEARCH_INSTALL}; or run the trials one after another with "
                         "--workers 0 (Optuna only)") from None
    return tune, OptunaSearch


def sampler(search: Search, optuna: Any) -> Any:
    """Optuna's TPE sampler: random q's for the first trials (a third of them, 3 to 10), then
    q's where the model of the smallest objective values is more likely than the rest."""
    startup = min(10, max(3, search.config.trials // 3))
    return optuna.samplers.TPESampler(seed=search.config.sampler_seed, n_startup_trials=startup)


def space(search: Search, optuna: Any) -> dict[str, Any]:
    low, high = search.config.q_range
    return {n: optuna.distributions.FloatDistribution(low, high, step=STEP)
            for n in search.names}


def journal(search: Search, optuna: Any) -> Any:
    """The storage of the search's Optuna study: OUT/<name>/optuna.journal (a file that Optuna
    appends to; created when new)."""
    search.state.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(search.journal)))


def open_study(search: Search, optuna: Any, storage: Any) -> Any:
    """The search's Optuna study in `storage` (created when new)."""
    return optuna.create_study(storage=storage, study_name=STUDY, direction="minimize",
                               sampler=sampler(search, optuna), load_if_exists=True)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the search's Optuna study."""

    number: int
    q: tuple[float, ...]
    state: str  # COMPLETE, FAIL, RUNNING
    reference: bool  # the q = 0.8 reference, added as a known point


def records(search: Search, study: Any) -> list[TrialRecord]:
    """Every trial that got its q's (waiting ones have none yet), in order."""
    return [TrialRecord(t.number, search.q_of(t.params), t.state.name,
                        bool(t.user_attrs.get("reference")))
            for t in study.get_trials(deepcopy=False) if t.params]


def searched(study: Any, optuna: Any) -> int:
    """Completed trials that count toward --trials (not the reference)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.COMPLETE,)) if not t.user_attrs.get("reference"))


def retry_unfinished(search: Search, study: Any, optuna: Any) -> int:
    """Fail the trials a killed run left running, and queue them and the failed ones (whose
    q's never completed since) again, so that they run first; returns how many were queued."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    done = {search.q_of(t.params) for t in trials if t.state == state.COMPLETE}
    queued = {search.q_of(t.system_attrs["fixed_params"]) for t in trials
              if t.state == state.WAITING and "fixed_params" in t.system_attrs}
    again = {}
    for t in trials:
        if t.state == state.RUNNING:
            study.tell(t.number, state=state.FAIL)
        if t.state in (state.RUNNING, state.FAIL) and t.params:
            q = search.q_of(t.params)
            if q not in done | queued:
                again.setdefault(q, t)
    for q, t in again.items():
        study.enqueue_trial(search.params_of(q), user_attrs=dict(t.user_attrs))
    return len(again)


def add_reference(search: Search, study: Any, optuna: Any, found: Found) -> None:
    """Give the sampler the q = 0.8 reference as a known point (once; when in the range)."""
    if not search.in_range(search.reference) or any(
            t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)):
        return
    study.add_trial(optuna.trial.create_trial(
        value=found.params, params=search.params_of(search.reference),
        distributions=space(search, optuna), user_attrs={"reference": True}))


@contextlib.contextmanager
def search_lock(search: Search) -> Iterator[None]:
    """Hold OUT/<name>/lock while the search runs: one driver per Optuna journal."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(holding(search.state / "lock", wait=False))
        except LockHeld as held:
            raise StudyError(f"another search runs in {search.state} ({held}); "
                             "wait for it, or use another --name or --out") from None
        yield


# ----------------------------------------------------------------------------------- running
def trial_jobs(search: Search, storage: Any, optuna: Any, count: int, runner: Runner,
               progress: Progress) -> Iterator[Job]:
    """`count` trials for `run_in_turn`: Optuna asks (when the last trial is done), the trial
    runs, Optuna is told."""
    study, see = open_study(search, optuna, storage), best_note(progress)
    for _ in range(count):
        trial = study.ask(fixed_distributions=space(search, optuna))
        q, found = search.q_of(trial.params), []

        def run(q=q, found=found) -> str:
            started = time.perf_counter()
            found.append(run_trial(search, q, runner.data_root))
            see(found[0])
            return trial_line(found[0], time.perf_counter() - started)

        def failure(why: str, trial=trial, q=q) -> str:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return trial_failure(q, why)

        yield Job(q, run, failure, done=lambda trial=trial, found=found: study.tell(
            trial, found[0].params))


def run_on_tune(search: Search, storage: Any, optuna: Any, count: int, runner: Runner,
                progress: Progress) -> dict[tuple[float, ...], str]:
    """`count` trials with Ray Tune (Ray is up), one CPU each, Optuna's TPE as the search
    algorithm on the search's journal. Returns {q's: why the trial failed}."""
    tune, OptunaSearch = load_tune()
    failures: dict[tuple[float, ...], str] = {}
    started: dict[str, float] = {}
    see = best_note(progress)

    class Events(tune.Callback):
        """The bar follows Tune's trials (this runs in the driver)."""

        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.perf_counter()
            progress.started()

        def on_trial_complete(self, iteration, trials, trial, **info):
            q = search.q_of(trial.config)
            found = search.found(q)
            if found is None:
                progress.fail(trial_failure(q, "no rows in its sessions"))
                failures[q] = "no rows in its sessions"
            else:
                see(found)
                progress.finished(trial_line(found, time.perf_counter() - started[trial.trial_id]))

        def on_trial_error(self, iteration, trials, trial, **info):
            q = search.q_of(trial.config)
            error = trial.get_pickled_error()
            cause = getattr(error, "cause", None) or error
            failures[q] = first_line(cause) if isinstance(cause, BaseException) else \
                "failed (see Tune's files in " + str(search.state / "tune") + ")"
            progress.fail(trial_failure(q, failures[q]))

    searcher = OptunaSearch(space=space(search, optuna), metric=METRIC, mode="min",
                            sampler=sampler(search, optuna), storage=storage,
                            study_name=STUDY)
    shutil.rmtree(search.state / "tune", ignore_errors=True)  # the last run's only
    trainable = tune.with_resources(tune.with_parameters(
        tune_trial, search=search, data_root=runner.data_root), {"cpu": 1})
    limit = None if runner.address is not None else runner.workers or os.cpu_count()
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=searcher, num_samples=count, max_concurrent_trials=limit,
        reuse_actors=True),  # a warm worker (torch imported) runs the next trial
        run_config=tune.RunConfig(storage_path=str(search.state), name="tune", verbose=0,
                                  callbacks=[Events()],
                                  failure_config=tune.FailureConfig(
                                      max_failures=runner.max_retries)))
    tuner.fit()
    return failures


def best(search: Search, trials: Sequence[TrialRecord]) -> Found | None:
    """The searched trial with the fewest parameters within the drop (ties: higher val)."""
    found = [f for t in trials if t.state == "COMPLETE" and not t.reference
             and (f := search.found(t.q)) is not None]
    return min(found, key=lambda f: (f.params, -f.val), default=None)


def settings_file(search: Search) -> Path:
    """OUT/<name>.json: the search's settings (--report-only reads them)."""
    return search.out / f"{search.config.name}.json"


def check_settings(search: Search) -> None:
    """Refuse to continue a search of other settings (only --trials may change)."""
    path = settings_file(search)
    if not (path.is_file() and search.journal.is_file()):
        return
    try:
        values = json.loads(path.read_text())
        saved = SearchConfig.from_json(values["search"], str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StudyError(f"{path}: not a search settings file ({first_line(exc)})") from None
    diffs = search.config.differences(saved)
    if values.get("spec", search.network.spec) != search.network.spec:  # a spec file edited
        diffs.append(f"spec of --arch {search.config.arch}: saved another network")
    if diffs:
        raise StudyError(f"{search.state} holds a search of other settings ({'; '.join(diffs)})"
                         "; use another --name or --out, or delete that folder and "
                         f"{path.name} to start over")


def run_search(search: Search, runner: Runner, echo: Callable[[str], None] = print
               ) -> tuple[list[TrialRecord], dict[str, str]]:
    """Run the base models and the reference (as cells), then as many trials as --trials asks
    beyond the completed ones. Returns the study's trials and {what failed: why}."""
    optuna = load_optuna()
    if not runner.sequential:
        load_tune()  # a missing package: one line before anything runs
    check_settings(search)
    first = [*search.bases, *search.cells(search.reference)]
    check_cache(first)
    todo = [c for c in first if not cell_done(c)]
    if todo and runner.address is None:  # a missing dataset: one line now
        search.config.data.load(runner.data_root)
    with search_lock(search):
        write_network(search.cache, search.network)
        atomic_write(settings_file(search), json.dumps(
            {"version": __version__, "search": search.config.to_json(),
             "spec": search.network.spec}, indent=2) + "\n")
        storage = journal(search, optuna)
        study = open_study(search, optuna, storage)
        queued = retry_unfinished(search, study, optuna)
        done = searched(study, optuna)
        count = max(0, search.config.trials - done)
        ray = None if runner.sequential or not (todo or count) else connect(runner)
        try:
            echo(f"search: {search.config.trials} trials ({done} done"
                 f"{f', {queued} to retry' if queued else ''}) + the q = {REFERENCE_Q} "
                 f"reference; q per {'hidden layer' if search.network.mlp else 'prunable group'}"
                 f" in [{q_text(search.config.q_range)}]; "
                 f"{runner.describe()}; sessions in {search.cache}")
            failures = run_cells(first, runner, ray)
            failed = {c.label: why for c in first if (why := failures.get(c.id))}
            if failed:
                return records(search, study), failed
            add_reference(search, study, optuna, search.found(search.reference))
            if count:
                progress = trials_progress(search.config.trials, done)
                try:
                    if ray is None:
                        failures = run_in_turn(trial_jobs(search, storage, optuna, count, runner,
                                                          progress), progress)
                    else:
                        failures = run_on_tune(search, storage, optuna, count, runner, progress)
                finally:
                    progress.close()
                failed = {f"trial q {q_text(q)}": why for q, why in failures.items()}
        finally:
            if ray is not None:
                ray.shutdown()
        return records(search, study), failed


def load_records(search: Search) -> list[TrialRecord]:
    """The trials of the search in OUT/<name>/ (for --report-only)."""
    if not search.journal.is_file():
        raise StudyError(f"{search.journal}: no such file; run the search first (without "
                         "--report-only)")
    optuna = load_optuna()
    return records(search, open_study(search, optuna, journal(search, optuna)))
