"""The criteria study of issue 8, as a preset of `python -m iaprune.study`: MNIST 784-256-64-10,
seeds 0 1 2, every variant, the no-retrain and retrain curves; tables and plots written to
benchmarks/results/criteria_*.{md,png}, sessions cached in benchmarks/results/cache/.

    python benchmarks/criteria.py                       # the whole study (local Ray, all cores)
    python benchmarks/criteria.py --curves no-retrain   # any study flag overrides it
    python benchmarks/criteria.py --modes iterative one-shot --default-only one-shot
    python benchmarks/criteria.py --report-only         # tables and plots from the cache
"""

from __future__ import annotations

import os
import sys

try:  # run as a script: benchmarks/ is on sys.path
    from _setup import ROOT
except ModuleNotFoundError:  # imported as a module from the repository root (tests)
    from benchmarks._setup import ROOT

from iaprune import cli
from iaprune.study import cli as study

PRESET = ["--dataset", "mnist", "--hidden", "256", "64", "--seeds", "0", "1", "2",
          "--curves", "no-retrain", "retrain", "--modes", "iterative",
          "--out", str(ROOT / "benchmarks" / "results"), "--name", "criteria"]


def preset() -> list[str]:
    """The preset's flags; MNIST from ../shared/data beside the repository when $IAPRUNE_DATA
    is not set and that folder has it."""
    shared = ROOT.parent / "shared" / "data"
    if os.environ.get("IAPRUNE_DATA") or not (shared / "MNIST").is_dir():
        return PRESET
    return [*PRESET, "--data-root", str(shared)]


def main(argv: list[str] | None = None) -> int:
    """iaprune.study's main with the preset's flags first (the ones given after them win)."""
    return study.main([*preset(), *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
