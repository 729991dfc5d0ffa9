"""A dataset in memory: train/val/test splits of model inputs plus how raw inputs became them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iaprune.errors import UserError


class DatasetError(UserError):
    """Data that cannot be used: a corrupt or unverifiable file, a bad folder, table or array."""


class MissingDataError(DatasetError):
    """Dataset files that are absent and could not be downloaded."""


@dataclass(frozen=True)
class Split:
    """One split: model inputs flattened (raw * scale, standardised where recorded), labels."""

    x: Tensor  # (n, n_features) float32
    y: Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        """This split on `device` (itself when it is there already)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits in memory plus what a model needs to know about the input.

    A model input is `(raw * scale - mean) / std` per feature, where `mean` and `std` are
    recorded for standardised sources (tables, feature arrays) and absent otherwise.
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]  # e.g. (1, 28, 28); x is stored flattened
    num_classes: int
    scale: float  # raw value * scale = model input (1/255 for uint8 images)
    classes: tuple[str, ...]
    # Set by the user-data sources (None for the built-in sets, whose input_info stays as it was):
    raw_dtype: str | None = None  # dtype of the raw inputs (uint8, uint16, float32)
    mean: tuple[float, ...] | None = None  # per feature, subtracted after scaling
    std: tuple[float, ...] | None = None  # per feature, divided by after subtracting the mean
    features: tuple[str, ...] | None = None  # column names of a table
    target: str | None = None  # the label column of a table
    bounded: bool = True  # model inputs lie in [0, 1] (images); False: no fixed range
    record: dict[str, Any] | None = None  # where the data came from: source + fingerprint

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with its splits on `device` (no copy on the device they are on)."""
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))

    def input_info(self) -> dict[str, Any]:
        """The input preprocessing recorded in checkpoints and deploy bundles."""
        if self.raw_dtype is None:  # a built-in set: exactly what earlier versions recorded
            return {"shape": list(self.input_shape), "scale": self.scale, "flatten": True,
                    "dtype": "uint8" if self.name != "digits" else "float32",
                    "range": [0.0, 1.0]}
        info: dict[str, Any] = {"shape": list(self.input_shape), "scale": self.scale,
                                "flatten": True, "dtype": self.raw_dtype,
                                "range": [0.0, 1.0] if self.bounded else None,
                                "classes": list(self.classes)}
        if self.mean is not None:
            info.update(mean=list(self.mean), std=list(self.std))
        if self.features is not None:
            info["features"] = list(self.features)
        if self.target is not None:
            info["target"] = self.target
        return info
