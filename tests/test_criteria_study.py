"""benchmarks/criteria.py: the issue-8 criteria study as a preset of iaprune.study."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from iaprune.study import cli as study
from iaprune.study.grid import CURVES, StudyConfig, make_plan, registry

ROOT = Path(__file__).resolve().parents[1]


def load_criteria() -> ModuleType:
    """benchmarks/criteria.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("criteria_preset",
                                                  ROOT / "benchmarks" / "criteria.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


criteria = load_criteria()


def test_preset_is_the_mnist_criteria_study():
    """The preset: MNIST 256-64, seeds 0 1 2, every variant, both curves, iterative; tables named
    criteria_* in benchmarks/results/ with the sessions in its cache/."""
    grid, runner, args = study.parse_args(criteria.preset())
    assert grid == StudyConfig(dataset="mnist", hidden=(256, 64), seeds=(0, 1, 2),
                               curves=CURVES, modes=("iterative",), name="criteria")
    out = args.out
    assert out == ROOT / "benchmarks" / "results" and not args.report_only
    assert runner.workers is None and runner.address is None  # a local Ray on every core
    plan = make_plan(grid, out)
    assert set(plan.variants) == set(registry())
    assert plan.cache == out / "cache" / "mnist-256-64"


def test_flags_after_the_preset_override_it():
    """A flag given to the preset wins over the preset's own value."""
    grid, runner, args = study.parse_args([*criteria.preset(), "--seeds", "4", "--curves",
                                           "no-retrain", "--workers", "0", "--report-only"])
    assert grid.seeds == (4,) and grid.curves == ("no-retrain",) and grid.dataset == "mnist"
    assert runner.sequential and args.report_only
