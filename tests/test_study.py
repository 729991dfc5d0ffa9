"""iaprune.study end to end on digits (16-8 MLP, 3-row schedule, 2 seeds, 2 criteria): sequentially
without Ray, on a local Ray (the same numbers), killed and resumed, with a worker killed."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from iaprune import cli
from iaprune.data import MissingDataError
from iaprune.records import read_validation_results, write_validation_results
from iaprune.retain import ScheduleRow, geometric_schedule, write_schedule
from iaprune.study import cli as study
from iaprune.study import grid as study_grid
from iaprune.study import runner as study_runner
from iaprune.study.grid import StudyConfig, cell_done, check_cached, make_plan
from iaprune.study.report import aggregate

ROOT = Path(__file__).resolve().parents[1]
ROWS = [(16, 8), (12, 6), (8, 4)]
GRID = ["--dataset", "digits", "--hidden", "16", "8", "--seeds", "0", "1", "--variants",
        "magnitude", "--epochs", "2", "--retrain-epochs", "1"]
# Both modes, the one-shot tracks for the default only: 2 bases + 2 seeds x (2 + 2 + 1 + 1).
MODES = ["--modes", "iterative", "one-shot", "--default-only", "one-shot"]
CELLS = 14


def write_retain(folder: Path, rows: list[tuple[int, ...]] = ROWS) -> Path:
    path = folder / "retain.txt"
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / sum(rows[0])) for t, r in enumerate(rows)],
                   path)
    return path


def run_main(argv: list[str]) -> tuple[int, str]:
    """study.main(argv) through the command-line wrapper, with its console output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.run(study.main, argv)
    return code, out.getvalue()


def run_study_process(argv: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    """`python -m iaprune.study argv` in a new process (stdout and stderr to one pipe)."""
    return subprocess.Popen([sys.executable, "-m", "iaprune.study", *argv], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, **popen)


def validation_files(out: Path) -> dict[str, str]:
    """Every iteration's validation_results.txt under OUT/cache, by relative path."""
    cache = out / "cache"
    return {str(p.relative_to(cache)): p.read_text()
            for p in sorted(cache.rglob("validation_results.txt"))}


def checkpoints(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("best_model.pth")}


def kill_marked(mark: str) -> None:
    """SIGKILL every process started with IAPRUNE_TEST_MARK=mark in its environment (Ray's
    helpers that outlive a killed driver), by pid."""
    tag = f"IAPRUNE_TEST_MARK={mark}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if tag in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("study")
    argv = [*GRID, *MODES, "--retain", str(write_retain(folder))]
    return SimpleNamespace(folder=folder, argv=argv)


@pytest.fixture(scope="module")
def sequential(grid) -> SimpleNamespace:
    """The tiny study with --workers 0, in a fresh process that reports whether Ray got imported."""
    out = grid.folder / "sequential"
    code = ("import sys; from iaprune.study import cli; rc = cli.main(sys.argv[1:]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *grid.argv, "--workers", "0", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return SimpleNamespace(out=out, stdout=proc.stdout, files=validation_files(out))


@pytest.fixture(scope="module")
def on_ray(grid) -> SimpleNamespace:
    """The same study on a local Ray with 2 workers (in this process)."""
    out = grid.folder / "ray"
    code, text = run_main([*grid.argv, "--workers", "2", "--out", str(out)])
    assert code == 0, text
    return SimpleNamespace(out=out, stdout=text, files=validation_files(out),
                           plan=make_plan(StudyConfig(**json.loads(
                               (out / "study.json").read_text())["study"]), out))


@pytest.mark.slow
def test_sequential_study_runs_every_cell_without_importing_ray(sequential):
    """--workers 0 runs all cells in-process, one line each, and never imports ray."""
    assert "ray imported: False" in sequential.stdout
    assert len(re.findall(r"^\[ *\d+/14\] ran ", sequential.stdout, re.M)) == CELLS
    # 2 bases of 1 row; 12 cells of 3 rows
    assert len(sequential.files) == 2 + 12 * 3


@pytest.mark.slow
def test_ray_gives_the_sequential_numbers_cell_by_cell(sequential, on_ray):
    """Every iteration of every cell on local Ray equals the sequential run's, to the byte."""
    assert "local Ray, 2 workers" in on_ray.stdout
    assert on_ray.files == sequential.files


@pytest.mark.slow
def test_second_run_reads_the_cache_and_starts_no_ray(on_ray, grid):
    """Running a finished study again trains nothing: every cell cached, checkpoints untouched."""
    before = checkpoints(on_ray.out)
    code, text = run_main([*grid.argv, "--out", str(on_ray.out)])
    assert code == 0, text
    assert f"{CELLS} cells" in text and f"{CELLS} cached" in text
    assert checkpoints(on_ray.out) == before


def table(markdown: str, section: str) -> dict[str, dict[str, str]]:
    """The first markdown table after the heading `section`: {first cell: {column: text}}."""
    lines = markdown[markdown.index(section):].splitlines()
    rows = [line for line in lines[lines.index(next(ln for ln in lines if ln.startswith("|"))):]]
    rows = rows[:next((k for k, ln in enumerate(rows) if not ln.startswith("|")), len(rows))]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows[2:]]
    return {c[0]: dict(zip(header, c, strict=True)) for c in cells}


def seed_values(on_ray, curve: str, variant: str, row: int, mode: str = "iterative") -> dict:
    """{seed: the accuracy at `row`} read from the cells' own validation_results.txt."""
    column = "NoRetrain_Test_Accuracy" if curve == "no-retrain" else "Test_Accuracy"
    return {c.seed: float(read_validation_results(
        c.session.final(row) / "validation_results.txt")[column]) for c in on_ray.plan.cells
        if c.track and (c.track.curve, c.track.mode, c.variant.name) == (curve, mode, variant)}


@pytest.mark.slow
def test_table_cells_are_mean_and_sample_std_over_seeds(on_ray):
    """A curve table's cell is mean ± sample std (n-1) of the seeds' accuracies at that row."""
    for curve in ("no-retrain", "retrain"):
        text = (on_ray.out / f"study_{curve.replace('-', '_')}.md").read_text()
        rows = table(text, "## Iterative mode")
        for row in (1, 2):
            values = list(seed_values(on_ray, curve, "magnitude", row).values())
            expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
            assert rows[str(row)]["magnitude"].strip("*") == expected


@pytest.mark.slow
def test_best_mean_per_row_is_bold(on_ray):
    """In every row the bold cells are those with the highest mean (none where all tie)."""
    rows = table((on_ray.out / "study_no_retrain.md").read_text(), "## Iterative mode")
    for row in rows.values():
        cells = [row["ia-per_output (default)"], row["magnitude"]]
        means = [float(re.match(r"\**([0-9.]+)", c).group(1)) for c in cells]
        tied = len(set(means)) == 1
        assert [c.startswith("**") for c in cells] == [m == max(means) and not tied
                                                       for m in means]


@pytest.mark.slow
def test_ranking_and_paired_differences(on_ray):
    """The ranking orders variants by their per-seed mean over rows 1..2; the paired table is
    the default minus the variant per seed, mean ± std over seeds."""
    text = (on_ray.out / "study_retrain.md").read_text()
    means = {}
    for variant in ("ia-per_output", "magnitude"):
        rows = [seed_values(on_ray, "retrain", variant, r) for r in (1, 2)]
        means[variant] = {s: (rows[0][s] + rows[1][s]) / 2 for s in (0, 1)}
    ranked = sorted(means, key=lambda v: -statistics.fmean(means[v].values()))
    ranking = table(text, "### Ranking")
    assert [ranking[str(k)]["variant"].split()[0] for k in (1, 2)] == ranked
    paired = table(text, "### Paired differences")
    diff = aggregate([means["ia-per_output"][s] - means["magnitude"][s] for s in (0, 1)])
    assert paired["1..2"]["magnitude"] == diff.text(2, signed=True)
    a, b = seed_values(on_ray, "retrain", "ia-per_output", 2), \
        seed_values(on_ray, "retrain", "magnitude", 2)
    assert paired["2"]["magnitude"] == aggregate([a[s] - b[s] for s in (0, 1)]).text(2, True)


@pytest.mark.slow
def test_one_shot_minus_iterative_is_paired_per_seed(on_ray):
    """With both modes, each curve's report has one-shot − iterative for the default, per seed."""
    rows = table((on_ray.out / "study_retrain.md").read_text(), "## One-shot − iterative")
    one = seed_values(on_ray, "retrain", "ia-per_output", 2, mode="one-shot")
    it = seed_values(on_ray, "retrain", "ia-per_output", 2)
    assert rows["2"]["ia-per_output"] == aggregate([one[s] - it[s] for s in (0, 1)]).text(2, True)


@pytest.mark.slow
def test_plots_and_csv_are_written(on_ray):
    """A PNG per curve and mode, and a CSV row per cell and schedule row."""
    for name in ("study_no_retrain.png", "study_retrain.png", "study_no_retrain_one_shot.png",
                 "study_retrain_one_shot.png"):
        assert (on_ray.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (on_ray.out / "study_results.csv").read_text().splitlines()
    assert lines[0].startswith("seed,mode,curve,variant,row") and len(lines) == 1 + 12 * 3


@pytest.mark.slow
def test_report_only_rebuilds_the_reports_from_the_cache(on_ray, tmp_path):
    """--report-only with just --out (the grid from OUT/study.json) writes the same tables."""
    copy = tmp_path / "copy"
    shutil.copytree(on_ray.out, copy)
    for path in copy.glob("study_*"):
        path.unlink()
    code, text = run_main(["--out", str(copy), "--report-only"])
    assert code == 0, text
    for name in ("study_no_retrain.md", "study_retrain.md", "study_results.csv"):
        assert (copy / name).read_text() == (on_ray.out / name).read_text()


@pytest.mark.slow
def test_cache_of_other_settings_is_refused(on_ray, grid):
    """A cached session made with other settings is one error line naming it; nothing runs
    and the study's settings file is left as it was."""
    argv = [*grid.argv, "--out", str(on_ray.out), "--workers", "0"]
    argv[argv.index("--epochs") + 1] = "3"
    settings = (on_ray.out / "study.json").read_text()
    code, text = run_main(argv)
    assert code == 2 and re.search(r"error: .*other settings .*epochs: cached 2, wanted 3", text)
    assert (on_ray.out / "study.json").read_text() == settings


@pytest.mark.slow
def test_cell_pruned_from_another_base_model_is_refused(on_ray, tmp_path):
    """A cached cell whose iteration 0 is not the seed's current base model is an error."""
    cell = next(c for c in on_ray.plan.cells if c.track and c.variant.name == "magnitude")
    moved = dataclasses.replace(cell, cache=tmp_path)
    shutil.copytree(cell.root, moved.root)
    check_cached(moved)  # an identical copy is accepted
    path = moved.session.final(0) / "validation_results.txt"
    values = dict(read_validation_results(path))
    values["Test_Accuracy"] = abs(values["Test_Accuracy"] - 1.0)
    write_validation_results(path, values)
    with pytest.raises(ValueError, match="pruned from another base model"):
        check_cached(moved)


@pytest.mark.slow
def test_retraining_settings_do_not_invalidate_no_retrain_cells(on_ray, tmp_path):
    """A no-retrain cell cached under another retraining lr is still valid (nothing was
    retrained); a retrain cell under another lr is refused."""
    for curve, accepted in (("no-retrain", True), ("retrain", False)):
        cell = next(c for c in on_ray.plan.cells if c.track and c.track.curve == curve
                    and c.variant.name == "magnitude")
        moved = dataclasses.replace(cell, cache=tmp_path / curve)
        shutil.copytree(cell.root, moved.root)
        saved = json.loads(moved.session.config.read_text())
        saved["retraining"]["lr"] = 0.123
        moved.session.config.write_text(json.dumps(saved))
        if accepted:
            check_cached(moved)
        else:
            with pytest.raises(ValueError, match="retrain_lr: cached 0.123"):
                check_cached(moved)


def test_failed_cell_is_reported_and_the_others_finish(tmp_path):
    """A cell that fails is one FAILED line with its log; the other cells finish; exit 1."""
    out = tmp_path / "out"
    argv = [*GRID, "--retain", str(write_retain(tmp_path)), "--curves", "no-retrain",
            "--workers", "0", "--out", str(out)]
    plan = make_plan(StudyConfig(dataset="digits", hidden=(16, 8), seeds=(0, 1),
                                 variants=("magnitude",), epochs=2, curves=("no-retrain",),
                                 retain=str(tmp_path / "retain.txt")), out)
    base = plan.cells[0]
    # seed 0's base model is complete but its checkpoint is garbage: its cells cannot load it
    assert run_main([*argv, "--seeds", "0"])[0] == 0
    for cell in plan.cells[2:]:
        if cell.seed == 0:
            shutil.rmtree(cell.root)
    base.session.checkpoint(0).write_bytes(b"not a checkpoint")
    code, text = run_main(argv)
    assert code == 1
    failed = re.findall(r"FAILED seed (\d) no-retrain iterative (\S+): .*best_model.pth", text)
    assert sorted(failed) == [("0", "ia-per_output"), ("0", "magnitude")]
    assert all(cell_done(c) for c in plan.cells if c.seed == 1)
    assert "error: 2 of 6 cells failed" in text


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_cells(grid, sequential, tmp_path):
    """SIGKILL of a study on Ray once its base models exist; the re-run keeps every finished
    cell (checkpoints untouched) and ends with the uninterrupted run's numbers."""
    out, mark = tmp_path / "out", uuid.uuid4().hex
    argv = [*grid.argv, "--out", str(out)]
    proc = run_study_process([*argv, "--workers", "2"], env={"IAPRUNE_TEST_MARK": mark})
    try:
        plan = make_plan(StudyConfig(**json.loads(wait_json(out / "study.json"))["study"]),
                         out)
        wait_for(lambda: all(cell_done(c) for c in plan.cells[:2]), 120, "the base models")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        kill_marked(mark)  # the Ray processes it started (they die with it, only more slowly)
    finished = [c for c in plan.cells if cell_done(c)]
    kept = {p: t for p, t in checkpoints(out).items()
            if any(c.root in p.parents for c in finished)}
    assert len(finished) < CELLS  # killed mid-way
    code, text = run_main([*argv, "--workers", "0"])
    assert code == 0, text
    assert f"{len(finished)} cached" in text
    assert {p: checkpoints(out)[p] for p in kept} == kept
    assert validation_files(out) == sequential.files


def wait_json(path: Path) -> str:
    wait_for(path.is_file, 120, str(path))
    return path.read_text()


@pytest.mark.slow
def test_killed_worker_cell_is_retried(grid, sequential, tmp_path):
    """A Ray worker killed in the middle of a cell: the cell runs again in another worker and
    the study completes with the sequential run's numbers."""
    out, mark = tmp_path / "out", uuid.uuid4().hex
    argv = [*grid.argv, "--out", str(out), "--workers", "2"]
    proc = run_study_process(argv, env={"IAPRUNE_TEST_MARK": mark})
    try:
        plan = make_plan(StudyConfig(**json.loads(wait_json(out / "study.json"))["study"]), out)
        running = []

        def some_cell_runs() -> bool:
            running.extend(c for c in plan.cells if study_runner.is_running(c))
            return bool(running)

        wait_for(some_cell_runs, 120, "a running cell")
        victim = int(running[0].lock.read_text().split()[1])
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
        kill_marked(mark)
    assert proc.returncode == 0, output
    assert int(running[0].lock.read_text().split()[1]) != victim  # run again by another process
    assert validation_files(out) == sequential.files


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    """Unknown variants, --workers with --address, a bad --name, an address where no Ray
    listens: exit 2, one line, nothing written."""
    cases = [(["--variants", "nope"], "unknown variant 'nope'"),
             (["--workers", "2", "--address", "auto"], "--workers is for a local Ray"),
             (["--name", "../x"], "--name must be"),
             (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: nothing answers there")]
    for extra, message in cases:
        code, text = run_main([*GRID, *extra, "--out", str(tmp_path / "out")])
        assert code == 2 and message in text and text.count("\n") == 1, text
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["out-file", "out-below-file", "mlflow-below-file", "seed"])
def test_paths_below_a_file_and_huge_seeds_are_one_line(tmp_path, case):
    """--out naming a file or a folder below one, an --mlflow sqlite store below a file (were
    FileExistsError/NotADirectoryError tracebacks) and a seed beyond torch's 64-bit seeds (was
    a failure in every cell): exit 2, one line, nothing written."""
    notes = tmp_path / "notes"
    notes.write_text("x")
    out = {"out-file": notes, "out-below-file": notes / "out"}.get(case, tmp_path / "out")
    extra = {"mlflow-below-file": ["--mlflow", f"sqlite:///{notes / 'sub' / 'x.db'}"],
             "seed": ["--seeds", "99999999999999999999"]}.get(case, [])
    code, text = run_main([*GRID, *extra, "--workers", "0", "--out", str(out)])
    assert code == 2 and text.startswith("error: ") and text.count("\n") == 1, text
    if case == "seed":
        assert "--seed must be an integer between" in text
    else:
        assert str(notes) in text and "is a file, not a folder" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"] and notes.read_text() == "x"


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe", "not a study settings file (UnicodeDecodeError"),
    (b'{"study": {"seeds": "x"}}', "seeds must be a list of int, got 'x'")])
def test_report_only_with_a_broken_settings_file_is_one_line(tmp_path, content, message):
    """--report-only reads OUT/<name>.json: a binary file or a value of the wrong type (were
    UnicodeDecodeError/TypeError tracebacks) is one line naming the file, exit 2."""
    settings = tmp_path / "study.json"
    settings.write_bytes(content)
    code, text = run_main(["--report-only", "--out", str(tmp_path)])
    assert code == 2 and text.startswith(f"error: {settings}: {message}")
    assert text.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


def test_plan_runs_retrain_cells_first_and_default_only_tracks():
    """Bases come first, then the (long) retrain cells; --default-only limits a track."""
    plan = make_plan(StudyConfig(dataset="digits", hidden=(16, 8), seeds=(0, 1),
                                 variants=("magnitude", "fpgm"), modes=("iterative", "one-shot"),
                                 default_only=("one-shot",)), Path("unused"))
    kinds = [None if c.track is None else c.track.curve for c in plan.cells]
    assert kinds == [None] * 2 + ["retrain"] * 8 + ["no-retrain"] * 8
    one_shot = {c.variant.name for c in plan.cells if c.track and c.track.mode == "one-shot"}
    assert one_shot == {"ia-per_output"}
    assert all(c.base == f"seed{c.seed}/base" for c in plan.cells[2:])


@pytest.mark.slow
def test_mlflow_logs_one_parent_run_and_one_child_per_cell(sequential, tmp_path):
    """--mlflow: one parent run per study, one child per cell with its accuracy per row; a
    second run reuses the parent and logs no cell twice."""
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "out"
    shutil.copytree(sequential.out, out)  # finished cells, never logged: logged now
    argv = ["--out", str(out), "--workers", "0", "--mlflow"]
    grid = json.loads((out / "study.json").read_text())["study"]
    argv += ["--retain", grid["retain"], *GRID, *MODES]
    for _ in range(2):
        code, text = run_main(argv)
        assert code == 0, text
    client = mlflow.tracking.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["cell"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and len(children) == CELLS == len(runs) - 1
    assert json.loads((out / "study.json").read_text())["mlflow_run_id"] == \
        parents[0].info.run_id
    cell = next(c for c in make_plan(StudyConfig(**grid), out).cells
                if c.track and c.track.curve == "retrain" and c.variant.name == "magnitude")
    history = client.get_metric_history(children[cell.id].info.run_id, "accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (i, float(read_validation_results(cell.session.final(i) / "validation_results.txt")
                  ["Test_Accuracy"])) for i in range(3)]
    assert children[cell.id].data.params["variant"] == "magnitude"
    reports = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/study_retrain.md" in reports


def test_missing_dataset_is_one_line_before_any_cell(tmp_path, monkeypatch):
    """A dataset that cannot be loaded stops a local study at once (exit 2), nothing written."""
    def missing(*args, **kwargs):
        raise MissingDataError("mnist files not found in nowhere/MNIST/raw")

    monkeypatch.setattr(study_grid, "load_dataset", missing)
    code, text = run_main(["--dataset", "mnist", "--workers", "0", "--out", str(tmp_path / "o")])
    assert code == 2 and text.strip() == "error: mnist files not found in nowhere/MNIST/raw"
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_progress_counts_done_running_failed_and_rows_of_running_cells(on_ray):
    """The bar's status says done / running / failed; a running cell adds the share of its
    rows already complete (never a whole cell before it is collected)."""
    cell = next(c for c in on_ray.plan.cells if c.track)  # complete: 3 of 3 rows
    progress = study_runner.cells_progress(total=CELLS, cached=2)
    progress.fail(study_runner.cell_failure(cell, "boom"))
    progress.update(1, study_runner.share_complete([cell]))
    assert progress.status() == f"done 2/{CELLS}, running 1, failed 1"
    assert progress.bar.n == pytest.approx(3 + 3 / 4)
    progress.close()



def test_jobs_in_turn_go_on_after_a_failure_and_skip_what_builds_on_it():
    """The one sequential runner (grid cells and search trials): a failing job is a FAILED line
    with its reason, the next jobs still run, and a job after a failed one fails unrun."""
    lines, ran = [], []

    def job(key, after=None, fails=False):
        def run():
            ran.append(key)
            if fails:
                raise RuntimeError("boom\nmore")
            return f"ran {key}"
        return study_runner.Job(key, run, lambda why: f"{key}: {why}", after)

    progress = study_runner.Progress("test", "job", 3, 0, echo=lines.append)
    failures = study_runner.run_in_turn([job("a", fails=True), job("b", after="a"), job("c")],
                                        progress)
    progress.close()
    assert failures == {"a": "RuntimeError: boom", "b": "its base model failed"}
    assert ran == ["a", "c"]
    assert lines == ["[  1/3] FAILED a: RuntimeError: boom", "[  2/3] FAILED b: its base model "
                     "failed", "[  3/3] ran c"]

# ----------------------------------------------------------------------------------- --arch
# A tiny CNN on digits: 3 conv channels and 8 hidden neurons, the units of its schedule.
TINY_CNN = {"input": [1, 8, 8], "layers": [
    {"type": "conv2d", "out": 3, "kernel": 3}, "relu", {"type": "maxpool2d", "kernel": 2},
    "flatten", {"type": "linear", "out": 8}, "relu", {"type": "linear", "out": 10}]}
CNN_ROWS = [(3, 8), (2, 4), (1, 2)]


def cnn_argv(folder: Path, out: Path) -> list[str]:
    """A CNN study: 2 criteria x 1 seed, 3 rows, the no-retrain curve, in-process."""
    return ["--dataset", "digits", "--arch", str(folder / "tiny.json"), "--seeds", "0",
            "--variants", "magnitude", "--curves", "no-retrain", "--epochs", "10",
            "--retain", str(folder / "retain.txt"), "--workers", "0", "--out", str(out)]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> SimpleNamespace:
    """The tiny CNN study from a spec file, run once."""
    folder = tmp_path_factory.mktemp("cnn")
    (folder / "tiny.json").write_text(json.dumps(TINY_CNN))
    write_retain(folder, CNN_ROWS)
    out = folder / "out"
    code, text = run_main(cnn_argv(folder, out))
    assert code == 0, text
    plan = make_plan(StudyConfig.from_json(json.loads((out / "study.json").read_text())["study"],
                                           "study.json"), out)
    return SimpleNamespace(folder=folder, out=out, text=text, plan=plan)


def test_cnn_study_prunes_the_units_of_its_spec_file(cnn):
    """Every cell is a session of the spec's network (the cache's copy of the file), pruned
    along the schedule's rows of conv channels and neurons; its cache folder is named by the
    file and the units; the default is the engine's conv-net default (post-activation)."""
    cache = cnn.out / "cache" / "digits-tiny-3-8"
    assert cnn.plan.cache == cache and "3 cells" in cnn.text
    assert json.loads((cache / "arch.json").read_text())["layers"][0] == {
        "type": "conv2d", "out": 3, "kernel": 3, "stride": 1, "padding": 0, "bias": True}
    assert cnn.plan.default.name == "ia-per_output-post"
    for cell in cnn.plan.cells:
        saved = json.loads(cell.session.config.read_text())
        assert saved["arch"] == str(cache / "arch.json") and saved["hidden"] is None
        units = [read_validation_results(cell.session.final(i) / "validation_results.txt")
                 ["Hidden"] for i in range(cell.rows)]
        assert units == ["3-8", "2-4", "1-2"][:cell.rows]


def test_cnn_report_says_units_and_holds_the_sessions_numbers(cnn):
    """The report names the network and its units (not 'hidden'); each table cell is the
    session's no-retrain accuracy; the plot and the CSV are written."""
    text = (cnn.out / "study_no_retrain.md").read_text()
    assert "Dataset digits, network tiny (conv2d 3 3 1 0, relu, maxpool2d 2 2, flatten, " \
           "linear 8, relu, linear 10 on [1, 8, 8]), units 3-8, seeds 0;" in text
    assert "hidden" not in text.split("Variants:")[0]
    rows = table(text, "## Iterative mode")
    for cell in (c for c in cnn.plan.cells if c.track):
        for i, label in enumerate(["3-8", "2-4", "1-2"]):
            value = float(read_validation_results(cell.session.final(i) /
                                                  "validation_results.txt")
                          ["NoRetrain_Test_Accuracy"])
            name = f"{cell.variant.name}{' (default)' if cell.variant is cnn.plan.default else ''}"
            assert rows[str(i)]["units"] == label
            assert rows[str(i)][name].strip("*") == f"{value:.2f} (n=1)"
    assert (cnn.out / "study_no_retrain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (cnn.out / "study_results.csv").read_text().splitlines()
    assert csv_lines[0] == "seed,mode,curve,variant,row,units,percent_retained,test_accuracy"
    assert len(csv_lines) == 1 + 2 * 3


def test_cnn_study_runs_again_from_its_cache(cnn):
    """The same command again: every cell cached, nothing retrained; --report-only with just
    --out rebuilds the same report from OUT/study.json."""
    before = checkpoints(cnn.out)
    report = (cnn.out / "study_no_retrain.md").read_text()
    code, text = run_main(cnn_argv(cnn.folder, cnn.out))
    assert code == 0 and "3 cells" in text and "3 cached" in text, text
    code, text = run_main(["--out", str(cnn.out), "--report-only"])
    assert code == 0, text
    assert checkpoints(cnn.out) == before
    assert (cnn.out / "study_no_retrain.md").read_text() == report


def test_cnn_cache_of_another_spec_is_refused(cnn, tmp_path):
    """A spec file edited since (the same name and units, another layer) finds the cache of
    the old network: one error line, nothing run, the settings file unchanged."""
    folder = tmp_path / "edited"
    shutil.copytree(cnn.folder, folder, ignore=shutil.ignore_patterns("out"))
    edited = json.loads(json.dumps(TINY_CNN))
    edited["layers"][0]["padding"] = 1
    (folder / "tiny.json").write_text(json.dumps(edited))
    settings = (cnn.out / "study.json").read_text()
    argv = cnn_argv(folder, cnn.out)
    code, text = run_main(argv)
    assert code == 2 and text.count("\n") == 1, text
    assert "digits-tiny-3-8 holds the sessions of another network (conv2d 3 3 1 0," in text
    assert (cnn.out / "study.json").read_text() == settings


def test_cached_cell_of_a_spec_file_survives_a_moved_out_but_not_another_arch(cnn, tmp_path):
    """A cell's config names the cache's arch.json by path: a moved OUT still matches; a
    session of a preset instead of the spec file is refused."""
    cell = next(c for c in cnn.plan.cells if c.track and c.variant.name == "magnitude")
    moved = dataclasses.replace(cell, cache=tmp_path / "moved")
    shutil.copytree(cell.root, moved.root)
    check_cached(moved)
    saved = json.loads(moved.session.config.read_text())
    saved["arch"] = "cnn3"
    moved.session.config.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="arch: cached 'cnn3', wanted 'arch.json'"):
        check_cached(moved)


def test_default_schedule_is_the_geometric_schedule_of_the_units():
    """lenet5: row 0 is its units 20-50-500 (conv channels, neurons), then q = 0.8; the cache
    folder names the preset and the units; cells run the preset. An mlp keeps the cache name
    of earlier versions."""
    plan = make_plan(StudyConfig(dataset="mnist", arch="lenet5", seeds=(0,)), Path("unused"))
    assert list(plan.schedule) == geometric_schedule([20, 50, 500])
    assert plan.cache.name == "mnist-lenet5-20-50-500"
    assert {c.config.arch for c in plan.cells} == {"lenet5"}
    assert {c.config.hidden for c in plan.cells} == {None}
    mlp = make_plan(StudyConfig(dataset="digits", arch="mlp", hidden=(16, 8)), Path("unused"))
    assert mlp.cache.name == "digits-16-8" and mlp.default.name == "ia-per_output"
    assert {(c.config.arch, c.config.hidden) for c in mlp.cells} == {(None, (16, 8))}


def test_an_earlier_mlflow_parent_run_is_reused_only_for_the_same_network(tmp_path):
    """The study's MLflow parent run is continued for the same network, not for another
    --arch (its cells, named alike, are other sessions)."""
    settings = tmp_path / "study.json"
    mlp = StudyConfig(dataset="digits", hidden=(16, 8))
    settings.write_text(json.dumps({"study": mlp.to_json(), "mlflow_run_id": "abc"}))
    assert study.saved_run_id(settings, make_plan(mlp, tmp_path)) == "abc"
    cnn3 = StudyConfig(dataset="digits", arch="cnn3")
    assert study.saved_run_id(settings, make_plan(cnn3, tmp_path)) is None


def test_criterion_that_does_not_apply_fails_its_cells_as_in_the_engine(tmp_path):
    """apoz on a tanh network: its cell fails with the engine's one-line reason; the other
    cells finish; exit 1."""
    spec = json.loads(json.dumps(TINY_CNN))
    spec["layers"][5] = "tanh"
    (tmp_path / "tanh.json").write_text(json.dumps(spec))
    code, text = run_main(["--dataset", "digits", "--arch", str(tmp_path / "tanh.json"),
                           "--seeds", "0", "--variants", "apoz", "--curves", "no-retrain",
                           "--rows", "1", "--epochs", "1", "--workers", "0", "--out",
                           str(tmp_path / "out")])
    assert code == 1, text
    assert re.search(r"FAILED seed 0 no-retrain iterative apoz: UserError: apoz counts zero "
                     r"activations and needs ReLU", text)
    assert "error: 1 of 3 cells failed" in text


@pytest.mark.parametrize("extra, message", [
    (["--arch", "lenet5", "--hidden", "16", "8"], "--hidden is for --arch mlp"),
    (["--arch", "{bad"], "not valid JSON"),
    (["--arch", "mnist"], "input [1, 28, 28] does not match the dataset's [1, 8, 8]"),
    (["--arch", "linear"], "nothing to prune"),
    (["--arch", "nowhere.json"],
     "no such architecture file (or preset: mlp, lenet5, cnn3, resnet8, resnet20)"),
    (["--arch", "tiny", "--retain", "retain.txt"], "first row 16-8 is not the units 3-8"),
])
def test_bad_arch_is_one_line_and_writes_nothing(extra, message, tmp_path, monkeypatch):
    """--arch with --hidden, a spec file that is no JSON, does not fit digits or has nothing to
    prune, a missing file, a schedule of other units: exit 2, one line, nothing written."""
    monkeypatch.chdir(tmp_path)
    Path("{bad").write_text('{"input": [1, 8, 8], "layers": [')
    Path("mnist").write_text(json.dumps({**TINY_CNN, "input": [1, 28, 28]}))
    Path("linear").write_text(json.dumps(["flatten", {"type": "linear", "out": 10}]))
    Path("tiny").write_text(json.dumps(TINY_CNN))
    write_retain(tmp_path)
    code, text = run_main(["--dataset", "digits", "--variants", "magnitude", *extra,
                           "--workers", "0", "--out", str(tmp_path / "out")])
    assert code == 2 and message in text and text.count("\n") == 1, text
    assert not (tmp_path / "out").exists()


def test_a_study_and_a_search_run_on_your_own_table(tmp_path):
    """--dataset names a CSV table (--target its label column) for the grid and the search as
    for iterativeprune: every cell's session reads that table, the cache folder is named after
    it, and the reports name it."""
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    rows = rng.normal(size=(90, 4)) + 2.0 * np.eye(3, 4)[labels]
    csv = tmp_path / "flowers.csv"
    csv.write_text("a,b,c,d,kind\n" + "".join(
        ",".join(f"{v:.4f}" for v in row) + f",k{k}\n"
        for row, k in zip(rows, labels, strict=True)))
    out = tmp_path / "o"
    common = ["--dataset", str(csv), "--target", "kind", "--hidden", "6", "4", "--workers", "0",
              "--seeds", "0", "--epochs", "2", "--retrain-epochs", "1", "--out", str(out)]
    code, text = run_main([*common, "--variants", "magnitude", "--rows", "2"])
    assert code == 0, text
    (cache,) = (out / "cache").iterdir()
    assert cache.name.startswith("flowers-") and cache.name.endswith("-6-4")
    configs = [json.loads(p.read_text()) for p in cache.glob("seed0/**/config.json")]
    assert len(configs) == 1 + 2 * 2  # the base; 2 variants on 2 curves
    assert {(c["dataset"], c["target"]) for c in configs} == {(str(csv), "kind")}
    # a cell's own tables and plots are left to `iaprune concatenate`: the study writes reports
    assert not list(cache.glob("seed0/**/prune_w_retrain_results"))
    assert f"Dataset {csv}" in (out / "study_retrain.md").read_text()
    code, text = run_main([*common, "--search", "--trials", "2"])
    assert code == 0, text
    assert f"--dataset {csv}" in (out / "search.md").read_text()


def test_own_data_flags_are_checked_before_any_cell(tmp_path):
    """--target with a built-in set, or a table without --target: one line, nothing written."""
    csv = tmp_path / "t.csv"
    csv.write_text("a,kind\n1,x\n2,y\n")
    for argv, message in (
            (["--dataset", "mnist", "--target", "kind"], "--target applies to your own data"),
            (["--dataset", str(csv)], "a table needs its label column named")):
        code, text = run_main([*argv, "--workers", "0", "--out", str(tmp_path / "o")])
        assert code == 2 and message in text and len(text.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()
