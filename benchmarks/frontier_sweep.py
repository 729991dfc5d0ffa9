"""The settings sweep behind the frontier benchmark's recommended input schedule (issue 16).

Usage: python benchmarks/frontier_sweep.py [--out DIR] [--data-root DIR] [--seeds 0 1 2]
                                          [--only NAME ...] [--jobs 2]
Each variant changes one to three things against the earlier recommendation (q = 0.93 0.96,
quantile box, default retraining): the step size of the schedule, the retraining's image shifts,
patience, batch size, learning rate and stop rule, the fold, the shape. Every run is an engine
session pruned from the base model that benchmarks/frontier_mnist.py trained for the seed (run that
first), under DIR/cache/frontier_sweep/, so an interrupted sweep continues where it stopped;
`--jobs` runs sessions in parallel processes (one torch thread each). For both parameter budgets
the model is chosen per run on the validation split; the table gives validation and test
accuracy of the chosen models, mean over seeds. Choose a setting by the validation columns:
the test columns are there to report, and choosing by them would tune to the test split.
Writes DIR/frontier_sweep.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from _setup import ROOT, markdown_table
from frontier_mnist import BUDGETS, SCORING, choose, input_schedule

from iaprune.config import PruneConfig, Retraining
from iaprune.files import atomic_write
from iaprune.records import TRAIN_FILE, read_epochs
from iaprune.retain import write_schedule
from iaprune.session import Session

# name: (label, q of the hidden columns, q of the inputs (None: the first q), retraining
# settings, scoring settings), each against the earlier recommendation
VARIANTS: dict[str, tuple[str, list[float], float | None, dict[str, Any], dict[str, Any]]] = {
    "earlier": ("q 0.93 0.96 (the earlier recommendation)", [0.93, 0.96], None, {}, {}),
    "q95": ("q 0.95 0.97", [0.95, 0.97], None, {}, {}),
    "q96": ("q 0.96 0.98", [0.96, 0.98], None, {}, {}),
    "shift0": ("q 0.93 0.96, retraining without image shifts", [0.93, 0.96], None,
               {"shift": 0}, {}),
    "shift2": ("q 0.93 0.96, retraining with shifts up to 2 pixels", [0.93, 0.96], None,
               {"shift": 2}, {}),
    "patience6": ("q 0.93 0.96, retraining patience 6", [0.93, 0.96], None,
                  {"patience": 6}, {}),
    "batch128": ("q 0.93 0.96, retraining batch 128", [0.93, 0.96], None,
                 {"batch_size": 128}, {}),
    "lr003": ("q 0.93 0.96, retraining lr 0.003", [0.93, 0.96], None, {"lr": 0.003}, {}),
    "mean": ("q 0.93 0.96, mean fold", [0.93, 0.96], None, {}, {"bias_fold": "mean"}),
    "wide": ("q_in 0.95, q 0.91 0.96 (more inputs, fewer first-layer units)", [0.91, 0.96],
             0.95, {}, {}),
    "q96-patience6": ("q 0.96 0.98, retraining patience 6", [0.96, 0.98], None,
                      {"patience": 6}, {}),
    "q96-batch128": ("q 0.96 0.98, retraining batch 128", [0.96, 0.98],
                     None, {"batch_size": 128}, {}),
    "q96-batch128-converged": ("q 0.96 0.98, retraining batch 128 until converged (the "
                               "recommendation)", [0.96, 0.98], None,
                               {"batch_size": 128, "until": "converged"}, {}),
    "q96-batch128-patience6": ("q 0.96 0.98, retraining batch 128, patience 6", [0.96, 0.98],
                               None, {"batch_size": 128, "patience": 6}, {}),
}


def run_one(name: str, seed: int, base: Path, cache: Path, data_root: str | None) -> dict:
    """One variant's session for one seed: the chosen models per budget and the retraining
    epochs of the whole session (a cost that does not depend on the machine's load)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from iaprune.engine import run

    torch.set_num_threads(1)
    _, q, q_inputs, retraining, scoring = VARIANTS[name]
    folder = cache / f"{name}-s{seed}"
    retain = write_schedule(input_schedule(q, q_inputs), cache / f"{name}.txt")
    config = replace(PruneConfig(seed=seed, base_model=str(base)),
                     scoring=replace(SCORING, **scoring),
                     retraining=replace(Retraining(), **retraining))
    result = run(config, folder / "session", retain=retain, data_root=data_root, quiet=True,
                 log=lambda line: None)
    rows = [dict(r.values) for r in result.concatenation.rows]
    epochs = sum(len(read_epochs(result.session.final(r.iteration) / TRAIN_FILE))
                 for r in result.concatenation.rows if r.iteration > 0)
    return {"name": name, "seed": seed, "epochs": epochs,
            "chosen": {budget: choose(rows, budget) for budget in BUDGETS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--data-root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants")
    parser.add_argument("--jobs", type=int, default=2, help="parallel sessions [2]")
    args = parser.parse_args()
    bases = {seed: Session(args.out / "cache" / "frontier_mnist" / f"inputs-s{seed}").checkpoint(0)
             for seed in args.seeds}
    missing = [str(path) for path in bases.values() if not path.is_file()]
    if missing:
        sys.exit(f"error: no base model at {missing[0]}: run benchmarks/frontier_mnist.py "
                 "first")
    cache = args.out / "cache" / "frontier_sweep"
    cache.mkdir(parents=True, exist_ok=True)
    names = args.only or list(VARIANTS)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, name, seed, bases[seed], cache, args.data_root)
                   for name in names for seed in args.seeds]
        results = [future.result() for future in futures]

    lines = []
    for name in names:
        runs = [r for r in results if r["name"] == name]
        cells = []
        for budget in BUDGETS:
            chosen = [r["chosen"][budget] for r in runs]
            cells += [f"{statistics.mean(c['Val_Accuracy'] for c in chosen):.2f}",
                      f"{statistics.mean(c['Test_Accuracy'] for c in chosen):.2f}"]
        lines.append([VARIANTS[name][0], *cells,
                      " / ".join(f"{r['chosen'][budget]['Test_Accuracy']:.2f}"
                                 for budget in BUDGETS for r in runs),
                      round(statistics.mean(r["epochs"] for r in runs))])
    header = ["variant"]
    for budget in BUDGETS:
        header += [f"val % ≤ {budget:,}", f"test % ≤ {budget:,}"]
    header += [f"test % per seed ({', '.join(map(str, args.seeds))}), ≤ 9,700 then ≤ 6,000",
               "retraining epochs per session"]
    report = (f"## Frontier settings sweep (seeds {', '.join(map(str, args.seeds))}; model "
              "chosen on validation per run; mean over seeds)\n\n"
              + markdown_table(header, lines) + "\n")
    print(report)
    atomic_write(args.out / "frontier_sweep.md", report)


if __name__ == "__main__":
    main()
