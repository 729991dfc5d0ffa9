"""Command line of the deploy step: `python -m iaprune.deploy bundle | predict | verify`.

The deploy runtime is its own small package, `iaprune_runtime` (torch + numpy only, never this
library), so that a deployed model needs neither IA-Prune nor its dependencies; this module
gives it the step's name inside the package and the one thing only the library can do: read
your own data for `verify`. The test split of a table, an .npz or an image folder may be a
carved one (stratified, fixed seed) that only `load_dataset` reproduces, so the library
prepares it, with the bundle's recorded scaling, and the runtime evaluates the bundle on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from iaprune.checkpoint import load_checkpoint
from iaprune.data import DATASETS, check_name, fingerprint_change, is_path, load_dataset
from iaprune.data.source import kind_of
from iaprune.errors import UserError
from iaprune_runtime.__main__ import OwnTestSplit, main, run
from iaprune_runtime.bundle import MODEL_FILE


def recorded_target(manifest: dict[str, Any], bundle: Path) -> str | None:
    """A table's label column as the bundle records it; bundles written before the manifest
    recorded it have it in their model.pth's input description (read back, sha256-checked)."""
    if manifest.get("target") is not None:
        return str(manifest["target"])
    info = load_checkpoint(bundle / MODEL_FILE).get("input")
    return info.get("target") if isinstance(info, dict) else None


def own_test_split(dataset: str, bundle: Path, manifest: dict[str, Any],
                   data_root: str | None = None) -> OwnTestSplit:
    """The test split of `dataset` (a path, or a built-in set the runtime does not read) for
    verify: model inputs prepared exactly as the bundle's training data was (its recorded
    scaling, label column, image size and split seed) and class indices in the bundle's order.

    A missing path is one error naming --dataset PATH; data of other classes or another input
    size is refused; data whose fingerprint differs from the bundle's record is evaluated with
    a note (the accuracy comparison decides).
    """
    check_name(dataset)  # a built-in name or a path
    recorded = manifest.get("dataset")
    if is_path(dataset) and not Path(dataset).exists():
        why = " (moved or deleted since the bundle was made?)" if dataset == recorded else ""
        raise UserError(f"{dataset}: no such file or folder{why}; name the data with "
                        f"--dataset PATH")
    info = manifest.get("input") if isinstance(manifest.get("input"), dict) else {}
    # the recorded validation size belongs to the recorded data (the test split never uses it)
    val_size = manifest.get("val_size") if dataset == recorded else None
    seed = manifest.get("split_seed") or 0
    if dataset in DATASETS:
        data = load_dataset(dataset, data_root, val_size=val_size, seed=seed)
    else:
        kind = kind_of(Path(dataset))
        shape = info.get("shape") or []
        data = load_dataset(
            dataset, val_size=val_size, seed=seed,
            target=recorded_target(manifest, bundle) if kind == "table" else None,
            image_size=tuple(shape[-2:]) if kind == "images" and len(shape) == 3 else None,
            scaling=info)
    n_inputs, classes = math.prod(info.get("shape") or [0]), manifest.get("classes")
    if n_inputs and data.n_features != n_inputs:
        raise UserError(f"{bundle}: the model reads {n_inputs} inputs, {dataset} has "
                        f"{data.n_features}")
    if isinstance(classes, list) and [str(c) for c in classes] != list(data.classes):
        raise UserError(f"{bundle}: the model's classes {classes} differ from {dataset}'s "
                        f"{list(data.classes)}")
    saved = manifest.get("data")
    change = None
    if isinstance(saved, dict) and isinstance(saved.get("fingerprint"), dict) and \
            data.record and saved.get("kind") == data.record.get("kind"):
        change = fingerprint_change(saved, data.record)
    note = None if change is None else (f"{dataset} differs from the data the bundle's model "
                                        f"was trained on: {change}; evaluating it anyway")
    return OwnTestSplit(data.test.x, data.test.y.numpy(), note)


def entry(argv: list[str] | None = None) -> int:
    """Run the deploy command line on `argv` (verify reads your own data through the library);
    expected errors are one line, exit code 2."""
    return run(lambda args: main(args, own_data=own_test_split), argv)


if __name__ == "__main__":
    raise SystemExit(entry())
