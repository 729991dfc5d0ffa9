"""Architecture specs: a network is an input shape plus a list of layer specs (JSON).

    {"input": [1, 28, 28],
     "layers": [{"type": "linear", "out": 256}, {"type": "relu"}, {"type": "linear", "out": 10}]}

Layer types and their fields: each type's entry in the layer registry (iaprune_runtime.layers)
holds its fields with defaults, checks, shape rule and builder; `iaprune_runtime.layers.names()`
lists them (linear, conv2d, batchnorm, the activations, pooling, flatten, dropout, add, concat,
a final softmax/log_softmax, and select: the input features a network reads after input
pruning). A list of layers is a chain; a graph names layers ("name") and gives a layer that reads
anything else than the layer before it its "inputs" (iaprune_runtime.spec). A network whose
first shape-changing layer is a Linear reads its input flattened (the thesis MLP is
[linear 256, relu, linear 64, relu, linear 10] on [1, 28, 28]); any other Linear needs a
flatten before it.

`build(spec)` makes a `Net` (an nn.Sequential that knows its input shape and graph);
`spec_of(model)` reads the spec back and names any unsupported module; `PRESETS` are specs by
name (mlp, lenet5, cnn3, resnet8, resnet20).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import iaprune_runtime.spec as runtime_spec
from iaprune.errors import UserError
from iaprune.files import parse_json
from iaprune_runtime import layers
from iaprune_runtime.layers import Select

__all__ = ["PRESETS", "Net", "Select", "SpecError", "build", "check_layer", "check_spec",
           "describe", "input_shapes", "layer_of", "max_pool", "mlp", "out_shape",
           "reads_flat", "read_spec", "resolve_arch", "shapes", "spec_of"]

Layer = dict[str, Any]
max_pool = layers.max_pool


class SpecError(UserError, layers.SpecError):
    """An architecture spec (or a model to read one from) that IA-Prune cannot build or use."""


def _ours(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` of the runtime's spec functions, raising this library's SpecError (a UserError)."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except layers.SpecError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(str(exc)) from None
    return wrapped


check_layer = _ours(runtime_spec.check_layer)
out_shape = _ours(runtime_spec.out_shape)
shapes = _ours(runtime_spec.shapes)
input_shapes = _ours(runtime_spec.input_shapes)
check_spec = _ours(runtime_spec.check_spec)
reads_flat = runtime_spec.reads_flat
describe = runtime_spec.describe
layer_of = runtime_spec.layer_of


class Net(runtime_spec.SpecNet):
    """An nn.Sequential built from a spec; it reshapes its input to (batch, *input_shape) (or
    flattens it when the spec reads flat inputs), so (n, 784) and (n, 1, 28, 28) both work."""

    def __init__(self, modules: Sequence[nn.Module], input_shape: Sequence[int],
                 wiring: runtime_spec.Wiring | None = None,
                 names: Sequence[str | None] | None = None):
        super().__init__(*modules)
        self.input_shape = tuple(input_shape)
        self.flat_input = reads_flat([{"type": layers.entry_of(m).name} for m in self])
        self.set_graph(wiring, names)

    def like(self, modules: Sequence[nn.Module]) -> Net:
        """A Net of `modules` (one per module of this one) with this one's input and graph."""
        return Net(modules, self.input_shape, self.wiring, self.names)

    @property
    def spec(self) -> dict[str, Any]:
        return spec_of(self)


def build(spec: dict[str, Any], seed: int | None = None) -> Net:
    """A freshly initialised network of an architecture spec.

    Args:
        spec: {"input": [C, H, W] or [features], "layers": [...]}: layer specs such as
            {"type": "linear", "out": 64}, {"type": "conv2d", "out": 8, "kernel": 3}, "relu",
            "flatten" (a bad spec is a SpecError naming the layer).
        seed: deterministic initialisation, without touching the global RNG.

    Returns:
        Net: an nn.Sequential that reshapes (batch, ...) inputs to the spec's input shape.

    Example:
        >>> import torch
        >>> from iaprune import build
        >>> net = build({"input": [1, 8, 8], "layers": [{"type": "linear", "out": 16}, "relu",
        ...                                             {"type": "linear", "out": 10}]}, seed=0)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    spec = check_spec(spec)
    if seed is None:
        return Net(runtime_spec.modules(spec), spec["input"], *graph_of(spec["layers"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(spec)


def graph_of(layer_specs: Sequence[Layer]) -> tuple[runtime_spec.Wiring, list[str | None]]:
    """(wiring, names) of checked layer specs: what a Net needs to know of its graph."""
    return runtime_spec.wiring(layer_specs), [layer.get("name") for layer in layer_specs]


def graph_keys(model: nn.Module) -> list[Layer]:
    """Each module's graph keys for its layer spec ({} in a chain): its name where it has one or
    another module reads it, and its inputs where it reads anything but the module before."""
    links = getattr(model, "wiring", None)
    given = getattr(model, "names", None) or (None,) * len(model)
    if links is None:
        return [{"name": n} if n is not None else {} for n in given]
    read = {j for i, reads in enumerate(links) for j in reads if reads != (i,)}
    names = [n if n is not None or i + 1 not in read else f"n{i}" for i, n in enumerate(given)]
    keys: list[Layer] = []
    for i, reads in enumerate(links):
        key: Layer = {} if names[i] is None else {"name": names[i]}
        if reads != (i,):
            key["inputs"] = [runtime_spec.NETWORK_INPUT if j == 0 else names[j - 1]
                             for j in reads]
        keys.append(key)
    return keys


# ---- reading a spec back -------------------------------------------------------------------

def spec_of(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The architecture spec of a Net or of an nn.Sequential of supported modules.

    Args:
        model: a Net, or an nn.Sequential (your own module class: use `from_module`).
        input_shape: the shape of one sample (a Net knows its own).

    Returns:
        dict: the checked spec {"input": [...], "layers": [...]}, defaults filled in; a
        TypeError names an unsupported module, a SpecError a shape that does not chain.

    Example:
        >>> from torch import nn
        >>> from iaprune import spec_of
        >>> model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        >>> spec_of(model, [64])["layers"][0]
        {'type': 'linear', 'out': 16, 'bias': True}
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected a Net or nn.Sequential, got {type(model).__name__}; "
                        "import your own module with iaprune.spec.from_module")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError("spec_of needs input_shape for a plain nn.Sequential")
    found = []
    for i, (module, key) in enumerate(zip(model, graph_keys(model), strict=True)):
        try:
            found.append({**layer_of(module), **key})
        except TypeError as exc:
            raise TypeError(f"module {i}: {exc}") from None
    return check_spec({"input": list(input_shape), "layers": found})


# ---- presets and files -----------------------------------------------------------------------

def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 64),
        activation: str = "relu") -> dict[str, Any]:
    """The thesis MLP: linear h_1, act, ..., linear h_k, act, linear num_classes."""
    if activation not in runtime_spec.activations():
        raise SpecError(f"unknown activation {activation!r}; choose from "
                        f"{sorted(runtime_spec.activations())}")
    if not hidden:
        raise SpecError("an MLP needs at least one hidden layer size")
    for h in hidden:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise SpecError(f"hidden layer sizes must be integers >= 1, got {list(hidden)}")
    return check_spec({"input": list(input_shape),
                       "layers": runtime_spec.mlp_layers(hidden, num_classes, activation)})


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
    chain: list[Layer | str] = []
    for channels in (2, 4, 8):
        chain += [{"type": "conv2d", "out": channels, "kernel": 3, "padding": 1}, "relu"]
    chain += ["flatten", {"type": "linear", "out": num_classes}]
    return check_spec({"input": list(input_shape), "layers": chain})


def resnet(input_shape: Sequence[int], num_classes: int, blocks: int) -> dict[str, Any]:
    """A CIFAR-style ResNet (He et al. 2016, section 4.2) of 6·blocks + 2 layers: a 3x3 stem of
    16 channels, three stages of 16/32/64 channels with `blocks` BasicBlocks each (two 3x3
    convs with BatchNorm, ReLU after the residual add), the first block of stages 2 and 3 with
    stride 2 and a 1x1-conv shortcut (with BatchNorm), identity shortcuts otherwise, global
    average pooling and a linear layer. Any image size works (the pooling is global)."""
    def conv(out: int, kernel: int, stride: int, name: str, inputs: str | None = None) -> Layer:
        layer = {"type": "conv2d", "out": out, "kernel": kernel, "stride": stride,
                 "padding": kernel // 2, "bias": False, "name": name}
        return {**layer, "inputs": [inputs]} if inputs else layer

    chain: list[Layer] = [conv(16, 3, 1, "stem.conv"), {"type": "batchnorm", "name": "stem.bn"},
                          {"type": "relu", "name": "stem"}]
    stream, width = "stem", 16
    for stage, out in enumerate((16, 32, 64), start=1):
        for b in range(1, blocks + 1):
            name = f"stage{stage}.block{b}"
            stride = 2 if stage > 1 and b == 1 else 1
            chain += [conv(out, 3, stride, f"{name}.conv1", stream),
                      {"type": "batchnorm", "name": f"{name}.bn1"},
                      {"type": "relu", "name": f"{name}.relu1"},
                      conv(out, 3, 1, f"{name}.conv2"),
                      {"type": "batchnorm", "name": f"{name}.bn2"}]
            shortcut = stream
            if stride != 1 or out != width:
                chain += [conv(out, 1, stride, f"{name}.shortcut.conv", stream),
                          {"type": "batchnorm", "name": f"{name}.shortcut"}]
                shortcut = f"{name}.shortcut"
            chain += [{"type": "add", "name": f"{name}.add", "inputs": [f"{name}.bn2", shortcut]},
                      {"type": "relu", "name": name}]
            stream, width = name, out
    chain += [{"type": "global_avgpool", "name": "pool"}, {"type": "linear", "out": num_classes,
                                                           "name": "fc"}]
    return check_spec({"input": list(input_shape), "layers": chain})


def resnet8(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """The CIFAR-style ResNet-8: one BasicBlock per stage (`resnet`)."""
    return resnet(input_shape, num_classes, 1)


def resnet20(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """The CIFAR-style ResNet-20: three BasicBlocks per stage (`resnet`)."""
    return resnet(input_shape, num_classes, 3)


PRESETS: dict[str, Callable[..., dict[str, Any]]] = {
    "mlp": mlp, "lenet5": lenet5, "cnn3": cnn3, "resnet8": resnet8, "resnet20": resnet20}


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
        value = parse_json(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
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
    outputs = shapes(spec["layers"], spec["input"])[-1][0]  # the logits, maybe normalised
    if outputs != num_classes:
        raise SpecError(f"--arch {arch}: {outputs} outputs, the dataset has "
                        f"{num_classes} classes")
    return spec
