"""ResNet on Fashion-MNIST (issue 25): IA-Prune side by side with Torch-Pruning 1.6.

Usage: python benchmarks/prune_resnet.py [--arch resnet8|resnet20] [--data-root DIR]
           [--session DIR] [--keep] [--train-limit N] [--out DIR]

One run measures:
- IA-Prune's default workflow (seed 0, q = 0.8 for every group, coupled stream channels
  included) on the schedule's rows up to the first one at 8x fewer MACs than the dense network;
- Torch-Pruning 1.6 on the same base model (iteration 0's best_model.pth): its
  MagnitudeImportance (L2), TaylorImportance and GroupNormPruner (GroupMagnitudeImportance),
  each with its default grouping (its DependencyGraph couples the residual channels), pruned
  iteratively to the MAC count of each of IA-Prune's iterations (the step's channel ratio
  found by bisection) and fine-tuned after each step for as many epochs as IA-Prune's
  retraining of that iteration ran, with IA-Prune's retraining settings (the epoch with the best
  validation accuracy is kept);
- at 2x, 4x and 8x fewer MACs: test accuracies, and CPU speed-ups over the dense network at
  batch 256 (torch alone, deploy.load models, paired medians of interleaved samples);
- interval-adjoint scoring time of the dense network, constant predictors, the workflow's cost in
  reference epochs (the dense network over the training split, plain DataLoader, batch 64);
- what the coupled channels are worth: the MACs left when only the blocks' inner channels are
  pruned (to one channel each), and the accuracy without retraining when a coupled group's
  significance sums its members' (the default) or takes their maximum.

With --train-limit N the training split is cut to N samples and with --max-epochs N every
training is capped at N epochs (a quick smoke run, written to prune_<arch>_smoke.md; its numbers
are not the benchmark's).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from _setup import ROOT, cpu_and_wall, markdown_table, median, reference_epoch
from deploy_latency import BenchConfig, measure

import iaprune_runtime as deploy
from iaprune.checkpoint import load_model, save_checkpoint
from iaprune.config import PruneConfig
from iaprune.data import Dataset, Split, load_dataset
from iaprune.engine import read_config, run
from iaprune.files import atomic_write
from iaprune.groups import groups, units
from iaprune.model import layer_table
from iaprune.prune import keep_indices, shrink
from iaprune.records import TRAIN_FILE
from iaprune.retain import geometric_schedule, write_schedule
from iaprune.session import Session
from iaprune.significance import ScoreData, data_box, interval_adjoint, score
from iaprune.spec import PRESETS, build
from iaprune.trainer import train
from iaprune.validator import evaluate, evaluate_split

FACTORS = (2, 4, 8)  # fewer MACs than the dense network
SPEEDUP = {2: 1.4, 4: 2.0, 8: 3.0}  # the speed-up targets at those factors
SCORING_MS = 50.0
REFERENCE_EPOCHS = 40.0


def macs(model) -> int:
    return layer_table(model)[2]


def schedule_to(spec: dict, factor: float) -> list:
    """The default geometric schedule's rows up to the first at `factor` x fewer MACs."""
    dense = build(spec, seed=0)
    rows, full = [], macs(dense)
    for row in geometric_schedule(units(dense)):
        rows.append(row)
        small = shrink(dense, [torch.arange(n) for n in row.units], "none")
        if macs(small) * factor <= full:
            return rows
    return rows


def limited(data: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(data.train.y):
        return data
    return replace(data, train=Split(data.train.x[:n], data.train.y[:n]))


# ---- Torch-Pruning -------------------------------------------------------------------------

def tp_variants():
    """Torch-Pruning's pruners and importances compared. Its GroupNormPruner with
    GroupMagnitudeImportance(p=2) is left out: without the sparse (regularised) training it is
    made for, it removes the same channels as MagnitudeImportance(p=2) (a smoke run of this
    benchmark gave identical models and accuracies at every step), and its regularised
    training would change the fine-tuning budget."""
    import torch_pruning as tp

    return {
        "TP magnitude": (tp.pruner.BasePruner, lambda: tp.importance.MagnitudeImportance(p=2)),
        "TP Taylor": (tp.pruner.BasePruner, lambda: tp.importance.TaylorImportance()),
    }


def tp_prune(model, pruner_cls, importance, ratio: float, data: Dataset) -> None:
    """One Torch-Pruning step of `model` in place: every group loses `ratio` of its channels
    (its default, uniform, local allocation); Taylor reads gradients of the training loss."""
    example = data.train.x[:1].reshape(1, *model.input_shape)
    pruner = pruner_cls(model, example, importance=importance, pruning_ratio=ratio,
                        ignored_layers=[model[-1]])
    if "Taylor" in type(importance).__name__:
        model.zero_grad()
        for i in range(0, 2048, 256):
            F.cross_entropy(model(data.train.x[i:i + 256]), data.train.y[i:i + 256]).backward()
    pruner.step()
    model.zero_grad()


def ratio_for(model, pruner_cls, make_importance, target: int, data: Dataset) -> float:
    """The step ratio whose pruned copy of `model` has the MACs closest to `target` (of those a
    bisection tried; the channel counts of a uniform step do not depend on the importance)."""
    found: dict[float, int] = {}

    def pruned(ratio: float) -> int:
        trial = copy.deepcopy(model)
        tp_prune(trial, pruner_cls, make_importance(), ratio, data)
        found[ratio] = macs(trial)
        return found[ratio]

    lo, hi = 0.0, 0.95  # macs(lo) > target >= macs(hi)
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pruned(mid) > target else (lo, mid)
    return min(found, key=lambda r: (abs(found[r] - target), r))


def tp_worker(name: str, checkpoint: Path, targets: list[int], epochs: list[int],
              config: PruneConfig, data: Dataset) -> list[dict]:
    """One Torch-Pruning variant in its own process (one torch thread: the variants run side
    by side on the cores)."""
    torch.set_num_threads(1)
    base, _ = load_model(checkpoint)
    return run_tp(name, base, targets, epochs, config, data)


def run_tp(name: str, base, targets: list[int], epochs: list[int], config: PruneConfig,
           data: Dataset) -> list[dict]:
    """One Torch-Pruning variant, iteratively to each target MAC count, fine-tuned after each
    step for the given epochs; the models and their metrics per step."""
    pruner_cls, make_importance = tp_variants()[name]
    model = copy.deepcopy(base).train()
    steps = []
    for k, (target, budget) in enumerate(zip(targets, epochs, strict=True), start=1):
        ratio = ratio_for(model, pruner_cls, make_importance, target, data)
        model.train()
        tp_prune(model, pruner_cls, make_importance(), ratio, data)
        _, no_retrain = evaluate_split(model, data.test)
        if budget:
            settings = replace(config.train_config(k), epochs=budget, patience=budget)
            train(model, data, settings, quiet=True)
        metrics = evaluate(model.eval(), data)
        steps.append({"model": copy.deepcopy(model), "macs": macs(model), "units": units(model),
                      "test": metrics.test_accuracy, "val": metrics.val_accuracy,
                      "no_retrain": no_retrain, "epochs": budget})
    return steps


# ---- the side measurements -----------------------------------------------------------------

def scoring_ms(model, data: Dataset, repeats: int = 30) -> float:
    box = data_box(data.train.x)
    score("interval_adjoint", model, ScoreData(data.train.x, data.train.y, box=box))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        score("interval_adjoint", model, ScoreData(data.train.x, data.train.y, box=box))
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def inner_only_floor(spec: dict) -> tuple[int, int]:
    """(dense MACs, MACs with every block's inner channels cut to one and the coupled stream
    channels kept): the most that pruning inner channels alone can remove."""
    dense = build(spec, seed=0)
    keep = [torch.arange(1 if not g.coupled else g.size) for g in groups(dense)]
    return macs(dense), macs(shrink(dense, keep, "none"))


def inner_counts(model, target: int) -> list[int]:
    """Unit counts that keep every coupled group whole and cut the inner groups by one common
    fraction, the largest whose MACs are at most `target` (bisection on the fraction)."""
    found = groups(model)

    def counts(fraction: float) -> list[int]:
        return [g.size if g.coupled else max(1, round(g.size * fraction)) for g in found]

    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        small = shrink(model, [torch.arange(n) for n in counts(mid)], "none")
        lo, hi = (mid, hi) if macs(small) <= target else (lo, mid)
    return counts(lo)


def inner_vs_all(base, rows: list, data: Dataset) -> list[tuple[str, int, float, str, int,
                                                                  float]]:
    """One-shot from the base, without retraining, at the MAC count of each schedule row:
    every group pruned (the row) against only the inner channels pruned (coupled groups whole):
    (units, MACs, test %) for both."""
    box = data_box(data.train.x)
    scores = interval_adjoint(base, box)
    found = []
    for row in rows[1:]:
        every = shrink(base, keep_indices(scores, list(row.units)), data=data.train.x)
        counts = inner_counts(base, macs(every))
        inner = shrink(base, keep_indices(scores, counts), data=data.train.x)
        found.append(("-".join(map(str, row.units)), macs(every),
                      evaluate_split(every, data.test)[1], "-".join(map(str, counts)),
                      macs(inner), evaluate_split(inner, data.test)[1]))
    return found


def coupled_rule(base, rows: list, data: Dataset) -> list[tuple[str, float, float]]:
    """Test accuracy without retraining of the base pruned one-shot to each row, coupled
    groups scored by the sum (default) or the max of their members' significances."""
    box = data_box(data.train.x)
    found = []
    for row in rows[1:]:
        accuracies = []
        for rule in ("sum", "max"):
            scores = interval_adjoint(base, box, coupled=rule)
            small = shrink(base, keep_indices(scores, list(row.units)), data=data.train.x)
            accuracies.append(evaluate_split(small, data.test)[1])
        found.append(("-".join(map(str, row.units)), *accuracies))
    return found


def epochs_run(session: Session, i: int) -> int:
    """Epochs IA-Prune's retraining of iteration i ran (its train_results.txt rows)."""
    path = session.final(i) / TRAIN_FILE
    if not path.is_file():
        return 0
    rows = [line.split() for line in path.read_text().splitlines()[1:]]
    return sum(1 for row in rows if row and int(row[0]) > 0)


def iteration_seconds(path: Path, rows: list[dict]) -> dict[int, float]:
    """The engine's seconds per iteration: this run's rows merged into those a run before it
    (resumed with --keep) recorded in `path`, which is rewritten."""
    known = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() \
        else {}
    known.update({r["iteration"]: r["Seconds"] for r in rows})
    atomic_write(path, json.dumps(known, indent=1))
    return known


def deployed(model, folder: Path, name: str, info: dict):
    path = save_checkpoint(folder / f"{name}.pth", model, input=info)
    return deploy.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet8", choices=["resnet8", "resnet20"])
    parser.add_argument("--data-root")
    parser.add_argument("--session")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--keep", action="store_true", help="resume an existing session")
    parser.add_argument("--train-limit", type=int, help="cut the training split (smoke run)")
    parser.add_argument("--max-epochs", type=int,
                        help="cap base training and every retraining (smoke run)")
    args = parser.parse_args()
    session = Path(args.session or ROOT / f"benchmarks/results/cache/prune_{args.arch}")
    log = print
    data = load_dataset("fashion-mnist", args.data_root)
    data = limited(data, args.train_limit)
    spec = PRESETS[args.arch](list(data.input_shape), data.num_classes)
    load_before, threads = os.getloadavg()[0], torch.get_num_threads()
    reference = [cpu_and_wall(reference_epoch, data, seed=s, spec=spec) for s in range(2)]

    rows = schedule_to(spec, max(FACTORS))
    retain = session.parent / f"{args.arch}_retain.txt"
    if not args.keep:
        shutil.rmtree(session, ignore_errors=True)
    retain.parent.mkdir(parents=True, exist_ok=True)
    write_schedule(rows, retain)
    started, started_cpu = time.perf_counter(), time.process_time()
    config = PruneConfig(arch=args.arch, dataset="fashion-mnist", seed=args.seed)
    if args.max_epochs:
        config = replace(config, training=replace(config.training, epochs=args.max_epochs),
                         retraining=replace(config.retraining, epochs=args.max_epochs))
    if args.train_limit:  # the session must see the same cut data: pass it as a Dataset
        results = run(config, session, retain=retain, data=data, quiet=True, log=log)
    else:
        results = run(config, session, retain=retain, data_root=args.data_root, quiet=True,
                      log=log)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    seconds = iteration_seconds(session.parent / f"{args.arch}_seconds.json", results.rows)
    reference.append(cpu_and_wall(reference_epoch, data, seed=2, spec=spec))
    ours = [r.values for r in results.concatenation.rows]
    dense_macs = ours[0]["MACs"]

    base, _ = load_model(results.session.checkpoint(0))
    used = read_config(results.session)  # the settings as the run resolved them
    budgets = [epochs_run(results.session, i) for i in range(1, len(ours))]
    targets = [r["MACs"] for r in ours[1:]]
    with ProcessPoolExecutor(min(len(tp_variants()), os.cpu_count() or 1),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {name: pool.submit(tp_worker, name, results.session.checkpoint(0), targets,
                                  budgets, used, data) for name in tp_variants()}
        tp_steps = {name: job.result() for name, job in jobs.items()}
    for name, steps in tp_steps.items():
        for k, step in enumerate(steps, start=1):
            log(f"{name} step {k}: {step['units']} MACs {step['macs']:,} (target "
                f"{targets[k - 1]:,}) test {step['test']:.2f}%")

    chosen = {f: next((i for i, r in enumerate(ours) if r["MACs"] * f <= dense_macs), None)
              for f in FACTORS}
    torch.set_num_threads(BenchConfig.threads)
    with tempfile.TemporaryDirectory() as tmp:
        info = load_model(results.session.checkpoint(0))[1].get("input")
        models = {"dense": deploy.load(results.session.checkpoint(0))}
        for f, i in chosen.items():
            if i is None:
                continue
            models[f"IA-Prune {f}x"] = deploy.load(results.session.checkpoint(i))
            for name, steps in tp_steps.items():
                models[f"{name} {f}x"] = deployed(steps[i - 1]["model"], Path(tmp),
                                                  f"{name}-{f}".replace(" ", "_"), info)
        timings = measure(models, 256, BenchConfig(repeats=100))
    speed = {name: statistics.median(d / t for d, t in zip(timings["dense"], timings[name],
                                                           strict=True))
             for name in models}
    torch.set_num_threads(threads)
    score_ms = scoring_ms(base, data)
    classes = {i: len(torch.unique(load_model(results.session.checkpoint(i))[0](
        data.test.x).argmax(1))) for i in range(len(ours))}
    total, floor = inner_only_floor(spec)
    rule = coupled_rule(base, rows, data)
    inner = inner_vs_all(base, rows, data)

    table = []
    for f, i in chosen.items():
        if i is None:
            table.append([f"{f}x", "not reached", "", "", "", "", ""])
            continue
        r = ours[i]
        best_tp = max(tp_steps, key=lambda n: tp_steps[n][i - 1]["test"])
        cells = [f"{f}x", f"itr {i}: {r['Hidden']}, {dense_macs / r['MACs']:.2f}x, "
                 f"**{r['Test_Accuracy']:.2f}**, {speed[f'IA-Prune {f}x']:.2f}x"]
        for name in tp_steps:
            s = tp_steps[name][i - 1]
            cells.append(f"{s['test']:.2f}, {speed[f'{name} {f}x']:.2f}x")
        won = r["Test_Accuracy"] > tp_steps[best_tp][i - 1]["test"]
        fast = speed[f"IA-Prune {f}x"] >= SPEEDUP[f]
        cells.append(f"{'yes' if won else 'NO'} / {'yes' if fast else 'NO'} "
                     f"(>= {SPEEDUP[f]}x)")
        table.append(cells)
    ref = median([w for w, _ in reference])
    cut = f" (training split cut to {args.train_limit})" if args.train_limit else ""
    lines = [
        f"{args.arch} on Fashion-MNIST{cut}, "
        f"seed {args.seed}, default settings; dense: {dense_macs:,} MACs, base test "
        f"{ours[0]['Test_Accuracy']:.2f}%.", "",
        "Test accuracy % and CPU speed-up over the dense network at batch 256 (paired median, "
        f"{BenchConfig.threads} thread):", "",
        markdown_table(["fewer MACs", "IA-Prune (iteration: units, MACs, test %, speed-up)",
                        *(f"{n} (test %, speed-up)" for n in tp_steps),
                        "IA-Prune more accurate than the best TP / fast enough"], table), "",
        "Every iteration:", "",
        markdown_table(["itr", "units", "MACs", "IA-Prune test %", "no-retrain %", "epochs",
                        *(f"{n} test % (no-retrain)" for n in tp_steps)],
                       [[i, r["Hidden"], f"{r['MACs']:,}", f"{r['Test_Accuracy']:.2f}",
                         f"{r['NoRetrain_Test_Accuracy']:.2f}",
                         budgets[i - 1] if i else "",
                         *((f"{tp_steps[n][i - 1]['test']:.2f} "
                            f"({tp_steps[n][i - 1]['no_retrain']:.2f})") if i else ""
                           for n in tp_steps)] for i, r in enumerate(ours)]), "",
        f"interval-adjoint scoring of the dense {args.arch}: {score_ms:.1f} ms median "
        f"(target <= {SCORING_MS:g} ms), {threads} torch thread(s)",
        f"constant predictors: {[i for i, c in classes.items() if c < 2] or 'none'}",
        f"reference epoch (dense {args.arch}, DataLoader, batch 64): median {ref:.1f} s",
        f"IA-Prune's workflow over these {len(ours)} rows: {sum(seconds.values()):.0f} s (the "
        f"engine's iteration times) = {sum(seconds.values()) / ref:.1f} reference epochs (budget "
        f"{REFERENCE_EPOCHS:g}); this run: {wall:.0f} s wall, {cpu:.0f} s CPU",
        f"pruning only the blocks' inner channels (each to 1) leaves {floor:,} of {total:,} "
        f"MACs ({total / floor:.2f}x fewer at most)",
        "", "Every group pruned (default) or only the inner channels, one-shot from the base at "
        "equal MACs, test % without retraining:", "",
        markdown_table(["every group: units", "MACs", "test %", "inner only: units", "MACs",
                        "test %"],
                       [[a, f"{b:,}", f"{c:.2f}", d, f"{e:,}", f"{f:.2f}"]
                        for a, b, c, d, e, f in inner]),
        "", "Coupled-group significance, test % without retraining (one-shot from the base):",
        "", markdown_table(["units", "sum of members (default)", "max of members"],
                           [[u, f"{a:.2f}", f"{b:.2f}"] for u, a, b in rule]), "",
        f"torch {torch.__version__}, {platform.machine()}; load average {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after (2 cores, shared)",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    smoke = args.train_limit or args.max_epochs
    name = f"prune_{args.arch}{'_smoke' if smoke else ''}.md"
    atomic_write(Path(args.out) / name, report)


if __name__ == "__main__":
    main()
