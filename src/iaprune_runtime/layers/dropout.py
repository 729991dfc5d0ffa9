"""dropout(p [0.5]) and dropout2d(p [0.5]): nn.Dropout and nn.Dropout2d, the identity in eval mode
(how the sweep and inference see them)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..interval import Interval
from .base import Layer, LayerType, SpecError, register


@register
class Dropout(LayerType):
    name = "dropout"
    modules = (nn.Dropout,)
    role = "elementwise"
    fields = {"p": 0.5}
    calls = ("dropout",)

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise SpecError(f"{where}: {self.name} p must be in [0, 1), got {value!r}")
        return float(value)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.Dropout(layer["p"])

    def read(self, module: nn.Module) -> Layer:
        return {"type": self.name, "p": float(module.p)}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.dropout(x, p=0.5, ...)."""
        return {"type": self.name, "p": float(kwargs.get("p", args[1] if len(args) > 1 else 0.5))}

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """Dropout in eval mode: y = x."""
        return x

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄ = ȳ."""
        return out_adjoint


@register
class Dropout2d(Dropout):
    """dropout2d(p [0.5]): nn.Dropout2d, F.dropout2d, whole channels of (C, H, W) maps dropped in
    training; the identity in eval mode, like dropout."""

    name = "dropout2d"
    modules = (nn.Dropout2d,)
    calls = ("dropout2d",)
    input_ranks = (3,)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 3:
            raise SpecError(f"{where}: dropout2d needs (C, H, W) input, got {shape}")
        return shape

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.Dropout2d(layer["p"])

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.dropout2d(x, p=0.5, ...)."""
        return {"type": self.name, "p": float(kwargs.get("p", args[1] if len(args) > 1 else 0.5))}
