"""An IA-Prune network rebuilt from a checkpoint's architecture spec, with torch alone.

deploy/ never imports src, so this is a small twin of src/spec.py's `build`: the same layer
types and fields, the same module layout and state_dict keys ('0.weight', '2.bias', ...), and
the same input rule (a network whose first shape-changing layer is a Linear or a select reads
its input flattened; any other reshapes it to (batch, *input)). tests/test_deploy.py checks that
the two agree. Checkpoints "ia-prune/2" (spec + input + state_dict) and "ia-prune/1" (an MLP by
its sizes and activation) load with weights_only=True and strict=True.
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
from torch import Tensor, nn

FORMAT = "ia-prune/2"  # the `format` field of best_model.pth (and of a bundle's model.pth)
LEGACY_FORMAT = "ia-prune/1"  # an MLP by its "sizes" and "activation"
REQUIRED = object()  # marks a layer field without a default
# type -> {field: default}; every field is an int except bias (bool), p (float), indices (list);
# a stride of None means the kernel size. The same table as src/spec.py's FIELDS.
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
# layers that act on each value alone: they neither change the shape nor mix units
ELEMENTWISE = ("relu", "sigmoid", "tanh", "dropout", "batchnorm")
PRODUCERS = (nn.Linear, nn.Conv2d)  # the layers that compute units (and MACs)


class BundleError(ValueError):
    """A file or folder that is not a valid IA-Prune checkpoint or bundle, or was modified."""


class SpecError(ValueError):
    """An architecture spec that deploy cannot build."""


# ---- the spec ----------------------------------------------------------------------------------

def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _field(kind: str, name: str, value: Any, where: str, filled: dict[str, Any]) -> Any:
    """One checked field value of a layer (defaults already applied)."""
    if name == "bias":
        if not isinstance(value, bool):
            raise SpecError(f"{where}: bias must be true or false, got {value!r}")
        return value
    if name == "p":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise SpecError(f"{where}: dropout p must be in [0, 1), got {value!r}")
        return float(value)
    if name == "indices":
        if not isinstance(value, list | tuple) or not value:
            raise SpecError(f"{where}: select needs a non-empty list of indices")
        value = [_int(i, f"{where}: select index", 0) for i in value]
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise SpecError(f"{where}: select indices must be strictly increasing")
        return value
    if name == "stride" and value is None:
        return filled["kernel"]
    return _int(value, f"{where}: {kind} {name}", 0 if name == "padding" else 1)


def check_layer(layer: dict[str, Any] | str, where: str = "layer") -> dict[str, Any]:
    """A layer spec with its defaults filled in; a string is a layer without fields ("relu")."""
    if isinstance(layer, str):
        layer = {"type": layer}
    if not isinstance(layer, dict) or layer.get("type") not in FIELDS:
        raise SpecError(f"{where}: not a layer of a known type ({', '.join(FIELDS)}): {layer!r}")
    kind = layer["type"]
    unknown = set(layer) - set(FIELDS[kind]) - {"type"}
    if unknown:
        raise SpecError(f"{where}: {kind} has no field(s) {sorted(unknown)}")
    out: dict[str, Any] = {"type": kind}
    for name, default in FIELDS[kind].items():
        value = layer.get(name, default)
        if value is REQUIRED:
            raise SpecError(f"{where}: {kind} needs {name!r}")
        out[name] = _field(kind, name, value, where, out)
    return out


def reads_flat(layers: Sequence[dict[str, Any]]) -> bool:
    """Whether a network flattens its input first: its first shape-changing layer is a Linear
    (or a select)."""
    for layer in layers:
        if layer["type"] not in ELEMENTWISE:
            return layer["type"] in ("linear", "select")
    return False


def out_shape(layer: dict[str, Any], shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The output shape (without batch) of a checked layer on inputs of `shape`."""
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
            raise SpecError(f"{where}: linear gets input of shape {shape}; a flatten is missing")
        return (layer["out"],)
    if len(shape) != 3:
        raise SpecError(f"{where}: {kind} needs (C, H, W) input, got {shape}")
    pad = layer.get("padding", 0)
    size = [(s + 2 * pad - layer["kernel"]) // layer["stride"] + 1 for s in shape[1:]]
    if min(size) < 1:
        raise SpecError(f"{where}: {kind} kernel {layer['kernel']} does not fit input {shape}")
    return (layer["out"] if kind == "conv2d" else shape[0], *size)


def shapes(layers: Sequence[dict[str, Any]], input_shape: Sequence[int]
           ) -> list[tuple[int, ...]]:
    """Shapes (without batch) of every layer's input, then the output: len(layers) + 1."""
    shape = (math.prod(input_shape),) if reads_flat(layers) else tuple(input_shape)
    out = [shape]
    for i, layer in enumerate(layers):
        shape = out_shape(layer, shape, f"layer {i} ({layer['type']})")
        out.append(shape)
    return out


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A checked spec {'input': [...], 'layers': [...]} with defaults filled in."""
    if not isinstance(spec, dict) or set(spec) != {"input", "layers"}:
        raise SpecError("a spec is an object with exactly 'input' and 'layers'")
    shape = spec["input"]
    if not isinstance(shape, list | tuple) or not shape:
        raise SpecError(f"spec input must be a non-empty shape list, got {shape!r}")
    shape = [_int(s, "input dimension", 1) for s in shape]
    if not isinstance(spec["layers"], list | tuple) or not spec["layers"]:
        raise SpecError("spec layers must be a non-empty list")
    layers = [check_layer(layer, f"layer {i}") for i, layer in enumerate(spec["layers"])]
    shapes(layers, shape)
    if layers[-1]["type"] != "linear":
        raise SpecError("the last layer must be a linear layer (the logits)")
    return {"input": shape, "layers": layers}


def mlp_spec(sizes: Sequence[int], activation: str, input_shape: Sequence[int] | None = None
             ) -> dict[str, Any]:
    """The spec of the MLP [n_in, h_1, ..., n_out]: linear, activation, ..., linear."""
    if activation not in ACTIVATIONS:
        raise SpecError(f"unknown activation {activation!r}; deploy knows {sorted(ACTIVATIONS)}")
    if (not isinstance(sizes, list | tuple) or len(sizes) < 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)):
        raise SpecError(f"bad layer sizes {sizes!r}")
    layers: list[dict[str, Any]] = []
    for n_out in sizes[1:-1]:
        layers += [{"type": "linear", "out": n_out}, {"type": activation}]
    layers.append({"type": "linear", "out": sizes[-1]})
    shape = list(input_shape) if input_shape is not None else [sizes[0]]
    if math.prod(shape) != sizes[0]:
        shape = [sizes[0]]
    return check_spec({"input": shape, "layers": layers})


def describe(spec: dict[str, Any]) -> str:
    """One line: 'conv2d 2 3 1 1, relu, flatten, linear 10 on [1, 8, 8]'."""
    parts = []
    for layer in spec["layers"]:
        fields = [str(v) for k, v in layer.items() if k not in ("type", "bias", "indices")]
        if layer["type"] == "select":
            fields = [f"{len(layer['indices'])} inputs"]
        parts.append(" ".join([layer["type"], *fields]))
    return f"{', '.join(parts)} on {spec['input']}"


# ---- the network ------------------------------------------------------------------------------

class Select(nn.Module):
    """The input features a pruned network reads: x[:, indices] of its flattened input."""

    def __init__(self, indices: Sequence[int], n_in: int):
        super().__init__()
        self.n_in = n_in
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.indices)


def _module(layer: dict[str, Any], shape: tuple[int, ...]) -> nn.Module:
    """The torch module of one checked layer on inputs of `shape`."""
    kind = layer["type"]
    if kind == "linear":
        return nn.Linear(shape[0], layer["out"], bias=layer["bias"])
    if kind == "conv2d":
        return nn.Conv2d(shape[0], layer["out"], layer["kernel"], layer["stride"],
                         layer["padding"], bias=layer["bias"])
    if kind == "batchnorm":
        return nn.BatchNorm1d(shape[0]) if len(shape) == 1 else nn.BatchNorm2d(shape[0])
    if kind in ("maxpool2d", "avgpool2d"):
        pool = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return pool(layer["kernel"], layer["stride"])
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    if kind == "select":
        return Select(layer["indices"], shape[0])
    return ACTIVATIONS[kind]()


def max_pool(pool: nn.MaxPool2d, x: Tensor) -> Tensor:
    """pool(x) for a spec's max pool (no padding, dilation or ceil mode) as the elementwise
    maximum of its kh·kw strided slices: the same values, without the indices of the maxima
    that torch's CPU kernel computes (a pruned LeNet-5 runs ~5x faster with it)."""
    kh, kw = _two(pool.kernel_size)
    sh, sw = _two(pool.stride or pool.kernel_size)
    rows, cols = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[..., i:i + sh * (rows - 1) + 1:sh, j:j + sw * (cols - 1) + 1:sw]
            out = window if out is None else torch.maximum(out, window)
    return out


def _two(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


class DeployedNet(nn.Sequential):
    """The network of a spec, in the library's build layout ('0.weight', '0.bias', '2.weight', ...).

    Like the engine's Net it flattens its input (flat-reading specs) or reshapes it to
    (batch, *input), so (n, 784) and (n, 1, 28, 28) both work. `input_spec`, `classes` and
    `info` are set by `deploy.load`.
    """

    def __init__(self, spec: dict[str, Any]):
        spec = check_spec(spec)
        layer_shapes = shapes(spec["layers"], spec["input"])
        super().__init__(*(_module(layer, shape) for layer, shape
                           in zip(spec["layers"], layer_shapes, strict=False)))
        self.spec = spec
        self.layer_shapes = layer_shapes  # the input shape of every layer, then the output
        self.input_shape = tuple(spec["input"])
        self.flat_input = reads_flat(spec["layers"])
        self.input_spec: Any = None  # deploy.inputs.InputSpec once loaded
        self.classes: list[str] = [str(c) for c in range(self.layer_shapes[-1][0])]
        self.info: dict[str, Any] = {}  # the manifest (bundle) or the checkpoint's metadata

    def forward(self, x: Tensor) -> Tensor:
        # x.shape[0], not len(x): an ONNX export keeps the batch size dynamic
        if self.flat_input:
            x = x.reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], *self.input_shape)
        inference = not torch.is_grad_enabled()  # no backward: max pools need no indices
        for module in self:
            x = max_pool(module, x) if inference and type(module) is nn.MaxPool2d else module(x)
        return x

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
    def features_read(self) -> int:
        """Input features the network reads: the length of its select, else all of them."""
        selects = [m for m in self if isinstance(m, Select)]
        return len(selects[0].indices) if selects else self.n_inputs

    @property
    def hidden(self) -> list[int]:
        """Units (neurons, channels) of every Linear/Conv2d but the output layer."""
        return [m.out_features if isinstance(m, nn.Linear) else m.out_channels
                for m in self if isinstance(m, PRODUCERS)][:-1]

    @property
    def sizes(self) -> list[int] | None:
        """[n_in, h_1, ..., n_out] of an MLP (Linears and activations, maybe after a select);
        None for any other network."""
        kinds = [layer["type"] for layer in self.spec["layers"]]
        if kinds[0] == "select":
            kinds = kinds[1:]
        if set(kinds) - {"linear", *ACTIVATIONS}:
            return None
        linears = [m for m in self if isinstance(m, nn.Linear)]
        return [linears[0].in_features] + [m.out_features for m in linears]

    @property
    def activation(self) -> str | None:
        """The activation of the network when it uses exactly one kind, else None."""
        kinds = {layer["type"] for layer in self.spec["layers"]} & set(ACTIVATIONS)
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
    total = 0
    for module, shape in zip(model, model.layer_shapes[1:], strict=True):
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            total += math.prod(shape) * module.weight[0].numel()
    return total


# ---- checkpoints ------------------------------------------------------------------------------

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
        raise BundleError(f"{source}: bad architecture ({_first_line(exc)})") from None


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
    model = DeployedNet(checkpoint_spec(checkpoint, source))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise BundleError(f"{source}: weights do not fit the recorded architecture "
                          f"({_first_line(exc)})") from None
    for module, layer in zip(model, model.spec["layers"], strict=True):
        if isinstance(module, Select) and module.indices.tolist() != layer["indices"]:
            raise BundleError(f"{source}: the select's stored indices differ from its spec")
    return model.eval()
