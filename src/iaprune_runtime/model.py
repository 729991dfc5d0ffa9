"""An IA-Prune network rebuilt from a checkpoint's architecture spec, with torch alone.

The runtime never imports the library; both build networks from the same layer registry
(iaprune_runtime.layers, through iaprune_runtime.spec), so they have the same layer types and
fields, the same module layout and state_dict keys ('0.weight', '2.bias', ...), and the same
input rule (a network whose first shape-changing layer is a Linear or a select reads its input
flattened; any other reshapes it to (batch, *input)). Checkpoints "ia-prune/2" (spec + input +
state_dict) and "ia-prune/1" (an MLP by its sizes and activation) load with weights_only=True
and strict=True.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import file_problem, first_line
from .layers import Select, SpecError, entry_of, max_pool
from .spec import (
    SpecNet,
    activations,
    check_layer,
    check_spec,
    describe,
    fields,
    mlp_layers,
    modules,
    reads_flat,
    shapes,
    weights_problem,
    wiring,
)

__all__ = ["FORMAT", "LEGACY_FORMAT", "BundleError", "DeployedMLP", "DeployedNet", "Select",
           "SpecError", "check_layer", "check_spec", "count_macs", "count_params", "describe",
           "load_checkpoint_file", "max_pool", "mlp_spec", "model_from_checkpoint",
           "read_checkpoint", "shapes"]

FORMAT = "ia-prune/2"  # the `format` field of best_model.pth (and of a bundle's model.pth)
LEGACY_FORMAT = "ia-prune/1"  # an MLP by its "sizes" and "activation"


class BundleError(ValueError):
    """A file or folder that is not a valid IA-Prune checkpoint or bundle, or was modified."""


def mlp_spec(sizes: Sequence[int], activation: str, input_shape: Sequence[int] | None = None
             ) -> dict[str, Any]:
    """The spec of the MLP [n_in, h_1, ..., n_out]: linear, activation, ..., linear."""
    if activation not in activations():
        raise SpecError(f"unknown activation {activation!r}; deploy knows {sorted(activations())}")
    if (not isinstance(sizes, list | tuple) or len(sizes) < 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)):
        raise SpecError(f"bad layer sizes {sizes!r}")
    shape = list(input_shape) if input_shape is not None else [sizes[0]]
    if math.prod(shape) != sizes[0]:
        shape = [sizes[0]]
    return check_spec({"input": shape, "layers": mlp_layers(sizes[1:-1], sizes[-1], activation)})


class DeployedNet(SpecNet):
    """The network of a spec, in the library's build layout ('0.weight', '0.bias', '2.weight', ...).

    Like the engine's Net it flattens its input (flat-reading specs) or reshapes it to
    (batch, *input), so (n, 784) and (n, 1, 28, 28) both work. `input_spec`, `classes` and
    `info` are set by `deploy.load`.
    """

    def __init__(self, spec: dict[str, Any]):
        spec = check_spec(spec)
        layer_shapes = shapes(spec["layers"], spec["input"])
        super().__init__(*modules(spec))
        self.spec = spec
        self.layer_shapes = layer_shapes  # the input, then every layer's output
        self.input_shape = tuple(spec["input"])
        self.flat_input = reads_flat(spec["layers"])
        self.set_graph(wiring(spec["layers"]), [layer.get("name") for layer in spec["layers"]])
        self.input_spec: Any = None  # deploy.inputs.InputSpec once loaded
        self.classes: list[str] = [str(c) for c in range(self.layer_shapes[-1][0])]
        self.info: dict[str, Any] = {}  # the manifest (bundle) or the checkpoint's metadata

    @property
    def inference_batch(self) -> int:
        """The engine's evaluation batch (iaprune.device.inference_batch): the largest power of two
        whose widest layer holds at most 2**20 values, at most 8192."""
        widest = max(math.prod(shape) for shape in self.layer_shapes)
        fits = max(1, (1 << 20) // widest)
        return min(8192, 1 << (fits.bit_length() - 1))

    @property
    def n_inputs(self) -> int:
        """Values per sample a caller passes in (the whole input, also after input pruning)."""
        return math.prod(self.input_shape)

    @property
    def inputs_read(self) -> list[int]:
        """Indices of the input features the network reads: its select's, else all."""
        selects = [m for m in self if entry_of(m).role == "inputs"]
        return selects[0].indices.tolist() if selects else list(range(self.n_inputs))

    @property
    def features_read(self) -> int:
        """Input features the network reads: the length of its select, else all of them."""
        selects = [m for m in self if entry_of(m).role == "inputs"]
        return len(selects[0].indices) if selects else self.n_inputs

    @property
    def hidden(self) -> list[int]:
        """Units (neurons, channels) of every Linear/Conv2d (producer) but the output layer."""
        kinds = [(m, entry_of(m)) for m in self]
        return [kind.units(m) for m, kind in kinds if kind.role == "producer"][:-1]

    @property
    def sizes(self) -> list[int] | None:
        """[n_in, h_1, ..., n_out] of an MLP (Linears and activations, maybe after a select);
        None for any other network."""
        kinds = [(m, entry_of(m)) for m in self]
        if kinds[0][1].role == "inputs":
            kinds = kinds[1:]
        if any(not kind.activation and (kind.role != "producer" or kind.spatial)
               for _, kind in kinds):
            return None
        linears = [(m, kind) for m, kind in kinds if kind.role == "producer"]
        return [linears[0][1].features(linears[0][0])] + [kind.units(m) for m, kind in linears]

    @property
    def activation(self) -> str | None:
        """The activation of the network when it uses exactly one kind, else None."""
        kinds = {layer["type"] for layer in self.spec["layers"]} & set(activations())
        return kinds.pop() if len(kinds) == 1 else None


class DeployedMLP(DeployedNet):
    """The MLP [n_in, h_1, ..., n_out] with one activation: Linear, act, ..., Linear."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__(mlp_spec(sizes, activation))


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: DeployedNet) -> int:
    """Multiply-accumulates of one forward pass: in·out per Linear, out positions · out channels
    · in channels · kh · kw per Conv2d; other layers count 0."""
    return sum(entry_of(module).macs(module, shape)
               for module, shape in zip(model, model.layer_shapes[1:], strict=True))


# ---- checkpoints ------------------------------------------------------------------------------

def load_problem(exc: Exception) -> str:
    """What a failed weights_only torch.load means, in our words: torch's own message advises
    retrying with weights_only=False, which could run code from the file, so it is never relayed."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            return (f"refused to load: it holds Python objects ({found.group(1)}), not only "
                    f"tensors and plain values, and loading those could run code")
        return "not a PyTorch checkpoint (torch.load cannot read it)"
    return f"truncated or corrupt checkpoint ({first_line(exc)})"


def read_checkpoint(data: bytes, source: str | os.PathLike) -> dict[str, Any]:
    """Decode best_model.pth bytes with weights_only=True and check the fields deploy needs."""
    if not data:
        raise BundleError(f"{source}: empty file (an interrupted copy?)")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        raise BundleError(f"{source}: {load_problem(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise BundleError(f"{source}: not an IA-Prune checkpoint (expected format {FORMAT!r} "
                          f"or {LEGACY_FORMAT!r})")
    needed = ("spec", "state_dict") if payload["format"] == FORMAT else (
        "sizes", "activation", "state_dict")
    missing = [k for k in needed if k not in payload]
    if missing:
        raise BundleError(f"{source}: checkpoint lacks {missing}")
    checkpoint_spec(payload, source)  # a bad architecture is refused here, before any use
    return payload


def checkpoint_spec(checkpoint: dict[str, Any], source: str | os.PathLike = "") -> dict[str, Any]:
    """The checked spec a checkpoint describes (an ia-prune/1 MLP becomes its spec); the input
    shape is the checkpoint's input description, as in src/checkpoint.py."""
    info = checkpoint.get("input") if isinstance(checkpoint.get("input"), dict) else {}
    try:
        if checkpoint["format"] == LEGACY_FORMAT:
            return mlp_spec(checkpoint["sizes"], checkpoint["activation"], info.get("shape"))
        return check_spec({"input": info.get("shape"), "layers": checkpoint["spec"]})
    except (SpecError, TypeError) as exc:
        raise BundleError(f"{source}: bad architecture ({first_line(exc)})") from None


def load_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """(checkpoint dict, the file's bytes) of a best_model.pth; errors name the file."""
    path = Path(path)
    problem = file_problem(path, "checkpoint file", inside="best_model.pth")
    if problem:
        raise BundleError(problem)
    data = path.read_bytes()
    return read_checkpoint(data, path), data


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | os.PathLike) -> DeployedNet:
    """Rebuild the network a checkpoint describes and load its weights strictly, in eval mode."""
    spec = checkpoint_spec(checkpoint, source)
    problem = weights_problem(spec, checkpoint["state_dict"])  # before the network is allocated
    if problem:
        raise BundleError(f"{source}: weights do not fit the recorded architecture ({problem})")
    model = DeployedNet(spec)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise BundleError(f"{source}: weights do not fit the recorded architecture "
                          f"({first_line(exc)})") from None
    for module, layer in zip(model, model.spec["layers"], strict=True):
        if entry_of(module).read(module) != fields(layer):  # a select's stored indices, ...
            raise BundleError(f"{source}: the {layer['type']}'s stored indices/settings differ "
                              "from its spec")
    return model.eval()
