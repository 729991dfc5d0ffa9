"""softmax and log_softmax: a final normaliser of the logits (nn.Softmax(dim=1),
nn.LogSoftmax(dim=1), F.softmax / F.log_softmax / x.softmax(dim=1 or -1)), allowed only as a
network's last layer, after the logits layer (the pytorch/examples MNIST Net ends with
F.log_softmax).

The model keeps its normaliser (its outputs are the user's), but the loss and the significance
are taken on the logits, its input:
- training: cross-entropy applies log_softmax to what it gets. On log_softmax outputs that is
  harmless (log_softmax is idempotent), on softmax outputs it is wrong (it would normalise
  probabilities again and train towards flat outputs). `logits_of` runs a network up to its
  normaliser's input, and the trainer, the evaluation and the Taylor criterion use it.
- significance: the interval sweep seeds its adjoint at the normaliser's input. The prediction
  (the argmax, the ranking of the classes) is that of the logits; the normaliser is a monotone
  reparametrisation of it per class but couples every output (∂s_i/∂z_j = s_i (δ_ij - s_j)), and
  its derivative bounds over a box are loose (each entry is a product of two wide intervals of
  [0, 1]), so seeding behind it would blur every unit's reach by the same coupling without
  saying anything about which units the prediction needs.
The interval rules below are still sound (property-tested), for a sweep seeded at the outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..interval import Interval
from .activations import ROUNDING_ULPS
from .base import Layer, LayerType, SpecError, logits_end, lookup, register


def _dim(dim: object, what: str) -> None:
    """TypeError unless `dim` is the class dimension of (batch, classes): 1, -1 or None."""
    if dim not in (1, -1, None):
        raise TypeError(f"{what} over dim={dim!r} is not supported (only over the classes of "
                        "(batch, classes): dim=1 or -1)")


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """model(x), or, for an nn.Sequential that ends with a softmax/log_softmax, the input of that
    normaliser: the logits, on which the loss is taken (see the module docstring)."""
    modules = list(model) if isinstance(model, nn.Sequential) else []
    kinds = [lookup(m) for m in modules]
    if not modules or None in kinds or logits_end(kinds) == len(modules):
        return model(x)
    seen: list[Tensor] = []
    handle = modules[-1].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        model(x)  # the normaliser's own output is discarded: (batch, classes), cheap
    finally:
        handle.remove()
    return seen[0]


class Normaliser(LayerType):
    """softmax/log_softmax over the classes of (batch, classes)."""

    role = "normaliser"
    normaliser = True
    input_ranks = (1,)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 1:
            raise SpecError(f"{where}: {self.name} needs (classes,) input, got {shape}")
        return shape

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return self.modules[0](dim=1)

    def read(self, module: nn.Module) -> Layer:
        _dim(module.dim, type(module).__name__)
        return {"type": self.name}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.softmax(x, dim), x.softmax(dim), torch.softmax(x, dim) (log_softmax alike) on
        (batch, classes); a dtype is refused."""
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        _dim(dim, self.name)
        if result.ndim != 2 or kwargs.get("dtype") is not None:
            raise TypeError(f"{self.name} must act on (batch, classes) logits without a dtype")
        return {"type": self.name}

    def check(self, module: nn.Module) -> None:
        try:
            _dim(module.dim, type(module).__name__)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    @staticmethod
    def log_bounds(x: Interval) -> Interval:
        """Bounds of log softmax_i over the box (b, n): log s_i = z_i - log Σ_j e^{z_j}
        increases in z_i and decreases in every z_j, j ≠ i, so its minimum is at z_i = lo_i,
        z_j = hi_j and its maximum at z_i = hi_i, z_j = lo_j: lo_i - logsumexp(lo_i, hi_{j≠i})
        and hi_i - logsumexp(hi_i, lo_{j≠i}) (stable: logsumexp shifts by the row's maximum).
        Widened for rounding by ROUNDING_ULPS ulps of (1 + the row's largest |z|); a point row
        gives torch's log_softmax exactly."""
        n = x.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=x.lower.device)
        low = torch.where(eye, x.lower[..., :, None], x.upper[..., None, :]).logsumexp(-1)
        high = torch.where(eye, x.upper[..., :, None], x.lower[..., None, :]).logsumexp(-1)
        lower, upper = x.lower - low, x.upper - high
        point = (x.lower == x.upper).all(dim=-1, keepdim=True)
        margin = ROUNDING_ULPS * torch.finfo(x.dtype).eps * (
            1 + x.magnitude.amax(dim=-1, keepdim=True))
        exact = torch.log_softmax(x.lower, dim=-1)
        return Interval(torch.where(point, exact, torch.minimum(lower, upper) - margin),
                        torch.where(point, exact, upper + margin))

    @classmethod
    def probabilities(cls, x: Interval) -> Interval:
        """Bounds of softmax_i over the box: e^(the log bounds), within [0, 1] (log_bounds's
        margin, a relative one after exp, covers the rounding of exp); a point row gives torch's
        softmax exactly."""
        logs = cls.log_bounds(x)
        point = (x.lower == x.upper).all(dim=-1, keepdim=True)
        exact = torch.softmax(x.lower, dim=-1)
        return Interval(torch.where(point, exact, logs.lower.exp().clamp(0, 1)),
                        torch.where(point, exact, logs.upper.exp().clamp(0, 1)))


def _sum(t: Interval) -> Interval:
    """Σ over the last dimension (kept): the sum of the lower and of the upper bounds."""
    return Interval(t.lower.sum(-1, keepdim=True), t.upper.sum(-1, keepdim=True))


@register
class Softmax(Normaliser):
    """softmax: s_i = e^{z_i} / Σ_j e^{z_j} over the classes."""

    name = "softmax"
    modules = (nn.Softmax,)
    calls = ("softmax",)

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[e^{lo_i - logsumexp(lo_i, hi_{j≠i})}, e^{hi_i - logsumexp(hi_i, lo_{j≠i})}]
        (`probabilities`)."""
        return self.probabilities(x)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """z̄_j = Σ_i ȳ_i s_i (δ_ij - s_j) = s_j (ȳ_j - Σ_i ȳ_i s_i): interval arithmetic with
        [s] the forward bounds (each term encloses its value at every point of the box)."""
        s = self.probabilities(x)[:, None]  # (b, 1, n)
        return s * (out_adjoint - _sum(out_adjoint * s))


@register
class LogSoftmax(Normaliser):
    """log_softmax: log s_i = z_i - log Σ_j e^{z_j} over the classes."""

    name = "log_softmax"
    modules = (nn.LogSoftmax,)
    calls = ("log_softmax",)

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """`log_bounds`."""
        return self.log_bounds(x)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """z̄_j = Σ_i ȳ_i (δ_ij - s_j) = ȳ_j - s_j Σ_i ȳ_i, with [s] the softmax bounds."""
        s = self.probabilities(x)[:, None]  # (b, 1, n)
        return out_adjoint - s * _sum(out_adjoint)
