"""Foundation benchmark: default MNIST training accuracy, and epoch speed vs a plain DataLoader.

Usage: python benchmarks/train_mnist.py [--data-root DIR] [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from _setup import REFERENCE_SIZES, ROOT, markdown_table, median, reference_epoch

from src.data import load_dataset
from src.files import atomic_write
from src.model import mlp_net
from src.trainer import TrainConfig, train
from src.validator import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--repeats", type=int, default=3, help="epoch timings per loop")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_root)
    config = TrainConfig()

    # 1. Epoch speed, side by side and interleaved so machine noise hits both loops alike.
    ours, plain = [], []
    for r in range(args.repeats):
        plain.append(reference_epoch(data, seed=r))
        model = mlp_net(REFERENCE_SIZES, seed=r)
        started = time.perf_counter()
        train(model, data, replace(config, epochs=1, seed=r), quiet=True)
        ours.append(time.perf_counter() - started)
    speed = markdown_table(
        ["loop (784-256-64-10, 55,000 images)", "median s/epoch", "runs"],
        [["plain DataLoader, batch 64 (reference epoch)", f"{median(plain):.2f}", len(plain)],
         [f"src.trainer, batch {config.batch_size} (incl. val+test eval)",
          f"{median(ours):.2f}", len(ours)]])
    ratio = median(plain) / median(ours)

    # 2. Default training to the best-by-validation-loss epoch.
    model = mlp_net(REFERENCE_SIZES, seed=0)
    started = time.perf_counter()
    result = train(model, data, config)
    wall = time.perf_counter() - started
    metrics = evaluate(model, data)
    accuracy = markdown_table(
        ["model", "test acc %", "val acc %", "best epoch", "epochs run", "wall s"],
        [["784-256-64-10 ReLU, defaults", f"{metrics.test_accuracy:.2f}",
          f"{metrics.val_accuracy:.2f}", result.best.epoch, result.epochs_run, f"{wall:.1f}"]])
    report = (f"{speed}\n\nspeed-up per epoch: {ratio:.1f}x\n\n{accuracy}\n\n"
              f"settings: {config}\n")
    print(report)
    atomic_write(f"{args.out}/train_mnist.md", report)


if __name__ == "__main__":
    main()
