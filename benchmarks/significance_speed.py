"""Time every significance criterion on a 784-256-64-10 ReLU MLP with MNIST-sized inputs,
and the interval sweep of a LeNet-5.

    .venv/bin/python benchmarks/significance_speed.py [--data auto|mnist|random]
                                 [--threads 1,2,2p] [--budget 2.0] [--out table.md]

Prints a markdown table of median wall-clock times per call (each call does the full work from
model + box or model + data; nothing is cached across calls). Each column runs in its own
process; a column like "2p" runs with OMP_WAIT_POLICY=PASSIVE, which on a machine whose cores
are busy with other work avoids OpenMP's spinning workers stalling every parallel op.
Targets from issue 3: the interval-adjoint scores over a given box take <= 1 ms (seed="sum") and
<= 2 ms ("per_output"). Target from issue 15: the interval sweep of the Caffe LeNet-5 (random
init, float32) over one data box, per_output seeding, adjoints of every layer down to the input,
takes <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _setup import ROOT, markdown_table
from torch import nn

from iaprune.adjoint import sweep
from iaprune.cli import run
from iaprune.data import MissingDataError, load_dataset
from iaprune.files import atomic_write
from iaprune.model import mlp_net
from iaprune.significance import CRITERIA, ScoreData, data_box, interval_adjoint, score

SIZES = [784, 256, 64, 10]
TARGETS_MS = {"sum": 1.0, "per_output": 2.0}
LENET5_TARGET_MS = 20.0


def lenet5(seed: int = 0) -> nn.Sequential:
    """The Caffe LeNet-5 on 1x28x28 (conv 20@5x5, maxpool 2, ReLU, conv 50@5x5, maxpool 2, ReLU,
    flatten, linear 500, ReLU, linear 10), random init, eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Conv2d(20, 50, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10)).eval()


def median_ms(fn: Callable[[], object], budget_s: float, max_repeats: int = 500) -> float:
    """Median of repeated calls (after 3 warm-up calls), repeating for about `budget_s`."""
    for _ in range(3):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_repeats and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def training_inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, description): the MNIST training split if asked/available, else random [0, 1]."""
    if kind in ("auto", "mnist"):
        shared = ROOT.parent / "shared" / "data"  # where the project keeps MNIST beside the repo
        root = os.environ.get("IAPRUNE_DATA") or (shared if (shared / "MNIST").is_dir() else None)
        try:
            data = load_dataset("mnist", root=root)
            return data.train.x, data.train.y, f"MNIST train split {tuple(data.train.x.shape)}"
        except MissingDataError:
            if kind == "mnist":
                raise
    g = torch.Generator().manual_seed(0)
    x = torch.rand(55_000, 784, generator=g)
    return x, torch.randint(0, 10, (55_000,), generator=g), "random [0, 1] inputs (55000, 784)"


def cases(model, x, y) -> list[tuple[str, str, Callable[[], object]]]:
    """(criterion, what one call does, the call)."""
    box = data_box(x)
    rows = [(f"interval_adjoint (seed={seed})", "scores from model + given data box",
             lambda seed=seed: interval_adjoint(model, box, seed))
            for seed in ("sum", "per_output")]
    rows.append(("interval_adjoint (per_output)", "score(): data_box over all x + scores",
                 lambda: score("interval_adjoint", model, ScoreData(x, y))))
    samples = ScoreData(x, y, box="samples", eps=0.05, n_samples=64)
    rows.append(("interval_adjoint (per_output)", "score(): 64 sample boxes, eps 0.05, batched",
                 lambda: score("interval_adjoint", model, samples)))
    data = ScoreData(x, y)
    for name in list(CRITERIA)[1:]:
        rows.append((name, "score()", lambda name=name: score(name, model, data)))
    cnn, image_box = lenet5(), box.reshape(1, 28, 28)
    rows.append(("interval sweep, LeNet-5 (per_output)",
                 "sweep(): given data box, adjoints of every layer and the input",
                 lambda: sweep(cnn, image_box, "per_output", lowest=0)))
    return rows


def label(column: str) -> str:
    """'2p' -> '2 threads, passive OMP wait'."""
    n = int(column.removesuffix("p"))
    return f"{n} thread{'s' * (n > 1)}" + (", passive OMP wait" if column.endswith("p") else "")


def measure(data: str, budget: float) -> dict:
    """Median ms of every case under the current torch thread count."""
    x, y, described = training_inputs(data)
    model = mlp_net(SIZES, "relu", seed=0).eval()
    rows = cases(model, x, y)
    return {"described": described, "rows": [[name, what] for name, what, _ in rows],
            "medians": [median_ms(fn, budget) for _, _, fn in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["auto", "mnist", "random"], default="auto",
                        help="MNIST train split (auto: if found) or random [0, 1] inputs")
    parser.add_argument("--threads", default="1,2,2p",
                        help="comma-separated torch thread counts; a trailing p runs that column "
                             "with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per cell")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one thread count, JSON out
    args = parser.parse_args(argv)
    if args.child is not None:
        torch.set_num_threads(args.child)  # before any parallel work: a fresh thread pool
        print(json.dumps(measure(args.data, args.budget)))
        return 0
    threads = [t.strip() for t in args.threads.split(",")]
    if not all(t.removesuffix("p").isdigit() and int(t.removesuffix("p")) >= 1 for t in threads):
        raise ValueError(f"--threads takes counts >= 1, each maybe with a p, got {args.threads!r}")
    if args.budget <= 0:
        raise ValueError(f"--budget must be > 0, got {args.budget}")

    # One process per column: switching torch's thread count inside a process that has already
    # run parallel work left 2-thread timings stalled at ~20 ms per call on our machine, and
    # OMP_WAIT_POLICY is read once when the OpenMP runtime starts.
    results = {}
    for t in threads:
        env = dict(os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if t.endswith("p") else {}))
        child = subprocess.run([sys.executable, __file__, "--data", args.data, "--budget",
                                str(args.budget), "--child", t.removesuffix("p")],
                               capture_output=True, text=True, check=False, env=env)
        if child.returncode != 0:
            raise RuntimeError(f"benchmark child ({t} threads) failed:\n{child.stderr}")
        results[t] = json.loads(child.stdout.strip().splitlines()[-1])
    first = results[threads[0]]

    lines = [f"Model {'-'.join(map(str, SIZES))} ReLU and (last row) the Caffe LeNet-5 on "
             f"1x28x28 (random init), data: {first['described']};"
             f" torch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} logical CPUs. Median ms per call.", "",
             markdown_table(["criterion", "one call", *(f"ms, {label(t)}" for t in threads)],
                            [[name, what, *(f"{results[t]['medians'][i]:.3f}" for t in threads)]
                             for i, (name, what) in enumerate(first["rows"])]), ""]
    for i, seed in enumerate(("sum", "per_output")):
        for t in threads:
            ms = results[t]["medians"][i]
            verdict = "meets" if ms <= TARGETS_MS[seed] else "MISSES"
            lines.append(f"seed={seed}, {label(t)}: median {ms:.3f} ms, "
                         f"target <= {TARGETS_MS[seed]} ms: {verdict}")
    for t in threads:
        ms = results[t]["medians"][-1]  # the LeNet-5 row is the last
        verdict = "meets" if ms <= LENET5_TARGET_MS else "MISSES"
        lines.append(f"LeNet-5 sweep, {label(t)}: median {ms:.3f} ms, "
                     f"target <= {LENET5_TARGET_MS} ms: {verdict}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        atomic_write(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
