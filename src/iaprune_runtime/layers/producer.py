"""What the producers of units (Linear, Conv2d) share: their surgery as producer and consumer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import LayerType, empty_like, parameter


class Producer(LayerType):
    """A layer whose weight (out, in, *kernel) makes its units: rows of a Linear, filters of a
    Conv2d. `in_attr`/`out_attr` name the module's input and output sizes."""

    role = "producer"
    in_attr: ClassVar[str]
    out_attr: ClassVar[str]
    fixed: ClassVar[tuple[str, ...]] = ()  # settings a user's module must share to take weights

    def units(self, module: nn.Module) -> int:
        return getattr(module, self.out_attr)

    def features(self, module: nn.Module) -> int:
        return getattr(module, self.in_attr)

    def keep_outputs(self, module: nn.Module, idx: Tensor) -> None:
        """Rows (filters) `idx` of the weight and entries `idx` of the bias."""
        module.weight = parameter(module.weight.detach()[idx], module.weight)
        if module.bias is not None:
            module.bias = parameter(module.bias.detach()[idx], module.bias)
        setattr(module, self.out_attr, len(idx))

    def keep_inputs(self, module: nn.Module, size: int, idx: Tensor, removed: Tensor,
                    fold: Any) -> None:
        """Keep input units `idx` and fold the removed units' estimate u_R = offset + coef u_K
        into the consumer: bias += Σ_p W[:, R, p] offset_R and W[:, K, p] += W[:, R, p] coef over
        positions p (the column block of a unit across a Flatten, or a conv kernel's taps)."""
        weight = module.weight.detach()
        out = weight.shape[0]
        bias = (module.bias.detach().clone() if module.bias is not None
                else torch.zeros(out, dtype=weight.dtype, device=weight.device))
        # (out, units, positions): a Linear's unit-major column blocks or a Conv2d's kernel taps
        units = weight.reshape(out, size, -1)
        gone = units[:, removed].double()  # (out, r, P)
        kept = units[:, idx].clone()  # (out, k, P)
        if fold is not None:
            if gone.shape[2] == 1:  # one position: plain matrix products (the MLP case)
                bias = bias + (gone[..., 0] @ fold.offset.double()).to(bias.dtype)
                if fold.coef is not None:
                    kept[..., 0] += (gone[..., 0] @ fold.coef.double()).to(kept.dtype)
            else:
                bias = bias + (gone.sum(2) @ fold.offset.double()).to(bias.dtype)
                if fold.coef is not None:
                    kept += torch.einsum("orp,rk->okp", gone, fold.coef.double()).to(kept.dtype)
        module.weight = parameter(kept.reshape(out, -1, *weight.shape[2:]), module.weight)
        setattr(module, self.in_attr, module.weight.shape[1])
        if module.bias is not None:
            module.bias = parameter(bias, module.bias)
        elif fold is not None:  # a consumer without bias gets one to hold the fold
            module.bias = nn.Parameter(bias)

    def check_pair(self, mine: nn.Module, ref: nn.Module, where: str) -> None:
        """Same fixed settings (a conv's kernel, stride, ...) and a bias where `ref` has one."""
        for name in self.fixed:
            if getattr(mine, name) != getattr(ref, name):
                raise ValueError(f"{where}: {name} {getattr(mine, name)!r} differs from the "
                                 f"checkpoint's {getattr(ref, name)!r}")
        if (mine.bias is None) != (ref.bias is None):
            has = "has" if ref.bias is not None else "has no"
            raise ValueError(f"{where}: the checkpoint's layer {has} a bias, yours differs")

    def resize(self, module: nn.Module, ref: nn.Module, n_in: int) -> None:
        setattr(module, self.in_attr, n_in)
        setattr(module, self.out_attr, getattr(ref, self.out_attr))
        for name in ("weight", "bias"):
            old = getattr(module, name)
            if old is not None:
                shape = getattr(ref, name).shape
                if name == "weight":
                    shape = torch.Size((shape[0], n_in, *shape[2:]))
                setattr(module, name, nn.Parameter(empty_like(shape, old),
                                                   requires_grad=old.requires_grad))
