"""A search's report: OUT/<name>.md (the best found against the q = 0.8 reference, then every
trial) and OUT/<name>.png (each trial's objective with the best so far; validation accuracy
against parameters along every trial's schedule), all read from the trials' session folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.ticker import FuncFormatter

from iaprune.checkpoint import atomic_write
from iaprune.plotting import COLORS, log_axis, new_figure, plain_number, save_figure
from iaprune.study.grid import CURVE_COLUMN
from iaprune.study.report import CURVE_TITLE, markdown_table
from iaprune.study.search import REFERENCE_Q, STEP, Found, Search, TrialRecord, best, q_text

STATES = {"COMPLETE": "done", "FAIL": "failed or killed", "RUNNING": "running"}


def points(drop: float) -> str:
    """'1 point', '0.5 points'."""
    return f"{drop:g} point{'' if drop == 1 else 's'}"


def percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.2f}"


def summary_row(label: str, trial: str, found: Found) -> list[str]:
    """One line of the best-vs-reference table."""
    return [label, trial, q_text(found.q), found.hidden, f"{found.params:,}",
            percent(found.params, found.base.params), f"{found.val:.2f}", f"{found.test:.2f}",
            str(found.index)]


def comparison(top: Found | None, reference: Found | None, drop: float) -> str:
    """One sentence: the best found against the reference, measured."""
    if top is None or reference is None:
        return "No completed searched trial to compare with the reference yet." if top is None \
            else "The reference has not run yet."
    ratio = top.params / reference.params
    gaps = (f"validation accuracy {top.val - reference.val:+.2f} points, test accuracy "
            f"{top.test - reference.test:+.2f} points")
    if top.params < reference.params:
        return (f"The best found has {ratio:.3f}x the reference's parameters "
                f"({100 * (1 - ratio):.1f} % fewer, {reference.params - top.params:,} fewer), "
                f"both within {points(drop)} of the base model's validation accuracy; {gaps}.")
    if top.params == reference.params:
        return f"The search found a model as small as the reference's, not smaller; {gaps}."
    return (f"The search found nothing smaller than the q = {REFERENCE_Q} reference within "
            f"{points(drop)}: its best has {ratio:.3f}x the reference's parameters; {gaps}.")


def write_search_report(search: Search, trials: Sequence[TrialRecord]) -> list[Path]:
    """OUT/<name>.md and OUT/<name>.png from the trials' sessions."""
    c, out = search.config, search.out
    reference = search.found(search.reference)
    top = best(search, trials)
    known = {t.q: search.found(t.q) for t in trials}
    base = (reference or top or next((f for f in known.values() if f), None))
    base_text = "" if base is None else " (" + ", ".join(
        f"{rows[0].val:.2f} % on seed {seed}" for seed, rows in base.rows.items()) + ")"
    seeds = f"seed{'s' * (len(c.seeds) > 1)} {' '.join(map(str, c.seeds))}"
    several = len(c.seeds) > 1
    group = "hidden layer" if search.network.mlp else "prunable group"
    header = ["", "trial", f"q ({' '.join(n[2:] for n in search.names)})", "units", "params",
              "% of base params", "val acc %", "test acc %", "row"]
    lines = [f"# {c.name}: per-layer retention factors q, the smallest model within "
             f"{points(c.max_accuracy_drop)}", "",
             f"Dataset {c.dataset}, {search.network.text()}, {seeds}; "
             f"curve {c.curve} ({CURVE_TITLE[c.curve]}; column "
             f"{CURVE_COLUMN[c.curve]}); criterion {search.variant.describe()}.", "",
             f"Each trial prunes the base model along the geometric schedule of its q's (one "
             f"per {group}, on the {STEP} grid in [{q_text(c.q_range)}]) and stops at the "
             f"first iteration whose validation accuracy is more than "
             f"{points(c.max_accuracy_drop)} below the base model's{base_text}. Its objective "
             "is the parameter count of the smallest iteration before that stop"
             f"{' on every seed' if several else ''} (column `row`)"
             f"{'; accuracies are means over the seeds' if several else ''}. Validation "
             "accuracy alone chooses; test accuracy is only "
             f"reported. Search: Optuna's TPE sampler (seed {c.sampler_seed}) over "
             f"{c.trials} trials; the q = {REFERENCE_Q} reference for every "
             f"{group.split()[-1]} runs beside them (and is given to the sampler as a known "
             "point when in the range).", "",
             f"`{c.command(out)}`", "",
             "## Best found vs q = 0.8", ""]
    table = []
    if base is not None:
        table.append(["base model", "–", "–", base.base.hidden, f"{base.base.params:,}",
                      "100.00", *(f"{sum(v) / len(v):.2f}" for v in
                                  zip(*((r[0].val, r[0].test) for r in base.rows.values()),
                                      strict=True)), "0"])
    if reference is not None:
        table.append(summary_row(f"q = {REFERENCE_Q} (reference)", "–", reference))
    if top is not None:
        number = next(t.number for t in trials if t.q == top.q and not t.reference)
        table.append(summary_row("**best found**", f"#{number}", top))
    lines += [markdown_table(header, table), "", comparison(top, reference,
                                                            c.max_accuracy_drop), ""]
    rows = []
    for t in trials:
        f = known[t.q]
        state = "reference" if t.reference else STATES.get(t.state, t.state.lower())
        numbers = ["–"] * 5 if f is None or t.state != "COMPLETE" else \
            [f.hidden, f"{f.params:,}", f"{f.val:.2f}", f"{f.test:.2f}", str(f.index)]
        rows.append([f"#{t.number}", *(f"{v:.2f}" for v in t.q), state, *numbers])
    lines += ["## Every trial", "",
              "In the order the sampler proposed them (q's proposed again are read from the "
              "cache).", "",
              markdown_table(["trial", *search.names, "state", "units", "params", "val acc %",
                              "test acc %", "row"], rows), ""]
    written = [atomic_write(out / f"{c.name}.md", "\n".join(lines))]
    written.append(plot_search(search, trials, known, reference, top, out / f"{c.name}.png"))
    return written


def plot_search(search: Search, trials: Sequence[TrialRecord], known: dict, reference:
                Found | None, top: Found | None, path: Path) -> Path:
    """Left: each searched trial's objective and the best so far, the reference as a line.
    Right: validation accuracy against parameters along each trial's schedule (first seed)."""
    c = search.config
    fig, (left, right) = new_figure(1, 2, width=13.0, height=5.2)
    done = [(t.number, known[t.q]) for t in trials
            if t.state == "COMPLETE" and not t.reference and known[t.q] is not None]
    if done:
        xs, values = [n for n, _ in done], [f.params for _, f in done]
        left.scatter(xs, values, color=COLORS["val"], zorder=3, label="trial's objective")
        so_far = [min(values[:k + 1]) for k in range(len(values))]
        left.step(xs, so_far, where="post", color=COLORS["test"], label="best so far")
    if reference is not None:
        left.axhline(reference.params, color="#000000", linestyle="--",
                     label=f"q = {REFERENCE_Q} reference ({reference.params:,})")
    left.yaxis.set_major_formatter(FuncFormatter(plain_number))
    left.set_xlabel("trial (Optuna's number)")
    left.set_ylabel(f"parameters of the smallest model within {points(c.max_accuracy_drop)}")
    left.set_title("Objective per trial (lower is better)")
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="best", fontsize=8)
    left.xaxis.get_major_locator().set_params(integer=True)
    every = [f for f in {t.q: known[t.q] for t in trials}.values() if f is not None]
    for f in every:
        rows = next(iter(f.rows.values()))
        right.plot([r.params for r in rows], [r.val for r in rows], color="#bbbbbb",
                   linewidth=0.8, zorder=1)
    for f, color, label in ((reference, "#000000", f"q = {REFERENCE_Q} reference"),
                            (top, COLORS["test"], f"best found (q {q_text(top.q)})"
                             if top else "")):
        if f is not None:
            rows = next(iter(f.rows.values()))
            right.plot([r.params for r in rows], [r.val for r in rows], color=color,
                       linewidth=2.2, marker="o", markersize=3, zorder=3, label=label)
    if every:
        base = every[0].base
        right.axhline(base.val - c.max_accuracy_drop, color=COLORS["before"], linestyle=":",
                      label=f"base − {points(c.max_accuracy_drop)}")
        # the stop rows may fall far below the line: show the region that decides
        low = min(r.val for f in every for r in next(iter(f.rows.values())))
        right.set_ylim(max(low, base.val - 3 * c.max_accuracy_drop - 1) - 0.2, base.val + 0.5)
        params = [r.params for f in every for r in next(iter(f.rows.values()))]
        log_axis(right, "x", params)
        right.invert_xaxis()  # pruning proceeds left to right
        right.legend(loc="lower left", fontsize=8)
    right.set_xlabel("parameters (log scale; pruning proceeds left to right)")
    right.set_ylabel("validation accuracy (%)")
    right.set_title(f"Every trial's iterations until the stop (seed {c.seeds[0]})")
    network = "-".join(map(str, search.network.units))
    if not search.network.mlp:
        network = f"{search.network.name} {network}"
    fig.suptitle(f"{c.name}: {c.dataset} {network}, curve {c.curve}, "
                 f"{c.trials} trials")
    return save_figure(fig, path)
