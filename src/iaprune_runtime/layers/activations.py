"""relu, sigmoid, tanh: pointwise activations, a = φ(z) forward and z̄ = ā ⊗ φ'([z]) backward,
with φ and the range of φ' over an interval from Interval (relu, relu_derivative, ...)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..interval import Interval
from .base import LayerType, register

# Smooth activations (elu, gelu, silu) are evaluated by torch's kernels: a few roundings of
# erf/exp/tanh, each within an ulp or two, and up to four arithmetic operations, so a computed
# value (or derivative) is within ~8 ulps of (1 + |z|) of the exact one, and the computed function
# need not be monotone where the exact one is. Their ranges over a box of width > 0 are widened
# outward by ROUNDING_ULPS such ulps (4x that), so that torch's value at every point of the box
# lies inside; a point box is not widened and keeps torch's value exactly.
ROUNDING_ULPS = 2**5


def widened(z: Interval, lower: Tensor, upper: Tensor) -> Interval:
    """[lower - δ, upper + δ] with δ = ROUNDING_ULPS · ε · (1 + max(|lo z|, |hi z|)) where the
    box z has width > 0, [lower, upper] where it is a point (see ROUNDING_ULPS)."""
    margin = ROUNDING_ULPS * torch.finfo(z.dtype).eps * (1 + z.magnitude)
    margin = torch.where(z.lower == z.upper, 0.0, margin)
    return Interval(lower - margin, upper + margin)


class Activation(LayerType):
    """A pointwise nonlinearity without fields."""

    role = "elementwise"
    activation = True
    nondecreasing: ClassVar[bool] = True  # φ' >= 0 everywhere (a cheaper adjoint product)

    def value(self, module: nn.Module, z: Interval) -> Interval:
        """[φ(z)] over the interval z."""
        raise NotImplementedError

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        """The range of φ' over the interval z."""
        raise NotImplementedError

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """a = φ(z) on the interval (`value`)."""
        return self.value(module, x)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """z̄ = ā ⊗ φ'([z]): the interval product with the derivative range, broadcast over the
        seed dimension (for a non-decreasing φ, whose φ' >= 0, by Interval.times_nonnegative)."""
        derivative = self.derivative(module, x[:, None])
        if self.nondecreasing:
            return out_adjoint.times_nonnegative(derivative)
        return out_adjoint * derivative


@register
class ReLU(Activation):
    name = "relu"
    modules = (nn.ReLU,)
    calls = ("relu",)
    sparse = True

    def value(self, module: nn.Module, z: Interval) -> Interval:
        return z.relu()

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        return z.relu_derivative()


@register
class Sigmoid(Activation):
    name = "sigmoid"
    modules = (nn.Sigmoid,)
    calls = ("sigmoid",)

    def value(self, module: nn.Module, z: Interval) -> Interval:
        return z.sigmoid()

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        return z.sigmoid_derivative()


@register
class Tanh(Activation):
    name = "tanh"
    modules = (nn.Tanh,)
    calls = ("tanh",)

    def value(self, module: nn.Module, z: Interval) -> Interval:
        return z.tanh()

    def derivative(self, module: nn.Module, z: Interval) -> Interval:
        return z.tanh_derivative()
