"""Training loop on in-memory tensors with early stopping on the validation split."""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from src.data import Dataset
from src.errors import UserError
from src.files import atomic_write
from src.metrics import EPOCH_COLUMNS
from src.validator import evaluate_split

TRAIN_COLUMNS = EPOCH_COLUMNS


class TrainingError(UserError):
    """Training settings that are not allowed, or a run that diverged (NaN loss)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the command lines map their flags onto these fields."""

    epochs: int = 15  # maximum number of epochs (the cosine schedule spans them)
    batch_size: int = 256  # mini-batch size
    lr: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    schedule: Literal["cosine", "constant"] = "cosine"  # learning rate over the epochs
    warmup_epochs: float = 1.0  # linear warm-up before the schedule (fraction allowed)
    patience: int = 5  # stop after this many epochs without a lower validation loss
    seed: int = 0  # seeds the batch order: the same seed gives the same run
    label_smoothing: float = 0.1  # cross-entropy label smoothing while training (0 = off)
    shift: int = 1  # random translation of image inputs by up to this many pixels (0 = off)
    distill: float = 0.0  # weight of the distillation loss when a teacher is given (0..1)
    temperature: float = 4.0  # softmax temperature of the distillation loss

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise TrainingError("epochs must be >= 0, batch_size >= 1 and patience >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"learning rate must be a positive number, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise TrainingError(f"unknown schedule {self.schedule!r}; choose cosine or constant")
        if not 0.0 <= self.label_smoothing < 1.0 or self.shift < 0:
            raise TrainingError("label_smoothing must be in [0, 1) and shift >= 0")
        if not 0.0 <= self.distill <= 1.0 or self.temperature <= 0:
            raise TrainingError("distill must be in [0, 1] and temperature > 0")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict; an unknown key is an error."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TrainingError(f"unknown training settings: {sorted(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class EpochRecord:
    """One row of train_results.txt."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float

    def row(self) -> str:
        return (f"{self.epoch} {self.train_loss:.6f} {self.train_accuracy:.4f} "
                f"{self.val_loss:.6f} {self.val_accuracy:.4f} {self.test_loss:.6f} "
                f"{self.test_accuracy:.4f} {self.seconds:.3f}")


@dataclass(frozen=True)
class TrainResult:
    """The epochs run and the one kept (lowest validation loss)."""

    history: list[EpochRecord]
    best: EpochRecord | None  # None when no epoch was run

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def learning_rate(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """The learning rate at optimizer step `step` of `total` (warm-up, then cosine or flat)."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def write_history(path: str | os.PathLike, history: list[EpochRecord]) -> None:
    """Write train_results.txt (header + one row per epoch), atomically."""
    atomic_write(path, "\n".join([" ".join(TRAIN_COLUMNS)] + [r.row() for r in history]) + "\n")


def _distill_loss(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(softmax(t/T) || softmax(s/T))."""
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def random_shift(x: Tensor, shape: tuple[int, ...], max_shift: int, generator) -> Tensor:
    """Translate a batch of flattened images by one random (dy, dx) in [-max_shift, max_shift],
    zero-filled. One offset per batch keeps it nearly free; over an epoch every image still sees
    a fresh random offset, because batches are reshuffled."""
    h, w = shape[-2], shape[-1]
    images = x.view(len(x), -1, h, w)  # (b, c, h, w)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2,), generator=generator) - max_shift).tolist()
    # out[i, j] = images[i + dy, j + dx] where that exists, else 0: one pad op whose negative
    # sides crop (several times faster than zeros + slice assignment)
    return F.pad(images, (-dx, dx, -dy, dy)).reshape(len(x), -1)


def train(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *,
          teacher: nn.Module | None = None, log_path: str | os.PathLike | None = None,
          quiet: bool = False, desc: str = "train",
          stop_at_accuracy: float | None = None) -> TrainResult:
    """Train `model` in place and leave it holding the weights of its lowest-validation-loss epoch.

    A fresh AdamW optimizer is made on every call, so a model that was shrunk never sees
    optimizer state of its former shape. The test split is reported, never used to choose.
    With `stop_at_accuracy`, training also stops once the validation accuracy reaches it (a
    pruned model that has recovered its parent's accuracy needs no more epochs).
    """
    x, y = data.train.x, data.train.y  # (n, n_features), (n,)
    n = len(y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    # fused: one kernel per step for all parameters (~25% faster epochs for these small MLPs)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr,
                                  weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(config.seed)
    use_teacher = teacher is not None and config.distill > 0
    if use_teacher:  # the teacher is frozen: its logits are computed once, not per batch
        with torch.no_grad():
            teacher.eval()
            teacher_logits = torch.cat([teacher(x[i:i + 8192]) for i in range(0, n, 8192)])

    history: list[EpochRecord] = []
    if log_path is not None:
        write_history(log_path, history)  # the header, even when no epoch runs
    best, best_state, stale = None, copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, config.epochs + 1), desc=desc, unit="epoch", leave=False,
               disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    step = 0
    for epoch in bar:
        started = time.perf_counter()
        model.train()
        # One permutation per epoch; each batch is one index gather (no per-sample Python work,
        # and cheaper than copying the whole shuffled set at once).
        perm = torch.randperm(n, generator=generator).to(x.device)  # the generator is the CPU's
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        for start in range(0, n, config.batch_size):
            for group in optimizer.param_groups:  # set the lr first, as nanoGPT does
                group["lr"] = learning_rate(step, total_steps, warmup, config)
            idx = perm[start:start + config.batch_size]
            xb, yb = x[idx], y[idx]
            if config.shift and len(data.input_shape) >= 2:
                xb = random_shift(xb, data.input_shape, config.shift, generator)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            if use_teacher:
                soft = _distill_loss(logits, teacher_logits[idx], config.temperature)
                loss = (1 - config.distill) * loss + config.distill * soft
            for p in params:  # what zero_grad(set_to_none=True) does, without its overhead
                p.grad = None
            loss.backward()
            optimizer.step()
            step += 1
            with torch.no_grad():
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise TrainingError(f"training diverged at epoch {epoch} (loss {train_loss}); "
                                     "try a lower --lr")
        val_loss, val_acc = evaluate_split(model, data.val)
        test_loss, test_acc = evaluate_split(model, data.test)
        record = EpochRecord(epoch, train_loss, 100.0 * correct.item() / n, val_loss, val_acc,
                             test_loss, test_acc, time.perf_counter() - started)
        history.append(record)
        if log_path is not None:
            write_history(log_path, history)
        # Keep the best epoch by validation loss; the test split never chooses anything.
        if best is None or record.val_loss < best.val_loss:
            best, best_state, stale = record, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        bar.set_postfix(val_acc=f"{val_acc:.2f}", best=best.epoch)
        if stale >= config.patience:
            break
        if stop_at_accuracy is not None and record.val_accuracy >= stop_at_accuracy:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history, best)
