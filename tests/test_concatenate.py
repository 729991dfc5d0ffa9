"""Tests for iaprune.concatenate: results files, gathering iterations, recommendation, CLI."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import iaprune.concatenate as concatenate_module
from iaprune import cli, plotting
from iaprune.concatenate import concatenate, gather, main, recommend
from iaprune.files import holding
from iaprune.records import (
    COMPARISON_PLOT,
    RESULTS_DIR,
    RESULTS_FILES,
    SETTINGS_FILE,
    VALIDATION_COLUMNS,
    ResultsError,
    read_validation_results,
    write_validation_results,
)
from iaprune.session import SessionError, mode_dirs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def values(val: float = 98.0, test: float = 97.5, params: int = 1000, percent: float = 100.0,
           hidden: str = "20-10", before: float | None = None) -> dict:
    """A complete, plausible row of validation results."""
    return {"Train_Loss": 0.05, "Test_Loss": 0.09, "Train_Accuracy": min(100.0, val + 1.0),
            "Test_Accuracy": test, "PercentageRetain": percent, "Val_Loss": 0.08,
            "Val_Accuracy": val, "NoRetrain_Test_Accuracy": test if before is None else before,
            "Hidden": hidden, "Params": params, "MACs": params - 30}


def make_iteration(mode_dir: Path, iteration: int, **kwargs) -> Path:
    """Write <mode_dir>/<iteration>/prune_w_retrain/validation_results.txt."""
    path = mode_dir / str(iteration) / "prune_w_retrain" / "validation_results.txt"
    write_validation_results(path, values(**kwargs))
    return path


def make_mode(mode_dir: Path, vals: list[float]) -> Path:
    """A mode folder with one iteration per validation accuracy, each smaller than the last."""
    for i, val in enumerate(vals):
        make_iteration(mode_dir, i, val=val, test=val - 0.3, params=1000 // (i + 1),
                       percent=100.0 / (i + 1), hidden=f"{20 - i}-{10 - i}",
                       before=val - 5.0 * i)
    return mode_dir


# ---------------------------------------------------------------- validation_results.txt


def test_validation_results_round_trip_is_exact(tmp_path):
    """Written values read back identically (floats written losslessly)."""
    row = values(val=97.60333333333333, test=1 / 3 * 100)
    write_validation_results(tmp_path / "v.txt", row)
    assert read_validation_results(tmp_path / "v.txt") == row


def test_validation_results_file_is_header_plus_one_row(tmp_path):
    """The file is the VALIDATION_COLUMNS header and one whitespace-separated row."""
    write_validation_results(tmp_path / "v.txt", values(hidden="205-51"))
    header, row = (tmp_path / "v.txt").read_text().splitlines()
    assert header.split() == list(VALIDATION_COLUMNS)
    assert row.split()[VALIDATION_COLUMNS.index("Hidden")] == "205-51"


@pytest.mark.parametrize("change", [
    {"MACs": None}, {"Extra": 1.0}, {"Test_Loss": math.nan}, {"Val_Accuracy": 101.0},
    {"Params": 2.5}, {"Params": True}, {"Hidden": "20 10"}, {"Test_Accuracy": "97"},
])
def test_write_validation_results_rejects_bad_values(tmp_path, change):
    """Missing/unknown keys, NaN, out-of-range percent and wrong types raise ValueError."""
    row = values()
    row.update(change)
    if change == {"MACs": None}:
        del row["MACs"]
    with pytest.raises(ValueError):
        write_validation_results(tmp_path / "v.txt", row)
    assert not (tmp_path / "v.txt").exists()


HEADER = " ".join(VALIDATION_COLUMNS)
GOOD_ROW = "0.05 0.09 99.0 97.5 100.0 0.08 98.0 97.5 20-10 1000 970"
MALFORMED = [
    ("", "empty file"),
    ("   \n\n", "empty file"),
    (f"{HEADER}\n", "header but no row"),
    (f"Train_Loss Test_Loss\n{GOOD_ROW}\n", "header must name the columns"),
    (f"{HEADER}\n0.05 0.09 99.0\n", "expected 11 values"),
    (f"{HEADER}\n{GOOD_ROW.replace('97.5', 'abc', 1)}\n", "Test_Accuracy must be a number"),
    (f"{HEADER}\n{GOOD_ROW.replace('0.09', 'nan')}\n", "Test_Loss must be finite"),
    (f"{HEADER}\n{GOOD_ROW.replace('1000', '1e3')}\n", "Params must be an integer"),
    (f"{HEADER}\n{GOOD_ROW.replace('98.0', '198.0')}\n", "percentage in [0, 100]"),
    (f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n", "expected one row of values"),
]


@pytest.mark.parametrize(("text", "problem"), MALFORMED)
def test_read_validation_results_rejects_malformed_files_in_one_line(tmp_path, text, problem):
    """Empty or malformed files raise ResultsError: one line that names the file."""
    path = tmp_path / "validation_results.txt"
    path.write_text(text)
    with pytest.raises(ResultsError) as info:
        read_validation_results(path)
    message = str(info.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_read_accepts_columns_in_any_order(tmp_path):
    """A file whose header lists the columns in another order is read by name."""
    names, cells = list(VALIDATION_COLUMNS), GOOD_ROW.split()
    path = tmp_path / "v.txt"
    path.write_text(" ".join(reversed(names)) + "\n" + " ".join(reversed(cells)) + "\n")
    assert read_validation_results(path)["Hidden"] == "20-10"
    assert list(read_validation_results(path)) == names


# ---------------------------------------------------------------- gathering and recommending


def test_iterations_are_read_in_numeric_order(tmp_path):
    """Folder 2 comes before folder 10 (numeric, not alphabetical, order)."""
    for i in (10, 0, 2, 1):
        make_iteration(tmp_path, i, params=1000 - i)
    rows, skipped = gather(tmp_path)
    assert [r.iteration for r in rows] == [0, 1, 2, 10]
    assert skipped == []


def test_incomplete_iterations_are_skipped_with_a_note(tmp_path, capsys):
    """An iteration folder without validation_results.txt is skipped and a note says so."""
    make_mode(tmp_path, [98.0, 97.9])
    (tmp_path / "2" / "prune_w_retrain").mkdir(parents=True)
    rows, skipped = gather(tmp_path)
    assert [r.iteration for r in rows] == [0, 1] and skipped == [2]
    assert "skipping iteration 2" in capsys.readouterr().err


def test_quiet_suppresses_notes(tmp_path, capsys):
    """quiet=True prints nothing, not even the skip note."""
    make_mode(tmp_path, [98.0, 97.9])
    (tmp_path / "2").mkdir()
    concatenate(tmp_path, quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_other_folders_are_ignored(tmp_path):
    """Non-numeric folders (the results folder, notes) are not iterations."""
    make_mode(tmp_path, [98.0])
    (tmp_path / RESULTS_DIR).mkdir()
    (tmp_path / "notes").mkdir()
    assert [r.iteration for r in gather(tmp_path)[0]] == [0]


def test_recommendation_is_smallest_model_within_tolerance(tmp_path):
    """The recommended model is the smallest whose val accuracy >= base - tolerance."""
    make_mode(tmp_path, [98.0, 97.8, 97.1, 96.5, 95.0])
    rows, _ = gather(tmp_path)
    assert recommend(rows, tolerance=1.0) == (0, 2)
    assert recommend(rows, tolerance=0.5) == (0, 1)
    assert recommend(rows, tolerance=10.0) == (0, 4)


def test_recommendation_admits_a_drop_exactly_equal_to_the_tolerance(tmp_path):
    """A validation accuracy exactly tolerance points below the base qualifies."""
    make_mode(tmp_path, [98.2, 97.2, 90.0])
    assert recommend(gather(tmp_path)[0], tolerance=1.0) == (0, 1)


def test_recommendation_may_skip_a_dip(tmp_path):
    """A smaller model that recovers within tolerance after a dip is preferred."""
    make_mode(tmp_path, [98.0, 96.0, 97.5, 90.0])
    assert recommend(gather(tmp_path)[0], tolerance=1.0) == (0, 2)


def test_zero_tolerance_keeps_the_base_unless_a_smaller_model_is_as_good(tmp_path):
    """tolerance=0 recommends the base model when every smaller model is worse."""
    make_mode(tmp_path, [98.0, 97.99])
    assert recommend(gather(tmp_path)[0], tolerance=0.0) == (0, 0)


def test_without_iteration_zero_the_largest_model_is_the_reference(tmp_path):
    """If the base folder 0/ is incomplete, the largest complete model is the reference."""
    make_mode(tmp_path, [98.0, 97.8, 97.0, 96.0])
    (tmp_path / "0" / "prune_w_retrain" / "validation_results.txt").unlink()
    assert recommend(gather(tmp_path, quiet=True)[0], tolerance=1.0) == (1, 2)


@pytest.mark.parametrize("tolerance", [-0.5, math.nan, math.inf])
def test_recommend_rejects_bad_tolerance(tmp_path, tolerance):
    """A negative or non-finite tolerance is a ValueError."""
    make_mode(tmp_path, [98.0])
    with pytest.raises(ValueError, match="tolerance"):
        recommend(gather(tmp_path)[0], tolerance)


# ---------------------------------------------------------------- the outputs


def test_concatenate_writes_the_four_files_and_recommended_txt(tmp_path):
    """validations.txt, the three plots and recommended.txt land in prune_w_retrain_results/."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.6, 96.0])
    result = concatenate(mode, quiet=True)
    out = mode / RESULTS_DIR
    assert result.outputs == tuple(out / name for name in RESULTS_FILES)
    for name in ("accuracies.png", "losses.png", "tradeoff.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    expected = mode / "1" / "prune_w_retrain" / "best_model.pth"
    assert result.recommended == 1 and result.recommended_path == expected
    # relative to the session (the folder holding the mode folder): a copy names its own model
    assert (out / "recommended.txt").read_text() == \
        "iterative_pruning/1/prune_w_retrain/best_model.pth\n"


def test_validations_txt_has_one_row_per_iteration_with_2_decimal_accuracies(tmp_path):
    """validations.txt: iteration first, one row per complete iteration, accuracy to 2 decimals."""
    make_iteration(tmp_path, 0, val=98.0, test=97.605001, params=900)
    make_iteration(tmp_path, 10, val=97.5, test=97.23, params=300)
    concatenate(tmp_path, quiet=True)
    header, *rows = (tmp_path / RESULTS_DIR / "validations.txt").read_text().splitlines()
    assert header.split() == ["Iteration", *VALIDATION_COLUMNS]
    test_col = header.split().index("Test_Accuracy")
    assert [r.split()[0] for r in rows] == ["0", "10"]
    assert [r.split()[test_col] for r in rows] == ["97.61", "97.23"]


def test_printed_table_marks_the_recommended_model(tmp_path, capsys):
    """The printed summary marks the recommended row and names its checkpoint."""
    make_mode(tmp_path, [98.0, 97.6, 96.0])
    concatenate(tmp_path)
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if line.endswith("<- recommended")]
    assert len(marked) == 1 and marked[0].split()[0] == "1"
    assert str(tmp_path / "1" / "prune_w_retrain" / "best_model.pth") in out


def test_compare_overlay_writes_comparison_png(tmp_path):
    """--compare: comparison.png overlays the other runs and is listed among the outputs."""
    one = make_mode(tmp_path / "s" / "iterative_pruning", [98.0, 97.6, 96.0])
    two = make_mode(tmp_path / "s" / "one_shot_pruning", [98.0, 97.0, 93.0])
    result = concatenate(one, compare=[two], quiet=True)
    assert result.outputs[-1] == one / RESULTS_DIR / COMPARISON_PLOT
    assert result.outputs[-1].read_bytes().startswith(PNG_SIGNATURE)
    assert not (two / RESULTS_DIR).exists()  # compared runs are only read


def test_single_iteration_still_produces_every_file(tmp_path):
    """A run holding only the base model still gets its table, plots and recommendation."""
    make_mode(tmp_path, [98.0])
    result = concatenate(tmp_path, quiet=True)
    assert result.recommended == 0 and all(p.is_file() for p in result.outputs)


# ---------------------------------------------------------------- folders and errors


def test_mode_dirs_expands_a_session_folder(tmp_path):
    """A session folder yields its mode folders (sorted); a mode folder yields itself."""
    one = make_mode(tmp_path / "iterative_pruning", [98.0])
    two = make_mode(tmp_path / "one_shot_pruning", [98.0])
    (tmp_path / "retain").mkdir()
    assert mode_dirs(tmp_path) == [one, two]
    assert mode_dirs(one) == [one]


def test_concatenate_on_a_session_folder_names_its_modes(tmp_path):
    """Passing a session folder to concatenate() is an error that lists its modes."""
    make_mode(tmp_path / "iterative_pruning", [98.0])
    with pytest.raises(ResultsError, match="a session folder.*iterative_pruning"):
        concatenate(tmp_path, quiet=True)


def test_folder_without_iterations_is_a_clear_error(tmp_path):
    """An empty folder is an error saying no iteration folders were found."""
    with pytest.raises(SessionError, match="no iteration folders"):
        mode_dirs(tmp_path)
    with pytest.raises(ResultsError, match="no iteration folders"):
        concatenate(tmp_path, quiet=True)


def test_folder_with_only_incomplete_iterations_is_an_error(tmp_path):
    """Iteration folders that all lack results are a 'no complete iteration' error."""
    (tmp_path / "0" / "prune_w_retrain").mkdir(parents=True)
    with pytest.raises(ResultsError, match="no complete iteration"):
        concatenate(tmp_path, quiet=True)


def test_missing_folder_is_an_error(tmp_path):
    """A folder that does not exist is a ResultsError naming it."""
    with pytest.raises(ResultsError, match="no such folder"):
        concatenate(tmp_path / "absent", quiet=True)


def test_command_processes_every_mode_of_a_session(tmp_path, capsys):
    """python -m iaprune.concatenate SESSION writes results (and a comparison) for each mode."""
    for mode in ("iterative_pruning", "one_shot_pruning"):
        make_mode(tmp_path / mode, [98.0, 97.5, 95.0])
    assert main([str(tmp_path), "--tolerance", "1.0"]) == 0
    for mode in ("iterative_pruning", "one_shot_pruning"):
        out = tmp_path / mode / RESULTS_DIR
        assert all((out / name).is_file() for name in (*RESULTS_FILES, COMPARISON_PLOT))
    assert "processing each" in capsys.readouterr().out


def test_command_reports_a_malformed_file_in_one_line_with_exit_code_2(tmp_path, capsys):
    """A malformed validation_results.txt is one `error:` line naming it, exit code 2."""
    make_mode(tmp_path, [98.0, 97.0])
    bad = tmp_path / "1" / "prune_w_retrain" / "validation_results.txt"
    bad.write_text("")
    assert cli.run(main, [str(tmp_path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"error: {bad}: empty file (expected a header line and one row of values)\n"


def test_command_on_a_results_path_that_is_a_file_is_one_line(tmp_path, capsys):
    """A file where prune_w_retrain_results/ belongs is one `error:` line naming it, exit code
    2 (was a FileExistsError traceback), and the file is left as it was."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.0])
    (mode / RESULTS_DIR).write_text("keep")
    assert cli.run(main, [str(mode)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {mode / RESULTS_DIR}: is a file, not a folder")
    assert err.count("\n") == 1 and (mode / RESULTS_DIR).read_text() == "keep"


def test_command_rejects_negative_tolerance(tmp_path, capsys):
    """--tolerance below zero is an `error:` line and exit code 2."""
    make_mode(tmp_path, [98.0])
    assert cli.run(main, [str(tmp_path), "--tolerance", "-1"]) == cli.EXIT_USAGE
    assert "tolerance" in capsys.readouterr().err


# ---------------------------------------------------------------- archived results, tolerance


def test_tolerance_chosen_once_is_reused_until_another_is_given(tmp_path):
    """A later call without a tolerance keeps the one last chosen for the folder."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.6, 96.0])
    assert concatenate(mode, tolerance=2.5, quiet=True).recommended == 2
    again = concatenate(mode, quiet=True)
    assert (again.tolerance, again.recommended) == (2.5, 2)
    assert concatenate(mode, tolerance=0.5, quiet=True).recommended == 1
    assert concatenate(mode, quiet=True).tolerance == 0.5


def test_command_without_tolerance_keeps_the_chosen_one(tmp_path, capsys):
    """python -m iaprune.concatenate DIR after --tolerance 2.5 still recommends at 2.5 points."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.6, 96.0])
    assert main([str(mode), "--tolerance", "2.5"]) == 0
    assert main([str(mode)]) == 0
    assert "(tolerance 2.5 pt)" in capsys.readouterr().out.split("recommended: ")[-1]
    assert json.loads((mode / RESULTS_DIR / SETTINGS_FILE).read_text())["tolerance"] == 2.5


def test_up_to_date_outputs_are_not_rewritten(tmp_path):
    """Gathering unchanged results again writes nothing; a changed iteration rewrites them."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.6, 96.0])
    concatenate(mode, quiet=True)
    out = mode / RESULTS_DIR
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert not concatenate(mode, quiet=True).written
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    make_iteration(mode, 2, val=97.9, test=97.5, params=333, percent=33.3, hidden="18-8")
    result = concatenate(mode, quiet=True)
    assert result.written and result.recommended == 2
    assert "97.90" in (out / "validations.txt").read_text()


def test_corrupt_settings_file_is_one_line(tmp_path):
    """A concatenate.json that is not the tool's is a ResultsError naming it."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0])
    (mode / RESULTS_DIR).mkdir()
    (mode / RESULTS_DIR / SETTINGS_FILE).write_text('{"tolerance": -3}')
    with pytest.raises(ResultsError, match=SETTINGS_FILE):
        concatenate(mode, quiet=True)


def test_command_on_results_it_cannot_write_is_one_line(tmp_path, capsys, monkeypatch):
    """Read-only results that need rewriting: one `error:` line, exit code 2, no traceback."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.0])

    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    # the module: `from iaprune import concatenate` may give the public function of that name
    monkeypatch.setattr(concatenate_module, "atomic_write", refuse)
    monkeypatch.setattr(plotting, "atomic_write", refuse)
    assert cli.run(main, [str(mode)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == \
        f"error: {mode / RESULTS_DIR}: cannot write the results (Read-only file system)\n"


# ---------------------------------------------------------------- kills


def results_bytes(mode: Path) -> dict[str, bytes]:
    """Every file of a mode's results folder, by name."""
    return {p.name: p.read_bytes() for p in sorted((mode / RESULTS_DIR).iterdir())}


def assert_consistent(mode: Path) -> None:
    """concatenate.json vouches for every output by sha256 and recommended.txt is the
    recommendation at its tolerance."""
    out = mode / RESULTS_DIR
    settings = json.loads((out / SETTINGS_FILE).read_text())
    rows, _ = gather(mode, quiet=True)
    assert settings["fingerprint"] == concatenate_module.fingerprint(rows, settings["tolerance"])
    for name in RESULTS_FILES[:-1]:
        assert settings["sha256"][name] == concatenate_module.sha256_of(out / name), name
    best = recommend(rows, settings["tolerance"])[1]
    assert (out / "recommended.txt").read_text() == \
        concatenate_module.session_path(mode, best) + "\n"


def reference_results(tmp_path: Path, vals: list[float], tolerance: float) -> dict[str, bytes]:
    """The results folder of an uninterrupted run at `tolerance` (same session/mode names)."""
    mode = make_mode(tmp_path / f"reference-{tolerance}" / "s" / "iterative_pruning", vals)
    concatenate(mode, tolerance=tolerance, quiet=True)
    return results_bytes(mode)


class Killed(Exception):
    """The injected failure standing for a kill."""


def test_a_concatenate_failing_at_any_write_is_repaired_by_the_next_run(tmp_path, monkeypatch):
    """Whichever write a run dies at, the next run leaves a consistent set identical to an
    uninterrupted run (never "up to date" over a mixed set)."""
    # What is tested is the order of the writes, not the drawing: the plots render as a few
    # fixed bytes (their rendering costs most of this test's ~30 runs otherwise).
    monkeypatch.setattr(Figure, "savefig", lambda fig, buffer, **kw: buffer.write(b"png"))
    vals = [98.0, 97.6, 96.0]
    expected = {t: reference_results(tmp_path, vals, t) for t in (0.5, 2.5)}
    real = concatenate_module.atomic_write
    n = 0
    while True:
        mode = make_mode(tmp_path / f"kill-{n}" / "s" / "iterative_pruning", vals)
        concatenate(mode, tolerance=0.5, quiet=True)  # an older consistent set
        count = 0

        def dying(path, data, n=n):
            nonlocal count
            if count == n:
                raise Killed(str(path))
            count += 1
            return real(path, data)

        monkeypatch.setattr(concatenate_module, "atomic_write", dying)
        monkeypatch.setattr(plotting, "atomic_write", dying)
        try:
            concatenate(mode, tolerance=2.5, quiet=True)
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(concatenate_module, "atomic_write", real)
        monkeypatch.setattr(plotting, "atomic_write", real)
        again = concatenate(mode, quiet=True)
        assert_consistent(mode)
        assert results_bytes(mode) == expected[again.tolerance], n
        if finished:
            break
        n += 1
    assert n == 7  # the json, the table, three plots, recommended.txt, the json


def test_an_edited_output_is_not_taken_as_up_to_date(tmp_path):
    """A results file changed after the run (here recommended.txt) is rewritten by the next."""
    mode = make_mode(tmp_path / "iterative_pruning", [98.0, 97.6, 96.0])
    concatenate(mode, quiet=True)
    recommended = mode / RESULTS_DIR / "recommended.txt"
    right = recommended.read_text()
    recommended.write_text("iterative_pruning/0/prune_w_retrain/best_model.pth\n")
    assert concatenate(mode, quiet=True).written
    assert recommended.read_text() == right


def test_sigkilled_concatenate_commands_leave_what_an_uninterrupted_run_leaves(tmp_path):
    """`python -m iaprune.concatenate` SIGKILLed at random moments: the next run ends with a
    consistent set identical to an uninterrupted run's."""
    vals = [98.0, 97.6, 96.0, 95.0]
    expected = {t: reference_results(tmp_path, vals, t) for t in (0.5, 2.5)}
    command = [sys.executable, "-m", "iaprune.concatenate"]
    mode = make_mode(tmp_path / "timed" / "s" / "iterative_pruning", vals)
    start = time.monotonic()
    subprocess.run([*command, str(mode), "--tolerance", "2.5"], check=True,
                   capture_output=True)
    whole = time.monotonic() - start
    rng = random.Random(26)
    mid_write = []
    for k in range(4):
        mode = make_mode(tmp_path / f"sigkill-{k}" / "s" / "iterative_pruning", vals)
        concatenate(mode, tolerance=0.5, quiet=True)
        proc = subprocess.Popen([*command, str(mode), "--tolerance", "2.5"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.0) * whole)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        again = concatenate(mode, quiet=True)
        mid_write.append(again.written)  # the kill left a set no fingerprint vouched for
        assert_consistent(mode)
        assert {n: b for n, b in results_bytes(mode).items() if not n.endswith(".tmp")} == \
            expected[again.tolerance]
    assert any(mid_write)  # at least one kill landed between the first and the last write


def test_concatenate_command_removes_leftover_temp_files_of_a_session(tmp_path):
    """python -m iaprune.concatenate on a session no run holds removes a killed write's temp
    files from the results folder."""
    mode = make_mode(tmp_path / "s" / "iterative_pruning", [98.0, 97.0])
    (tmp_path / "s" / "config.json").write_text("{}")
    leftover = mode / RESULTS_DIR / ".accuracies.png.0badf00d.tmp"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a png")
    assert main([str(tmp_path / "s")]) == 0
    assert not leftover.exists()


def test_concatenate_command_leaves_the_temp_files_of_a_running_session(tmp_path):
    """While a run holds the session's lock, its temp files are not leftovers: they stay."""
    mode = make_mode(tmp_path / "s" / "iterative_pruning", [98.0, 97.0])
    (tmp_path / "s" / "config.json").write_text("{}")
    live = mode / RESULTS_DIR / ".accuracies.png.0badf00d.tmp"
    live.parent.mkdir()
    live.write_bytes(b"being written")
    with holding(tmp_path / "s" / "session.lock"):
        assert main([str(tmp_path / "s")]) == 0
    assert live.exists()
