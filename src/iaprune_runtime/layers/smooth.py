"""gelu and silu: nn.GELU / F.gelu (approximate='none') and nn.SiLU / F.silu, smooth activations
that are not monotone. Each has one interior minimum of φ and two interior extrema of φ', so the
ranges over a box [lo, hi] are the endpoint values plus the extrema that lie inside the box.

GELU, φ(z) = z Φ(z) (Φ, ϕ the standard normal cdf and pdf):
    φ'(z)  = Φ(z) + z ϕ(z),   φ''(z) = ϕ(z) (2 - z²);
    φ has its minimum where φ'(z) = 0, at z ≈ -0.75179 (φ ≈ -0.16997), decreasing before it and
    increasing after it; φ' has its minimum at z = -√2 (≈ -0.12892) and its maximum at z = √2
    (≈ 1.12892), decreasing on (-∞, -√2], increasing on [-√2, √2], decreasing on [√2, ∞).
SiLU, φ(z) = z σ(z):
    φ'(z)  = σ(z) (1 + z (1 - σ(z))),   φ''(z) = σ(z) (1 - σ(z)) (2 - z tanh(z / 2));
    φ has its minimum at z ≈ -1.27846 (1 + z (1 - σ(z)) = 0, φ ≈ -0.27846); φ' has its
    minimum at z ≈ -2.39936 and its maximum at z ≈ 2.39936 (z tanh(z / 2) = 2), with the same
    pattern of monotone pieces as GELU's.
The critical points are computed once in float64 by Newton's method. Where such a point lies in
the box, its value joins the endpoints' (a value a few ulps off a critical point differs from the
extremum by far less than an ulp, the function being flat there). Ranges over boxes of width > 0
are widened for rounding (activations.ROUNDING_ULPS); values and derivatives at the endpoints are
torch's own (gelu/silu and their backward kernels), so a point box reproduces torch's value and
autograd's derivative exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import Interval
from .activations import Activation, widened
from .base import Layer, register


def newton(f: Callable[[float], float], df: Callable[[float], float], x: float) -> float:
    """A root of f near x by Newton's method in float64, to the last ulp or so."""
    for _ in range(100):
        step = f(x) / df(x)
        x -= step
        if abs(step) <= 4 * math.ulp(x):
            return x
    raise ArithmeticError("Newton's method did not converge")  # a bug: the starts are close


def _pdf(z: float) -> float:
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# (the minimiser of φ, the minimiser of φ', the maximiser of φ')
GELU_POINTS = (newton(lambda z: _cdf(z) + z * _pdf(z), lambda z: _pdf(z) * (2 - z * z), -0.75),
               -math.sqrt(2), math.sqrt(2))
_SILU_D2 = newton(lambda z: 2 - z * math.tanh(z / 2),
                  lambda z: -math.tanh(z / 2) - z / (2 * math.cosh(z / 2) ** 2), 2.4)
SILU_POINTS = (newton(lambda z: 1 + z * (1 - _sigmoid(z)),
                      lambda z: (1 - _sigmoid(z)) * (1 - z * _sigmoid(z)), -1.3),
               -_SILU_D2, _SILU_D2)


class Smooth(Activation):
    """A smooth activation with a minimum of φ at points[0] (decreasing before, increasing after)
    and of φ' at points[1], a maximum of φ' at points[2] (φ' decreasing, increasing, decreasing
    on the three pieces)."""

    nondecreasing = False  # GELU and SiLU dip below 0: their derivative changes sign

    points: ClassVar[tuple[float, float, float]]

    def function(self, module: nn.Module, t: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, module: nn.Module, t: Tensor) -> Tensor:
        """φ'(t) as torch's backward computes it."""
        raise NotImplementedError

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """[min, max] of φ over the box: the max is at an endpoint (φ decreases then increases),
        the min is φ(z*) when the minimiser z* is in the box, else at an endpoint."""
        at_lo, at_hi = self.function(module, z.lower), self.function(module, z.upper)
        critical = self.points[0]
        bottom = self.function(module, torch.tensor(critical, dtype=z.dtype,
                                                    device=z.lower.device))
        inside = (z.lower <= critical) & (critical <= z.upper)
        lower = torch.where(inside, torch.minimum(bottom, torch.minimum(at_lo, at_hi)),
                            torch.minimum(at_lo, at_hi))
        return widened(z, lower, torch.maximum(at_lo, at_hi))

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """[min, max] of φ' over the box: the endpoints' values, with φ'(points[1]) and
        φ'(points[2]) where those extrema lie in the box (φ' is monotone between them)."""
        at_lo, at_hi = self.grad(module, z.lower), self.grad(module, z.upper)
        lower, upper = torch.minimum(at_lo, at_hi), torch.maximum(at_lo, at_hi)
        for critical in self.points[1:]:
            at = self.grad(module, torch.tensor(critical, dtype=z.dtype, device=z.lower.device))
            inside = (z.lower <= critical) & (critical <= z.upper)
            lower = torch.where(inside, torch.minimum(lower, at), lower)
            upper = torch.where(inside, torch.maximum(upper, at), upper)
        return widened(z, lower, upper)


@register
class GELU(Smooth):
    """gelu: φ(z) = z Φ(z) (nn.GELU(), approximate='none'; the tanh approximation is refused)."""

    name = "gelu"
    modules = (nn.GELU,)
    calls = ("gelu",)
    points = GELU_POINTS

    def read(self, module: nn.Module) -> Layer:
        if module.approximate != "none":
            raise TypeError(f"GELU with approximate={module.approximate!r} is not supported (its "
                            "interval rules are not derived): use nn.GELU() (approximate='none')")
        return {"type": self.name}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.gelu(x, approximate='none')."""
        return self.read(nn.GELU(kwargs.get("approximate", "none")))

    def check(self, module: nn.Module) -> None:
        if module.approximate != "none":
            raise ValueError(f"GELU with approximate={module.approximate!r} has no interval rules")

    def function(self, module: nn.Module, t: Tensor) -> Tensor:
        return F.gelu(t)

    def grad(self, module: nn.Module, t: Tensor) -> Tensor:
        return torch.ops.aten.gelu_backward(torch.ones_like(t), t)


@register
class SiLU(Smooth):
    """silu: φ(z) = z σ(z) (nn.SiLU, F.silu; also called swish)."""

    name = "silu"
    modules = (nn.SiLU,)
    calls = ("silu",)
    points = SILU_POINTS

    def function(self, module: nn.Module, t: Tensor) -> Tensor:
        return F.silu(t)

    def grad(self, module: nn.Module, t: Tensor) -> Tensor:
        return torch.ops.aten.silu_backward(torch.ones_like(t), t)
