"""Architecture specs checked, shaped and built through the layer registry (torch-only).

A spec is an input shape plus a list of layer specs (JSON). A chain lists its layers in order:

    {"input": [1, 28, 28],
     "layers": [{"type": "linear", "out": 256}, {"type": "relu"}, {"type": "linear", "out": 10}]}

A graph (a residual add, a concatenation) names the layers other layers read and gives a layer
reading anything but the layer before it its `inputs` (layer names, or "input" for the
network's input); the layers stay in an order where every input comes before its reader, and
the last layer is the output:

    {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1, "name": "stem"}, ...
    {"type": "add", "inputs": ["block1.bn2", "stem.relu"]}

Each layer type's fields, defaults, checks and shape rule are its registry entry's
(iaprune_runtime.layers). A network whose first shape-changing layer reads flat inputs (a
Linear, a select) reads its input flattened; any other reshapes it to (batch, *input).

Values are numbered as the graph sees them: value 0 is the network's input and value i + 1 is
layer i's output, so in a chain value i is layer i's input (`shapes`), and `wiring` lists the
values each layer reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .budget import check_memory
from .layers import REQUIRED, Layer, SpecError, entries, entry, entry_of, logits_end, names
from .layers.base import check_int

NETWORK_INPUT = "input"  # the name of the network's input in a layer's `inputs`
Wiring = tuple[tuple[int, ...], ...]  # per layer, the values it reads (0: the network input)


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or value == NETWORK_INPUT:
        raise SpecError(f"{where}: a layer's name must be a non-empty string other than "
                        f"{NETWORK_INPUT!r}, got {value!r}")
    return value


def _check_inputs(value: Any, where: str) -> list[str]:
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(v, str) and v for v in value)):
        raise SpecError(f"{where}: a layer's inputs are a non-empty list of layer names (or "
                        f"{NETWORK_INPUT!r}), got {value!r}")
    return list(value)


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
    unknown = set(layer) - set(found.fields) - {"type", "name", "inputs"}
    if unknown:
        raise SpecError(f"{where}: {kind} has no field(s) {sorted(unknown)}; it takes "
                        f"{sorted(found.fields) or 'none'}")
    out: Layer = {"type": kind}
    for name, default in found.fields.items():
        value = layer.get(name, default)
        if value is REQUIRED:
            raise SpecError(f"{where}: {kind} needs {name!r}")
        checked = found.check_field(name, value, where, out)
        if name not in found.optional or checked != default:
            out[name] = checked
    if "name" in layer:
        out["name"] = _check_name(layer["name"], where)
    if "inputs" in layer:
        out["inputs"] = _check_inputs(layer["inputs"], where)
    return out


def fields(layer: Layer) -> Layer:
    """The layer spec without its graph keys (name, inputs): what its type builds."""
    return {k: v for k, v in layer.items() if k not in ("name", "inputs")}


def wiring(layers: Sequence[Layer]) -> Wiring:
    """The values each layer of checked `layers` reads (value 0 is the network input, value
    i + 1 layer i's output): its `inputs` by name, else the previous layer's output. SpecError
    for an unknown or later name, a wrong number of inputs, or an output nobody reads."""
    by_name: dict[str, int] = {NETWORK_INPUT: 0}
    found: list[tuple[int, ...]] = []
    for i, layer in enumerate(layers):
        where = f"layer {i} ({layer['type']})"
        if "inputs" in layer:
            missing = [n for n in layer["inputs"] if n not in by_name]
            if missing:
                later = [n for n in missing if any(x.get("name") == n for x in layers)]
                reason = "comes later (inputs must come before their reader)" if later else \
                    "is not the name of an earlier layer"
                raise SpecError(f"{where}: input {missing[0]!r} {reason}")
            reads = tuple(by_name[n] for n in layer["inputs"])
        else:
            reads = (i,)
        many = entry(layer["type"]).merge
        if many and len(reads) < 2:
            raise SpecError(f"{where}: {layer['type']} joins two or more inputs, got "
                            f"{len(reads)}")
        if not many and len(reads) != 1:
            raise SpecError(f"{where}: {layer['type']} reads one input, got {len(reads)}")
        if "name" in layer:
            if layer["name"] in by_name:
                raise SpecError(f"{where}: the name {layer['name']!r} is used twice")
            by_name[layer["name"]] = i + 1
        found.append(reads)
    read = {v for reads in found for v in reads}
    unused = [i for i in range(len(layers) - 1) if i + 1 not in read]
    if unused:
        i = unused[0]
        raise SpecError(f"layer {i} ({layers[i]['type']}): its output is never read (only "
                        "the last layer is the network's output)")
    return tuple(found)


def is_chain(links: Wiring) -> bool:
    """Whether every layer reads the layer before it (a chain, the plain layer list)."""
    return all(reads == (i,) for i, reads in enumerate(links))


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
    """Shapes (without batch) of every value: the network's input, then every layer's output
    (len(layers) + 1); in a chain, shapes[i] is layer i's input."""
    shape = tuple(input_shape)
    if reads_flat(layers):
        shape = (math.prod(shape),)
    out = [shape]
    for i, (layer, reads) in enumerate(zip(layers, wiring(layers), strict=True)):
        given = tuple(out[j] for j in reads) if entry(layer["type"]).merge else out[reads[0]]
        out.append(out_shape(layer, given, f"layer {i} ({layer['type']})"))
    return out


def input_shapes(layers: Sequence[Layer], input_shape: Sequence[int]
                 ) -> list[tuple[int, ...]]:
    """The shape of every layer's (first) input."""
    values = shapes(layers, input_shape)
    return [values[reads[0]] for reads in wiring(layers)]


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
    for i, reads in enumerate(wiring(layers)):  # inputs naming the layer before: the default
        if reads == (i,):
            layers[i].pop("inputs", None)
    check_memory(layers, shapes(layers, shape), wiring(layers))
    kinds = [entry(layer["type"]) for layer in layers]
    end = logits_end(kinds)  # a trailing softmax/log_softmax normalises the logits before it
    for i, kind in enumerate(kinds[:end]):
        if kind.normaliser:
            raise SpecError(f"layer {i}: {kind.name} may only be the last layer, after the "
                            "logits layer")
    if not end or not kinds[end - 1].logits:
        last = [e.name for e in entries() if e.logits]
        after = [e.name for e in entries() if e.normaliser]
        raise SpecError(f"the last layer must be a {' or '.join(last)} layer (the logits), "
                        f"optionally followed by one {' or '.join(after)}")
    return {"input": list(shape), "layers": layers}


def modules(spec: dict[str, Any]) -> list[nn.Module]:
    """Freshly initialised modules of a checked spec, one per layer."""
    layer_shapes = input_shapes(spec["layers"], spec["input"])
    return [entry(layer["type"]).build(fields(layer), s)
            for layer, s in zip(spec["layers"], layer_shapes, strict=True)]


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
    parts = [entry(layer["type"]).describe(fields(layer)) for layer in spec["layers"]]
    return f"{', '.join(parts)} on {spec['input']}"


class SpecNet(nn.Sequential):
    """The forward of a network built from a spec (the library's Net and the runtime's
    DeployedNet): the input is flattened (a flat-reading spec) or reshaped to (batch, *input),
    so (n, 784) and (n, 1, 28, 28) both work. Subclasses set `input_shape` and `flat_input`,
    and for a graph `wiring` (the values each module reads; None: a chain) and `names` (each
    module's spec name or None)."""

    input_shape: tuple[int, ...]
    flat_input: bool
    wiring: Wiring | None = None
    names: tuple[str | None, ...] | None = None

    def set_graph(self, links: Wiring | None, layer_names: Sequence[str | None] | None) -> None:
        """Record the graph of the modules (None or a chain's wiring: a chain)."""
        self.wiring = None if links is None or is_chain(links) else tuple(links)
        self.names = tuple(layer_names) if layer_names is not None and any(
            n is not None for n in layer_names) else None

    def shaped_input(self, x: Tensor) -> Tensor:
        """x as the first modules read it: flattened or (batch, *input_shape)."""
        # x.shape[0], not len(x): a traced or exported network keeps a dynamic batch size
        if self.flat_input:
            return x.reshape(x.shape[0], -1)
        return x.reshape(x.shape[0], *self.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        x = self.shaped_input(x)
        inference = not torch.is_grad_enabled()  # no backward: max pools need no indices
        if self.wiring is None:
            for module in self:
                x = entry_of(module).run(module, x) if inference else module(x)
            return x
        return self.values(x, inference)[-1]

    def values(self, x: Tensor, inference: bool = False, keep: Sequence[int] = (),
               upto: int | None = None) -> list[Tensor | None]:
        """The values of the network on shaped input x (value 0: x, value i + 1: module i's
        output), up to value `upto` (default: the output); values no later module reads and
        not in `keep` are dropped (None) as soon as they are read, so the memory held is that
        of the widest cut of the graph."""
        links = self.wiring or tuple((i,) for i in range(len(self)))
        last_read = {j: i for i, reads in enumerate(links) for j in reads}
        held: list[Tensor | None] = [x]
        for i, module in enumerate(list(self)[:upto]):
            args = [held[j] for j in links[i]]
            kind = entry_of(module)
            held.append(kind.run(module, *args) if inference else module(*args))
            for j in set(links[i]):
                if last_read[j] == i and j not in keep:
                    held[j] = None
        return held
