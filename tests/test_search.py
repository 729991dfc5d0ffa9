"""iaprune.study --search end to end on digits (16-8 MLP, no-retrain curve, 3 trials): on a local
Ray with Tune, read back from the cache in-process, continued, resumed after a killed trial; and
the objective and the one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from iaprune import cli
from iaprune.retain import geometric_schedule
from iaprune.study import cli as study
from iaprune.study import search as study_search
from iaprune.study.search import Found, Row, SearchConfig, make_search, smallest_within

pytest.importorskip("optuna")
ARGS = ["--search", "--dataset", "digits", "--hidden", "16", "8", "--epochs", "4",
        "--trials", "3", "--max-accuracy-drop", "5"]


def run_main(argv: list[str]) -> tuple[int, str]:
    """study.main(argv) through the command-line wrapper, with its console output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.run(study.main, argv)
    return code, out.getvalue()


def report(out: Path) -> str:
    """OUT/search.md without its command line (which names OUT)."""
    return re.sub(r"^`python -m iaprune.study --search .*`$", "", (out / "search.md").read_text(),
                  flags=re.M)


def checkpoints(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("best_model.pth")}


def trial_lines(text: str) -> list[str]:
    """The q's of every trial line of the output ('0.75 0.82')."""
    return re.findall(r"^\[ *\d+/\d+\] q ([0-9. ]+):", text, re.M)


def table(markdown: str, section: str) -> dict[str, dict[str, str]]:
    """The first markdown table after the heading `section`: {first cell: {column: text}}."""
    lines = markdown[markdown.index(section):].splitlines()
    first = next(k for k, ln in enumerate(lines) if ln.startswith("|"))
    rows = lines[first:]
    rows = rows[:next((k for k, ln in enumerate(rows) if not ln.startswith("|")), len(rows))]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return {c[0]: dict(zip(header, c, strict=True)) for c in
            ([x.strip() for x in ln.strip("|").split("|")] for ln in rows[2:])}


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory) -> SimpleNamespace:
    """The tiny search on a local Ray with one worker (Tune, Optuna's TPE)."""
    out = tmp_path_factory.mktemp("search") / "ray"
    code, text = run_main([*ARGS, "--workers", "1", "--out", str(out)])
    assert code == 0, text
    search = make_search(SearchConfig(dataset="digits", hidden=(16, 8), epochs=4, trials=3,
                                      max_accuracy_drop=5.0), out)
    return SimpleNamespace(out=out, text=text, search=search, report=report(out))


def copy_without_state(on_ray, tmp_path: Path) -> Path:
    """A copy of the Ray search's folder with its sessions but without the search's memory."""
    out = tmp_path / "copy"
    shutil.copytree(on_ray.out, out)
    shutil.rmtree(out / "search")
    (out / "search.json").unlink()
    return out


@pytest.mark.slow
def test_search_on_ray_reports_every_trial_and_the_reference(on_ray):
    """Three trials ran on Ray; the report lists them and the reference with the numbers of
    their sessions; the plot is a PNG."""
    assert "local Ray, 1 workers" in on_ray.text and len(trial_lines(on_ray.text)) == 3
    trials = table(on_ray.report, "## Every trial")
    assert len(trials) == 4 and trials["#0"]["state"] == "reference"
    for row in trials.values():
        q = (float(row["q_h1"]), float(row["q_h2"]))
        found = on_ray.search.found(q)
        assert row["params"] == f"{found.params:,}" and row["val acc %"] == f"{found.val:.2f}"
        assert row["state"] in ("reference", "done")
    assert (on_ray.out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "`python -m iaprune.study --search --dataset digits --hidden 16 8 --curve no-retrain " \
           f"--trials 3 --max-accuracy-drop 5 --epochs 4 --out {on_ray.out}`" in \
           (on_ray.out / "search.md").read_text()


@pytest.mark.slow
def test_objective_is_the_smallest_iteration_before_the_engine_stopped(on_ray):
    """Each trial's session stops at the first iteration more than 5 points below the base
    model's validation accuracy (or runs the whole schedule); the objective is the row before."""
    for q in {(0.8, 0.8), *(tuple(map(float, q.split())) for q in trial_lines(on_ray.text))}:
        (cell,) = on_ray.search.cells(q)
        rows = [study_search.read_row(cell, i) for i in range(cell.session.last_complete() + 1)]
        threshold = rows[0].val - 5.0
        assert all(r.val >= threshold for r in rows[:-1])
        assert rows[-1].val < threshold or len(rows) == cell.rows
        found = on_ray.search.found(q)
        k = len(rows) - 2 if rows[-1].val < threshold else len(rows) - 1
        assert (found.index, found.params) == (k, rows[k].params)


@pytest.mark.slow
def test_best_found_is_compared_with_the_reference(on_ray):
    """The best row is the searched trial with the fewest parameters; the sentence under the
    table says whether it beats q = 0.8, with the measured ratio."""
    best = table(on_ray.report, "## Best found vs q = 0.8")
    ours = int(best["**best found**"]["params"].replace(",", ""))
    reference = int(best["q = 0.8 (reference)"]["params"].replace(",", ""))
    searched = [int(r["params"].replace(",", "")) for r in
                table(on_ray.report, "## Every trial").values() if r["state"] == "done"]
    assert ours == min(searched)
    if ours < reference:
        assert f"The best found has {ours / reference:.3f}x the reference's" in on_ray.report
    else:
        assert "The search found nothing smaller than the q = 0.8 reference" in \
            on_ray.report or "as small as the reference's" in on_ray.report


@pytest.mark.slow
def test_sequential_rerun_reads_every_trial_from_the_cache(on_ray, tmp_path, monkeypatch):
    """Without the search's memory, --workers 0 (no Ray, no Tune) proposes the same q's
    (same sampler seed), finds every session in the cache, retrains nothing and writes the same
    report."""
    out = copy_without_state(on_ray, tmp_path)
    before = checkpoints(out)

    def no_ray(*args):
        raise AssertionError("--workers 0 loaded Ray Tune or started Ray")

    monkeypatch.setattr(study_search, "load_tune", no_ray)
    monkeypatch.setattr(study_search, "connect", no_ray)
    code, text = run_main([*ARGS, "--workers", "0", "--out", str(out)])
    assert code == 0, text
    assert trial_lines(text) == trial_lines(on_ray.text)
    assert checkpoints(out) == before
    assert report(out) == on_ray.report


@pytest.mark.slow
def test_finished_search_runs_again_without_running_anything(on_ray, tmp_path):
    """A second run of a finished search finds its trials done and rewrites the same report."""
    out = tmp_path / "again"
    shutil.copytree(on_ray.out, out)
    before = checkpoints(out)
    code, text = run_main([*ARGS, "--workers", "1", "--out", str(out)])
    assert code == 0 and "3 trials (3 done)" in text and not trial_lines(text), text
    assert checkpoints(out) == before
    assert report(out) == on_ray.report


@pytest.mark.slow
def test_killed_trial_is_retried_first_and_its_session_resumes(on_ray, tmp_path):
    """A trial killed after two iterations (left RUNNING in the journal) is run first by the
    next run with more --trials: its session continues (rows 0-1 kept) and completes."""
    out = tmp_path / "more"
    shutil.copytree(on_ray.out, out)
    search = make_search(on_ray.search.config, out)
    optuna = study_search.load_optuna()
    storage = study_search.journal(search, optuna)
    stale = study_search.open_study(search, optuna, storage)
    stale.enqueue_trial(search.params_of((0.6, 0.6)))
    trial = stale.ask(fixed_distributions=study_search.space(search, optuna))

    def kill_after_row_1(metrics):
        if metrics["iteration"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study_search.run_trial(search, search.q_of(trial.params), None, kill_after_row_1)
    (cell,) = search.cells((0.6, 0.6))
    kept = {i: cell.session.checkpoint(i).stat().st_mtime_ns for i in (0, 1)}
    code, text = run_main([*ARGS, "--trials", "4", "--workers", "0", "--out", str(out)])
    assert code == 0, text
    assert "4 trials (3 done, 1 to retry)" in text and trial_lines(text) == ["0.60 0.60"]
    assert {i: cell.session.checkpoint(i).stat().st_mtime_ns for i in (0, 1)} == kept
    assert study_search.cell_done(cell)
    states = [r["state"] for r in table(report(out), "## Every trial").values()]
    assert states == ["reference", "done", "done", "done", "failed or killed", "done"]


@pytest.mark.slow
def test_report_only_rebuilds_the_report(on_ray, tmp_path):
    """--search --report-only with just --out (the settings from OUT/search.json)."""
    out = tmp_path / "report"
    shutil.copytree(on_ray.out, out)
    (out / "search.md").unlink()
    code, text = run_main(["--search", "--report-only", "--out", str(out)])
    assert code == 0, text
    assert report(out) == on_ray.report


@pytest.mark.slow
def test_search_of_other_settings_is_refused(on_ray, tmp_path):
    """Continuing a search with another drop is one error line; nothing is changed."""
    out = tmp_path / "other"
    shutil.copytree(on_ray.out, out)
    settings = (out / "search.json").read_text()
    argv = [*ARGS, "--workers", "0", "--out", str(out)]
    argv[argv.index("--max-accuracy-drop") + 1] = "2"
    code, text = run_main(argv)
    assert code == 2 and text.count("\n") == 1, text
    assert "holds a search of other settings (max_accuracy_drop: saved 5.0, wanted 2.0)" in text
    assert (out / "search.json").read_text() == settings


@pytest.mark.parametrize("extra, message", [
    (["--trials", "0"], "--trials must be an integer >= 1"),
    (["--max-accuracy-drop", "-1"], "--max-accuracy-drop must be a number >= 0"),
    (["--max-accuracy-drop", "nan"], "--max-accuracy-drop must be a number >= 0"),
    (["--q-range", "0.9", "0.5"], "--q-range needs LOW HIGH with 0 < LOW < HIGH < 1"),
    (["--q-range", "0.5", "1"], "--q-range needs LOW HIGH"),
    (["--q-range", "0.505", "0.9"], "multiples of 0.01"),
    (["--variants", "magnitude"], "--variants is for the grid, not --search"),
    (["--mlflow"], "--mlflow is for the grid, not --search"),
    (["--hidden", "1", "1"], "nothing to prune"),
    (["--seeds", "0", "0"], "--seeds needs one or more distinct seeds"),
    (["--arch", "lenet5"], "--hidden is for --arch mlp; --arch lenet5 has its own layer sizes"),
])
def test_bad_search_flags_are_one_line_errors(extra, message, tmp_path):
    """Each bad flag: exit 2, one line, nothing written."""
    code, text = run_main([*ARGS, *extra, "--out", str(tmp_path / "out")])
    assert code == 2 and message in text and text.count("\n") == 1, text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--trials", "3"], ["--curve", "retrain"],
                                  ["--q-range", "0.6", "0.9"]])
def test_search_flags_without_search_are_errors(flag, tmp_path):
    code, text = run_main(["--dataset", "digits", *flag, "--out", str(tmp_path / "out")])
    assert code == 2 and f"{flag[0]} needs --search" in text and text.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module, workers, pip", [
    ("optuna", "0", "pip install optuna==5.0.0"),
    ("ray.tune.search.optuna", "1", 'pip install "ray[tune]==2.60.0" optuna==5.0.0'),
])
def test_missing_packages_are_one_line_naming_pip(module, workers, pip, tmp_path, monkeypatch):
    """Without Optuna (or, on Ray, without Ray Tune) the search is one line with the pip
    command, before anything is written."""
    monkeypatch.setitem(sys.modules, module, None)
    code, text = run_main([*ARGS, "--workers", workers, "--out", str(tmp_path / "out")])
    assert code == 2 and pip in text and text.count("\n") == 1, text
    assert not (tmp_path / "out").exists()


def test_smallest_within_is_the_row_before_the_first_drop():
    """Row 0 is the base; a later row back within the drop does not count (the engine stopped
    before it); no drop at all: the last row."""
    rows = [Row(i, "", 100 - i, val, val) for i, val in enumerate([90, 89, 84.9, 88, 80])]
    assert smallest_within(rows, 5.0) == 1
    assert smallest_within(rows, 20.0) == 4
    assert smallest_within(rows, 0.5) == 0


def test_found_needs_every_seed_within_the_drop():
    """With two seeds the objective is the model at the smallest row within the drop on both."""
    a = [Row(i, f"{8 - i}-4", 100 - 10 * i, 90 - i, 80) for i in range(5)]  # all within 5
    b = [Row(i, f"{8 - i}-4", 100 - 10 * i, [90, 88, 86, 84][i], 70) for i in range(4)]
    found = Found((0.8, 0.8), {0: a, 1: b}, 5.0)
    assert (found.index, found.params, found.hidden) == (2, 80, "6-4")
    assert found.val == pytest.approx((88 + 86) / 2) and found.test == pytest.approx(75)
    assert found.stopped


def test_trial_cells_are_named_by_their_rounded_q_and_prune_to_one_unit():
    """q's on the 0.01 grid name the session folder (float noise of the sampler ignored); the
    schedule runs to one unit per layer; the reference is the q = 0.8 geometric schedule."""
    search = make_search(SearchConfig(dataset="digits", hidden=(16, 8)), Path("unused"))
    q = search.q_of({"q_h1": 0.8200000000000001, "q_h2": 0.75})
    assert q == (0.82, 0.75)
    (cell,) = search.cells(q)
    assert cell.id == "seed0/search-no-retrain/q0.82-0.75"
    assert cell.schedule[-1].neurons == (1, 1) and cell.config.max_accuracy_drop == 1.0
    assert cell.config.retraining.epochs == 0 and cell.config.base_model.endswith(
        "seed0/base/iterative_pruning/0/prune_w_retrain/best_model.pth")
    (reference,) = search.cells(search.reference)
    assert list(reference.schedule) == geometric_schedule([16, 8])


def test_settings_file_round_trips():
    config = SearchConfig(dataset="digits", hidden=(16, 8), trials=5, q_range=(0.6, 0.9))
    assert SearchConfig.from_json(json.loads(json.dumps(config.to_json())), "x") == config


# ----------------------------------------------------------------------------------- --arch
TINY_CNN = {"input": [1, 8, 8], "layers": [
    {"type": "conv2d", "out": 3, "kernel": 3}, "relu", {"type": "maxpool2d", "kernel": 2},
    "flatten", {"type": "linear", "out": 8}, "relu", {"type": "linear", "out": 10}]}


def test_cnn_search_has_one_q_per_prunable_group(tmp_path):
    """--arch FILE.json --workers 0: two trials and the reference on a conv net, each one q per
    group (conv channels, hidden neurons), pruned from the shared base model down to 1-1; the
    report names the network and the q's per group."""
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_CNN))
    out = tmp_path / "out"
    argv = ["--search", "--dataset", "digits", "--arch", str(spec), "--epochs", "10",
            "--trials", "2", "--max-accuracy-drop", "5", "--workers", "0", "--out", str(out)]
    code, text = run_main(argv)
    assert code == 0, text
    assert "q per prunable group" in text and len(trial_lines(text)) == 2
    search = make_search(SearchConfig(dataset="digits", arch=str(spec), epochs=10, trials=2,
                                      max_accuracy_drop=5.0), out)
    assert search.names == ("q_g1", "q_g2") and search.cache.name == "digits-tiny-3-8"
    (reference,) = search.cells(search.reference)
    assert list(reference.schedule) == geometric_schedule([3, 8])
    for q in {search.reference, *(tuple(map(float, q.split())) for q in trial_lines(text))}:
        (cell,) = search.cells(q)
        assert cell.schedule[-1].neurons == (1, 1)
        assert json.loads(cell.session.config.read_text())["arch"] == \
            str(search.cache / "arch.json")
        assert study_search.read_row(cell, 0).hidden == "3-8"
    text = report(out)
    assert "Dataset digits, network tiny (conv2d 3 3 1 0," in text and "units 3-8, seed 0" in text
    trials = table(text, "## Every trial")
    assert len(trials) == 3 and trials["#0"]["q_g1"] == "0.80" and \
        trials["#0"]["state"] == "reference"
    assert "| | trial | q (g1 g2) | units |" in text.replace("|  |", "| |")


@pytest.mark.slow
def test_search_of_another_arch_is_refused(on_ray, tmp_path):
    """Continuing a search with another --arch is one error line; nothing is changed."""
    out = tmp_path / "other"
    shutil.copytree(on_ray.out, out)
    settings = (out / "search.json").read_text()
    argv = [*ARGS, "--workers", "0", "--out", str(out)]
    at = argv.index("--hidden")
    argv[at:at + 3] = ["--arch", "cnn3"]
    code, text = run_main(argv)
    assert code == 2 and text.count("\n") == 1, text
    assert "holds a search of other settings (arch: saved 'mlp', wanted 'cnn3'" in text
    assert (out / "search.json").read_text() == settings


def test_bad_search_spec_file_is_one_line(tmp_path):
    """A spec file that does not fit the dataset: exit 2, one line, nothing written."""
    spec = tmp_path / "big.json"
    spec.write_text(json.dumps({**TINY_CNN, "input": [1, 28, 28]}))
    argv = ["--search", "--dataset", "digits", "--arch", str(spec), "--out", str(tmp_path / "o")]
    code, text = run_main(argv)
    assert code == 2 and text.count("\n") == 1, text
    assert "input [1, 28, 28] does not match the dataset's [1, 8, 8]" in text
    assert not (tmp_path / "o").exists()


def test_cnn_search_command_names_the_arch_not_hidden():
    """The report's command line of a search on a preset shows --arch and no --hidden."""
    config = SearchConfig(dataset="digits", arch="cnn3", trials=2)
    assert config.command(Path("/x")) == (
        "python -m iaprune.study --search --dataset digits --arch cnn3 --curve no-retrain "
        "--trials 2 --max-accuracy-drop 1 --out /x")


def test_a_second_driver_of_the_same_search_is_refused_naming_the_first(tmp_path):
    """One driver per Optuna journal: while a search holds OUT/<name>/lock, another is refused
    at once (no waiting) with the holder's host and pid; once released, it can start."""
    search = SimpleNamespace(state=tmp_path / "search")
    with study_search.search_lock(search):
        holder = (search.state / "lock").read_text().strip()
        with pytest.raises(study_search.StudyError, match=re.escape(f"({holder})")):
            with study_search.search_lock(search):
                pass
    with study_search.search_lock(search):
        pass
