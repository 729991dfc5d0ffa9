"""Models: spec Nets built from presets, a user's own chain-shaped module imported as a Net, and
the per-layer size table (params, MACs) of summary.txt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from iaprune.spec import Net, build, input_shapes, layer_of, mlp, shapes, spec_of
from iaprune_runtime import layers


def mlp_net(sizes: Sequence[int], activation: str = "relu", seed: int | None = None,
            input_shape: Sequence[int] | None = None) -> Net:
    """The MLP [n_in, h_1, ..., h_k, n_out] as a Net (input shape (n_in,) unless given)."""
    sizes = list(sizes)
    if len(sizes) < 3:
        raise ValueError(f"an MLP needs input, at least one hidden and output size, got {sizes}")
    shape = list(input_shape) if input_shape is not None else [sizes[0]]
    if math.prod(shape) != sizes[0]:
        raise ValueError(f"input shape {shape} does not have {sizes[0]} features")
    return build(mlp(shape, sizes[-1], sizes[1:-1], activation), seed=seed)


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def hidden_label(units: Sequence[int], inputs: bool = False) -> str:
    """Unit counts written like '205-51' (the Hidden column of validation_results.txt); with
    `inputs`, the first count is the input features read: '300:54-13'."""
    units = list(units)
    if inputs:
        return f"{units[0]}:{hidden_label(units[1:])}"
    return "-".join(str(h) for h in units)


def parse_hidden_label(label: str) -> tuple[int | None, list[int]]:
    """(input features read or None, hidden unit counts) of a label written by hidden_label."""
    inputs, _, hidden = str(label).rpartition(":")
    return (int(inputs) if inputs else None), [int(n) for n in hidden.split("-")]


def _macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample of one module, by its layer type's rule (a Linear:
    in·out; a Conv2d: out positions · out channels · in channels · kh · kw; layers without
    weights count 0, as thop does)."""
    return layers.entry_of(module).macs(module, out_shape)


def layer_table(model: Net) -> tuple[str, int, int]:
    """Per-layer table (layer, in, out, params, MACs) for summary.txt; returns (text, params,
    MACs). The per-layer rule is checked against thop's total."""
    import copy

    from thop import profile  # imported here: only the engine's summaries need it

    spec = spec_of(model)
    layer_shapes = shapes(spec["layers"], spec["input"])  # the input, then each layer's output
    inputs = input_shapes(spec["layers"], spec["input"])
    rows = []
    for i, module in enumerate(model):
        params = sum(p.numel() for p in module.parameters())
        if not params:
            continue
        rows.append((i, spec["layers"][i]["type"], "x".join(map(str, inputs[i])),
                     "x".join(map(str, layer_shapes[i + 1])), params,
                     _macs(module, layer_shapes[i + 1])))
    probe = copy.deepcopy(model).float().cpu()  # thop adds buffers to the modules it profiles
    macs, _ = profile(probe, inputs=(torch.zeros(1, *spec["input"]),), verbose=False)
    total_params, total_macs = sum(r[4] for r in rows), sum(r[5] for r in rows)
    conv_or_linear = sum(_macs(m, s) for m, s in zip(model, layer_shapes[1:], strict=True))
    assert int(macs) >= conv_or_linear == total_macs, (macs, total_macs)
    lines = [f"{'Layer':>5} {'Type':<10} {'In':>10} {'Out':>10} {'Params':>10} {'MACs':>10}"]
    lines += [f"{i:>5} {kind:<10} {n_in:>10} {n_out:>10} {p:>10} {m:>10}"
              for i, kind, n_in, n_out, p, m in rows]
    lines.append(f"{'Total':>5} {'':<10} {'':>10} {'':>10} {total_params:>10} {total_macs:>10}")
    return "\n".join(lines) + "\n", total_params, total_macs


# ---- a user's own module ---------------------------------------------------------------------

def _function_layer(func: Any, args: tuple, kwargs: dict, result: Tensor) -> dict[str, Any]:
    """The layer spec of a functional call on a network's tensor, read by the layer type that
    names the call (F.relu, torch.flatten, x.view, F.max_pool2d, torch.cat, ...); TypeError if
    none does."""
    name = _op_name(func)
    found = layers.of_call(name)
    if found is None:
        raise TypeError(f"unsupported operation {name!r}; IA-Prune imports networks of "
                        f"{layers.supported()}, their functional forms, residual adds and "
                        "channel concatenations")
    return found.read_call(args, kwargs, result)


def _op_name(func: Any) -> str:
    return getattr(func, "__name__", repr(func)).strip("_")


class _Unsupported(Exception):
    """Raised inside the recorder (a TypeError there would become Python's NotImplemented)."""


# calls that give the same values (a copy, a layout, the dtype the network already has)
_SAME = ("contiguous", "clone", "detach", "to", "float", "type_as")
# modules that pass their input on unchanged (a ResNet's identity shortcut, nn.Sequential())
_IDENTITY = (nn.Identity,)


class _Recorder(TorchFunctionMode):
    """Records the graph of a forward pass: module calls (by hooks) and functional calls made
    outside modules, each with the values it reads (tracked by tensor identity: value 0 is the
    input, step k's output value k + 1)."""

    def __init__(self, model: nn.Module, x: Tensor):
        super().__init__()
        # per step: (layer spec, owning module or None, values read, where it was called)
        self.steps: list[tuple[dict[str, Any], nn.Module | None, tuple[int, ...], str]] = []
        self.value: dict[int, int] = {id(x): 0}
        self.held: list[Tensor] = [x]  # keeps tracked tensors alive: ids stay unique
        self.depth = 0
        self.path: list[str] = []  # qualified names of the modules being run
        self.handles = []
        self.seen: set[int] = set()
        self.names = {module: name for name, module in model.named_modules()}
        for module in model.modules():
            leaf = not list(module.children()) and module is not model
            self.handles.append(module.register_forward_pre_hook(
                self._enter if leaf else self._enter_parent))
            self.handles.append(module.register_forward_hook(
                self._leave if leaf else self._leave_parent))

    def where(self) -> str:
        return f" in {self.path[-1]}" if self.path and self.path[-1] else ""

    def _enter_parent(self, module: nn.Module, inputs: tuple) -> None:
        self.path.append(self.names.get(module, ""))

    def _leave_parent(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.path.pop()

    def track(self, tensor: Tensor) -> None:
        self.value[id(tensor)] = len(self.steps)
        self.held.append(tensor)

    def read(self, tensor: Any) -> int | None:
        return self.value.get(id(tensor)) if isinstance(tensor, Tensor) else None

    def _enter(self, module: nn.Module, inputs: tuple) -> None:
        if self.depth == 0:
            name = self.names.get(module, type(module).__name__)
            if not inputs or self.read(inputs[0]) is None:
                raise _Unsupported(f"{name} ({type(module).__name__}) does not read a value of "
                                   "the network (its input or a layer's output)")
            weighted = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
            if id(module) in self.seen and weighted:  # a ReLU used twice is two ReLUs
                raise _Unsupported(f"{name} ({type(module).__name__}) is called twice: shared "
                                   "layers cannot be pruned")
            self.seen.add(id(module))
        self.depth += 1

    def _leave(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.depth -= 1
        if self.depth:
            return
        source = self.read(inputs[0])
        if isinstance(module, _IDENTITY) or (type(module) is nn.Sequential and output is inputs[0]):
            self.value[id(output)] = source  # an identity: the same value
            return
        try:
            layer = layer_of(module)
        except TypeError as exc:
            raise _Unsupported(f"{self.names.get(module, '')}: {exc}") from None
        self.steps.append((layer, module, (source,), self.names.get(module, "")))
        self.track(output)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.depth or not isinstance(result, Tensor):
            return result
        flat = [*args, *kwargs.values()]
        if args and isinstance(args[0], list | tuple):
            flat = [*args[0], *flat[1:]]
        reads = [self.read(a) for a in flat]
        if all(r is None for r in reads):
            return result  # a computation on constants or the weights, not on a value
        name = _op_name(func)
        if name in _SAME and reads[0] is not None and result.shape == args[0].shape:
            self.value[id(result)] = reads[0]  # a copy or layout change: the same value
            self.held.append(result)
            return result
        joining = layers.of_call(name)
        if joining is not None and joining.merge:  # a residual add, a concatenation
            given = list(args[0]) if isinstance(args[0], list | tuple) else list(args[:2])
            count = len(given)
            if any(self.read(a) is None for a in given):
                raise _Unsupported(f"{name}{self.where()} joins a tensor that is not a value of "
                                   "the network: a skip connection adds two values of the "
                                   "network (out + x); constants are not supported")
            try:
                layer = joining.read_call(args, kwargs, result)
            except TypeError as exc:
                raise _Unsupported(f"unsupported operation {name!r}{self.where()}: {exc}"
                                   ) from None
            self.steps.append((layer, None, tuple(reads[:count]), self.where()))
        else:
            if reads[0] is None or any(r is not None for r in reads[1:]):
                raise _Unsupported(f"unsupported operation {name!r}{self.where()} on values of "
                                   "the network; IA-Prune imports supported layers, residual "
                                   "adds and channel concatenations")
            try:
                layer = _function_layer(func, args, kwargs, result)
            except TypeError as exc:
                raise _Unsupported(f"{exc}{self.where()}") from None
            self.steps.append((layer, None, (reads[0],), self.where()))
        self.track(result)
        return result

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _graph_layers(steps: list[tuple[dict[str, Any], nn.Module | None, tuple[int, ...], str]]
                  ) -> list[dict[str, Any]]:
    """The layer specs of recorded steps; for a graph, every step is named (its module's
    qualified name, or the operation and where it was called) and reads its inputs by name."""
    if all(reads == (k,) for k, (_, _, reads, _) in enumerate(steps)):
        return [layer for layer, _, _, _ in steps]
    names: list[str] = []
    for k, (layer, owner, _, where) in enumerate(steps):
        if owner is not None and where not in names:
            names.append(where)
        elif owner is not None:  # a weightless module called again (a ReLU used twice)
            names.append(f"{where}.{k}")
        else:  # a functional step: its type, where it ran, and its step number
            parent = where.removeprefix(" in ")
            names.append(f"{parent + '.' if parent else ''}{layer['type']}{k}")
    found = []
    for k, (layer, _, reads, _) in enumerate(steps):
        spec = {**layer, "name": names[k]}
        if reads != (k,):
            spec["inputs"] = ["input" if j == 0 else names[j - 1] for j in reads]
        found.append(spec)
    return found


def from_module(module: nn.Module, input_shape: Sequence[int], check: bool = True,
                samples: int = 16) -> Net:
    """Import a user's own nn.Module as a Net with the same weights, trained or not.

    The forward is run once on a random batch and every step is recorded: module calls
    (Linear, Conv2d, BatchNorm, activations, pooling, Flatten, Dropout, and any type in the
    layer registry) and functional calls such as F.relu, torch.flatten or x.view(len(x), -1).
    Anything else is a TypeError naming it, never skipped.

    Args:
        module: your network; its forward must be a chain of supported steps.
        input_shape: the shape of one sample, e.g. [1, 28, 28].
        check: require the Net's outputs to equal the module's on random inputs.
        samples: the size of the random batches.

    Returns:
        Net: the same network as an nn.Sequential that knows its architecture spec; save it
        with `save_checkpoint` and prune it with `run(PruneConfig(base_model=...))`.

    Example:
        >>> import torch.nn.functional as F
        >>> from torch import nn
        >>> from iaprune import from_module
        >>> class Tiny(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 10)
        ...     def forward(self, x):
        ...         return self.fc2(F.relu(self.fc1(x.view(len(x), -1))))
        >>> from_module(Tiny(), [1, 8, 8])
        Net(
          (0): Linear(in_features=64, out_features=16, bias=True)
          (1): ReLU()
          (2): Linear(in_features=16, out_features=10, bias=True)
        )
    """
    shape = tuple(int(s) for s in input_shape)
    was_training = module.training
    module.eval()
    dtype = next(module.parameters()).dtype
    x = torch.rand(samples, *shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    recorder = _Recorder(module, x)
    try:
        with torch.no_grad(), recorder:
            out = module(x)
    except _Unsupported as exc:
        raise TypeError(f"{type(module).__name__}: {exc}") from None
    finally:
        recorder.close()
        module.train(was_training)
    if recorder.read(out) != len(recorder.steps) or not recorder.steps:
        raise TypeError(f"{type(module).__name__}.forward does something to its result after "
                        "the last recorded layer (or returns no layer's output)")
    found = _graph_layers(recorder.steps)
    owners = [owner for _, owner, _, _ in recorder.steps]
    # a chain's leading flatten is implicit when its first shape-changing layer reads flat inputs
    chain = all("inputs" not in layer for layer in found)
    if chain and layers.entry(found[0]["type"]).role == "reshape" and len(shape) > 1:
        probe = build({"input": list(shape), "layers": found[1:]}) if len(found) > 1 else None
        if probe is not None and probe.flat_input:
            found, owners = found[1:], owners[1:]
    net = build({"input": list(shape), "layers": found})
    for target, owner in zip(net, owners, strict=True):
        if owner is not None:
            target.load_state_dict(owner.state_dict(), strict=True)
    net.to(next(module.parameters()).dtype).eval()
    if check:
        with torch.no_grad():
            probe_x = torch.rand(samples, *shape, generator=torch.Generator().manual_seed(1))
            module.eval()
            expected = module(probe_x.to(next(module.parameters()).dtype))
            module.train(was_training)
            got = net(probe_x.to(next(module.parameters()).dtype))
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4,
                                                             atol=1e-5):
            raise TypeError(f"the imported {type(module).__name__} does not reproduce the "
                            "module's outputs (data-dependent control flow?)")
    return net

