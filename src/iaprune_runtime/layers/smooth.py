"""gelu and silu: nn.GELU / F.gelu (approximate 'none' or 'tanh') and nn.SiLU / F.silu, smooth
activations that are not monotone. Each has one interior minimum of φ and two interior extrema
of φ', so the ranges over a box [lo, hi] are the endpoint values plus the extrema inside it.

GELU, φ(z) = z Φ(z) (Φ, ϕ the standard normal cdf and pdf):
    φ'(z)  = Φ(z) + z ϕ(z),   φ''(z) = ϕ(z) (2 - z²);
    φ has its minimum where φ'(z) = 0, at z ≈ -0.75179 (φ ≈ -0.16997), decreasing before it and
    increasing after it; φ' has its minimum at z = -√2 (≈ -0.12892) and its maximum at z = √2
    (≈ 1.12892), decreasing on (-∞, -√2], increasing on [-√2, √2], decreasing on [√2, ∞).
GELU with approximate='tanh', φ(z) = z (1 + tanh u) / 2, u = c (z + a z³), c = √(2/π),
a = 0.044715: the same shape, with its points at z ≈ -0.75246 (minimum of φ), -1.41850 and
1.41850 (extrema of φ'), found by bisection (GELU_TANH_POINTS).
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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import Interval
from .activations import Activation, widened
from .base import Layer, SpecError, register


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


def bisect(f: Callable[[float], float], a: float, b: float) -> float:
    """The root of f in [a, b] (f(a), f(b) of opposite signs) by bisection, to the last ulp."""
    fa = f(a)
    while True:
        m = (a + b) / 2
        if m in (a, b):
            return m
        if (f(m) > 0) == (fa > 0):
            a, fa = m, f(m)
        else:
            b = m


_C, _A = math.sqrt(2 / math.pi), 0.044715  # the tanh approximation's constants


def _tanh_gelu_d1(z: float) -> float:
    """φ'(z) of the tanh GELU: (1 + t) / 2 + z (1 - t²) u' / 2, t = tanh u, u' = c (1 + 3a z²)."""
    t = math.tanh(_C * (z + _A * z ** 3))
    return (1 + t) / 2 + z * (1 - t * t) * _C * (1 + 3 * _A * z * z) / 2


def _tanh_gelu_d2(z: float) -> float:
    """φ''(z) / (1 - t²) of the tanh GELU: u' - z t u'² + z u'' / 2, u'' = 6 a c z (the factor
    1 - t² > 0 leaves its sign and roots alone)."""
    t = math.tanh(_C * (z + _A * z ** 3))
    du = _C * (1 + 3 * _A * z * z)
    return du - z * t * du * du + 3 * _A * _C * z * z


# The tanh GELU has the exact GELU's shape (checked in the tests on a grid over [-8, 8]; beyond
# |z| > 6, φ''/(1 - t²) is dominated by -z t u'² < 0, so no further critical points): its points
# are found by bisection on brackets around the exact GELU's.
GELU_TANH_POINTS = (bisect(_tanh_gelu_d1, -1.0, -0.5), bisect(_tanh_gelu_d2, -2.0, -1.0),
                    bisect(_tanh_gelu_d2, 1.0, 2.0))
APPROXIMATIONS = {"none": GELU_POINTS, "tanh": GELU_TANH_POINTS}
SILU_POINTS = (newton(lambda z: 1 + z * (1 - _sigmoid(z)),
                      lambda z: (1 - _sigmoid(z)) * (1 - z * _sigmoid(z)), -1.3),
               -_SILU_D2, _SILU_D2)


class Smooth(Activation):
    """A smooth activation with a minimum of φ at points[0] (decreasing before, increasing after)
    and of φ' at points[1], a maximum of φ' at points[2] (φ' decreasing, increasing, decreasing
    on the three pieces)."""

    nondecreasing = False  # GELU and SiLU dip below 0: their derivative changes sign

    points: ClassVar[tuple[float, float, float]]

    def critical(self, module: nn.Module) -> tuple[float, float, float]:
        """The three critical points of `module`'s function (its settings may move them)."""
        return self.points

    def function(self, module: nn.Module, t: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, module: nn.Module, t: Tensor) -> Tensor:
        """φ'(t) as torch's backward computes it."""
        raise NotImplementedError

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """[min, max] of φ over the box: the max is at an endpoint (φ decreases then increases),
        the min is φ(z*) when the minimiser z* is in the box, else at an endpoint (a point box at
        z* is its endpoint: torch's value there, which a 0-d evaluation may round otherwise)."""
        at_lo, at_hi = self.function(module, z.lower), self.function(module, z.upper)
        critical = self.critical(module)[0]
        bottom = self.function(module, torch.tensor(critical, dtype=z.dtype,
                                                    device=z.lower.device))
        inside = (z.lower <= critical) & (critical <= z.upper) & (z.lower < z.upper)
        lower = torch.where(inside, torch.minimum(bottom, torch.minimum(at_lo, at_hi)),
                            torch.minimum(at_lo, at_hi))
        return widened(z, lower, torch.maximum(at_lo, at_hi))

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """[min, max] of φ' over the box: the endpoints' values, with φ'(points[1]) and
        φ'(points[2]) where those extrema lie in the box (φ' is monotone between them)."""
        at_lo, at_hi = self.grad(module, z.lower), self.grad(module, z.upper)
        lower, upper = torch.minimum(at_lo, at_hi), torch.maximum(at_lo, at_hi)
        for critical in self.critical(module)[1:]:
            at = self.grad(module, torch.tensor(critical, dtype=z.dtype, device=z.lower.device))
            inside = (z.lower <= critical) & (critical <= z.upper) & (z.lower < z.upper)
            lower = torch.where(inside, torch.minimum(lower, at), lower)
            upper = torch.where(inside, torch.maximum(upper, at), upper)
        return widened(z, lower, upper)


@register
class GELU(Smooth):
    """gelu(approximate ['none']): φ(z) = z Φ(z) (nn.GELU()), or with approximate='tanh'
    φ(z) = z (1 + tanh(c (z + a z³))) / 2, c = √(2/π), a = 0.044715 (nn.GELU('tanh'))."""

    name = "gelu"
    modules = (nn.GELU,)
    fields = {"approximate": "none"}
    optional = ("approximate",)  # left out at 'none': a spec reads {"type": "gelu"}
    calls = ("gelu",)
    points = GELU_POINTS

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if value not in APPROXIMATIONS:
            raise SpecError(f"{where}: gelu approximate must be one of {list(APPROXIMATIONS)}, "
                            f"got {value!r}")
        return value

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.GELU(layer.get("approximate", "none"))

    def read(self, module: nn.Module) -> Layer:
        if module.approximate not in APPROXIMATIONS:
            raise TypeError(f"GELU with approximate={module.approximate!r} is not supported "
                            f"(choose from {list(APPROXIMATIONS)})")
        if module.approximate == "none":
            return {"type": self.name}
        return {"type": self.name, "approximate": module.approximate}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.gelu(x, approximate='none' or 'tanh')."""
        return self.read(nn.GELU(kwargs.get("approximate", "none")))

    def check(self, module: nn.Module) -> None:
        if module.approximate not in APPROXIMATIONS:
            raise ValueError(f"GELU with approximate={module.approximate!r} has no interval rules")

    def critical(self, module: nn.Module) -> tuple[float, float, float]:
        return APPROXIMATIONS[module.approximate]

    def function(self, module: nn.Module, t: Tensor) -> Tensor:
        return F.gelu(t, approximate=module.approximate)

    def grad(self, module: nn.Module, t: Tensor) -> Tensor:
        return torch.ops.aten.gelu_backward(torch.ones_like(t), t, approximate=module.approximate)


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
