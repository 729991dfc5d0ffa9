"""Tests for iaprune.retain: geometric schedules, retain.txt round trip, validation, plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaprune import cli
from iaprune.retain import (
    ScheduleError,
    ScheduleRow,
    format_schedule,
    geometric_schedule,
    main,
    plot_distribution,
    plot_iterations,
    read_schedule,
    write_schedule,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THESIS_256_64 = [(256, 64), (205, 51), (164, 41), (131, 33), (105, 26), (84, 21), (67, 17),
                 (54, 13), (43, 11), (34, 9), (27, 7), (22, 5), (18, 4), (14, 4), (11, 3), (9, 2),
                 (7, 2), (6, 1), (5, 1), (4, 1), (3, 1), (2, 1), (1, 1)]
HEADER = "Iteration h1NodesRetained h2NodesRetained perNodesRetained"
IN_HEADER = "Iteration inNodesRetained h1NodesRetained h2NodesRetained perNodesRetained"


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retain.txt"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- geometric_schedule


def test_default_schedule_reproduces_the_thesis_256_64_rows():
    """The 256/64, q=0.8 schedule is exactly the 23 rows of the thesis (duplicates skipped)."""
    rows = geometric_schedule([256, 64], q=0.8)
    assert [row.neurons for row in rows] == THESIS_256_64


def test_schedule_records_exponent_and_percent():
    """Each row carries its exponent t and 100 * sum(N) / sum(h); skipped exponents leave gaps."""
    rows = geometric_schedule([256, 64])
    assert (rows[0].iteration, rows[0].percent) == (0, 100.0)
    assert (rows[1].iteration, rows[1].percent) == (1, 80.0)
    assert rows[2].percent == pytest.approx(100 * (164 + 41) / 320)
    assert [r.iteration for r in rows[-2:]] == [21, 24]  # t = 22, 23 repeat 2/1 and are skipped


def test_schedule_stops_at_the_all_minimum_row():
    """The last row has every layer at min_neurons and no row goes below it."""
    rows = geometric_schedule([256, 64], min_neurons=4)
    assert rows[-1].neurons == (4, 4)
    assert all(n >= 4 for row in rows for n in row.neurons)


def test_schedule_never_repeats_or_grows():
    """Consecutive rows differ and no layer ever grows."""
    rows = geometric_schedule([300, 100, 50], q=[0.7, 0.8, 0.9])
    for before, after in zip(rows, rows[1:], strict=False):
        assert before.neurons != after.neurons
        assert all(a <= b for a, b in zip(after.neurons, before.neurons, strict=True))


def test_iterations_bounds_the_exponent():
    """With iterations=3 only t = 0, 1, 2 are used."""
    rows = geometric_schedule([256, 64], iterations=3)
    assert [(r.iteration, r.neurons) for r in rows] == [(0, (256, 64)), (1, (205, 51)),
                                                       (2, (164, 41))]


def test_per_layer_q_keeps_a_layer_with_q_one():
    """q per layer: a layer with q = 1 keeps its size while the other shrinks."""
    rows = geometric_schedule([100, 10], q=[0.5, 1.0], iterations=4)
    assert [r.neurons for r in rows] == [(100, 10), (50, 10), (25, 10), (13, 10)]


def test_three_hidden_layers_schedule():
    """Three hidden layers: every row has three counts and the schedule ends all at 1."""
    rows = geometric_schedule([120, 60, 30], q=0.7)
    assert rows[0].neurons == (120, 60, 30)
    assert rows[-1].neurons == (1, 1, 1)
    assert all(len(r.neurons) == 3 for r in rows)


@pytest.mark.parametrize("kwargs", [
    {"hidden": []}, {"hidden": [0, 5]}, {"hidden": [2.5]}, {"hidden": [True]},
    {"hidden": [10, 5], "q": 0.0}, {"hidden": [10, 5], "q": 1.5},
    {"hidden": [10, 5], "q": float("nan")}, {"hidden": [10, 5], "q": 1.0},
    {"hidden": [10, 5], "q": [0.8]}, {"hidden": [10, 5], "iterations": 0},
    {"hidden": [10, 5], "min_neurons": 0}, {"hidden": [10, 5], "min_neurons": 6},
])
def test_geometric_schedule_rejects_bad_arguments(kwargs):
    """Bad hidden sizes, q, iterations or min_neurons raise ValueError."""
    with pytest.raises(ValueError):
        geometric_schedule(**kwargs)


# ---------------------------------------------------------------- retain.txt


def test_written_file_is_seed_compatible(tmp_path):
    """retain.txt starts with the seed header and rows '0 256 64 100', '1 205 51 80'."""
    path = tmp_path / "retain.txt"
    write_schedule(geometric_schedule([256, 64]), path)
    lines = path.read_text().splitlines()
    assert lines[:4] == [HEADER, "0 256 64 100", "1 205 51 80", "2 164 41 64.06"]
    assert lines[-1] == "24 1 1 0.62"


def test_round_trip_two_layers(tmp_path):
    """Reading a written schedule gives back the same rows."""
    rows = geometric_schedule([256, 64])
    write_schedule(rows, tmp_path / "retain.txt")
    assert read_schedule(tmp_path / "retain.txt") == rows


def test_round_trip_three_layers_uses_k_layer_header(tmp_path):
    """Three layers: header h1..h3NodesRetained, and the rows read back unchanged."""
    rows = geometric_schedule([120, 60, 30], q=[0.6, 0.7, 0.8])
    write_schedule(rows, tmp_path / "retain.txt")
    first = (tmp_path / "retain.txt").read_text().splitlines()[0]
    assert first == ("Iteration h1NodesRetained h2NodesRetained h3NodesRetained "
                     "perNodesRetained")
    assert read_schedule(tmp_path / "retain.txt") == rows


def test_read_accepts_integer_percentages_comments_and_blank_lines(tmp_path):
    """A hand-written file with integer-rounded percents, comments and blank lines is valid."""
    path = write_text(tmp_path, f"# my schedule\n{HEADER}\n0 256 64 100\n\n1 205 51 80\n"
                                "2 164 41 64\n")
    rows = read_schedule(path)
    assert [r.neurons for r in rows] == [(256, 64), (205, 51), (164, 41)]
    assert rows[2].percent == pytest.approx(64.0625)  # recomputed from the counts


def test_read_checks_first_row_against_given_hidden_sizes(tmp_path):
    """With hidden=..., a schedule for another network is rejected."""
    path = write_text(tmp_path, f"{HEADER}\n0 256 64 100\n1 205 51 80\n")
    assert len(read_schedule(path, hidden=[256, 64])) == 2
    with pytest.raises(ScheduleError, match=r"retain.txt:2: first row must be the unpruned"):
        read_schedule(path, hidden=[128, 64])


MALFORMED = [
    ("", 1, "empty file"),
    ("Iteration h1 h2 perNodesRetained\n0 256 64 100\n", 1, "header must be"),
    ("Iteration perNodesRetained\n0 100\n", 1, "header must be"),
    (f"{HEADER}\n", 1, "no schedule rows"),
    (f"{HEADER}\n0 256 64 100\n1 205 80\n", 3, "expected 4 columns"),
    (f"{HEADER}\n0 256 64 100\n1 205.5 51 80\n", 3, "h1NodesRetained must be an integer"),
    (f"{HEADER}\n0 256 64 100\n1 205 0 64.06\n", 3, "h2NodesRetained must be >= 1"),
    (f"{HEADER}\n0 256 64 100\n1 -3 51 80\n", 3, "h1NodesRetained must be >= 1"),
    (f"{HEADER}\n0 256 64 100\n1 205 51 80\n2 210 41 78\n", 4, "grows from 205 to 210"),
    (f"{HEADER}\n0 205 51 80\n", 2, "first row must be the unpruned network"),
    (f"{HEADER}\n0 256 64 100\n1 205 51 50\n", 3, "does not match the counts"),
    (f"{HEADER}\n0 256 64 100\n1 205 51 abc\n", 3, "perNodesRetained must be a number"),
    (f"{HEADER}\n0 256 64 100\n1 205 51 nan\n", 3, "perNodesRetained must be a number"),
    (f"{HEADER}\n0 256 64 100\n0 205 51 80\n", 3, "Iteration must increase"),
    (f"{HEADER}\n0 256 64 100\n1 256 64 100\n", 3, "repeats the previous row"),
    (f"{HEADER}\nx 256 64 100\n", 2, "Iteration must be an integer"),
    (f"{IN_HEADER}\n0 784 256 64 100\n1 800 205 51 80\n", 3,
     "inNodesRetained grows from 784 to 800"),
    (f"{IN_HEADER}\n0 784 256 64 100\n1 0 205 51 80\n", 3, "inNodesRetained must be >= 1"),
    (f"{IN_HEADER}\n0 784 256 64 100\n1 205 51 80\n", 3, "expected 5 columns"),
    (f"{IN_HEADER}\n0 784 256 64 100\n1 392 205 51 80\n", 3, "does not match the counts"),
    ("Iteration h1NodesRetained inNodesRetained h2NodesRetained perNodesRetained\n"
     "0 256 784 64 100\n", 1, "header must be"),
]


@pytest.mark.parametrize(("text", "line", "problem"), MALFORMED)
def test_read_rejects_malformed_file_with_one_line_naming_file_and_line(tmp_path, text, line,
                                                                        problem):
    """Every malformed case is a ScheduleError 'FILE:LINE: problem' on one line."""
    path = write_text(tmp_path, text)
    with pytest.raises(ScheduleError) as info:
        read_schedule(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert problem in message
    assert "\n" not in message


def test_read_missing_file_is_a_schedule_error(tmp_path):
    """A missing retain.txt is a one-line ScheduleError naming it."""
    with pytest.raises(ScheduleError, match="no such schedule file"):
        read_schedule(tmp_path / "absent.txt")


def test_schedule_error_is_a_value_error():
    """ScheduleError is a ValueError, so cli.run reports it as one line with exit code 2."""
    assert issubclass(ScheduleError, ValueError)


def test_write_rejects_rows_of_different_widths(tmp_path):
    """Rows with different numbers of layers cannot be written."""
    rows = [ScheduleRow(0, (4, 2), 100.0), ScheduleRow(1, (3,), 50.0)]
    with pytest.raises(ValueError, match="same number of hidden layers"):
        write_schedule(rows, tmp_path / "retain.txt")


# ---------------------------------------------------------------- plots and command line


@pytest.mark.parametrize("hidden", [[40], [40, 20], [40, 20, 10]])
def test_plots_are_written_as_png_files(tmp_path, hidden):
    """Both plots are PNG files for one, two and three hidden layers."""
    rows = geometric_schedule(hidden, q=0.5)
    for plot, name in ((plot_iterations, "it.png"), (plot_distribution, "dist.png")):
        plot(rows, tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_command_writes_the_three_files_and_prints_the_table(tmp_path, capsys):
    """python -m iaprune.retain writes retain.txt and both plots and prints the table."""
    out = tmp_path / "retain"
    assert main(["--hidden", "256", "64", "--out", str(out)]) == 0
    for name in ("retain.txt", "pruneNodesIteration.png", "pruneNodesDistribution.png"):
        assert (out / name).is_file()
    assert read_schedule(out / "retain.txt") == geometric_schedule([256, 64])
    printed = capsys.readouterr().out
    assert format_schedule(geometric_schedule([256, 64]), aligned=True) in printed


def test_command_check_reports_a_bad_file_as_one_line_and_exit_code_2(tmp_path, capsys):
    """--check on a malformed file prints one `error: FILE:LINE: ...` line and exits 2."""
    path = write_text(tmp_path, f"{HEADER}\n0 256 64 100\n1 300 51 80\n")
    assert cli.run(main, ["--check", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:3: h1NodesRetained grows")
    assert err.count("\n") == 1


def test_command_rejects_bad_q_with_exit_code_2(tmp_path, capsys):
    """A q outside (0, 1] is an `error:` line and exit code 2, and nothing is written."""
    assert cli.run(main, ["--q", "1.5", "--out", str(tmp_path / "r")]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith("error: q must be in (0, 1]")
    assert not (tmp_path / "r").exists()


def test_read_a_folder_says_it_is_a_folder(tmp_path):
    """A folder given for retain.txt is called a folder, not a missing file."""
    with pytest.raises(ScheduleError, match="is a folder, not a schedule file"):
        read_schedule(tmp_path)


def test_command_check_on_a_folder_is_one_line_and_exit_code_2(tmp_path, capsys):
    """--check FOLDER (holding a retain.txt) says it is a folder and names the file inside."""
    write_text(tmp_path, f"{HEADER}\n0 256 64 100\n")
    assert cli.run(main, ["--check", str(tmp_path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path}: is a folder, not a schedule file "
                   f"(did you mean {tmp_path / 'retain.txt'}?)\n")


@pytest.mark.parametrize("out", ["README.md", "README.md/retain"])
def test_command_out_on_a_file_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, out):
    """--out naming an existing file (or a path below one) is an `error:` line, exit code 2,
    and the file is left as it was (no FileExistsError traceback)."""
    readme = tmp_path / "README.md"
    readme.write_text("# keep me\n")
    assert cli.run(main, ["--out", str(tmp_path / out)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / out}: ") and "is a file, not a folder" in err
    assert err.count("\n") == 1
    assert readme.read_text() == "# keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md"]


def test_written_files_get_the_usual_permissions(tmp_path, umask):
    """retain.txt and the plots are readable by others under umask 022 (0644), like any file."""
    umask(0o022)
    assert main(["--hidden", "8", "4", "--out", str(tmp_path / "r")]) == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").iterdir()}
    assert modes == {"retain.txt": 0o644, "pruneNodesIteration.png": 0o644,
                     "pruneNodesDistribution.png": 0o644}


# ---------------------------------------------------------------- the input column


def test_input_column_shrinks_with_its_own_q_and_minimum():
    """With inputs, N_in(t) = max(min_inputs, round(784 · 0.7^t)) comes first in every row's
    units, hidden layers follow their own q, and the schedule ends when every column is at its
    minimum; perNodesRetained counts every column."""
    rows = geometric_schedule([256, 64], 0.8, inputs=784, q_inputs=0.7, min_inputs=100)
    assert [r.units for r in rows[:3]] == [(784, 256, 64), (549, 205, 51), (384, 164, 41)]
    assert [r.inputs for r in rows[5:8]] == [132, 100, 100]
    assert rows[-1].units == (100, 1, 1) and rows[-1].neurons == (1, 1)
    assert rows[1].percent == pytest.approx(100 * (549 + 205 + 51) / (784 + 256 + 64))


def test_a_schedule_without_the_input_column_never_prunes_inputs():
    """The rows of every existing schedule have no input count: their units are the hidden
    layers only, as before."""
    rows = geometric_schedule([256, 64])
    assert all(r.inputs is None and r.units == r.neurons for r in rows)


def test_inputs_alone_can_be_pruned():
    """q = 1 for the hidden layers and q_inputs < 1 prunes only the input features."""
    rows = geometric_schedule([16, 8], 1.0, iterations=4, inputs=64, q_inputs=0.5)
    assert [r.units for r in rows] == [(64, 16, 8), (32, 16, 8), (16, 16, 8), (8, 16, 8)]


def test_the_input_column_shrinks_like_the_first_hidden_layer_unless_told():
    """Without q_inputs the inputs keep the first hidden layer's fraction per step."""
    rows = geometric_schedule([256, 64], [0.9, 0.8], iterations=3, inputs=784)
    assert [r.inputs for r in rows] == [784, 706, 635]


@pytest.mark.parametrize("kwargs", [
    {"inputs": 0}, {"inputs": 64, "q_inputs": 0.0}, {"inputs": 64, "q_inputs": 1.2},
    {"inputs": 64, "min_inputs": 0}, {"inputs": 64, "min_inputs": 65},
    {"inputs": 64, "q_inputs": 1.0, "q": 1.0},
])
def test_input_column_arguments_are_checked(kwargs):
    """Bad input count, q_inputs or min_inputs, or nothing pruned at all, is a ValueError."""
    with pytest.raises(ValueError):
        geometric_schedule([16, 8], **{"q": 0.8, **kwargs})


def test_input_column_round_trip(tmp_path):
    """A schedule with the input column is written with inNodesRetained first after Iteration
    and reads back the same."""
    rows = geometric_schedule([256, 64], inputs=784, q_inputs=0.7, min_inputs=64)
    write_schedule(rows, tmp_path / "retain.txt")
    lines = (tmp_path / "retain.txt").read_text().splitlines()
    assert lines[:3] == [IN_HEADER, "0 784 256 64 100", "1 549 205 51 72.92"]
    assert read_schedule(tmp_path / "retain.txt") == rows


def test_command_adds_the_input_column(tmp_path, capsys):
    """--inputs 784 --q-inputs 0.7 --min-inputs 64 writes the input column and both plots."""
    out = tmp_path / "r"
    assert main(["--inputs", "784", "--q-inputs", "0.7", "--min-inputs", "64", "--out",
                 str(out)]) == 0
    rows = read_schedule(out / "retain.txt")
    assert rows == geometric_schedule([256, 64], inputs=784, q_inputs=0.7, min_inputs=64)
    assert (out / "pruneNodesDistribution.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "inNodesRetained" in capsys.readouterr().out


def test_command_input_flags_without_inputs_are_one_line_and_write_nothing(tmp_path, capsys):
    """--q-inputs or --min-inputs without --inputs is an error line, exit 2, nothing written."""
    for flags in (["--q-inputs", "0.7"], ["--min-inputs", "50"]):
        assert cli.run(main, [*flags, "--out", str(tmp_path / "r")]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("error: --q-inputs and --min-inputs") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
