"""Architecture specs: a network is an input shape plus an ordered list of layer specs (JSON).

    {"input": [1, 28, 28],
     "layers": [{"type": "linear", "out": 256}, {"type": "relu"}, {"type": "linear", "out": 10}]}

Layer types and their fields (defaults in brackets): linear(out, bias [true]),
conv2d(out, kernel, stride [1], padding [0], bias [true]), batchnorm (1-D or 2-D by its input),
relu, sigmoid, tanh, maxpool2d(kernel, stride [kernel]), avgpool2d(kernel, stride [kernel]),
flatten, dropout(p [0.5]), and select(indices): the input features a network reads after
input pruning. A network whose first shape-changing layer is a Linear reads its input
flattened (the thesis MLP is [linear 256, relu, linear 64, relu, linear 10] on [1, 28, 28]);
any other Linear needs a flatten before it.

`build(spec)` makes a `Net` (an nn.Sequential that knows its input shape); `spec_of(model)`
reads the spec back and names any unsupported module; `PRESETS` are specs by name.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from iaprune.errors import UserError

Layer = dict[str, Any]
REQUIRED = object()  # marks a field without a default
# type -> {field: default}; every field is an int except bias (bool), p (float), indices (list)
FIELDS: dict[str, dict[str, Any]] = {
    "select": {"indices": REQUIRED},
    "linear": {"out": REQUIRED, "bias": True},
    "conv2d": {"out": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": 0, "bias": True},
    "batchnorm": {},
    "relu": {}, "sigmoid": {}, "tanh": {},
    "maxpool2d": {"kernel": REQUIRED, "stride": None},
    "avgpool2d": {"kernel": REQUIRED, "stride": None},
    "flatten": {},
    "dropout": {"p": 0.5},
}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# Layers that act on each value alone: they neither change the shape nor mix units.
ELEMENTWISE = ("relu", "sigmoid", "tanh", "dropout", "batchnorm")


class SpecError(UserError):
    """An architecture spec (or a model to read one from) that IA-Prune cannot build or use."""


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_layer(layer: Layer | str, where: str = "layer") -> Layer:
    """A layer spec with its defaults filled in; a string is a layer without fields ("relu")."""
    if isinstance(layer, str):
        layer = {"type": layer}
    if not isinstance(layer, dict) or "type" not in layer:
        raise SpecError(f"{where}: a layer is an object with a 'type', got {layer!r}")
    kind = layer["type"]
    if kind not in FIELDS:
        raise SpecError(f"{where}: unknown layer type {kind!r}; choose from {', '.join(FIELDS)}")
    unknown = set(layer) - set(FIELDS[kind]) - {"type"}
    if unknown:
        raise SpecError(f"{where}: {kind} has no field(s) {sorted(unknown)}; it takes "
                        f"{sorted(FIELDS[kind]) or 'none'}")
    out: Layer = {"type": kind}
    for name, default in FIELDS[kind].items():
        value = layer.get(name, default)
        if value is REQUIRED:
            raise SpecError(f"{where}: {kind} needs {name!r}")
        if name == "bias":
            if not isinstance(value, bool):
                raise SpecError(f"{where}: bias must be true or false, got {value!r}")
        elif name == "p":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise SpecError(f"{where}: dropout p must be in [0, 1), got {value!r}")
            value = float(value)
        elif name == "indices":
            if not isinstance(value, list | tuple) or not value:
                raise SpecError(f"{where}: select needs a non-empty list of indices")
            value = [_int(i, f"{where}: select index", 0) for i in value]
            if any(b <= a for a, b in zip(value, value[1:], strict=False)):
                raise SpecError(f"{where}: select indices must be strictly increasing")
        elif value is None and name == "stride":
            value = out["kernel"]
        else:
            value = _int(value, f"{where}: {kind} {name}", 0 if name == "padding" else 1)
        out[name] = value
    return out


def out_shape(layer: Layer, shape: tuple[int, ...], where: str = "layer") -> tuple[int, ...]:
    """The output shape (without batch) of `layer` on inputs of `shape`."""
    kind = layer["type"]
    if kind in ELEMENTWISE:
        if kind == "batchnorm" and len(shape) not in (1, 3):
            raise SpecError(f"{where}: batchnorm needs (features,) or (C, H, W) input, got {shape}")
        return shape
    if kind == "select":
        if len(shape) != 1 or layer["indices"][-1] >= shape[0]:
            raise SpecError(f"{where}: select indices must lie in [0, {math.prod(shape)}) of a "
                            "flat input")
        return (len(layer["indices"]),)
    if kind == "flatten":
        return (math.prod(shape),)
    if kind == "linear":
        if len(shape) != 1:
            raise SpecError(f"{where}: linear gets input of shape {shape}; add a flatten before it")
        return (layer["out"],)
    if len(shape) != 3:
        raise SpecError(f"{where}: {kind} needs (C, H, W) input, got {shape}")
    pad = layer.get("padding", 0)
    size = [(s + 2 * pad - layer["kernel"]) // layer["stride"] + 1 for s in shape[1:]]
    if min(size) < 1:
        raise SpecError(f"{where}: {kind} kernel {layer['kernel']} does not fit input {shape}")
    channels = layer["out"] if kind == "conv2d" else shape[0]
    return (channels, *size)


def reads_flat(layers: Sequence[Layer]) -> bool:
    """Whether the network flattens its input first: its first shape-changing layer is a
    Linear (or a select)."""
    for layer in layers:
        if layer["type"] not in ELEMENTWISE:
            return layer["type"] in ("linear", "select")
    return False


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A checked spec {'input': [...], 'layers': [...]} with defaults filled in."""
    if not isinstance(spec, dict) or set(spec) != {"input", "layers"}:
        raise SpecError("a spec is an object with exactly 'input' and 'layers'")
    shape = spec["input"]
    if not isinstance(shape, list | tuple) or not shape:
        raise SpecError(f"spec input must be a non-empty shape list, got {shape!r}")
    shape = tuple(_int(s, "input dimension", 1) for s in shape)
    if not isinstance(spec["layers"], list | tuple) or not spec["layers"]:
        raise SpecError("spec layers must be a non-empty list")
    layers = [check_layer(layer, f"layer {i}") for i, layer in enumerate(spec["layers"])]
    shapes(layers, shape)
    if layers[-1]["type"] not in ("linear",):
        raise SpecError("the last layer must be a linear layer (the logits)")
    return {"input": list(shape), "layers": layers}


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


class Select(nn.Module):
    """The input features a pruned network reads: x[:, indices] of its flattened input."""

    def __init__(self, indices: Sequence[int], n_in: int):
        super().__init__()
        self.n_in = n_in
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.indices)


class Net(nn.Sequential):
    """An nn.Sequential built from a spec; it reshapes its input to (batch, *input_shape) (or
    flattens it when the spec reads flat inputs), so (n, 784) and (n, 1, 28, 28) both work."""

    def __init__(self, modules: Sequence[nn.Module], input_shape: Sequence[int]):
        super().__init__(*modules)
        self.input_shape = tuple(input_shape)
        self.flat_input = reads_flat([{"type": _layer_type(m)} for m in self])

    @property
    def spec(self) -> dict[str, Any]:
        return spec_of(self)

    def forward(self, x: Tensor) -> Tensor:
        # x.shape[0], not len(x): a traced or exported Net keeps a dynamic batch size
        if self.flat_input:
            x = x.reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], *self.input_shape)
        inference = not torch.is_grad_enabled()  # no backward: max pools need no indices
        for module in self:
            x = max_pool(module, x) if inference and type(module) is nn.MaxPool2d else module(x)
        return x


def max_pool(pool: nn.MaxPool2d, x: Tensor) -> Tensor:
    """pool(x) for a spec's max pool (no padding, dilation or ceil mode) as the elementwise
    maximum of its kh·kw strided slices: the same values, without the indices of the maxima
    that torch's CPU kernel computes. At inference it pools LeNet-5's maps ~10x faster, and a
    pruned LeNet-5 ran ~5x faster with it (README, "Convolutional networks")."""
    (kh, kw), (sh, sw) = _pair2(pool.kernel_size), _pair2(pool.stride or pool.kernel_size)
    rows, cols = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[..., i:i + sh * (rows - 1) + 1:sh, j:j + sw * (cols - 1) + 1:sw]
            out = window if out is None else torch.maximum(out, window)
    return out


def _pair2(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _module(layer: Layer, shape: tuple[int, ...]) -> nn.Module:
    """The torch module of one checked layer spec on inputs of `shape`."""
    kind = layer["type"]
    if kind == "linear":
        return nn.Linear(shape[0], layer["out"], bias=layer["bias"])
    if kind == "conv2d":
        return nn.Conv2d(shape[0], layer["out"], layer["kernel"], layer["stride"],
                         layer["padding"], bias=layer["bias"])
    if kind == "batchnorm":
        return nn.BatchNorm1d(shape[0]) if len(shape) == 1 else nn.BatchNorm2d(shape[0])
    if kind == "maxpool2d":
        return nn.MaxPool2d(layer["kernel"], layer["stride"])
    if kind == "avgpool2d":
        return nn.AvgPool2d(layer["kernel"], layer["stride"])
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    if kind == "select":
        return Select(layer["indices"], shape[0])
    return ACTIVATIONS[kind]()


def build(spec: dict[str, Any], seed: int | None = None) -> Net:
    """A freshly initialised Net of `spec`; with `seed`, deterministic and without touching the
    global RNG."""
    spec = check_spec(spec)
    layer_shapes = shapes(spec["layers"], spec["input"])
    if seed is None:
        modules = [_module(layer, s) for layer, s in zip(spec["layers"], layer_shapes,
                                                         strict=False)]
        return Net(modules, spec["input"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(spec)


# ---- reading a spec back -------------------------------------------------------------------

def _pair(value: Any, what: str, module: nn.Module) -> int:
    """A square kernel/stride/padding as one int (IA-Prune's specs are square)."""
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise TypeError(f"{type(module).__name__} with non-square {what} {tuple(value)} is "
                            "not supported")
        value = value[0]
    return int(value)


def _layer_type(module: nn.Module) -> str:
    for kind, cls in {**ACTIVATIONS, "linear": nn.Linear, "conv2d": nn.Conv2d,
                      "maxpool2d": nn.MaxPool2d, "avgpool2d": nn.AvgPool2d,
                      "flatten": nn.Flatten, "dropout": nn.Dropout, "select": Select}.items():
        if type(module) is cls:
            return kind
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return "batchnorm"
    raise TypeError(f"unsupported module {type(module).__name__}; IA-Prune supports Linear, "
                    "Conv2d, BatchNorm1d/2d, ReLU, Sigmoid, Tanh, MaxPool2d, AvgPool2d, Flatten, "
                    "Dropout")


def layer_of(module: nn.Module) -> Layer:
    """The layer spec of one module; a TypeError names anything unsupported."""
    kind = _layer_type(module)
    name = type(module).__name__
    if kind == "linear":
        return {"type": kind, "out": module.out_features, "bias": module.bias is not None}
    if kind == "conv2d":
        if (_pair(module.dilation, "dilation", module) != 1 or module.groups != 1
                or module.padding_mode != "zeros" or isinstance(module.padding, str)):
            raise TypeError(f"{name} with dilation, groups, string padding or padding_mode "
                            f"{module.padding_mode!r} is not supported")
        return {"type": kind, "out": module.out_channels,
                "kernel": _pair(module.kernel_size, "kernel", module),
                "stride": _pair(module.stride, "stride", module),
                "padding": _pair(module.padding, "padding", module),
                "bias": module.bias is not None}
    if kind == "batchnorm":
        if not (module.affine and module.track_running_stats) or module.eps != 1e-5:
            raise TypeError(f"{name} must be affine, track running stats and use eps=1e-5")
        return {"type": kind}
    if kind in ("maxpool2d", "avgpool2d"):
        padding = _pair(module.padding, "padding", module)
        dilation = _pair(getattr(module, "dilation", 1), "dilation", module)
        if padding or dilation != 1 or module.ceil_mode:
            raise TypeError(f"{name} with padding, dilation or ceil_mode is not supported")
        stride = module.stride if module.stride is not None else module.kernel_size
        return {"type": kind, "kernel": _pair(module.kernel_size, "kernel", module),
                "stride": _pair(stride, "stride", module)}
    if kind == "flatten":
        if module.start_dim != 1 or module.end_dim != -1:
            raise TypeError("nn.Flatten must flatten dims 1..-1 (the default)")
        return {"type": kind}
    if kind == "dropout":
        return {"type": kind, "p": float(module.p)}
    if kind == "select":
        return {"type": kind, "indices": module.indices.tolist()}
    return {"type": kind}


def spec_of(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The spec of a Net or an nn.Sequential of supported modules (checked; TypeError names an
    unsupported module, SpecError a shape that does not chain)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected a Net or nn.Sequential, got {type(model).__name__}; "
                        "import your own module with iaprune.spec.from_module")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError("spec_of needs input_shape for a plain nn.Sequential")
    layers = []
    for i, module in enumerate(model):
        try:
            layers.append(layer_of(module))
        except TypeError as exc:
            raise TypeError(f"module {i}: {exc}") from None
    return check_spec({"input": list(input_shape), "layers": layers})


# ---- presets and files -----------------------------------------------------------------------

def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 64),
        activation: str = "relu") -> dict[str, Any]:
    """The thesis MLP: linear h_1, act, ..., linear h_k, act, linear num_classes."""
    if activation not in ACTIVATIONS:
        raise SpecError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    if not hidden:
        raise SpecError("an MLP needs at least one hidden layer size")
    for h in hidden:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise SpecError(f"hidden layer sizes must be integers >= 1, got {list(hidden)}")
    layers: list[Layer] = []
    for h in hidden:
        layers += [{"type": "linear", "out": h}, {"type": activation}]
    layers.append({"type": "linear", "out": num_classes})
    return check_spec({"input": list(input_shape), "layers": layers})


def lenet5(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """The Caffe LeNet-5: conv 20@5x5, maxpool 2, conv 50@5x5, maxpool 2, linear 500, linear
    num_classes, with a ReLU after each conv and the hidden linear."""
    return check_spec({"input": list(input_shape), "layers": [
        {"type": "conv2d", "out": 20, "kernel": 5}, "relu", {"type": "maxpool2d", "kernel": 2},
        {"type": "conv2d", "out": 50, "kernel": 5}, "relu", {"type": "maxpool2d", "kernel": 2},
        "flatten", {"type": "linear", "out": 500}, "relu",
        {"type": "linear", "out": num_classes}]})


def cnn3(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Three 3x3 padding-1 convs with 2, 4 and 8 channels, a ReLU after each, flatten, linear."""
    layers: list[Layer | str] = []
    for channels in (2, 4, 8):
        layers += [{"type": "conv2d", "out": channels, "kernel": 3, "padding": 1}, "relu"]
    layers += ["flatten", {"type": "linear", "out": num_classes}]
    return check_spec({"input": list(input_shape), "layers": layers})


PRESETS: dict[str, Callable[..., dict[str, Any]]] = {"mlp": mlp, "lenet5": lenet5, "cnn3": cnn3}


def read_spec(path: str | os.PathLike, input_shape: Sequence[int] | None = None
              ) -> dict[str, Any]:
    """A spec from a JSON file: {'input', 'layers'} or a bare list of layers (the input shape
    then comes from the dataset)."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, not an architecture file")
    if not path.is_file():
        raise SpecError(f"{path}: no such architecture file (or preset: {', '.join(PRESETS)})")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(value, list):
        if input_shape is None:
            raise SpecError(f"{path}: a bare layer list needs the dataset's input shape")
        value = {"input": list(input_shape), "layers": value}
    try:
        return check_spec(value)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def resolve_arch(arch: str, input_shape: Sequence[int], num_classes: int,
                 hidden: Sequence[int] | None = None, activation: str = "relu") -> dict[str, Any]:
    """The spec named by --arch (a preset or a JSON file) for a dataset's input and classes."""
    if arch == "mlp":
        return mlp(input_shape, num_classes, hidden or (256, 64), activation)
    if arch in PRESETS:
        spec = PRESETS[arch](input_shape, num_classes)
    else:
        spec = read_spec(arch, input_shape)
    if tuple(spec["input"]) != tuple(input_shape):
        raise SpecError(f"--arch {arch}: input {spec['input']} does not match the dataset's "
                        f"{list(input_shape)}")
    if spec["layers"][-1]["out"] != num_classes:
        raise SpecError(f"--arch {arch}: {spec['layers'][-1]['out']} outputs, the dataset has "
                        f"{num_classes} classes")
    return spec


def describe(spec: dict[str, Any]) -> str:
    """A one-line description: 'linear 256, relu, linear 10 on [1, 28, 28]'."""
    parts = []
    for layer in spec["layers"]:
        fields = [str(v) for k, v in layer.items() if k not in ("type", "bias", "indices")]
        if layer["type"] == "select":
            fields = [f"{len(layer['indices'])} inputs"]
        parts.append(" ".join([layer["type"], *fields]))
    return f"{', '.join(parts)} on {spec['input']}"
