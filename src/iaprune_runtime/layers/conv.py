"""conv2d(out, kernel, stride [1], padding [0], bias [true]): nn.Conv2d with square windows."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..interval import Interval
from .base import REQUIRED, Layer, check_bool, check_int, pair, register, square, window_shape
from .linear import cast
from .producer import Producer


def fold_seeds(adjoint: Interval) -> tuple[Interval, tuple[int, int]]:
    """(b, k, C, H, W) -> (b·k, C, H, W): image ops see the seeds as more batch."""
    b, k = adjoint.shape[:2]
    return adjoint.reshape(b * k, *adjoint.shape[2:]), (b, k)


def unfold_seeds(adjoint: Interval, bk: tuple[int, int]) -> Interval:
    return adjoint.reshape(*bk, *adjoint.shape[1:])


def _padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding; "same" puts the odd pixel last, as torch does."""
    if module.padding == "valid":
        return 0, 0, 0, 0
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        return total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2
    ph, pw = pair(module.padding)
    return ph, ph, pw, pw


@register
class Conv2d(Producer):
    name = "conv2d"
    modules = (nn.Conv2d,)
    fields = {"out": REQUIRED, "kernel": REQUIRED, "stride": 1, "padding": 0, "bias": True}
    in_attr, out_attr = "in_channels", "out_channels"
    spatial = True
    input_ranks = (3,)
    fixed = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if field == "bias":
            return check_bool(value, f"{where}: bias")
        return check_int(value, f"{where}: {self.name} {field}", 0 if field == "padding" else 1)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return window_shape(layer, shape, where, layer["out"])

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.Conv2d(shape[0], layer["out"], layer["kernel"], layer["stride"],
                         layer["padding"], bias=layer["bias"])

    def params(self, layer: Layer, shape: tuple[int, ...]) -> int:
        """out · in · k · k weights + out biases."""
        return (shape[0] * layer["kernel"] ** 2 + layer["bias"]) * layer["out"]

    def read(self, module: nn.Module) -> Layer:
        if (square(module.dilation, "dilation", module) != 1 or module.groups != 1
                or module.padding_mode != "zeros" or isinstance(module.padding, str)):
            raise TypeError(f"{type(module).__name__} with dilation, groups, string padding or "
                            f"padding_mode {module.padding_mode!r} is not supported")
        return {"type": self.name, "out": module.out_channels,
                "kernel": square(module.kernel_size, "kernel", module),
                "stride": square(module.stride, "stride", module),
                "padding": square(module.padding, "padding", module),
                "bias": module.bias is not None}

    def macs(self, module: nn.Module, out_shape: tuple[int, ...]) -> int:
        """out positions · out channels · in channels · kh · kw."""
        return math.prod(out_shape) * module.weight[0].numel()

    def check(self, module: nn.Module) -> None:
        if module.padding_mode != "zeros":
            raise ValueError(f"Conv2d with padding_mode={module.padding_mode!r} is not supported "
                             f"(only 'zeros')")

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """c' = conv(c, W) + b, r' = conv(r, |W|) (Interval.conv2d)."""
        return x.conv2d(module.weight.to(x.dtype), cast(module.bias, x.dtype), module.stride,
                        module.padding, module.dilation, module.groups)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄ = convᵀ(ȳ, W): the transposed convolution, in centre/radius form
        (Interval.conv_transpose2d), with the seed dimension folded into the batch.

        The forward conv reads the zero-padded input (Hp = H + top + bottom rows) and its stride
        may skip the last rows; output_padding restores those rows (their adjoint is 0), and the
        padding is cut off again (by convᵀ's own padding when symmetric, by slicing otherwise),
        so x̄ has exactly x's shape."""
        adjoint, bk = fold_seeds(out_adjoint)
        top, bottom, left, right = _padding(module)
        (h, w), (h_out, w_out) = x.shape[-2:], adjoint.shape[-2:]
        (sh, sw), (dh, dw), (kh, kw) = module.stride, module.dilation, module.kernel_size
        extra = (h + top + bottom - ((h_out - 1) * sh + dh * (kh - 1) + 1),
                 w + left + right - ((w_out - 1) * sw + dw * (kw - 1) + 1))
        weight = module.weight.to(x.dtype)
        if top == bottom and left == right:
            result = adjoint.conv_transpose2d(weight, module.stride, (top, left), extra,
                                              module.dilation, module.groups)
        else:
            full = adjoint.conv_transpose2d(weight, module.stride, 0, extra, module.dilation,
                                            module.groups)
            result = full[..., top:top + h, left:left + w]
        return unfold_seeds(result, bk)
