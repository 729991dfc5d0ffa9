"""add and concat: the nodes that join branches of a graph network (a residual add, a channel
concatenation). They read several values; every other layer type reads one.

- add: y = x_1 + ... + x_m (same shapes). Forward [y] = Σ [x_i]; adjoint: each input gets the
  output's adjoint, x̄_i = ȳ (∂y/∂x_i is the identity). Channels joined by an add are one
  coupled group: removing channel c removes it from every input at once.
- concat: y = (x_1, ..., x_m) along the channel (first non-batch) dimension. Forward: the
  intervals concatenated; adjoint: ȳ split into the inputs' channel blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..interval import Interval
from .base import Layer, LayerType, SpecError, register


class Add(nn.Module):
    """y = x_1 + ... + x_m: a residual add as a module (it holds no weights)."""

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    """y = torch.cat(xs, dim=1): a channel concatenation as a module."""

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=1)


class Merge(LayerType):
    """A node reading several values (the graph's `inputs` of its layer spec)."""

    role = "merge"
    merge = True

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return self.modules[0]()

    def run(self, module: nn.Module, *xs: Tensor) -> Tensor:
        return module(*xs)


@register
class AddType(Merge):
    name = "add"
    modules = (Add,)
    calls = ("add", "iadd", "radd")
    joins = "same"

    def out_shape(self, layer: Layer, shape: Sequence[tuple[int, ...]], where: str
                  ) -> tuple[int, ...]:
        if len({tuple(s) for s in shape}) != 1:
            raise SpecError(f"{where}: a skip connection (add) needs inputs of one shape, got "
                            f"{' and '.join(str(tuple(s)) for s in shape)}; give the shortcut a "
                            "1x1 conv (and stride) that makes the shapes equal")
        return tuple(shape[0])

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """out + x, torch.add(out, x), out += x: two tensors, no scaling (alpha)."""
        if (len(args) != 2 or not all(isinstance(a, Tensor) for a in args)
                or kwargs.get("alpha", 1) != 1 or set(kwargs) - {"alpha", "out"}):
            raise TypeError("a skip connection adds two values of the network (out + x); "
                            "adding a constant or a scaled value is not supported")
        return {"type": self.name}

    def forward_many(self, module: nn.Module, xs: Sequence[Interval]) -> Interval:
        """[y] = Σ_i [x_i] (Interval addition: lower bounds summed, upper bounds summed)."""
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def backward_many(self, module: nn.Module, xs: Sequence[Interval],
                      out_adjoint: Interval) -> list[Interval]:
        """x̄_i = ȳ for every input (the derivative of a sum by each summand is the identity)."""
        return [out_adjoint] * len(xs)


@register
class ConcatType(Merge):
    name = "concat"
    modules = (Concat,)
    calls = ("cat", "concat", "concatenate")
    joins = "stack"

    def out_shape(self, layer: Layer, shape: Sequence[tuple[int, ...]], where: str
                  ) -> tuple[int, ...]:
        ranks = {len(s) for s in shape}
        rests = {tuple(s[1:]) for s in shape}
        if len(ranks) != 1 or len(rests) != 1:
            raise SpecError(f"{where}: concat joins channels of inputs whose other dimensions "
                            f"agree, got {' and '.join(str(tuple(s)) for s in shape)}")
        return (sum(s[0] for s in shape), *shape[0][1:])

    def forward_many(self, module: nn.Module, xs: Sequence[Interval]) -> Interval:
        """[y] = ([x_1], ..., [x_m]) along the channel dimension (dim 1 of a batch)."""
        return Interval(torch.cat([x.lower for x in xs], 1), torch.cat([x.upper for x in xs], 1))

    def backward_many(self, module: nn.Module, xs: Sequence[Interval],
                      out_adjoint: Interval) -> list[Interval]:
        """x̄_i = ȳ's channel block of input i (the adjoint is (b, k, C, ...): dim 2)."""
        sizes = [x.shape[1] for x in xs]
        lower = torch.split(out_adjoint.lower, sizes, dim=2)
        upper = torch.split(out_adjoint.upper, sizes, dim=2)
        return [Interval(lo, hi) for lo, hi in zip(lower, upper, strict=True)]

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """torch.cat(xs, dim=1) (or dim=-3 of 4-d maps): a channel concatenation."""
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if dim % result.ndim != 1:
            raise TypeError(f"torch.cat along dim {dim} is not a channel concatenation (dim=1)")
        return {"type": self.name}
