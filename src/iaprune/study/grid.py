"""The grid of a study: its variants, settings, tracks (curve x mode) and cells, each cell one
engine session folder under the study's cache; and the checks that a cached session belongs to it.

The study's network (--arch, --hidden): its units, its cache folder and the spec kept there.

Pure data and file reads (and that spec file): nothing is trained here (iaprune.study runs the
cells).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from iaprune.config import PruneConfig, flat, from_flat
from iaprune.data import (
    DATASETS,
    INPUT_SHAPE,
    PYTHON_OBJECT,
    DatasetError,
    check_name,
    dataset_sizes,
    is_path,
    load_dataset,
)
from iaprune.data.source import kind_of
from iaprune.errors import UserError
from iaprune.files import atomic_write, first_line
from iaprune.groups import units
from iaprune.model import hidden_label
from iaprune.records import ARCH_FILE, COLUMN, RETAIN_FILE, VALIDATION_FILE, read_validation_results
from iaprune.retain import ScheduleRow, geometric_schedule, read_schedule, write_schedule
from iaprune.session import Session
from iaprune.significance import default_measure
from iaprune.spec import PRESETS, build, describe, resolve_arch

# the folder that holds the iaprune package: Ray workers import it from there
ROOT = Path(__file__).resolve().parents[2]
CURVES = ("no-retrain", "retrain")
MODES = ("iterative", "one-shot")
CURVE_COLUMN = {"no-retrain": COLUMN["no_retrain_test_accuracy"],
                "retrain": COLUMN["test_accuracy"]}
VAL_ACCURACY = COLUMN["val_accuracy"]  # what chooses (the engine's stop rule)
# A cached session's base model is the seed's when these of its row 0 are the same.
SAME_BASE = tuple(COLUMN[k] for k in ("test_accuracy", "val_accuracy", "params"))
RETRAIN_LAST_ROW = 14  # 11-3 hidden neurons on the default 256-64 q=0.8 schedule
DEFAULT_RETAIN = RETAIN_FILE  # as the engine: relative to the working folder
VARIANT_SETTINGS = ("criterion", "seed_mode", "box", "bias_fold", "measure")
# Cache folder of each (curve, mode) track: the names benchmarks/criteria.py used, so its cache
# of finished sessions stays valid.
TRACK_FOLDERS = {("no-retrain", "iterative"): "no-retrain", ("retrain", "iterative"): "retrain",
                 ("no-retrain", "one-shot"): "oneshot-no-retrain",
                 ("retrain", "one-shot"): "oneshot"}
# Settings a cached base session must share with the study (nothing else affects iteration 0).
BASE_FIELDS = ("dataset", "target", "image_size", "arch", "hidden", "activation", "epochs",
               "patience", "lr", "batch_size", "shift", "label_smoothing", "lr_schedule",
               "precision", "seed", "val_size")
# Settings never compared with a cached session: the base model's path may move with the repo.
UNCOMPARED = ("base_model", "max_accuracy_drop")
# Settings that only act while retraining: not compared for a no-retrain cell (retrain_epochs 0).
RETRAIN_ONLY = ("retrain_patience", "retrain_lr", "retrain_shift", "retrain_label_smoothing",
                "retrain_batch_size", "distill", "teacher", "temperature", "retrain_until")


DEFAULT_HIDDEN = (256, 64)  # the mlp's hidden sizes when --hidden is not given


class StudyError(UserError):
    """A study that cannot run as asked: a bad grid, a cache of other settings."""


# ----------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One pruning setting compared in a study: a criterion and its engine options."""

    name: str  # the column name in the tables
    criterion: str  # a name in iaprune.significance.CRITERIA
    seed_mode: str = "per_output"  # interval-adjoint seeding (baselines: unused)
    box: str = "data"  # interval-adjoint input box (baselines: unused)
    bias_fold: str = "linear"  # how removed neurons are folded into the next layer
    measure: str = "pre"  # interval-adjoint: neurons read before or after the activation

    @property
    def settings(self) -> dict[str, str]:
        """The engine settings this variant fixes."""
        return {k: getattr(self, k) for k in VARIANT_SETTINGS}

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


def engine_defaults(measure: str = "pre") -> dict[str, Any]:
    """The engine's default settings for a study's network: where the engine leaves the
    measure to the architecture, the network's `measure` (an MLP's is "pre", a conv net's
    "post": iaprune.significance.default_measure)."""
    engine = flat(PruneConfig())
    return {**engine, "measure": engine["measure"] or measure}


def registry(measure: str = "pre") -> dict[str, Variant]:
    """The named variants; baselines use the engine's default bias fold (and the network's
    default `measure`, which they do not read)."""
    engine = engine_defaults(measure)
    ia = [Variant("ia-per_output", "interval_adjoint", "per_output", "data", "linear"),
          Variant("ia-per_output-meanfold", "interval_adjoint", "per_output", "data", "mean"),
          Variant("ia-per_output-nofold", "interval_adjoint", "per_output", "data", "none"),
          Variant("ia-sum", "interval_adjoint", "sum", "data", "linear"),
          Variant("ia-sum-nofold", "interval_adjoint", "sum", "data", "none"),
          Variant("ia-per_output-samples", "interval_adjoint", "per_output", "samples", "linear"),
          Variant("ia-per_output-post", "interval_adjoint", "per_output", "data", "linear",
                  "post")]
    baselines = [Variant(name, name, engine["seed_mode"], engine["box"], engine["bias_fold"],
                         engine["measure"])
                 for name in ("magnitude", "taylor", "apoz", "fpgm", "random")]
    return {v.name: v for v in ia + baselines}


def default_variant(known: dict[str, Variant], measure: str = "pre") -> Variant:
    """The variant with the engine's default settings for a network whose default measure is
    `measure` (a new one if none has them): ia-per_output for an MLP, ia-per_output-post for
    a conv net."""
    engine = engine_defaults(measure)
    wanted = {k: engine[k] for k in VARIANT_SETTINGS}
    return next((v for v in known.values() if v.settings == wanted),
                Variant("engine-default", **wanted))


def parse_variant(name: str, known: dict[str, Variant], measure: str = "pre") -> Variant:
    """A registry name, 'default', or `criterion/seed_mode/box/bias_fold[/measure]` (checked;
    without a measure, the network's default `measure`)."""
    if name == "default":
        return default_variant(known, measure)
    if name in known:
        return known[name]
    parts = name.split("/")
    if len(parts) not in (4, 5):
        raise StudyError(f"unknown variant {name!r}; choose from default, {', '.join(known)} or "
                         "write criterion/seed_mode/box/bias_fold[/measure] (e.g. "
                         "interval_adjoint/sum/data/mid or magnitude/per_output/data/none)")
    variant = Variant(name, *parts) if len(parts) == 5 else Variant(name, *parts, measure)
    from_flat(variant.settings)  # names an unknown criterion, seeding, box, fold or measure
    return variant


# ----------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class StudyData:
    """The data of a study or search: a built-in set, or a path to your own (an image folder,
    .npz, .csv or .parquet, as in iaprune.iterativeprune) with its --target and --image-size."""

    dataset: str
    target: str | None = None
    image_size: int | None = None

    def __post_init__(self):
        if not isinstance(self.dataset, str) or self.dataset == PYTHON_OBJECT:
            raise StudyError(f"--dataset takes a built-in name or a path to your data, got "
                             f"{self.dataset!r}")
        try:
            check_name(self.dataset)
        except DatasetError as exc:
            raise StudyError(str(exc)) from None
        if is_path(self.dataset):  # any folder (and a Ray worker) finds it
            object.__setattr__(self, "dataset", os.path.abspath(self.dataset))
        elif (self.target, self.image_size) != (None, None):
            flag = "--target" if self.target is not None else "--image-size"
            raise StudyError(f"{flag} applies to your own data, not to the built-in "
                             f"{self.dataset}")

    @property
    def builtin(self) -> bool:
        return self.dataset in DATASETS

    @property
    def label(self) -> str:
        """The cache folder's prefix: a built-in set's name, else the path's stem and a short
        hash of the whole path ('iris-3f2a9c1e'), so that two files of one name never share
        their sessions."""
        if self.builtin:
            return self.dataset
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.dataset).stem) or "data"
        return f"{stem}-{hashlib.sha256(self.dataset.encode()).hexdigest()[:8]}"

    def load(self, root: str | os.PathLike | None = None):
        """The Dataset (an image folder only scanned: read from disk when trained on)."""
        stream = True if not self.builtin and kind_of(Path(self.dataset)) == "images" else None
        return load_dataset(self.dataset, root, target=self.target, image_size=self.image_size,
                            stream=stream)

    def shape(self) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes): a built-in's from its tables, your data's read."""
        if self.builtin:
            return INPUT_SHAPE[self.dataset], dataset_sizes(self.dataset)[1]
        data = self.load()
        return data.input_shape, data.num_classes

    def settings(self) -> dict[str, Any]:
        """The engine settings that name this data."""
        own = {} if self.builtin else {"target": self.target, "image_size": self.image_size}
        return {"dataset": self.dataset, **{k: v for k, v in own.items() if v is not None}}


# ----------------------------------------------------------------------------------- the network
def network_flags(arch: str, hidden: Sequence[int] | None
                  ) -> tuple[str, tuple[int, ...] | None]:
    """--arch and --hidden checked together: the mlp gets its hidden sizes (256 64 unless
    given), any other network none; a spec file is named by its absolute path (a study run
    from another folder, or resumed from its settings file, finds the same file)."""
    if not isinstance(arch, str) or not arch:
        raise StudyError(f"--arch must be a preset ({', '.join(PRESETS)}) or a JSON spec file, "
                         f"got {arch!r}")
    if arch == "mlp":
        return arch, tuple(DEFAULT_HIDDEN if hidden is None else hidden)
    if hidden is not None:
        raise StudyError(f"--hidden is for --arch mlp; --arch {arch} has its own layer sizes")
    return (arch if arch in PRESETS else os.path.abspath(arch)), None


@dataclass(frozen=True)
class Network:
    """The network a study prunes: the mlp of --hidden sizes, a preset, or a JSON spec file."""

    arch: str  # "mlp", a preset's name or a spec file's absolute path
    hidden: tuple[int, ...] | None  # the mlp's hidden sizes (None: another network)
    spec: dict[str, Any]  # for the dataset's input shape and classes
    units: tuple[int, ...]  # units of every prunable group (iaprune.groups): the schedule's row 0
    measure: str  # where interval_adjoint reads units by default: pre (MLP) or post (convs)

    @property
    def mlp(self) -> bool:
        return self.hidden is not None

    @property
    def name(self) -> str:
        """'mlp', the preset's name, or the spec file's stem (letters, digits, '.', '_', '-')."""
        if self.arch in PRESETS:
            return self.arch
        return re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.arch).stem) or "arch"

    @property
    def folder(self) -> str:
        """The cache folder's name after '<dataset>-': the hidden sizes for the mlp ('256-64',
        the name of earlier versions, whose caches stay valid), else '<name>-<units>'
        ('lenet5-20-50-500')."""
        label = hidden_label(list(self.units))
        return label if self.mlp else f"{self.name}-{label}"

    @property
    def word(self) -> str:
        """What the reports call a schedule row's counts: 'hidden' (mlp) or 'units'."""
        return "hidden" if self.mlp else "units"

    @property
    def flag(self) -> str:
        """'--hidden 256 64' or '--arch lenet5' (for messages)."""
        if self.mlp:
            return f"--hidden {' '.join(map(str, self.hidden))}"
        return f"--arch {self.arch}"

    def text(self) -> str:
        """The network in a report's first line: 'hidden 256-64', or 'lenet5 (conv2d 20 5 ...
        on [1, 28, 28]), units 20-50-500'."""
        label = hidden_label(list(self.units))
        return f"hidden {label}" if self.mlp else \
            f"network {self.name} ({describe(self.spec)}), units {label}"

    def settings(self, cache: Path) -> dict[str, Any]:
        """The engine settings that make a session's network: --hidden for the mlp (no arch, as
        in the sessions of earlier versions), a preset's name, or the cache's copy of a spec
        file (OUT is shared by every node of a Ray cluster; the user's file may not be)."""
        if self.mlp:
            return {"hidden": self.hidden}
        return {"arch": self.arch if self.arch in PRESETS else str(cache / ARCH_FILE)}


def resolve_network(data: StudyData, arch: str, hidden: tuple[int, ...] | None) -> Network:
    """The network of --arch (and --hidden) for `data`: its spec, units and default measure.
    A spec file that cannot be read or built, or that does not fit the data, is one line."""
    input_shape, classes = data.shape()
    spec = resolve_arch(arch, input_shape, classes, hidden)
    model = build(spec, seed=0)  # a seed: the global random stream stays untouched
    found = tuple(units(model))
    if not found:
        raise StudyError(f"--arch {arch}: nothing to prune (no hidden Linear or Conv2d before "
                         "the output layer)")
    return Network(arch, hidden if arch == "mlp" else None, spec, found, default_measure(model))


def _spec_text(spec: Any) -> str:
    try:
        return describe(spec)
    except (KeyError, TypeError, AttributeError):
        return "not a spec"


def check_network(cache: Path, network: Network) -> None:
    """Refuse a cache folder that holds the sessions of another network: every network but the
    mlp keeps its spec there in arch.json, which must be this one's (a spec file edited since,
    or another file of the same name and units); an mlp's folder has none."""
    path = cache / ARCH_FILE
    if network.mlp:
        if path.is_file():
            raise StudyError(f"{cache} holds the sessions of a network from a spec file (its "
                             f"{ARCH_FILE}), not the mlp of {network.flag}; use another --out")
        return
    if not path.is_file():
        if any(cache.glob("seed*")):
            raise StudyError(f"{cache} holds sessions without a {ARCH_FILE} (an mlp's?), not "
                             f"those of {network.flag}; use another --out")
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: unreadable ({first_line(exc)}); delete {cache} to "
                         "recompute its sessions, or use another --out") from None
    if saved != network.spec:
        raise StudyError(f"{cache} holds the sessions of another network ({_spec_text(saved)}), "
                         f"not {network.flag} ({describe(network.spec)}); delete that folder "
                         "to recompute them, or use another --out")


def write_network(cache: Path, network: Network) -> None:
    """Keep the network's spec in its cache folder (not for the mlp), before any cell runs."""
    path = cache / ARCH_FILE
    if not network.mlp and not path.is_file():
        atomic_write(path, json.dumps(network.spec, indent=2) + "\n")


# ----------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class StudyConfig:
    """The grid of a study (saved to OUT/<name>.json); the command line maps onto it."""

    dataset: str = "mnist"  # mnist, fashion-mnist, digits, or a path to your own data
    arch: str = "mlp"  # a preset (mlp, lenet5, cnn3) or a JSON spec file (its absolute path)
    hidden: tuple[int, ...] | None = None  # the mlp's hidden sizes (None: 256 64; others: None)
    target: str | None = None  # your table's label column
    image_size: int | None = None  # your image folder: every image resized to N x N
    retain: str | None = None  # schedule file (None: retain/retain.txt if it fits, else q=0.8)
    seeds: tuple[int, ...] = (0, 1, 2)  # one base model per seed
    variants: tuple[str, ...] = ()  # variant names (empty: all); the default is always included
    curves: tuple[str, ...] = CURVES  # no-retrain and/or retrain
    modes: tuple[str, ...] = ("iterative",)  # iterative and/or one-shot
    default_only: tuple[str, ...] = ()  # curves or modes on which only the default variant runs
    rows: int | None = None  # last schedule row of every curve (None: all; retrain: <= 14)
    epochs: int | None = None  # max epochs of base training (None: engine default)
    retrain_epochs: int | None = None  # max retraining epochs, retrain curve (None: default)
    name: str = "study"  # file-name prefix of the tables and plots

    def __post_init__(self):
        for name in ("seeds", "variants", "curves", "modes", "default_only"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        arch, hidden = network_flags(self.arch, self.hidden)
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "hidden", hidden)
        object.__setattr__(self, "dataset", self.data.dataset)  # a path: absolute
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise StudyError(f"--seeds needs one or more distinct seeds, got {list(self.seeds)}")
        for what, given, allowed in (("curves", self.curves, CURVES), ("modes", self.modes, MODES),
                                     ("default-only", self.default_only, CURVES + MODES)):
            unknown = [g for g in given if g not in allowed]
            if unknown or (not given and what != "default-only"):
                raise StudyError(f"--{what}: unknown or missing {unknown or 'value'}; choose from "
                                 f"{', '.join(allowed)}")
        if self.rows is not None and self.rows < 1:
            raise StudyError(f"--rows must be >= 1 (row 0 is the unpruned base), got {self.rows}")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise StudyError("--retrain-epochs must be >= 1 (the no-retrain curve uses 0)")
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise StudyError(f"--name must be letters, digits, - and _, got {self.name!r}")

    @property
    def data(self) -> StudyData:
        return StudyData(self.dataset, self.target, self.image_size)

    def to_json(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_json(cls, values: dict[str, Any], source: str) -> StudyConfig:
        """Rebuild from OUT/<name>.json; an unknown key is an error naming the file."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise StudyError(f"{source}: unknown settings {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if not _fits(value, hints[name]):
                raise StudyError(f"{source}: {name} must be {_kind(hints[name])}, got {value!r}")
        return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a StudyConfig field's type: str, int, a list for tuple[X, ...],
    or None where the type allows it."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return value is None if hint is type(None) else isinstance(value, hint)


def _kind(hint: Any) -> str:
    """A field's type in words: 'a list of int', 'int or null'."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_kind(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_kind(typing.get_args(hint)[0])}"
    return "null" if hint is type(None) else hint.__name__


@dataclass(frozen=True)
class Track:
    """One (curve, mode) of a study: the variants it runs and how many schedule rows."""

    curve: str
    mode: str
    rows: int  # schedule rows 0..rows-1
    variants: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """One engine session of a study: a seed's base model, or a (seed, track, variant)."""

    seed: int
    track: Track | None  # None for the base model
    variant: Variant | None  # None for the base model
    config: PruneConfig  # the settings a fresh session runs with
    cache: Path  # the study's OUT/cache/<dataset>-<network>/ (absolute; see cache_folder)
    id: str  # 'seed0/no-retrain/magnitude-fold_linear': its session folder under the cache
    schedule: tuple[ScheduleRow, ...]  # the rows it runs (row 0 = the base)
    base: str | None = None  # the id of the base cell it waits for
    note: str = ""  # appended to its label (a search trial: its q's)

    @property
    def root(self) -> Path:
        return self.cache / self.id

    @property
    def rows(self) -> int:
        return len(self.schedule)

    @property
    def label(self) -> str:
        """'seed 0 no-retrain iterative magnitude'."""
        what = "base" if self.track is None else \
            f"{self.track.curve} {self.track.mode} {self.variant.name}"
        return f"seed {self.seed} {what}{self.note}"

    @property
    def session(self) -> Session:
        """The engine's view of the cell's session folder."""
        return Session(self.root, self.config.mode)

    @property
    def log(self) -> Path:
        """The engine's output of every run of this cell."""
        return self.cache / "logs" / f"{self.id.replace('/', '-')}.log"

    @property
    def lock(self) -> Path:
        """Held while a process runs the cell (beside its folder: the engine wants it empty)."""
        return self.cache / f"{self.id}.lock"


@dataclass(frozen=True)
class Plan:
    """What a study runs: the schedule, the variants, the tracks and the cells (bases first)."""

    study: StudyConfig
    network: Network
    cache: Path  # OUT/cache/<dataset>-<network>/ (absolute; see cache_folder)
    schedule: tuple[ScheduleRow, ...]  # the full schedule; each track uses a prefix
    variants: dict[str, Variant]  # the compared variants, the default first
    default: Variant
    tracks: tuple[Track, ...]
    cells: tuple[Cell, ...] = field(default=())


def load_schedule(study: StudyConfig, network: Network) -> list[ScheduleRow]:
    """--retain (its first row the network's units), else retain/retain.txt when its first row
    is, else the q=0.8 geometric schedule of the units."""
    first = list(network.units)
    if study.retain is not None:
        if network.mlp:
            return read_schedule(study.retain, first)
        rows = read_schedule(study.retain)
        if list(rows[0].neurons) != first:
            raise StudyError(f"{study.retain}: first row {hidden_label(rows[0].neurons)} is not "
                             f"the units {hidden_label(first)} of {network.flag}")
        return rows
    if DEFAULT_RETAIN.is_file() and list(read_schedule(DEFAULT_RETAIN)[0].neurons) == first:
        return read_schedule(DEFAULT_RETAIN)
    return geometric_schedule(first)


def study_network(study: StudyConfig, out: Path) -> tuple[Network, Path]:
    """The study's network and its cache folder (checked to hold that network's sessions)."""
    network = resolve_network(study.data, study.arch, study.hidden)
    cache = cache_folder(out, study.data, network)
    check_network(cache, network)
    return network, cache


def make_plan(study: StudyConfig, out: Path) -> Plan:
    """The tracks and cells of `study`, whose sessions live under OUT/cache/."""
    network, cache = study_network(study, out)
    schedule = load_schedule(study, network)
    if len(schedule) < 2:
        raise StudyError("the schedule needs at least one pruning row after the base row")
    known = registry(network.measure)
    chosen = [parse_variant(n, known, network.measure) for n in (study.variants or tuple(known))]
    default = default_variant({**known, **{v.name: v for v in chosen}}, network.measure)
    variants = {default.name: default, **{v.name: v for v in chosen}}
    last = len(schedule) - 1
    tracks = []
    for mode in study.modes:
        for curve in study.curves:
            rows = (min(study.rows, last) if study.rows is not None else
                    last if curve == "no-retrain" else min(RETRAIN_LAST_ROW, last)) + 1
            only = curve in study.default_only or mode in study.default_only
            tracks.append(Track(curve, mode, rows, (default.name,) if only else tuple(variants)))
    training = training_settings(study.data, network, cache, study.epochs)
    cells = base_cells(training, study.seeds, schedule[0], cache)
    # Retrain cells first: they are the long ones, so that Ray starts them early.
    for track in sorted(tracks, key=lambda t: t.curve != "retrain"):
        for s in study.seeds:
            base = cells[study.seeds.index(s)]
            for name in track.variants:
                v = variants[name]
                config = pruning_config(training, v, base, track.mode, track.curve,
                                        study.retrain_epochs)
                folder = f"seed{s}/{TRACK_FOLDERS[track.curve, track.mode]}/{v.key}"
                cells.append(Cell(s, track, v, config, cache, folder,
                                  tuple(schedule[:track.rows]), base.id))
    return Plan(study, network, cache, tuple(schedule), variants, default, tuple(tracks),
                tuple(cells))


def cache_folder(out: Path, data: StudyData, network: Network) -> Path:
    """OUT/cache/<data>-<network>/ (absolute; 'mnist-256-64' for the mlp, as in earlier
    versions, 'mnist-lenet5-20-50-500' for others, 'iris-3f2a9c1e-256-64' for your own data):
    the sessions of every study and search of that network in OUT (a search shares the grid's
    base models)."""
    return out.resolve() / "cache" / f"{data.label}-{network.folder}"


def training_settings(data: StudyData, network: Network, cache: Path, epochs: int | None
                      ) -> dict[str, Any]:
    """The engine settings of the base models (the rest are the engine's defaults)."""
    return {**data.settings(), **network.settings(cache),
            **({} if epochs is None else {"epochs": epochs})}


def base_cells(training: dict[str, Any], seeds: tuple[int, ...], first: ScheduleRow,
               cache: Path) -> list[Cell]:
    """One base-model session per seed (schedule row 0 only), shared by every other cell."""
    return [Cell(s, None, None, from_flat({**training, "seed": s}), cache, f"seed{s}/base",
                 (first,)) for s in seeds]


def pruning_config(training: dict[str, Any], variant: Variant, base: Cell, mode: str,
                   curve: str, retrain_epochs: int | None,
                   max_accuracy_drop: float | None = None) -> PruneConfig:
    """The settings of a cell that prunes `base`'s model with `variant` on `curve`."""
    retrain = {"retrain_epochs": 0} if curve == "no-retrain" else \
        {} if retrain_epochs is None else {"retrain_epochs": retrain_epochs}
    return from_flat({**training, **variant.settings, "seed": base.seed, "mode": mode,
                      "base_model": str(base.session.checkpoint(0)),
                      "max_accuracy_drop": max_accuracy_drop, **retrain})


# ----------------------------------------------------------------------------------- the cache
def check_cached(cell: Cell) -> None:
    """Refuse a cached session of other settings; fit its schedule copy to the rows wanted.

    A session whose schedule is a shorter or longer prefix of the wanted one (another --rows)
    gets the wanted prefix written into its retain/retain.txt, so the engine's resume runs
    exactly the missing rows; finished iterations are kept.
    """
    session = cell.session
    saved = comparable(flat(PruneConfig.from_json(json.loads(session.config.read_text()),
                                                  str(session.config))))
    wanted = comparable(flat(cell.config))
    ignored = UNCOMPARED + (RETRAIN_ONLY if cell.config.retraining.epochs == 0 else ())
    names = BASE_FIELDS if cell.track is None else [n for n in wanted if n not in ignored]
    diffs = [f"{n}: cached {saved[n]!r}, wanted {wanted[n]!r}"
             for n in names if saved[n] != wanted[n]]
    if diffs:
        raise StudyError(f"{cell.root} was run with other settings ({'; '.join(diffs)}); "
                         "delete that folder to recompute it, or use another --out")
    stored, wanted = read_schedule(session.retain), list(cell.schedule)
    common = min(len(stored), len(wanted))
    if [(r.iteration, r.neurons) for r in stored[:common]] != \
            [(r.iteration, r.neurons) for r in wanted[:common]]:
        raise StudyError(f"{session.retain} is another schedule than the study's; delete "
                         f"{cell.root} to recompute it, or use another --out")
    if cell.track is not None:
        check_same_base(cell)
    if len(stored) != len(wanted) and session.last_complete() < len(wanted) - 1:
        write_schedule(wanted, session.retain)


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """A session's flat settings as a cached one is compared: a spec file is the cache's own
    arch.json wherever OUT has moved (check_network compares its content), so only 'a spec
    file' is compared, not its path."""
    arch = settings["arch"]
    return {**settings, "arch": arch if arch is None or arch in PRESETS else ARCH_FILE}


def check_same_base(cell: Cell) -> None:
    """Refuse a cached session whose iteration 0 is not the seed's current base model."""
    base = Path(cell.config.base_model).parent / VALIDATION_FILE
    mine = cell.session.validation(0)
    if not (base.is_file() and mine.is_file()):
        return
    a, b = read_validation_results(base), read_validation_results(mine)
    if any(a[c] != b[c] for c in SAME_BASE):
        raise StudyError(f"{cell.root} was pruned from another base model than "
                         f"{cell.config.base_model} (retrained since?); delete that folder to "
                         "recompute it")


def cell_done(cell: Cell) -> bool:
    """Whether the cell's session holds every row it needs, or the engine stopped it early
    (its settings' max_accuracy_drop)."""
    if not cell.session.config.is_file():
        return False
    last = cell.session.last_complete()
    return last >= cell.rows - 1 or stopped(cell, last)


def stopped(cell: Cell, last: int) -> bool:
    """Whether row `last`'s validation accuracy is more than the cell's max_accuracy_drop below
    row 0's: the engine's stop rule, read from the files (lossless floats)."""
    drop = cell.config.max_accuracy_drop
    if drop is None or last < 1:
        return False
    base, now = (float(read_validation_results(cell.session.validation(i))[VAL_ACCURACY])
                 for i in (0, last))
    return now < base - drop


def read_curve(cell: Cell) -> list[float]:
    """The cell's accuracy per schedule row, for its complete rows 0..k (empty if none)."""
    values = []
    for i in range(cell.rows):
        path = cell.session.validation(i)
        if not path.is_file():
            break
        values.append(float(read_validation_results(path)[CURVE_COLUMN[cell.track.curve]]))
    return values
