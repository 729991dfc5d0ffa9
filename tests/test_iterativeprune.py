"""The IterativePruning engine end to end on the offline digits set (tiny MLP, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src import cli
from src import data as data_module
from src.checkpoint import load_model, save_checkpoint
from src.concatenate import VALIDATION_COLUMNS, read_validation_results
from src.iterativeprune import IterativePruning, PruneConfig, main
from src.model import build_model
from src.retain import ScheduleRow, write_schedule
from src.trainer import TRAIN_COLUMNS

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
            list(TRAIN_COLUMNS)
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
        assert model.sizes == [64, *row, 10] and meta["iteration"] == i


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
    assert "--criterion magnitude" in err
    assert results(session / "iterative_pruning") == before


def test_schedule_first_row_must_match_hidden(tmp_path, retain, capsys):
    """A schedule for other hidden sizes is a one-line error and nothing is written."""
    err = error_of(capsys, *FAST[:2], "--hidden", "20", "8", "--retain", retain,
                   "--session", tmp_path / "s")
    assert "does not match --hidden 20-8" in err and not (tmp_path / "s").exists()


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
    ckpt = save_checkpoint(tmp_path / "other.pth", build_model([64, 20, 8, 10], seed=0),
                           dataset="digits")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", ckpt)
    assert "other.pth" in err


def test_base_model_of_other_dataset_is_refused(tmp_path, retain, capsys):
    """--base-model trained on another dataset is refused."""
    ckpt = save_checkpoint(tmp_path / "m.pth", build_model([64, 16, 8, 10], seed=0),
                           dataset="fashion-mnist")
    err = error_of(capsys, *FAST, "--retain", retain, "--session", tmp_path / "s",
                   "--base-model", ckpt)
    assert "fashion-mnist" in err


def test_base_model_is_used_as_iteration_zero(tmp_path, retain):
    """A fitting --base-model becomes iteration 0 without training."""
    model = build_model([64, 16, 8, 10], seed=3)
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
    save_checkpoint(ckpt, build_model([64, 4, 2, 10], seed=0), dataset="digits")
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
    assert saved["retrain_label_smoothing"] == 0.05 and saved["label_smoothing"] == 0.1


def test_session_from_before_newer_settings_resumes_as_it_ran():
    """A config.json written before these settings existed ran with smoothing 0.1 throughout,
    retrained at the base batch size and decayed the lr by a cosine over its epoch caps."""
    values = PruneConfig().to_json()
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
