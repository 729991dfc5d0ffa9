"""Per-iteration results -> tables and plots: validation_results.txt, validations.txt, figures.

A MODE folder (`iterative_pruning/`, `one_shot_pruning/`) holds numbered iteration folders
`<i>/prune_w_retrain/validation_results.txt`; a SESSION folder holds mode folders. The results of
a mode go to `<mode>/prune_w_retrain_results/`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from matplotlib.axes import Axes

from iaprune import __version__, cli
from iaprune.files import LockHeld, atomic_write, holding, parse_json, remove_temp_files
from iaprune.plotting import COLORS, log_axis, new_figure, plain_number, save_figure
from iaprune.records import (
    CHECKPOINT_FILE,
    COMPARISON_PLOT,
    CONFIG_FILE,
    FEATURES_FILE,
    ITERATION_DIR,
    LOCK_FILE,
    LOSS_COLUMNS,
    RESULTS_DIR,
    RESULTS_FILES,
    SETTINGS_FILE,
    VALIDATION,
    VALIDATION_COLUMNS,
    VALIDATION_FILE,
    ResultsError,
    Value,
    read_features,
    read_validation_results,
)
from iaprune.session import READ_ONLY, iteration_dirs, mode_dirs

COLUMN_FORMATS = {c.name: c.fmt for c in VALIDATION}
DEFAULT_TOLERANCE = 1.0  # percentage points of validation accuracy
COMPARE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")

# ---------------------------------------------------------------- gathering a mode folder


@dataclass(frozen=True)
class IterationResult:
    """The final metrics of one complete iteration folder."""

    iteration: int  # the folder number i of <mode>/<i>/
    values: Mapping[str, Value]  # VALIDATION_COLUMNS -> value
    features: tuple[str, ...] | None = None  # a table's input columns the model reads

    def __getitem__(self, column: str) -> Value:
        return self.values[column]


@dataclass(frozen=True)
class Concatenation:
    """What concatenate() gathered, recommended and wrote for one mode folder."""

    mode_dir: Path  # the mode folder that was read
    rows: tuple[IterationResult, ...]  # complete iterations in numeric order
    skipped: tuple[int, ...]  # iteration folders without validation_results.txt
    tolerance: float  # allowed drop of validation accuracy, in percentage points
    reference: int  # iteration whose validation accuracy the tolerance is measured from
    recommended: int  # iteration of the recommended model
    recommended_path: Path  # its best_model.pth
    outputs: tuple[Path, ...]  # the files in <mode_dir>/prune_w_retrain_results/
    written: bool = True  # False when the outputs were up to date and left untouched

    def row(self, iteration: int) -> IterationResult:
        """The row of `iteration`."""
        return next(r for r in self.rows if r.iteration == iteration)


def _note(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"note: {message}", file=sys.stderr)


def gather(mode_dir: str | os.PathLike,
           quiet: bool = False) -> tuple[list[IterationResult], list[int]]:
    """Read every complete iteration of a mode folder; (rows, skipped incomplete iterations)."""
    mode_dir = Path(mode_dir)
    if not mode_dir.is_dir():
        raise ResultsError(f"{mode_dir}: no such folder")
    folders = iteration_dirs(mode_dir)
    if not folders:
        modes = [p.name for p in sorted(mode_dir.iterdir()) if p.is_dir() and iteration_dirs(p)]
        hint = f" (a session folder? its modes: {', '.join(modes)})" if modes else ""
        raise ResultsError(f"{mode_dir}: no iteration folders (0/, 1/, ...){hint}")
    rows, skipped = [], []
    for iteration, folder in folders:
        results = folder / ITERATION_DIR / VALIDATION_FILE
        if not results.exists():
            skipped.append(iteration)
            _note(f"skipping iteration {iteration}: no {ITERATION_DIR}/{VALIDATION_FILE} "
                  f"(incomplete)", quiet)
            continue
        names = read_features(folder / ITERATION_DIR / FEATURES_FILE)
        rows.append(IterationResult(iteration, read_validation_results(results),
                                    None if names is None else tuple(names)))
    if not rows:
        raise ResultsError(f"{mode_dir}: no complete iteration (none has "
                           f"<i>/{ITERATION_DIR}/{VALIDATION_FILE})")
    return rows, skipped


def recommend(rows: Sequence[IterationResult], tolerance: float = 1.0) -> tuple[int, int]:
    """(reference, recommended): the smallest model (fewest params) whose validation accuracy is
    within `tolerance` points of the reference's; the reference is iteration 0 (the base model),
    else the largest model."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ResultsError(f"tolerance must be a number of percentage points >= 0, got {tolerance}")
    if not rows:
        raise ValueError("no rows to recommend from")
    base = next((r for r in rows if r.iteration == 0), None)
    if base is None:
        base = max(rows, key=lambda r: (r["Params"], r["PercentageRetain"], -r.iteration))
    threshold = base["Val_Accuracy"] - tolerance - 1e-9  # 1e-9: 98.2 - 1.0 must admit 97.2
    within = [r for r in rows if r["Val_Accuracy"] >= threshold]
    best = min(within, key=lambda r: (r["Params"], r["PercentageRetain"], -r.iteration))
    return base.iteration, best.iteration


def checkpoint_path(mode_dir: Path, iteration: int) -> Path:
    """<mode_dir>/<iteration>/prune_w_retrain/best_model.pth."""
    return Path(mode_dir) / str(iteration) / ITERATION_DIR / CHECKPOINT_FILE


def session_path(mode_dir: Path, iteration: int) -> str:
    """Iteration's best_model.pth relative to the session (the folder holding the mode folder),
    as recommended.txt records it: a copied or moved session still names its own model."""
    mode = Path(os.path.abspath(mode_dir)).name
    return f"{mode}/{iteration}/{ITERATION_DIR}/{CHECKPOINT_FILE}"


def read_settings(results_dir: Path) -> dict:
    """concatenate.json of a results folder ({} when there is none)."""
    path = results_dir / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = parse_json(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); delete it to start afresh") from None
    tolerance = settings.get("tolerance") if isinstance(settings, dict) else None
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or \
            not math.isfinite(tolerance) or tolerance < 0:
        raise ResultsError(f"{path}: 'tolerance' must be a number >= 0; delete the file to "
                           "start afresh")
    return settings


def fingerprint(rows: Sequence[IterationResult], tolerance: float) -> str:
    """sha256 of the numbers the table, plots and recommendation are drawn from (not the
    session's name: a renamed or archived copy keeps its plots as they were drawn)."""
    content = {"version": __version__, "tolerance": tolerance,
               "rows": [[r.iteration, [r[c] for c in VALIDATION_COLUMNS]] for r in rows]}
    if any(r.features is not None for r in rows):  # unchanged stamps for sessions without
        content["features"] = [r.features for r in rows]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vouched(settings: Mapping, stamp: str, paths: Sequence[Path]) -> bool:
    """Whether concatenate.json vouches for the outputs on disk: it was written for these
    numbers (`stamp`) and each output is the file it recorded (sha256 as written). Anything
    else (a run killed mid-way, an output edited or lost) is rewritten."""
    recorded = settings.get("sha256")
    return settings.get("fingerprint") == stamp and isinstance(recorded, dict) and all(
        p.is_file() and recorded.get(p.name) == sha256_of(p) for p in paths)


def write_results(result: Concatenation, stamp: str) -> None:
    """Write the derived set so that a kill at any moment leaves it consistent or unvouched.

    Order: concatenate.json first without a fingerprint (it keeps the tolerance chosen and
    vouches for nothing), recommended.txt removed (no recommendation while the set is
    mixed), then the table and plots, recommended.txt, and concatenate.json last with the
    sha256 of each file as written. A later run finds an unvouched set and rewrites it.
    """
    table, accuracies, losses, tradeoff, recommended_txt, settings_json = result.outputs[:6]
    settings = {"tolerance": result.tolerance}
    atomic_write(settings_json, json.dumps(settings, indent=2) + "\n")
    recommended_txt.unlink(missing_ok=True)
    atomic_write(table, format_validations(result.rows))
    plot_accuracies(result, accuracies)
    plot_losses(result, losses)
    plot_tradeoff(result, tradeoff)
    atomic_write(recommended_txt, session_path(result.mode_dir, result.recommended) + "\n")
    written = (table, accuracies, losses, tradeoff, recommended_txt)
    if has_features(result.rows):
        written += (atomic_write(features_path(result.mode_dir), format_features(result.rows)),)
    settings.update(fingerprint=stamp, sha256={p.name: sha256_of(p) for p in written})
    atomic_write(settings_json, json.dumps(settings, indent=2) + "\n")


def has_features(rows: Sequence[IterationResult]) -> bool:
    """Whether the iterations name their input columns (a table's session)."""
    return any(r.features is not None for r in rows)


def features_path(mode_dir: Path) -> Path:
    """<mode_dir>/prune_w_retrain_results/features.txt."""
    return mode_dir / RESULTS_DIR / FEATURES_FILE


def format_features(rows: Sequence[IterationResult]) -> str:
    """The results' features.txt: per iteration, the count and names of the input columns its
    model reads, tab-separated (column names may hold spaces and commas)."""
    lines = ["Iteration\tFeatures\tColumns"]
    lines += ["\t".join([str(r.iteration), str(len(r.features)), *r.features])
              for r in rows if r.features is not None]
    return "\n".join(lines) + "\n"


def format_validations(rows: Sequence[IterationResult],
                       marks: Mapping[int, str] | None = None) -> str:
    """The validations.txt table: aligned, whitespace-separated, iteration number first."""
    marks = marks or {}
    table = [["Iteration", *VALIDATION_COLUMNS]]
    table += [[str(r.iteration), *(COLUMN_FORMATS[c].format(r[c]) for c in VALIDATION_COLUMNS)]
              for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    lines = [" ".join(f"{cell:>{w}}" for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in table]
    for i, r in enumerate(rows, start=1):
        if r.iteration in marks:
            lines[i] += f"  {marks[r.iteration]}"
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


def run_label(mode_dir: Path) -> str:
    """'session/mode' naming a mode folder in titles and legends."""
    mode_dir = Path(mode_dir).resolve()
    return f"{mode_dir.parent.name}/{mode_dir.name}" if mode_dir.parent.name else mode_dir.name


def _percent_axis(ax: Axes, x: Sequence[float]) -> None:
    log_axis(ax, "x", x)
    ax.invert_xaxis()  # pruning proceeds left to right
    ax.set_xlabel("units retained (% of the schedule's units, log scale; pruning proceeds "
                  "left to right)")


def _series(rows: Sequence[IterationResult], column: str) -> list[float]:
    return [float(r[column]) for r in rows]


def _mark_recommended(ax: Axes, result: Concatenation, column: str | None, x: str) -> None:
    """Vertical line at the recommended model (+ a star on `column` when given)."""
    row = result.row(result.recommended)
    label = (f"recommended: iteration {row.iteration} (units {row['Hidden']}, "
             f"{plain_number(row['Params'])} params)")
    ax.axvline(float(row[x]), color=COLORS["recommended"], linestyle=":", linewidth=1.5,
               label=None if column else label)
    if column:
        ax.plot([float(row[x])], [float(row[column])], marker="*", markersize=16,
                linestyle="none", color=COLORS["recommended"], markeredgecolor="black",
                label=label, zorder=5)


ACCURACY_SERIES = (("Train_Accuracy", "train", "train", "-"),
                   ("Val_Accuracy", "val", "validation", "-"),
                   ("Test_Accuracy", "test", "test", "-"),
                   ("NoRetrain_Test_Accuracy", "before", "test, before retraining", "--"))


def plot_accuracies(result: Concatenation, path: str | os.PathLike) -> Path:
    """Accuracies against % units retained: all of them, and a zoom near the base."""
    rows, x = result.rows, _series(result.rows, "PercentageRetain")
    fig, (full, zoom) = new_figure(2, 1, width=9.0, height=9.0, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    for ax, series in ((full, ACCURACY_SERIES), (zoom, ACCURACY_SERIES[:3])):
        for column, color, name, style in series:
            ax.plot(x, _series(rows, column), linestyle=style, marker="o", markersize=4,
                    color=COLORS[color], label=name)
        ax.set_ylabel("accuracy (%)")
    threshold = float(result.row(result.reference)["Val_Accuracy"]) - result.tolerance
    zoom.axhline(threshold, color=COLORS["reference"], linestyle="-.", linewidth=1.2,
                 label=f"iteration {result.reference} validation − {result.tolerance:g} pt "
                       f"(tolerance)")
    _mark_recommended(full, result, "Val_Accuracy", "PercentageRetain")
    _mark_recommended(zoom, result, "Val_Accuracy", "PercentageRetain")
    retrained = [v for c, *_ in ACCURACY_SERIES[:3] for v in _series(rows, c)]
    margin = max(2.0 * result.tolerance, 1.0)
    zoom.set_ylim(max(0.0, threshold - margin), min(100.0, max(retrained)) + 0.3 * margin)
    full.set_title("all iterations")
    zoom.set_title("zoom near the base model: validation accuracy decides the recommendation")
    full.set_ylim(bottom=max(0.0, min(full.get_ylim()[0], 100.0)))
    _percent_axis(zoom, x)
    _hidden_ticks(full, rows)
    full.legend(loc="best", fontsize=9)
    zoom.legend(loc="best", fontsize=8)
    fig.suptitle(f"Accuracy after pruning + retraining — {run_label(result.mode_dir)}")
    return save_figure(fig, path)


def _hidden_ticks(ax: Axes, rows: Sequence[IterationResult]) -> None:
    """A top axis naming the hidden sizes of each iteration."""
    top = ax.secondary_xaxis("top")
    top.set_xticks(_series(rows, "PercentageRetain"), [str(r["Hidden"]) for r in rows],
                   rotation=90, fontsize=7)
    top.set_xlabel("units (input features read: hidden layer sizes)" if any(
        ":" in str(r["Hidden"]) for r in rows) else "hidden layer sizes", fontsize=8)


def plot_losses(result: Concatenation, path: str | os.PathLike) -> Path:
    """Train/validation/test loss (log scale) against % units retained."""
    rows, x = result.rows, _series(result.rows, "PercentageRetain")
    fig, (ax,) = new_figure(width=9.0, height=5.5)
    for column, color, name in (("Train_Loss", "train", "train"),
                                ("Val_Loss", "val", "validation"), ("Test_Loss", "test", "test")):
        ax.plot(x, _series(rows, column), marker="o", markersize=4, color=COLORS[color],
                label=name)
    _mark_recommended(ax, result, "Val_Loss", "PercentageRetain")
    losses = [v for c in LOSS_COLUMNS for v in _series(rows, c)]
    if min(losses) > 0:
        log_axis(ax, "y", losses)
    ax.set_ylabel("cross-entropy loss (nats per sample, log scale)")
    _percent_axis(ax, x)
    _hidden_ticks(ax, rows)
    ax.legend(loc="best", fontsize=9)
    ax.set_title(f"Loss after pruning + retraining — {run_label(result.mode_dir)}")
    return save_figure(fig, path)


def plot_tradeoff(result: Concatenation, path: str | os.PathLike) -> Path:
    """Test accuracy against parameter count (log x, fewer parameters to the right)."""
    rows, params = result.rows, _series(result.rows, "Params")
    fig, (ax,) = new_figure(width=9.0, height=5.5)
    ax.plot(params, _series(rows, "Test_Accuracy"), marker="o", markersize=4,
            color=COLORS["test"], label="test, after retraining")
    ax.plot(params, _series(rows, "NoRetrain_Test_Accuracy"), marker="o", markersize=3,
            linestyle="--", color=COLORS["before"], label="test, before retraining")
    _mark_recommended(ax, result, "Test_Accuracy", "Params")
    for r in rows:
        ax.annotate(str(r["Hidden"]), (float(r["Params"]), float(r["Test_Accuracy"])),
                    textcoords="offset points", xytext=(3, 5), fontsize=6.5, rotation=45,
                    color="#444444")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.08 * (high - low))  # room for the rotated labels under the title
    log_axis(ax, "x", params)
    ax.invert_xaxis()
    ax.set_xlabel("parameters (count, log scale; fewer to the right)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="best", fontsize=9)
    ax.set_title(f"Accuracy vs model size — {run_label(result.mode_dir)} "
                 f"(labels: hidden sizes)")
    return save_figure(fig, path)


def plot_comparison(runs: Sequence[tuple[str, Sequence[IterationResult], int | None]],
                    path: str | os.PathLike, tolerance: float = 1.0) -> Path:
    """Test accuracy of several runs after (solid) and before (dashed) retraining, with a zoom."""
    fig, (full, zoom) = new_figure(2, 1, width=9.0, height=9.0, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    for index, (label, rows, recommended) in enumerate(runs):
        color, x = COMPARE_COLORS[index % len(COMPARE_COLORS)], _series(rows, "PercentageRetain")
        best = next((r for r in rows if r.iteration == recommended), None)
        for ax in (full, zoom):
            ax.plot(x, _series(rows, "Test_Accuracy"), marker="o", markersize=4, color=color,
                    label=f"{label}: test" + (f" (★ {best['Hidden']})" if best else ""))
            if best is not None:
                ax.plot([float(best["PercentageRetain"])], [float(best["Test_Accuracy"])],
                        marker="*", markersize=15, color=color, markeredgecolor="black",
                        linestyle="none", zorder=5)
        full.plot(x, _series(rows, "NoRetrain_Test_Accuracy"), linestyle="--", linewidth=1,
                  marker=".", color=color, alpha=0.7, label=f"{label}: test, before retraining")
    top = max(float(r["Test_Accuracy"]) for _, rows, _ in runs for r in rows)
    zoom.set_ylim(top - 5.0 * max(tolerance, 0.5), top + 0.5)
    for ax in (full, zoom):
        ax.set_ylabel("test accuracy (%)")
    full.set_title("all iterations (★: each run's recommended model)")
    zoom.set_title("zoom near the best test accuracy, after retraining")
    _percent_axis(zoom, [float(r["PercentageRetain"]) for _, rows, _ in runs for r in rows])
    full.legend(loc="best", fontsize=8)
    zoom.legend(loc="best", fontsize=8)
    fig.suptitle("Comparison of runs: test accuracy before and after retraining")
    return save_figure(fig, path)


# ---------------------------------------------------------------- the step


def concatenate(mode_dir: str | os.PathLike, tolerance: float | None = None,
                compare: Sequence[str | os.PathLike] = (), quiet: bool = False) -> Concatenation:
    """Gather a mode folder's iterations, recommend a model, write prune_w_retrain_results/.

    `tolerance` None takes the one last used for this folder (concatenate.json), else 1.0.
    Outputs that would come out the same are not rewritten (a read-only finished session
    needs no write); comparison.png is drawn whenever `compare` names runs.
    """
    mode_dir = Path(mode_dir)
    rows, skipped = gather(mode_dir, quiet)
    out = mode_dir / RESULTS_DIR
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out}: is a file, not a folder (the results are written there; "
                           "move the file away)")
    settings = read_settings(out)
    if tolerance is None:
        tolerance = float(settings.get("tolerance", DEFAULT_TOLERANCE))
    reference, recommended = recommend(rows, tolerance)
    paths = tuple(out / name for name in RESULTS_FILES)
    stamp = fingerprint(rows, tolerance)
    checked = paths[:-1] + ((features_path(mode_dir),) if has_features(rows) else ())
    written = not vouched(settings, stamp, checked)
    outputs = paths + ((features_path(mode_dir),) if has_features(rows) else ())
    result = Concatenation(mode_dir, tuple(rows), tuple(skipped), float(tolerance), reference,
                           recommended, checkpoint_path(mode_dir, recommended), outputs, written)
    if reference != 0:
        _note(f"{mode_dir}: no iteration 0 (base model); tolerance measured from iteration "
              f"{reference}", quiet)
    if written:
        write_results(result, stamp)
    if compare:
        runs = [(run_label(mode_dir), rows, recommended)]
        for other in compare:
            other_rows, _ = gather(other, quiet=True)
            runs.append((run_label(Path(other)), other_rows, recommend(other_rows, tolerance)[1]))
        result = replace(result, outputs=outputs + (out / COMPARISON_PLOT,))
        plot_comparison(_unique_labels(runs, [mode_dir, *map(Path, compare)]),
                        out / COMPARISON_PLOT, tolerance)
    if not quiet:
        print(_report(result))
    return result


def _unique_labels(runs: list, dirs: Sequence[Path]) -> list:
    """Fall back to full paths when two runs would share a legend name."""
    labels = [label for label, *_ in runs]
    if len(set(labels)) == len(labels):
        return runs
    return [(str(d), *rest) for d, (_, *rest) in zip(dirs, runs, strict=True)]


def _report(result: Concatenation) -> str:
    """The printed summary: the table with the recommended row marked, and what was written."""
    row, base = result.row(result.recommended), result.row(result.reference)
    marks = {result.recommended: "<- recommended"}
    lines = [f"{result.mode_dir}: {len(result.rows)} complete iterations"
             + (f", skipped {list(result.skipped)}" if result.skipped else ""),
             format_validations(result.rows, marks),
             f"recommended: iteration {row.iteration} (units {row['Hidden']}, "
             f"{row['Params']} params, {row['PercentageRetain']:.2f}% of the units): "
             f"validation {row['Val_Accuracy']:.2f}% vs {base['Val_Accuracy']:.2f}% at iteration "
             f"{base.iteration} (tolerance {result.tolerance:g} pt), test "
             f"{row['Test_Accuracy']:.2f}%",
             f"  {result.recommended_path}",
             *([] if row.features is None else [
                 f"  reads {len(row.features)} input columns: {', '.join(row.features)}"]),
             (f"wrote into {result.outputs[0].parent}: " if result.written else
              f"up to date (nothing rewritten) in {result.outputs[0].parent}: ")
             + ", ".join(p.name for p in result.outputs)]
    return "\n".join(lines)


def own_session(stack: contextlib.ExitStack, root: Path) -> bool:
    """Take the lock of session `root` into `stack` when no run holds it; whether taken (a
    folder that is not a session gets no lock file)."""
    if not (root / CONFIG_FILE).is_file():
        return False
    try:
        stack.enter_context(holding(root / LOCK_FILE, wait=False))
    except LockHeld:
        return False  # a run is writing there: its temp files are not leftovers
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iaprune.concatenate",
        description="Gather every iteration's validation_results.txt of a session (each mode) or "
                    "of one mode folder into prune_w_retrain_results/: validations.txt, "
                    "accuracies.png, losses.png, tradeoff.png and recommended.txt.")
    parser.add_argument("folder", type=Path, metavar="SESSION_OR_MODE_DIR",
                        help="a session folder (each mode inside is processed) or a mode folder")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="recommend the smallest model whose validation accuracy is within "
                             "this many percentage points of the base model's (default: the "
                             f"tolerance last used for the folder, else {DEFAULT_TOLERANCE})")
    parser.add_argument("--compare", type=Path, nargs="+", default=[], metavar="OTHER_DIR",
                        help="sessions or mode folders to overlay on comparison.png")
    args = parser.parse_args(argv)

    if args.tolerance is not None and (not math.isfinite(args.tolerance) or args.tolerance < 0):
        raise ResultsError(f"--tolerance must be >= 0 percentage points, got {args.tolerance}")
    modes = mode_dirs(args.folder)
    others = [m for other in args.compare for m in mode_dirs(other)]
    if len(modes) > 1:
        print(f"{args.folder}: session with modes {', '.join(m.name for m in modes)}; "
              f"processing each (each comparison.png overlays the others)\n")
    for mode in modes:
        overlay = [m for m in [*modes, *others] if m.resolve() != mode.resolve()]
        try:
            with contextlib.ExitStack() as stack:
                if own_session(stack, mode.parent):  # no run writes there: a kill's leftovers go
                    remove_temp_files(mode / RESULTS_DIR)
                concatenate(mode, args.tolerance, list(dict.fromkeys(overlay)))
        except OSError as exc:
            if exc.errno not in READ_ONLY:
                raise
            raise ResultsError(f"{mode / RESULTS_DIR}: cannot write the results "
                               f"({exc.strerror})") from None
        print()
    return 0


def entry(argv: list[str] | None = None) -> int:
    """The console entry point: main() with expected errors as one line, exit code 2."""
    return cli.run(main, argv)


if __name__ == "__main__":
    raise SystemExit(entry())
