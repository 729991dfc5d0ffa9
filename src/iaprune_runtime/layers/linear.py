"""linear(out, bias [true]): nn.Linear, z = a Wᵀ + b."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..interval import Interval
from .base import REQUIRED, Layer, SpecError, check_bool, register
from .producer import Producer


def cast(tensor: Any, dtype: Any) -> Any:
    """A parameter in the sweep's dtype (None stays None)."""
    return None if tensor is None else tensor.to(dtype)


@register
class Linear(Producer):
    name = "linear"
    modules = (nn.Linear,)
    fields = {"out": REQUIRED, "bias": True}
    in_attr, out_attr = "in_features", "out_features"
    reads_flat = True  # a network whose first shape-changing layer is a Linear reads flat rows
    logits = True
    input_ranks = (1,)

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if field == "bias":
            return check_bool(value, f"{where}: bias")
        return super().check_field(field, value, where, layer)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 1:
            raise SpecError(f"{where}: linear gets input of shape {shape}; add a flatten before it")
        return (layer["out"],)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.Linear(shape[0], layer["out"], bias=layer["bias"])

    def params(self, layer: Layer, shape: tuple[int, ...]) -> int:
        """in · out weights + out biases."""
        return (shape[0] + layer["bias"]) * layer["out"]

    def read(self, module: nn.Module) -> Layer:
        return {"type": self.name, "out": module.out_features, "bias": module.bias is not None}

    def macs(self, module: nn.Module, out_shape: tuple[int, ...]) -> int:
        """in · out."""
        return module.in_features * module.out_features

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """z = a Wᵀ + b in centre/radius form (Interval.linear)."""
        return x.linear(module.weight.to(x.dtype), cast(module.bias, x.dtype))

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """ā = z̄ W (row vectors), a point-matrix product in centre/radius form."""
        return out_adjoint @ module.weight.to(x.dtype)
