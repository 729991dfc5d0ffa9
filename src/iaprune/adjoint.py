"""Interval forward sweep and interval reverse (adjoint) sweep over a network's modules.

A network is an nn.Sequential of modules of the registered layer types (iaprune_runtime.layers),
run as a chain or, for a graph, as its wiring says (add and concat nodes join values). The
forward sweep encloses every intermediate value over an input box; the reverse sweep walks the
modules back from a seed on the outputs (the logits: the input of a trailing softmax) and
encloses the adjoints ∂y/∂v of every intermediate value v, summed over every path. Each layer
type's registry entry holds its forward map of a value interval and its adjoint map (the
transposed derivative applied to an adjoint interval), each with its formula in the docstring.
For an MLP:

    [ā_{l-1}] = [z̄_l] W_l               (point matrix, centre/radius form)
    [z̄_l]     = [ā_l] ⊗ φ'([z_l])        (interval product with the derivative range)

Modules are evaluated as in eval mode (BatchNorm with its running statistics, Dropout the
identity), whatever their `training` flag. Values are (batch, *shape) and adjoints
(batch, k, *shape): a leading batch of boxes is swept at once, and per-output seeding is one
batched sweep with an identity seed (k = number of outputs), never a Python loop over outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch
from torch import nn

from iaprune.interval import Interval
from iaprune_runtime.layers import (
    LayerType,
    by_module,
    entry_of,
    logits_end,
    logits_value,
    lookup,
    supported,
)

Seed = Literal["per_output", "sum"]
SEEDS: tuple[str, ...] = get_args(Seed)
Measure = Literal["pre", "post"]
MEASURES: tuple[str, ...] = get_args(Measure)


class Sweep(NamedTuple):
    """Enclosures of every value of a chain of n modules and of its adjoints."""

    # n + 1 entries: values[i] is the input of module i, values[-1] the output; (batch, *shape_i)
    values: list[Interval]
    # n + 1 entries: adjoints[i] = [∂y/∂values[i]], (batch, k, *shape_i) with k = number of
    # outputs ("per_output") or 1 ("sum"); None below `lowest`. They may be expanded views.
    adjoints: list[Interval | None]


class LayerBounds(NamedTuple):
    """Enclosures for one hidden layer of n neurons (a leading batch dimension when batched)."""

    value: Interval  # [z] (pre-activation) or [a] (post-activation): (n,) or (batch, n)
    # [∂y/∂z] or [∂y/∂a]: "sum" (n,) or (batch, n); "per_output" (n_out, n) or (batch, n_out, n)
    adjoint: Interval


# module class -> its layer type, whose `forward`/`backward` are the interval rules (read-only
# copy of the registry's map: a layer type is added by its entry in iaprune_runtime.layers)
RULES: dict[type[nn.Module], LayerType] = by_module()


def _checked(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """The modules as a list, each of a registered layer type (else TypeError) with settings its
    rules cover (else ValueError)."""
    modules = list(modules)
    for position, module in enumerate(modules):
        found = lookup(module)  # exact type: a subclass may compute something else
        if found is None:
            raise TypeError(f"unsupported module {type(module).__name__} at position {position}; "
                            f"the sweep supports {supported()}")
        found.check(module)
    return modules


def chain(model: nn.Module) -> list[nn.Module]:
    """The modules of an nn.Sequential in order, each checked to have interval rules."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an MLP or nn.Sequential, got {type(model).__name__}")
    return _checked(model)


def _is_batched(modules: list[nn.Module], shape: tuple[int, ...],
                input_shape: Sequence[int] | None) -> bool:
    """Whether a box of `shape` is a batch of boxes: by `input_shape` when given, else by the
    input rank the first rank-fixing module takes (as torch: a Linear takes (n,) or (batch, n),
    a Conv2d (C, H, W) or (batch, C, H, W)); a chain that starts with Flatten takes a batch,
    as torch's Flatten does, unless the box is 1-d."""
    if input_shape is not None:
        if shape == tuple(input_shape):
            return False
        if shape[1:] == tuple(input_shape):
            return True
        raise ValueError(f"box has shape {shape}; input_shape {tuple(input_shape)} asks for "
                         f"{tuple(input_shape)} or (batch, *{tuple(input_shape)})")
    for position, module in enumerate(modules):
        found = entry_of(module)
        ranks = found.ranks(module)
        if ranks is not None:
            if len(shape) - 1 in ranks:
                return True
            if len(shape) in ranks:
                return False
            raise ValueError(f"box has shape {shape} but module {position} "
                             f"({type(module).__name__}) takes inputs with "
                             f"{' or '.join(map(str, ranks))} dimension(s), plus an "
                             f"optional batch dimension")
        if not found.keeps_rank:
            break
    return len(shape) >= 2


def _check_input(position: int, module: nn.Module, shape: tuple[int, ...]) -> None:
    """ValueError unless one input of `shape` (batch excluded) fits module `position`."""
    found = entry_of(module)
    ranks, features = found.ranks(module), found.features(module)
    name = f"module {position} ({type(module).__name__})"
    if ranks is not None and len(shape) not in ranks:
        raise ValueError(f"{name} takes inputs with {' or '.join(map(str, ranks))} "
                         f"dimension(s) (batch excluded), got shape {shape}")
    if features is not None and shape[0] != features:
        raise ValueError(f"{name} takes {features} features/channels in its "
                         f"first dimension, got shape {shape}")


def _dtype(modules: list[nn.Module], box: Interval) -> torch.dtype:
    """The promoted dtype of the box and every floating parameter and buffer."""
    dtype = box.dtype
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


@torch.no_grad()
def sweep(modules: Sequence[nn.Module], box: Interval, seed: Seed = "per_output",
          lowest: int = 0, input_shape: Sequence[int] | None = None,
          wiring: Sequence[Sequence[int]] | None = None) -> Sweep:
    """Interval forward + reverse sweep of a chain of modules (an nn.Sequential or a list) over
    `box`, one input box (*input_shape) or a batch of them (batch, *input_shape).

    values[i] encloses module i's input (values[-1] the output) and, for i >= lowest,
    adjoints[i] the derivatives of the outputs with respect to it (the outputs are the logits: a
    trailing softmax/log_softmax is swept forward, not seeded; its adjoint is None):
    "per_output" seeds each output y_k separately (k = number of outputs,
    adjoints[i][..., k, ...] = ∂y_k/∂values[i]), "sum" seeds all outputs with 1 at once (k = 1,
    ∂(Σ_k y_k)/∂values[i]). lowest=0 reaches the input.
    Shapes are (batch, *shape_i) and (batch, k, *shape_i), without the batch dimension for an
    unbatched box. `input_shape` (one input's shape) settles whether the box is batched; without
    it, torch's rule decides: a box with one dimension more than the first module takes is a
    batch (Linear: (n,) or (batch, n); Conv2d: (C, H, W) or (batch, C, H, W)), and a chain that
    starts with Flatten takes a batch unless the box is 1-d. Works in the promoted dtype of box,
    parameters and buffers.

    A graph network (a Net with a `wiring`, or `wiring` given: the values each module reads,
    value 0 the input and value i + 1 module i's output) is swept the same way: a merge node
    (add, concat) takes its inputs' intervals, and in the reverse sweep the adjoints a value
    receives from all its readers are summed (the chain rule over every path), so adjoints[j]
    encloses ∂y/∂values[j] through every path; values are indexed as in a chain.
    """
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose from {list(SEEDS)}")
    if not isinstance(box, Interval):
        raise TypeError(f"box must be an Interval, got {type(box).__name__}")
    links = wiring if wiring is not None else getattr(modules, "wiring", None)
    modules = chain(modules) if isinstance(modules, nn.Module) else _checked(modules)
    links = [tuple(r) for r in links] if links is not None else [(i,) for i in range(len(modules))]
    if isinstance(lowest, bool) or not isinstance(lowest, int) or not 0 <= lowest <= len(modules):
        raise ValueError(f"lowest must be an integer in [0, {len(modules)}], got {lowest!r}")
    batched = _is_batched(modules, tuple(box.shape), input_shape)
    x = box.to(_dtype(modules, box))
    values = [x if batched else x[None]]  # (batch, *input_shape)
    for position, (module, reads) in enumerate(zip(modules, links, strict=True)):
        kind = entry_of(module)
        if kind.merge:
            values.append(kind.forward_many(module, [values[j] for j in reads]))
            continue
        _check_input(position, module, tuple(values[reads[0]].shape[1:]))
        values.append(kind.forward(module, values[reads[0]]))

    # the outputs seeded are the logits: the input of a trailing softmax/log_softmax, whose
    # adjoints stay None (iaprune_runtime/layers/softmax.py says why)
    kinds = [entry_of(m) for m in modules]
    end, seed_at = logits_end(kinds), logits_value(kinds, links)  # seed_at: the logits' value
    out_shape = values[seed_at].shape[1:]
    n_out = math.prod(out_shape)
    start = (torch.eye(n_out, dtype=x.dtype, device=x.lower.device) if seed == "per_output"
             else torch.ones(1, n_out, dtype=x.dtype, device=x.lower.device))
    adjoints: list[Interval | None] = [None] * len(values)
    adjoints[seed_at] = Interval.point(start.reshape(1, len(start), *out_shape))  # (1, k, *out)
    for i in range(end - 1, lowest - 1, -1):
        kind, reads = entry_of(modules[i]), links[i]
        if kind.merge:
            given = kind.backward_many(modules[i], [values[j] for j in reads], adjoints[i + 1])
        else:
            given = [kind.backward(modules[i], values[reads[0]], adjoints[i + 1])]
        for j, adjoint in zip(reads, given, strict=True):
            adjoints[j] = adjoint if adjoints[j] is None else adjoints[j] + adjoint
    adjoints[:lowest] = [None] * lowest  # below `lowest` only some paths were reached

    def shaped(adjoint: Interval | None, value: Interval) -> Interval | None:
        """Give every adjoint the batch dimension, where no batch-dependent rule brought it in."""
        if adjoint is None:
            return None
        adjoint = adjoint.expand(len(value), adjoint.shape[1], *value.shape[1:])
        return adjoint if batched else adjoint[0]

    return Sweep([v if batched else v[0] for v in values],
                 [shaped(a, v) for a, v in zip(adjoints, values, strict=True)])


@torch.no_grad()
def interval_sweep(model: nn.Module, box: Interval, seed: Seed = "per_output",
                   measure: Measure = "pre") -> list[LayerBounds]:
    """Interval forward + reverse sweep of an MLP over `box` (n_in,) or (batch, n_in): one
    LayerBounds per hidden layer (every Linear but the last), value and adjoint of the outputs
    taken before the activation (measure="pre": z) or after it (measure="post": a = φ(z); a
    hidden Linear that no activation follows has a = z).

    seed="per_output" seeds each output y_k separately (adjoint (n_out, n) = ∂y_k/∂z);
    seed="sum" seeds all outputs with 1 at once (adjoint (n,) = ∂(Σ_k y_k)/∂z).
    Works in the promoted dtype of box and weights (float64 boxes/models give float64 bounds).
    """
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose from {list(SEEDS)}")
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {list(MEASURES)}")
    if not isinstance(box, Interval):
        raise TypeError(f"box must be an Interval, got {type(box).__name__}")
    modules = chain(model)
    kinds = [entry_of(m) for m in modules]
    linear_at = [i for i, kind in enumerate(kinds) if kind.role == "producer" and
                 not kind.spatial]
    if not linear_at:
        raise ValueError("the model has no Linear layer")
    n_in = kinds[linear_at[0]].features(modules[linear_at[0]])
    if box.lower.ndim not in (1, 2) or box.shape[-1] != n_in:
        raise ValueError(f"box must have shape ({n_in},) or (batch, {n_in}) for this model, "
                         f"got {tuple(box.shape)}")
    hidden = linear_at[:-1]
    if not hidden:
        return []
    if measure == "post":  # each hidden neuron is read at the output of its activation
        hidden = [i if kinds[i + 1].role == "producer" else i + 1 for i in hidden]
    result = sweep(modules, box, seed, lowest=hidden[0] + 1, input_shape=box.shape[-1:])
    bounds = []
    for i in hidden:  # module i's output is values[i + 1]
        adjoint = result.adjoints[i + 1]
        bounds.append(LayerBounds(result.values[i + 1],
                                  adjoint[..., 0, :] if seed == "sum" else adjoint))
    return bounds
