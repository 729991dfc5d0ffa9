"""The engine as a library on any spec network: the run(config, session) API, sessions of the
previous version, a user's own model pruned and loaded back, and a CNN end to end (digits)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import iaprune_runtime as deploy
from iaprune import cli
from iaprune.checkpoint import load_model, save_checkpoint
from iaprune.config import PruneConfig, Retraining, Scoring, Training, flat
from iaprune.data import load_dataset
from iaprune.engine import Results, run
from iaprune.errors import UserError
from iaprune.groups import units
from iaprune.iterativeprune import main
from iaprune.model import from_module
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.validator import main as validator_main
from iaprune_runtime.__main__ import main as deploy_main

FAST = PruneConfig(dataset="digits", hidden=(16, 8), training=Training(epochs=3, batch_size=64),
                   retraining=Retraining(epochs=2))
ROWS = [(16, 8), (12, 6), (8, 4)]


def schedule(tmp_path: Path, rows=ROWS) -> Path:
    total = sum(rows[0])
    path = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / total) for t, r in enumerate(rows)], path)
    return path


def results(mode_dir: Path) -> dict[int, str]:
    return {int(p.parts[-3]): p.read_text()
            for p in mode_dir.glob("*/prune_w_retrain/validation_results.txt")}


def validated_bundle(capsys, checkpoint: Path, meta: dict, tmp_path: Path) -> Path:
    """The validator re-evaluates `checkpoint` to its recorded test accuracy; then it is
    bundled into tmp_path/bundle (returned)."""
    capsys.readouterr()
    assert cli.run(validator_main, [str(checkpoint)]) == 0
    test_line = capsys.readouterr().out.splitlines()[-1].split()
    assert float(test_line[-1]) == round(meta["metrics"]["test_accuracy"], 2)
    bundle = tmp_path / "bundle"
    assert deploy_main(["bundle", str(checkpoint), "--out", str(bundle)]) == 0
    return bundle


def quiet(line: str) -> None:
    pass


def test_run_returns_the_rows_and_the_recommendation(tmp_path):
    """run(config, session) is the whole engine: rows per iteration, the recommended model."""
    result = run(FAST, tmp_path / "s", retain=schedule(tmp_path), quiet=True, log=quiet)
    assert [r["Hidden"] for r in result.rows] == ["16-8", "12-6", "8-4"]
    assert result.recommended.is_file() and not result.resumed
    again = run(FAST, tmp_path / "s", quiet=True, log=quiet)
    assert again.rows == [] and again.resumed


def _to_first_format(session: Path) -> None:
    """Rewrite a session as the previous version wrote it: a flat config.json and ia-prune/1
    checkpoints (sizes + activation)."""
    config = PruneConfig.from_json(json.loads((session / "config.json").read_text()), "x")
    (session / "config.json").write_text(json.dumps({**flat(config), "version": "0.1.0"}))
    for path in session.glob("iterative_pruning/*/prune_w_retrain/best_model.pth"):
        payload = torch.load(path, weights_only=True)
        layers = payload.pop("spec")
        sizes = [64] + [layer["out"] for layer in layers if layer["type"] == "linear"]
        torch.save({**payload, "format": "ia-prune/1", "sizes": sizes, "activation": "relu"},
                   path)


def test_a_session_of_the_previous_version_resumes_with_the_same_numbers(tmp_path):
    """A session whose config.json is flat and whose checkpoints are ia-prune/1 resumes (and
    redoes an iteration) exactly as an uninterrupted run computes it."""
    retain = schedule(tmp_path)
    whole = run(FAST, tmp_path / "whole", retain=retain, quiet=True, log=quiet)
    old = tmp_path / "old"
    run(FAST, old, retain=retain, quiet=True, log=quiet)
    _to_first_format(old)
    assert cli.run(main, ["--session", str(old), "--begin-itr", "2", "--quiet"]) == 0
    assert results(old / "iterative_pruning") == results(whole.session.mode_dir)
    model, meta = load_model(old / "iterative_pruning/1/prune_w_retrain/best_model.pth")
    assert meta["format"] == "ia-prune/1" and units(model) == [12, 6]
    assert isinstance(deploy.load(old / "iterative_pruning/1/prune_w_retrain/best_model.pth"),
                      nn.Module)


class SimpleNN(nn.Module):
    """The thesis's own model: fc1/fc2/fc3 attributes, F.relu and x.view in forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 8), nn.Linear(8, 10)

    def forward(self, x):
        x = x.view(len(x), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def test_a_users_own_model_is_pruned_and_loaded_back_into_its_class(tmp_path):
    """Import SimpleNN, save it, prune two rows with --base-model, load the pruned checkpoint
    into a fresh SimpleNN: it computes what the pruned model computes."""
    torch.manual_seed(0)
    user = SimpleNN()
    data = load_dataset("digits")
    net = from_module(user, data.input_shape)
    base = save_checkpoint(tmp_path / "simple.pth", net, dataset="digits",
                           input=data.input_info())
    config = PruneConfig(dataset="digits", base_model=str(base), retraining=Retraining(epochs=2))
    result = run(config, tmp_path / "s", retain=schedule(tmp_path), quiet=True, log=quiet)
    assert [r["Hidden"] for r in result.rows] == ["16-8", "12-6", "8-4"]
    pruned_path = result.session.checkpoint(2)
    pruned, _ = load_model(pruned_path)
    mine = deploy.load_pruned_model(SimpleNN(), pruned_path)
    assert (mine.fc1.out_features, mine.fc2.out_features) == (8, 4)
    x = data.test.x[:50].reshape(50, 1, 8, 8)
    torch.testing.assert_close(mine(x), pruned(x))


CNN = {"input": [1, 8, 8], "layers": [
    {"type": "conv2d", "out": 6, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    {"type": "maxpool2d", "kernel": 2}, {"type": "conv2d", "out": 8, "kernel": 3}, "relu",
    "flatten", {"type": "dropout", "p": 0.1}, {"type": "linear", "out": 16}, "relu",
    {"type": "linear", "out": 10}]}


def test_a_cnn_spec_is_pruned_validated_and_deployed(tmp_path, capsys):
    """--arch FILE.json: conv channels and hidden neurons pruned per schedule row; the pruned
    CNN validates with the recorded numbers and deploys (bundle, verify, predict, ONNX)."""
    arch = tmp_path / "cnn.json"
    arch.write_text(json.dumps(CNN))
    retain = schedule(tmp_path, [(6, 8, 16), (4, 6, 12), (3, 4, 8)])
    session = tmp_path / "s"
    assert cli.run(main, ["--dataset", "digits", "--arch", str(arch), "--epochs", "2",
                          "--retrain-epochs", "1", "--retain", str(retain), "--session",
                          str(session), "--quiet"]) == 0
    last = session / "iterative_pruning/2/prune_w_retrain/best_model.pth"
    model, meta = load_model(last)
    assert units(model) == [3, 4, 8] and model[1].num_features == 3
    assert "conv2d" in (last.parent / "summary.txt").read_text()
    bundle = validated_bundle(capsys, last, meta, tmp_path)
    assert (bundle / "model.onnx").is_file()
    assert deploy_main(["verify", "--bundle", str(bundle)]) == 0
    images = (load_digits().images[:4]).astype(np.float32) / 16
    np.save(tmp_path / "digits.npy", images)
    capsys.readouterr()
    assert deploy_main(["predict", "--bundle", str(bundle), str(tmp_path / "digits.npy")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def _base_with_a_dead_neuron(tmp_path: Path) -> Path:
    """A digits MLP 64-16-8-10, trained briefly, whose first hidden neuron never fires."""
    data = load_dataset("digits")
    config = PruneConfig(dataset="digits", hidden=(16, 8), training=Training(epochs=5))
    base = run(config, tmp_path / "base", retain=schedule(tmp_path, [(16, 8)]), quiet=True,
               log=quiet).session.checkpoint(0)
    model, meta = load_model(base)
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = -1.0
    return save_checkpoint(tmp_path / "dead.pth", model, dataset="digits",
                           input=data.input_info())


def test_a_pruned_model_already_at_its_parents_accuracy_is_not_retrained(tmp_path):
    """Removing a dead neuron changes nothing: the pruned model keeps its parent's validation
    accuracy, so no retraining epoch is spent on it."""
    config = PruneConfig(dataset="digits", base_model=str(_base_with_a_dead_neuron(tmp_path)),
                         retraining=Retraining(epochs=3))
    result = run(config, tmp_path / "s", retain=schedule(tmp_path, [(16, 8), (15, 8)]),
                 quiet=True, log=quiet)
    base, pruned = result.rows
    assert pruned["Epochs"] == 0 and pruned["Val_Accuracy"] == base["Val_Accuracy"]
    assert pruned["Test_Accuracy"] == pruned["NoRetrain_Test_Accuracy"]


def test_retraining_until_converged_retrains_a_model_already_at_its_parents_accuracy(tmp_path):
    """--retrain-until converged: the same prune is retrained until its validation accuracy
    plateaus (more epochs than the patience), not skipped because it already matches."""
    config = PruneConfig(dataset="digits", base_model=str(_base_with_a_dead_neuron(tmp_path)),
                         retraining=Retraining(epochs=8, patience=2, until="converged"))
    result = run(config, tmp_path / "s", retain=schedule(tmp_path, [(16, 8), (15, 8)]),
                 quiet=True, log=quiet)
    base, pruned = result.rows
    assert pruned["Epochs"] > 2 and pruned["Val_Accuracy"] >= base["Val_Accuracy"]
    assert json.loads((tmp_path / "s" / "config.json").read_text())["retraining"]["until"] == (
        "converged")


def test_retraining_that_does_worse_on_validation_keeps_the_pruned_model(tmp_path):
    """A retraining that wrecks the model (a learning rate of 1) is not kept: the iteration
    holds the pruned model as it was before retraining."""
    config = PruneConfig(dataset="digits", base_model=str(_base_with_a_dead_neuron(tmp_path)),
                         retraining=Retraining(epochs=2, lr=1.0))
    result = run(config, tmp_path / "s", retain=schedule(tmp_path, [(16, 8), (3, 2)]),
                 quiet=True, log=quiet)
    pruned = result.rows[1]
    history = (result.session.final(1) / "train_results.txt").read_text().splitlines()[1:]
    assert pruned["Epochs"] == len(history) >= 1
    assert all(float(line.split()[4]) < pruned["Val_Accuracy"] for line in history)
    assert pruned["Test_Accuracy"] == pruned["NoRetrain_Test_Accuracy"]


def test_the_cnn3_preset_runs_the_whole_workflow_and_its_bundle_predicts_raw_images(
        tmp_path, capsys):
    """--arch cnn3: base training, every conv group pruned per row, results gathered, the
    recommended model validated and bundled; the bundle predicts raw images (integer pixel
    values) with the labels the engine's model gives them."""
    session, bundle = tmp_path / "s", tmp_path / "bundle"
    retain = schedule(tmp_path, [(2, 4, 8), (2, 3, 6), (1, 2, 4)])
    assert cli.run(main, ["--dataset", "digits", "--arch", "cnn3", "--epochs", "3",
                          "--retrain-epochs", "1", "--retain", str(retain), "--session",
                          str(session), "--quiet"]) == 0
    results = session / "iterative_pruning" / "prune_w_retrain_results"
    assert len((results / "validations.txt").read_text().splitlines()) == 1 + 3
    recommended = session / (results / "recommended.txt").read_text().strip()
    assert cli.run(validator_main, [str(recommended)]) == 0
    assert deploy_main(["bundle", "--recommended", str(session), "--out", str(bundle)]) == 0
    raw = load_digits().images[-12:].astype(np.int64)  # pixel values 0..16, as scanned
    np.save(tmp_path / "raw.npy", raw)
    capsys.readouterr()
    assert deploy_main(["predict", "--bundle", str(bundle), str(tmp_path / "raw.npy")]) == 0
    printed = [line.split(": ")[1].split()[0] for line in capsys.readouterr().out.splitlines()]
    model, _ = load_model(recommended)
    with torch.no_grad():
        expected = model(torch.from_numpy(raw).float().reshape(12, -1) / 16).argmax(1)
    assert printed == [str(int(c)) for c in expected]


# ---- input pruning (a schedule with the inNodesRetained column) ----------------------------

IN_ROWS = [(64, 16, 8), (40, 12, 6), (24, 8, 4)]


def input_schedule(tmp_path: Path, rows=IN_ROWS) -> Path:
    """A retain.txt whose first unit column is the input features."""
    path = tmp_path / "retain_inputs.txt"
    write_schedule([ScheduleRow(t, r[1:], 100 * sum(r) / sum(rows[0]), r[0])
                    for t, r in enumerate(rows)], path)
    return path


@pytest.fixture(scope="module")
def input_session(tmp_path_factory) -> Results:
    """One digits session that prunes inputs and hidden neurons (shared by the tests below)."""
    tmp_path = tmp_path_factory.mktemp("inputs")
    return run(FAST, tmp_path / "s", retain=input_schedule(tmp_path), quiet=True, log=quiet)


def test_an_input_schedule_prunes_the_inputs_too(input_session):
    """Each row's input count is read by the model it keeps; Hidden says so ('24:8-4'),
    validation_results.txt keeps its 11 columns, summary.txt says how many inputs are read."""
    assert [r["Hidden"] for r in input_session.rows] == ["64:16-8", "40:12-6", "24:8-4"]
    last = input_session.session.checkpoint(2)
    model, meta = load_model(last)
    assert units(model, inputs=True) == [24, 8, 4] and meta["features_read"] == 24
    assert len(model[0].indices) == 24 and meta["hidden"] == [8, 4]
    header = (last.parent / "validation_results.txt").read_text().split("\n")[0].split()
    assert len(header) == 11
    assert "input features read: 24 of 64" in (last.parent / "summary.txt").read_text()


def test_an_input_pruned_model_takes_the_full_input_everywhere(input_session, tmp_path,
                                                               capsys):
    """The pruned checkpoint takes whole 8x8 images: the validator reproduces its recorded
    accuracy, the bundle (manifest, ONNX) and predict take raw images, and load_pruned_model
    gives a user's SimpleNN the same outputs (inputs='indices' or 'zeros')."""
    last = input_session.session.checkpoint(2)
    pruned, meta = load_model(last)
    bundle = validated_bundle(capsys, last, meta, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["features_read"] == 24 and manifest["onnx"]["max_abs_diff"] < 1e-4
    raw = load_digits().images[:6].astype(np.float32) / 16  # whole images, scaled
    expected = pruned(torch.from_numpy(raw)).argmax(1)
    assert torch.equal(deploy.predict(deploy.load(bundle), raw).labels, expected)
    np.save(tmp_path / "digits.npy", raw)
    capsys.readouterr()
    assert deploy_main(["predict", "--bundle", str(bundle), str(tmp_path / "digits.npy")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 6
    x = torch.from_numpy(raw).reshape(6, 1, 8, 8)
    zeros = deploy.load_pruned_model(SimpleNN(), last, inputs="zeros")
    assert zeros.fc1.in_features == 64
    torch.testing.assert_close(zeros(x), pruned(x))
    indexed = deploy.load_pruned_model(SimpleNN(), last, inputs="indices")
    features = x.reshape(6, -1)[:, indexed.input_indices]
    torch.testing.assert_close(indexed.fc3(F.relu(indexed.fc2(F.relu(indexed.fc1(features))))),
                               pruned(x))


def test_an_input_session_redone_gives_the_same_numbers(input_session, tmp_path):
    """Resuming an input-pruning session (--begin-itr 1 from iteration 0's checkpoint) computes
    exactly what the uninterrupted run did."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(input_session.session.root, copy)
    again = run(FAST, copy, begin=1, quiet=True, log=quiet)
    assert again.resumed and [r["Hidden"] for r in again.rows] == ["40:12-6", "24:8-4"]
    assert results(copy / "iterative_pruning") == results(input_session.session.mode_dir)


@pytest.mark.parametrize("criterion", ["interval_adjoint", "random", "magnitude", "taylor",
                                       "apoz"])
def test_every_input_criterion_runs_one_shot_and_iterative(tmp_path, criterion):
    """Every criterion with an input form prunes inputs in both modes (without retraining)."""
    retain = input_schedule(tmp_path)
    for mode in ("iterative", "one-shot"):
        config = replace(FAST, mode=mode, scoring=Scoring(criterion=criterion),
                         retraining=Retraining(epochs=0), training=Training(epochs=1))
        result = run(config, tmp_path / mode, retain=retain, quiet=True, log=quiet)
        assert [r["Hidden"] for r in result.rows] == ["64:16-8", "40:12-6", "24:8-4"]


def test_fpgm_with_an_input_schedule_fails_before_anything_is_written(tmp_path):
    """fpgm has no input form: one UserError naming it, and the session folder stays empty."""
    config = replace(FAST, scoring=Scoring(criterion="fpgm"))
    with pytest.raises(UserError, match="fpgm has no input-feature form"):
        run(config, tmp_path / "s", retain=input_schedule(tmp_path), quiet=True, log=quiet)
    assert not (tmp_path / "s" / "config.json").exists()


def test_an_input_schedule_for_a_cnn_is_refused_before_anything_is_written(tmp_path):
    """A CNN's first layer is a conv: an input column is an error naming the schedule."""
    arch = tmp_path / "cnn.json"
    arch.write_text(json.dumps(CNN))
    retain = input_schedule(tmp_path, [(64, 6, 8, 16), (40, 4, 6, 12)])
    with pytest.raises(UserError, match="retain_inputs.txt: the schedule prunes inputs"):
        run(replace(FAST, arch=str(arch), hidden=None), tmp_path / "s", retain=retain,
            quiet=True, log=quiet)
    assert not (tmp_path / "s" / "config.json").exists()


def test_global_allocation_keeps_each_rows_total(tmp_path):
    """allocation='global' keeps each row's total units, split by score across the groups
    (at least one per group), and a redone iteration reads them back."""
    config = replace(FAST, scoring=Scoring(allocation="global"))
    result = run(config, tmp_path / "s", retain=input_schedule(tmp_path), quiet=True, log=quiet)
    kept = [[int(n) for n in r["Hidden"].replace(":", "-").split("-")] for r in result.rows]
    assert [sum(k) for k in kept] == [sum(r) for r in IN_ROWS] and min(map(min, kept)) >= 1
    again = run(config, tmp_path / "s", begin=2, quiet=True, log=quiet)
    assert again.rows[0]["Hidden"] == result.rows[2]["Hidden"]


def test_an_iteration_keeps_the_pruned_model_when_retraining_only_loses(tmp_path):
    """A retraining that cannot help (a learning rate that wrecks the model) is discarded: the
    iteration keeps the pruned model, so its test accuracy is the one before retraining and its
    validation accuracy beats every retraining epoch's."""
    config = replace(FAST, retraining=Retraining(epochs=2, lr=5.0))
    result = run(config, tmp_path / "s", retain=schedule(tmp_path), quiet=True, log=quiet)
    for row in result.rows[1:]:
        assert row["Test_Accuracy"] == row["NoRetrain_Test_Accuracy"]
        history = (result.session.final(row["iteration"]) / "train_results.txt").read_text()
        epochs = [float(line.split()[4]) for line in history.splitlines()[1:]]
        # (a pruned model already at its parent's accuracy is not retrained at all)
        assert not epochs or max(epochs) < row["Val_Accuracy"]


# ---- a run dying at a write ------------------------------------------------------------------

KILL_ROWS = ("Iteration h1NodesRetained h2NodesRetained perNodesRetained\n"
             "0 4 2 100\n1 3 2 83.33\n2 2 1 50\n")
KILL_CONFIG = PruneConfig(dataset="digits", hidden=(4, 2), training=Training(epochs=1),
                          retraining=Retraining(epochs=1))


class Killed(Exception):
    """The injected failure standing for a kill."""


def outputs(session: Path) -> dict[str, bytes]:
    """What a run leaves that does not depend on the clock: every iteration's validation row,
    the results table and the recommendation."""
    mode = session / "iterative_pruning"
    names = [p for p in sorted(mode.glob("*/prune_w_retrain/validation_results.txt"))]
    names += [mode / "prune_w_retrain_results" / n for n in ("validations.txt",
                                                            "recommended.txt")]
    return {str(p.relative_to(session)): p.read_bytes() for p in names}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("uninterrupted")
    (root / "retain.txt").write_text(KILL_ROWS)
    run(KILL_CONFIG, root / "s", retain=root / "retain.txt", quiet=True, log=quiet)
    return root / "retain.txt", root / "s"


# (file, n): die at the n-th write of that file: the settings, the base model's checkpoint,
# iteration 1's validation row, iteration 2's summary, the gathered results (first and last)
KILL_POINTS = [("config.json", 1), ("best_model.pth", 1), ("validation_results.txt", 2),
               ("summary.txt", 3), ("validations.txt", 1), ("concatenate.json", 2)]


@pytest.mark.parametrize(("name", "nth"), KILL_POINTS)
def test_a_run_dying_at_a_write_resumes_to_the_uninterrupted_results(
        uninterrupted, tmp_path, monkeypatch, name, nth):
    """A run that dies at a write (in the settings, the base, an iteration or the gathered
    results), leaving that write's temp file behind as a kill would, resumes to the results of
    an uninterrupted run, with no temp file left and the results vouched for by their
    fingerprint (a further concatenate rewrites nothing)."""
    import os

    import iaprune_runtime.files as runtime_files
    from iaprune.concatenate import concatenate
    from iaprune.files import TEMP_NAME

    retain, reference = uninterrupted
    real, seen = runtime_files.os.fsync, []

    def dying(fd):
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        seen.append(TEMP_NAME.fullmatch(target.name) and target.name.split(".")[1])
        if seen.count(name.split(".")[0]) == nth:
            target.with_name(f".{name}.0badcafe.tmp").write_bytes(b"half")
            raise Killed(name)
        return real(fd)

    monkeypatch.setattr(runtime_files.os, "fsync", dying)
    with pytest.raises(Killed):
        run(KILL_CONFIG, tmp_path / "s", retain=retain, quiet=True, log=quiet)
    monkeypatch.undo()
    run(KILL_CONFIG, tmp_path / "s", retain=retain, quiet=True, log=quiet)
    assert not [p for p in (tmp_path / "s").rglob("*") if TEMP_NAME.fullmatch(p.name)]
    assert outputs(tmp_path / "s") == outputs(reference)
    assert not concatenate(tmp_path / "s" / "iterative_pruning", quiet=True).written
