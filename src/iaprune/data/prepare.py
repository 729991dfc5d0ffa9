"""From a source's raw samples to a Dataset: labels to class indices, stratified splits, scaling.

Every user-data source (image folder, arrays, table, Python object) hands its raw samples to
`prepare`, so the rules below hold for all of them:

- labels are integers or strings; the classes are their sorted distinct values (integers
  sorted as numbers), and a label becomes its class's index;
- a given test split is used as it is; otherwise TEST_FRACTION of the samples is carved off,
  stratified, with the fixed TEST_SEED (the test split never depends on the run's seed);
- the validation split is carved from the training split, stratified, with the run's seed
  (default VAL_FRACTION of it);
- scaling is computed on the training split only: uint8 values * 1/255 and uint16 values
  * 1/65535 (images: model inputs in [0, 1]); feature vectors of other numbers are standardised
  per feature, (x - mean) / std with the training split's mean and std (a constant feature gets
  std 1); other float samples (e.g. float images) are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iaprune.data.dataset import Dataset, DatasetError, Split

TEST_FRACTION = 0.2  # of all samples, when the source has no test split
TEST_SEED = 12345  # the carved test split is the same for every run seed
VAL_FRACTION = 0.1  # of the training split, when no validation size is given
# raw dtype -> the scale that maps it onto [0, 1]
UNIT_SCALE = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}


@dataclass(frozen=True)
class RawData:
    """One source's samples before splitting and scaling."""

    x_train: np.ndarray  # (n, *sample_shape) raw numbers
    y_train: np.ndarray  # (n,) integer or string labels
    x_test: np.ndarray | None = None  # the source's own test split, if it has one
    y_test: np.ndarray | None = None
    features: tuple[str, ...] | None = None  # column names of a table
    target: str | None = None  # the label column of a table


def class_names(values: np.ndarray, what: str) -> tuple[np.ndarray, bool]:
    """(labels as a 1-D array of ints or strs, is_integer); anything else is a DatasetError."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise DatasetError(f"{what} must be one label per sample, got shape {list(values.shape)}")
    kind = values.dtype.kind
    if kind in "iub":
        return values.astype(np.int64), True
    if kind == "f":
        bad = values[~(np.isfinite(values) & (values == np.round(values)))]
        if len(bad):
            raise DatasetError(f"{what}: labels must be integers or strings, got float values "
                               f"such as {bad[0]!r}")
        return values.astype(np.int64), True
    if kind in "US":
        return values.astype(str), False
    if kind == "O":
        if all(isinstance(v, str) for v in values):
            return values.astype(str), False
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return values.astype(np.int64), True
        kinds = sorted({type(v).__name__ for v in values})
        raise DatasetError(f"{what}: labels must be all integers or all strings, got "
                           f"{', '.join(kinds)}")
    raise DatasetError(f"{what}: labels must be integers or strings, got dtype {values.dtype}")


def encode_labels(y_train: np.ndarray, y_test: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(train indices, test indices, class names): classes are the sorted distinct labels."""
    train, is_int = class_names(y_train, "y_train")
    test = None
    if y_test is not None:
        test, test_int = class_names(y_test, "y_test")
        if test_int != is_int:
            raise DatasetError("y_train and y_test hold different label types (integers and "
                               "strings)")
    distinct = np.unique(train)  # sorted: numerically for ints, lexicographically for strs
    if len(distinct) < 2:
        raise DatasetError(f"the training data holds one class only ({distinct[0]!s}): a "
                           "classifier needs at least two")
    if test is not None:
        unseen = np.setdiff1d(np.unique(test), distinct)
        if len(unseen):
            raise DatasetError(f"test class {unseen[0]!s} has no training samples")
    index = lambda y: np.searchsorted(distinct, y).astype(np.int64)  # noqa: E731
    return index(train), None if test is None else index(test), tuple(str(c) for c in distinct)


def stratified_split(y: np.ndarray, n: int, seed: int, what: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(rest, carved): sorted sample indices, `n` carved with each class in proportion.

    Each class gives floor(n * count / total) samples, and the samples still missing come
    from the classes with the largest remainders; within a class they are drawn at random.
    """
    total = len(y)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n < total:
        raise DatasetError(f"{what} size must be between 1 and {total - 1}, got {n}")
    rng = np.random.Generator(np.random.PCG64(seed))
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n / total
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:n - int(quota.sum())]] += 1
    carved = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:q]
                             for c, q in zip(classes, quota, strict=True)])
    mask = np.zeros(total, dtype=bool)
    mask[carved] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def input_shape(sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The model's input shape of one sample: (features,), (1, H, W) or (C, H, W)."""
    if len(sample_shape) == 0:
        return (1,)
    if len(sample_shape) == 2:
        return (1, *sample_shape)
    if len(sample_shape) in (1, 3):
        return tuple(sample_shape)
    raise DatasetError(f"samples of shape {list(sample_shape)} are not supported: use "
                       "(features,), (H, W) or (C, H, W)")


def check_numbers(x: np.ndarray, what: str) -> None:
    """Samples must be real numbers, finite."""
    if x.dtype.kind not in "iubf":
        raise DatasetError(f"{what} must hold numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
        raise DatasetError(f"{what}: sample {row} holds NaN or infinite values")


@dataclass(frozen=True)
class SplitPlan:
    """Which samples of a source go to which split, and their class indices."""

    classes: tuple[str, ...]  # sorted distinct labels
    labels: np.ndarray  # (n,) class index of every training sample of the source
    pool: np.ndarray  # source samples that are not test samples (train + validation)
    train: np.ndarray  # the training split: positions in `pool`
    val: np.ndarray  # the validation split: positions in `pool`
    test: np.ndarray  # the test split: samples of the source's test split, or carved ones
    test_labels: np.ndarray  # (len(test),) their class indices


def plan_splits(y: np.ndarray, y_test: np.ndarray | None, val_size: int | None, seed: int
                ) -> SplitPlan:
    """Labels encoded; the test split given or carved (stratified, TEST_SEED); the validation
    split carved from the rest (stratified, `seed`)."""
    labels, test_labels, classes = encode_labels(y, y_test)
    pool, test = np.arange(len(labels)), np.arange(0 if y_test is None else len(y_test))
    if y_test is None:
        pool, test = stratified_split(labels, max(1, round(TEST_FRACTION * len(labels))),
                                      TEST_SEED, "test")
        test_labels = labels[test]
    n_val = max(1, round(VAL_FRACTION * len(pool))) if val_size is None else val_size
    train, val = stratified_split(labels[pool], n_val, seed, "validation")
    return SplitPlan(classes, labels, pool, train, val, test, test_labels)


def prepare(raw: RawData, name: str, val_size: int | None = None, seed: int = 0,
            record: dict[str, Any] | None = None,
            scaling: dict[str, Any] | None = None) -> Dataset:
    """The Dataset of `raw`: labels encoded, splits carved, scaling computed on the training
    split (or taken from `scaling`, a model's recorded input_info, so that other data is
    prepared exactly as the model's training data was)."""
    x, y, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    for xs, ys, split in ((x, y, "train"), (x_test, y_test, "test")):
        if xs is not None and len(xs) != len(ys):
            raise DatasetError(f"the {split} split has {len(xs)} samples but {len(ys)} labels")
    if len(x) == 0:
        raise DatasetError("the data holds no samples")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DatasetError(f"test samples have shape {list(x_test.shape[1:])}, training "
                           f"samples {list(x.shape[1:])}")
    check_numbers(x, "x_train")
    if x_test is not None:
        check_numbers(x_test, "x_test")
    plan = plan_splits(y, y_test, val_size, seed)
    classes, shape = plan.classes, input_shape(x.shape[1:])
    x_test = x[plan.test] if x_test is None else x_test[plan.test]
    x, rest, carved = x[plan.pool], plan.train, plan.val
    labels, test_labels = plan.labels[plan.pool], plan.test_labels

    scale, bounded = UNIT_SCALE.get(x.dtype, 1.0), x.dtype in UNIT_SCALE
    raw_dtype = x.dtype.name if bounded else "float32"
    mean = std = None
    if scaling is not None:
        scale = float(scaling.get("scale", scale))
        if scaling.get("mean") is not None:
            mean = np.asarray(scaling["mean"], dtype=np.float32)
            std = np.asarray(scaling["std"], dtype=np.float32)
    # float32 first, then * scale: the same expression as the deploy runtime's preprocess
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) * scale  # noqa: E731
    train_x, val_x, test_x = flat(x[rest]), flat(x[carved]), flat(x_test)
    if scaling is None and len(shape) == 1 and not bounded:
        mean = train_x.astype(np.float64).mean(0).astype(np.float32)
        spread = train_x.astype(np.float64).std(0)
        std = np.where(spread > 0, spread, 1.0).astype(np.float32)
    if mean is not None:
        if len(mean) != train_x.shape[1]:
            raise DatasetError(f"the model standardises {len(mean)} features, the data has "
                               f"{train_x.shape[1]}")
        train_x, val_x, test_x = ((a - mean) / std for a in (train_x, val_x, test_x))
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(
        name, Split(tensor(train_x), tensor(labels[rest])),
        Split(tensor(val_x), tensor(labels[carved])), Split(tensor(test_x), tensor(test_labels)),
        shape, len(classes), scale, classes, raw_dtype=raw_dtype,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
        features=raw.features, target=raw.target, bounded=bounded and mean is None,
        record=record)

