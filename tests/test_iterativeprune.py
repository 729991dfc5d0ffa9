"""The IterativePruning engine end to end on the offline digits set (tiny MLP, seconds)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import iaprune.concatenate as concatenate_module
from iaprune import cli, plotting
from iaprune import data as data_module
from iaprune.checkpoint import load_model, save_checkpoint
from iaprune.config import PruneConfig, Scoring, Training, flat
from iaprune.engine import IterativePruning
from iaprune.files import holding
from iaprune.groups import units
from iaprune.iterativeprune import main
from iaprune.model import mlp_net
from iaprune.records import EPOCH_COLUMNS, VALIDATION_COLUMNS, read_validation_results
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.trainer import TrainingError, auto_batch_size

ROWS = [(16, 8), (12, 6), (8, 4)]
FAST = ["--dataset", "digits", "--hidden", "16", "8", "--epochs", "3", "--retrain-epochs", "2",
        "--batch-size", "64", "--quiet"]


@pytest.fixture
def retain(tmp_path) -> Path:
    """A 3-row schedule for a 16-8 network."""
    path = tmp_path / "retain.txt"
    total = sum(ROWS[0])
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / total) for t, r in enumerate(ROWS)], path)
    return path


def run(*argv) -> int:
    return cli.run(main, [str(a) for a in argv])


def results(mode_dir: Path) -> dict[int, str]:
    """validation_results.txt text of every iteration folder."""
    return {int(p.parts[-3]): p.read_text()
            for p in mode_dir.glob("*/prune_w_retrain/validation_results.txt")}


def test_three_row_run_writes_every_file(tmp_path, retain):
    """A full run writes config, schedule copy, each iteration's four files and the results."""
    session = tmp_path / "s"
    assert run(*FAST, "--retain", retain, "--session", session) == 0
    assert json.loads((session / "config.json").read_text())["hidden"] == [16, 8]
    assert (session / "retain" / "retain.txt").read_text() == retain.read_text()
    mode = session / "iterative_pruning"
    for i in range(3):
        folder = mode / str(i) / "prune_w_retrain"
        assert sorted(p.name for p in folder.iterdir()) == [
            "best_model.pth", "summary.txt", "train_results.txt", "validation_results.txt"]
        header, row = (folder / "validation_results.txt").read_text().splitlines()
        assert header.split() == list(VALIDATION_COLUMNS) and len(row.split()) == 11
        assert (folder / "train_results.txt").read_text().split("\n")[0].split() == \
            list(EPOCH_COLUMNS)
        assert "Total" in (folder / "summary.txt").read_text()
    for name in ("validations.txt", "accuracies.png", "losses.png", "recommended.txt"):
        assert (mode / "prune_w_retrain_results" / name).is_file()


def test_pruned_sizes_follow_the_schedule(tmp_path, retain):
    """Iteration i's kept model has exactly schedule row i's hidden sizes."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    for i, row in enumerate(ROWS):
        model, meta = load_model(session / "iterative_pruning" / str(i) / "prune_w_retrain" /
                                 "best_model.pth")
        assert units(model) == list(row) and meta["iteration"] == i


def test_one_shot_mode_writes_its_own_folder(tmp_path, retain):
    """--mode one-shot prunes the base model to each row under one_shot_pruning/."""
    session = tmp_path / "s"
    assert run(*FAST, "--retain", retain, "--session", session, "--mode", "one-shot") == 0
    assert sorted(results(session / "one_shot_pruning")) == [0, 1, 2]


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, retain, monkeypatch):
    """A run that dies in iteration 2 and is resumed gives identical results."""
    run(*FAST, "--retain", retain, "--session", tmp_path / "whole")
    original = IterativePruning.run_iteration

    def crash(self, i):
        if i == 2:
            raise RuntimeError("power loss")
        return original(self, i)

    monkeypatch.setattr(IterativePruning, "run_iteration", crash)
    with pytest.raises(RuntimeError):
        run(*FAST, "--retain", retain, "--session", tmp_path / "crashed")
    mode = tmp_path / "crashed" / "iterative_pruning"
    assert sorted(results(mode)) == [0, 1] and not (mode / "2").exists()
    monkeypatch.setattr(IterativePruning, "run_iteration", original)
    assert run("--session", tmp_path / "crashed", "--quiet") == 0
    assert results(mode) == results(tmp_path / "whole" / "iterative_pruning")


def test_begin_itr_redoes_from_k_identically(tmp_path, retain):
    """--begin-itr 1 recomputes iterations 1.. from iteration 0's checkpoint, same numbers."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    before = results(session / "iterative_pruning")
    stamp = (session / "iterative_pruning" / "1" / "prune_w_retrain" / "best_model.pth")
    mtime = stamp.stat().st_mtime_ns
    assert run("--session", session, "--begin-itr", "1", "--quiet") == 0
    assert stamp.stat().st_mtime_ns != mtime
    assert results(session / "iterative_pruning") == before


def test_interrupt_discards_the_unfinished_iteration(tmp_path, retain, monkeypatch, capsys):
    """Ctrl+C exits 130, leaves no partial files and says how to resume."""
    original = IterativePruning.run_iteration

    def interrupt(self, i):
        if i == 1:
            (self.session.partial(1)).mkdir(parents=True, exist_ok=True)
            (self.session.partial(1) / "best_model.pth").write_bytes(b"half")
            raise KeyboardInterrupt
        return original(self, i)

    monkeypatch.setattr(IterativePruning, "run_iteration", interrupt)
    assert run(*FAST, "--retain", retain, "--session", tmp_path / "s") == 130
    mode = tmp_path / "s" / "iterative_pruning"
    assert sorted(p.name for p in mode.iterdir()) == ["0"]
    assert "--session" in capsys.readouterr().err


def test_completed_session_reports_instead_of_rerunning(tmp_path, retain, capsys):
    """Running a finished session again changes nothing and says how to redo."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    before = results(session / "iterative_pruning")
    assert run("--session", session, "--quiet") == 0
    assert "--begin-itr" in capsys.readouterr().out
    assert results(session / "iterative_pruning") == before


def test_max_accuracy_drop_stops_the_run(tmp_path):
    """Once validation accuracy falls more than the limit below the base, the run stops."""
    extreme = tmp_path / "extreme.txt"  # 16-8 straight down to 2-1: no 2-1 net keeps accuracy
    write_schedule([ScheduleRow(0, (16, 8), 100.0), ScheduleRow(1, (2, 1), 12.5),
                    ScheduleRow(2, (1, 1), 8.33)], extreme)
    session = tmp_path / "s"
    assert run(*FAST, "--retain", extreme, "--session", session, "--retrain-epochs", "0",
               "--epochs", "15", "--max-accuracy-drop", "5") == 0
    base = read_validation_results(session / "iterative_pruning/0/prune_w_retrain/"
                                   "validation_results.txt")
    first = read_validation_results(session / "iterative_pruning/1/prune_w_retrain/"
                                    "validation_results.txt")
    assert first["Val_Accuracy"] < base["Val_Accuracy"] - 5  # the premise of this test
    assert sorted(results(session / "iterative_pruning")) == [0, 1]


# ------------------------------------------------------------------------------ bad input
def error_of(capsys, *argv) -> str:
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_conflicting_flags_on_resume_are_refused(tmp_path, retain, capsys):
    """Resuming with another setting is refused and the session is left alone."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    before = results(session / "iterative_pruning")
    err = error_of(capsys, "--session", session, "--criterion", "magnitude")
    assert "--criterion magnitude (the session has interval_adjoint)" in err
    assert results(session / "iterative_pruning") == before


def test_schedule_first_row_must_match_hidden(tmp_path, retain, capsys):
    """A schedule for other hidden sizes is a one-line error and nothing is written."""
    err = error_of(capsys, *FAST[:2], "--hidden", "20", "8", "--retain", retain,
                   "--session", tmp_path / "s")
    assert "does not match the model's units 20-8" in err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag, value", [("--criterion", "entropy"), ("--dataset", "cifar"),
                                         ("--mode", "greedy"), ("--bias-fold", "max"),
                                         ("--measure", "mid"), ("--lr-schedule", "step")])
def test_unknown_choices_are_one_line_errors(tmp_path, capsys, flag, value):
    """Unknown criterion/dataset/mode/fold names list the valid ones."""
    err = error_of(capsys, flag, value, "--session", tmp_path / "s")
    assert value in err and "choose from" in err


def test_folder_that_is_not_a_session_is_refused(tmp_path, retain, capsys):
    """A non-empty folder without config.json is not touched."""
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "thesis.pdf").write_text("x")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", folder)
    assert "not a session folder" in err
    assert [p.name for p in folder.iterdir()] == ["thesis.pdf"]


def test_base_model_of_other_architecture_is_refused(tmp_path, retain, capsys):
    """--base-model with other sizes is refused before anything is written."""
    ckpt = save_checkpoint(tmp_path / "other.pth", mlp_net([64, 20, 8, 10], seed=0),
                           dataset="digits")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", ckpt)
    assert "other.pth" in err


def test_base_model_of_other_dataset_is_refused(tmp_path, retain, capsys):
    """--base-model trained on another dataset is refused."""
    ckpt = save_checkpoint(tmp_path / "m.pth", mlp_net([64, 16, 8, 10], seed=0),
                           dataset="fashion-mnist")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", ckpt)
    assert "fashion-mnist" in err


@pytest.mark.parametrize("flag", ["--base-model", "--retain"])
def test_a_folder_given_for_a_file_flag_says_it_is_a_folder(tmp_path, retain, capsys, flag):
    """--base-model FOLDER and --retain FOLDER say the path is a folder, not that it is missing."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    argv = [*FAST, "--session", tmp_path / "s", flag, folder]
    if flag != "--retain":
        argv += ["--retain", retain]
    err = error_of(capsys, *argv)
    assert f"{folder}: is a folder, not a " in err and "no such" not in err


def test_base_model_is_used_as_iteration_zero(tmp_path, retain):
    """A fitting --base-model becomes iteration 0 without training."""
    model = mlp_net([64, 16, 8, 10], seed=3)
    ckpt = save_checkpoint(tmp_path / "m.pth", model, dataset="digits")
    assert run(*FAST, "--retain", retain, "--session", tmp_path / "s", "--base-model", ckpt) == 0
    base, _ = load_model(tmp_path / "s" / "iterative_pruning" / "0" / "prune_w_retrain" /
                         "best_model.pth")
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                 model.state_dict().values(), strict=True))


def test_corrupt_checkpoint_on_begin_itr_is_refused_and_kept(tmp_path, retain, capsys):
    """--begin-itr K with a corrupt K-1 checkpoint: one-line error, nothing overwritten."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    ckpt = session / "iterative_pruning" / "1" / "prune_w_retrain" / "best_model.pth"
    ckpt.write_bytes(b"garbage")
    before = results(session / "iterative_pruning")
    err = error_of(capsys, "--session", session, "--begin-itr", "2", "--quiet")
    assert "best_model.pth" in err
    assert results(session / "iterative_pruning") == before and ckpt.read_bytes() == b"garbage"


def test_checkpoint_not_matching_schedule_row_is_refused(tmp_path, retain, capsys):
    """A K-1 checkpoint whose sizes differ from schedule row K-1 is refused on --begin-itr."""
    session = tmp_path / "s"
    run(*FAST, "--retain", retain, "--session", session)
    ckpt = session / "iterative_pruning" / "1" / "prune_w_retrain" / "best_model.pth"
    save_checkpoint(ckpt, mlp_net([64, 4, 2, 10], seed=0), dataset="digits")
    err = error_of(capsys, "--session", session, "--begin-itr", "2", "--quiet")
    assert "do not match schedule row 1" in err


def test_missing_dataset_offline_is_one_line(tmp_path, capsys, monkeypatch):
    """MNIST absent and no mirror reachable: one-line error, no session written."""
    source = data_module.IdxSource("MNIST", ("http://127.0.0.1:9/",),
                                   data_module.SOURCES["mnist"].gz_md5)
    monkeypatch.setitem(data_module.SOURCES, "mnist", source)
    err = error_of(capsys, "--data-root", tmp_path / "nodata", "--session", tmp_path / "s",
                   "--quiet")
    assert "MNIST" in err and not (tmp_path / "s").exists()


def test_label_smoothing_applies_to_base_training_only_by_default(tmp_path, retain):
    """Base training smooths labels, retraining does not; both are flags saved to config.json."""
    config = PruneConfig()
    assert config.train_config(0).label_smoothing == 0.1
    assert config.train_config(3).label_smoothing == 0.0
    session = tmp_path / "s"
    assert run(*FAST, "--retain", retain, "--session", session,
               "--retrain-label-smoothing", "0.05") == 0
    saved = json.loads((session / "config.json").read_text())
    assert saved["retraining"]["label_smoothing"] == 0.05
    assert saved["training"]["label_smoothing"] == 0.1


def test_session_from_before_newer_settings_resumes_as_it_ran():
    """A config.json written before these settings existed ran with smoothing 0.1 throughout,
    retrained at the base batch size and decayed the lr by a cosine over its epoch caps."""
    values = flat(PruneConfig())  # the flat config.json of earlier versions
    del values["label_smoothing"], values["retrain_label_smoothing"], values["retrain_batch_size"]
    del values["lr_schedule"]
    config = PruneConfig.from_json(values, "config.json")
    assert config.train_config(0).label_smoothing == config.train_config(1).label_smoothing == 0.1
    assert config.train_config(1).batch_size == config.train_config(0).batch_size == 256
    assert config.train_config(0).schedule == config.train_config(1).schedule == "cosine"


def test_training_stops_on_a_plateau_by_default_with_caps_as_safety_limits():
    """New sessions use the plateau schedule, with the epoch caps only as safety limits far
    above what training needs (MNIST's reference run stops after 25 base epochs and at most
    19 per retraining)."""
    for config in (PruneConfig(), PruneConfig(dataset="digits")):
        base, retrain = config.train_config(0), config.train_config(1)
        assert base.schedule == retrain.schedule == "plateau"
        assert (base.epochs, retrain.epochs) == (100, 50)
        assert (base.patience, retrain.patience) == (6, 3)


def test_retraining_has_its_own_batch_size_and_lr():
    """MNIST retrains at batch 512 and lr 7e-3; digits keeps its small batches."""
    mnist, digits = PruneConfig(), PruneConfig(dataset="digits")
    assert (mnist.train_config(0).batch_size, mnist.train_config(1).batch_size) == (256, 512)
    assert mnist.train_config(1).lr == 7e-3
    assert digits.train_config(1).batch_size == 32 and digits.train_config(1).lr == 5e-3


def test_your_own_data_takes_about_32_batches_an_epoch():
    """Your own data leaves the batch sizes to the trainer: about 32 batches an epoch, 16 to
    256 (512 retraining), a rule that gives the built-in sets their own sizes; a table of 150
    rows is not trained one step an epoch. A size given is kept."""
    own = PruneConfig(dataset="/data/table.csv")
    assert own.train_config(0).batch_size is None and own.train_config(1).batch_size is None
    assert [auto_batch_size(n, own.train_config(0).batch_cap) for n in (150, 1257, 55000)] == \
        [16, PruneConfig(dataset="digits").training.batch_size, PruneConfig().training.batch_size]
    assert auto_batch_size(55000, own.train_config(1).batch_cap) == \
        PruneConfig().retraining.batch_size
    chosen = PruneConfig(dataset="/data/table.csv", training=Training(batch_size=64))
    assert chosen.train_config(0).batch_size == 64


# ------------------------------------------------------------------ session robustness (issue 13)
@pytest.fixture(scope="module")
def finished_session(tmp_path_factory) -> tuple[Path, Path]:
    """(session, schedule): a finished 3-row session, run once for the tests that copy it."""
    root = tmp_path_factory.mktemp("finished")
    schedule = root / "retain.txt"
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / sum(ROWS[0])) for t, r in enumerate(ROWS)],
                   schedule)
    assert run(*FAST, "--retain", schedule, "--session", root / "s") == 0
    return root / "s", schedule


@pytest.fixture
def finished(tmp_path, finished_session) -> Path:
    """A private copy of the finished session."""
    return Path(shutil.copytree(finished_session[0], tmp_path / "s"))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time (not session.lock, which
    names whoever runs the session)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "session.lock"}


def test_base_model_of_other_hidden_sizes_writes_nothing(tmp_path, retain, capsys):
    """A --base-model of other hidden sizes is refused before config.json is written, so the
    corrected command then starts the session."""
    other = save_checkpoint(tmp_path / "other.pth", mlp_net([64, 20, 8, 10], seed=0),
                            dataset="digits")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", other)
    assert "hidden sizes 20-8" in err and "--hidden 16 8" in err
    assert not (tmp_path / "s").exists()
    good = save_checkpoint(tmp_path / "good.pth", mlp_net([64, 16, 8, 10], seed=0),
                           dataset="digits")
    assert run(*FAST, "--retain", retain, "--session", tmp_path / "s", "--base-model", good) == 0


def test_criterion_that_needs_relu_is_refused_before_training(tmp_path, retain, capsys,
                                                              monkeypatch):
    """--criterion apoz --activation tanh fails at once: apoz counts exact zeros, which only
    ReLU produces; no base model is trained and nothing is written."""
    monkeypatch.setattr(IterativePruning, "run_base", lambda self: pytest.fail("trained"))
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--criterion", "apoz", "--activation", "tanh")
    assert "--criterion apoz needs --activation relu" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="apoz"):
        PruneConfig(activation="sigmoid", scoring=Scoring(criterion="apoz"))


def test_bad_retraining_settings_are_refused_before_training(tmp_path, retain, capsys,
                                                             monkeypatch):
    """Retraining's settings are checked before the base model is trained."""
    monkeypatch.setattr(IterativePruning, "run_base", lambda self: pytest.fail("trained"))
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--retrain-patience", "0")
    assert "retraining" in err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "99999999999999999999", "--seed must be an integer between -2**40 and 2**40"),
    ("--shift", "100", "--shift 100 would move the 8x8 digits images out of view"),
    ("--retrain-shift", "8", "--retrain-shift 8 would move the 8x8 digits images out of view")])
def test_settings_that_would_fail_inside_training_are_refused_first(tmp_path, retain, capsys,
                                                                    flag, value, message):
    """A seed beyond torch's 64-bit seeds (an overflow traceback in the first training) and an
    image shift as large as the image (a crop traceback in the first batch) are one-line
    errors before anything is written."""
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s", flag, value)
    assert message in err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--session", "--tensorboard", "--mlflow"])
def test_a_folder_below_a_file_is_refused_and_nothing_written(tmp_path, retain, capsys, flag):
    """--session, --tensorboard DIR and --mlflow sqlite:///DIR/x.db below an existing file are
    one-line errors naming the file (were NotADirectoryError/FileExistsError tracebacks), and
    nothing is written."""
    (tmp_path / "notes").write_text("x")
    below = tmp_path / "notes" / "sub"
    session = below if flag == "--session" else tmp_path / "s"
    extra = {"--session": [], "--tensorboard": ["--tensorboard", below],
             "--mlflow": ["--mlflow", f"sqlite:///{below / 'x.db'}"]}[flag]
    err = error_of(capsys, *FAST, "--retain", retain, "--session", session, *extra)
    assert str(tmp_path / "notes") in err and "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "retain.txt"]
    assert (tmp_path / "notes").read_text() == "x"


def fail_base_training(monkeypatch) -> None:
    def diverge(self):
        raise TrainingError("training diverged")
    monkeypatch.setattr(IterativePruning, "run_base", diverge)


def test_session_without_complete_iteration_starts_again_with_other_settings(
        tmp_path, retain, capsys, monkeypatch):
    """A start that failed after config.json was written does not lock the session: a command
    with other settings replaces its config.json and runs."""
    session = tmp_path / "s"
    fail_base_training(monkeypatch)
    error_of(capsys, *FAST, "--retain", retain, "--session", session)
    assert (session / "config.json").is_file()
    monkeypatch.undo()
    assert run(*FAST, "--retain", retain, "--session", session, "--epochs", "2") == 0
    assert json.loads((session / "config.json").read_text())["training"]["epochs"] == 2
    assert "starting it again" in capsys.readouterr().out
    assert sorted(results(session / "iterative_pruning")) == [0, 1, 2]


def test_session_without_complete_iteration_resumes_its_own_settings(tmp_path, retain, capsys,
                                                                     monkeypatch):
    """`--session S` alone after a failed start runs with the settings S was started with."""
    session = tmp_path / "s"
    fail_base_training(monkeypatch)
    error_of(capsys, *FAST, "--retain", retain, "--session", session)
    config = (session / "config.json").read_text()
    monkeypatch.undo()
    assert run("--session", session, "--quiet") == 0
    assert (session / "config.json").read_text() == config
    model, _ = load_model(session / "iterative_pruning/2/prune_w_retrain/best_model.pth")
    assert units(model) == list(ROWS[2])


def test_rerunning_the_exact_command_resumes(finished, finished_session, capsys):
    """The command that started a session, --retain included, resumes it (up-arrow, enter)."""
    assert run(*FAST, "--retain", finished_session[1], "--session", finished) == 0
    assert "all 3 iterations are complete" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [
    ["--hidden", "16", "8"], ["--dataset", "digits"], ["--lr", "0.003"], ["--lr", "3e-3"],
    ["--val-size", "180"], ["--retrain-lr", "5e-3"], ["--epochs", "3"], ["--distill", "0"],
    ["--retain", "COPY"]])
def test_flags_equal_to_the_sessions_settings_are_accepted(finished, flags, capsys):
    """A flag whose value is the session's setting, however written, is no conflict (--retain:
    another file with the same rows; --val-size: the dataset's default the session ran with)."""
    if flags == ["--retain", "COPY"]:
        flags = ["--retain", shutil.copy(finished / "retain" / "retain.txt",
                                         finished.parent / "copy.txt")]
    assert run("--session", finished, "--quiet", *flags) == 0, capsys.readouterr().err


def test_base_model_given_by_another_path_of_the_same_file_resumes(tmp_path, retain,
                                                                   monkeypatch):
    """--base-model as a relative path, then as an absolute one: the same file, no conflict."""
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pth", mlp_net([64, 16, 8, 10], seed=3), dataset="digits")
    assert run(*FAST, "--retain", retain, "--session", "s", "--base-model", "m.pth") == 0
    assert run(*FAST, "--retain", retain, "--session", "s",
               "--base-model", tmp_path / "m.pth") == 0


def test_another_schedule_is_a_conflict_naming_the_row(finished, tmp_path, capsys):
    """--retain with other rows than the session's schedule is refused, saying where."""
    other = tmp_path / "other.txt"
    write_schedule([ScheduleRow(0, (16, 8), 100.0), ScheduleRow(1, (10, 5), 62.5)], other)
    err = error_of(capsys, "--session", finished, "--retain", other)
    assert f"--retain {other} (row 1 keeps 10-5, the session's 12-6" in err


def test_begin_itr_on_a_new_session_says_it_has_no_iteration(tmp_path, retain, capsys):
    """--begin-itr 2 on a new session explains itself (no 'last complete iteration is -1')."""
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--begin-itr", "2")
    assert "no complete iteration yet" in err and "iteration is -1" not in err
    assert not (tmp_path / "s").exists()


def test_bad_hidden_size_is_reported_as_typed(tmp_path, capsys):
    """--hidden 0 64 is reported as `0 64`, not as the internal [1, 0, 64, 1]."""
    err = error_of(capsys, "--dataset", "digits", "--hidden", "0", "64",
                   "--session", tmp_path / "s")
    assert "got 0 64" in err and "[1, 0, 64, 1]" not in err


def test_rerunning_a_finished_session_rewrites_nothing(finished):
    """A finished session run again writes no file: an archived copy can be re-run as it is."""
    before = snapshot(finished)
    assert run("--session", finished, "--quiet") == 0
    assert snapshot(finished) == before


def test_finished_session_that_cannot_be_written_is_a_note(finished, capsys, monkeypatch):
    """Results that need rewriting in a read-only session: a note and exit code 0."""
    (finished / "iterative_pruning/prune_w_retrain_results/validations.txt").unlink()

    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(concatenate_module, "atomic_write", refuse)
    monkeypatch.setattr(plotting, "atomic_write", refuse)
    assert run("--session", finished, "--quiet") == 0
    assert "not updated (Permission denied)" in capsys.readouterr().out


def test_tolerance_chosen_with_concatenate_survives_a_rerun(finished, capsys):
    """The tolerance given to iaprune.concatenate is kept by the engine's next run."""
    assert concatenate_module.main([str(finished), "--tolerance", "100"]) == 0
    capsys.readouterr()
    assert run("--session", finished) == 0
    assert "(tolerance 100 pt)" in capsys.readouterr().out
    results_dir = finished / "iterative_pruning" / "prune_w_retrain_results"
    assert json.loads((results_dir / "concatenate.json").read_text())["tolerance"] == 100
    assert (results_dir / "recommended.txt").read_text().startswith("iterative_pruning/2/")


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such architecture file"),
    ("{not json", "not valid JSON"),
    ('[{"type": "conv2d", "out": 4}]', "conv2d needs 'kernel'"),
])
def test_a_bad_architecture_file_is_one_line_and_writes_nothing(tmp_path, capsys, content,
                                                                message):
    """--arch FILE that is missing, not JSON or not a valid spec: one `error:` line, exit 2."""
    arch = tmp_path / "arch.json"
    if content is not None:
        arch.write_text(content)
    err = error_of(capsys, "--dataset", "digits", "--arch", arch, "--session", tmp_path / "s")
    assert message in err and not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------ hardening
def test_a_nan_base_model_is_refused_and_writes_nothing(tmp_path, retain, capsys):
    """A --base-model with NaN weights is one line naming it, before config.json or retain/
    exist (the session folder is not even created)."""
    model = mlp_net([64, 16, 8, 10], seed=0)
    with torch.no_grad():
        model.state_dict()[next(iter(model.state_dict()))][0, 0] = float("nan")
    ckpt = save_checkpoint(tmp_path / "nan.pth", model, dataset="digits")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", ckpt)
    assert "nan.pth" in err and "non-finite" in err
    assert not (tmp_path / "s").exists()


def test_leftover_temp_files_of_a_killed_run_are_removed_by_the_next(finished):
    """Temp files of killed atomic writes (.<name>.<8 hex>.tmp) in the session, retain/, the
    iteration and results folders go on the next run; other files stay."""
    leftovers = [finished / ".config.json.0a1b2c3d.tmp",
                 finished / "retain" / ".retain.txt.deadbeef.tmp",
                 finished / "iterative_pruning" / "1" / "prune_w_retrain" /
                 ".best_model.pth.12345678.tmp",
                 finished / "iterative_pruning" / "prune_w_retrain_results" /
                 ".losses.png.9abcdef0.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    mine = finished / ".notes.tmp"
    mine.write_text("not ours")
    assert run(*FAST, "--session", finished) == 0
    assert not any(p.exists() for p in leftovers) and mine.exists()


def test_a_session_in_use_is_refused_naming_the_holder(finished, capsys):
    """A second run on a session whose lock is held is one line naming the holder's pid and
    command, and writes nothing."""
    before = snapshot(finished)
    with holding(finished / "session.lock"):
        err = error_of(capsys, *FAST, "--session", finished)
    assert f"in use by pid {os.getpid()} " in err and "pytest" in err and "--wait" in err
    assert snapshot(finished) == before


def hold_lock_process(lock: Path, seconds: float) -> subprocess.Popen:
    """A process holding `lock` for `seconds` (after printing 'held')."""
    code = ("import sys, time; from pathlib import Path; from iaprune.files import holding\n"
            "with holding(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_wait_runs_once_the_holder_is_done(finished):
    """With --wait, a run on a session in use waits for the holder, then runs."""
    holder = hold_lock_process(finished / "session.lock", 3.0)
    held = time.monotonic()  # the holder keeps the lock for 3 s from its 'held'
    assert run(*FAST, "--session", finished, "--wait") == 0
    assert time.monotonic() - held >= 3.0  # it ran only after the holder let go
    holder.wait()


def test_a_killed_holders_lock_is_taken_over(finished):
    """The lock of a SIGKILLed run is free: the next run proceeds without --wait."""
    holder = hold_lock_process(finished / "session.lock", 600.0)
    holder.kill()
    holder.wait()
    assert (finished / "session.lock").read_text().split()[1] == str(holder.pid)
    assert run(*FAST, "--session", finished) == 0


def test_a_read_only_session_runs_without_its_lock(finished, monkeypatch):
    """A session where the lock file cannot be created (read-only) still re-runs: no other
    run can write there either."""
    import iaprune.session as session_module

    def refuse(lock, wait=True):
        raise PermissionError(errno.EROFS, "Read-only file system", str(lock))

    monkeypatch.setattr(session_module, "holding", refuse)
    assert run("--session", finished, "--quiet") == 0
