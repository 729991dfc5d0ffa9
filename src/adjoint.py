"""Interval forward sweep and interval reverse (adjoint) sweep over an MLP.

The network is a chain of modules (nn.Sequential of Linear and ReLU/Sigmoid/Tanh). The forward
sweep encloses every intermediate value over an input box; the reverse sweep walks the list back
from a seed on the outputs and encloses the adjoints ∂y/∂z of every hidden pre-activation z:

    [ā_{l-1}] = [z̄_l] W_l               (point matrix, centre/radius form)
    [z̄_l]     = [ā_l] ⊗ φ'([z_l])        (interval product with the derivative range)

A leading batch of boxes (shape (batch, n_in)) is swept at once: no Python loop over boxes, and
per-output seeding is one batched sweep with an identity seed, not a loop over outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
from torch import nn

from src.interval import Interval

Seed = Literal["per_output", "sum"]
SEEDS: tuple[str, ...] = get_args(Seed)
Measure = Literal["pre", "post"]
MEASURES: tuple[str, ...] = get_args(Measure)


class LayerBounds(NamedTuple):
    """Enclosures for one hidden layer of n neurons (a leading batch dimension when batched)."""

    value: Interval  # [z] (pre-activation) or [a] (post-activation): (n,) or (batch, n)
    # [∂y/∂z] or [∂y/∂a]: "sum" (n,) or (batch, n); "per_output" (n_out, n) or (batch, n_out, n)
    adjoint: Interval


@dataclass(frozen=True)
class Rule:
    """How one module type maps an interval forward and an adjoint interval backward."""

    # (module, input value) -> output value
    forward: Callable[[nn.Module, Interval], Interval]
    # (module, input value, adjoint of the output (..., k, n_out)) -> adjoint of the input
    backward: Callable[[nn.Module, Interval, Interval], Interval]


def _linear_forward(module: nn.Linear, x: Interval) -> Interval:
    bias = None if module.bias is None else module.bias.to(x.dtype)
    return x.linear(module.weight.to(x.dtype), bias)


def _linear_backward(module: nn.Linear, x: Interval, out_adjoint: Interval) -> Interval:
    # z = a Wᵀ + b  =>  ā = z̄ W (row vectors), a point-matrix product in centre/radius form
    return out_adjoint @ module.weight.to(x.dtype)


def _activation_rule(value: Callable[[Interval], Interval],
                     derivative: Callable[[Interval], Interval]) -> Rule:
    """A pointwise activation: a = φ(z) forward, z̄ = ā ⊗ φ'([z]) backward."""
    def backward(module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        return out_adjoint * derivative(x[..., None, :])  # broadcast over the seed dimension

    return Rule(lambda module, x: value(x), backward)


RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: Rule(_linear_forward, _linear_backward),
    nn.ReLU: _activation_rule(Interval.relu, Interval.relu_derivative),
    nn.Sigmoid: _activation_rule(Interval.sigmoid, Interval.sigmoid_derivative),
    nn.Tanh: _activation_rule(Interval.tanh, Interval.tanh_derivative),
}


def chain(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` in order, checked to be Linear/ReLU/Sigmoid/Tanh (else TypeError)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an MLP or nn.Sequential, got {type(model).__name__}")
    modules = list(model)
    supported = ", ".join(t.__name__ for t in RULES)
    for position, module in enumerate(modules):
        if type(module) not in RULES:  # exact type: a subclass may compute something else
            raise TypeError(f"unsupported module {type(module).__name__} at position {position}; "
                            f"the sweep supports {supported}")
    if not any(isinstance(m, nn.Linear) for m in modules):
        raise ValueError("the model has no Linear layer")
    return modules


@torch.no_grad()
def interval_sweep(model: nn.Module, box: Interval, seed: Seed = "per_output",
                   measure: Measure = "pre") -> list[LayerBounds]:
    """Interval forward + reverse sweep over `box` (n_in,) or (batch, n_in): one LayerBounds per
    hidden layer (every Linear but the last), value and adjoint of the outputs taken before the
    activation (measure="pre": z) or after it (measure="post": a = φ(z); a hidden Linear that no
    activation follows has a = z).

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
    linear_at = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    n_in = modules[linear_at[0]].in_features
    if box.lower.ndim not in (1, 2) or box.shape[-1] != n_in:
        raise ValueError(f"box must have shape ({n_in},) or (batch, {n_in}) for this model, "
                         f"got {tuple(box.shape)}")
    dtype = torch.promote_types(box.dtype, modules[linear_at[0]].weight.dtype)

    values = [box.to(dtype)]  # values[i] is the input of module i, values[i + 1] its output
    for module in modules:
        values.append(RULES[type(module)].forward(module, values[-1]))
    hidden = linear_at[:-1]
    if not hidden:
        return []
    if measure == "post":  # each hidden neuron is read at the output of its activation
        hidden = [i + 1 if not isinstance(modules[i + 1], nn.Linear) else i for i in hidden]

    n_out = values[-1].shape[-1]
    start = (torch.eye(n_out, dtype=dtype) if seed == "per_output"  # (k, n_out): row k seeds y_k
             else torch.ones(1, n_out, dtype=dtype))  # one row seeding every output with 1
    out_adjoints = {len(modules) - 1: Interval.point(start)}  # adjoint of module i's output
    for i in range(len(modules) - 1, hidden[0], -1):  # no need to go below the first hidden layer
        out_adjoints[i - 1] = RULES[type(modules[i])].backward(modules[i], values[i],
                                                             out_adjoints[i])

    def shaped(adjoint: Interval, value: Interval) -> Interval:
        """Drop the seed dimension for "sum"; give the batch dimension even where no activation
        (which brings it in by broadcasting) lies between the layer and the output."""
        if seed == "sum":
            adjoint = adjoint[..., 0, :]
            shape = value.shape
        else:
            shape = (*value.shape[:-1], n_out, value.shape[-1])
        return Interval(adjoint.lower.expand(shape), adjoint.upper.expand(shape))

    return [LayerBounds(values[i + 1], shaped(out_adjoints[i], values[i + 1])) for i in hidden]
