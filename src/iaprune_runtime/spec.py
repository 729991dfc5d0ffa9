"""Architecture specs checked, shaped and built through the layer registry (torch-only).

A spec is an input shape plus an ordered list of layer specs (JSON):

    {"input": [1, 28, 28],
     "layers": [{"type": "linear", "out": 256}, {"type": "relu"}, {"type": "linear", "out": 10}]}

Each layer type's fields, defaults, checks and shape rule are its registry entry's
(iaprune_runtime.layers). A network whose first shape-changing layer reads flat inputs (a
Linear, a select) reads its input flattened; any other reshapes it to (batch, *input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .budget import check_memory
from .layers import REQUIRED, Layer, SpecError, entries, entry, entry_of, names
from .layers.base import check_int


def check_layer(layer: Layer | str, where: str = "layer") -> Layer:
    """A layer spec with its defaults filled in; a string is a layer without fields ("relu")."""
    if isinstance(layer, str):
        layer = {"type": layer}
    if not isinstance(layer, dict) or "type" not in layer:
        raise SpecError(f"{where}: a layer is an object with a 'type', got {layer!r}")
    kind = layer["type"]
    if not isinstance(kind, str) or kind not in names():
        raise SpecError(f"{where}: unknown layer type {kind!r}; choose from {', '.join(names())}")
    found = entry(kind)
    unknown = set(layer) - set(found.fields) - {"type"}
    if unknown:
        raise SpecError(f"{where}: {kind} has no field(s) {sorted(unknown)}; it takes "
                        f"{sorted(found.fields) or 'none'}")
    out: Layer = {"type": kind}
    for name, default in found.fields.items():
        value = layer.get(name, default)
        if value is REQUIRED:
            raise SpecError(f"{where}: {kind} needs {name!r}")
        out[name] = found.check_field(name, value, where, out)
    return out


def out_shape(layer: Layer, shape: tuple[int, ...], where: str = "layer") -> tuple[int, ...]:
    """The output shape (without batch) of a checked `layer` on inputs of `shape`."""
    return entry(layer["type"]).out_shape(layer, tuple(shape), where)


def transparent(kind: str) -> bool:
    """Whether a layer type keeps its input's shape and units (activations, dropout, batchnorm):
    the input rule looks through it."""
    return entry(kind).role in ("elementwise", "per_unit")


def reads_flat(layers: Sequence[Layer]) -> bool:
    """Whether the network flattens its input first: its first shape-changing layer reads flat
    inputs (a Linear or a select)."""
    for layer in layers:
        if not transparent(layer["type"]):
            return entry(layer["type"]).reads_flat
    return False


def shapes(layers: Sequence[Layer], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes (without batch) of every layer's input, then the output: len(layers) + 1."""
    shape = tuple(input_shape)
    if reads_flat(layers):
        shape = (math.prod(shape),)
    out = [shape]
    for i, layer in enumerate(layers):
        shape = out_shape(layer, shape, f"layer {i} ({layer['type']})")
        out.append(shape)
    return out


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A checked spec {'input': [...], 'layers': [...]} with defaults filled in, whose sizes fit
    the memory limit (budget.check_memory: before anything is allocated)."""
    if not isinstance(spec, dict) or set(spec) != {"input", "layers"}:
        raise SpecError("a spec is an object with exactly 'input' and 'layers'")
    shape = spec["input"]
    if not isinstance(shape, list | tuple) or not shape:
        raise SpecError(f"spec input must be a non-empty shape list, got {shape!r}")
    shape = tuple(check_int(s, "input dimension", 1) for s in shape)
    if not isinstance(spec["layers"], list | tuple) or not spec["layers"]:
        raise SpecError("spec layers must be a non-empty list")
    layers = [check_layer(layer, f"layer {i}") for i, layer in enumerate(spec["layers"])]
    check_memory(layers, shapes(layers, shape))
    if not entry(layers[-1]["type"]).logits:
        last = [e.name for e in entries() if e.logits]
        raise SpecError(f"the last layer must be a {' or '.join(last)} layer (the logits)")
    return {"input": list(shape), "layers": layers}


def modules(spec: dict[str, Any]) -> list[nn.Module]:
    """Freshly initialised modules of a checked spec, one per layer."""
    layer_shapes = shapes(spec["layers"], spec["input"])
    return [entry(layer["type"]).build(layer, s)
            for layer, s in zip(spec["layers"], layer_shapes, strict=False)]


def weights_problem(spec: dict[str, Any], state_dict: Any) -> str | None:
    """Why `state_dict` cannot be the weights of checked `spec` (a missing, extra or differently
    shaped tensor), found without allocating: the network is built on torch's meta device, so a
    file declaring a huge layer with small tensors is refused before the layer exists."""
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()):
        return "state_dict is not a dict of named tensors"
    with torch.device("meta"):
        expected = nn.Sequential(*modules(spec)).state_dict()
    for name, tensor in expected.items():
        if name not in state_dict:
            return f"missing {name}"
        if state_dict[name].shape != tensor.shape:
            return (f"{name} has shape {list(state_dict[name].shape)}, the architecture needs "
                    f"{list(tensor.shape)}")
    extra = sorted(set(state_dict) - set(expected))
    return f"unexpected {', '.join(extra[:4])}" if extra else None


def layer_of(module: nn.Module) -> Layer:
    """The layer spec of one module; a TypeError names anything unsupported."""
    return entry_of(module).read(module)


def activations() -> tuple[str, ...]:
    """The spec names of the activation functions (an MLP's choices)."""
    return tuple(e.name for e in entries() if e.activation)


def mlp_layers(hidden: Sequence[int], num_classes: int, activation: str) -> list[Layer]:
    """linear h_1, act, ..., linear h_k, act, linear num_classes."""
    layers: list[Layer] = []
    for h in hidden:
        layers += [{"type": "linear", "out": h}, {"type": activation}]
    layers.append({"type": "linear", "out": num_classes})
    return layers


def describe(spec: dict[str, Any]) -> str:
    """A one-line description: 'linear 256, relu, linear 10 on [1, 28, 28]'."""
    parts = [entry(layer["type"]).describe(layer) for layer in spec["layers"]]
    return f"{', '.join(parts)} on {spec['input']}"


class SpecNet(nn.Sequential):
    """The forward of a network built from a spec (the library's Net and the runtime's
    DeployedNet): the input is flattened (a flat-reading spec) or reshaped to (batch, *input),
    so (n, 784) and (n, 1, 28, 28) both work. Subclasses set `input_shape` and `flat_input`."""

    input_shape: tuple[int, ...]
    flat_input: bool

    def forward(self, x: Tensor) -> Tensor:
        # x.shape[0], not len(x): a traced or exported network keeps a dynamic batch size
        if self.flat_input:
            x = x.reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], *self.input_shape)
        inference = not torch.is_grad_enabled()  # no backward: max pools need no indices
        for module in self:
            x = entry_of(module).run(module, x) if inference else module(x)
        return x
