"""Self-describing checkpoints (best_model.pth): spec + input + state_dict, loaded safely.

Format "ia-prune/2": {"format", "spec": [layer specs], "input": {"shape": [...], ...},
"state_dict", ...metadata}. Format "ia-prune/1" ({"sizes", "activation"}: an MLP) keeps loading.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from iaprune.data import DATASETS
from iaprune.errors import UserError
from iaprune.files import atomic_write, file_problem, first_line
from iaprune.records import CHECKPOINT_FILE
from iaprune.spec import Net, SpecError, build, check_spec, mlp, spec_of
from iaprune_runtime.model import load_problem
from iaprune_runtime.spec import weights_problem

FORMAT = "ia-prune/2"
LEGACY_FORMAT = "ia-prune/1"  # an MLP by its sizes and activation
# Metadata the commands act on, and the type it must have when present (a hand-made or damaged
# checkpoint with another type would fail deep inside, e.g. in torch.manual_seed).
METADATA = {"dataset": str, "val_size": int, "split_seed": int}


class CheckpointError(UserError):
    """A file that is missing, truncated, corrupt or not an IA-Prune checkpoint."""


def save_checkpoint(path: str | os.PathLike, model: Net, **meta: Any) -> Path:
    """Save `model` as a best_model.pth that rebuilds without any Python class.

    Args:
        path: the file to write (atomically).
        model: a Net (from `build`, `from_module` or a session).
        meta: plain values stored beside the weights, e.g. `dataset="digits"` (then a session
            given this checkpoint as `base_model` knows its data) and `input=data.input_info()`
            (the preprocessing the deploy runtime applies).

    Returns:
        Path: the file written.

    Example:
        >>> from iaprune import build, save_checkpoint
        >>> spec = {"input": [64], "layers": [{"type": "linear", "out": 10}]}
        >>> save_checkpoint("tiny.pth", build(spec, seed=0), dataset="digits")
        PosixPath('tiny.pth')
    """
    spec = spec_of(model)
    info = dict(meta.pop("input", None) or {})
    shape = list(info.get("shape", spec["input"]))
    if shape != spec["input"]:  # a flat-reading model may be described by the image shape
        if not (model.flat_input and math.prod(shape) == math.prod(spec["input"])):
            raise ValueError(f"input shape {shape} does not fit the model's {spec['input']}")
    info["shape"] = shape
    payload = {"format": FORMAT, "spec": spec["layers"], "input": info, **meta}
    # CPU tensors in the default layout, whatever device and layout the model ran in
    payload["state_dict"] = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                             for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, buffer.getvalue())


# what to do with a state_dict or a pickled model: two lines of Python (in one error line)
SAVE = ('iaprune.save_checkpoint("model.pth", iaprune.from_module(model, INPUT_SHAPE), '
        'dataset=DATASET)')
CONVERT_STATE = ("; convert it in Python: model = YourNet(); "
                 f"model.load_state_dict(torch.load(PATH)); {SAVE}")
CONVERT_PICKLE = (f"; if you trust the file, convert it in Python: "
                  f"model = torch.load(PATH, weights_only=False); {SAVE}")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a best_model.pth with weights_only=True; errors name the file."""
    path = Path(path)
    problem = file_problem(path, "checkpoint file", inside=CHECKPOINT_FILE)
    if problem:
        raise CheckpointError(problem)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted copy?)")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        hint = CONVERT_PICKLE if "torch.nn" in str(exc) else ""  # a whole pickled nn.Module
        raise CheckpointError(f"{path}: {load_problem(exc)}{hint}") from None
    if isinstance(payload, dict) and "format" not in payload and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: a plain state_dict (weights without the architecture), "
                              f"not an IA-Prune checkpoint{CONVERT_STATE}")
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{path}: not an IA-Prune checkpoint (expected format {FORMAT!r})")
    needed = ("spec", "state_dict") if payload["format"] == FORMAT else (
        "sizes", "activation", "state_dict")
    for key in needed:
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    for key, kind in METADATA.items():
        value = payload.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            what = "a string" if kind is str else "an integer"
            raise CheckpointError(f"{path}: {key} must be {what}, got {value!r}")
    return payload


def recorded_dataset(checkpoint: str | os.PathLike) -> str | None:
    """The dataset a checkpoint records (a built-in name or an existing path), if any: a run
    given only --base-model prunes the model on its own data."""
    recorded = load_checkpoint(checkpoint).get("dataset")
    if isinstance(recorded, str) and (recorded in DATASETS or Path(recorded).exists()):
        return recorded
    return None


def checkpoint_spec(checkpoint: dict[str, Any], source: str | os.PathLike = "") -> dict[str, Any]:
    """The architecture spec a checkpoint describes (an ia-prune/1 MLP becomes its spec)."""
    info = checkpoint.get("input") if isinstance(checkpoint.get("input"), dict) else {}
    try:
        if checkpoint["format"] == LEGACY_FORMAT:
            sizes = list(checkpoint["sizes"])
            shape = list(info.get("shape", [sizes[0]]))
            if math.prod(shape) != sizes[0]:
                shape = [sizes[0]]
            return mlp(shape, sizes[-1], sizes[1:-1], checkpoint["activation"])
        return {"input": list(info["shape"]), "layers": checkpoint["spec"]}
    except (SpecError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: bad architecture ({first_line(exc)})") from None


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | os.PathLike = "") -> Net:
    """Rebuild the Net a checkpoint describes and load its weights strictly, in eval mode."""
    try:
        spec = check_spec(checkpoint_spec(checkpoint, source))
    except SpecError as exc:
        raise CheckpointError(f"{source}: bad architecture ({first_line(exc)})") from None
    problem = weights_problem(spec, checkpoint["state_dict"])  # before the network is allocated
    if problem:
        raise CheckpointError(f"{source}: weights do not fit the recorded architecture "
                              f"({problem})")
    try:
        model = build(spec)
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the recorded architecture "
                              f"({first_line(exc)})") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[Net, dict[str, Any]]:
    """Load a best_model.pth into a Net in eval mode (weights_only=True, strict=True).

    Args:
        path: a checkpoint written by a session, by `save_checkpoint` or an ia-prune/1 MLP.

    Returns:
        (Net, dict): the model and the checkpoint's fields (spec, input, iteration, ...).

    Example:
        >>> from iaprune import load_model
        >>> model, checkpoint = load_model("tiny.pth")
        >>> checkpoint["dataset"]
        'digits'
    """
    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint, path), checkpoint

