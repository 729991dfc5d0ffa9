"""Side-by-side study of the pruning criteria (issue 8): which significance picks better neurons?

    .venv/bin/python benchmarks/criteria.py [--dataset mnist] [--seeds 0 1 2]
        [--variants NAME ...] [--curves no-retrain retrain oneshot] [--rows N]
        [--out benchmarks/results/] [--report-only]

For every seed, one base model is trained once (a one-row schedule) and shared by every variant
through --base-model, so that only the criterion differs. Each (seed, curve, variant) cell is one
engine session (src.iterativeprune run in-process) under `<out>/cache/<dataset>-<hidden>/`:

- no-retrain: iterative mode with --retrain-epochs 0; test accuracy right after each pruning step
  (NoRetrain_Test_Accuracy), every schedule row by default;
- retrain: iterative mode with the engine's default retraining; test accuracy after retraining,
  rows 0..14 by default (11/3 on the default 256-64 schedule);
- oneshot: --mode one-shot with default retraining, the default variant only, compared with its
  iterative retrain curve (rows as for retrain).

The session folders are the cache: a finished cell is read, not run; an interrupted cell resumes
after its last complete iteration (the engine's own resume), so stopping and re-running the same
command loses at most one iteration per cell. A cached session made with other settings (e.g. an
engine default changed since) is an error naming the folder, never silently mixed in.

Writes criteria_no_retrain.md/.png, criteria_retrain.md/.png and oneshot_vs_iterative.md/.png
into --out: mean ± sample standard deviation over seeds, best mean per row in bold.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from matplotlib.ticker import NullLocator
from tqdm.auto import tqdm

try:  # run as a script: benchmarks/ is on sys.path and _setup puts the repo root there too
    from _setup import ROOT, markdown_table
except ModuleNotFoundError:  # imported as a module from the repository root (tests)
    from benchmarks._setup import ROOT, markdown_table

from src import cli, iterativeprune
from src.checkpoint import atomic_write
from src.concatenate import read_validation_results
from src.data import DATASETS
from src.iterativeprune import PruneConfig, Session
from src.model import hidden_label
from src.plotting import COLORS, log_axis, new_figure, save_figure
from src.retain import ScheduleRow, geometric_schedule, read_schedule, write_schedule

CURVES = ("no-retrain", "retrain", "oneshot")
RETRAIN_LAST_ROW = 14  # 11/3 hidden neurons on the default 256-64 q=0.8 schedule
SUMMARY_ROWS = 8  # the no-retrain summary averages prune rows 1..8
DEFAULT_RETAIN = ROOT / "retain" / "retain.txt"
# Per curve: the engine mode, the accuracy column read, and what the table's title says.
CURVE_MODE = {"no-retrain": "iterative", "retrain": "iterative", "oneshot": "one-shot"}
CURVE_COLUMN = {"no-retrain": "NoRetrain_Test_Accuracy", "retrain": "Test_Accuracy",
                "oneshot": "Test_Accuracy"}
CURVE_TITLE = {"no-retrain": "test accuracy right after pruning, no retraining",
               "retrain": "test accuracy after pruning + retraining"}
# Settings a cached base session must share with this study (nothing else affects iteration 0).
BASE_FIELDS = ("dataset", "hidden", "activation", "epochs", "patience", "lr", "batch_size",
               "shift", "label_smoothing", "lr_schedule", "precision", "seed", "val_size")
# Settings never compared with a cached session: the base model's path may move with the repo.
UNCOMPARED = ("base_model", "max_accuracy_drop")
# Settings that only act while retraining: not compared for a no-retrain cell (retrain_epochs 0).
RETRAIN_ONLY = ("retrain_patience", "retrain_lr", "retrain_shift", "retrain_label_smoothing",
                "retrain_batch_size", "distill", "teacher", "temperature")
# Engine flags a fresh session is started with (every other setting is the engine default).
ENGINE_FLAGS = ("dataset", "hidden", "mode", "criterion", "seed_mode", "box", "bias_fold",
                "measure", "epochs", "retrain_epochs", "seed", "base_model")
# Issue 8's no-retrain targets for the default criterion on MNIST 784-256-64-10 (hidden ->
# (target %, the thesis's prune-without-retrain %)).
MNIST_TARGETS = {"164-41": (97.5, 92.0), "131-33": (95.5, 71.3), "105-26": (91.5, 43.8)}
PALETTE = ("#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


# ------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One pruning setting compared in the study: a criterion and its engine options."""

    name: str  # the column name in the tables
    criterion: str  # a name in src.significance.CRITERIA
    seed_mode: str = "per_output"  # interval-adjoint seeding (baselines: unused)
    box: str = "data"  # interval-adjoint input box (baselines: unused)
    bias_fold: str = "linear"  # how removed neurons are folded into the next layer
    measure: str = "pre"  # interval-adjoint: neurons read before or after the activation

    @property
    def settings(self) -> dict[str, str]:
        """The engine settings this variant fixes."""
        return {"criterion": self.criterion, "seed_mode": self.seed_mode, "box": self.box,
                "bias_fold": self.bias_fold, "measure": self.measure}

    @property
    def key(self) -> str:
        """Cache folder name: the settings that matter (so a renamed variant keeps its cache)."""
        if self.criterion == "interval_adjoint":
            post = "-post" if self.measure == "post" else ""
            return f"interval_adjoint-{self.seed_mode}-{self.box}{post}-fold_{self.bias_fold}"
        return f"{self.criterion}-fold_{self.bias_fold}"

    def describe(self) -> str:
        """One line for the tables' legend."""
        if self.criterion == "interval_adjoint":
            return (f"interval_adjoint, {self.seed_mode} seeding, {self.box} box, "
                    f"{self.measure}-activation, bias fold {self.bias_fold}")
        return f"{self.criterion}, bias fold {self.bias_fold}"


def registry() -> dict[str, Variant]:
    """The study's variants by name; baselines use the engine's default bias fold."""
    engine = PruneConfig()
    ia = [Variant("ia-per_output", "interval_adjoint", "per_output", "data", "linear"),
          Variant("ia-per_output-meanfold", "interval_adjoint", "per_output", "data", "mean"),
          Variant("ia-per_output-nofold", "interval_adjoint", "per_output", "data", "none"),
          Variant("ia-sum", "interval_adjoint", "sum", "data", "linear"),
          Variant("ia-sum-nofold", "interval_adjoint", "sum", "data", "none"),
          Variant("ia-per_output-samples", "interval_adjoint", "per_output", "samples", "linear"),
          Variant("ia-per_output-post", "interval_adjoint", "per_output", "data", "linear",
                  "post")]
    baselines = [Variant(name, name, engine.seed_mode, engine.box, engine.bias_fold,
                         engine.measure)
                 for name in ("magnitude", "taylor", "apoz", "fpgm", "random")]
    return {v.name: v for v in ia + baselines}


def parse_variant(name: str, known: dict[str, Variant]) -> Variant:
    """A registry name, or an ad-hoc `criterion/seed_mode/box/bias_fold[/measure]` spec
    (checked)."""
    if name in known:
        return known[name]
    parts = name.split("/")
    if len(parts) not in (4, 5):
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(known)} or write "
                         "criterion/seed_mode/box/bias_fold[/measure] (e.g. "
                         "interval_adjoint/sum/data/mid or interval_adjoint/sum/data/linear/post)")
    variant = Variant(name, *parts)
    PruneConfig(**variant.settings)  # names an unknown criterion, seeding, box or fold
    return variant


def default_variant(variants: dict[str, Variant]) -> Variant:
    """The variant with the engine's default settings (added as 'default' if none has them)."""
    engine = PruneConfig()
    wanted = {k: getattr(engine, k) for k in ("criterion", "seed_mode", "box", "bias_fold",
                                              "measure")}
    for variant in variants.values():
        if variant.settings == wanted:
            return variant
    return Variant("engine-default", **wanted)


# ------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class StudyConfig:
    """Every setting of a study run; the command line maps onto it."""

    dataset: str = "mnist"  # mnist, fashion-mnist or digits
    data_root: str | None = None  # folder holding MNIST/raw/ (None: engine rule or ../shared/data)
    hidden: tuple[int, ...] = (256, 64)  # hidden sizes of the base model
    retain: str | None = None  # schedule file (None: retain/retain.txt if it fits, else q=0.8)
    seeds: tuple[int, ...] = (0, 1, 2)  # one base model per seed
    variants: tuple[str, ...] = ()  # variant names (empty: all); the default is always included
    curves: tuple[str, ...] = CURVES  # which curves to run and report
    rows: int | None = None  # last schedule row of every curve (None: per-curve defaults)
    epochs: int | None = None  # max epochs of base training (None: engine default)
    retrain_epochs: int | None = None  # max retraining epochs, retrain/oneshot (None: default)
    out: Path = Path("benchmarks/results")  # tables and plots; sessions under out/cache/
    verbose: bool = False  # pass the engine's own output through instead of logging it

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "out", Path(self.out))
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds needs one or more distinct seeds, got {list(self.seeds)}")
        unknown = [c for c in self.curves if c not in CURVES]
        if unknown or not self.curves:
            raise ValueError(f"unknown curves {unknown}; choose from {', '.join(CURVES)}")
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"--rows must be >= 1 (row 0 is the unpruned base), got {self.rows}")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise ValueError("--retrain-epochs must be >= 1 (the no-retrain curve uses 0)")

    @property
    def cache(self) -> Path:
        """Where this dataset/architecture's sessions live."""
        return self.out / "cache" / f"{self.dataset}-{hidden_label(list(self.hidden))}"


@dataclass(frozen=True)
class Cell:
    """One engine session of the study: a seed's base model, or a (seed, curve, variant)."""

    seed: int
    curve: str  # "base" or one of CURVES
    variant: Variant | None  # None for the base model
    config: PruneConfig  # the settings the session runs with
    root: Path  # the session folder
    rows: int  # number of schedule rows it runs (row 0 = the base)

    @property
    def label(self) -> str:
        """'seed 0 retrain    magnitude' (padded for aligned progress lines)."""
        return f"seed {self.seed} {self.curve:<10} {self.variant.name if self.variant else ''}"

    @property
    def session(self) -> Session:
        """The engine's view of the cell's session folder."""
        return Session(self.root, self.config.mode)


@dataclass(frozen=True)
class Plan:
    """What the study runs: the schedule, the variants and the cells (bases first)."""

    study: StudyConfig
    schedule: tuple[ScheduleRow, ...]  # the full schedule; each curve uses a prefix
    variants: dict[str, Variant]  # the compared variants, in table order
    default: Variant  # the engine-default variant (oneshot runs it; summaries compare to it)
    cells: tuple[Cell, ...] = field(default=())

    def rows(self, curve: str) -> int:
        """Number of schedule rows of `curve` (--rows overrides the per-curve default)."""
        last = len(self.schedule) - 1
        if self.study.rows is not None:
            return min(self.study.rows, last) + 1
        return last + 1 if curve == "no-retrain" else min(RETRAIN_LAST_ROW, last) + 1


def load_schedule(study: StudyConfig) -> list[ScheduleRow]:
    """--retain, else retain/retain.txt when its first row is --hidden, else q=0.8 geometric."""
    hidden = list(study.hidden)
    if study.retain is not None:
        return read_schedule(study.retain, hidden)
    if DEFAULT_RETAIN.is_file() and list(read_schedule(DEFAULT_RETAIN)[0].neurons) == hidden:
        return read_schedule(DEFAULT_RETAIN)
    return geometric_schedule(hidden)


def base_checkpoint(study: StudyConfig, seed: int) -> Path:
    """The shared base model of `seed` (iteration 0 of the seed's base session)."""
    return (study.cache / f"seed{seed}" / "base").resolve() / "iterative_pruning" / "0" / \
        "prune_w_retrain" / "best_model.pth"


def make_plan(study: StudyConfig) -> Plan:
    """Cells for every seed: the base, then no-retrain, retrain and oneshot cells."""
    schedule = load_schedule(study)
    if len(schedule) < 2:
        raise ValueError("the schedule needs at least one pruning row after the base row")
    known = registry()
    chosen = [parse_variant(n, known) for n in (study.variants or tuple(known))]
    variants = {v.name: v for v in chosen}
    default = default_variant({**known, **variants})
    variants = {default.name: default, **variants}  # the default is always compared, first
    plan = Plan(study, tuple(schedule), variants, default)
    training = {"dataset": study.dataset, "hidden": study.hidden}
    if study.epochs is not None:
        training["epochs"] = study.epochs
    cells = [Cell(s, "base", None, PruneConfig(**training, seed=s),
                  study.cache / f"seed{s}" / "base", 1) for s in study.seeds]
    curves = list(study.curves)
    if "oneshot" in curves and "retrain" not in curves:
        curves.insert(0, "retrain")  # one-shot is compared with the default's iterative curve
    for curve in ("no-retrain", "retrain", "oneshot"):
        if curve not in curves:
            continue
        wanted = [default] if curve == "oneshot" or curve not in study.curves else \
            list(variants.values())
        retrain = {"retrain_epochs": 0} if curve == "no-retrain" else (
            {} if study.retrain_epochs is None else {"retrain_epochs": study.retrain_epochs})
        for s in study.seeds:
            for v in wanted:
                config = PruneConfig(**training, **v.settings, **retrain, seed=s,
                                     mode=CURVE_MODE[curve],
                                     base_model=str(base_checkpoint(study, s)))
                cells.append(Cell(s, curve, v, config,
                                  study.cache / f"seed{s}" / curve / v.key, plan.rows(curve)))
    return replace(plan, cells=tuple(cells))


# ------------------------------------------------------------------------------- running cells
def engine_argv(config: PruneConfig) -> list[str]:
    """Engine flags that start a fresh session with `config`'s study settings."""
    argv: list[str] = []
    for name in ENGINE_FLAGS:
        value = getattr(config, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return argv


def _same_rows(a: Sequence[ScheduleRow], b: Sequence[ScheduleRow]) -> bool:
    return [(r.iteration, r.neurons) for r in a] == [(r.iteration, r.neurons) for r in b]


def check_cached(cell: Cell, schedule: Sequence[ScheduleRow]) -> None:
    """Refuse a cached session of other settings; fit its schedule copy to the rows wanted.

    A session whose schedule is a shorter or longer prefix of the wanted one (another --rows)
    gets the wanted prefix written into its retain/retain.txt, so the engine's resume runs
    exactly the missing rows; finished iterations are kept.
    """
    session = cell.session
    saved = PruneConfig.from_json(json.loads(session.config.read_text()), str(session.config))
    ignored = UNCOMPARED + (RETRAIN_ONLY if cell.config.retrain_epochs == 0 else ())
    names = BASE_FIELDS if cell.curve == "base" else \
        [f.name for f in fields(PruneConfig) if f.name not in ignored]
    diffs = [f"{n}: cached {getattr(saved, n)!r}, wanted {getattr(cell.config, n)!r}"
             for n in names if getattr(saved, n) != getattr(cell.config, n)]
    if diffs:
        raise ValueError(f"{cell.root} was run with other settings ({'; '.join(diffs)}); "
                         "delete that folder to recompute it, or use another --out")
    stored, wanted = read_schedule(session.retain), list(schedule[: cell.rows])
    common = min(len(stored), len(wanted))
    if not _same_rows(stored[:common], wanted[:common]):
        raise ValueError(f"{session.retain} is another schedule than the study's; delete "
                         f"{cell.root} to recompute it, or use another --out")
    if cell.curve != "base":
        check_same_base(cell)
    if len(stored) != len(wanted) and session.last_complete() < len(wanted) - 1:
        write_schedule(wanted, session.retain)


def check_same_base(cell: Cell) -> None:
    """Refuse a cached session whose iteration 0 is not the seed's current base model."""
    base = Path(cell.config.base_model).parent / "validation_results.txt"
    mine = cell.session.final(0) / "validation_results.txt"
    if not (base.is_file() and mine.is_file()):
        return
    a, b = read_validation_results(base), read_validation_results(mine)
    if any(a[c] != b[c] for c in ("Test_Accuracy", "Val_Accuracy", "Params")):
        raise ValueError(f"{cell.root} was pruned from another base model than "
                         f"{cell.config.base_model} (retrained since?); delete that folder to "
                         "recompute it")


def cell_done(cell: Cell) -> bool:
    """Whether the cell's session holds every row it needs."""
    return cell.session.config.is_file() and cell.session.last_complete() >= cell.rows - 1


class _Capture(io.StringIO):
    """Collects the engine's output and reports each of its iteration lines ('[ 3/22] ...')."""

    def __init__(self, on_iteration: Callable[[str], None]):
        super().__init__()
        self.on_iteration, self.pending = on_iteration, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.startswith("["):
                self.on_iteration(line.split("]")[0] + "]")
        return super().write(text)


def run_engine(argv: list[str], log: Path | None,
               on_iteration: Callable[[str], None] = lambda line: None) -> int:
    """src.iterativeprune.main(argv) in-process; its output goes to `log` (None: the console).

    `on_iteration` gets the '[i/last]' of each iteration the engine finishes (progress).
    """
    if log is None:
        return cli.run(iterativeprune.main, argv)
    buffer = _Capture(on_iteration)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = cli.run(iterativeprune.main, argv)
    finally:
        previous = log.read_text() if log.is_file() else ""
        atomic_write(log, previous + f"$ engine {' '.join(argv)}\n{buffer.getvalue()}\n")
    return code


def run_cell(cell: Cell, plan: Plan,
             on_iteration: Callable[[str], None] = lambda line: None) -> bool:
    """Run (or resume) one cell's session; False if it was complete already (cached)."""
    session = cell.session
    if session.config.is_file():
        check_cached(cell, plan.schedule)
        if cell_done(cell):
            return False
        argv = ["--session", str(cell.root)]
    else:
        retain = plan.study.cache / "schedules" / f"rows{cell.rows}.txt"
        if not retain.is_file():
            write_schedule(plan.schedule[: cell.rows], retain)
        argv = [*engine_argv(cell.config), "--session", str(cell.root), "--retain", str(retain)]
    if plan.study.data_root is not None:
        argv += ["--data-root", plan.study.data_root]
    log = None if plan.study.verbose else \
        plan.study.cache / "logs" / f"seed{cell.seed}-{cell.curve}-" \
        f"{cell.variant.key if cell.variant else 'base'}.log"
    code = run_engine([*argv, "--quiet"], log, on_iteration)
    if code == cli.EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        last = log.read_text().strip().splitlines()[-1] if log else "see above"
        raise ValueError(f"{' '.join(cell.label.split())}: the engine failed ({last}); "
                         f"its output is in {log or 'the console above'}")
    return True


def run_study(plan: Plan, echo: Callable[[str], None] = print) -> float:
    """Run every cell not yet cached, one progress line per cell; returns the seconds spent."""
    for cell in plan.cells:  # a stale cache fails now, not after hours of other cells
        if cell.session.config.is_file():
            check_cached(cell, plan.schedule)
    started = time.perf_counter()
    bar = tqdm(total=len(plan.cells), unit="cell", desc="criteria study", dynamic_ncols=True,
               disable=not sys.stderr.isatty())
    try:
        for k, cell in enumerate(plan.cells, start=1):
            t0 = time.perf_counter()
            bar.set_postfix_str(" ".join(cell.label.split()))
            ran = run_cell(cell, plan, lambda done, cell=cell: bar.set_postfix_str(
                f"{' '.join(cell.label.split())} {done}"))
            line = (f"[{k:>3}/{len(plan.cells)}] {cell.label:<44} {cell.rows:>2} rows  "
                    f"{'ran' if ran else 'cached':<6} {time.perf_counter() - t0:7.1f}s  "
                    f"(study {time.perf_counter() - started:7.0f}s)")
            if bar.disable:
                echo(line)
            else:
                bar.write(line)
            bar.update()
    finally:
        bar.close()
    return time.perf_counter() - started


# ------------------------------------------------------------------------------- aggregation
@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (std None when n = 1)."""

    mean: float
    std: float | None
    n: int

    def text(self, expected_n: int) -> str:
        """'97.12 ± 0.08', '97.12 (n=1)', or with '(n=2)' when fewer seeds than expected."""
        body = f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"
        return body + (f" (n={self.n})" if self.n != expected_n or self.n == 1 else "")


def aggregate(values: Sequence[float]) -> Stat | None:
    """Mean ± sample standard deviation (n-1) of `values`; None when empty."""
    values = [float(v) for v in values]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                len(values))


def read_curve(cell: Cell) -> list[float]:
    """The cell's accuracy per schedule row, for its complete rows 0..k (empty if none)."""
    session, column, values = cell.session, CURVE_COLUMN[cell.curve], []
    for i in range(cell.rows):
        path = session.final(i) / "validation_results.txt"
        if not path.is_file():
            break
        values.append(float(read_validation_results(path)[column]))
    return values


Results = dict[str, dict[str, dict[int, list[float]]]]  # curve -> variant -> seed -> per row


def collect(plan: Plan) -> Results:
    """Every cached cell's curve (whatever is complete, also from an unfinished study)."""
    results: Results = {}
    for cell in plan.cells:
        if cell.curve != "base":
            curve = read_curve(cell)
            if curve:
                results.setdefault(cell.curve, {}).setdefault(cell.variant.name, {})[
                    cell.seed] = curve
    return results


def row_stats(per_seed: dict[int, list[float]], rows: int) -> list[Stat | None]:
    """Per schedule row: the statistic over the seeds that reached that row."""
    return [aggregate([c[i] for c in per_seed.values() if len(c) > i]) for i in range(rows)]


def pooled(a: Stat, b: Stat) -> float | None:
    """sqrt((s_a² + s_b²) / 2), the spread used for 'within one standard deviation'."""
    if a.std is None or b.std is None:
        return None
    return math.sqrt((a.std ** 2 + b.std ** 2) / 2)


# ------------------------------------------------------------------------------- reports
def _row_label(row: ScheduleRow) -> list[str]:
    return [hidden_label(list(row.neurons)), f"{row.percent:.2f}"]


def _column_name(plan: Plan, variant: str) -> str:
    return f"{variant} (default)" if variant == plan.default.name else variant


def bold_best(stats: Sequence[Stat | None], n: int) -> list[str]:
    """Cell texts of one table row; the highest means (to 2 decimals) in bold, unless all tie."""
    means = [round(s.mean, 2) for s in stats if s is not None]
    best = max(means) if means and len(set(means)) > 1 else None
    return ["–" if s is None else f"**{s.text(n)}**" if round(s.mean, 2) == best else s.text(n)
            for s in stats]


def curve_table(plan: Plan, curve: str, results: Results) -> str:
    """Markdown: one row per schedule row, one column per variant, best mean in bold."""
    rows, n = plan.rows(curve), len(plan.study.seeds)
    stats = {v: row_stats(results.get(curve, {}).get(v, {}), rows) for v in plan.variants}
    table = [[str(i), *_row_label(plan.schedule[i]), *bold_best([s[i] for s in stats.values()],
                                                                 n)] for i in range(rows)]
    header = ["row", "hidden", "% retained", *(_column_name(plan, v) for v in plan.variants)]
    return markdown_table(header, table)


def variant_legend(plan: Plan) -> str:
    """What each column is."""
    lines = [f"- `{v.name}`{' (the engine default)' if v is plan.default else ''}: "
             f"{v.describe()}" for v in plan.variants.values()]
    lines.append("- Baselines (magnitude, taylor, apoz, fpgm, random) run with the engine's "
                 f"default bias fold ({PruneConfig().bias_fold}); seeding and box do not "
                 "apply to them.")
    return "\n".join(lines)


def _seed_averages(per_seed: dict[int, list[float]], first: int, last: int) -> list[float]:
    """Per seed: the mean over rows first..last (seeds that reached `last` only)."""
    return [statistics.fmean(c[first:last + 1]) for c in per_seed.values() if len(c) > last]


def ranked_means(plan: Plan, results: Results, curve: str, last: int) -> list[str]:
    """Markdown lines: every variant's mean over rows 1..last of `curve`, ranked."""
    span = (f"rows 1..{last} ({hidden_label(list(plan.schedule[1].neurons))} .. "
            f"{hidden_label(list(plan.schedule[last].neurons))})")
    ranked = []
    for name in plan.variants:
        stat = aggregate(_seed_averages(results.get(curve, {}).get(name, {}), 1, last))
        if stat is not None:
            ranked.append((name, stat))
    ranked.sort(key=lambda item: -item[1].mean)
    n = len(plan.study.seeds)
    lines = [f"### Summary: mean {curve} test accuracy over {span}", "",
             "Per seed the mean over these rows, then mean ± std over seeds "
             "(only seeds with all these rows).", ""]
    lines.append(markdown_table(["rank", "variant", "mean %"],
                                [[k, _column_name(plan, name), s.text(n)]
                                 for k, (name, s) in enumerate(ranked, start=1)]))
    if ranked:
        place = next((k for k, (name, _) in enumerate(ranked, 1) if name == plan.default.name),
                     None)
        verdict = ("not measured" if place is None else
                   "the best" if place == 1 else f"rank {place} of {len(ranked)}")
        lines += ["", f"The default `{plan.default.name}` is **{verdict}** on this measure."]
    return lines


def no_retrain_summary(plan: Plan, results: Results) -> str:
    """Mean over prune rows 1..8 per variant (ranked), and the issue's MNIST targets."""
    lines = ranked_means(plan, results, "no-retrain",
                         min(SUMMARY_ROWS, plan.rows("no-retrain") - 1))
    targets = target_lines(plan, results)
    return "\n".join(lines + ([""] + targets if targets else [])) + "\n"


def target_lines(plan: Plan, results: Results) -> list[str]:
    """Issue 8's no-retrain targets of the default criterion (MNIST, 256-64 only)."""
    if plan.study.dataset != "mnist":
        return []
    stats = row_stats(results.get("no-retrain", {}).get(plan.default.name, {}),
                      plan.rows("no-retrain"))
    table = []
    for i, row in enumerate(plan.schedule[: plan.rows("no-retrain")]):
        label = hidden_label(list(row.neurons))
        if label in MNIST_TARGETS and stats[i] is not None:
            target, thesis = MNIST_TARGETS[label]
            table.append([label, stats[i].text(len(plan.study.seeds)), f">= {target}",
                          "yes" if stats[i].mean >= target else "**no**", thesis])
    if not table:
        return []
    return [f"Issue 8 targets for the default (`{plan.default.name}`), no retraining:", "",
            markdown_table(["hidden", "default mean %", "target %", "met (mean)", "thesis %"],
                           table)]


def retrain_summary(plan: Plan, results: Results) -> str:
    """Per row: the default against the best baseline, within one (pooled) std or not."""
    rows, n = plan.rows("retrain"), len(plan.study.seeds)
    curve = results.get("retrain", {})
    baselines = [v.name for v in plan.variants.values() if v.criterion != "interval_adjoint"]
    lines = ["### Summary: the default against the best baseline (retrain curve)", ""]
    if not baselines:
        return "\n".join(lines + ["No baseline was run (see --variants).", ""])
    default = row_stats(curve.get(plan.default.name, {}), rows)
    others = {b: row_stats(curve.get(b, {}), rows) for b in baselines}
    table, failing, unknown = [], [], []
    for i in range(1, rows):
        candidates = [(b, s[i]) for b, s in others.items() if s[i] is not None]
        if default[i] is None or not candidates:
            continue
        best, stat = max(candidates, key=lambda item: item[1].mean)
        gap, spread = stat.mean - default[i].mean, pooled(default[i], stat)
        within = None if spread is None else gap <= spread
        if within is None:
            unknown.append(i)
        elif not within:
            failing.append(i)
        table.append([i, hidden_label(list(plan.schedule[i].neurons)), default[i].text(n),
                      f"{best} {stat.text(n)}", f"{gap:+.2f}",
                      "–" if spread is None else f"{spread:.2f}",
                      {None: "n/a (n=1)", True: "yes", False: "**no**"}[within]])
    lines += ["Gap = best baseline mean − default mean (percentage points); within one std: "
              "gap <= sqrt((s_default² + s_baseline²) / 2) (sample stds over seeds).", "",
              markdown_table(["row", "hidden", f"{plan.default.name} %", "best baseline %",
                              "gap", "pooled std", "within one std"], table), ""]
    if not table:
        lines.append("No row has both the default and a baseline yet.")
    elif failing:
        lines.append(f"The default is **not** within one std of the best baseline at rows "
                     f"{', '.join(map(str, failing))}.")
    elif unknown:
        lines.append(f"No row fails, but rows {', '.join(map(str, unknown))} have a single seed.")
    else:
        lines.append("The default is within one std of the best baseline at **every** row.")
    lines += [""] + ranked_means(plan, results, "retrain", rows - 1)
    return "\n".join(lines) + "\n"


def header_lines(plan: Plan, title: str, what: str) -> list[str]:
    """Title and the settings every table shares."""
    s = plan.study
    seeds = " ".join(map(str, s.seeds))
    return [f"# {title}", "",
            f"Dataset {s.dataset}, hidden {hidden_label(list(s.hidden))}, seeds {seeds}; {what}. "
            f"Cells: mean ± sample standard deviation over seeds (n={len(s.seeds)} unless "
            "marked); best mean per row in bold (none where all tie). One base model per seed "
            "is trained once and shared by every variant, so only the criterion differs.", ""]


def write_curve_report(plan: Plan, curve: str, results: Results) -> Path:
    """criteria_<curve>.md: the table, the variant legend and the curve's summary."""
    what = {"no-retrain": "iterative pruning with `--retrain-epochs 0`; test accuracy right "
                          "after each pruning step (NoRetrain_Test_Accuracy)",
            "retrain": "iterative pruning with the engine's default retraining; test accuracy "
                       "after retraining (Test_Accuracy)"}[curve]
    summary = no_retrain_summary if curve == "no-retrain" else retrain_summary
    text = "\n".join([*header_lines(plan, f"Pruning criteria: {CURVE_TITLE[curve]}", what),
                      curve_table(plan, curve, results), "", variant_legend(plan), "",
                      summary(plan, results)])
    return atomic_write(plan.study.out / f"criteria_{curve.replace('-', '_')}.md", text)


def write_oneshot_report(plan: Plan, results: Results) -> Path:
    """oneshot_vs_iterative.md: the default variant's one-shot and iterative retrain curves."""
    rows, n, name = plan.rows("oneshot"), len(plan.study.seeds), plan.default.name
    iterative = results.get("retrain", {}).get(name, {})
    oneshot = results.get("oneshot", {}).get(name, {})
    it_stats, os_stats = row_stats(iterative, rows), row_stats(oneshot, rows)
    table = []
    for i in range(rows):
        paired = [oneshot[s][i] - iterative[s][i] for s in oneshot
                  if s in iterative and len(oneshot[s]) > i and len(iterative[s]) > i]
        diff = aggregate(paired)
        table.append([str(i), *_row_label(plan.schedule[i]), *bold_best([it_stats[i],
                                                                         os_stats[i]], n),
                      "–" if diff is None else diff.text(n)])
    text = "\n".join([
        *header_lines(plan, f"One-shot vs iterative pruning ({name})",
                      "test accuracy after retraining with the engine's default settings; "
                      "one-shot scores the base model once and prunes it to each row"),
        markdown_table(["row", "hidden", "% retained", "iterative %", "one-shot %",
                        "one-shot − iterative (paired per seed)"], table), ""])
    return atomic_write(plan.study.out / "oneshot_vs_iterative.md", text)


# ------------------------------------------------------------------------------- plots
def _style(plan: Plan, index: int, name: str) -> dict:
    variant = plan.variants.get(name)
    is_default = variant is plan.default
    return {"color": PALETTE[index % len(PALETTE)], "linewidth": 2.6 if is_default else 1.4,
            "linestyle": "-" if variant is None or variant.criterion == "interval_adjoint"
            else "--", "zorder": 4 if is_default else 2}


def plot_curves(plan: Plan, series: dict[str, dict[int, list[float]]], rows: int, title: str,
                path: Path, reference: str | None = None) -> Path:
    """Mean accuracy per series with a ±std band against % retained (x decreasing, log scale).

    With `reference`, a lower panel shows each series' mean minus the reference's mean.
    """
    x_all = [row.percent for row in plan.schedule[:rows]]
    fig, axes = new_figure(2 if reference else 1, 1, width=9.5, height=9.0 if reference else 5.5,
                           sharex=True, **({"gridspec_kw": {"height_ratios": [3, 2]}}
                                           if reference else {}))
    ref = row_stats(series.get(reference, {}), rows) if reference else None
    for index, (name, per_seed) in enumerate(series.items()):
        stats = row_stats(per_seed, rows)
        points = [(x_all[i], s) for i, s in enumerate(stats) if s is not None]
        if not points:
            continue
        style = _style(plan, index, name)
        label = _column_name(plan, name) if name in plan.variants else name
        xs = [x for x, _ in points]
        means = [s.mean for _, s in points]
        axes[0].plot(xs, means, marker="o", markersize=3, label=label, **style)
        lo = [s.mean - (s.std or 0.0) for _, s in points]
        hi = [s.mean + (s.std or 0.0) for _, s in points]
        axes[0].fill_between(xs, lo, hi, color=style["color"], alpha=0.12, linewidth=0)
        if ref is not None:
            gaps = [(x_all[i], s.mean - ref[i].mean) for i, s in enumerate(stats)
                    if s is not None and ref[i] is not None]
            if gaps:
                axes[1].plot([g[0] for g in gaps], [g[1] for g in gaps], marker="o",
                             markersize=3, **style)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title(title)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="lower left", fontsize=8)
    if ref is not None:
        axes[1].axhline(0.0, color=COLORS["reference"], linewidth=1)
        axes[1].set_ylabel(f"mean − {reference} mean (points)")
        axes[1].set_title(f"difference to {reference}", fontsize=10)
    bottom = axes[-1]
    log_axis(bottom, "x", x_all)
    bottom.invert_xaxis()  # pruning proceeds left to right
    bottom.set_xlabel("hidden neurons retained (%, log scale; pruning proceeds left to right)")
    top = axes[0].secondary_xaxis("top")
    top.set_xticks(x_all, [hidden_label(list(r.neurons)) for r in plan.schedule[:rows]],
                   rotation=90, fontsize=7)
    top.xaxis.set_minor_locator(NullLocator())  # no log-scale minor labels on the size axis
    top.set_xlabel("hidden layer sizes", fontsize=8)
    return save_figure(fig, path)


def write_reports(plan: Plan, results: Results | None = None) -> list[Path]:
    """Every table and plot of the curves in the plan, from what the cache holds."""
    results = collect(plan) if results is None else results
    out, written, seeds = plan.study.out, [], " ".join(map(str, plan.study.seeds))
    for curve in ("no-retrain", "retrain"):
        if curve in plan.study.curves:
            written.append(write_curve_report(plan, curve, results))
            series = {v: results.get(curve, {}).get(v, {}) for v in plan.variants}
            written.append(plot_curves(
                plan, series, plan.rows(curve),
                f"{CURVE_TITLE[curve].capitalize()} — {plan.study.dataset}, seeds {seeds} "
                f"(band: ±1 std)", out / f"criteria_{curve.replace('-', '_')}.png",
                reference=plan.default.name))
    if "oneshot" in plan.study.curves:
        written.append(write_oneshot_report(plan, results))
        name = plan.default.name
        series = {f"iterative ({name})": results.get("retrain", {}).get(name, {}),
                  f"one-shot ({name})": results.get("oneshot", {}).get(name, {})}
        written.append(plot_curves(
            plan, series, plan.rows("oneshot"),
            f"One-shot vs iterative pruning, with retraining — {plan.study.dataset}, seeds "
            f"{seeds} (band: ±1 std)", out / "oneshot_vs_iterative.png"))
    return written


# ------------------------------------------------------------------------------- command line
def default_data_root() -> str | None:
    """$IAPRUNE_DATA's rule of the engine, else ../shared/data beside the repo when it has MNIST."""
    shared = ROOT.parent / "shared" / "data"
    if os.environ.get("IAPRUNE_DATA") or not (shared / "MNIST").is_dir():
        return None
    return str(shared)


def parse_args(argv: list[str] | None) -> tuple[StudyConfig, bool]:
    """The study settings and whether only the reports are to be written."""
    d = StudyConfig()
    p = argparse.ArgumentParser(
        prog="python benchmarks/criteria.py",
        description="Compare pruning criteria (issue 8): no-retrain and retrain curves over "
                    "seeds, one-shot vs iterative; resumable (sessions cached in OUT/cache/).")
    p.add_argument("--dataset", default=d.dataset, help=f"{', '.join(DATASETS)} [{d.dataset}]")
    p.add_argument("--data-root", help="folder holding MNIST/raw/ [$IAPRUNE_DATA, else "
                                       "../shared/data if it has MNIST, else data/]")
    p.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden),
                   help="hidden layer sizes [256 64]")
    p.add_argument("--retain", help="schedule file [retain/retain.txt if its first row is "
                                    "--hidden, else the q=0.8 geometric schedule]")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds), help="[0 1 2]")
    p.add_argument("--variants", nargs="+", default=[], metavar="NAME",
                   help=f"variants to compare [all: {', '.join(registry())}]; also "
                        "criterion/seed_mode/box/bias_fold[/measure]; the default is always "
                        "included")
    p.add_argument("--curves", nargs="+", default=list(d.curves), choices=CURVES,
                   help="[no-retrain retrain oneshot]")
    p.add_argument("--rows", type=int, help="run every curve to schedule row N only (rows "
                                            "0..N) [no-retrain: all rows; retrain, oneshot: "
                                            f"0..{RETRAIN_LAST_ROW}]")
    p.add_argument("--epochs", type=int, help="max epochs of base training [engine default]")
    p.add_argument("--retrain-epochs", type=int, help="max retraining epochs per iteration of "
                                                      "the retrain/oneshot curves [engine "
                                                      "default]")
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder [{d.out}/]")
    p.add_argument("--report-only", action="store_true",
                   help="only write the tables and plots from what the cache holds")
    p.add_argument("--verbose", action="store_true",
                   help="show the engine's output instead of logging it to OUT/cache/.../logs/")
    a = p.parse_args(argv)
    study = StudyConfig(dataset=a.dataset, data_root=a.data_root or default_data_root(),
                        hidden=tuple(a.hidden), retain=a.retain, seeds=tuple(a.seeds),
                        variants=tuple(a.variants), curves=tuple(dict.fromkeys(a.curves)),
                        rows=a.rows, epochs=a.epochs, retrain_epochs=a.retrain_epochs,
                        out=a.out, verbose=a.verbose)
    return study, a.report_only


def main(argv: list[str] | None = None) -> int:
    """Run the study (or only its reports) and print where the outputs are."""
    study, report_only = parse_args(argv)
    plan = make_plan(study)
    if not report_only:
        print(f"criteria study: {len(plan.cells)} cells ({len(study.seeds)} seeds, "
              f"{len(plan.variants)} variants, curves {' '.join(study.curves)}), sessions in "
              f"{study.cache}; default variant {plan.default.name}")
        try:
            seconds = run_study(plan)
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume (finished iterations "
                  "are cached)", file=sys.stderr)
            return cli.EXIT_INTERRUPTED
        print(f"all cells done in {seconds:.0f}s")
    for path in write_reports(plan):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
