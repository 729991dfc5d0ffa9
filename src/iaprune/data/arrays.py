"""Arrays as a data source: an .npz file, numpy arrays or torch tensors, a torch Dataset.

An .npz holds `x_train, y_train` (and optionally `x_test, y_test`), or `x, y`. A sample is
(features,), (H, W) or (C, H, W); labels are integers or strings. Python objects: a pair
(x, y) of arrays or tensors, or any map-style torch Dataset whose items are (x, y) pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from iaprune.data.dataset import DatasetError
from iaprune.data.prepare import RawData

KEY_SETS = (("x_train", "y_train", "x_test", "y_test"), ("x_train", "y_train"), ("x", "y"))


def read_npz(path: Path) -> RawData:
    """The arrays of an .npz file (loaded without pickle)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            names = next((k for k in KEY_SETS if set(k) <= keys), None)
            if names is None:
                raise DatasetError(f"{path}: holds {sorted(keys)}; expected x_train, y_train "
                                   "(and optionally x_test, y_test), or x, y")
            arrays = [archive[k] for k in names]
    except DatasetError:
        raise
    except ValueError as exc:  # object arrays need pickle, which a data file never gets
        raise DatasetError(f"{path}: cannot read without pickle ({exc}); store labels as "
                           "integers or strings (numpy dtype U), not Python objects") from None
    except (OSError, EOFError, KeyError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    if "y_test" in names and "x_test" not in keys:
        raise DatasetError(f"{path}: holds y_test but no x_test")
    for name, array in zip(names, arrays, strict=True):
        if array.ndim == 0:
            raise DatasetError(f"{path}: {name} is a single value, not one entry per sample")
    return RawData(*arrays)


def as_array(value: Any, what: str) -> np.ndarray:
    """A numpy array of a numpy array, torch tensor, PIL image or nested list."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if type(value).__module__.startswith("PIL."):  # an image: (H, W[, C]) -> (C, H, W)
        arr = np.asarray(value)
        return arr if arr.ndim == 2 else arr.transpose(2, 0, 1)
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{what} is not an array ({exc})") from None


def from_pair(x: Any, y: Any) -> RawData:
    """The samples of an (x, y) pair of arrays or tensors."""
    x, y = as_array(x, "x"), as_array(y, "y")
    if x.ndim == 0 or y.ndim == 0:
        raise DatasetError("x and y must hold one entry per sample, not a single value")
    return RawData(x, y)


def label_of(value: Any, index: int) -> Any:
    """A Python int or str label of one item (0-d tensors and numpy scalars included)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise DatasetError(f"item {index}: label is a tensor of shape {list(value.shape)}, "
                               "not one value")
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def from_torch_dataset(dataset: torch.utils.data.Dataset) -> RawData:
    """The samples of a map-style torch Dataset of (x, y) items, read once into memory."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(tensors) == 2:
        return from_pair(*tensors)
    try:
        n = len(dataset)
    except TypeError:
        raise DatasetError(f"{type(dataset).__name__} has no length: an iterable dataset "
                           "cannot be read; use a map-style Dataset") from None
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetError(f"item {i} of {type(dataset).__name__} is a "
                               f"{type(item).__name__}, not an (x, y) pair")
        x = as_array(item[0], f"item {i}'s x")
        if xs and x.shape != xs[0].shape:
            raise DatasetError(f"item {i}'s x has shape {list(x.shape)}, item 0's "
                               f"{list(xs[0].shape)}")
        xs.append(x)
        ys.append(label_of(item[1], i))
    if not xs:
        raise DatasetError(f"{type(dataset).__name__} is empty")
    labels = np.empty(len(ys), dtype=object)
    labels[:] = ys
    return RawData(np.stack(xs), labels)


def from_python(source: Any) -> RawData:
    """The samples of a Python object: (x, y) or a torch Dataset; anything else is refused."""
    if isinstance(source, torch.utils.data.Dataset):
        return from_torch_dataset(source)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return from_pair(*source)
    raise DatasetError(f"cannot read data from a {type(source).__name__}: give a built-in "
                       "name, a path (folder, .npz, .csv, .parquet), an (x, y) pair of arrays "
                       "or tensors, or a torch Dataset of (x, y) items")
