"""The same study run sequentially in one process and on a local Ray, timed, with every cell's
numbers compared (issue 17: >= 1.6x faster on a 2-core machine, identical numbers).

    python benchmarks/study_speed.py [--dataset mnist] [--workers N] [--epochs 5] [--repeats 1]
        [--out benchmarks/results/study_speed.md]

The grid: 4 criteria (the default interval adjoint, magnitude, taylor, fpgm) x 3 seeds on the
no-retrain curve, plus the default on the retrain curve (--default-only retrain), rows 0..14:
3 base models + 12 + 3 cells = 18 cells. Every run is a fresh `python -m iaprune.study` process into
an empty folder (nothing cached), timed from its start to its exit, Ray's start and stop
included. With --repeats > 1 the two kinds of runs alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import ROOT, markdown_table

from iaprune.checkpoint import atomic_write
from iaprune.cli import run
from iaprune.records import ITERATION_DIR, VALIDATION_FILE

GRID = ["--seeds", "0", "1", "2", "--variants", "ia-per_output", "magnitude", "taylor", "fpgm",
        "--curves", "no-retrain", "retrain", "--default-only", "retrain"]


def study_run(argv: list[str], out: Path) -> tuple[float, float, tuple[float, float]]:
    """Wall seconds of one `python -m iaprune.study` process, the sum of its cells' seconds (as it
    printed them), and the 1-minute load average before and after."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "iaprune.study", *argv, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"study failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    cells = [float(m) for m in re.findall(r"^\[ *\d+/\d+\] ran .* ([0-9.]+)s$", proc.stdout,
                                           re.M)]
    return seconds, sum(cells), (load, os.getloadavg()[0])


def cell_numbers(out: Path) -> dict[str, str]:
    """Every iteration's validation_results.txt under OUT/cache, by path relative to it."""
    cache = out / "cache"
    return {str(p.relative_to(cache)): p.read_text()
            for p in sorted(cache.rglob(VALIDATION_FILE))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or digits [mnist]")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help=f"local Ray workers [{os.cpu_count()}: every core]")
    p.add_argument("--epochs", type=int, default=5, help="max epochs of base training [5]")
    p.add_argument("--rows", type=int, default=14, help="schedule rows 0..N of both curves [14]")
    p.add_argument("--repeats", type=int, default=1, help="runs of each kind [1]")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "study_speed.md")
    a = p.parse_args(argv)
    grid = ["--dataset", a.dataset, *GRID, "--epochs", str(a.epochs), "--rows", str(a.rows)]
    if a.dataset != "digits" and not os.environ.get("IAPRUNE_DATA"):
        shared = ROOT.parent / "shared" / "data"
        if (shared / "MNIST").is_dir():
            grid += ["--data-root", str(shared)]
    kinds = {"sequential (--workers 0)": ["--workers", "0"],
             f"local Ray (--workers {a.workers})": ["--workers", str(a.workers)]}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    busy: dict[str, list[float]] = {k: [] for k in kinds}
    loads: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    numbers: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="study_speed-") as tmp:
        for r in range(a.repeats):
            for k, (kind, flags) in enumerate(kinds.items()):
                out = Path(tmp) / f"{r}-{k}"
                seconds, cell_seconds, load = study_run([*grid, *flags], out)
                times[kind].append(seconds)
                busy[kind].append(cell_seconds)
                loads[kind].append(load)
                numbers[kind] = cell_numbers(out)
                print(f"{kind}: {seconds:.1f}s, cells {cell_seconds:.1f}s (load {load[0]:.2f} -> "
                      f"{load[1]:.2f})", flush=True)
    (seq, seq_numbers), (par, par_numbers) = [(statistics.median(times[k]), numbers[k])
                                              for k in kinds]
    identical = seq_numbers == par_numbers
    cells = sum(1 for path in seq_numbers if path.endswith(f"/0/{ITERATION_DIR}/{VALIDATION_FILE}"))
    medians = {kind: statistics.median(times[kind]) for kind in kinds}
    rows = [[kind, " / ".join(f"{t:.1f}" for t in times[kind]), f"{medians[kind]:.1f}",
             f"{seq / medians[kind]:.2f}x", " / ".join(f"{t:.1f}" for t in busy[kind]),
             ", ".join(f"{b:.2f} -> {e:.2f}" for b, e in loads[kind])] for kind in kinds]
    text = "\n".join([
        f"# Study speed: sequential vs local Ray ({a.dataset}, {cells} cells)", "",
        f"`python benchmarks/study_speed.py --dataset {a.dataset} --workers {a.workers} "
        f"--epochs {a.epochs} --rows {a.rows} --repeats {a.repeats}`: "
        f"{' '.join(grid[:-2] if '--data-root' in grid else grid)}; every run a fresh process "
        "into an empty folder, wall-clock from start to exit.", "",
        markdown_table(["run", "wall s (each run)", "median s", "speed-up", "sum of cell s",
                        "load avg (1 min) before -> after"], rows), "",
        "Sum of cell s: the seconds each cell took, added up. On an idle machine it is about "
        "the same for both runs; when it grows with the workers, the cores were busy with "
        "other work.", "",
        f"Speed-up {seq / par:.2f}x; per-cell numbers "
        f"{'identical' if identical else '**DIFFERENT**'} (every iteration's "
        f"validation_results.txt of the {cells} cells, {len(seq_numbers)} files, compared "
        "byte for byte).", "",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}.", ""])
    print(text)
    atomic_write(a.out, text)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(run(main))
