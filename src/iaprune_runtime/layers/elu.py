"""elu(alpha [1.0]): nn.ELU, F.elu: φ(z) = z for z > 0 and α (exp(z) - 1) otherwise (α > 0)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import Interval
from .activations import Activation, widened
from .base import Layer, SpecError, register


@register
class ELU(Activation):
    """elu(alpha [1.0]): φ(z) = z for z > 0, α (eᶻ - 1) for z <= 0, with α > 0."""

    name = "elu"
    modules = (nn.ELU,)
    fields = {"alpha": 1.0}
    calls = ("elu",)

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise SpecError(f"{where}: elu alpha must be a number > 0, got {value!r}")
        return float(value)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.ELU(layer["alpha"])

    def read(self, module: nn.Module) -> Layer:
        if not module.alpha > 0:
            raise TypeError(f"ELU with alpha={module.alpha} is not supported (alpha must be > 0: "
                            "then ELU is increasing)")
        return {"type": self.name, "alpha": float(module.alpha)}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.elu(x, alpha=1.0, inplace=False)."""
        return self.read(nn.ELU(kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)))

    def check(self, module: nn.Module) -> None:
        if not module.alpha > 0:
            raise ValueError(f"ELU with alpha={module.alpha} is not monotone; the interval rules "
                             "need alpha > 0")

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """φ is increasing for α > 0: [φ(lo), φ(hi)] by torch's elu, widened for rounding
        (activations.ROUNDING_ULPS; a point box keeps torch's value)."""
        return widened(z, F.elu(z.lower, module.alpha), F.elu(z.upper, module.alpha))

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """Range of φ'(z) = 1 for z > 0, α eᶻ for z <= 0 (torch's convention: φ'(0) = α).

        φ' increases on (-∞, 0] (from 0 to α) and is 1 on (0, ∞), so over a box on one side of 0
        the range is [φ'(lo), φ'(hi)]. A box with lo <= 0 < hi holds [lo, 0] and some z > 0: the
        range is [α e^lo, α] ∪ {1}, enclosed by [min(α e^lo, 1), max(α, 1)] (for α <= 1 that is
        [α e^lo, 1]; for α > 1, φ' drops from α to 1 at 0, and the hull is [min(α e^lo, 1), α]).
        Endpoints are torch's elu_backward, widened for rounding; a point box gives autograd's
        derivative exactly.
        """
        def grad(t: Tensor) -> Tensor:
            ones = torch.ones_like(t)
            return torch.ops.aten.elu_backward(ones, module.alpha, 1.0, 1.0, False, t)

        at_lo, at_hi = grad(z.lower), grad(z.upper)
        straddles = (z.lower <= 0) & (z.upper > 0)
        one = torch.ones((), dtype=z.dtype, device=z.lower.device)
        lower = torch.where(straddles, torch.minimum(at_lo, one), torch.minimum(at_lo, at_hi))
        upper = torch.where(straddles, max(module.alpha, 1.0), torch.maximum(at_lo, at_hi))
        return widened(z, lower, upper)
