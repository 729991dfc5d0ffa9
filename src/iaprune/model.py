"""Models: spec Nets built from presets, a user's own chain-shaped module imported as a Net, and
the per-layer size table (params, MACs) of summary.txt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from iaprune.spec import Net, build, layer_of, mlp, shapes, spec_of
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
    layer_shapes = shapes(spec["layers"], spec["input"])
    rows = []
    for i, module in enumerate(model):
        params = sum(p.numel() for p in module.parameters())
        if not params:
            continue
        rows.append((i, spec["layers"][i]["type"], "x".join(map(str, layer_shapes[i])),
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
    """The layer spec of a functional call on the chain's tensor, read by the layer type that
    names the call (F.relu, torch.flatten, x.view, F.max_pool2d, ...); TypeError if none does."""
    name = getattr(func, "__name__", repr(func)).strip("_")
    found = layers.of_call(name)
    if found is None:
        raise TypeError(f"unsupported operation {name!r} in forward; IA-Prune imports chains of "
                        f"{layers.supported()} and their functional forms")
    return found.read_call(args, kwargs, result)


class _Unsupported(Exception):
    """Raised inside the recorder (a TypeError there would become Python's NotImplemented)."""


class _Recorder(TorchFunctionMode):
    """Records the chain of a forward pass: module calls (by hooks) and functional calls made
    outside modules; checks that every step takes the previous step's output."""

    def __init__(self, model: nn.Module, x: Tensor):
        super().__init__()
        self.steps: list[tuple[dict[str, Any], nn.Module | None]] = []
        self.last = x
        self.depth = 0
        self.handles = []
        leaves = [m for m in model.modules() if not list(m.children()) and m is not model]
        for module in leaves:
            self.handles.append(module.register_forward_pre_hook(self._enter))
            self.handles.append(module.register_forward_hook(self._leave))
        self.seen: set[int] = set()

    def _enter(self, module: nn.Module, inputs: tuple) -> None:
        if self.depth == 0:
            if not inputs or inputs[0] is not self.last:
                raise TypeError(f"{type(module).__name__} does not take the previous layer's "
                                "output: only chain-shaped forwards can be imported")
            if id(module) in self.seen:
                raise TypeError(f"{type(module).__name__} is called twice: shared layers "
                                "cannot be pruned")
            self.seen.add(id(module))
        self.depth += 1

    def _leave(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.steps.append((layer_of(module), module))
            self.last = output

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.depth == 0 and isinstance(result, Tensor) and args and args[0] is self.last:
            try:
                self.steps.append((_function_layer(func, args, kwargs, result), None))
            except TypeError as exc:
                raise _Unsupported(str(exc)) from None
            self.last = result
        elif self.depth == 0 and isinstance(result, Tensor) and any(
                a is self.last for a in (*args, *kwargs.values())):
            name = getattr(func, "__name__", repr(func))
            raise _Unsupported(f"unsupported operation {name!r} on the chain's tensor; IA-Prune "
                               "imports chains of supported layers only")
        return result

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


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
    x = torch.rand(samples, *shape, generator=torch.Generator().manual_seed(0))
    recorder = _Recorder(module, x)
    try:
        with torch.no_grad(), recorder:
            out = module(x)
    except _Unsupported as exc:
        raise TypeError(f"{type(module).__name__}: {exc}") from None
    finally:
        recorder.close()
        module.train(was_training)
    if out is not recorder.last:
        raise TypeError(f"{type(module).__name__}.forward does something to its result after "
                        "the last recorded layer")
    found = [layer for layer, _ in recorder.steps]
    owners = [owner for _, owner in recorder.steps]
    # a leading flatten is implicit when the first shape-changing layer reads flat inputs
    if found and layers.entry(found[0]["type"]).role == "reshape" and len(shape) > 1:
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

