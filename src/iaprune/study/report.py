"""A study's report: per curve a markdown file (per mode the table of mean ± std over seeds with
the best per row in bold, the ranking by mean over rows, the paired differences of the default to
every other variant; one-shot − iterative when both modes ran), a plot per track and a CSV of
every number, all read from the cells' session folders.

A *series* is one variant's curve on one track: {seed: [value at row 0, row 1, ...]} (a seed may
stop early: an unfinished cell). The statistics are pure functions of series.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.ticker import NullLocator

from iaprune.checkpoint import atomic_write
from iaprune.model import hidden_label
from iaprune.plotting import COLORS, log_axis, new_figure, save_figure
from iaprune.retain import ScheduleRow
from iaprune.study.grid import CURVE_COLUMN, MODES, Plan, Track, read_curve

Series = dict[int, list[float]]  # seed -> the value at each schedule row reached
CURVE_TITLE = {"no-retrain": "test accuracy right after pruning, no retraining",
               "retrain": "test accuracy after pruning + retraining"}
PALETTE = ("#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (std None when n = 1)."""

    mean: float
    std: float | None
    n: int

    def text(self, expected_n: int, signed: bool = False) -> str:
        """'97.12 ± 0.08', '97.12 (n=1)', or with '(n=2)' when fewer seeds than expected."""
        mean = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        body = mean if self.std is None else f"{mean} ± {self.std:.2f}"
        return body + (f" (n={self.n})" if self.n != expected_n or self.n == 1 else "")


def aggregate(values: Sequence[float]) -> Stat | None:
    """Mean ± sample standard deviation (n-1) of `values`; None when empty."""
    values = [float(v) for v in values]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                len(values))


def row_stats(series: Series, rows: int) -> list[Stat | None]:
    """Per schedule row: the statistic over the seeds that reached that row."""
    return [aggregate([c[i] for c in series.values() if len(c) > i]) for i in range(rows)]


def seed_means(series: Series, first: int, last: int) -> dict[int, float]:
    """Per seed: the mean over rows first..last (only seeds that reached `last`)."""
    return {s: statistics.fmean(c[first:last + 1]) for s, c in series.items() if len(c) > last}


def ranking(series: Mapping[str, Series], first: int, last: int) -> list[tuple[str, Stat]]:
    """Every series' mean over rows first..last (per seed, then over seeds), best first."""
    ranked = [(name, aggregate(list(seed_means(s, first, last).values())))
              for name, s in series.items()]
    return sorted([(n, s) for n, s in ranked if s is not None], key=lambda item: -item[1].mean)


def paired(a: Series, b: Series, rows: int) -> list[Stat | None]:
    """Per row: a − b paired by seed (seeds that reached the row in both), mean ± std."""
    return [aggregate([a[s][i] - b[s][i] for s in a if s in b and len(a[s]) > i
                       and len(b[s]) > i]) for i in range(rows)]


def paired_mean(a: Series, b: Series, first: int, last: int) -> Stat | None:
    """Per seed the mean of a − b over rows first..last, then mean ± std over seeds."""
    ma, mb = seed_means(a, first, last), seed_means(b, first, last)
    return aggregate([ma[s] - mb[s] for s in ma if s in mb])


def bold_best(stats: Sequence[Stat | None], n: int) -> list[str]:
    """Cell texts of one table row; the highest means (to 2 decimals) in bold, unless all tie."""
    means = [round(s.mean, 2) for s in stats if s is not None]
    best = max(means) if len(set(means)) > 1 else None
    return ["–" if s is None else f"**{s.text(n)}**" if round(s.mean, 2) == best else s.text(n)
            for s in stats]


def stat_text(stat: Stat | None, n: int, signed: bool = False) -> str:
    """A table cell: the statistic, or '–' when there is none."""
    return "–" if stat is None else stat.text(n, signed)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(series: Mapping[str, Series], x: Sequence[float], x_labels: Sequence[str],
                title: str, path: Path, reference: str | None = None,
                dashed: Sequence[str] = (), mlp: bool = True) -> Path:
    """Mean per series with a ±std band against % retained (x decreasing, log scale).

    `reference` (a series name) is drawn thick, and a lower panel shows every series' mean
    minus the reference's; the series named in `dashed` are drawn dashed (e.g. baselines). The
    axes speak of hidden layers for an `mlp`, else of units (neurons and conv channels).
    """
    rows = len(x)
    ref = row_stats(series[reference], rows) if reference in series else None
    fig, axes = new_figure(2 if ref else 1, 1, width=9.5, height=9.0 if ref else 5.5,
                           sharex=True, **({"gridspec_kw": {"height_ratios": [3, 2]}}
                                           if ref else {}))
    for index, (name, per_seed) in enumerate(series.items()):
        points = [(x[i], s) for i, s in enumerate(row_stats(per_seed, rows)) if s is not None]
        if not points:
            continue
        thick = name == reference
        style = {"color": PALETTE[index % len(PALETTE)], "linewidth": 2.6 if thick else 1.4,
                 "linestyle": "--" if name in dashed else "-", "zorder": 4 if thick else 2}
        xs, stats = [p[0] for p in points], [p[1] for p in points]
        axes[0].plot(xs, [s.mean for s in stats], marker="o", markersize=3, label=name, **style)
        axes[0].fill_between(xs, [s.mean - (s.std or 0.0) for s in stats],
                             [s.mean + (s.std or 0.0) for s in stats], color=style["color"],
                             alpha=0.12, linewidth=0)
        if ref is not None:
            gaps = [(x[i], s.mean - ref[i].mean) for i, s in
                    enumerate(row_stats(per_seed, rows)) if s is not None and ref[i] is not None]
            axes[1].plot([g[0] for g in gaps], [g[1] for g in gaps], marker="o", markersize=3,
                         **style)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title(title)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="lower left", fontsize=8)
    if ref is not None:
        axes[1].axhline(0.0, color=COLORS["reference"], linewidth=1)
        axes[1].set_ylabel(f"mean − {reference} mean (points)")
    bottom = axes[-1]
    log_axis(bottom, "x", list(x))
    bottom.invert_xaxis()  # pruning proceeds left to right
    bottom.set_xlabel(f"{'hidden neurons' if mlp else 'units'} retained (%, log scale; "
                      "pruning proceeds left to right)")
    top = axes[0].secondary_xaxis("top")
    top.set_xticks(list(x), list(x_labels), rotation=90, fontsize=7)
    top.xaxis.set_minor_locator(NullLocator())  # no log-scale minor labels on the size axis
    top.set_xlabel("hidden layer sizes" if mlp else "units per prunable group", fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------- files
Results = dict[tuple[str, str], dict[str, Series]]  # (curve, mode) -> variant -> seed -> rows


def collect(plan: Plan) -> Results:
    """Every cached cell's curve (whatever is complete, also from an unfinished study)."""
    results: Results = {(t.curve, t.mode): {} for t in plan.tracks}
    for cell in plan.cells:
        if cell.track is not None and (curve := read_curve(cell)):
            results[cell.track.curve, cell.track.mode].setdefault(cell.variant.name, {})[
                cell.seed] = curve
    return results


def column(plan: Plan, name: str) -> str:
    return f"{name} (default)" if name == plan.default.name else name


def row_label(row: ScheduleRow) -> list[str]:
    return [hidden_label(list(row.neurons)), f"{row.percent:.2f}"]


def track_section(plan: Plan, track: Track, results: Results) -> list[str]:
    """One track: the curve table, the ranking and the paired differences to the default."""
    n, rows, last = len(plan.study.seeds), track.rows, track.rows - 1
    series = {v: results[track.curve, track.mode].get(v, {}) for v in track.variants}
    stats = {v: row_stats(s, rows) for v, s in series.items()}
    table = [[str(i), *row_label(plan.schedule[i]), *bold_best([s[i] for s in stats.values()],
                                                                 n)] for i in range(rows)]
    span = (f"rows 1..{last} ({hidden_label(list(plan.schedule[1].neurons))} .. "
            f"{hidden_label(list(plan.schedule[last].neurons))})")
    lines = [f"## {track.mode.capitalize()} mode", "",
             markdown_table(["row", plan.network.word, "% retained",
                             *(column(plan, v) for v in series)],
                            table), "",
             f"### Ranking: mean over {span}", "",
             "Per seed the mean over these rows, then mean ± std over seeds (seeds with all "
             "these rows only).", "",
             markdown_table(["rank", "variant", "mean %"],
                            [[k, column(plan, name), s.text(n)] for k, (name, s)
                             in enumerate(ranking(series, 1, last), start=1)]), ""]
    others = [v for v in series if v != plan.default.name]
    if others:
        default = series[plan.default.name]
        diffs = {v: paired(default, series[v], rows) for v in others}
        table = [[str(i), row_label(plan.schedule[i])[0],
                  *(stat_text(diffs[v][i], n, signed=True) for v in others)]
                 for i in range(1, rows)]
        table.append([f"1..{last}", "mean",
                      *(stat_text(paired_mean(default, series[v], 1, last), n, signed=True)
                        for v in others)])
        lines += [f"### Paired differences: {plan.default.name} − each other variant", "",
                  "Per seed the default's accuracy minus the variant's (same base model), then "
                  "mean ± std over seeds, in percentage points: positive means the default is "
                  "ahead. The last row pairs the per-seed means over the rows.", "",
                  markdown_table(["row", plan.network.word, *others], table), ""]
    return lines


def modes_section(plan: Plan, curve: str, results: Results) -> list[str]:
    """One-shot − iterative per variant, paired by seed (variants run in both modes)."""
    tracks = {t.mode: t for t in plan.tracks if t.curve == curve}
    if set(tracks) != set(MODES):
        return []
    both = [v for v in tracks["one-shot"].variants if v in tracks["iterative"].variants]
    rows, n = tracks["one-shot"].rows, len(plan.study.seeds)
    one, it = results[curve, "one-shot"], results[curve, "iterative"]
    diffs = {v: paired(one.get(v, {}), it.get(v, {}), rows) for v in both}
    table = [[str(i), row_label(plan.schedule[i])[0],
              *(stat_text(diffs[v][i], n, signed=True) for v in both)] for i in range(1, rows)]
    return ["## One-shot − iterative (paired per seed, percentage points)", "",
            markdown_table(["row", plan.network.word, *both], table), ""]


def write_reports(plan: Plan, out: Path, results: Results | None = None) -> list[Path]:
    """Per curve a markdown file and a plot per mode; a CSV of every number; from the cache."""
    results = collect(plan) if results is None else results
    s, written = plan.study, []
    seeds = " ".join(map(str, s.seeds))
    x = [row.percent for row in plan.schedule]
    network = "" if plan.network.mlp else f" {plan.network.name}"
    labels = [hidden_label(list(row.neurons)) for row in plan.schedule]
    legend = [f"- `{v.name}`{' (the engine default)' if v is plan.default else ''}: "
              f"{v.describe()}" for v in plan.variants.values()]
    for curve in s.curves:
        head = [f"# {s.name}: {CURVE_TITLE[curve]}", "",
                f"Dataset {s.dataset}, {plan.network.text()}, seeds {seeds}; "
                f"column {CURVE_COLUMN[curve]} of each iteration. Cells: mean ± sample standard "
                f"deviation over seeds (n={len(s.seeds)} unless marked); the best mean per row "
                "in bold (none where all tie). One base model per seed is trained once and "
                "shared by every variant, so only the pruning differs.", ""]
        body = [line for t in plan.tracks if t.curve == curve
                for line in track_section(plan, t, results)]
        text = "\n".join([*head, *body, *modes_section(plan, curve, results), "Variants:", "",
                          *legend, ""])
        written.append(atomic_write(out / f"{s.name}_{curve.replace('-', '_')}.md", text))
        for t in (t for t in plan.tracks if t.curve == curve):
            suffix = "" if t.mode == "iterative" else "_one_shot"
            series = {column(plan, v): results[curve, t.mode].get(v, {}) for v in t.variants}
            dashed = [column(plan, v) for v in t.variants
                      if plan.variants[v].criterion != "interval_adjoint"]
            written.append(plot_curves(
                series, x[:t.rows], labels[:t.rows],
                f"{CURVE_TITLE[curve].capitalize()}, {t.mode} — {s.dataset}{network}, "
                f"seeds {seeds} "
                "(band: ±1 std)", out / f"{s.name}_{curve.replace('-', '_')}{suffix}.png",
                reference=column(plan, plan.default.name), dashed=dashed,
                mlp=plan.network.mlp))
    written.append(write_csv(plan, out / f"{s.name}_results.csv"))
    return written


def write_csv(plan: Plan, path: Path) -> Path:
    """Every cell's accuracy per row: seed, mode, curve, variant, row, hidden (units for a
    network other than the mlp), % kept, accuracy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["seed", "mode", "curve", "variant", "row", plan.network.word,
                     "percent_retained", "test_accuracy"])
    for cell in plan.cells:
        if cell.track is not None:
            for i, value in enumerate(read_curve(cell)):
                row = plan.schedule[i]
                writer.writerow([cell.seed, cell.track.mode, cell.track.curve, cell.variant.name,
                                 i, hidden_label(list(row.neurons)), row.percent, value])
    return atomic_write(path, buffer.getvalue())
