"""Input preprocessing recorded with a model, applied to raw arrays, .npy files, .csv tables and
images."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .images import read_image, read_rgb
from .layers.softmax import logits_of
from .table import read_table

MNIST_INPUT = {"shape": [1, 28, 28], "scale": 1 / 255, "flatten": True, "dtype": "uint8",
               "range": [0.0, 1.0]}
RANGE_SLACK = 1e-6  # float rounding allowed at the ends of the input range


@dataclass(frozen=True)
class InputSpec:
    """How raw inputs become model inputs: x = (raw * scale - mean) / std per feature (mean and
    std only where recorded: tables and feature arrays), flattened to (batch, prod(shape))."""

    shape: tuple[int, ...] = (1, 28, 28)  # per-sample shape of a raw input
    scale: float = 1 / 255  # raw value * scale = model input (1/255 for uint8 images)
    flatten: bool = True  # the model is fed (batch, prod(shape))
    dtype: str = "uint8"  # dtype of the raw inputs the dataset stores
    range: tuple[float, float] | None = (0.0, 1.0)  # the model inputs' range (None: unchecked)
    mean: tuple[float, ...] | None = None  # per feature, subtracted after scaling
    std: tuple[float, ...] | None = None  # per feature, divided by after the mean
    features: tuple[str, ...] | None = None  # a table's column names, one per feature

    @property
    def n_features(self) -> int:
        return math.prod(self.shape)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for manifest.json."""
        d = {k: v for k, v in asdict(self).items() if k not in ("mean", "std", "features")}
        d.update(shape=list(self.shape), range=None if self.range is None else list(self.range))
        if self.mean is not None:  # written only when set: older manifests stay as they were
            d.update(mean=list(self.mean), std=list(self.std))
        if self.features is not None:
            d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, info: dict[str, Any] | None, n_in: int) -> InputSpec:
        """The spec recorded in a checkpoint/manifest; when it records no more than a shape,
        MNIST's when n_in is 784, else floats of that shape (or (n_in,)) used as they are."""
        if not info or set(info) <= {"shape"}:
            shape = (info or {}).get("shape", [n_in])
            info = MNIST_INPUT if n_in == 784 else {"shape": shape, "scale": 1.0,
                                                    "dtype": "float32"}
        floats = lambda key: None if info.get(key) is None else tuple(  # noqa: E731
            float(v) for v in info[key])
        try:
            spec = cls(shape=tuple(int(n) for n in info.get("shape", [n_in])),
                       scale=float(info.get("scale", 1.0)),
                       flatten=bool(info.get("flatten", True)),
                       dtype=str(info.get("dtype", "uint8")),
                       range=floats("range") if "range" in info else (0.0, 1.0),
                       mean=floats("mean"), std=floats("std"),
                       features=None if info.get("features") is None else tuple(
                           str(name) for name in info["features"]))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"bad input description {info!r} ({exc})") from None
        constants = [spec.scale, *(spec.range or ()), *(spec.mean or ()), *(spec.std or ())]
        if not all(math.isfinite(v) for v in constants):
            raise ValueError(f"input description {info!r}: non-finite preprocessing constant "
                             "(NaN or inf in scale, range, mean or std)")
        standardised = [len(v) for v in (spec.mean, spec.std) if v is not None]
        if spec.n_features != n_in or (spec.range is not None and len(spec.range) != 2) or \
                standardised not in ([], [n_in, n_in]) or \
                (spec.std is not None and not all(v > 0 for v in spec.std)) or \
                (spec.features is not None and len(spec.features) != n_in):
            raise ValueError(f"input description {info!r} does not fit a model with {n_in} inputs")
        return spec


class InputRangeError(ValueError):
    """Inputs outside the model's input range once scaled; `found` says what was seen."""

    def __init__(self, found: str, advice: str):
        super().__init__(f"{found}; {advice}")
        self.found = found


class Prediction(NamedTuple):
    """What predict returns for a batch of n inputs."""

    labels: torch.Tensor  # (n,) predicted class index
    probabilities: torch.Tensor  # (n, n_classes) softmax of the logits
    logits: torch.Tensor  # (n, n_classes) the model's raw outputs (before a final softmax)

    @property
    def confidence(self) -> torch.Tensor:
        """(n,) probability of the predicted class."""
        return self.probabilities.max(1).values


def preprocess(inputs: Any, spec: InputSpec, raw: bool | None = None) -> torch.Tensor:
    """Raw inputs -> float32 model inputs, exactly as the evaluation prepared its data.

    `inputs` is one sample (e.g. (28, 28)) or a batch ((n, 28, 28), (n, 1, 28, 28), (n, 784)).
    With raw=None, integer arrays are raw values and get multiplied by spec.scale, float arrays
    are taken as already scaled; either way the result must lie in spec.range (when set). A
    model that standardises (spec.mean) takes raw values unless raw=False: they are scaled,
    then (x - mean) / std per feature, as its training data was.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    arr = np.asarray(inputs)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"inputs must be integer or float numbers, got dtype {arr.dtype}")
    n = spec.n_features
    if arr.size == n:
        batch = 1
    elif arr.ndim >= 2 and arr.size > 0 and math.prod(arr.shape[1:]) == n:
        batch = arr.shape[0]
    else:
        raise ValueError(f"inputs of shape {list(arr.shape)} do not fit the model's input "
                         f"{list(spec.shape)} ({n} values per sample)")
    is_raw = (arr.dtype.kind in "iu" or spec.mean is not None) if raw is None else raw
    # the same expression as the engine's data loader: float32 first, then * scale
    x = arr.reshape(batch, n).astype(np.float32)
    if is_raw:
        x = x * spec.scale
        if spec.mean is not None:
            x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if not np.isfinite(x).all():
        raise ValueError("inputs contain NaN or infinite values")
    lo, hi = spec.range if spec.range is not None else (-np.inf, np.inf)
    if x.min() < lo - RANGE_SLACK or x.max() > hi + RANGE_SLACK:
        kind = f"raw (scaled by {spec.scale:.6g})" if is_raw else "already scaled"
        raise InputRangeError(f"inputs taken as {kind} span [{x.min():.4g}, {x.max():.4g}], "
                              f"outside the model's input range [{lo}, {hi}]",
                              f"pass raw {spec.dtype} values or values already in range "
                              f"(raw=True/False overrides the guess)")
    out = torch.from_numpy(np.ascontiguousarray(x))
    return out if spec.flatten else out.reshape(batch, *spec.shape)


@torch.no_grad()
def predict(model: nn.Module, inputs: Any, spec: InputSpec | None = None,
            raw: bool | None = None) -> Prediction:
    """Classify raw inputs with `model`, applying its recorded preprocessing (see preprocess)."""
    spec = spec or getattr(model, "input_spec", None)
    if spec is None:
        raise ValueError("no input preprocessing known for this model: load it with deploy.load "
                         "or deploy.load_pruned_model, or pass spec=InputSpec(...)")
    x = preprocess(inputs, spec, raw)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        # the logits: before a trailing softmax, so that probabilities are softmax(logits)
        logits = logits_of(model, x.to(device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return Prediction(logits.argmax(1), logits.softmax(1), logits)


def image_sample(gray: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A (h, w) uint8 image (0..255) as one sample of `spec`: raw uint8 when the model scales
    by 1/255 (bit-identical to the training data), else float32 already in spec.range."""
    sample = gray.reshape(spec.shape)
    if math.isclose(spec.scale * 255, 1.0):
        return sample
    lo, hi = spec.range or (0.0, 1.0)
    return (lo + (hi - lo) * sample.astype(np.float32) / 255).astype(np.float32)


def read_inputs(path: str | os.PathLike, spec: InputSpec, invert: bool | None = None,
                reads: Sequence[int] | None = None, max_pixels: int | None = None
                ) -> tuple[np.ndarray, str | None]:
    """(raw samples, note) from a .npy array (one sample or a batch), a .csv table with a
    header (the columns `reads`, default all, found by name) or an image file.

    Images are read with Pillow (see deploy.images): one grayscale channel (invert=None detects
    a light background), or RGB for a model of 3-channel images; the note says what was done to
    an image, or is None. Images above `max_pixels` (images.pixel_limit) and .npy headers
    declaring more values than the file holds are refused before anything is allocated.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            # mapped, not read: a header declaring more values than the file holds fails here
            arr = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
        if invert:
            raise ValueError(f"{path}: --invert applies to images only")
        return arr, None
    if path.suffix.lower() == ".csv":
        if invert:
            raise ValueError(f"{path}: --invert applies to images only")
        return read_table(path, spec.features, range(spec.n_features) if reads is None
                          else reads), None
    if len(spec.shape) == 3 and spec.shape[0] == 3:  # a model of RGB images
        rgb = read_rgb(path, tuple(spec.shape[-2:]), max_pixels)
        return image_sample(255 - rgb if invert else rgb, spec), None
    if len(spec.shape) < 2 or math.prod(spec.shape[:-2]) != 1:
        raise ValueError(f"{path}: the model's input {list(spec.shape)} is neither one grayscale "
                         "nor one RGB image")
    gray, note = read_image(path, tuple(spec.shape[-2:]), invert, max_pixels)
    return image_sample(gray, spec), note
