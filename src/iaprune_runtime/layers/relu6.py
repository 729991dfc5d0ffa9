"""relu6: nn.ReLU6, F.relu6 and F.hardtanh(x, 0, 6): φ(z) = min(max(z, 0), 6)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..interval import TIE_ULPS, Interval
from .activations import Activation
from .base import Layer, register


@register
class ReLU6(Activation):
    """relu6: φ(z) = min(max(z, 0), 6), torch's φ'(z) = 1 for 0 < z < 6, else 0."""

    name = "relu6"
    modules = (nn.ReLU6,)
    calls = ("relu6", "hardtanh")
    sparse = True  # outputs exact zeros below 0, as ReLU does

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.relu6(x) and F.hardtanh(x, 0, 6); a hardtanh with another range (its result is not
        the clamp of x to [0, 6]) is refused."""
        if not torch.equal(result, args[0].clamp(0, 6)):
            raise TypeError("hardtanh with a range other than min_val=0, max_val=6 is not "
                            "supported (hardtanh(x, 0, 6) is relu6)")
        return {"type": self.name}

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """φ is non-decreasing: [φ(lo), φ(hi)], exact (a clamp rounds nothing)."""
        return z.monotone(lambda t: t.clamp(0, 6))

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """Range of φ' over the box: {1} if δ < lo and hi < 6, {0} if hi <= 0 or lo >= 6, else
        [0, 1]; δ = 2¹⁰ ε · max(|lo|, |hi|) is ReLU's margin at 0 (Interval.relu_derivative: a
        bound at a tie with 0 may come out an ulp above it). 6 is no such common tie value, so
        the upper end is compared as it is. A point box gives torch's derivative exactly (0 at
        z = 0 and z = 6, where torch's hardtanh_backward gives 0)."""
        margin = TIE_ULPS * torch.finfo(z.dtype).eps * z.magnitude
        certain = (z.lower > margin) & (z.upper < 6)
        possible = (z.upper > 0) & (z.lower < 6)
        return Interval(certain.to(z.dtype), possible.to(z.dtype))
