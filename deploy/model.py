"""An IA-Prune MLP rebuilt from a checkpoint with torch alone; loading into a user's own class."""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "ia-prune/1"  # the `format` field of best_model.pth (and of a bundle's model.pth)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class BundleError(ValueError):
    """A file or folder that is not a valid IA-Prune checkpoint or bundle, or was modified."""


class DeployedMLP(nn.Sequential):
    """Linear, act, ..., Linear in the checkpoint's layout ('0.weight', '0.bias', '2.weight', ...).

    Like the engine's model it flattens its input, so (n, 1, 28, 28) and (n, 784) both work.
    `input_spec`, `classes` and `info` are set by `deploy.load`.
    """

    def __init__(self, sizes: list[int], activation: str):
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:  # no activation after the output layer: logits
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes = list(sizes)
        self.activation = activation
        self.input_spec: Any = None  # deploy.inputs.InputSpec once loaded
        self.classes: list[str] = [str(c) for c in range(sizes[-1])]
        self.info: dict[str, Any] = {}  # the manifest (bundle) or the checkpoint's metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def linears(model: nn.Module) -> list[nn.Linear]:
    """The nn.Linear layers of `model` in registration order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(sizes: list[int]) -> int:
    """Multiply-accumulates of one forward pass of an MLP: the sum of in * out over its Linears."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def file_problem(path: Path, what: str = "file", inside: str | None = None) -> str | None:
    """Why `path` cannot be read as a `what` (missing, or a folder), or None when it is a file.

    A folder holding `inside` (e.g. best_model.pth) gets the path to pass instead.
    """
    if path.is_file():
        return None
    if path.is_dir():
        hint = f" (did you mean {path / inside}?)" if inside and (path / inside).is_file() else ""
        return f"{path}: is a folder, not a {what}{hint}"
    return f"{path}: no such {what}"


def _load_problem(exc: Exception) -> str:
    """What a failed weights_only torch.load means, in our words: torch's own message advises
    retrying with weights_only=False, which could run code from the file, so it is never relayed."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            return (f"refused to load: it holds Python objects ({found.group(1)}), not only "
                    f"tensors and plain values, and loading those could run code")
        return "not a PyTorch checkpoint (torch.load cannot read it)"
    return f"truncated or corrupt checkpoint ({_first_line(exc)})"


def read_checkpoint(data: bytes, source: str | os.PathLike) -> dict[str, Any]:
    """Decode best_model.pth bytes with weights_only=True and check the fields deploy needs."""
    if not data:
        raise BundleError(f"{source}: empty file (an interrupted copy?)")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        raise BundleError(f"{source}: {_load_problem(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BundleError(f"{source}: not an IA-Prune checkpoint (expected format {FORMAT!r})")
    missing = [k for k in ("sizes", "activation", "state_dict") if k not in payload]
    if missing:
        raise BundleError(f"{source}: checkpoint lacks {missing}")
    sizes = payload["sizes"]
    if (not isinstance(sizes, list | tuple) or len(sizes) < 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)):
        raise BundleError(f"{source}: bad layer sizes {sizes!r}")
    if payload["activation"] not in ACTIVATIONS:
        raise BundleError(f"{source}: unknown activation {payload['activation']!r}; "
                          f"deploy knows {sorted(ACTIVATIONS)}")
    return payload


def load_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """(checkpoint dict, the file's bytes) of a best_model.pth; errors name the file."""
    path = Path(path)
    problem = file_problem(path, "checkpoint file", inside="best_model.pth")
    if problem:
        raise BundleError(problem)
    data = path.read_bytes()
    return read_checkpoint(data, path), data


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | os.PathLike) -> DeployedMLP:
    """Rebuild the MLP a checkpoint describes and load its weights strictly, in eval mode."""
    model = DeployedMLP(list(checkpoint["sizes"]), checkpoint["activation"])
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise BundleError(f"{source}: weights do not fit the recorded architecture "
                          f"({_first_line(exc)})") from None
    return model.eval()


def copy_into(target: nn.Module, reference: nn.Module) -> nn.Module:
    """Resize `target`'s nn.Linear layers in place to `reference`'s and load its weights strictly.

    The i-th Linear of `target` (registration order) receives the i-th Linear of `reference`.
    Every check runs before anything is changed, so a refused model is left as it was.
    """
    mine = [(name, m) for name, m in target.named_modules() if isinstance(m, nn.Linear)]
    theirs = linears(reference)
    sizes = [theirs[0].in_features] + [lin.out_features for lin in theirs]
    cls = type(target).__name__
    if len(mine) != len(theirs):
        raise ValueError(f"{cls} has {len(mine)} nn.Linear layers but the checkpoint has "
                         f"{len(theirs)} (sizes {sizes}); load_pruned_model needs one Linear "
                         f"per checkpoint layer, in the same order")
    if mine[0][1].in_features != sizes[0] or mine[-1][1].out_features != sizes[-1]:
        raise ValueError(f"{cls} maps {mine[0][1].in_features} inputs to "
                         f"{mine[-1][1].out_features} outputs but the checkpoint maps "
                         f"{sizes[0]} to {sizes[-1]} (sizes {sizes})")
    state: dict[str, torch.Tensor] = {}
    for (name, lin), ref in zip(mine, theirs, strict=True):
        if (lin.bias is None) != (ref.bias is None):
            has = "has" if ref.bias is not None else "has no"
            raise ValueError(f"{cls}.{name}: the checkpoint's layer {has} a bias, yours differs")
        state[f"{name}.weight"] = ref.weight.detach()
        if ref.bias is not None:
            state[f"{name}.bias"] = ref.bias.detach()
    others = sorted(set(target.state_dict()) - set(state))
    if others:
        raise ValueError(f"{cls} has parameters/buffers the checkpoint does not provide: {others}")

    for (_, lin), ref in zip(mine, theirs, strict=True):
        # new Parameters of the checkpoint's shapes, on the user's device and dtype
        lin.in_features, lin.out_features = ref.in_features, ref.out_features
        old = lin.weight
        lin.weight = nn.Parameter(torch.empty(ref.weight.shape, dtype=old.dtype, device=old.device),
                                  requires_grad=old.requires_grad)
        if lin.bias is not None:
            old = lin.bias
            lin.bias = nn.Parameter(torch.empty(ref.bias.shape, dtype=old.dtype, device=old.device),
                                    requires_grad=old.requires_grad)
    target.load_state_dict(state, strict=True)
    return target.eval()
