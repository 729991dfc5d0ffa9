"""Training loop on in-memory tensors that runs until the validation accuracy plateaus and
keeps the best epoch."""

from __future__ import annotations

import copy
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from iaprune.data import Dataset
from iaprune.data.rows import batches
from iaprune.errors import UserError
from iaprune.records import write_epochs
from iaprune.validator import Metrics, evaluate, evaluate_split
from iaprune_runtime.layers.softmax import logits_of


class TrainingError(UserError):
    """Training settings that are not allowed, or a run that diverged (NaN loss)."""


Schedule = Literal["plateau", "cosine", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the command lines map their flags onto these fields."""

    epochs: int = 100  # safety cap only: training stops on a validation plateau well before it
    batch_size: int | None = 256  # mini-batch size (None: auto_batch_size of the split)
    batch_cap: int = 256  # the largest batch None may choose
    lr: float = 3e-3  # peak AdamW learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    # plateau: the peak lr, times lr_decay after every decay_patience epochs without progress
    # (no dependence on the cap); cosine: decays to 0 over `epochs`; constant: flat
    schedule: Schedule = "plateau"
    lr_decay: float = 0.5  # plateau schedule: factor applied to the lr at each stall
    decay_patience: int = 2  # plateau schedule: epochs without progress before each decay
    warmup_epochs: float = 1.0  # linear warm-up before the schedule (fraction allowed)
    patience: int = 6  # stop after this many epochs without progress in validation accuracy
    min_delta: float = 0.05  # progress: the validation accuracy up by this many points
    seed: int = 0  # seeds the batch order: the same seed gives the same run
    label_smoothing: float = 0.1  # cross-entropy label smoothing while training (0 = off)
    shift: int = 1  # random translation of image inputs by up to this many pixels (0 = off)
    distill: float = 0.0  # weight of the distillation loss when a teacher is given (0..1)
    temperature: float = 4.0  # softmax temperature of the distillation loss
    # bf16: the training steps' matrix products in bfloat16 (autocast; weights, optimizer and
    # loss stay fp32); auto: bf16 where the CPU has bf16 instructions, else fp32, unless
    # $IAPRUNE_PRECISION (fp32 | bf16) says what auto means on this machine. Evaluation,
    # and so every accuracy written and the choice of the kept epoch, is always fp32.
    precision: Precision = "auto"

    def __post_init__(self):
        if self.epochs < 0 or min(self.batch_cap if self.batch_size is None else
                                  self.batch_size, self.patience, self.decay_patience) < 1:
            raise TrainingError("epochs must be >= 0, batch_size, patience and decay_patience >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"learning rate must be a positive number, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise TrainingError(f"unknown schedule {self.schedule!r}; choose from "
                             f"{', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"unknown precision {self.precision!r}; choose from "
                             f"{', '.join(PRECISIONS)}")
        if not self.min_delta >= 0:
            raise TrainingError(f"min_delta must be >= 0 points, got {self.min_delta}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise TrainingError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
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


AUTO_BATCHES = 32  # batches per epoch the automatic batch size aims at
AUTO_MIN_BATCH = 16  # ... and the smallest batch it takes


def auto_batch_size(n: int, cap: int) -> int:
    """The batch size of `n` training samples when none is set: the power of two nearest to
    n / AUTO_BATCHES, between AUTO_MIN_BATCH and `cap`. It gives the built-in sets' own sizes
    (digits' 1,257 training samples: 32; MNIST's 55,000: the cap) and a small table (a few hundred
    rows) about 30 steps an epoch instead of one or two."""
    nearest = 2 ** round(math.log2(max(n, 1) / AUTO_BATCHES))
    return int(min(cap, max(AUTO_MIN_BATCH, nearest)))


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

    def as_dict(self) -> dict[str, float]:
        """The epoch's values by their keys (records.EPOCH)."""
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """The epochs run and the one kept (best validation accuracy, ties to lower loss)."""

    history: list[EpochRecord]
    best: EpochRecord | None  # None when no epoch was run

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def better(record: EpochRecord, best: EpochRecord | None) -> bool:
    """Whether `record` beats `best`: higher validation accuracy, or equal and lower loss.

    Accuracy first, because it is what a pruned model is judged by; the validation loss of a
    label-smoothed model can bottom out epochs before its accuracy stops rising.
    """
    if best is None:
        return True
    return (record.val_accuracy, -record.val_loss) > (best.val_accuracy, -best.val_loss)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16, read from
    Linux's /proc/cpuinfo, well under a millisecond). Elsewhere bf16 products are emulated and
    slower than fp32."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


# Decides what precision="auto" means on this machine: fp32 or bf16 whatever the CPU has (a
# CPU without bf16 instructions can be imitated, e.g. to test the fp32 path everywhere), or auto
# (unset): ask the CPU. An explicit fp32 or bf16 setting is never overridden.
PRECISION_ENV = "IAPRUNE_PRECISION"


def auto_precision(device: torch.device | str = "cpu") -> Literal["bf16", "fp32"]:
    """What precision="auto" resolves to here: $IAPRUNE_PRECISION when it is fp32 or bf16, else
    bf16 on a CPU with bf16 instructions (`native_bf16`) and fp32 elsewhere (a GPU included)."""
    forced = os.environ.get(PRECISION_ENV, "").strip() or "auto"
    if forced not in PRECISIONS:
        raise TrainingError(f"${PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, "
                            f"got {forced!r}")
    if forced != "auto":
        return forced  # type: ignore[return-value]
    return "bf16" if torch.device(device).type == "cpu" and native_bf16() else "fp32"


def uses_bf16(config: TrainConfig, device: torch.device | str = "cpu") -> bool:
    """Whether training under `config` runs its matrix products in bfloat16 here ("auto" is
    `auto_precision`: $IAPRUNE_PRECISION, else the CPU's instructions, so training on a GPU
    stays fp32 unless bf16 is asked for)."""
    precision = auto_precision(device) if config.precision == "auto" else config.precision
    return precision == "bf16"


def progress(record: EpochRecord, mark: EpochRecord | None, min_delta: float) -> bool:
    """Whether `record` is progress over `mark`, the epoch of the last progress: a validation
    accuracy at least `min_delta` points higher (up to float rounding)."""
    return mark is None or record.val_accuracy - mark.val_accuracy >= min_delta - 1e-9


def learning_rate(step: int, total: int, warmup: int, config: TrainConfig,
                  decays: int = 0) -> float:
    """The learning rate at optimizer step `step`: a linear warm-up over `warmup` steps, then
    `plateau` (the peak times lr_decay**decays, `decays` = the stalls so far), `cosine` (to 0
    at step `total`) or `constant`."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "plateau":
        return config.lr * config.lr_decay ** decays
    if config.schedule == "constant":
        return config.lr
    fraction = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))


def kept_metrics(model: nn.Module, data: Dataset, result: TrainResult) -> Metrics:
    """The metrics of the model `train` left: its kept epoch's validation and test figures (the
    same fp32 evaluation of the same weights) plus one pass over the training split."""
    if result.best is None:  # no epoch run: nothing to reuse
        return evaluate(model, data)
    train_loss, train_accuracy = evaluate_split(model, data.train)
    b = result.best
    return Metrics(train_loss, train_accuracy, b.val_loss, b.val_accuracy, b.test_loss,
                   b.test_accuracy)


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
    """Train `model` in place until its validation accuracy stops improving, and leave it
    holding the weights of its best epoch (highest validation accuracy, ties to lower loss).

    Training stops after `config.patience` epochs without progress (the validation accuracy
    `config.min_delta` points above its level at the last progress), but never on a new best
    epoch; `config.epochs` is only a safety cap. The plateau schedule halves the lr after every
    `config.decay_patience` epochs without progress. A fresh AdamW optimizer is made on every
    call, so a model that was shrunk never sees optimizer state of its former shape. The test
    split is reported, never used to choose. With `stop_at_accuracy`, training also stops once
    the validation accuracy reaches it (a pruned model that has recovered its parent's accuracy
    needs no more epochs).
    """
    x, y = data.train.x, data.train.y  # (n, n_features), (n,)
    n = len(y)
    batch_size = config.batch_size or auto_batch_size(n, config.batch_cap)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * config.epochs  # only the cosine schedule reads it
    warmup = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    # fused: one kernel per step for all parameters (~25% faster epochs for these small MLPs)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr,
                                  weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(config.seed)
    # bf16 products with fp32 accumulation: 2.8x faster steps for 784-256-64-10 on a CPU with
    # AVX512-BF16, at equal accuracy (README, "What we chose")
    bf16 = uses_bf16(config, x.device)
    if bf16:  # what autocast would do to every batch, done once: half the bytes to gather
        x = x.to(torch.bfloat16)
    use_teacher = teacher is not None and config.distill > 0
    if use_teacher:  # the teacher is frozen: its logits are computed once, not per batch
        with torch.no_grad():
            teacher.eval()
            teacher_logits = torch.cat([logits_of(teacher, xb)
                                        for xb in batches(data.train.x, 8192)])

    history: list[EpochRecord] = []
    if log_path is not None:
        write_epochs(log_path, [])  # the header, even when no epoch runs
    best, best_state = None, copy.deepcopy(model.state_dict())
    mark, stale, decays = None, 0, 0  # the epoch of the last progress, epochs since, decays
    bar = tqdm(range(1, config.epochs + 1), desc=desc, unit="epoch", leave=False,
               disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    step = 0
    for epoch in bar:
        started = time.perf_counter()
        model.train()
        # One permutation per epoch; each batch is one row gather (no per-sample Python work,
        # and cheaper than copying the whole shuffled set at once); a streamed folder decodes
        # the same rows in the same order.
        perm = torch.randperm(n, generator=generator).to(x.device)  # the generator is the CPU's
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        for start, xb in zip(range(0, n, batch_size), batches(x, batch_size, perm),
                             strict=True):
            for group in optimizer.param_groups:  # set the lr first, as nanoGPT does
                group["lr"] = learning_rate(step, total_steps, warmup, config, decays)
            idx = perm[start:start + batch_size]
            yb = y.index_select(0, idx)
            if config.shift and len(data.input_shape) >= 2:
                xb = random_shift(xb, data.input_shape, config.shift, generator)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                # (b, classes), before a trailing softmax; the loss is taken in fp32
                logits = logits_of(model, xb).float()
            loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            if use_teacher:
                soft = _distill_loss(logits, teacher_logits.index_select(0, idx),
                                     config.temperature)
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
            write_epochs(log_path, [r.as_dict() for r in history])
        # Keep the best epoch by validation accuracy; the test split never chooses anything.
        if better(record, best):
            best, best_state = record, copy.deepcopy(model.state_dict())
        # Progress needs min_delta points over the last progress: a new best by a sample or
        # two is noise (on 5,000 images one sample is 0.02 points, the sampling error of an
        # accuracy near 99 % about 0.15) and must not keep a flat run going; gains that small
        # still count once they add up.
        if progress(record, mark, config.min_delta):
            mark, stale = record, 0
        else:
            stale += 1
            if stale % config.decay_patience == 0:  # a stall: the plateau schedule decays
                decays += 1
        bar.set_postfix(val_acc=f"{val_acc:.2f}", best=best.epoch)
        # A plateau: no progress for `patience` epochs - but never stop on a new best epoch,
        # which may be the start of a rise.
        if stale >= config.patience and best is not record:
            break
        if stop_at_accuracy is not None and record.val_accuracy >= stop_at_accuracy:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history, best)
