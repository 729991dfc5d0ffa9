"""Evaluate a model or a checkpoint: loss and accuracy on the train, validation and test splits."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iaprune import cli
from iaprune.checkpoint import load_model
from iaprune.data import DATASETS, PYTHON_OBJECT, Dataset, Split, dataset_sizes, load_dataset
from iaprune.data.rows import batches
from iaprune.device import for_inference, inference_batch
from iaprune.errors import UserError
from iaprune.groups import units
from iaprune.model import hidden_label
from iaprune.spec import describe, shapes, spec_of
from iaprune_runtime.budget import add_memory_flag, memory_limit
from iaprune_runtime.layers.softmax import logits_of


@dataclass(frozen=True)
class Metrics:
    """Losses (mean cross-entropy) and accuracies (percent) of one model on the three splits."""

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in percent) of `model` on one split."""
    model = for_inference(model)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    batch = inference_batch(model)
    for start, x in zip(range(0, len(split), batch), batches(split.x, batch), strict=True):
        y = split.y[start:start + batch]
        logits = logits_of(model, x)  # before a trailing softmax
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    if not torch.isfinite(torch.tensor(loss_sum)):
        raise UserError("the model's loss is not finite (NaN or inf): its weights have diverged")
    return loss_sum / len(split), 100.0 * correct / len(split)


def evaluate(model: nn.Module, data: Dataset) -> Metrics:
    """Loss and accuracy of a model on the train, validation and test splits of a dataset.

    Args:
        model: a network taking the dataset's inputs (a Net, a loaded checkpoint, ...).
        data: a Dataset from `load_dataset`.

    Returns:
        Metrics: mean cross-entropy losses and accuracies in percent (`test_accuracy`, ...).

    Example:
        >>> from iaprune import build, evaluate, load_dataset
        >>> data = load_dataset("digits")
        >>> net = build({"input": [1, 8, 8], "layers": [{"type": "linear", "out": 10}]}, seed=0)
        >>> 0 <= evaluate(net, data).test_accuracy <= 100
        True
    """
    train, val, test = (evaluate_split(model, s) for s in (data.train, data.val, data.test))
    return Metrics(*train, *val, *test)


def format_metrics(metrics: Metrics) -> str:
    """A small aligned table of the metrics (accuracy to 2 decimals, as in the result tables)."""
    rows = [("train", metrics.train_loss, metrics.train_accuracy),
            ("val", metrics.val_loss, metrics.val_accuracy),
            ("test", metrics.test_loss, metrics.test_accuracy)]
    lines = [f"{'split':<6}{'loss':>10}{'accuracy %':>12}"]
    lines += [f"{name:<6}{loss:>10.4f}{acc:>12.2f}" for name, loss, acc in rows]
    return "\n".join(lines)


def check_dataset(model: nn.Module, trained_on: str | None, name: str, source: str) -> None:
    """Refuse a dataset whose input or class count differs from the model's, naming both."""
    n_in, n_classes = dataset_sizes(name)
    spec = spec_of(model)
    sizes = [math.prod(spec["input"]), shapes(spec["layers"], spec["input"])[-1][0]]
    if sizes == [n_in, n_classes]:
        return
    model = f"{sizes[0]} inputs, {sizes[-1]} classes"
    if trained_on in DATASETS and trained_on != name:
        raise UserError(f"{source}: trained on {trained_on} ({model}), but {name} has {n_in} "
                         f"inputs and {n_classes} classes; leave out --dataset to evaluate on "
                         f"{trained_on}")
    raise UserError(f"{source}: the model ({model}; {describe(spec)}) does not fit {name} "
                     f"({n_in} inputs, {n_classes} classes)")


def load_own_data(source: str, checkpoint: dict, args: argparse.Namespace,
                  val_size: int | None) -> Dataset:
    """The user's data as the model was trained on it: the recorded target column, image size
    and scaling (mean/std) unless flags say otherwise."""
    info = checkpoint.get("input") if isinstance(checkpoint.get("input"), dict) else {}
    shape = info.get("shape") or []
    folder = Path(source).is_dir()
    image_size = args.image_size or (tuple(shape[-2:]) if folder and len(shape) == 3 else None)
    return load_dataset(source, val_size=val_size, seed=checkpoint.get("split_seed", 0),
                        target=args.target or (info.get("target") if not folder else None),
                        image_size=image_size if folder else None,
                        scaling=info if info.get("mean") is not None else None,
                        stream=args.stream)


def check_own_data(model: nn.Module, checkpoint: dict, data: Dataset, source: str) -> None:
    """Refuse data whose input size, class count or class names differ from the model's."""
    spec = spec_of(model)
    sizes = [math.prod(spec["input"]), shapes(spec["layers"], spec["input"])[-1][0]]
    if sizes != [data.n_features, data.num_classes]:
        raise UserError(f"{source}: the model ({sizes[0]} inputs, {sizes[1]} classes) does not "
                        f"fit {data.name} ({data.n_features} inputs, {data.num_classes} classes)")
    classes = checkpoint.get("classes")
    if isinstance(classes, list) and [str(c) for c in classes] != list(data.classes):
        raise UserError(f"{source}: the model's classes {classes} differ from {data.name}'s "
                        f"{list(data.classes)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iaprune.validator",
        description="Re-evaluate a best_model.pth on the train, validation and test splits.")
    parser.add_argument("checkpoint", help="path to a best_model.pth")
    parser.add_argument("--dataset", help=f"dataset to evaluate on: {', '.join(DATASETS)} or a "
                        "path (image folder, .npz, .csv, .parquet) (default: the one recorded "
                        "in the checkpoint)")
    parser.add_argument("--target", help="label column of a table (default: the recorded one)")
    parser.add_argument("--image-size", type=int, help="resize a folder's images to N x N "
                        "(default: the model's input size)")
    parser.add_argument("--stream", action="store_const", const=True, help="read an image "
                        "folder from disk in batches (automatic when it would take more than "
                        "half the available memory)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw/ etc. "
                        "(default: $IAPRUNE_DATA, else data/)")
    parser.add_argument("--val-size", type=int, help="validation split size "
                        "(default: the one recorded in the checkpoint)")
    add_memory_flag(parser)
    args = parser.parse_args(argv)
    with memory_limit(args.max_memory):
        return validate(args)


def validate(args: argparse.Namespace) -> int:
    """Re-evaluate args.checkpoint and print its metrics (the command line's work)."""
    model, checkpoint = load_model(args.checkpoint)
    trained_on = checkpoint.get("dataset")
    name = args.dataset or trained_on or "mnist"
    if name == PYTHON_OBJECT:
        raise UserError(f"{args.checkpoint}: trained on data given as a Python object; give "
                        "--dataset PATH (or evaluate it with iaprune.validator.evaluate)")
    # the recorded validation size belongs to the dataset the model was trained on
    recorded = checkpoint.get("val_size") if name == trained_on else None
    val_size = recorded if args.val_size is None else args.val_size  # 0 is refused, not unset
    if name in DATASETS:
        given = [f for f, v in (("--target", args.target), ("--image-size", args.image_size),
                                ("--stream", args.stream)) if v is not None]
        if given:
            raise UserError(f"{given[0]} applies to your own data, not to the built-in {name}")
        check_dataset(model, trained_on, name, args.checkpoint)  # before reading any data
        data = load_dataset(name, args.data_root, val_size=val_size,
                            seed=checkpoint.get("split_seed", 0))
    else:
        data = load_own_data(name, checkpoint, args, val_size)
        check_own_data(model, checkpoint, data, args.checkpoint)
    print(f"{args.checkpoint}: {name}, units {hidden_label(units(model))}, "
          f"{describe(spec_of(model))}")
    print(format_metrics(evaluate(model, data)))
    return 0


def entry(argv: list[str] | None = None) -> int:
    """The console entry point: main() with expected errors as one line, exit code 2."""
    return cli.run(main, argv)


if __name__ == "__main__":
    raise SystemExit(entry())
