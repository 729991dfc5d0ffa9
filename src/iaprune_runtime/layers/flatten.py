"""flatten: nn.Flatten (dims 1..-1), a reshape of (C, H, W) to (C·H·W,): a channel's units are
the consumer Linear's column block [c·H·W, (c+1)·H·W)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..interval import Interval
from .base import Layer, LayerType, register


@register
class Flatten(LayerType):
    name = "flatten"
    modules = (nn.Flatten,)
    role = "reshape"
    calls = ("view", "reshape", "flatten")
    keeps_rank = False

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return (math.prod(shape),)

    def read(self, module: nn.Module) -> Layer:
        if module.start_dim != 1 or module.end_dim != -1:
            raise TypeError("nn.Flatten must flatten dims 1..-1 (the default)")
        return {"type": self.name}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """x.view(len(x), -1), x.reshape(...), torch.flatten(x, 1): a flatten to (batch, n)."""
        if result.ndim == 2 and len(result) == len(args[0]):
            return {"type": self.name}
        raise TypeError(f"a reshape to shape {tuple(result.shape)} is not a flatten to (batch, "
                        "features)")

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """A reshape: [x] flattened from start_dim to end_dim (of the batched value)."""
        start = module.start_dim % x.lower.ndim
        if start == 0:
            raise ValueError(f"Flatten(start_dim={module.start_dim}) would merge the batch "
                             f"dimension of a {x.lower.ndim}-d value (batch, ...) into the "
                             "features")
        return x.monotone(lambda t: t.flatten(module.start_dim, module.end_dim))

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """The adjoint of a reshape is the inverse reshape."""
        return out_adjoint.reshape(*out_adjoint.shape[:2], *x.shape[1:])
