"""LeNet-5 on MNIST (issue 15): the whole default workflow, q = 0.8 for every group, seed 0.

Usage: python benchmarks/prune_lenet5.py [--data-root DIR] [--session DIR] [--seed 0] [--keep]

Measured in one run: the base model's test accuracy; the recommended model (chosen on
validation by the engine's concatenate step) with its test error, its MACs against the dense
LeNet-5's and its CPU speed-up at batch 256 (deploy.load models, paired medians of interleaved
samples in this process, as benchmarks/deploy_latency.py); every iteration checked for a
constant predictor; the workflow's cost in reference epochs (one reference epoch: the dense
LeNet-5 over the training split with a plain DataLoader at batch 64, timed in this run); and
the time of interval-adjoint scoring of the dense LeNet-5.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch
from _setup import ROOT, cpu_and_wall, markdown_table, median, reference_epoch
from deploy_latency import BenchConfig, measure

import iaprune_runtime as deploy
from iaprune.checkpoint import load_model
from iaprune.config import PruneConfig
from iaprune.data import load_dataset
from iaprune.device import place
from iaprune.engine import run
from iaprune.files import atomic_write
from iaprune.retain import geometric_schedule, write_schedule
from iaprune.significance import ScoreData, data_box, score
from iaprune.spec import lenet5

HIDDEN = [20, 50, 500]
TARGETS = {"base accuracy": 99.2, "test error": 1.0, "MAC reduction": 10.5, "speed-up": 6.0,
           "reference epochs": 40.0, "scoring ms": 20.0}
# Published LeNet-5/MNIST channel pruning (test error %, FLOP or MAC reduction, CPU speed-up)
ANCHORS = [("SBP (Neklyudov et al. 2017)", "0.86", "10.49x", "5.41x"),
           ("SSL (Wen et al. 2016)", "1.00", "", "5.17x"),
           ("Taylor, Molchanov et al. 2017 (2-12-127)", "about 1.0", "", "4.62x")]


def scoring_ms(model, data, repeats: int = 50) -> tuple[float, float]:
    """Median ms of interval-adjoint scoring of `model` as the engine does it (the data box
    computed once per run) and with the data box computed in the call."""
    box = data_box(data.train.x)
    given, whole = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        score("interval_adjoint", model, ScoreData(data.train.x, data.train.y, box=box))
        given.append(time.perf_counter() - started)
    for _ in range(max(5, repeats // 10)):
        started = time.perf_counter()
        score("interval_adjoint", model, ScoreData(data.train.x, data.train.y))
        whole.append(time.perf_counter() - started)
    return 1e3 * statistics.median(given), 1e3 * statistics.median(whole)


@torch.no_grad()
def predicted_classes(path: Path, data) -> int:
    """How many different classes a checkpoint predicts over the test split."""
    model, _ = load_model(path)
    return len(torch.unique(model(data.test.x).argmax(1)))


def check(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--session", default=str(ROOT / "benchmarks/results/cache/prune_lenet5"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--keep", action="store_true", help="resume an existing session "
                        "instead of starting afresh (its wall time is then not the whole run)")
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_root)
    spec = lenet5(list(data.input_shape), data.num_classes)
    load_before, threads = os.getloadavg()[0], torch.get_num_threads()
    reference = [cpu_and_wall(reference_epoch, data, seed=s, spec=spec) for s in range(2)]

    if not args.keep:
        shutil.rmtree(args.session, ignore_errors=True)
    retain = Path(args.out) / "cache" / "lenet5_retain.txt"
    write_schedule(geometric_schedule(HIDDEN), retain)  # = iaprune retain --hidden 20 50 500
    started, started_cpu = time.perf_counter(), time.process_time()
    results = run(PruneConfig(arch="lenet5", seed=args.seed), args.session, retain=retain,
                  data_root=args.data_root, quiet=True, log=lambda line: None)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    reference.append(cpu_and_wall(reference_epoch, data, seed=2, spec=spec))
    load_after = os.getloadavg()[0]

    concatenation = results.concatenation
    rows = [r.values for r in concatenation.rows]
    chosen = concatenation.recommended
    dense_macs = rows[0]["MACs"]
    classes = [predicted_classes(results.session.checkpoint(i), data) for i in range(len(rows))]
    run_now = {r["iteration"]: r for r in results.rows}  # epochs and seconds of this run
    table_rows = []
    for i, r in enumerate(rows):
        mark = " ★" if i == chosen else ""
        spent = run_now.get(i, {})
        table_rows.append([f"{i}{mark}", r["Hidden"], f"{r['PercentageRetain']:.2f}",
                           f"{r['Params']:,}", f"{r['MACs']:,}",
                           f"{dense_macs / r['MACs']:.1f}x", f"{r['NoRetrain_Test_Accuracy']:.2f}",
                           f"{r['Test_Accuracy']:.2f}", f"{r['Val_Accuracy']:.2f}", classes[i],
                           spent.get("Epochs", ""), f"{spent['Seconds']:.1f}" if spent else ""])
    table = markdown_table(["itr", "units", "% units", "params", "MACs", "fewer MACs",
                            "no-retrain test %", "test %", "val %", "classes predicted",
                            "epochs", "s"], table_rows)

    torch.set_num_threads(BenchConfig.threads)
    dense = deploy.load(results.session.checkpoint(0))
    pruned = deploy.load(results.session.checkpoint(chosen))
    timings = measure({"dense": dense, "pruned": pruned}, 256, BenchConfig())
    speedup = statistics.median(d / p for d, p in zip(timings["dense"], timings["pruned"],
                                                      strict=True))
    base_model, _ = load_model(results.session.checkpoint(0))
    score_ms, score_with_box_ms = scoring_ms(place(base_model), data)

    base, best = rows[0], rows[chosen]
    error = 100.0 - best["Test_Accuracy"]
    reduction = dense_macs / best["MACs"]
    ref, ref_cpu = median([w for w, _ in reference]), median([c for _, c in reference])
    cost = wall / ref
    constant = [r["Hidden"] for r, c in zip(rows, classes, strict=True) if c < 2]
    lines = [
        table, "",
        f"base (dense LeNet-5) test accuracy: {base['Test_Accuracy']:.2f}% (target >= "
        f"{TARGETS['base accuracy']}): {check(base['Test_Accuracy'] >= TARGETS['base accuracy'])}",
        f"recommended (★, smallest within {concatenation.tolerance:g} pt of the base's "
        f"validation accuracy): iteration {chosen}, units {best['Hidden']}",
        f"  test error {error:.2f}% (target <= {TARGETS['test error']}): "
        f"{check(error <= TARGETS['test error'])}",
        f"  {reduction:.2f}x fewer MACs than dense ({best['MACs']:,} of {dense_macs:,}; target >= "
        f"{TARGETS['MAC reduction']}x): {check(reduction >= TARGETS['MAC reduction'])}",
        f"  CPU speed-up at batch 256: {speedup:.2f}x (paired median of {BenchConfig.repeats} "
        f"interleaved samples, {BenchConfig.threads} thread; dense "
        f"{1e3 * statistics.median(timings['dense']):.2f} ms, pruned "
        f"{1e3 * statistics.median(timings['pruned']):.2f} ms per batch; target >= "
        f"{TARGETS['speed-up']}x): {check(speedup >= TARGETS['speed-up'])}",
        f"constant predictors (one class for the whole test split): {constant or 'none'}",
        f"reference epoch (dense LeNet-5, DataLoader, batch 64): median {ref:.2f} s of "
        f"{', '.join(f'{w:.2f}' for w, _ in reference)}",
        f"whole workflow: {wall:.1f} s = {cost:.1f} reference epochs (budget "
        f"{TARGETS['reference epochs']:g}): {check(cost <= TARGETS['reference epochs'])}",
        f"  the same in CPU time of this process: {cpu:.1f} s = {cpu / ref_cpu:.1f} reference "
        f"epochs of {ref_cpu:.2f} s",
        f"interval-adjoint scoring of the dense LeNet-5: {score_ms:.2f} ms median with the data "
        f"box the engine computes once per run (target <= {TARGETS['scoring ms']:g} ms): "
        f"{check(score_ms <= TARGETS['scoring ms'])}; {score_with_box_ms:.1f} ms with the box "
        f"computed from the 55,000 training images in the call",
        f"torch {torch.__version__}, {platform.machine()}, workflow on {threads} torch "
        f"thread(s); load average "
        f"{load_before:.2f} before, {load_after:.2f} after (2 cores, shared)",
        "", "Published LeNet-5 channel pruning on MNIST:", "",
        markdown_table(["method", "test error %", "fewer FLOPs/MACs", "CPU speed-up"],
                       [list(a) for a in ANCHORS]),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    atomic_write(f"{args.out}/prune_lenet5.md", report)


if __name__ == "__main__":
    main()
