"""benchmarks/criteria.py end to end on digits (16-8 MLP, 3-row schedule, 2 seeds, 2 variants).

The engine's own per-session plots (accuracies/losses/tradeoff.png, tested in test_concatenate)
are stubbed out here: they are most of a tiny session's time and not what this study checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import re
import shutil
import statistics
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from src import concatenate as concatenate_module
from src.concatenate import read_validation_results, write_validation_results
from src.retain import ScheduleRow, write_schedule

ROOT = Path(__file__).resolve().parents[1]
ROWS = [(16, 8), (12, 6), (8, 4)]
OUTPUTS = ("criteria_no_retrain.md", "criteria_no_retrain.png", "criteria_retrain.md",
           "criteria_retrain.png", "oneshot_vs_iterative.md", "oneshot_vs_iterative.png")


def load_criteria() -> ModuleType:
    """benchmarks/criteria.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("criteria_study",
                                                  ROOT / "benchmarks" / "criteria.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


criteria = load_criteria()


def run_main(argv: list[str]) -> str:
    """criteria.main(argv) with its console output captured."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert criteria.main(argv) == 0
    return buffer.getvalue()


def checkpoints(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("best_model.pth")}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> SimpleNamespace:
    """The tiny study run twice into one folder (the second run should only read the cache)."""
    out = tmp_path_factory.mktemp("criteria")
    retain = out / "retain.txt"
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / sum(ROWS[0])) for t, r in enumerate(ROWS)],
                   retain)
    argv = ["--dataset", "digits", "--hidden", "16", "8", "--retain", str(retain), "--seeds",
            "0", "1", "--variants", "magnitude", "--epochs", "2", "--retrain-epochs", "1",
            "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_accuracies", "plot_losses", "plot_tradeoff"):
            patch.setattr(concatenate_module, name, lambda result, path: Path(path))
        first = run_main(argv)
        before = checkpoints(out)
        second = run_main(argv)
    return SimpleNamespace(out=out, argv=argv, first=first, second=second, before=before,
                           after=checkpoints(out), cache=out / "cache" / "digits-16-8")


def table_cell(markdown: str, row: int, column: str) -> str:
    """The text of `column` in table row `row` (first column) of a markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == str(row):
            return cells[header.index(column)]
    raise AssertionError(f"no row {row}")


def seed_values(cache: Path, curve: str, key: str, row: int, column: str) -> list[float]:
    """The accuracy of schedule row `row` in each seed's session of a cell."""
    return [float(read_validation_results(
        cache / f"seed{s}" / curve / key / "iterative_pruning" / str(row) / "prune_w_retrain"
        / "validation_results.txt")[column]) for s in (0, 1)]


def test_study_writes_every_table_and_plot(study):
    """One run writes the two curve tables, the one-shot table and their three PNG plots."""
    for name in OUTPUTS:
        path = study.out / name
        assert path.is_file(), name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (study.out / "criteria_no_retrain.md").read_text()
    assert "ia-per_output (default)" in text and "magnitude" in text
    assert "mean no-retrain test accuracy over rows 1..2" in text
    text = (study.out / "criteria_retrain.md").read_text()
    assert "mean retrain test accuracy over rows 1..2" in text
    assert "The default `ia-per_output` is **" in text


def test_cells_are_mean_and_sample_std_over_seeds(study):
    """A table cell is the mean ± sample std (n-1) of the seeds' accuracies at that row."""
    cases = [("criteria_no_retrain.md", "no-retrain", "NoRetrain_Test_Accuracy"),
             ("criteria_retrain.md", "retrain", "Test_Accuracy")]
    for name, curve, column in cases:
        text = (study.out / name).read_text()
        for row in (1, 2):
            values = seed_values(study.cache, curve, "magnitude-fold_linear", row, column)
            expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
            assert table_cell(text, row, "magnitude").strip("*") == expected


def test_best_mean_per_row_is_bold(study):
    """In every row the bold cells are those with the highest mean (none where all tie)."""
    text = (study.out / "criteria_no_retrain.md").read_text()
    for row in range(len(ROWS)):
        cells = [table_cell(text, row, c) for c in ("ia-per_output (default)", "magnitude")]
        means = [float(re.match(r"\**([0-9.]+)", c).group(1)) for c in cells]
        tied = len(set(means)) == 1
        assert [c.startswith("**") for c in cells] == [m == max(means) and not tied
                                                       for m in means]


def test_second_run_reuses_the_cache(study):
    """Re-running the same study trains nothing: every cell is cached, checkpoints untouched."""
    # 2 bases; 2 seeds x 2 curves x 2 variants x 3 rows; one-shot: 2 seeds x 3 rows
    assert len(study.before) == 2 + 2 * 2 * 2 * 3 + 2 * 3
    assert study.after == study.before
    lines = [line for line in study.second.splitlines() if line.startswith("[")]
    assert lines and all(" cached " in line for line in lines)
    assert all(" ran " in line for line in study.first.splitlines() if line.startswith("["))


def test_cache_of_other_settings_is_refused(study):
    """A cached session made with other settings is an error naming it, not silently reused."""
    argv = list(study.argv)
    argv[argv.index("--epochs") + 1] = "3"
    with pytest.raises(ValueError, match="other settings .*epochs: cached 2, wanted 3"):
        criteria.main(argv)


@pytest.mark.parametrize("name, other", [("lr_schedule", "cosine"), ("precision", "fp32")])
def test_cached_base_of_another_training_is_refused(study, name, other):
    """The lr schedule and the precision shape the base model: a cached base trained with
    others is not reused."""
    plan = criteria.make_plan(criteria.parse_args(study.argv)[0])
    base = next(c for c in plan.cells if c.curve == "base")
    criteria.check_cached(base, plan.schedule)  # the cached base itself is accepted
    wanted = dataclasses.replace(base, config=dataclasses.replace(base.config, **{name: other}))
    with pytest.raises(ValueError, match=f"other settings .*{name}: cached"):
        criteria.check_cached(wanted, plan.schedule)


def test_cell_pruned_from_another_base_model_is_refused(study, tmp_path):
    """A cached cell whose iteration 0 is not the seed's current base model is an error."""
    plan = criteria.make_plan(criteria.parse_args(study.argv)[0])
    cell = next(c for c in plan.cells if c.curve == "no-retrain" and c.variant.name == "magnitude")
    moved = dataclasses.replace(cell, root=tmp_path / "cell")
    shutil.copytree(cell.root, moved.root)
    criteria.check_cached(moved, plan.schedule)  # an identical copy is accepted
    path = moved.session.final(0) / "validation_results.txt"
    values = dict(read_validation_results(path))
    values["Test_Accuracy"] = abs(values["Test_Accuracy"] - 1.0)
    write_validation_results(path, values)
    with pytest.raises(ValueError, match="pruned from another base model"):
        criteria.check_cached(moved, plan.schedule)


def test_single_seed_shows_n_without_std():
    """A statistic over one seed prints its value and n=1, no ± part."""
    stat = criteria.aggregate([97.1234])
    assert stat.std is None and stat.text(3) == "97.12 (n=1)"
    assert criteria.aggregate([1.0, 2.0, 4.0]).text(3) == "2.33 ± 1.53"
    assert criteria.aggregate([1.0, 3.0]).text(3) == "2.00 ± 1.41 (n=2)"
    assert criteria.aggregate([]) is None


def test_unknown_variant_is_refused():
    """--variants with an unknown name lists the valid ones."""
    with pytest.raises(ValueError, match="unknown variant 'nope'; choose from ia-per_output"):
        criteria.make_plan(criteria.StudyConfig(dataset="digits", hidden=(16, 8),
                                                variants=("nope",)))


def test_unknown_curve_is_refused():
    """A study config with an unknown curve is an error."""
    with pytest.raises(ValueError, match="unknown curves"):
        criteria.StudyConfig(curves=("sideways",))


def test_retraining_settings_do_not_invalidate_no_retrain_cells(study, tmp_path):
    """A no-retrain cell cached under another retraining lr is still valid (nothing was
    retrained); a retrain cell under another lr is refused."""
    plan = criteria.make_plan(criteria.parse_args(study.argv)[0])
    for curve, accepted in (("no-retrain", True), ("retrain", False)):
        cell = next(c for c in plan.cells if c.curve == curve and c.variant.name == "magnitude")
        moved = dataclasses.replace(cell, root=tmp_path / curve)
        shutil.copytree(cell.root, moved.root)
        saved = json.loads(moved.session.config.read_text())
        moved.session.config.write_text(json.dumps({**saved, "retrain_lr": 0.123}))
        if accepted:
            criteria.check_cached(moved, plan.schedule)
        else:
            with pytest.raises(ValueError, match="retrain_lr: cached 0.123"):
                criteria.check_cached(moved, plan.schedule)
