"""Every setting of a pruning run, nested by what belongs together, and the command-line flags
derived from it.

`PruneConfig` holds the run's identity (dataset, architecture, mode, seed, ...) and three
sections: `training` (the base model), `retraining` (after each prune step) and `scoring` (how
units are ranked and folded). Each field's flag is its name with dashes (`--seed-mode`), with
the section's prefix (`--retrain-epochs`) unless the field names its own flag; its help is the
field's metadata. config.json stores the nested form; the flat form of earlier versions (keys
named like the flags) still loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import types
import typing
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin

from iaprune.data import (
    DATASETS,
    DEFAULT_VAL_SIZE,
    PYTHON_OBJECT,
    DatasetError,
    check_name,
    holds_data,
    is_path,
)
from iaprune.device import Device
from iaprune.errors import UserError
from iaprune.trainer import Precision, Schedule, TrainConfig
from iaprune_runtime.layers import entries
from iaprune_runtime.spec import activations

# the activations of the layer registry (relu, sigmoid, tanh, leaky_relu, gelu, ...), each with
# its default settings: a new activation entry is a new --activation choice
Activation = Literal[activations()]
Mode = Literal["iterative", "one-shot"]
Criterion = Literal["interval_adjoint", "random", "magnitude", "taylor", "apoz", "fpgm"]
SeedMode = Literal["per_output", "sum"]
Measure = Literal["pre", "post"]
Box = Literal["data", "quantile", "samples"]
Fold = Literal["linear", "mean", "mid", "none"]
Teacher = Literal["base", "previous", "none"]
Allocation = Literal["layer", "global"]
Until = Literal["parent", "converged"]


def iteration_seed(seed: int, iteration: int) -> int:
    """The seed of iteration `iteration`'s random streams: the same on resume as uninterrupted."""
    return seed * 1_000_003 + iteration


# |seed| below this keeps every iteration seed within torch's 64-bit seeds (2**40 * 1_000_003 <
# 2**60): a larger --seed would fail with an overflow deep inside the first training.
SEED_LIMIT = 2**40


def setting(default: Any, help: str, flag: str | None = None) -> Any:  # noqa: A002
    """A config field with its help text (and, when it differs from the field name, its flag)."""
    return field(default=default, metadata={"help": help, "flag": flag})


class ConfigError(UserError):
    """A setting with a value that is not allowed; the message names the flag."""


def is_module(value: Any) -> bool:
    """Whether `value` is a torch nn.Module (a base model given as your own network)."""
    import torch.nn

    return isinstance(value, torch.nn.Module)


def _check_choices(obj: Any, prefix: str = "") -> None:
    """Every Literal-typed field holds one of its choices; numbers are finite."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        allowed = _literal(hint)
        if allowed and value not in allowed and value is not None:
            raise ConfigError(f"unknown {flag_name(f, prefix)} {value!r}; choose from "
                              f"{', '.join(allowed)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag_name(f, prefix)} must be a finite number, got {value}")


def _literal(hint: Any) -> tuple[str, ...]:
    """The choices of a Literal (or Literal | None) type, else ()."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType):
        for arg in get_args(hint):
            if get_origin(arg) is Literal:
                return get_args(arg)
    return ()


@dataclass(frozen=True)
class Training:
    """Training of the base model (iteration 0)."""

    epochs: int | None = setting(None, "epoch cap of base training, a safety limit: training "
                                       "stops when the validation accuracy plateaus [100]")
    patience: int = setting(TrainConfig.patience, "base training stops after this many epochs "
                                                  "without a better validation accuracy")
    lr: float = setting(3e-3, "peak AdamW learning rate")
    batch_size: int | None = setting(None, "mini-batch size [256; 32 for digits; your own "
                                           "data: about 32 batches an epoch, 16 to 256]")
    shift: int | None = setting(None, "random image shifts of up to this many pixels "
                                      "[1; 0 for digits]")
    label_smoothing: float = setting(0.1, "cross-entropy label smoothing")
    # How the lr moves and how the products are computed, in base training and retraining alike.
    lr_schedule: Schedule = setting("plateau", "learning rate: plateau (halved whenever the "
                                               "validation accuracy stalls), cosine (over the "
                                               "epoch cap) or constant", flag="lr-schedule")
    precision: Precision = setting("auto", "matrix products of the training steps: bf16, fp32, "
                                           "or auto (bf16 where the CPU has bf16 instructions; "
                                           "the environment variable IAPRUNE_PRECISION=fp32 or "
                                           "bf16 decides what auto means on this machine); "
                                           "evaluation is always fp32", flag="precision")

    def __post_init__(self):
        _check_choices(self)
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("--epochs must be >= 1")


@dataclass(frozen=True)
class Retraining:
    """Retraining after each prune step."""

    epochs: int = setting(50, "epoch cap of retraining per iteration, a safety limit (0 = "
                              "prune without retraining)")
    patience: int = setting(3, "retraining stops after this many epochs without a better "
                               "validation accuracy")
    lr: float | None = setting(None, "retraining: peak learning rate [0.007; 0.005 for digits]")
    batch_size: int | None = setting(None, "retraining: mini-batch size [512; 32 for digits; "
                                           "your own data: about 32 batches an epoch, 16 to "
                                           "512]")
    shift: int | None = setting(None, "retraining: random image shifts [1; 0 for digits]")
    label_smoothing: float = setting(0.0, "retraining: label smoothing (the small pruned "
                                          "models underfit with it)")
    distill: float = setting(0.0, "weight of knowledge distillation while retraining",
                             flag="distill")
    teacher: Teacher = setting("base", "distillation teacher",
                               flag="teacher")
    temperature: float = setting(4.0, "distillation softmax temperature", flag="temperature")
    until: Until = setting("parent", "retraining stops once the model is back at the validation "
                                     "accuracy of the model it was pruned from (parent; a pruned "
                                     "model already there is not retrained), or only when its "
                                     "validation accuracy has converged (converged: more epochs, "
                                     "better small models)")

    def __post_init__(self):
        _check_choices(self, "retrain-")
        if self.epochs < 0:
            raise ConfigError("--retrain-epochs must be >= 0")


@dataclass(frozen=True)
class Scoring:
    """How units are scored and how removed units are folded into their consumer."""

    criterion: Criterion = setting("interval_adjoint", "significance criterion")
    seed_mode: SeedMode = setting("per_output", "interval-adjoint reverse-sweep seeding")
    measure: Measure | None = setting(None, "interval-adjoint: read units before (pre) or after "
                                            "(post) their activation [post for networks with "
                                            "conv layers, pre for MLPs]")
    box: Box = setting("data", "interval-adjoint input box: data (min/max per feature), "
                               "quantile (5th to 95th percentile per feature) or samples")
    bias_fold: Fold = setting("linear", "fold removed units into the consumer: linear "
                                        "(least-squares), mean, mid or none")
    allocation: Allocation = setting("layer", "how a schedule row is split across groups: "
                                              "layer (each column keeps its own count) or "
                                              "global (the row's total goes to the highest "
                                              "scores of all groups, at least 1 per group)")

    def __post_init__(self):
        _check_choices(self)


@dataclass(frozen=True)
class PruneConfig:
    """Every setting of a pruning run; saved to config.json and re-read on resume.

    Each field is also a flag of `iaprune iterativeprune` (its name with dashes: `val_size` is
    `--val-size`; the nested `training`, `retraining` and `scoring` settings are
    `--epochs`, `--retrain-epochs`, `--criterion`, ...). Invalid values raise ConfigError.
    From Python, `dataset` may also be the data itself (an (x, y) pair of arrays or tensors, a
    torch Dataset of (x, y) items, or a Dataset), and `arch` or `base_model` your own nn.Module:
    run() reads them and config.json records "python object" with the data's fingerprint.

    Example:
        >>> from iaprune import PruneConfig, Retraining, Scoring
        >>> PruneConfig(dataset="digits", arch="cnn3", scoring=Scoring(criterion="taylor"),
        ...             retraining=Retraining(epochs=4)).scoring.criterion
        'taylor'
    """

    dataset: str = setting("mnist", "dataset: mnist, fashion-mnist, digits, or a path to your "
                                    "own data (an image folder, .npz, .csv or .parquet)")
    target: str | None = setting(None, "label column of a .csv or .parquet table")
    image_size: int | None = setting(None, "image folder: resize every image to N x N [the "
                                           "most common size]")
    stream: bool = setting(False, "image folder: read the images from disk in batches "
                                  "(DataLoader worker processes) even when they fit in memory, "
                                  "with the same results [automatic when they would take more "
                                  "than half the available memory]")
    arch: str | None = setting(None, "architecture: a preset (mlp, lenet5, cnn3, resnet8, "
                                     "resnet20) or a JSON spec file [mlp; with only --base-model "
                                     "given, its own]")
    hidden: tuple[int, ...] | None = setting(None, "hidden layer sizes of the mlp architecture "
                                                   "[256 64]")
    activation: Activation = setting("relu", "activation of the mlp architecture")
    mode: Mode = setting("iterative", "iterative (re-score each pruned model) or one-shot "
                                      "(score the base model once)")
    seed: int = setting(0, "random seed; every random stream derives from (seed, iteration)")
    val_size: int | None = setting(None, "validation split size [5000; 180 for digits; a "
                                                  "tenth of the training split for your own "
                                                  "data]")
    max_accuracy_drop: float | None = setting(
        None, "stop once validation accuracy falls this many points below the base model's")
    base_model: str | None = setting(None, "take iteration 0 from this checkpoint instead of "
                                           "training")
    device: Device = setting("cpu", "where models are trained, scored and evaluated (a GPU is "
                                    "never needed)")
    training: Training = field(default_factory=Training)
    retraining: Retraining = field(default_factory=Retraining)
    scoring: Scoring = field(default_factory=Scoring)

    def __post_init__(self):
        _check_choices(self)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or \
                not -SEED_LIMIT < self.seed < SEED_LIMIT:
            raise ConfigError(f"--seed must be an integer between -2**40 and 2**40, got "
                              f"{self.seed!r}")
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(self.hidden))
            if not self.hidden or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                      for n in self.hidden):
                raise ConfigError(f"--hidden sizes must be integers >= 1, got "
                                  f"{' '.join(map(str, self.hidden)) or 'none'}")
        if isinstance(self.dataset, os.PathLike):
            object.__setattr__(self, "dataset", os.fspath(self.dataset))
        try:
            check_name(self.dataset)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        if holds_data(self.dataset):  # the data itself: run() reads it as run(data=...)
            name = PYTHON_OBJECT
        else:
            name = self.dataset
            if is_path(self.dataset):  # data outside the session: any folder finds it
                object.__setattr__(self, "dataset", os.path.abspath(self.dataset))
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(
                self.image_size, int) or self.image_size < 1):
            raise ConfigError(f"--image-size must be an integer >= 1, got {self.image_size!r}")
        if not isinstance(self.stream, bool):
            raise ConfigError(f"--stream is true or false, got {self.stream!r}")
        if isinstance(self.base_model, str | os.PathLike):  # outside the session: found anywhere
            object.__setattr__(self, "base_model", os.path.abspath(self.base_model))
        elif self.base_model is not None and not is_module(self.base_model):
            raise ConfigError(f"base_model must be a checkpoint path or an nn.Module, got "
                              f"{type(self.base_model).__name__}")
        if self.arch is not None and not isinstance(self.arch, str) and not is_module(self.arch):
            raise ConfigError(f"arch must be a preset, a spec file or an nn.Module, got "
                              f"{type(self.arch).__name__}")
        if self.val_size is None:
            object.__setattr__(self, "val_size", DEFAULT_VAL_SIZE.get(name))
        for section_name, defaults in dataset_defaults(name).items():  # fill unset ones
            section = getattr(self, section_name)
            unset = {k: v for k, v in defaults.items() if getattr(section, k) is None}
            object.__setattr__(self, section_name, replace(section, **unset))
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop >= 0:
            raise ConfigError("--max-accuracy-drop must be >= 0 (percentage points)")
        needs = CRITERION_ACTIVATIONS.get(self.scoring.criterion, (self.activation,))
        if self.activation not in needs:
            raise ConfigError(f"--criterion {self.scoring.criterion} needs --activation "
                              f"{' or '.join(needs)}, got {self.activation}")
        for iteration, what in ((0, "base training"), (1, "retraining (--retrain-* flags)")):
            try:  # retraining's settings too: they must fail before the base model is trained
                self.train_config(iteration)
            except UserError as exc:
                raise ConfigError(f"{what}: {exc}") from None

    def train_config(self, iteration: int) -> TrainConfig:
        """Training settings of `iteration` (0 = base training), seeded by (seed, iteration)."""
        seed = iteration_seed(self.seed, iteration)
        if iteration == 0:
            t = self.training
            return TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                               batch_cap=GENERAL_DEFAULTS["training"]["batch_size"],
                               patience=t.patience, seed=seed, shift=t.shift,
                               schedule=t.lr_schedule, precision=t.precision,
                               label_smoothing=t.label_smoothing)
        r, t = self.retraining, self.training
        return TrainConfig(epochs=r.epochs, batch_size=r.batch_size, lr=r.lr,
                           batch_cap=GENERAL_DEFAULTS["retraining"]["batch_size"],
                           patience=r.patience, seed=seed, shift=r.shift,
                           schedule=t.lr_schedule, precision=t.precision, decay_patience=1,
                           label_smoothing=r.label_smoothing, warmup_epochs=0.0,
                           temperature=r.temperature,
                           distill=r.distill if r.teacher != "none" else 0.0)

    def __repr__(self) -> str:
        """The settings; a network or data given as a Python object by its type and size (a
        module's repr is its whole structure, an array's its numbers)."""
        def shown(name: str, value: Any) -> str:
            if is_module(value):
                return f"<{type(value).__name__} module>"
            if name == "dataset" and holds_data(value):
                try:
                    n = len(value[0] if isinstance(value, (tuple, list)) else value)
                except TypeError:
                    return f"<{type(value).__name__}>"
                return f"<{type(value).__name__} of {n} samples>"
            return repr(value)
        settings = ", ".join(f"{f.name}={shown(f.name, getattr(self, f.name))}"
                             for f in fields(self))
        return f"PruneConfig({settings})"

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["hidden"] = None if self.hidden is None else list(self.hidden)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any], source: str) -> PruneConfig:
        """Rebuild from config.json (nested, or the flat form of earlier versions); an unknown
        key is an error naming the file."""
        values = {k: v for k, v in values.items() if k not in IGNORED_KEYS}
        if not any(isinstance(v, dict) for v in values.values()):
            values = _unflatten(values, source)
        top = {f.name for f in fields(cls)}
        unknown = set(values) - top
        for name in SECTIONS:
            section = values.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{source}: {name} must be an object")
            unknown |= {f"{name}.{k}" for k in set(section) - {f.name for f in fields(
                SECTIONS[name])}}
        if unknown:
            raise ConfigError(f"{source}: unknown settings {sorted(unknown)}")
        built = {name: SECTIONS[name](**values.get(name, {})) for name in SECTIONS}
        return cls(**{**{k: v for k, v in values.items() if k not in SECTIONS}, **built})


# Defaults that depend on the dataset: the 1,257 tiny 8x8 digits want small batches, more epochs
# and no shifting; the 28x28 sets train fast at batch 256 and gain from 1-pixel shifts.
# Retraining takes batches of 512 at a peak lr of 7e-3: the pruned models are small, so each step
# is mostly fixed overhead, and halving the steps cut the run by ~15 % at equal accuracy (seeds
# 0, 1, 2; README, "What we chose").
GENERAL_DEFAULTS = {"training": {"epochs": TrainConfig.epochs, "batch_size": 256, "shift": 1},
                    "retraining": {"batch_size": 512, "lr": 7e-3, "shift": 1}}
DATASET_DEFAULTS = {"digits": {"training": {"batch_size": 32, "shift": 0},
                               "retraining": {"batch_size": 32, "lr": 5e-3, "shift": 0}}}


def dataset_defaults(dataset: str) -> dict[str, dict[str, Any]]:
    """{section: {field: default}} of the settings whose default depends on the dataset (the
    same for every architecture: LeNet-5 retrained as well and faster with the MLP's settings
    as with small batches; README, "Convolutional networks"). Your own data's batch sizes stay
    unset: the trainer takes about 32 batches an epoch (trainer.auto_batch_size, which gives the
    built-in sets their own sizes), so a table of a few hundred rows is not trained in one or two
    steps an epoch."""
    special = DATASET_DEFAULTS.get(dataset, {})
    own = dataset not in DATASETS
    return {name: {k: v for k, v in {**values, **special.get(name, {})}.items()
                   if not (own and k == "batch_size")}
            for name, values in GENERAL_DEFAULTS.items()}


# Criteria that only make sense for some activations: apoz counts activations that are exactly
# zero, which ReLU (and ReLU6) produce and sigmoid/tanh never do (every unit would score the same).
CRITERION_ACTIVATIONS = {"apoz": tuple(e.name for e in entries() if e.activation and e.sparse)}
SECTIONS: dict[str, type] = {"training": Training, "retraining": Retraining, "scoring": Scoring}
PREFIXES = {"training": "", "retraining": "retrain-", "scoring": ""}
IGNORED_KEYS = {"version", "mlflow_run_id", "data"}  # bookkeeping kept in config.json beside
# the settings ("data": where your own data came from and its fingerprint)
# Settings added after the first release, with the value that sessions written before them ran
# with: a resumed old session keeps behaving as it did.
LEGACY = {"label_smoothing": 0.1, "retrain_label_smoothing": 0.1, "measure": "pre",
          "lr_schedule": "cosine", "precision": "fp32"}


def flag_name(f: Field, prefix: str = "") -> str:
    """The command-line flag of field `f` in a section with `prefix`."""
    return "--" + (f.metadata.get("flag") or prefix + f.name.replace("_", "-"))


@dataclass(frozen=True)
class Flag:
    """One command-line flag and where its value goes: (section or None, field)."""

    flag: str
    section: str | None
    field: Field

    @property
    def key(self) -> str:
        """The flat key of the flag (its name with underscores): the earlier config.json key."""
        return self.flag[2:].replace("-", "_")


def all_flags() -> list[Flag]:
    """Every setting's flag, in declaration order."""
    found = []
    for f in fields(PruneConfig):
        if f.name in SECTIONS:
            found += [Flag(flag_name(g, PREFIXES[f.name]), f.name, g)
                      for g in fields(SECTIONS[f.name])]
        else:
            found.append(Flag(flag_name(f), None, f))
    return found


def _unflatten(values: dict[str, Any], source: str) -> dict[str, Any]:
    """The nested form of a flat config.json written by earlier versions."""
    # before retrain_batch_size existed, retraining used the base batch size
    values = {**LEGACY, "retrain_batch_size": values.get("batch_size"), **values}
    by_key = {flag.key: flag for flag in all_flags()}
    nested: dict[str, Any] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        if key not in by_key:
            raise ConfigError(f"{source}: unknown settings [{key!r}]")
        flag = by_key[key]
        if flag.section is None:
            nested[flag.field.name] = value
        else:
            nested[flag.section][flag.field.name] = value
    return nested


def _argument_type(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: int, float, str, Literal, tuple[int, ...]."""
    kinds = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    kind = kinds[0]
    if get_origin(kind) is tuple:
        return {"type": int, "nargs": "+"}
    if kind in (int, float):
        return {"type": kind}
    return {}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One argparse option per setting, all defaulting to None (= not given)."""
    defaults = PruneConfig()
    for flag in all_flags():
        section = getattr(defaults, flag.section) if flag.section else defaults
        default = getattr(section, flag.field.name)
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        hint = typing.get_type_hints(type(section))[flag.field.name]
        choices = _literal(hint)
        text = flag.field.metadata["help"]
        if choices:
            text += f" ({', '.join(choices)})"
        if hint is bool:  # a switch: given = True, absent = None (not given)
            parser.add_argument(flag.flag, action="store_const", const=True, default=None,
                                help=text)
            continue
        if shown is not None and "[" not in text:
            text += f" [{shown}]"
        parser.add_argument(flag.flag, default=None, help=text, metavar=None if not choices
                            else flag.field.name.upper(), **_argument_type(hint))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """{flag: value} of the settings given on the command line."""
    given = {}
    for flag in all_flags():
        value = getattr(args, flag.key, None)
        if value is not None:
            given[flag.flag] = tuple(value) if isinstance(value, list) else value
    return given


def apply(config: PruneConfig | None, given: dict[str, Any]) -> PruneConfig:
    """`config` (None: the defaults) with the settings in {flag: value} replaced; settings
    whose default depends on the dataset get the given dataset's default when not set."""
    flags = {flag.flag: flag for flag in all_flags()}
    nested: dict[str, Any] = config.to_json() if config is not None else {}
    for section in SECTIONS:  # the nested form, never mistaken for an earlier flat one
        nested.setdefault(section, {})
    for name, value in given.items():
        flag = flags[name]
        if flag.section is None:
            nested[flag.field.name] = value
        else:
            nested.setdefault(flag.section, {})[flag.field.name] = value
    return PruneConfig.from_json(nested, "settings")


def value_of(config: PruneConfig, flag: str) -> Any:
    """The value of the setting behind `flag` in `config`."""
    found = {f.flag: f for f in all_flags()}[flag]
    holder = getattr(config, found.section) if found.section else config
    return getattr(holder, found.field.name)


def differences(a: PruneConfig, b: PruneConfig) -> list[str]:
    """The flags whose values differ between two configs."""
    return [f.flag for f in all_flags() if value_of(a, f.flag) != value_of(b, f.flag)]


def flat(config: PruneConfig) -> dict[str, Any]:
    """{flag key: value} of every setting (e.g. for trackers' flat parameter lists)."""
    values = {f.key: value_of(config, f.flag) for f in all_flags()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def from_flat(values: dict[str, Any]) -> PruneConfig:
    """A config from {flat key: value} (the keys of `flat`); unset settings take defaults."""
    return apply(None, {"--" + key.replace("_", "-"): tuple(v) if isinstance(v, list) else v
                        for key, v in values.items()})


def dumps(config: PruneConfig, **extra: Any) -> str:
    """config.json text: the nested settings plus bookkeeping (`version`, ...)."""
    return json.dumps({**config.to_json(), **extra}, indent=2) + "\n"

