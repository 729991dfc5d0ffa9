"""The IterativePruning engine as a library: `run(config, session) -> Results`.

Iteration 0 trains the base model (or takes `base_model`). Iteration i takes iteration i-1's
best_model.pth (iterative mode) or the base model (one-shot mode), scores every unit of every
prunable group (the input features too when the schedule has the input column), keeps schedule
row i's units per group, folds the removed ones into their consumer, records the accuracy before
retraining, retrains (keeping the pruned model itself when no retraining epoch reaches its
validation accuracy) and writes
`<session>/<mode>/<i>/prune_w_retrain/` (iaprune.session: written into a .partial folder and renamed
into place only when complete). Every random stream is derived from (seed, iteration), so a
resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch

from iaprune import __version__
from iaprune.checkpoint import (
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
)
from iaprune.concatenate import READ_ONLY, Concatenation, concatenate
from iaprune.config import (
    SECTIONS,
    PruneConfig,
    differences,
    dumps,
    flat,
    is_module,
    iteration_seed,
    value_of,
)
from iaprune.data import Dataset
from iaprune.data.rows import head
from iaprune.device import place, torch_device
from iaprune.errors import UserError
from iaprune.files import atomic_write, parse_json
from iaprune.groups import units
from iaprune.interval import Interval
from iaprune.model import from_module, hidden_label, layer_table
from iaprune.prune import keep_global, keep_indices, shrink
from iaprune.records import (
    ARCH_FILE,
    BASE_MODEL_FILE,
    CHECKPOINT_FILE,
    COLUMN,
    CONFIG_FILE,
    FEATURES_FILE,
    RETAIN_FILE,
    SUMMARY_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    validation_row,
    write_features,
    write_validation_results,
)
from iaprune.retain import (
    ScheduleRow,
    geometric_schedule,
    prunes_inputs,
    read_schedule,
    write_schedule,
)
from iaprune.run_data import check_same_data, config_for, load_run_data, saved_record
from iaprune.session import Session, SessionError, check_session_folder, holds_results, locked
from iaprune.significance import ScoreData, data_box, score
from iaprune.spec import Net, build, describe, resolve_arch, shapes, spec_of
from iaprune.tracking import NullTracker, Tracker
from iaprune.trainer import kept_metrics, train, uses_bf16
from iaprune.validator import Metrics, evaluate, evaluate_split
from iaprune_runtime.layers import entry, entry_of

DEFAULT_RETAIN = RETAIN_FILE  # relative to the working folder
DEFAULT_HIDDEN = (256, 64)  # the thesis MLP's hidden sizes
# Settings a resumed run may change; every other setting must match the session's config.json.
CHANGEABLE = {"--max-accuracy-drop", "--device", "--stream"}  # same results either way


class EngineError(UserError):
    """A run that cannot start or go on: a conflicting setting, a checkpoint that does not fit."""


@dataclass(frozen=True)
class Results:
    """What `run` did: the rows of the iterations it ran and the gathered results."""

    session: Session
    config: PruneConfig
    schedule: list[ScheduleRow]
    rows: list[dict[str, Any]]  # one per iteration run now (validation columns + Epochs, Seconds)
    resumed: bool
    concatenation: Concatenation | None  # None when nothing could be written

    @property
    def recommended(self) -> Path | None:
        return None if self.concatenation is None else self.concatenation.recommended_path

    def __repr__(self) -> str:
        """One line: the session, what ran now, and the recommended model (the fields hold the
        rows, the schedule and the settings)."""
        ran = f"{len(self.rows)} iteration{'' if len(self.rows) == 1 else 's'} run now"
        if self.resumed:
            ran += " (resumed)"
        c = self.concatenation
        if c is None or c.recommended is None:
            chosen = "results not gathered"
        else:
            row = c.row(c.recommended)
            chosen = (f"recommended: iteration {c.recommended} ({row['Hidden']} units, "
                      f"{row['Params']:,} params, test {row['Test_Accuracy']:.2f} %) at "
                      f"{c.recommended_path}")
        return f"<Results {self.session.root} ({self.session.mode}): {ran}; {chosen}>"


def read_config(session: Session) -> PruneConfig | None:
    """The settings saved in a session's config.json (None for a new session)."""
    if not session.config.is_file():
        return None
    try:
        saved = parse_json(session.config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SessionError(f"{session.config}: not valid JSON ({exc})") from None
    if not isinstance(saved, dict):
        raise SessionError(f"{session.config}: not a settings object")
    return PruneConfig.from_json(saved, str(session.config))


def model_spec(config: PruneConfig, data: Dataset, session: Session,
               resumed: bool) -> dict[str, Any]:
    """The architecture of the base model: a resumed session's iteration 0; else --arch (an
    mlp of --hidden sizes by default); else, when only --base-model is given, its own."""
    if resumed:
        return spec_of(model_from_checkpoint(load_checkpoint(session.checkpoint(0)),
                                             session.checkpoint(0)))
    if config.base_model and config.arch is None and config.hidden is None:
        return spec_of(model_from_checkpoint(load_checkpoint(config.base_model),
                                             config.base_model))
    return resolve_arch(config.arch or "mlp", data.input_shape, data.num_classes,
                        config.hidden or DEFAULT_HIDDEN, config.activation)


class IterativePruning:
    """Runs the schedule's iterations for one session; see the module docstring."""

    def __init__(self, config: PruneConfig, session: Session, schedule: list[ScheduleRow],
                 data: Dataset, spec: dict[str, Any], quiet: bool = False,
                 log: Callable[[str], Any] = print, tracker: Tracker | None = None):
        self.config, self.session, self.schedule = config, session, schedule
        self.device = torch_device(config.device)
        self.bf16 = uses_bf16(config.train_config(0), self.device)  # for the layout (place)
        self.data = data.to(self.device)  # every model of the run lives there too (place)
        self.spec = spec
        self.quiet, self.log = quiet, log
        self.tracker = tracker or NullTracker()
        self._base: Net | None = None
        self._base_scores: list[torch.Tensor] | None = None
        self._data_box: Interval | None = None  # the training inputs' range, computed once
        self._val_accuracy: dict[int, float] = {}  # iteration -> its kept model's val accuracy
        self.inputs = prunes_inputs(schedule)  # the schedule's input column decides

    def units(self, model: Net) -> list[int]:
        """The model's units in the schedule's columns (input features first when pruned)."""
        return units(model, self.inputs)

    def label(self, counts) -> str:
        """Unit counts as written in the Hidden column ('54-13', or '300:54-13' with inputs)."""
        return hidden_label(counts, self.inputs)

    def fits_row(self, counts: list[int], i: int) -> bool:
        """Whether a model with `counts` units is what schedule row i asks for: the row's counts
        (allocation "layer") or its total (allocation "global")."""
        row = list(self.schedule[i].units)
        if self.config.scoring.allocation == "global" and i > 0:
            return sum(counts) == sum(row) and len(counts) == len(row)
        return counts == row

    # ----------------------------------------------------------------------------- models
    def load(self, i: int) -> Net:
        """The kept model of iteration i, checked against this run's dataset and schedule."""
        path = self.session.checkpoint(i)
        checkpoint = load_checkpoint(path)
        model = place(model_from_checkpoint(checkpoint, path), self.device, self.bf16)
        self.check_fits(model, checkpoint, path)
        if not self.fits_row(self.units(model), i):
            raise EngineError(f"{path}: units {self.label(self.units(model))} do not match "
                              f"schedule row {i} ({self.label(self.schedule[i].units)})")
        metrics = checkpoint.get("metrics")
        if not isinstance(metrics, dict) or "val_accuracy" not in metrics:
            raise EngineError(f"{path}: checkpoint lacks the metrics an iteration records")
        self._val_accuracy[i] = float(metrics["val_accuracy"])
        return model

    def val_accuracy(self, i: int) -> float:
        """Validation accuracy of iteration i's kept model (its checkpoint is read at most once)."""
        if i not in self._val_accuracy:
            self.load(i)
        return self._val_accuracy[i]

    def check_fits(self, model: Net, checkpoint: dict, path, exact: bool = False) -> None:
        """Refuse a checkpoint of another dataset or architecture than this run's (with
        `exact`, every layer size must match too: a base model)."""
        c, d = self.config, self.data
        if checkpoint.get("dataset", c.dataset) != c.dataset:
            raise EngineError(f"{path}: trained on {checkpoint['dataset']!r}, this run uses "
                              f"{c.dataset!r}")
        bad = [name for name, t in model.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise EngineError(f"{path}: non-finite weights (NaN or inf) in "
                              f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}; "
                              "refusing a broken model")
        theirs = spec_of(model)
        if math.prod(theirs["input"]) != d.n_features or \
                shapes(theirs["layers"], theirs["input"])[-1] != (d.num_classes,):
            raise EngineError(f"{path}: model ({describe(theirs)}) does not fit {c.dataset} "
                              f"({d.n_features} inputs, {d.num_classes} classes)")
        if layer_kinds(theirs) != layer_kinds(self.spec):
            raise EngineError(f"{path}: architecture {describe(theirs)} is not this run's "
                              f"({describe(self.spec)})")
        if exact and theirs["layers"] != self.spec["layers"]:
            have, want = units(model), units(build(self.spec))
            if c.arch in (None, "mlp"):
                raise EngineError(
                    f"{path}: hidden sizes {hidden_label(have)}, this run uses --hidden "
                    f"{' '.join(map(str, want))} (give --hidden {' '.join(map(str, have))} and a "
                    "schedule for it)")
            raise EngineError(f"{path}: units {hidden_label(have)}, this run's --arch {c.arch} "
                              f"has {hidden_label(want)}")

    def base(self) -> Net:
        if self._base is None:
            self._base = self.load(0)
        return self._base

    # ----------------------------------------------------------------------------- steps
    def scores(self, model: Net, i: int) -> list[torch.Tensor]:
        """Unit significances for iteration i (one-shot: the base model's, computed once)."""
        c = self.config
        if c.scoring.box == "data" and self._data_box is None:  # the same box every iteration
            self._data_box = data_box(self.data.train.x)
        data = ScoreData(self.data.train.x, self.data.train.y, seed=iteration_seed(c.seed, i),
                         seed_mode=c.scoring.seed_mode, measure=c.scoring.measure,
                         box=self._data_box if c.scoring.box == "data" else c.scoring.box)
        if c.mode == "one-shot":
            if self._base_scores is None:
                self._base_scores = score(c.scoring.criterion, self.base(), replace(
                    data, seed=iteration_seed(c.seed, 0)), self.inputs)
            return self._base_scores
        return score(c.scoring.criterion, model, data, self.inputs)

    def plan(self, scores: list[torch.Tensor], i: int) -> list[torch.Tensor]:
        """Keep-indices of every group for schedule row i: per column, or the row's total
        split across groups by score (allocation "global")."""
        row = self.schedule[i].units
        if self.config.scoring.allocation == "global":
            return keep_global(scores, sum(row))
        return keep_indices(scores, row)

    def run_base(self) -> dict[str, Any]:
        """Iteration 0: train the base model (or take base_model) and write its folder."""
        c, folder = self.config, self.session.partial(0)
        started = time.perf_counter()
        if c.base_model:
            checkpoint = load_checkpoint(c.base_model)
            model = place(model_from_checkpoint(checkpoint, c.base_model), self.device, self.bf16)
            self.check_fits(model, checkpoint, c.base_model, exact=True)
            train(model, self.data, replace(c.train_config(0), epochs=0), quiet=True,
                  log_path=folder / TRAIN_FILE)
            epochs = 0
        else:
            model = place(build(self.spec, seed=iteration_seed(c.seed, 0)), self.device, self.bf16)
            result = train(model, self.data, c.train_config(0), quiet=self.quiet,
                           log_path=folder / TRAIN_FILE, desc="base model")
            epochs = result.epochs_run
        metrics = evaluate(model, self.data) if c.base_model else kept_metrics(model, self.data,
                                                                                result)
        row = self.write_iteration(0, model, metrics, metrics.test_accuracy, epochs,
                                   time.perf_counter() - started)
        self._base = model
        return row

    def run_iteration(self, i: int) -> dict[str, Any]:
        """Iteration i >= 1: score, shrink to schedule row i, retrain, write the folder."""
        c, row = self.config, self.schedule[i]
        started = time.perf_counter()
        source = self.load(i - 1) if c.mode == "iterative" else self.base()
        have = self.units(source)
        larger = sum(row.units) > sum(have) if c.scoring.allocation == "global" else any(
            n > h for n, h in zip(row.units, have, strict=True))
        if larger:
            raise EngineError(f"schedule row {i} ({self.label(row.units)}) is larger than "
                              f"the model it prunes ({self.label(have)})")
        scores = [s.cpu() for s in self.scores(source, i)]
        self.tracker.scores(i, scores)
        keep = self.plan(scores, i)
        model = place(shrink(source, keep, bias_fold=c.scoring.bias_fold,
                             data=self.data.train.x, inputs=self.inputs), self.device, self.bf16)
        _, no_retrain = evaluate_split(model, self.data.test)
        teacher = {"base": self.base, "previous": lambda: source,
                   "none": lambda: None}[c.retraining.teacher]
        # Retraining is there to recover what pruning lost, so most of the budget goes where
        # pruning did damage: it stops once the model is back at the validation accuracy of the
        # model it was pruned from (a pruned model already there is not retrained at all), and
        # a retrained model that does worse on validation than the pruned one is not kept.
        parent_val = self.val_accuracy(i - 1 if c.mode == "iterative" else 0)
        _, pruned_val = evaluate_split(model, self.data.val)
        # With `until converged`, every pruned model is retrained until its accuracy plateaus.
        retraining = c.train_config(i)
        recover = c.retraining.until == "parent"
        if recover and pruned_val >= parent_val:
            retraining = replace(retraining, epochs=0)
        pruned_state = copy.deepcopy(model.state_dict())
        result = train(model, self.data, retraining, teacher=teacher(),
                       quiet=self.quiet, log_path=self.session.partial(i) / TRAIN_FILE,
                       desc=f"retrain {self.label(self.units(model))}",
                       stop_at_accuracy=parent_val if recover else None)
        if result.best is not None and result.best.val_accuracy < pruned_val:
            model.load_state_dict(pruned_state)
            metrics = evaluate(model, self.data)
        else:
            metrics = kept_metrics(model, self.data, result)
        return self.write_iteration(i, model, metrics, no_retrain, result.epochs_run,
                                    time.perf_counter() - started)

    def write_iteration(self, i: int, model: Net, metrics: Metrics, no_retrain: float,
                        epochs: int, seconds: float) -> dict[str, Any]:
        """Write iteration i's files into its .partial folder, then rename it into place."""
        c, d, folder = self.config, self.data, self.session.partial(i)
        table, params, macs = layer_table(model)
        percent = self.schedule[i].percent
        kept = self.units(model)
        read = features_read(model)
        names = kept_features(model, d.features)
        save_checkpoint(folder / CHECKPOINT_FILE, model, dataset=c.dataset,
                        val_size=len(d.val), split_seed=0, input=d.input_info(),
                        classes=list(d.classes), iteration=i, hidden=units(model),
                        features_read=read, percent_retained=percent,
                        metrics=metrics.as_dict(), no_retrain_test_accuracy=no_retrain,
                        params=params, macs=macs, criterion=c.scoring.criterion, mode=c.mode,
                        data=d.record, version=__version__)
        atomic_write(folder / SUMMARY_FILE,
                     f"Iteration {i}: units {self.label(kept)} ({percent:.2f}% of the "
                     f"schedule's units)\ninput features read: {read} of {d.n_features}"
                     f"{'' if names is None else ': ' + ', '.join(names)}\n"
                     f"architecture: {describe(spec_of(model))}\n\n{table}")
        values = validation_row({**metrics.as_dict(), "percent_retained": percent,
                                 "no_retrain_test_accuracy": no_retrain,
                                 "hidden": self.label(kept), "params": params, "macs": macs})
        if names is not None:
            write_features(folder / FEATURES_FILE, names)
        write_validation_results(folder / VALIDATION_FILE, values)  # written last
        self._val_accuracy[i] = metrics.val_accuracy
        self.session.commit(i)
        return {"iteration": i, **values, COLUMN["epochs"]: epochs, COLUMN["seconds"]: seconds}

    def run(self, begin: int) -> list[dict[str, Any]]:
        """Run iterations begin..end; stop early on max_accuracy_drop. Returns their rows."""
        rows, c = [], self.config
        for i in range(begin, len(self.schedule)):
            self.session.abandon(i)  # leftovers of a killed run are never mixed into a new one
            try:
                row = self.run_base() if i == 0 else self.run_iteration(i)
            except BaseException:
                self.session.abandon(i)
                raise
            rows.append(row)
            self.log(progress_line(row, len(self.schedule) - 1))
            self.tracker.iteration(i, row, self.session.final(i))
            base_val = self.val_accuracy(0)
            if c.max_accuracy_drop is not None and row["Val_Accuracy"] < base_val - \
                    c.max_accuracy_drop:
                self.log(f"stopping: validation accuracy {row['Val_Accuracy']:.2f}% is more than "
                         f"{c.max_accuracy_drop} points below the base model's {base_val:.2f}%")
                break
        return rows


def layer_kinds(spec: dict[str, Any]) -> list[str]:
    """The layer types of a spec without its select: pruning the inputs adds one (or changes
    it), and the network is the same architecture."""
    return [layer["type"] for layer in spec["layers"] if entry(layer["type"]).role != "inputs"]


def features_read(model: Net) -> int:
    """Input features the model reads: its select's length, else its whole input."""
    first = model[0]
    if entry_of(first).role == "inputs":
        return len(first.indices)
    return math.prod(model.input_shape)


def kept_features(model: Net, features: tuple[str, ...] | None) -> list[str] | None:
    """The names of the input columns the model reads (None: the data has no column names)."""
    if features is None:
        return None
    first = model[0]
    read = first.indices.tolist() if entry_of(first).role == "inputs" else range(len(features))
    return [features[j] for j in read]


def progress_line(row: dict[str, Any], last: int) -> str:
    """One line per finished iteration."""
    i = row["iteration"]
    what = "base model" if i == 0 else f"no-retrain {row['NoRetrain_Test_Accuracy']:6.2f}%"
    return (f"[{i:>2}/{last}] units {row['Hidden']:>9} ({row['PercentageRetain']:6.2f}%)  "
            f"{what:<21}  test {row['Test_Accuracy']:6.2f}%  val {row['Val_Accuracy']:6.2f}%  "
            f"{row['Epochs']:>2} epochs {row['Seconds']:6.1f}s")


# --------------------------------------------------------------------------------- run

Start = Literal["new", "resume", "restart"]


def schedule_difference(schedule: list[ScheduleRow], saved: list[ScheduleRow]) -> str | None:
    """How a schedule differs from the session's: the first row keeping other units, or the
    row count (None when both keep the same units row by row)."""
    if prunes_inputs(schedule) != prunes_inputs(saved):
        has = "has" if prunes_inputs(schedule) else "lacks"
        return f"the input column (inNodesRetained): this schedule {has} it, the session's not"
    inputs = prunes_inputs(schedule)
    for i, (row, old) in enumerate(zip(schedule, saved, strict=False)):  # lengths next
        if row.units != old.units:
            return (f"row {i} keeps {hidden_label(row.units, inputs)}, the session's "
                    f"{hidden_label(old.units, inputs)}")
    if len(schedule) != len(saved):
        return f"{len(schedule)} rows, the session's {len(saved)}"
    return None


def _show(value: Any) -> str:
    """A setting's value as it is typed on the command line (hidden sizes: `16 8`)."""
    return " ".join(map(str, value)) if isinstance(value, tuple) else \
        "none" if value is None else str(value)


def _changes(config: PruneConfig, saved: PruneConfig, changeable: set[str] = frozenset()
             ) -> list[str]:
    return [f"{flag} {_show(value_of(config, flag))} (the session has "
            f"{_show(value_of(saved, flag))})"
            for flag in differences(config, saved) if flag not in changeable]


def unset_from_session(config: PruneConfig, saved: PruneConfig | None) -> PruneConfig:
    """`config` with the settings it leaves unset (None: decided when training starts, as your
    own data's batch sizes) taken from the session's saved settings, which may hold numbers for
    them (sessions run before they were left to the trainer resume as they ran)."""
    if saved is None:
        return config
    filled = {}
    for name in SECTIONS:
        mine, theirs = getattr(config, name), getattr(saved, name)
        unset = {f.name: getattr(theirs, f.name) for f in fields(mine)
                 if getattr(mine, f.name) is None and getattr(theirs, f.name) is not None}
        if unset:
            filled[name] = replace(mine, **unset)
    return replace(config, **filled) if filled else config


def resolve(config: PruneConfig, session: Session, saved: PruneConfig | None,
            retain: Path | None) -> Start:
    """How the run starts, given the session's saved settings (read_config). A session that
    holds a complete iteration resumes: its settings stay (a real difference, or a --retain
    keeping other units, is an error naming each); one that holds none may be started again
    with other settings (a failed start never locks it)."""
    if saved is None:
        return "new"
    if not holds_results(session.root):
        return "resume" if config == saved and retain is None else "restart"
    conflicts = _changes(config, saved, CHANGEABLE)
    if retain is not None and session.retain.is_file():
        difference = schedule_difference(read_schedule(retain), read_schedule(session.retain))
        if difference:
            conflicts.append(f"--retain {retain} ({difference} in {session.retain})")
    if conflicts:
        raise EngineError(f"{session.root} was run with other settings: {'; '.join(conflicts)}. "
                          "Leave these flags out to resume, or use a new --session")
    return "resume"


def _model_units(model: Net, inputs: bool, path: Path) -> list[int]:
    """The model's row of a schedule (with the input count first when `inputs`)."""
    try:
        return units(model, inputs)
    except ValueError as exc:
        raise EngineError(f"{path}: the schedule prunes inputs (inNodesRetained), but {exc}"
                          ) from None


def _schedule(session: Session, start: Start, retain: Path | None, model: Net,
              log) -> list[ScheduleRow]:
    """The schedule: the session's copy on resume, else `retain`, else the default file if it
    fits the model, else the default geometric schedule. Its first row must be the unpruned
    model's units (its input count first when it has the input column)."""
    own = start == "resume" and session.retain.is_file()
    path = session.retain if own else retain if retain is not None else DEFAULT_RETAIN
    explicit = own or retain is not None
    first = units(model)
    if explicit or path.is_file():
        schedule = read_schedule(path)
        inputs = prunes_inputs(schedule)
        have = _model_units(model, inputs, path) if explicit else units(model)
        if list(schedule[0].units) == have:
            return schedule
        if explicit:
            raise EngineError(f"{path}: first row {hidden_label(schedule[0].units, inputs)} "
                              f"does not match the model's units {hidden_label(have, inputs)}")
    log(f"note: no schedule for units {hidden_label(first)} at {path}; using the default "
        "geometric schedule (q=0.8; see python -m iaprune.retain)")
    return geometric_schedule(first)


def first_iteration(begin: int | None, session: Session, rows: int) -> int:
    """The iteration this run starts at: `begin`, else the one after the last complete."""
    last = session.last_complete()
    if begin is None:
        return last + 1
    if not 0 <= begin < rows:
        raise EngineError(f"--begin-itr must be between 0 and {rows - 1}")
    if begin > last + 1:
        done = "no complete iteration yet; leave out --begin-itr to start it" if last < 0 else \
            f"completed iteration{'s 0..' if last else ' '}{last} only; use --begin-itr " \
            f"{last + 1} or less, or leave it out to continue at iteration {last + 1}"
        raise EngineError(f"--begin-itr {begin} redoes iterations {begin}.. from iteration "
                          f"{begin - 1}'s model, but {session.mode_dir} has {done}")
    return begin


def check_shifts(config: PruneConfig, input_shape: tuple[int, ...]) -> None:
    """Random image shifts (base training and retraining) must leave part of the image in
    view: below its height and width. Flat inputs are never shifted."""
    if len(input_shape) < 2:
        return
    size = min(input_shape[-2:])
    for iteration, flag in ((0, "--shift"), (1, "--retrain-shift")):
        shift = config.train_config(iteration).shift
        if shift >= size:
            raise EngineError(f"{flag} {shift} would move the {input_shape[-2]}x"
                              f"{input_shape[-1]} {config.dataset} images out of view; use a "
                              f"shift below {size}")


def write_settings(session: Session, config: PruneConfig, schedule: list[ScheduleRow],
                   start: Start, log, record: dict[str, Any] | None = None) -> None:
    """Write a new or restarted session's config.json and schedule copy (a restart with the
    session's own settings rewrites nothing)."""
    if start == "restart":
        try:
            saved = read_config(session)
            changes = _changes(config, saved) if saved is not None else []
        except UserError:
            changes = [f"{session.config.name} was unreadable"]
        try:
            difference = schedule_difference(schedule, read_schedule(session.retain))
        except UserError:
            difference = "the session had none"
        changes += [f"schedule: {difference}"] if difference else []
        changes += ["data: changed"] if record and record != saved_record(session) else []
        if not changes:
            return
        log(f"note: {session.root} holds no complete iteration; starting it again with these "
            f"settings ({'; '.join(changes)})")
    extra = {"data": record} if record else {}  # your own data: its source and fingerprint
    atomic_write(session.config, dumps(config, version=__version__, **extra))
    write_schedule(schedule, session.retain)


def gather_results(session: Session, quiet: bool, log) -> Concatenation | None:
    """concatenate() the mode folder; a session that cannot be written gets a note (its
    results stay those of the last run that could write them)."""
    try:
        return concatenate(session.mode_dir, quiet=quiet)
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            raise
        log(f"note: {session.results_dir} not updated ({exc.strerror}); its files are from the "
            "last run that could write them")
        return None


def run(config: PruneConfig, session: str | Path, *, retain: str | Path | None = None,
        begin: int | None = None, data_root: str | Path | None = None,
        tracker: Tracker | None = None, quiet: bool = False,
        log: Callable[[str], Any] = print, data: Any = None, wait: bool = False,
        gather: bool = True) -> Results:
    """Run or resume a pruning session: train (or take) the base model, then per schedule row
    score, shrink, fold and retrain, writing one iteration folder each.

    Every check that can fail runs before anything is written: settings, schedule, data,
    checkpoints, the criterion on the model. Running it again on the same session resumes
    after the last complete iteration.

    Args:
        config: every setting of the run (saved to the session's config.json; a resumed
            session must be given the same settings).
        session: the session folder (created if missing).
        retain: a retain.txt schedule; default retain/retain.txt when it fits the model, else
            the geometric schedule with q = 0.8.
        begin: redo iterations from `begin` on, starting from iteration begin-1's checkpoint.
        data_root: the folder holding MNIST/raw/ etc. (default $IAPRUNE_DATA, else data/).
        tracker: an MLflow or TensorBoard tracker (iaprune.tracking.make_tracker).
        quiet: no progress bars.
        log: where progress lines go (default print).
        data: the data, in place of config.dataset: a Dataset, a path, an (x, y) pair of
            arrays or tensors, or a torch Dataset of (x, y) items (iaprune.data.load_dataset).
            config.json records a path, or "python object", with the data's fingerprint; a
            resumed session must be given the same data.
        wait: when another process runs this session, wait for it to finish (default: refuse,
            naming that process).
        gather: gather the session's tables, plots and recommendation at the end (its
            prune_w_retrain_results/, as `iaprune concatenate` does); a study's cells leave
            it to the study's own reports (results.concatenation is then None).

    Returns:
        Results: the rows of the iterations run now, the schedule, and the gathered results;
        `results.recommended` is the path of the recommended best_model.pth.

    Example:
        >>> from iaprune import PruneConfig, Retraining, run
        >>> config = PruneConfig(dataset="digits", retraining=Retraining(epochs=5))
        >>> results = run(config, "sessions/api")  # doctest: +SKIP
        >>> print(results.recommended)  # doctest: +SKIP
        sessions/api/iterative_pruning/9/prune_w_retrain/best_model.pth
    """
    root = Path(session)
    check_session_folder(root)
    with locked(root, wait):  # one run per session; a killed run's lock is free
        return _run(config, root, retain, begin, data_root, tracker, quiet, log, data, gather)


def _run(config: PruneConfig, root: Path, retain: str | Path | None, begin: int | None,
         data_root: str | Path | None, tracker: Tracker | None, quiet: bool,
         log: Callable[[str], Any], data: Any, gather: bool) -> Results:
    """run() while holding the session's lock."""
    check_session_folder(root)  # as found now that no other run can change it
    config, data = config_for(config, data)
    staged: list[Path] = []
    if is_module(config.base_model) or is_module(config.arch):  # your own network, imported
        data = load_run_data(config, data, data_root)
        config, staged = stage_modules(config, root, data)
    try:
        return _checked_run(config, root, retain, begin, data_root, tracker, quiet, log, data,
                            gather)
    except BaseException:
        if staged and not (root / CONFIG_FILE).is_file():  # nothing was run: undo the staging
            for path in staged:  # (a session folder this run created goes with its lock)
                path.unlink(missing_ok=True)
        raise


def _imported(module: torch.nn.Module, data: Dataset, what: str) -> Net:
    try:
        return from_module(module, data.input_shape)
    except TypeError as exc:
        raise UserError(f"{what}: {exc}") from None


def stage_modules(config: PruneConfig, root: Path, data: Dataset
                  ) -> tuple[PruneConfig, list[Path]]:
    """Networks given as nn.Modules, imported with from_module and saved in the session so that
    config.json names plain files: `arch` as the spec arch.json (the base is trained from a
    seeded initialisation), `base_model` as base_model.pth (taken as trained, iteration 0). On
    resume the module must be the one the session started from. Returns (the config naming
    the files, the files written now)."""
    resumed = (root / CONFIG_FILE).is_file()
    written: list[Path] = []
    if is_module(config.arch):
        spec = spec_of(_imported(config.arch, data, "arch"))
        path = root / ARCH_FILE
        text = json.dumps(spec, indent=1) + "\n"
        if resumed and path.is_file():
            if path.read_text(encoding="utf-8") != text:
                raise SessionError(f"{path}: this session's architecture differs from the "
                                   "module given; use a new --session for it")
        else:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
            written.append(path)
        config = replace(config, arch=str(path.resolve()))
    if is_module(config.base_model):
        net = _imported(config.base_model, data, "base_model")
        path = root / BASE_MODEL_FILE
        if resumed and path.is_file():
            saved = load_model(path)[0].state_dict()
            mine = net.state_dict()
            if saved.keys() != mine.keys() or not all(
                    torch.equal(value, mine[key].to(value.dtype)) for key, value in saved.items()):
                raise SessionError(f"{path}: this session started from another base model than "
                                   "the module given; use a new --session for it")
        else:
            root.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, net, input=data.input_info(), classes=list(data.classes))
            written.append(path)
        config = replace(config, base_model=str(path.resolve()))
    return config, written


def _checked_run(config: PruneConfig, root: Path, retain: str | Path | None, begin: int | None,
                 data_root: str | Path | None, tracker: Tracker | None, quiet: bool,
                 log: Callable[[str], Any], data: Any, gather: bool) -> Results:
    """run() once every network it is given is a file."""
    session = Session(root, config.mode)
    retain = Path(retain) if retain is not None else None
    saved = read_config(session)
    config = unset_from_session(config, saved)
    start = resolve(config, session, saved, retain)
    torch_device(config.device)  # a GPU asked for but not usable: an error before any write
    tracker = tracker or NullTracker()
    if start == "resume":
        schedule = read_schedule(session.retain) if session.retain.is_file() else None
        if schedule is not None and first_iteration(begin, session, len(schedule)) >= len(
                schedule):
            log(f"{session.mode_dir}: all {len(schedule)} iterations are complete; "
                "use --begin-itr K to redo from K")
            session.remove_temp_files()  # a killed run's leftovers
            tracker.start(session.config, flat(config), len(schedule))  # tracking catches up
            result = gather_results(session, quiet, log) if gather else None
            tracker.finish(session.results_dir if gather else None)
            return Results(session, config, schedule, [], True, result)
    data = load_run_data(config, data, data_root)
    if start == "resume":
        check_same_data(session, data)
    check_shifts(config, data.input_shape)
    spec = model_spec(config, data, session, start == "resume" and session.complete(0))
    probe = build(spec)
    schedule = _schedule(session, start, retain, probe, log)
    begin = first_iteration(begin, session, len(schedule))
    engine = IterativePruning(config, session, schedule, data, spec, quiet, log, tracker)
    if begin > 0:
        engine.load(begin - 1)  # a missing or invalid checkpoint is an error before any write
        engine.base()
    elif config.base_model:
        checkpoint = load_checkpoint(config.base_model)
        engine.check_fits(model_from_checkpoint(checkpoint, config.base_model), checkpoint,
                          config.base_model, exact=True)
    # The criterion must work on this architecture: find out now, not after training.
    sample = data.train
    score(config.scoring.criterion, probe, ScoreData(head(sample.x, 64), sample.y[:64],
                                                     measure=config.scoring.measure),
          prunes_inputs(schedule))
    session.remove_temp_files()  # every check passed: the first write; a killed run's leftovers
    if start != "resume":
        write_settings(session, config, schedule, start, log, data.record)
    log(f"session {session.root} ({config.mode}, {config.scoring.criterion}): iterations "
        f"{begin}..{len(schedule) - 1}" + (" (resumed)" if start == "resume" else ""))
    tracker.start(session.config, flat(config), begin)
    try:
        rows = engine.run(begin)
    except KeyboardInterrupt:
        tracker.finish(None, status="KILLED")
        raise
    except BaseException:
        tracker.finish(None, status="FAILED")
        raise
    result = gather_results(session, True, log) if gather else None
    tracker.finish(session.results_dir if gather else None)
    return Results(session, config, schedule, rows, start == "resume", result)
