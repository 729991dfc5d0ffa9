"""leaky_relu(slope [0.01]): nn.LeakyReLU, φ(z) = z for z > 0 and slope · z otherwise."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import Interval
from .activations import Activation
from .base import Layer, SpecError, register


@register
class LeakyReLU(Activation):
    """leaky_relu(slope [0.01]): φ(z) = z for z > 0, slope · z otherwise (nn.LeakyReLU with
    negative_slope = slope, 0 <= slope < 1)."""

    name = "leaky_relu"
    modules = (nn.LeakyReLU,)
    fields = {"slope": 0.01}
    calls = ("leaky_relu",)

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise SpecError(f"{where}: leaky_relu slope must be in [0, 1), got {value!r}")
        return float(value)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.LeakyReLU(layer["slope"])

    def read(self, module: nn.Module) -> Layer:
        slope = module.negative_slope
        if not 0 <= slope < 1:
            raise TypeError(f"LeakyReLU with negative_slope={slope} is not supported (a spec's "
                            "slope lies in [0, 1))")
        return {"type": self.name, "slope": float(slope)}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.leaky_relu(x, negative_slope=0.01, inplace=False)."""
        slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return self.read(nn.LeakyReLU(slope))

    def check(self, module: nn.Module) -> None:
        if module.negative_slope < 0:
            raise ValueError(f"LeakyReLU with negative_slope={module.negative_slope} < 0 is not "
                             "monotone; the interval rules need a slope >= 0")

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """φ is non-decreasing for slope >= 0: [φ(lo), φ(hi)] (Interval.monotone), exact, and
        computed by torch's own leaky_relu, so a point box gives torch's values."""
        return z.monotone(lambda t: F.leaky_relu(t, module.negative_slope))

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """Range of φ'(z) = 1 if z > 0 else slope (torch's convention: φ'(0) = slope) over the
        box: {1} if lo > 0, {slope} if hi <= 0, [min(slope, 1), max(slope, 1)] otherwise.

        Like ReLU's rule, decided by comparisons of the bounds with 0 (no arithmetic, so no
        rounding of its own): a degenerate box at the kink, [0, 0], gives {slope}, exactly the
        derivative torch computes there. As for ReLU, the bounds are taken as they are (tight to
        a few ulps, not directed outward, see Interval): only a true value on the other side of 0
        from both of its rounded bounds could get the other side's derivative.
        """
        slope = torch.tensor(module.negative_slope, dtype=z.dtype, device=z.lower.device)
        one = torch.ones((), dtype=z.dtype, device=z.lower.device)
        at_lo = torch.where(z.lower > 0, one, slope)
        at_hi = torch.where(z.upper > 0, one, slope)
        return Interval(torch.minimum(at_lo, at_hi), torch.maximum(at_lo, at_hi))
