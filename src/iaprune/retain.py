"""Geometric neuron-retention schedules (retain.txt): generate, write, read, plot.

Row r of a schedule is pruning iteration r (its session folder is `r/`); its `iteration` is the
exponent t with N_l(t) = max(min_neurons, round(h_l * q_l**t)). Rows equal to the previous row are
skipped and the schedule stops at the first row where every column is at its minimum.

An optional input column (`inNodesRetained`, first after `Iteration`) keeps
N_in(t) = max(min_inputs, round(n_in * q_in**t)) input features; a schedule without it never
prunes inputs. perNodesRetained is 100 * (units kept) / (unpruned units) over the schedule's unit
columns: the hidden units, plus the input features when the input column is there.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iaprune import cli
from iaprune.errors import UserError
from iaprune.files import atomic_write, file_problem, folder_problem
from iaprune.model import hidden_label
from iaprune.plotting import COLORS, log_axis, new_figure, save_figure
from iaprune.records import SCHEDULE_DIR, SCHEDULE_FILE, SCHEDULE_PLOTS

ITERATION, INPUTS, PERCENT = "Iteration", "inNodesRetained", "perNodesRetained"
PERCENT_SLACK = 0.5  # a written perNodesRetained may be rounded (e.g. to an integer) by this much
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


class ScheduleError(UserError):
    """A retain.txt that cannot be used; the message is one line `FILE:LINE: problem`."""


@dataclass(frozen=True)
class ScheduleRow:
    """One pruning iteration of a schedule."""

    iteration: int  # the exponent t used for this row
    neurons: tuple[int, ...]  # kept units per hidden group (neurons or conv channels), in order
    percent: float  # 100 * sum(units) / sum(unpruned units), over every unit column
    inputs: int | None = None  # kept input features (inNodesRetained); None: never pruned

    @property
    def units(self) -> tuple[int, ...]:
        """Kept units of every prunable group in the order of iaprune.groups.groups(model, inputs):
        the input features first when the schedule prunes them."""
        return self.neurons if self.inputs is None else (self.inputs, *self.neurons)


def layer_column(layer: int) -> str:
    """Header name of hidden layer `layer` (1-based): 'h1NodesRetained'."""
    return f"h{layer}NodesRetained"


def header(n_layers: int, inputs: bool = False) -> list[str]:
    """The retain.txt header for `n_layers` hidden layers (and the input column)."""
    return [ITERATION, *([INPUTS] if inputs else []),
            *(layer_column(i) for i in range(1, n_layers + 1)), PERCENT]


def unit_columns(n_layers: int, inputs: bool = False) -> list[str]:
    """The header names of a schedule's unit columns (all but Iteration and the percentage)."""
    return header(n_layers, inputs)[1:-1]


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (204.5 -> 205), unlike Python's banker's round."""
    return math.floor(x + 0.5)


def percent_retained(neurons: Sequence[int], hidden: Sequence[int]) -> float:
    """100 * sum(neurons) / sum(hidden)."""
    return 100.0 * sum(neurons) / sum(hidden)


def format_percent(percent: float) -> str:
    """perNodesRetained as written: at most 2 decimals, no trailing zeros (100, 80, 64.06)."""
    return f"{percent:.2f}".rstrip("0").rstrip(".")


def _check_hidden(hidden: Sequence[int]) -> list[int]:
    hidden = list(hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise UserError(f"hidden sizes must be one or more integers >= 1, got {hidden}")
    return hidden


def _check_q(q: float | Sequence[float], n_layers: int) -> list[float]:
    qs = [float(q)] * n_layers if isinstance(q, int | float) else [float(v) for v in q]
    if len(qs) != n_layers:
        raise UserError(f"q needs one value or one per hidden layer ({n_layers}), got {len(qs)}")
    if any(not 0.0 < v <= 1.0 for v in qs):  # also rejects NaN
        raise UserError(f"q must be in (0, 1] (the fraction kept per step), got {qs}")
    return qs


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def geometric_schedule(hidden: list[int], q: float | list[float] = 0.8, iterations: int = 31,
                       min_neurons: int = 1, inputs: int | None = None,
                       q_inputs: float | None = None, min_inputs: int = 1) -> list[ScheduleRow]:
    """The geometric retention schedule: rows for t = 0 .. iterations-1 of
    N_l(t) = max(min_neurons, round(h_l * q_l**t)); rows equal to the previous are skipped and
    the schedule stops once every layer is at its minimum.

    Args:
        hidden: the unpruned units of every prunable group (hidden layers, conv layers).
        q: the retention factor per step, one for all groups or one per group.
        iterations: the number of exponents t tried.
        min_neurons: the fewest units a group keeps.
        inputs: the unpruned input count, to prune the inputs too (an input column
            N_in(t) = max(min_inputs, round(inputs * q_inputs**t))).
        q_inputs: the inputs' factor (default: the first group's q).
        min_inputs: the fewest inputs kept.

    Returns:
        list[ScheduleRow]: row r is pruning iteration r (row 0 is the unpruned network).

    Example:
        >>> from iaprune import geometric_schedule
        >>> [row.neurons for row in geometric_schedule([256, 64], q=0.5, iterations=3)]
        [(256, 64), (128, 32), (64, 16)]
    """
    hidden = _check_hidden(hidden)
    qs = _check_q(q, len(hidden))
    _check_count(iterations, "iterations")
    _check_count(min_neurons, "min_neurons")
    if min_neurons > min(hidden):
        raise UserError(f"min_neurons {min_neurons} exceeds the smallest hidden layer "
                         f"({min(hidden)}); counts would grow")
    sizes, rates, floors = list(hidden), list(qs), [min_neurons] * len(hidden)
    if inputs is not None:
        _check_count(inputs, "inputs")
        (q_in,) = _check_q(qs[0] if q_inputs is None else q_inputs, 1)
        _check_count(min_inputs, "min_inputs")
        if min_inputs > inputs:
            raise UserError(f"min_inputs {min_inputs} exceeds the {inputs} inputs; counts "
                             "would grow")
        sizes, rates, floors = [inputs, *sizes], [q_in, *rates], [min_inputs, *floors]
    if all(v == 1.0 for v in rates):
        raise UserError("q = 1 for every column prunes nothing; use q < 1 for some column")
    rows: list[ScheduleRow] = []
    for t in range(iterations):
        units = tuple(max(floor, round_half_up(n * rate**t))
                      for n, rate, floor in zip(sizes, rates, floors, strict=True))
        if rows and units == rows[-1].units:
            continue  # the same network again would prune nothing
        rows.append(_row(t, units, sizes, inputs is not None))
        if list(units) == floors:
            break
    return rows


def _row(iteration: int, units: Sequence[int], unpruned: Sequence[int],
         inputs: bool) -> ScheduleRow:
    """A ScheduleRow from the counts of every unit column (the input count first with
    `inputs`)."""
    units = tuple(units)
    percent = percent_retained(units, unpruned)
    return ScheduleRow(iteration, units[1:], percent, units[0]) if inputs else \
        ScheduleRow(iteration, units, percent)


def _check_rows(rows: Sequence[ScheduleRow]) -> int:
    if not rows:
        raise ValueError("a schedule needs at least one row")
    n_layers = len(rows[0].neurons)
    if any(len(row.neurons) != n_layers for row in rows):
        raise ValueError("every schedule row needs the same number of hidden layers")
    if any((row.inputs is None) != (rows[0].inputs is None) for row in rows):
        raise ValueError("every schedule row needs an input count, or none does")
    return n_layers


def prunes_inputs(rows: Sequence[ScheduleRow]) -> bool:
    """Whether a schedule has the input column (a schedule without it never prunes inputs)."""
    return bool(rows) and rows[0].inputs is not None


def format_schedule(rows: Sequence[ScheduleRow], aligned: bool = False) -> str:
    """The retain.txt text (single spaces, seed-compatible) or an aligned table for printing."""
    table = [header(_check_rows(rows), prunes_inputs(rows))]
    table += [[str(r.iteration), *map(str, r.units), format_percent(r.percent)] for r in rows]
    if not aligned:
        return "\n".join(" ".join(line) for line in table) + "\n"
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    return "\n".join(" ".join(f"{cell:>{w}}" for cell, w in zip(line, widths, strict=True))
                     for line in table) + "\n"


def write_schedule(rows: Sequence[ScheduleRow], path: str | os.PathLike) -> Path:
    """Write `rows` as a retain.txt (header + one line per row), atomically.

    Args:
        rows: a schedule, e.g. from `geometric_schedule`.
        path: the file to write.

    Returns:
        Path: the file written.

    Example:
        >>> from iaprune import geometric_schedule, write_schedule
        >>> write_schedule(geometric_schedule([32, 16], q=0.7, iterations=3), "retain.txt")
        PosixPath('retain.txt')
    """
    return atomic_write(path, format_schedule(rows))


def _parse_int(token: str, name: str, where: str, minimum: int) -> int:
    if re.fullmatch(r"[+-]?[0-9]+", token) is None:
        raise ScheduleError(f"{where}: {name} must be an integer, got {token!r}")
    value = int(token)
    if value < minimum:
        why = " (a layer cannot be removed)" if minimum == 1 else ""
        raise ScheduleError(f"{where}: {name} must be >= {minimum}{why}, got {value}")
    return value


def _parse_row(tokens: list[str], columns: list[str],
               where: str) -> tuple[int, tuple[int, ...], float]:
    """(Iteration, the counts of every unit column, perNodesRetained) of one row."""
    if len(tokens) != len(columns) + 2:
        raise ScheduleError(f"{where}: expected {len(columns) + 2} columns as in the header, "
                            f"got {len(tokens)}")
    iteration = _parse_int(tokens[0], ITERATION, where, minimum=0)
    neurons = tuple(_parse_int(tok, name, where, minimum=1)
                    for name, tok in zip(columns, tokens[1:-1], strict=True))
    try:
        percent = float(tokens[-1])
    except ValueError:
        percent = math.nan
    if not math.isfinite(percent):
        raise ScheduleError(f"{where}: {PERCENT} must be a number, got {tokens[-1]!r}")
    return iteration, neurons, percent


def _check_step(previous: ScheduleRow, iteration: int, units: tuple[int, ...],
                columns: list[str], where: str):
    if iteration <= previous.iteration:
        raise ScheduleError(f"{where}: {ITERATION} must increase from row to row "
                            f"(got {iteration} after {previous.iteration})")
    for name, before, now in zip(columns, previous.units, units, strict=True):
        if now > before:
            raise ScheduleError(f"{where}: {name} grows from {before} to {now} "
                                f"(counts may only shrink)")
    if units == previous.units:
        raise ScheduleError(f"{where}: row repeats the previous row's counts (prunes nothing)")


def read_schedule(path: str | os.PathLike,
                  hidden: Sequence[int] | None = None) -> list[ScheduleRow]:
    """Read and validate a retain.txt (ScheduleError names the line and the problem).

    Args:
        path: the schedule file.
        hidden: when given, the first row must equal these unit counts.

    Returns:
        list[ScheduleRow]: the rows in order.

    Example:
        >>> from iaprune import read_schedule
        >>> read_schedule("retain.txt")[1].neurons
        (22, 11)
    """
    path = Path(path)
    problem = file_problem(path, "schedule file", inside=SCHEDULE_FILE)
    if problem:
        raise ScheduleError(problem)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ScheduleError(f"{path}:1: not a text file") from None
    content = [(no, line.split()) for no, line in enumerate(lines, start=1)
               if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise ScheduleError(f"{path}:1: empty file (expected the header "
                            f"'{' '.join(header(2))}' and rows)")
    header_no, names = content[0]
    inputs = len(names) > 1 and names[1] == INPUTS
    n_layers = len(names) - 2 - inputs
    if n_layers < 1 or names != header(n_layers, inputs):
        raise ScheduleError(f"{path}:{header_no}: header must be 'Iteration [inNodesRetained] "
                            f"h1NodesRetained ... hkNodesRetained perNodesRetained', got "
                            f"{' '.join(names)!r}")
    if len(content) == 1:
        raise ScheduleError(f"{path}:{header_no}: no schedule rows after the header")
    columns = unit_columns(n_layers, inputs)
    rows: list[ScheduleRow] = []
    for no, tokens in content[1:]:
        where = f"{path}:{no}"
        iteration, units, written = _parse_row(tokens, columns, where)
        if not rows:
            neurons = units[1:] if inputs else units
            if hidden is not None and list(neurons) != list(hidden):
                raise ScheduleError(f"{where}: first row must be the unpruned hidden sizes "
                                    f"{hidden_label(list(hidden))}, got {hidden_label(neurons)}")
            unpruned = units
        else:
            _check_step(rows[-1], iteration, units, columns, where)
        row = _row(iteration, units, unpruned, inputs)
        if abs(written - row.percent) > PERCENT_SLACK:
            problem = ("first row must be the unpruned network (perNodesRetained 100)" if not rows
                       else f"{PERCENT} does not match the counts (expected "
                            f"{format_percent(row.percent)})")
            raise ScheduleError(f"{where}: {problem}, got {tokens[-1]}")
        rows.append(row)
    return rows


def _columns(rows: Sequence[ScheduleRow]) -> list[tuple[str, list[int]]]:
    """(name, counts per row) of every unit column: 'inputs', 'hidden layer 1', ..."""
    inputs = prunes_inputs(rows)
    names = (["inputs"] if inputs else []) + [f"hidden layer {layer + 1}"
                                              for layer in range(_check_rows(rows))]
    return [(name, [r.units[c] for r in rows]) for c, name in enumerate(names)]


def _label(units: Sequence[int], rows: Sequence[ScheduleRow]) -> str:
    return hidden_label(units, prunes_inputs(rows))


def plot_iterations(rows: Sequence[ScheduleRow], path: str | os.PathLike) -> Path:
    """Units kept per column (log scale) against pruning iteration, one line per column."""
    columns = _columns(rows)
    fig, (ax,) = new_figure(width=8.5, height=5.0)
    steps = range(len(rows))
    lines = [ax.plot(steps, counts, marker="o", markersize=4,
                     color=LAYER_COLORS[c % len(LAYER_COLORS)],
                     label=f"{name} ({counts[0]} → {counts[-1]})")[0]
             for c, (name, counts) in enumerate(columns)]
    log_axis(ax, "y", [n for _, counts in columns for n in counts])
    ax.set_xlabel("pruning iteration (session folder i/)")
    ax.set_ylabel("units retained per column (count, log scale)")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    share = ax.twinx()  # the overall fraction on its own axis: a percentage is not a count
    what = "all units" if prunes_inputs(rows) else "all hidden neurons"
    lines += share.plot(steps, [r.percent for r in rows], linestyle="--", marker=".",
                        color=COLORS["reference"], label=f"{what} (% retained, right)")
    log_axis(share, "y", [r.percent for r in rows])
    share.set_ylabel(f"{what} retained (%, log scale)")
    ax.set_title(f"Retention schedule: {_label(rows[0].units, rows)} → "
                 f"{_label(rows[-1].units, rows)} in {len(rows) - 1} pruning iterations")
    ax.legend(handles=lines, loc="upper right")
    return save_figure(fig, path)


def _annotate_steps(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Label each point with its pruning iteration; repeated points get one label 'a–b'."""
    start = 0
    for i in range(1, len(xs) + 1):
        if i < len(xs) and (xs[i], ys[i]) == (xs[start], ys[start]):
            continue
        text = str(start) if i - 1 == start else f"{start}–{i - 1}"
        ax.annotate(text, (xs[start], ys[start]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color="#444444")
        start = i


def plot_distribution(rows: Sequence[ScheduleRow], path: str | os.PathLike) -> Path:
    """Units kept in column c against column c+1 (axes inverted), one panel per consecutive
    pair (inputs vs hidden layer 1 first when the schedule prunes inputs)."""
    columns = _columns(rows)
    pairs = [(i, i + 1) for i in range(len(columns) - 1)] or [(0, None)]
    fig, axes = new_figure(1, len(pairs), width=max(6.5, 5.5 * len(pairs)), height=5.5)
    for ax, (a, b) in zip(axes, pairs, strict=True):
        (name_a, xs) = columns[a]
        ys = columns[b][1] if b is not None else list(range(len(rows)))
        ax.plot(xs, ys, marker="o", markersize=4, color=LAYER_COLORS[0], label="schedule row")
        ax.plot(xs[:1], ys[:1], marker="s", markersize=9, linestyle="none",
                color=COLORS["test"], label=f"unpruned ({_label(rows[0].units, rows)})")
        _annotate_steps(ax, xs, ys)
        log_axis(ax, "x", xs)
        ax.invert_xaxis()
        ax.set_xlabel(f"units retained in {name_a} (count, log scale)")
        if b is None:
            ax.set_ylabel("pruning iteration")
            ax.set_title(f"Units retained in {name_a}")
        else:
            log_axis(ax, "y", ys)
            ax.invert_yaxis()
            ax.set_ylabel(f"units retained in {columns[b][0]} (count, log scale)")
            ax.set_title(f"{name_a.capitalize()} vs {columns[b][0]} (labels: pruning "
                         "iteration)")
        ax.legend(loc="lower right")
    return save_figure(fig, path)


@dataclass(frozen=True)
class RetainConfig:
    """What `python -m iaprune.retain` generates."""

    hidden: tuple[int, ...] = (256, 64)  # unpruned hidden layer sizes
    q: tuple[float, ...] = (0.8,)  # fraction kept per step: one value, or one per hidden layer
    iterations: int = 31  # exponents t = 0 .. iterations-1 are tried
    min_neurons: int = 1  # no layer goes below this many neurons
    out: Path = Path(SCHEDULE_DIR)  # folder for retain.txt and the two plots
    inputs: int | None = None  # unpruned input features: adds the input column (None: no column)
    q_inputs: float | None = None  # fraction of input features kept per step (None: q[0])
    min_inputs: int = 1  # the input column never goes below this many features


ROWS_NOTE = "row i is pruning iteration i (session folder i/); Iteration is the exponent t"
OUTPUTS = (SCHEDULE_FILE, *SCHEDULE_PLOTS)


def check_out_folder(out: Path) -> None:
    """Refuse an output folder that is an existing file or lies below one (before writing)."""
    problem = folder_problem(out)
    if problem:
        raise UserError(f"{problem} (--out names the folder for retain.txt and its two plots)")


def generate(config: RetainConfig) -> list[ScheduleRow]:
    """Build the schedule of `config` and write retain.txt and both plots into config.out."""
    q = config.q[0] if len(config.q) == 1 else list(config.q)
    rows = geometric_schedule(list(config.hidden), q, config.iterations, config.min_neurons,
                              config.inputs, config.q_inputs, config.min_inputs)
    check_out_folder(config.out)
    text, iterations_png, distribution_png = (config.out / name for name in OUTPUTS)
    write_schedule(rows, text)
    plot_iterations(rows, iterations_png)
    plot_distribution(rows, distribution_png)
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = RetainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m iaprune.retain",
        description="Write a geometric neuron-retention schedule (retain.txt) and its two plots.")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(defaults.hidden),
                        help="unpruned hidden layer sizes (default: 256 64)")
    parser.add_argument("--q", type=float, nargs="+", default=list(defaults.q),
                        help="fraction of neurons kept per step, one value or one per layer "
                             "(default: 0.8)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help="exponents t = 0 .. ITERATIONS-1 are tried (default: 31)")
    parser.add_argument("--min-neurons", type=int, default=defaults.min_neurons,
                        help="smallest size of any layer (default: 1)")
    parser.add_argument("--inputs", type=int,
                        help="unpruned number of input features (784 for MNIST): adds the "
                             "inNodesRetained column, so the inputs are pruned too (default: "
                             "no input column, inputs are never pruned)")
    parser.add_argument("--q-inputs", type=float,
                        help="fraction of input features kept per step (default: the first "
                             "--q value; needs --inputs)")
    parser.add_argument("--min-inputs", type=int,
                        help=f"fewest input features kept (default: {defaults.min_inputs}; "
                             "needs --inputs)")
    parser.add_argument("--out", type=Path, default=defaults.out,
                        help="output folder (default: retain/)")
    parser.add_argument("--check", type=Path, metavar="RETAIN_TXT",
                        help="only validate an existing (e.g. hand-edited) retain.txt and print it")
    args = parser.parse_args(argv)

    if args.check is not None:
        rows = read_schedule(args.check)
        print(format_schedule(rows, aligned=True), end="")
        print(f"{args.check}: valid, {len(rows)} rows")
        print(ROWS_NOTE)
        return 0
    if args.inputs is None and (args.q_inputs is not None or args.min_inputs is not None):
        raise UserError("--q-inputs and --min-inputs shape the input column; give --inputs N "
                        "(the unpruned input count) to add it")
    given = {k: v for k, v in (("q_inputs", args.q_inputs), ("min_inputs", args.min_inputs))
             if v is not None}
    config = RetainConfig(tuple(args.hidden), tuple(args.q), args.iterations, args.min_neurons,
                          args.out, args.inputs, **given)
    rows = generate(config)
    print(format_schedule(rows, aligned=True), end="")
    print(ROWS_NOTE)
    print("wrote " + ", ".join(str(config.out / name) for name in OUTPUTS))
    return 0


def entry(argv: list[str] | None = None) -> int:
    """The console entry point: main() with expected errors as one line, exit code 2."""
    return cli.run(main, argv)


if __name__ == "__main__":
    raise SystemExit(entry())
