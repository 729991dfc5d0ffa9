"""The training loop: learns, keeps the best epoch, stops early, is reproducible."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from iaprune.errors import UserError
from iaprune.model import mlp_net
from iaprune.records import EPOCH_COLUMNS
from iaprune.trainer import (
    EpochRecord,
    TrainConfig,
    auto_batch_size,
    better,
    kept_metrics,
    learning_rate,
    train,
    uses_bf16,
)
from iaprune.validator import evaluate, evaluate_split


def test_training_learns_a_separable_problem(blobs):
    """A small MLP reaches high validation accuracy on well-separated blobs."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=15, batch_size=32, lr=1e-2), quiet=True)
    assert result.best.val_accuracy > 95.0


def test_an_unset_batch_size_trains_as_the_automatic_size_given(blobs):
    """batch_size=None is auto_batch_size of the training split: the same epochs as that size
    given explicitly."""
    size = auto_batch_size(len(blobs.train.y), 256)
    runs = [[replace(r, seconds=0.0) for r in train(
        mlp_net([12, 16, 3], seed=0), blobs, TrainConfig(epochs=3, batch_size=b),
        quiet=True).history] for b in (None, size, 4 * size)]
    assert runs[0] == runs[1] != runs[2]


def test_model_holds_best_validation_accuracy_epoch(blobs):
    """After training, the model's weights are those of the highest-validation-accuracy epoch
    (ties to the lower validation loss)."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=8, batch_size=32, lr=5e-2), quiet=True)
    best = max(result.history, key=lambda r: (r.val_accuracy, -r.val_loss))
    assert result.best == best
    val_loss, val_acc = evaluate_split(model, blobs.val)
    assert (val_loss, val_acc) == pytest.approx((best.val_loss, best.val_accuracy), rel=1e-5)


def test_better_ranks_accuracy_before_loss():
    """An epoch beats the best one by a higher validation accuracy whatever its loss; at equal
    accuracy, by a lower loss."""
    def record(epoch, loss, acc):
        return EpochRecord(epoch, 0.0, 0.0, loss, acc, 0.0, 0.0, 0.0)

    best = record(1, 0.30, 98.0)
    assert better(record(2, 0.40, 98.1), best)  # higher accuracy wins despite a higher loss
    assert not better(record(2, 0.10, 97.9), best)  # a lower loss alone does not
    assert better(record(2, 0.20, 98.0), best) and not better(record(2, 0.30, 98.0), best)
    assert better(record(1, 9.9, 0.0), None)


def scripted_validation(monkeypatch, data, curve: list[tuple[float, float]]) -> list:
    """Make train() see `curve[e]` as (val loss, val accuracy) at epoch e + 1; returns the list
    that collects the first layer's weights at each epoch's evaluation."""
    weights = []

    def evaluate(model, split):
        if split is not data.val:  # the test split: reported, never used to choose
            return 1.0, 0.0
        weights.append(model[0].weight.detach().clone())
        return curve[len(weights) - 1]

    monkeypatch.setattr("iaprune.trainer.evaluate_split", evaluate)
    return weights


def test_stops_on_a_plateau_and_keeps_the_best_accuracy_epoch(blobs, monkeypatch):
    """With a cap of 1000 epochs, training stops `patience` epochs after its last progress and
    leaves the model with the weights of the best-accuracy epoch: epoch 4, tied with epoch 3 at
    lower loss - not epoch 2, where the loss bottoms out (the old rule's choice)."""
    curve = [(1.00, 50.0), (0.40, 70.0), (0.60, 80.0), (0.55, 80.0), (0.70, 79.0),
             (0.80, 80.0), (0.90, 78.0), (0.95, 79.0), (0.99, 79.5)]
    weights = scripted_validation(monkeypatch, blobs, curve)
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=1000, batch_size=100, patience=4),
                   quiet=True)
    assert result.epochs_run == 7  # epochs 4..7 made no progress over epoch 3's 80 %
    assert result.best.epoch == 4 and result.best.val_loss == 0.55
    assert min(result.history, key=lambda r: r.val_loss).epoch == 2
    assert torch.equal(model[0].weight, weights[3])
    assert not torch.equal(weights[3], weights[-1])


def test_noise_level_gains_do_not_extend_training_but_never_stop_on_a_best(blobs, monkeypatch):
    """Gains below min_delta (here one sample in 5,000) are not progress, so patience runs out
    at epoch 4; epoch 4 is a new best, though, so training stops one epoch later and keeps it."""
    curve = [(0.5, 90.00), (0.5, 90.02), (0.5, 90.00), (0.5, 90.04), (0.5, 90.00),
             (0.5, 90.06), (0.5, 90.08)]
    scripted_validation(monkeypatch, blobs, curve)
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=1000, batch_size=100, patience=3,
                                             min_delta=0.05), quiet=True)
    assert result.epochs_run == 5
    assert result.best.epoch == 4


def test_training_converges_and_stops_before_its_cap(blobs):
    """On a real problem the plateau rule ends training by itself, far below a large cap, with
    the kept epoch before the last one."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=500, batch_size=50, lr=1e-2, patience=3),
                   quiet=True)
    assert result.epochs_run < 100
    assert result.best.epoch < result.epochs_run
    assert result.best.val_accuracy > 95.0


def test_early_stopping_respects_patience(blobs):
    """Training stops `patience` epochs after the last better validation epoch."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=200, batch_size=400, lr=0.5, patience=2,
                                             schedule="constant", warmup_epochs=0), quiet=True)
    assert result.epochs_run < 200
    assert result.epochs_run - result.best.epoch == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_learn_and_report_fp32_metrics(blobs, precision):
    """bf16 training learns as fp32 does, and the kept epoch's metrics are fp32 evaluations of
    the fp32 weights it leaves (what the validator recomputes)."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(batch_size=32, lr=1e-2, precision=precision),
                   quiet=True)
    assert result.best.val_accuracy > 95.0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    val_loss, val_acc = evaluate_split(model, blobs.val)
    assert (val_loss, val_acc) == (result.best.val_loss, result.best.val_accuracy)


def test_kept_metrics_equal_a_full_evaluation(blobs):
    """The metrics reused from the kept epoch are exactly what evaluating the model gives."""
    model = mlp_net([12, 16, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=6, batch_size=32, lr=5e-2), quiet=True)
    assert kept_metrics(model, blobs, result) == evaluate(model, blobs)
    untrained = mlp_net([12, 16, 3], seed=0)
    nothing = train(untrained, blobs, TrainConfig(epochs=0), quiet=True)
    assert kept_metrics(untrained, blobs, nothing) == evaluate(untrained, blobs)


def test_bf16_changes_the_products_and_auto_follows_the_cpu(blobs, monkeypatch):
    """precision=bf16 really trains in bfloat16 (other weights than fp32 from the same seed);
    auto means bf16 exactly where the CPU has bf16 instructions."""
    monkeypatch.delenv("IAPRUNE_PRECISION", raising=False)  # CI sets it for its fp32 run
    weights = {}
    for precision in ("fp32", "bf16"):
        model = mlp_net([12, 16, 3], seed=0)
        train(model, blobs, TrainConfig(epochs=1, batch_size=32, precision=precision),
              quiet=True)
        weights[precision] = model[0].weight.detach()
    assert not torch.equal(weights["fp32"], weights["bf16"])
    assert uses_bf16(TrainConfig(precision="bf16"))
    assert not uses_bf16(TrainConfig(precision="fp32"))
    for native in (True, False):
        monkeypatch.setattr("iaprune.trainer.native_bf16", lambda native=native: native)
        assert uses_bf16(TrainConfig(precision="auto")) is native


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_iaprune_precision_decides_what_auto_means(monkeypatch, forced):
    """IAPRUNE_PRECISION=fp32|bf16 makes auto mean that precision whatever the CPU has, and
    never overrides an explicit fp32 or bf16."""
    monkeypatch.setenv("IAPRUNE_PRECISION", forced)
    for native in (True, False):
        monkeypatch.setattr("iaprune.trainer.native_bf16", lambda native=native: native)
        assert uses_bf16(TrainConfig(precision="auto")) is (forced == "bf16")
        assert uses_bf16(TrainConfig(precision="bf16"))
        assert not uses_bf16(TrainConfig(precision="fp32"))
    monkeypatch.setenv("IAPRUNE_PRECISION", "auto")  # auto (like unset) asks the CPU again
    monkeypatch.setattr("iaprune.trainer.native_bf16", lambda: True)
    assert uses_bf16(TrainConfig(precision="auto"))


def test_an_unknown_iaprune_precision_is_an_error(monkeypatch):
    """A value of IAPRUNE_PRECISION other than fp32, bf16 or auto is an error naming it."""
    monkeypatch.setenv("IAPRUNE_PRECISION", "fp16")
    with pytest.raises(UserError, match="IAPRUNE_PRECISION.*fp16"):
        uses_bf16(TrainConfig(precision="auto"))


def test_same_seed_gives_identical_runs(blobs):
    """Training is deterministic for a given seed (same history, same weights)."""
    runs = []
    for _ in range(2):
        model = mlp_net([12, 8, 3], seed=1)
        result = train(model, blobs, TrainConfig(epochs=3, batch_size=50, seed=4), quiet=True)
        runs.append(([r.val_loss for r in result.history], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_train_results_file_has_design_columns(blobs, tmp_path):
    """train_results.txt has the DESIGN.md header and one row per epoch."""
    path = tmp_path / "train_results.txt"
    model = mlp_net([12, 8, 3], seed=0)
    result = train(model, blobs, TrainConfig(epochs=3, patience=5), log_path=path, quiet=True)
    lines = path.read_text().splitlines()
    assert lines[0].split() == list(EPOCH_COLUMNS)
    assert len(lines) == 1 + result.epochs_run
    assert all(len(line.split()) == len(EPOCH_COLUMNS) for line in lines[1:])


def test_zero_epochs_leaves_model_untouched(blobs):
    """epochs=0 trains nothing and keeps the weights."""
    model = mlp_net([12, 8, 3], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, blobs, TrainConfig(epochs=0), quiet=True)
    assert result.best is None and result.epochs_run == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distillation_from_teacher_trains(blobs):
    """With a teacher and distill>0 the student still learns the task."""
    teacher = mlp_net([12, 16, 3], seed=0)
    train(teacher, blobs, TrainConfig(epochs=10, batch_size=32, lr=1e-2), quiet=True)
    student = mlp_net([12, 4, 3], seed=1)
    result = train(student, blobs, TrainConfig(epochs=10, batch_size=32, lr=1e-2, distill=0.5),
                   teacher=teacher, quiet=True)
    assert result.best.val_accuracy > 90.0


def test_plateau_schedule_decays_at_each_stall_whatever_the_cap():
    """The plateau schedule warms up, then gives the peak lr times lr_decay per stall so far;
    the epoch cap (`total`) does not enter it."""
    config = TrainConfig(lr=1.0, lr_decay=0.5)
    assert learning_rate(0, 1000, 10, config) == pytest.approx(0.1)
    for total in (100, 10_000):
        assert learning_rate(50, total, 10, config) == 1.0
        assert learning_rate(50, total, 10, config, decays=3) == 0.125


def test_cosine_schedule_warms_up_then_decays():
    """The cosine schedule rises linearly during warm-up, peaks, then decays towards 0."""
    config = TrainConfig(lr=1.0, schedule="cosine")
    rates = [learning_rate(s, 100, 10, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] < 0.01


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(lr=0.0), dict(batch_size=0),
                                 dict(patience=0), dict(schedule="step"), dict(distill=2.0),
                                 dict(lr_decay=0.0), dict(lr_decay=1.5), dict(decay_patience=0),
                                 dict(precision="fp16"), dict(min_delta=-0.1)])
def test_bad_settings_are_rejected(bad):
    """Invalid training settings raise ValueError at construction."""
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_unknown_setting_key_is_an_error():
    """from_dict refuses keys it does not know (e.g. a typo in config.json)."""
    with pytest.raises(ValueError, match="epoch"):
        TrainConfig.from_dict({"epoch": 3})


def test_divergence_is_an_error_not_a_warning(blobs):
    """A NaN loss stops training with a one-line user error that suggests a lower --lr."""
    model = mlp_net([12, 8, 3], seed=0)
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(UserError, match="diverged.*lower --lr"):
        train(model, blobs, TrainConfig(epochs=2), quiet=True)


def test_random_shift_translates_with_zero_fill():
    """random_shift moves every image of the batch by the same offset and fills with zeros."""
    from iaprune.trainer import random_shift

    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 16) + 1
    for seed in range(20):
        out = random_shift(images, (1, 4, 4), 1, torch.Generator().manual_seed(seed)).view(2, 4, 4)
        src = images.view(2, 4, 4)
        # find the offset from the first image and check it against both
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.equal(out[0], torch.roll(src[0], (-dy, -dx), (0, 1)) *
                                _mask(dy, dx))]
        assert len(found) == 1
        dy, dx = found[0]
        assert torch.equal(out[1], torch.roll(src[1], (-dy, -dx), (0, 1)) * _mask(dy, dx))


def _mask(dy: int, dx: int) -> torch.Tensor:
    """Where a (dy, dx)-shifted 4x4 image still has source pixels."""
    mask = torch.ones(4, 4)
    if dy > 0:
        mask[4 - dy:] = 0
    if dy < 0:
        mask[:-dy] = 0
    if dx > 0:
        mask[:, 4 - dx:] = 0
    if dx < 0:
        mask[:, :-dx] = 0
    return mask
