"""Geometric neuron-retention schedules (retain.txt): generate, write, read, plot.

Row r of a schedule is pruning iteration r (its session folder is `r/`); its `iteration` is the
exponent t with N_l(t) = max(min_neurons, round(h_l * q_l**t)). Rows equal to the previous row are
skipped and the schedule stops at the first row where every layer is at min_neurons.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src import cli
from src.errors import UserError
from src.files import atomic_write, file_problem
from src.model import hidden_label
from src.plotting import COLORS, log_axis, new_figure, save_figure

ITERATION, PERCENT = "Iteration", "perNodesRetained"
PERCENT_SLACK = 0.5  # a written perNodesRetained may be rounded (e.g. to an integer) by this much
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


class ScheduleError(UserError):
    """A retain.txt that cannot be used; the message is one line `FILE:LINE: problem`."""


@dataclass(frozen=True)
class ScheduleRow:
    """One pruning iteration of a schedule."""

    iteration: int  # the exponent t used for this row
    neurons: tuple[int, ...]  # kept neurons per hidden layer
    percent: float  # 100 * sum(neurons) / sum(unpruned hidden sizes)


def layer_column(layer: int) -> str:
    """Header name of hidden layer `layer` (1-based): 'h1NodesRetained'."""
    return f"h{layer}NodesRetained"


def header(n_layers: int) -> list[str]:
    """The retain.txt header for `n_layers` hidden layers."""
    return [ITERATION, *(layer_column(i) for i in range(1, n_layers + 1)), PERCENT]


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
    if all(v == 1.0 for v in qs):
        raise UserError("q = 1 for every layer prunes nothing; use q < 1 for some layer")
    return qs


def geometric_schedule(hidden: list[int], q: float | list[float] = 0.8, iterations: int = 31,
                       min_neurons: int = 1) -> list[ScheduleRow]:
    """Rows for t = 0 .. iterations-1 of N_l(t) = max(min_neurons, round(h_l * q_l**t))."""
    hidden = _check_hidden(hidden)
    qs = _check_q(q, len(hidden))
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UserError(f"iterations must be an integer >= 1, got {iterations!r}")
    if isinstance(min_neurons, bool) or not isinstance(min_neurons, int) or min_neurons < 1:
        raise UserError(f"min_neurons must be an integer >= 1, got {min_neurons!r}")
    if min_neurons > min(hidden):
        raise UserError(f"min_neurons {min_neurons} exceeds the smallest hidden layer "
                         f"({min(hidden)}); counts would grow")
    rows: list[ScheduleRow] = []
    for t in range(iterations):
        neurons = tuple(max(min_neurons, round_half_up(h * q_l**t))
                        for h, q_l in zip(hidden, qs, strict=True))
        if rows and neurons == rows[-1].neurons:
            continue  # the same network again would prune nothing
        rows.append(ScheduleRow(t, neurons, percent_retained(neurons, hidden)))
        if all(n == min_neurons for n in neurons):
            break
    return rows


def _check_rows(rows: Sequence[ScheduleRow]) -> int:
    if not rows:
        raise ValueError("a schedule needs at least one row")
    n_layers = len(rows[0].neurons)
    if any(len(row.neurons) != n_layers for row in rows):
        raise ValueError("every schedule row needs the same number of hidden layers")
    return n_layers


def format_schedule(rows: Sequence[ScheduleRow], aligned: bool = False) -> str:
    """The retain.txt text (single spaces, seed-compatible) or an aligned table for printing."""
    table = [header(_check_rows(rows))]
    table += [[str(r.iteration), *map(str, r.neurons), format_percent(r.percent)] for r in rows]
    if not aligned:
        return "\n".join(" ".join(line) for line in table) + "\n"
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    return "\n".join(" ".join(f"{cell:>{w}}" for cell, w in zip(line, widths, strict=True))
                     for line in table) + "\n"


def write_schedule(rows: Sequence[ScheduleRow], path: str | os.PathLike) -> Path:
    """Write `rows` as retain.txt (header + one line per row), atomically."""
    return atomic_write(path, format_schedule(rows))


def _parse_int(token: str, name: str, where: str, minimum: int) -> int:
    if re.fullmatch(r"[+-]?[0-9]+", token) is None:
        raise ScheduleError(f"{where}: {name} must be an integer, got {token!r}")
    value = int(token)
    if value < minimum:
        why = " (a layer cannot be removed)" if minimum == 1 else ""
        raise ScheduleError(f"{where}: {name} must be >= {minimum}{why}, got {value}")
    return value


def _parse_row(tokens: list[str], n_layers: int, where: str) -> tuple[int, tuple[int, ...], float]:
    if len(tokens) != n_layers + 2:
        raise ScheduleError(f"{where}: expected {n_layers + 2} columns as in the header, "
                            f"got {len(tokens)}")
    iteration = _parse_int(tokens[0], ITERATION, where, minimum=0)
    neurons = tuple(_parse_int(tok, layer_column(i), where, minimum=1)
                    for i, tok in enumerate(tokens[1:-1], start=1))
    try:
        percent = float(tokens[-1])
    except ValueError:
        percent = math.nan
    if not math.isfinite(percent):
        raise ScheduleError(f"{where}: {PERCENT} must be a number, got {tokens[-1]!r}")
    return iteration, neurons, percent


def _check_step(previous: ScheduleRow, iteration: int, neurons: tuple[int, ...], where: str):
    if iteration <= previous.iteration:
        raise ScheduleError(f"{where}: {ITERATION} must increase from row to row "
                            f"(got {iteration} after {previous.iteration})")
    for i, (before, now) in enumerate(zip(previous.neurons, neurons, strict=True), start=1):
        if now > before:
            raise ScheduleError(f"{where}: {layer_column(i)} grows from {before} to {now} "
                                f"(counts may only shrink)")
    if neurons == previous.neurons:
        raise ScheduleError(f"{where}: row repeats the previous row's counts (prunes nothing)")


def read_schedule(path: str | os.PathLike,
                  hidden: Sequence[int] | None = None) -> list[ScheduleRow]:
    """Read and validate a retain.txt; with `hidden`, its first row must equal those sizes."""
    path = Path(path)
    problem = file_problem(path, "schedule file", inside="retain.txt")
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
    n_layers = len(names) - 2
    if n_layers < 1 or names != header(n_layers):
        raise ScheduleError(f"{path}:{header_no}: header must be 'Iteration h1NodesRetained ... "
                            f"hkNodesRetained perNodesRetained', got {' '.join(names)!r}")
    if len(content) == 1:
        raise ScheduleError(f"{path}:{header_no}: no schedule rows after the header")
    rows: list[ScheduleRow] = []
    for no, tokens in content[1:]:
        where = f"{path}:{no}"
        iteration, neurons, written = _parse_row(tokens, n_layers, where)
        if not rows:
            if hidden is not None and list(neurons) != list(hidden):
                raise ScheduleError(f"{where}: first row must be the unpruned hidden sizes "
                                    f"{hidden_label(list(hidden))}, got {hidden_label(neurons)}")
            unpruned = neurons
        else:
            _check_step(rows[-1], iteration, neurons, where)
        percent = percent_retained(neurons, unpruned)
        if abs(written - percent) > PERCENT_SLACK:
            problem = ("first row must be the unpruned network (perNodesRetained 100)" if not rows
                       else f"{PERCENT} does not match the counts (expected "
                            f"{format_percent(percent)})")
            raise ScheduleError(f"{where}: {problem}, got {tokens[-1]}")
        rows.append(ScheduleRow(iteration, neurons, percent))
    return rows


def _layer_legend(rows: Sequence[ScheduleRow], layer: int) -> str:
    return f"hidden layer {layer + 1} ({rows[0].neurons[layer]} → {rows[-1].neurons[layer]})"


def plot_iterations(rows: Sequence[ScheduleRow], path: str | os.PathLike) -> Path:
    """Neurons kept per hidden layer (log scale) against pruning iteration, one line per layer."""
    n_layers = _check_rows(rows)
    fig, (ax,) = new_figure(width=8.5, height=5.0)
    steps = range(len(rows))
    lines = [ax.plot(steps, [r.neurons[layer] for r in rows], marker="o", markersize=4,
                     color=LAYER_COLORS[layer % len(LAYER_COLORS)],
                     label=_layer_legend(rows, layer))[0] for layer in range(n_layers)]
    log_axis(ax, "y", [n for r in rows for n in r.neurons])
    ax.set_xlabel("pruning iteration (session folder i/)")
    ax.set_ylabel("neurons retained per layer (count, log scale)")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    share = ax.twinx()  # the overall fraction on its own axis: a percentage is not a count
    lines += share.plot(steps, [r.percent for r in rows], linestyle="--", marker=".",
                        color=COLORS["reference"], label="all hidden neurons (% retained, right)")
    log_axis(share, "y", [r.percent for r in rows])
    share.set_ylabel("hidden neurons retained (%, log scale)")
    ax.set_title(f"Retention schedule: hidden {hidden_label(rows[0].neurons)} → "
                 f"{hidden_label(rows[-1].neurons)} in {len(rows) - 1} pruning iterations")
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
    """Neurons kept in layer l against layer l+1 (axes inverted), one panel per consecutive pair."""
    n_layers = _check_rows(rows)
    pairs = [(i, i + 1) for i in range(n_layers - 1)] or [(0, None)]
    fig, axes = new_figure(1, len(pairs), width=max(6.5, 5.5 * len(pairs)), height=5.5)
    for ax, (a, b) in zip(axes, pairs, strict=True):
        xs = [r.neurons[a] for r in rows]
        ys = [r.neurons[b] for r in rows] if b is not None else list(range(len(rows)))
        ax.plot(xs, ys, marker="o", markersize=4, color=LAYER_COLORS[0], label="schedule row")
        ax.plot(xs[:1], ys[:1], marker="s", markersize=9, linestyle="none",
                color=COLORS["test"], label=f"unpruned ({hidden_label(rows[0].neurons)})")
        _annotate_steps(ax, xs, ys)
        log_axis(ax, "x", xs)
        ax.invert_xaxis()
        ax.set_xlabel(f"neurons retained in hidden layer {a + 1} (count, log scale)")
        if b is None:
            ax.set_ylabel("pruning iteration")
            ax.set_title("Neurons retained in hidden layer 1")
        else:
            log_axis(ax, "y", ys)
            ax.invert_yaxis()
            ax.set_ylabel(f"neurons retained in hidden layer {b + 1} (count, log scale)")
            ax.set_title(f"Hidden layer {a + 1} vs layer {b + 1} (labels: pruning iteration)")
        ax.legend(loc="lower right")
    return save_figure(fig, path)


@dataclass(frozen=True)
class RetainConfig:
    """What `python -m src.retain` generates."""

    hidden: tuple[int, ...] = (256, 64)  # unpruned hidden layer sizes
    q: tuple[float, ...] = (0.8,)  # fraction kept per step: one value, or one per hidden layer
    iterations: int = 31  # exponents t = 0 .. iterations-1 are tried
    min_neurons: int = 1  # no layer goes below this many neurons
    out: Path = Path("retain")  # folder for retain.txt and the two plots


ROWS_NOTE = "row i is pruning iteration i (session folder i/); Iteration is the exponent t"
OUTPUTS = ("retain.txt", "pruneNodesIteration.png", "pruneNodesDistribution.png")


def check_out_folder(out: Path) -> None:
    """Refuse an output folder that is an existing file or lies below one (before writing)."""
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        which = "" if blocker == out else f"{blocker} "
        raise UserError(f"{out}: {which}is a file, not a folder (--out names the folder for "
                         f"retain.txt and its two plots)")


def generate(config: RetainConfig) -> list[ScheduleRow]:
    """Build the schedule of `config` and write retain.txt and both plots into config.out."""
    q = config.q[0] if len(config.q) == 1 else list(config.q)
    rows = geometric_schedule(list(config.hidden), q, config.iterations, config.min_neurons)
    check_out_folder(config.out)
    text, iterations_png, distribution_png = (config.out / name for name in OUTPUTS)
    write_schedule(rows, text)
    plot_iterations(rows, iterations_png)
    plot_distribution(rows, distribution_png)
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = RetainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m src.retain",
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
    config = RetainConfig(tuple(args.hidden), tuple(args.q), args.iterations, args.min_neurons,
                          args.out)
    rows = generate(config)
    print(format_schedule(rows, aligned=True), end="")
    print(ROWS_NOTE)
    print("wrote " + ", ".join(str(config.out / name) for name in OUTPUTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
