"""Evaluation of models and checkpoints, and the validator command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from iaprune import cli
from iaprune.checkpoint import save_checkpoint
from iaprune.model import mlp_net
from iaprune.trainer import TrainConfig, train
from iaprune.validator import evaluate, evaluate_split, main


def test_accuracy_and_loss_match_a_direct_computation(blobs):
    """evaluate_split reports mean cross-entropy and percent accuracy over the whole split."""
    model = mlp_net([12, 8, 3], seed=0)
    loss, acc = evaluate_split(model, blobs.test)
    logits = model(blobs.test.x)
    expected_loss = torch.nn.functional.cross_entropy(logits, blobs.test.y).item()
    expected_acc = 100.0 * (logits.argmax(1) == blobs.test.y).float().mean().item()
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert acc == pytest.approx(expected_acc)


def test_evaluate_covers_all_three_splits(blobs):
    """evaluate returns train, val and test metrics."""
    model = mlp_net([12, 8, 3], seed=0)
    train(model, blobs, TrainConfig(epochs=5, batch_size=32, lr=1e-2), quiet=True)
    metrics = evaluate(model, blobs)
    assert metrics.test_accuracy == pytest.approx(evaluate_split(model, blobs.test)[1])
    assert set(metrics.as_dict()) == {"train_loss", "train_accuracy", "val_loss",
                                      "val_accuracy", "test_loss", "test_accuracy"}


def test_command_line_prints_metrics_of_a_checkpoint(tmp_path, capsys):
    """python -m iaprune.validator CKPT prints the three splits' accuracy."""
    path = save_checkpoint(tmp_path / "best_model.pth", mlp_net([64, 8, 10], seed=0),
                           dataset="digits", val_size=180, split_seed=0)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "test" in out and "val" in out


def test_command_line_error_is_one_line_exit_2(tmp_path):
    """A corrupt checkpoint gives `error: ...` on stderr and exit code 2, no traceback."""
    bad = tmp_path / "best_model.pth"
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "iaprune.validator", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr


def test_a_validation_size_of_0_is_refused_not_ignored(tmp_path, capsys):
    """--val-size 0 is a one-line error with exit code 2 (it used to be taken as "not given"
    and the recorded size silently used)."""
    path = save_checkpoint(tmp_path / "best_model.pth", mlp_net([64, 8, 10], seed=0),
                           dataset="digits", val_size=180, split_seed=0)
    assert cli.run(main, [str(path), "--val-size", "0"]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith("error: validation size must be between 1 and ")
    assert captured.err.count("\n") == 1 and captured.out == ""


@pytest.mark.parametrize("key, value", [("val_size", "abc"), ("split_seed", "x")])
def test_a_checkpoint_with_mistyped_metadata_is_one_line(tmp_path, capsys, key, value):
    """A checkpoint whose recorded val_size or split_seed is not an integer (hand-made or
    damaged) is one line naming the file, exit 2 (were TypeError/RuntimeError tracebacks)."""
    path = save_checkpoint(tmp_path / "best_model.pth", mlp_net([64, 8, 10], seed=0),
                           dataset="digits", **{key: value})
    assert cli.run(main, [str(path)]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == f"error: {path}: {key} must be an integer, got {value!r}\n"
    assert captured.out == ""


def test_model_that_does_not_fit_dataset_is_refused(tmp_path):
    """A checkpoint whose input size does not fit the dataset is a one-line error."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([10, 4, 10], seed=0),
                           dataset="digits")
    with pytest.raises(ValueError, match="does not fit digits"):
        main([str(path)])


@pytest.mark.slow
@pytest.mark.realdata
def test_brief_training_on_real_mnist_subset(mnist_data_root):
    """One short epoch on a 5,000-image MNIST subset already beats 85% validation accuracy."""
    from dataclasses import replace

    from iaprune.data import Split, load_dataset

    data = load_dataset("mnist", mnist_data_root)
    small = replace(data, train=Split(data.train.x[:5000], data.train.y[:5000]),
                    test=Split(data.test.x[:2000], data.test.y[:2000]))
    model = mlp_net([784, 64, 10], seed=0)
    result = train(model, small, TrainConfig(epochs=2, batch_size=64), quiet=True)
    assert result.best.val_accuracy > 85.0


def test_a_checkpoint_of_another_dataset_names_both_datasets(tmp_path, capsys):
    """--dataset digits on an MNIST checkpoint says the model was trained on mnist and what
    digits has, instead of complaining about the recorded validation size."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([784, 8, 10], seed=0),
                           dataset="mnist", val_size=5000, split_seed=0)
    assert cli.run(main, [str(path), "--dataset", "digits"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        f"error: {path}: trained on mnist (784 inputs, 10 classes), but digits has 64 inputs "
        f"and 10 classes; leave out --dataset to evaluate on mnist\n")


def test_the_mismatch_is_found_before_any_data_is_read(tmp_path, capsys):
    """A digits checkpoint with --dataset mnist is refused from the sizes alone: no MNIST files
    are needed to say so."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([64, 8, 10], seed=0),
                           dataset="digits", val_size=180, split_seed=0)
    empty = tmp_path / "no-data"
    argv = [str(path), "--dataset", "mnist", "--data-root", str(empty)]
    assert cli.run(main, argv) == cli.EXIT_USAGE
    assert "trained on digits (64 inputs, 10 classes), but mnist has 784" in (
        capsys.readouterr().err)


def test_a_folder_given_for_the_checkpoint_says_it_is_a_folder(tmp_path, capsys):
    """python -m iaprune.validator FOLDER says it is a folder, not that it does not exist."""
    assert cli.run(main, [str(tmp_path)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder, not a checkpoint file\n"


def test_a_non_checkpoint_file_never_suggests_unsafe_loading(tmp_path, capsys):
    """The validator given a README says it is not a checkpoint, without torch's advice to
    retry with weights_only=False."""
    readme = tmp_path / "README.md"
    readme.write_text("# IA-Prune\n")
    assert cli.run(main, [str(readme)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"error: {readme}: not a PyTorch checkpoint (torch.load cannot read it)\n"
