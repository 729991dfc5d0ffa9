"""select(indices): the input features a network reads after input pruning, x[:, indices] of
its flattened input (a Select module holding the indices as a buffer)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..interval import Interval
from .base import REQUIRED, Layer, LayerType, SpecError, check_int, register


class Select(nn.Module):
    """The input features a pruned network reads: x[:, indices] of its flattened input."""

    def __init__(self, indices: Sequence[int], n_in: int):
        super().__init__()
        self.n_in = n_in
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.indices)


@register
class SelectType(LayerType):
    name = "select"
    modules = (Select,)
    role = "inputs"
    fields = {"indices": REQUIRED}
    reads_flat = True
    input_ranks = (1,)

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise SpecError(f"{where}: select needs a non-empty list of indices")
        value = [check_int(i, f"{where}: select index", 0) for i in value]
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise SpecError(f"{where}: select indices must be strictly increasing")
        return value

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 1 or layer["indices"][-1] >= shape[0]:
            raise SpecError(f"{where}: select indices must lie in [0, {math.prod(shape)}) of a "
                            "flat input")
        return (len(layer["indices"]),)

    def describe(self, layer: Layer) -> str:
        return f"{self.name} {len(layer['indices'])} inputs"

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return Select(layer["indices"], shape[0])

    def params(self, layer: Layer, shape: tuple[int, ...]) -> int:
        """The index buffer."""
        return len(layer["indices"])

    def read(self, module: nn.Module) -> Layer:
        return {"type": self.name, "indices": module.indices.tolist()}

    def features(self, module: nn.Module) -> int:
        return module.n_in

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """y_j = x_{indices[j]}: the kept features of a flat input (batch, n_in) -> (batch, k);
        exact, both bounds picked alike."""
        return x[:, module.indices]

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄_i = ȳ_j where i = indices[j], and exactly 0 for every feature the network does not
        read (∂y/∂x_i = 0): the selection's transpose scatters (b, k_out, k) into zeros (b, k_out,
        n_in)."""
        index = module.indices.to(out_adjoint.lower.device)

        def scatter(t: Tensor) -> Tensor:
            full = t.new_zeros(*t.shape[:-1], x.shape[-1])
            return full.index_copy(-1, index, t)

        return Interval(scatter(out_adjoint.lower), scatter(out_adjoint.upper))
