"""Input preprocessing recorded with a model, applied to raw arrays, .npy files and .png images."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .png import read_png

MNIST_INPUT = {"shape": [1, 28, 28], "scale": 1 / 255, "flatten": True, "dtype": "uint8",
               "range": [0.0, 1.0]}
RANGE_SLACK = 1e-6  # float rounding allowed at the ends of the input range


@dataclass(frozen=True)
class InputSpec:
    """How raw inputs become model inputs: x = raw * scale, flattened to (batch, prod(shape))."""

    shape: tuple[int, ...] = (1, 28, 28)  # per-sample shape of a raw input
    scale: float = 1 / 255  # raw value * scale = model input (1/255 for uint8 images)
    flatten: bool = True  # the model is fed (batch, prod(shape))
    dtype: str = "uint8"  # dtype of the raw inputs the dataset stores
    range: tuple[float, float] = (0.0, 1.0)  # the model inputs' range after scaling

    @property
    def n_features(self) -> int:
        return math.prod(self.shape)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for manifest.json."""
        d = asdict(self)
        return {**d, "shape": list(self.shape), "range": list(self.range)}

    @classmethod
    def from_dict(cls, info: dict[str, Any] | None, n_in: int) -> InputSpec:
        """The spec recorded in a checkpoint/manifest; when it records no more than a shape,
        MNIST's when n_in is 784, else floats of that shape (or (n_in,)) used as they are."""
        if not info or set(info) <= {"shape"}:
            shape = (info or {}).get("shape", [n_in])
            info = MNIST_INPUT if n_in == 784 else {"shape": shape, "scale": 1.0,
                                                    "dtype": "float32"}
        try:
            spec = cls(shape=tuple(int(n) for n in info.get("shape", [n_in])),
                       scale=float(info.get("scale", 1.0)),
                       flatten=bool(info.get("flatten", True)),
                       dtype=str(info.get("dtype", "uint8")),
                       range=tuple(float(v) for v in info.get("range", [0.0, 1.0])))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"bad input description {info!r} ({exc})") from None
        if spec.n_features != n_in or len(spec.range) != 2:
            raise ValueError(f"input description {info!r} does not fit a model with {n_in} inputs")
        return spec


class Prediction(NamedTuple):
    """What predict returns for a batch of n inputs."""

    labels: torch.Tensor  # (n,) predicted class index
    probabilities: torch.Tensor  # (n, n_classes) softmax of the logits
    logits: torch.Tensor  # (n, n_classes) the model's raw outputs

    @property
    def confidence(self) -> torch.Tensor:
        """(n,) probability of the predicted class."""
        return self.probabilities.max(1).values


def preprocess(inputs: Any, spec: InputSpec, raw: bool | None = None) -> torch.Tensor:
    """Raw inputs -> float32 model inputs, exactly as the evaluation prepared its data.

    `inputs` is one sample (e.g. (28, 28)) or a batch ((n, 28, 28), (n, 1, 28, 28), (n, 784)).
    With raw=None, integer arrays are raw values and get multiplied by spec.scale, float arrays
    are taken as already scaled; either way the result must lie in spec.range.
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
    is_raw = arr.dtype.kind in "iu" if raw is None else raw
    # the same expression as the engine's data loader: float32 first, then * scale
    x = arr.reshape(batch, n).astype(np.float32)
    if is_raw:
        x = x * spec.scale
    if not np.isfinite(x).all():
        raise ValueError("inputs contain NaN or infinite values")
    lo, hi = spec.range
    if x.min() < lo - RANGE_SLACK or x.max() > hi + RANGE_SLACK:
        kind = f"raw (scaled by {spec.scale:.6g})" if is_raw else "already scaled"
        raise ValueError(f"inputs taken as {kind} span [{x.min():.4g}, {x.max():.4g}], outside the "
                         f"model's input range [{lo}, {hi}]; pass raw {spec.dtype} values or "
                         f"values already in range (raw=True/False overrides the guess)")
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
        logits = model(x.to(device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return Prediction(logits.argmax(1), logits.softmax(1), logits)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(h, w, channels) uint8 -> (h, w) uint8: ITU-R 601 luma for colour, transparent = black."""
    channels = image.shape[2]
    values = image.astype(np.float64)
    if channels in (3, 4):
        gray = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    else:
        gray = values[..., 0]
    if channels in (2, 4):  # composite over a black background, MNIST's background colour
        gray = gray * values[..., -1] / 255.0
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (h, w) uint8 image: area averaging when shrinking, bilinear when enlarging."""
    if gray.shape == size:
        return gray
    t = torch.from_numpy(gray.astype(np.float32))[None, None]  # (1, 1, h, w)
    if gray.shape[0] >= size[0] and gray.shape[1] >= size[1]:
        out = F.interpolate(t, size=size, mode="area")
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def read_image(path: str | os.PathLike, spec: InputSpec, invert: bool = False) -> np.ndarray:
    """A .png as one raw uint8 sample of spec.shape (grayscale, resized when needed)."""
    if len(spec.shape) < 2 or math.prod(spec.shape[:-2]) != 1:
        raise ValueError(f"{path}: the model's input {list(spec.shape)} is not one grayscale image")
    gray = to_gray(read_png(path))
    if invert:  # dark digit on a light background -> MNIST's light digit on black
        gray = 255 - gray
    return resize(gray, tuple(spec.shape[-2:])).reshape(spec.shape)


def read_inputs(path: str | os.PathLike, spec: InputSpec, invert: bool = False) -> np.ndarray:
    """Raw samples from a .npy array (one sample or a batch) or a .png image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return read_image(path, spec, invert)
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
        if invert:
            raise ValueError(f"{path}: --invert applies to .png images only")
        return arr
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npy or .png")
