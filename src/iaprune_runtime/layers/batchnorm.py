"""batchnorm: nn.BatchNorm1d on (features,) or nn.BatchNorm2d on (C, H, W), in eval mode a
per-unit affine map; one entry per unit of the group before it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..interval import Interval
from .base import Layer, LayerType, SpecError, empty_like, parameter, register


def _affine(module: nn.Module, x: Interval) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = s x + t per channel: s = γ / sqrt(var + ε), t = β - mean · s;
    both shaped (C, 1, ...) to broadcast over one input (batch, C, *rest)."""
    scale = torch.rsqrt(module.running_var.to(x.dtype) + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.to(x.dtype)
    shift = -module.running_mean.to(x.dtype) * scale
    if module.bias is not None:
        shift = shift + module.bias.to(x.dtype)
    view = (-1,) + (1,) * (x.lower.ndim - 2)
    return scale.reshape(view), shift.reshape(view)


@register
class BatchNorm(LayerType):
    name = "batchnorm"
    modules = (nn.BatchNorm1d, nn.BatchNorm2d)
    role = "per_unit"

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) not in (1, 3):
            raise SpecError(f"{where}: batchnorm needs (features,) or (C, H, W) input, got {shape}")
        return shape

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return nn.BatchNorm1d(shape[0]) if len(shape) == 1 else nn.BatchNorm2d(shape[0])

    def params(self, layer: Layer, shape: tuple[int, ...]) -> int:
        """γ, β, running mean and running variance: four per unit."""
        return 4 * shape[0]

    def read(self, module: nn.Module) -> Layer:
        if not (module.affine and module.track_running_stats) or module.eps != 1e-5:
            raise TypeError(f"{type(module).__name__} must be affine, track running stats and "
                            "use eps=1e-5")
        return {"type": self.name}

    def check(self, module: nn.Module) -> None:
        if module.running_mean is None or module.running_var is None:
            raise ValueError(f"{type(module).__name__} without running statistics "
                             f"(track_running_stats=False) has no eval-mode map to sweep")

    def features(self, module: nn.Module) -> int:
        return module.num_features

    def absorb_shift(self, module: nn.Module, shift: Tensor) -> bool:
        """(x + b - mean) = (x - (mean - b)): the running mean takes the shift (a bias a fold
        gave a bias-free conv before it; in training the batch mean absorbs it anyway)."""
        with torch.no_grad():
            module.running_mean.sub_(shift.to(module.running_mean.dtype))
        return True

    def ranks(self, module: nn.Module) -> tuple[int, ...]:
        """BatchNorm1d takes (C,) or (C, L), BatchNorm2d (C, H, W)."""
        return (1, 2) if type(module) is nn.BatchNorm1d else (3,)

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[y] = s [x] + t: the interval product with a point scale (min/max of s lo and s hi, so
        a negative γ flips the bounds), then a point shift; exact per coordinate."""
        scale, shift = _affine(module, x)
        return x * scale + shift

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄ = s ȳ per channel (the derivative of y = s x + t), a point product."""
        scale, _ = _affine(module, x)
        return out_adjoint * scale

    def units(self, module: nn.Module) -> int:
        return module.num_features

    def keep_outputs(self, module: nn.Module, idx: Tensor) -> None:
        """Entries `idx` of γ, β and the running statistics."""
        module.weight = parameter(module.weight.detach()[idx], module.weight)
        if module.bias is not None:
            module.bias = parameter(module.bias.detach()[idx], module.bias)
        module.num_features = len(idx)
        module.running_mean = module.running_mean[idx].clone()
        module.running_var = module.running_var[idx].clone()

    def check_pair(self, mine: nn.Module, ref: nn.Module, where: str) -> None:
        if not (mine.affine and mine.track_running_stats):
            raise ValueError(f"{where}: needs affine=True and track_running_stats=True to "
                             "receive the checkpoint's weights and running statistics")
        if mine.eps != ref.eps:
            raise ValueError(f"{where}: eps {mine.eps} differs from the checkpoint's {ref.eps}")

    def resize(self, module: nn.Module, ref: nn.Module, n_in: int) -> None:
        module.num_features = ref.num_features
        for name in ("running_mean", "running_var"):
            setattr(module, name, empty_like(getattr(ref, name).shape, getattr(module, name)))
        for name in ("weight", "bias"):
            old = getattr(module, name)
            if old is not None:
                setattr(module, name, nn.Parameter(empty_like(getattr(ref, name).shape, old),
                                                   requires_grad=old.requires_grad))
