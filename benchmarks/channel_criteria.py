"""LeNet-5 on MNIST without retraining: which channel significance prunes best (issue 15)?

    python benchmarks/channel_criteria.py [--seeds 0 1 2] [--rows 6] [--data-root DIR]

One base LeNet-5 per seed is trained by the engine with its default settings (a one-row session
under benchmarks/results/cache/lenet5-base-<seed>, reused when it is there). Every variant then
prunes that model iteratively through the first --rows prune rows of the q = 0.8 schedule
(20-50-500 -> 16-40-400 -> ... -> 5-13-131) without retraining, the way the engine does with
--retrain-epochs 0: score -> keep_indices -> shrink (the default linear fold), each step
scoring the model the previous step left. The test accuracy after each step is recorded.

Variants: the interval adjoint with a channel's positions summed or maximised and units read
before or after their activation, and every baseline criterion in its channel form. Writes
channel_criteria.md: mean ± sample std over seeds per row and the mean over the rows.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from _setup import ROOT, markdown_table

from iaprune.checkpoint import load_model
from iaprune.config import PruneConfig, iteration_seed
from iaprune.data import Dataset, load_dataset
from iaprune.device import place
from iaprune.engine import run
from iaprune.files import atomic_write
from iaprune.model import hidden_label
from iaprune.prune import keep_indices, shrink
from iaprune.retain import geometric_schedule, write_schedule
from iaprune.session import Session
from iaprune.significance import ScoreData, data_box, score
from iaprune.spec import Net
from iaprune.validator import evaluate_split

HIDDEN = [20, 50, 500]  # LeNet-5's conv channels and hidden neurons


@dataclass(frozen=True)
class Variant:
    """A criterion and the interval-adjoint choices it fixes."""

    name: str
    criterion: str
    aggregate: str = "sum"  # a channel's positions: summed or maximised
    measure: str = "pre"  # units read before or after their activation


VARIANTS = [Variant("ia sum pre", "interval_adjoint", "sum", "pre"),
            Variant("ia sum post", "interval_adjoint", "sum", "post"),
            Variant("ia max pre", "interval_adjoint", "max", "pre"),
            Variant("ia max post", "interval_adjoint", "max", "post"),
            *(Variant(name, name) for name in ("magnitude", "taylor", "apoz", "fpgm", "random"))]


def base_model(seed: int, data_root: str | None, cache: Path) -> Net:
    """The engine's default LeNet-5 of `seed` (trained once, then read from its session)."""
    session = Session(cache / f"lenet5-base-{seed}")
    if not session.complete(0):
        retain = cache / "lenet5-base-retain.txt"
        write_schedule(geometric_schedule(HIDDEN)[:1], retain)
        run(PruneConfig(arch="lenet5", seed=seed), session.root, retain=retain,
            data_root=data_root, quiet=True, log=lambda line: None)
    model, _ = load_model(session.checkpoint(0))
    return place(model)


def prune_without_retraining(model: Net, data: Dataset, variant: Variant, seed: int,
                             rows: int) -> list[float]:
    """Test accuracy after each of the first `rows` prune steps, no retraining."""
    schedule = geometric_schedule(HIDDEN)
    box = data_box(data.train.x)
    accuracies = []
    for i in range(1, rows + 1):
        scoring = ScoreData(data.train.x, data.train.y, seed=iteration_seed(seed, i), box=box,
                            measure=variant.measure, aggregate=variant.aggregate)
        scores = [s.cpu() for s in score(variant.criterion, model, scoring)]
        model = place(shrink(model, keep_indices(scores, schedule[i].neurons), "linear",
                             data.train.x))
        accuracies.append(evaluate_split(model, data.test)[1])
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--data-root")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    cache = Path(args.out) / "cache"
    data = load_dataset("mnist", args.data_root)
    schedule = geometric_schedule(HIDDEN)
    results: dict[str, list[list[float]]] = {v.name: [] for v in VARIANTS}  # per seed
    bases = []
    started = time.perf_counter()
    for seed in args.seeds:
        base = base_model(seed, args.data_root, cache)
        bases.append(evaluate_split(base, data.test)[1])
        for variant in VARIANTS:
            accuracies = prune_without_retraining(base, data, variant, seed, args.rows)
            results[variant.name].append(accuracies)
            print(f"seed {seed} {variant.name:<12} " + " ".join(f"{a:6.2f}" for a in accuracies),
                  flush=True)

    def cell(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {spread:.2f}"

    rows = []
    for i in range(args.rows):
        best = max(statistics.mean(r[i] for r in results[v.name]) for v in VARIANTS)
        row = [hidden_label(schedule[i + 1].neurons)]
        for v in VARIANTS:
            text = cell([r[i] for r in results[v.name]])
            row.append(f"**{text}**" if statistics.mean(r[i] for r in results[v.name]) == best
                       else text)
        rows.append(row)
    means = {v.name: [statistics.mean(r) for r in results[v.name]] for v in VARIANTS}
    rows.append([f"mean of rows 1..{args.rows}"] + [cell(means[v.name]) for v in VARIANTS])
    ranking = sorted(VARIANTS, key=lambda v: -statistics.mean(means[v.name]))
    lines = [
        f"LeNet-5 on MNIST, iterative pruning without retraining, linear fold; test accuracy "
        f"(%) after each step, mean ± sample std over seeds {args.seeds} (base models: "
        f"{', '.join(f'{b:.2f}' for b in bases)} %). Best mean per row in bold.", "",
        markdown_table(["units", *(v.name for v in VARIANTS)], rows), "",
        "ranking by the mean over the rows: " + ", ".join(
            f"{v.name} {statistics.mean(means[v.name]):.2f}" for v in ranking),
        f"({time.perf_counter() - started:.0f} s)"]
    report = "\n".join(lines) + "\n"
    print(report)
    atomic_write(Path(args.out) / "channel_criteria.md", report)


if __name__ == "__main__":
    main()
