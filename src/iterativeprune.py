"""The IterativePruning engine and its command line: train, then score, shrink and retrain per
schedule row, writing one numbered iteration folder per row (resumable at any iteration).

    python -m src.iterativeprune [--dataset mnist] [--session sessions/<today>] ...

Iteration 0 trains the base model (or takes --base-model). Iteration i takes iteration i-1's
best_model.pth (iterative mode) or the base model (one-shot mode), scores every hidden neuron,
keeps schedule row i's neurons per layer, folds the removed ones into the next bias, records the
accuracy before retraining, retrains until the validation accuracy plateaus and writes
`<session>/<mode>/<i>/prune_w_retrain/`. An iteration is written into a `.partial` folder that is
renamed into place only when complete, so a killed run never leaves complete-looking files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from src import __version__, cli
from src.checkpoint import atomic_write, load_checkpoint, model_from_checkpoint, save_checkpoint
from src.concatenate import concatenate, write_validation_results
from src.data import DATASETS, Dataset, load_dataset
from src.model import ACTIVATIONS, MLP, build_model, check_sizes, hidden_label, layer_table
from src.prune import FOLDS, keep_indices, shrink
from src.retain import ScheduleRow, geometric_schedule, read_schedule, write_schedule
from src.significance import CRITERIA, ScoreData, score
from src.tracking import NullTracker, Tracker, make_tracker
from src.trainer import PRECISIONS, SCHEDULES, TrainConfig, kept_metrics, train
from src.validator import Metrics, evaluate, evaluate_split

MODES = {"iterative": "iterative_pruning", "one-shot": "one_shot_pruning"}
TEACHERS = ("base", "previous", "none")
SEED_MODES = ("per_output", "sum")
MEASURES = ("pre", "post")
BOXES = ("data", "samples")
DEFAULT_RETAIN = Path("retain/retain.txt")
# Defaults that depend on the dataset: the 1,257 tiny 8x8 digits want small batches, more epochs
# and no shifting; the 28x28 sets train fast at batch 256 and gain from 1-pixel shifts.
# Retraining takes batches of 512 at a peak lr of 7e-3: the pruned models are small, so each step
# is mostly fixed overhead, and halving the steps cut the run by ~15 % at equal accuracy (seeds
# 0, 1, 2; README, "What we chose").
GENERAL_DEFAULTS = {"epochs": TrainConfig.epochs, "batch_size": TrainConfig.batch_size,
                    "retrain_batch_size": 512, "retrain_lr": 7e-3,
                    "shift": TrainConfig.shift, "retrain_shift": TrainConfig.shift}
DATASET_DEFAULTS = {"digits": {"batch_size": 32, "retrain_batch_size": 32,
                               "retrain_lr": 5e-3, "shift": 0, "retrain_shift": 0}}
# Settings a resumed run may change; every other setting must match the session's config.json.
CHANGEABLE = {"max_accuracy_drop"}
# Settings added after the first release, with the value that sessions written before them ran
# with: a resumed old session keeps behaving as it did.
LEGACY = {"label_smoothing": 0.1, "retrain_label_smoothing": 0.1, "measure": "pre",
          "lr_schedule": "cosine", "precision": "fp32"}


@dataclass(frozen=True)
class PruneConfig:
    """Every setting of a pruning run; saved to config.json and re-read on resume."""

    dataset: str = "mnist"  # mnist, fashion-mnist or digits
    hidden: tuple[int, ...] = (256, 64)  # hidden layer sizes of the base model
    activation: str = "relu"  # relu, sigmoid or tanh
    mode: str = "iterative"  # iterative: re-score each pruned model; one-shot: score base once
    criterion: str = "interval_adjoint"  # a name in significance.CRITERIA
    seed_mode: str = "per_output"  # interval-adjoint reverse-sweep seeding: per_output or sum
    measure: str = "pre"  # interval-adjoint: read neurons before (pre) or after (post) activation
    box: str = "data"  # interval-adjoint input box: data (min/max) or samples
    bias_fold: str = "linear"  # fold removed neurons into the next layer: linear, mean, mid, none
    # Training stops on a plateau of the validation accuracy (patience); the epoch caps are
    # safety limits that the MNIST reference run never reaches (README, "What we chose").
    epochs: int | None = None  # epoch cap of base training (None: the dataset default)
    retrain_epochs: int = 50  # epoch cap of retraining per iteration (0 = no retraining)
    patience: int = TrainConfig.patience  # base training stops after this many stale epochs
    retrain_patience: int = 3  # retraining stops after this many stale epochs
    lr_schedule: str = TrainConfig.schedule  # plateau, cosine (over the epoch cap), constant
    precision: str = TrainConfig.precision  # training products: auto, bf16 or fp32 (trainer.py)
    lr: float = TrainConfig.lr  # peak AdamW learning rate of base training
    retrain_lr: float | None = None  # peak lr of retraining (a fresh schedule per iteration)
    batch_size: int | None = None  # mini-batch size of base training (None: dataset default)
    retrain_batch_size: int | None = None  # mini-batch size of retraining (None: dataset default)
    shift: int | None = None  # base training: random image shifts of up to this many px
    retrain_shift: int | None = None  # the same augmentation while retraining (0 = off)
    label_smoothing: float = TrainConfig.label_smoothing  # base training's label smoothing
    # Retraining without label smoothing: the small pruned models underfit, and smoothing cost
    # them 0.8 and 0.5 points at 22-5 and 11-3 in the reference run (README, "Retraining").
    retrain_label_smoothing: float = 0.0
    distill: float = 0.0  # weight of knowledge distillation while retraining (0 = plain CE)
    teacher: str = "base"  # distillation teacher: base, previous (the model pruned) or none
    temperature: float = 4.0  # distillation softmax temperature
    seed: int = 0  # every random stream is derived from (seed, iteration)
    val_size: int | None = None  # validation split size (None: the dataset's default)
    max_accuracy_drop: float | None = None  # stop once val accuracy falls this far below base
    base_model: str | None = None  # take iteration 0 from this checkpoint instead of training

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.dataset in DATASETS:  # unset dataset-dependent settings get their defaults
            defaults = {**GENERAL_DEFAULTS, **DATASET_DEFAULTS.get(self.dataset, {})}
            for name, value in defaults.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        choices = {"dataset": DATASETS, "activation": tuple(ACTIVATIONS), "mode": tuple(MODES),
                   "criterion": tuple(CRITERIA), "seed_mode": SEED_MODES, "box": BOXES,
                   "measure": MEASURES, "bias_fold": tuple(FOLDS), "teacher": TEACHERS,
                   "lr_schedule": SCHEDULES, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; "
                                 f"choose from {', '.join(allowed)}")
        if not self.hidden:
            raise ValueError("--hidden needs at least one hidden layer size")
        check_sizes([1, *self.hidden, 1])
        if self.epochs < 1 or self.retrain_epochs < 0:
            raise ValueError("--epochs must be >= 1 and --retrain-epochs >= 0")
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise ValueError("--max-accuracy-drop must be >= 0 (percentage points)")
        self.train_config(0)  # validates lr, batch size, patience, distill

    def train_config(self, iteration: int) -> TrainConfig:
        """Training settings of `iteration` (0 = base training), seeded by (seed, iteration)."""
        seed = iteration_seed(self.seed, iteration)
        if iteration == 0:
            return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                               patience=self.patience, seed=seed, shift=self.shift,
                               schedule=self.lr_schedule, precision=self.precision,
                               label_smoothing=self.label_smoothing)
        return TrainConfig(epochs=self.retrain_epochs, batch_size=self.retrain_batch_size,
                           lr=self.retrain_lr, patience=self.retrain_patience, seed=seed,
                           schedule=self.lr_schedule, precision=self.precision,
                           shift=self.retrain_shift, label_smoothing=self.retrain_label_smoothing,
                           warmup_epochs=0.0, decay_patience=1, temperature=self.temperature,
                           distill=self.distill if self.teacher != "none" else 0.0)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["hidden"] = list(self.hidden)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any], source: str) -> PruneConfig:
        """Rebuild from config.json; an unknown key is an error naming the file."""
        unknown = set(values) - {f.name for f in fields(cls)} - {"version", "mlflow_run_id"}
        if unknown:
            raise ValueError(f"{source}: unknown settings {sorted(unknown)}")
        # before retrain_batch_size existed, retraining used the base batch size
        values = {**LEGACY, "retrain_batch_size": values.get("batch_size"), **values}
        return cls(**{k: v for k, v in values.items() if k in {f.name for f in fields(cls)}})


def iteration_seed(seed: int, iteration: int) -> int:
    """The seed of iteration `iteration`'s random streams: the same on resume as uninterrupted."""
    return seed * 1_000_003 + iteration


@dataclass
class Session:
    """Paths of a session folder (sessions/<name>/)."""

    root: Path
    mode: str = "iterative"
    retain: Path = field(init=False)

    def __post_init__(self):
        self.retain = self.root / "retain" / "retain.txt"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def mode_dir(self) -> Path:
        return self.root / MODES[self.mode]

    def final(self, i: int) -> Path:
        return self.mode_dir / str(i) / "prune_w_retrain"

    def partial(self, i: int) -> Path:
        return self.mode_dir / str(i) / "prune_w_retrain.partial"

    def complete(self, i: int) -> bool:
        return (self.final(i) / "validation_results.txt").is_file()

    def checkpoint(self, i: int) -> Path:
        return self.final(i) / "best_model.pth"

    def last_complete(self) -> int:
        """The last iteration i such that 0..i are all complete (-1 if none)."""
        i = -1
        while self.complete(i + 1):
            i += 1
        return i


class IterativePruning:
    """Runs the schedule's iterations for one session; see the module docstring."""

    def __init__(self, config: PruneConfig, session: Session, schedule: list[ScheduleRow],
                 data: Dataset, quiet: bool = False, log=print, tracker: Tracker | None = None):
        self.config, self.session, self.schedule, self.data = config, session, schedule, data
        self.quiet, self.log = quiet, log
        self.tracker = tracker or NullTracker()
        self._base: MLP | None = None
        self._base_scores: list[torch.Tensor] | None = None
        self._val_accuracy: dict[int, float] = {}  # iteration -> its kept model's val accuracy

    # ----------------------------------------------------------------------------- models
    def load(self, i: int) -> MLP:
        """The kept model of iteration i, checked against this run's dataset and schedule."""
        path = self.session.checkpoint(i)
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint, path)
        self.check_fits(model, checkpoint, path)
        expected = list(self.schedule[i].neurons)
        if model.hidden != expected:
            raise ValueError(f"{path}: hidden sizes {hidden_label(model.hidden)} do not match "
                             f"schedule row {i} ({hidden_label(expected)})")
        metrics = checkpoint.get("metrics")
        if not isinstance(metrics, dict) or "val_accuracy" not in metrics:
            raise ValueError(f"{path}: checkpoint lacks the metrics an iteration records")
        self._val_accuracy[i] = float(metrics["val_accuracy"])
        return model

    def val_accuracy(self, i: int) -> float:
        """Validation accuracy of iteration i's kept model (its checkpoint is read at most once)."""
        if i not in self._val_accuracy:
            self.load(i)
        return self._val_accuracy[i]

    def check_fits(self, model: MLP, checkpoint: dict, path) -> None:
        """Refuse a checkpoint of another dataset, input/output size or activation."""
        c, d = self.config, self.data
        if checkpoint.get("dataset", c.dataset) != c.dataset:
            raise ValueError(f"{path}: trained on {checkpoint['dataset']!r}, this run uses "
                             f"{c.dataset!r}")
        if model.sizes[0] != d.n_features or model.sizes[-1] != d.num_classes:
            raise ValueError(f"{path}: model {model.sizes} does not fit {c.dataset} "
                             f"({d.n_features} inputs, {d.num_classes} classes)")
        if model.activation != c.activation:
            raise ValueError(f"{path}: activation {model.activation!r}, this run uses "
                             f"{c.activation!r}")

    def base(self) -> MLP:
        if self._base is None:
            self._base = self.load(0)
        return self._base

    # ----------------------------------------------------------------------------- steps
    def scores(self, model: MLP, i: int) -> list[torch.Tensor]:
        """Neuron significances for iteration i (one-shot: the base model's, computed once)."""
        c = self.config
        data = ScoreData(self.data.train.x, self.data.train.y, seed=iteration_seed(c.seed, i),
                         seed_mode=c.seed_mode, box=c.box, measure=c.measure)
        if c.mode == "one-shot":
            if self._base_scores is None:
                self._base_scores = score(c.criterion, self.base(), replace(
                    data, seed=iteration_seed(c.seed, 0)))
            return self._base_scores
        return score(c.criterion, model, data)

    def run_base(self) -> dict[str, Any]:
        """Iteration 0: train the base model (or take --base-model) and write its folder."""
        c, folder = self.config, self.session.partial(0)
        sizes = [self.data.n_features, *c.hidden, self.data.num_classes]
        started = time.perf_counter()
        if c.base_model:
            checkpoint = load_checkpoint(c.base_model)
            model = model_from_checkpoint(checkpoint, c.base_model)
            self.check_fits(model, checkpoint, c.base_model)
            if model.sizes != sizes:
                raise ValueError(f"{c.base_model}: sizes {model.sizes}, this run uses {sizes}")
            train(model, self.data, replace(c.train_config(0), epochs=0), quiet=True,
                  log_path=folder / "train_results.txt")
            epochs = 0
        else:
            model = build_model(sizes, c.activation, seed=iteration_seed(c.seed, 0))
            result = train(model, self.data, c.train_config(0), quiet=self.quiet,
                           log_path=folder / "train_results.txt", desc="base model")
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
        if any(n > h for n, h in zip(row.neurons, source.hidden, strict=True)):
            raise ValueError(f"schedule row {i} ({hidden_label(row.neurons)}) is larger than the "
                             f"model it prunes ({hidden_label(source.hidden)})")
        keep = keep_indices(self.scores(source, i), row.neurons)
        model = shrink(source, keep, bias_fold=c.bias_fold, data=self.data.train.x)
        _, no_retrain = evaluate_split(model, self.data.test)
        teacher = {"base": self.base, "previous": lambda: source, "none": lambda: None}[c.teacher]
        # Retraining stops early once the pruned model is back at the accuracy of the model it
        # was pruned from: most of the budget goes where pruning did damage.
        parent_val = self.val_accuracy(i - 1 if c.mode == "iterative" else 0)
        result = train(model, self.data, c.train_config(i), teacher=teacher(), quiet=self.quiet,
                       log_path=self.session.partial(i) / "train_results.txt",
                       desc=f"retrain {hidden_label(row.neurons)}", stop_at_accuracy=parent_val)
        metrics = kept_metrics(model, self.data, result)
        return self.write_iteration(i, model, metrics, no_retrain, result.epochs_run,
                                    time.perf_counter() - started)

    def write_iteration(self, i: int, model: MLP, metrics: Metrics, no_retrain: float,
                        epochs: int, seconds: float) -> dict[str, Any]:
        """Write iteration i's files into its .partial folder, then rename it into place."""
        c, d, folder = self.config, self.data, self.session.partial(i)
        table, params, macs = layer_table(model)
        percent = self.schedule[i].percent
        save_checkpoint(folder / "best_model.pth", model, dataset=c.dataset,
                        val_size=len(d.val), split_seed=0, input=d.input_info(),
                        classes=list(d.classes), iteration=i, hidden=model.hidden,
                        percent_retained=percent, metrics=metrics.as_dict(),
                        no_retrain_test_accuracy=no_retrain, params=params, macs=macs,
                        criterion=c.criterion, mode=c.mode, version=__version__)
        atomic_write(folder / "summary.txt",
                     f"Iteration {i}: hidden {hidden_label(model.hidden)} ({percent:.2f}% of "
                     f"hidden neurons), activation {model.activation}\n\n{table}")
        values = {"Train_Loss": metrics.train_loss, "Test_Loss": metrics.test_loss,
                  "Train_Accuracy": metrics.train_accuracy,
                  "Test_Accuracy": metrics.test_accuracy, "PercentageRetain": percent,
                  "Val_Loss": metrics.val_loss, "Val_Accuracy": metrics.val_accuracy,
                  "NoRetrain_Test_Accuracy": no_retrain, "Hidden": hidden_label(model.hidden),
                  "Params": params, "MACs": macs}
        write_validation_results(folder / "validation_results.txt", values)  # written last
        self._val_accuracy[i] = metrics.val_accuracy
        self._commit(i)
        return {"iteration": i, **values, "Epochs": epochs, "Seconds": seconds}

    def _commit(self, i: int) -> None:
        """Swap iteration i's .partial folder into place; later folders of an older run go."""
        final, partial = self.session.final(i), self.session.partial(i)
        old = final.with_name("prune_w_retrain.old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        if old.exists():
            shutil.rmtree(old)
        # A redone iteration makes the folders after it stale: this run will write them again.
        for later in sorted(self.session.mode_dir.iterdir()):
            if later.name.isdigit() and int(later.name) > i:
                shutil.rmtree(later)

    def abandon(self, i: int) -> None:
        """Remove iteration i's unfinished files (Ctrl+C, error)."""
        partial = self.session.partial(i)
        if partial.exists():
            shutil.rmtree(partial)
        parent = partial.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()

    def run(self, begin: int) -> list[dict[str, Any]]:
        """Run iterations begin..end; stop early on --max-accuracy-drop. Returns their rows."""
        rows, c = [], self.config
        for i in range(begin, len(self.schedule)):
            self.abandon(i)  # leftovers of a killed run are never mixed into a new iteration
            try:
                row = self.run_base() if i == 0 else self.run_iteration(i)
            except BaseException:
                self.abandon(i)
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


def progress_line(row: dict[str, Any], last: int) -> str:
    """One line per finished iteration."""
    i = row["iteration"]
    what = "base model" if i == 0 else f"no-retrain {row['NoRetrain_Test_Accuracy']:6.2f}%"
    return (f"[{i:>2}/{last}] hidden {row['Hidden']:>9} ({row['PercentageRetain']:6.2f}%)  "
            f"{what:<21}  test {row['Test_Accuracy']:6.2f}%  val {row['Val_Accuracy']:6.2f}%  "
            f"{row['Epochs']:>2} epochs {row['Seconds']:6.1f}s")


# --------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = PruneConfig()
    p = argparse.ArgumentParser(
        prog="python -m src.iterativeprune",
        description="Train a base MLP, then prune it per schedule row by interval-adjoint "
                    "significance (or a baseline criterion), retraining after each step. "
                    "Resumable: run again with the same --session to continue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=None)
    add = p.add_argument
    add("--dataset", help=f"{', '.join(DATASETS)} [{d.dataset}]")
    add("--data-root", help="folder holding MNIST/raw/ etc. [$IAPRUNE_DATA, else data/]")
    add("--hidden", type=int, nargs="+",
        help=f"hidden layer sizes [{' '.join(map(str, d.hidden))}]")
    add("--activation", help=f"{', '.join(ACTIVATIONS)} [{d.activation}]")
    add("--retain", help=f"schedule file [{DEFAULT_RETAIN}; the default geometric schedule "
                         "for --hidden if absent or of other sizes]")
    add("--session", help="session folder [sessions/<today>]")
    add("--mode", help=f"iterative or one-shot [{d.mode}]")
    add("--criterion", help=f"{', '.join(CRITERIA)} [{d.criterion}]")
    add("--seed-mode", help=f"interval-adjoint seeding: per_output or sum [{d.seed_mode}]")
    add("--measure", help="interval-adjoint: take each neuron's value and derivative bounds "
                          f"before (pre) or after (post) its activation [{d.measure}]")
    add("--box", help=f"interval-adjoint input box: data or samples [{d.box}]")
    add("--bias-fold", help=f"linear, mean, mid or none [{d.bias_fold}]")
    add("--epochs", type=int, help="epoch cap of base training, a safety limit: training "
                                   "stops when the validation accuracy plateaus "
                                   f"[{d.epochs}]")
    add("--retrain-epochs", type=int, help="epoch cap of retraining per iteration; 0 = prune "
                                           f"without retraining [{d.retrain_epochs}]")
    add("--patience", type=int, help="base training stops after this many epochs without "
                                     "progress (validation accuracy up 0.05 points) "
                                     f"[{d.patience}]")
    add("--retrain-patience", type=int, help="the same for retraining "
                                             f"[{d.retrain_patience}]")
    add("--lr-schedule", help="learning rate: plateau (halved after every 2 epochs without "
                              "progress, every epoch when retraining), cosine (over the epoch "
                              "cap) or constant [plateau]")
    add("--precision", help="matrix products of the training steps: bf16, fp32, or auto (bf16 "
                            "where the CPU has bf16 instructions); evaluation is always fp32 "
                            "[auto]")
    add("--lr", type=float, help=f"peak learning rate, base training [{d.lr}]")
    add("--retrain-lr", type=float,
        help=f"peak learning rate, retraining [{d.retrain_lr}; 0.005 for digits]")
    add("--batch-size", type=int,
        help=f"mini-batch size, base training [{d.batch_size}; 32 for digits]")
    add("--retrain-batch-size", type=int,
        help=f"mini-batch size, retraining [{d.retrain_batch_size}; 32 for digits]")
    add("--shift", type=int, help="augment images by random shifts of up to this many pixels "
                                   f"during base training [{d.shift}; 0 for digits]")
    add("--retrain-shift", type=int,
        help=f"the same while retraining [{d.retrain_shift}; 0 for digits]")
    add("--label-smoothing", type=float,
        help=f"label smoothing of base training [{d.label_smoothing}]")
    add("--retrain-label-smoothing", type=float,
        help=f"label smoothing while retraining [{d.retrain_label_smoothing}]")
    add("--distill", type=float, help=f"distillation weight while retraining [{d.distill}]")
    add("--teacher", help=f"distillation teacher: base, previous or none [{d.teacher}]")
    add("--temperature", type=float, help=f"distillation temperature [{d.temperature}]")
    add("--seed", type=int, help=f"random seed [{d.seed}]")
    add("--val-size", type=int, help="validation split size [5000; 180 for digits]")
    add("--base-model", help="use this best_model.pth as iteration 0 instead of training")
    add("--begin-itr", type=int, help="redo iterations from K on, starting from K-1's "
                                      "checkpoint [continue after the last complete one]")
    add("--max-accuracy-drop", type=float, help="stop when validation accuracy falls more than "
                                                "this many points below the base model's")
    add("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
        help="track the run in MLflow (parent run + one child per iteration); without a URI, "
             "a local sqlite:///mlflow.db beside the sessions folder [off]")
    add("--mlflow-experiment", help="MLflow experiment name [the session name]")
    add("--quiet", action="store_true", help="no progress bars")
    p.formatter_class = argparse.HelpFormatter  # defaults are written in the help texts
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace, session: Session) -> tuple[PruneConfig, bool]:
    """Settings from config.json (resume) merged with explicit flags; conflicts are errors."""
    given = {f.name: getattr(args, f.name) for f in fields(PruneConfig)
             if getattr(args, f.name, None) is not None}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    if not session.config.exists():
        return PruneConfig(**given), False
    try:
        saved = json.loads(session.config.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{session.config}: not valid JSON ({exc})") from None
    config = PruneConfig.from_json(saved, str(session.config))
    conflicts = [f"--{k.replace('_', '-')} {v} (session has {getattr(config, k)})"
                 for k, v in given.items() if k not in CHANGEABLE and v != getattr(config, k)]
    if conflicts:
        raise ValueError(f"{session.root} was run with other settings: {'; '.join(conflicts)}. "
                         "Leave these flags out to resume, or use a new --session")
    return replace(config, **{k: v for k, v in given.items() if k in CHANGEABLE}), True


def resolve_schedule(args: argparse.Namespace, config: PruneConfig, session: Session,
                     resumed: bool, log) -> list[ScheduleRow]:
    """The schedule: the session's copy on resume, else --retain, else the default file if it
    fits --hidden, else the default geometric schedule. Its first row must be --hidden."""
    if resumed and args.retain:
        raise ValueError(f"{session.root} already has its schedule ({session.retain}); "
                         "leave out --retain to resume, or use a new --session")
    path = session.retain if resumed else Path(args.retain) if args.retain else DEFAULT_RETAIN
    explicit = resumed or bool(args.retain)
    if explicit or path.is_file():
        schedule = read_schedule(path)
        if list(schedule[0].neurons) == list(config.hidden):
            return schedule
        if explicit:
            raise ValueError(f"{path}: first row {hidden_label(schedule[0].neurons)} does not "
                             f"match --hidden {hidden_label(config.hidden)}")
    log(f"note: no schedule for hidden {hidden_label(config.hidden)} at {path}; using the "
        "default geometric schedule (q=0.8; see python -m src.retain)")
    return geometric_schedule(list(config.hidden))


def check_session_folder(root: Path) -> None:
    """A --session must be a new/empty folder or a session (one with config.json)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a session folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "config.json").is_file():
        raise ValueError(f"{root} is not a session folder (no config.json) and not empty; "
                         "choose a new --session")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The one-screen summary printed at the end of a run."""
    head = (f"{'itr':>3} {'hidden':>9} {'retain%':>8} {'params':>8} {'no-retrain%':>12} "
            f"{'test%':>7} {'val%':>7}")
    lines = [head] + [
        f"{r['iteration']:>3} {r['Hidden']:>9} {r['PercentageRetain']:>8.2f} {r['Params']:>8} "
        f"{r['NoRetrain_Test_Accuracy']:>12.2f} {r['Test_Accuracy']:>7.2f} "
        f"{r['Val_Accuracy']:>7.2f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = print
    session_root = Path(args.session or f"sessions/{datetime.date.today().isoformat()}")
    check_session_folder(session_root)
    probe = Session(session_root)
    config, resumed = resolve_config(args, probe)
    session = Session(session_root, config.mode)
    schedule = resolve_schedule(args, config, session, resumed, log)
    last = session.last_complete()
    if args.begin_itr is not None:
        begin = args.begin_itr
        if not 0 <= begin < len(schedule):
            raise ValueError(f"--begin-itr must be between 0 and {len(schedule) - 1}")
        if begin > last + 1:
            raise ValueError(f"--begin-itr {begin} needs iteration {begin - 1}'s checkpoint, but "
                             f"the last complete iteration is {last}")
    else:
        begin = last + 1
    if begin >= len(schedule):
        log(f"{session.mode_dir}: all {len(schedule)} iterations are complete; "
            "use --begin-itr K to redo from K")
        tracker = make_tracker(args.mlflow, args.mlflow_experiment, session.root)
        tracker.start(session.config, config.to_json(), begin)  # lets tracking catch up
        result = concatenate(session.mode_dir, quiet=args.quiet)
        tracker.finish(result.outputs[0].parent)
        return 0

    data = load_dataset(config.dataset, args.data_root, val_size=config.val_size)
    tracker = make_tracker(args.mlflow, args.mlflow_experiment, session.root)
    engine = IterativePruning(config, session, schedule, data, quiet=args.quiet, log=log,
                              tracker=tracker)
    if begin > 0:
        engine.load(begin - 1)  # a missing or invalid checkpoint is an error before any write
        engine.base()
    elif config.base_model:  # fail on a bad --base-model before writing anything
        checkpoint = load_checkpoint(config.base_model)
        engine.check_fits(model_from_checkpoint(checkpoint, config.base_model), checkpoint,
                          config.base_model)
    if not resumed:
        atomic_write(session.config, json.dumps({**config.to_json(), "version": __version__},
                                                indent=2) + "\n")
        write_schedule(schedule, session.retain)
    log(f"session {session.root} ({config.mode}, {config.criterion}): iterations {begin}.."
        f"{len(schedule) - 1}" + (" (resumed)" if resumed else ""))
    started = time.perf_counter()
    tracker.start(session.config, config.to_json(), begin)
    try:
        rows = engine.run(begin)
    except KeyboardInterrupt:
        tracker.finish(None, status="KILLED")
        print(f"\ninterrupted; the unfinished iteration was discarded. Resume with:\n"
              f"  python -m src.iterativeprune --session {session.root}", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    except BaseException:
        tracker.finish(None, status="FAILED")
        raise
    result = concatenate(session.mode_dir, quiet=True)
    tracker.finish(result.outputs[0].parent)
    log(f"\n{summary_table(rows)}\n")
    log(f"done in {time.perf_counter() - started:.0f}s; results in "
        f"{session.mode_dir / 'prune_w_retrain_results'}; recommended model: "
        f"{result.recommended_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
