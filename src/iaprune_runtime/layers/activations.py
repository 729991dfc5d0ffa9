"""relu, sigmoid, tanh: pointwise activations, a = φ(z) forward and z̄ = ā ⊗ φ'([z]) backward,
with φ and the range of φ' over an interval from Interval (relu, relu_derivative, ...)."""

from __future__ import annotations

from torch import nn

from ..interval import Interval
from .base import LayerType, register


class Activation(LayerType):
    """A pointwise nonlinearity without fields."""

    role = "elementwise"
    activation = True

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
        seed dimension."""
        return out_adjoint * self.derivative(module, x[:, None])


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
