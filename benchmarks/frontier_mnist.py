"""Frontier benchmark (issue 16): test error against parameters and MACs on MNIST when the input
features are pruned too, seeds 0 1 2, beside the published LeNet-300-100-family points.

Usage: python benchmarks/frontier_mnist.py [--out DIR] [--data-root DIR] [--seeds 0 1 2]
Every run is an ordinary engine session (iaprune.engine.run) under DIR/cache/frontier_mnist/, so an
interrupted benchmark continues where it stopped. Per seed, one base model (784-256-64-10) is
trained and pruned along:
- `inputs + hidden`: the recommended input schedule (`python -m iaprune.retain --inputs 784 --q 0.96
  0.98`: inputs and the first hidden layer keep 96 % per step, the last hidden layer, whose
  units cost few parameters, 98 %), scored over the quantile box, retrained at batch 128 until
  converged (`--retrain-batch-size 128 --retrain-until converged`: four times the default's
  steps per epoch, and no stop at the parent's accuracy, so that the small models converge);
- `q = 0.93 0.96`: the earlier recommendation (larger steps, default retraining at batch 512),
  and the same rows over the default data box and with each row's total split across groups
  by score (global allocation), so that box and allocation are compared on equal terms;
- `hidden only`: the default retain.txt (256-64, q = 0.8), inputs never pruned;
- `inputs only, no retraining`: hidden layers unchanged, inputs pruned (q = 0.9), without
  retraining, over the quantile box and over the data box.
For each parameter budget the model is chosen per seed on the validation split (the highest
validation accuracy among the `inputs + hidden` models within the budget); the test split
never chooses. Writes DIR/frontier_mnist.md, DIR/frontier_mnist.png and DIR/frontier_mnist.json
(the chosen models: seed, params, test accuracy, checkpoint path, for python -m iaprune.validator).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _setup import ROOT, markdown_table

import iaprune_runtime as deploy
from iaprune.config import PruneConfig, Retraining, Scoring
from iaprune.engine import Results, run
from iaprune.files import atomic_write
from iaprune.model import parse_hidden_label
from iaprune.plotting import COLORS, log_axis, new_figure, save_figure
from iaprune.retain import ScheduleRow, geometric_schedule, write_schedule
from iaprune_runtime.idx import load_test_split

INPUTS, HIDDEN = 784, [256, 64]
Q = [0.96, 0.98]  # the recommended schedule: inputs and hidden 1 keep 96 % a step, hidden 2 98 %
RETRAINING = Retraining(batch_size=128, until="converged")  # recommended for the small models
EARLIER_Q = [0.93, 0.96]  # the earlier recommendation, with default retraining
SMALLEST_PARAMS = 4_000  # schedules stop after their first row below this many parameters
SCORING = Scoring(box="quantile")
BUDGETS = {9_700: 98.2, 6_000: 98.0}  # parameter budget -> target test accuracy (issue 16)
INPUTS_ONLY_FLOOR, INPUTS_ONLY_DROP = 300, 0.3  # down to 300 inputs, at most 0.3 points lost


@dataclass(frozen=True)
class Published:
    """A published point of the LeNet-300-100 family (RigL paper, appendix B)."""

    name: str
    units: tuple[int, int, int]  # kept inputs, hidden 1, hidden 2
    error: float  # test error in %

    @property
    def params(self) -> int:
        k, h1, h2 = self.units
        return k * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10

    @property
    def macs(self) -> int:
        k, h1, h2 = self.units
        return k * h1 + h1 * h2 + h2 * 10


PUBLISHED = (Published("VIB", (97, 71, 33), 1.6), Published("L0", (266, 88, 33), 1.6))


@dataclass(frozen=True)
class Variant:
    """One way of pruning a seed's base model."""

    name: str
    label: str
    rows: list[ScheduleRow]
    config: dict[str, Any]  # replaced in the seed's PruneConfig


def params(units: tuple[int, ...]) -> int:
    """Parameters of the MLP inputs-h1-h2-10 (weights and biases)."""
    k, h1, h2 = units
    return k * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10


def input_schedule(q: float | list[float], q_inputs: float | None = None) -> list[ScheduleRow]:
    """An input schedule's rows down to the first below SMALLEST_PARAMS parameters."""
    rows = geometric_schedule(HIDDEN, q, 80, 1, INPUTS, q_inputs)
    small = next(i for i, row in enumerate(rows) if params(row.units) < SMALLEST_PARAMS)
    return rows[:small + 1]


def variants() -> list[Variant]:
    earlier = input_schedule(EARLIER_Q)
    inputs_only = geometric_schedule(HIDDEN, 1.0, 20, 1, INPUTS, 0.9)
    no_retraining = Retraining(epochs=0)
    return [
        Variant("inputs",
                "inputs + hidden, q = 0.96 0.98, batch 128, until converged (recommended)",
                input_schedule(Q), {"scoring": SCORING, "retraining": RETRAINING}),
        Variant("earlier", "inputs + hidden, q = 0.93 0.96 (earlier recommendation)", earlier,
                {"scoring": SCORING}),
        Variant("data", "inputs + hidden, q = 0.93 0.96, data box", earlier, {}),
        Variant("global", "inputs + hidden, q = 0.93 0.96, global allocation", earlier,
                {"scoring": replace(SCORING, allocation="global")}),
        Variant("hidden", "hidden only (default retain.txt)", geometric_schedule(HIDDEN), {}),
        Variant("inputs-only", "inputs only, no retraining (quantile box)", inputs_only,
                {"scoring": SCORING, "retraining": no_retraining}),
        Variant("inputs-only-data", "inputs only, no retraining (data box)", inputs_only,
                {"retraining": no_retraining}),
    ]


def run_seed(seed: int, cache: Path, data_root: str | None) -> dict[str, Results]:
    """Every variant's session for one seed (the first one trains the shared base model)."""
    results: dict[str, Results] = {}
    base: Path | None = None
    for variant in variants():
        retain = cache / f"{variant.name}.txt"
        write_schedule(variant.rows, retain)
        config = replace(PruneConfig(seed=seed, base_model=str(base) if base else None),
                         **variant.config)
        print(f"seed {seed}: {variant.label} ({len(variant.rows) - 1} prune steps)", flush=True)
        results[variant.name] = run(config, cache / f"{variant.name}-s{seed}", retain=retain,
                                    data_root=data_root, quiet=True, log=lambda line: None)
        base = base or results[variant.name].session.checkpoint(0)
    return results


def rows_of(result: Results) -> list[dict[str, Any]]:
    """The gathered rows of a session with their checkpoint paths."""
    return [{**r.values, "iteration": r.iteration,
             "checkpoint": result.session.checkpoint(r.iteration)}
            for r in result.concatenation.rows]


def choose(rows: list[dict[str, Any]], budget: int) -> dict[str, Any] | None:
    """The model within `budget` parameters with the highest validation accuracy (ties: the
    smaller one); the test split plays no part."""
    within = [r for r in rows if r["Params"] <= budget]
    return max(within, key=lambda r: (r["Val_Accuracy"], -r["Params"]), default=None)


def deployed_accuracy(checkpoint: Path, bundle: Path, data_root: str | None) -> float:
    """Test accuracy of the checkpoint's deploy bundle on the raw 28x28 test images, computed by
    the deploy package alone (torch + numpy)."""
    deploy.write_bundle(checkpoint, bundle, onnx=False)
    model = deploy.load(bundle)
    images, labels = load_test_split("mnist", data_root)
    predicted = deploy.predict(model, images).labels.numpy()
    return 100.0 * float((predicted == labels).mean())


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def display_path(path: Path) -> str:
    """A path relative to the repository root when it lies inside it (the benchmark runs from
    there), else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def frontier_table(name: str, per_seed: dict[int, dict[str, Results]]) -> str:
    """One row per schedule row: units and params (of the first seed; global allocation splits
    differently per seed), mean MACs, accuracies as mean ± std over seeds."""
    columns = {seed: rows_of(results[name]) for seed, results in per_seed.items()}
    length = min(len(rows) for rows in columns.values())
    first = next(iter(columns.values()))
    lines = []
    for i in range(length):
        at = [rows[i] for rows in columns.values()]
        lines.append([i, first[i]["Hidden"], first[i]["Params"],
                      round(statistics.mean(r["MACs"] for r in at)),
                      mean_std([r["Val_Accuracy"] for r in at]),
                      mean_std([r["Test_Accuracy"] for r in at]),
                      mean_std([r["NoRetrain_Test_Accuracy"] for r in at])])
    return markdown_table(["row", "units", "params", "MACs", "val %", "test %",
                           "test % before retraining"], lines)


def plot(per_seed: dict[int, dict[str, Results]], path: Path) -> Path:
    """Test error against parameters and against MACs (log-log): our curves (mean over seeds)
    and the chosen models, the published points as markers."""
    fig, axes = new_figure(1, 2, width=14.0, height=6.0)
    colors = {"inputs": COLORS["test"], "data": "#17becf", "earlier": "#ff7f0e",
              "global": "#9467bd", "hidden": COLORS["train"]}
    for ax, column in zip(axes, ("Params", "MACs"), strict=True):
        for variant in variants():
            if variant.name not in colors:
                continue
            columns = [rows_of(results[variant.name]) for results in per_seed.values()]
            length = min(len(rows) for rows in columns)
            x = [statistics.mean(rows[i][column] for rows in columns) for i in range(length)]
            y = [100 - statistics.mean(rows[i]["Test_Accuracy"] for rows in columns)
                 for i in range(length)]
            ax.plot(x, y, marker="o", markersize=3, color=colors[variant.name],
                    label=f"{variant.label}, mean of seeds {', '.join(map(str, per_seed))}")
        chosen = [choose(rows_of(results["inputs"]), budget) for budget in BUDGETS
                  for results in per_seed.values()]
        chosen = [c for c in chosen if c is not None]
        ax.plot([c[column] for c in chosen], [100 - c["Test_Accuracy"] for c in chosen],
                marker="*", markersize=14, linestyle="none", color="gold",
                markeredgecolor="black", zorder=5,
                label=f"chosen on validation within {' and '.join(f'{b:,}' for b in BUDGETS)} "
                      "params (one per seed and budget)")
        for point, marker in zip(PUBLISHED, ("s", "D"), strict=True):
            value = point.params if column == "Params" else point.macs
            ax.plot([value], [point.error], marker=marker, markersize=9, linestyle="none",
                    color="black", label=f"{point.name} {'-'.join(map(str, point.units))} "
                                         "(RigL paper, app. B)")
            ax.annotate(point.name, (value, point.error), textcoords="offset points",
                        xytext=(6, 6), fontsize=9)
        log_axis(ax, "x", [p.params for p in PUBLISHED] + [4_000, 220_000])
        ax.set_yscale("log")
        ax.set_ylim(0.6, 15)  # the hidden-only schedule's last rows (up to 75 % error) leave it
        ax.set_xlabel(f"{'parameters' if column == 'Params' else 'multiply-accumulates'} "
                      "(log scale)")
        ax.set_ylabel("test error (%, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle("MNIST, 784-256-64-10 pruned by interval-adjoint significance: inputs and "
                 "hidden neurons")
    return save_figure(fig, path)


def inputs_only_check(per_seed: dict[int, dict[str, Results]], name: str) -> tuple[float, str]:
    """The largest loss of test accuracy (without retraining) at >= 300 kept inputs, over seeds,
    and a line saying it."""
    drops = []
    for results in per_seed.values():
        rows = rows_of(results[name])
        base = rows[0]["Test_Accuracy"]
        kept = [r for r in rows[1:] if parse_hidden_label(r["Hidden"])[0] >= INPUTS_ONLY_FLOOR]
        drops.append(max(base - r["NoRetrain_Test_Accuracy"] for r in kept))
    return max(drops), (f"largest drop {max(drops):.2f} points (per seed "
                        f"{', '.join(f'{d:.2f}' for d in drops)})")


def comparison_table(per_seed: dict[int, dict[str, Results]]) -> str:
    """Per retrained variant and budget: the test accuracy of the model chosen on validation,
    mean ± std over seeds (the fair way to compare schedules at equal size)."""
    budgets = [*BUDGETS, 20_000, 50_000]
    lines = []
    for variant in variants():
        if variant.name.startswith("inputs-only"):
            continue
        cells = []
        for budget in budgets:
            chosen = [choose(rows_of(results[variant.name]), budget)
                      for results in per_seed.values()]
            cells.append("—" if None in chosen else mean_std([c["Test_Accuracy"]
                                                               for c in chosen]))
        lines.append([variant.label, *cells])
    return markdown_table(["schedule", *(f"≤ {b:,} params" for b in budgets)], lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data-root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    cache = args.out / "cache" / "frontier_mnist"
    cache.mkdir(parents=True, exist_ok=True)
    per_seed = {seed: run_seed(seed, cache, args.data_root) for seed in args.seeds}

    chosen, checks, lines = [], [], []
    for budget, target in BUDGETS.items():
        for seed, results in per_seed.items():
            row = choose(rows_of(results["inputs"]), budget)
            if row is None:
                checks.append(f"seed {seed}, ≤ {budget:,} params: no model that small: NO")
                continue
            deployed = deployed_accuracy(row["checkpoint"], cache / f"bundle-s{seed}-{budget}",
                                         args.data_root)
            ok = row["Test_Accuracy"] >= target
            chosen.append({"seed": seed, "params": row["Params"],
                           "test_accuracy": row["Test_Accuracy"],
                           "checkpoint": display_path(row["checkpoint"]), "budget": budget,
                           "units": row["Hidden"], "macs": row["MACs"],
                           "val_accuracy": row["Val_Accuracy"],
                           "deployed_test_accuracy": deployed})
            lines.append([seed, f"≤ {budget:,}", row["Hidden"], row["Params"], row["MACs"],
                          f"{row['Val_Accuracy']:.2f}", f"{row['Test_Accuracy']:.2f}",
                          f"{deployed:.2f}", f"≥ {target} {'yes' if ok else 'NO'}"])
    chosen_table = markdown_table(["seed", "budget", "units", "params", "MACs", "val %",
                                   "test %", "deployed bundle, raw images %", "target"], lines)
    worst, line = inputs_only_check(per_seed, "inputs-only-data")
    checks.append(f"inputs only, no retraining, down to {INPUTS_ONLY_FLOOR} inputs (default "
                  f"settings, data box): {line}; target ≤ {INPUTS_ONLY_DROP}: "
                  f"{'yes' if worst <= INPUTS_ONLY_DROP else 'NO'}")
    _, line = inputs_only_check(per_seed, "inputs-only")
    checks.append(f"the same over the quantile box: {line}")

    published = markdown_table(
        ["published (RigL paper, app. B)", "units (inputs-h1-h2)", "params", "MACs", "test %"],
        [[p.name, "-".join(map(str, p.units)), p.params, p.macs, f"{100 - p.error:.1f}"]
         for p in PUBLISHED])
    seeds = ", ".join(map(str, per_seed))
    sections = [
        f"## Chosen models (seeds {seeds}; highest validation accuracy within the budget, "
        "inputs + hidden, q = 0.96 0.98, batch 128, until converged)", chosen_table,
        "\n".join(f"- {c}" for c in checks),
        published,
        "## Test accuracy of the model chosen on validation, per schedule (mean ± std over "
        "seeds)", comparison_table(per_seed),
        *[part for variant in variants() for part in (
            f"## {variant.label} (seeds {seeds}, mean ± std; units and params of seed "
            f"{next(iter(per_seed))})",
            frontier_table(variant.name, per_seed))]]
    report = "\n\n".join(sections) + "\n"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "frontier_mnist.md", report)
    atomic_write(args.out / "frontier_mnist.json", json.dumps(chosen, indent=2) + "\n")
    plot(per_seed, args.out / "frontier_mnist.png")


if __name__ == "__main__":
    main()
