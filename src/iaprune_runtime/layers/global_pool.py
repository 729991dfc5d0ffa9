"""Global average pooling: adaptive_avgpool2d (nn.AdaptiveAvgPool2d(1), F.adaptive_avg_pool2d(x, 1):
(C, H, W) -> (C, 1, 1)) and global_avgpool (x.mean((2, 3)), torch.mean(x, (-2, -1)): (C, H, W)
-> (C,)). Both keep the channels: a Linear after global_avgpool (or after adaptive_avgpool2d and
a flatten) reads one feature per channel, so a conv channel's group is that one column.

The mean over a channel's H·W positions is linear with weights 1/(H·W) >= 0: its interval is
[mean lo, mean hi] (exact: each end is attained at a corner), and its adjoint spreads ȳ_c / (H·W)
over every position of channel c.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import Interval
from .base import Layer, LayerType, SpecError, register


class GlobalAvgPool(nn.Module):
    """x.mean((-2, -1)): (batch, C, H, W) -> (batch, C), the average of each channel's map."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((-2, -1))


def _channels(shape: tuple[int, ...], where: str, name: str) -> int:
    if len(shape) != 3:
        raise SpecError(f"{where}: {name} needs (C, H, W) input, got {shape}")
    return shape[0]


class GlobalMean(LayerType):
    """The mean over the last two dimensions (H, W) of (C, H, W)."""

    role = "pool"
    input_ranks = (3,)

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[mean lo, mean hi] per channel (Interval.monotone), computed by the module itself, so a
        point box gives torch's values."""
        return x.monotone(module)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄_{c,h,w} = ȳ_c / (H·W): the transposed mean (a point map with weights >= 0)."""
        h, w = x.shape[-2:]
        b, k, c = out_adjoint.shape[:3]
        spread = out_adjoint.reshape(b, k, c, 1, 1).expand(b, k, c, h, w)
        return spread * (1.0 / (h * w))


@register
class AdaptiveAvgPool2d(GlobalMean):
    """adaptive_avgpool2d: nn.AdaptiveAvgPool2d(1) (output size 1 only), (C, H, W) -> (C, 1, 1)."""

    name = "adaptive_avgpool2d"
    modules = (nn.AdaptiveAvgPool2d,)
    calls = ("adaptive_avg_pool2d",)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return (_channels(shape, where, self.name), 1, 1)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.AdaptiveAvgPool2d(1)

    def read(self, module: nn.Module) -> Layer:
        size = module.output_size
        if size not in (1, (1, 1), [1, 1]):
            raise TypeError(f"AdaptiveAvgPool2d with output_size={size!r} is not supported (only "
                            "output_size=1, global average pooling)")
        return {"type": self.name}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.adaptive_avg_pool2d(x, output_size)."""
        return self.read(nn.AdaptiveAvgPool2d(kwargs.get("output_size", args[1])))

    def check(self, module: nn.Module) -> None:
        if module.output_size not in (1, (1, 1), [1, 1]):
            raise ValueError(f"AdaptiveAvgPool2d with output_size={module.output_size!r} has no "
                             "interval rules (only output_size=1)")

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[mean lo, mean hi] per channel, as torch's adaptive_avg_pool2d computes it."""
        return x.monotone(lambda t: F.adaptive_avg_pool2d(t, 1))


@register
class GlobalAvgPoolType(GlobalMean):
    """global_avgpool: x.mean((2, 3)) of (C, H, W) maps, (C, H, W) -> (C,)."""

    name = "global_avgpool"
    modules = (GlobalAvgPool,)
    calls = ("mean",)
    keeps_rank = False

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return (_channels(shape, where, self.name),)

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """x.mean((2, 3)), x.mean(dim=(-2, -1)), torch.mean(x, (2, 3)) on (batch, C, H, W); with
        keepdim=True it is adaptive_avgpool2d. Other means are refused."""
        x = args[0]
        dim: Any = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        dims = (dim,) if isinstance(dim, int) else tuple(dim) if dim is not None else ()
        if x.ndim != 4 or sorted(d % 4 for d in dims) != [2, 3] or kwargs.get("dtype"):
            raise TypeError(f"a mean over dims {dim!r} of a {x.ndim}-d tensor is not a global "
                            "average pooling (x.mean((2, 3)) of (batch, C, H, W))")
        return {"type": "adaptive_avgpool2d" if keepdim else self.name}
