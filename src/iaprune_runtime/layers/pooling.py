"""maxpool2d(kernel, stride [kernel], padding [0]) and avgpool2d(kernel, stride [kernel], padding
[0]): nn.MaxPool2d and nn.AvgPool2d with square windows (torch's padding: -inf for max, zeros
counted in the window for avg). Both are monotone forward; MaxPool's adjoint is routed to the
inputs that can be a window's maximum, AvgPool's is the transposed average."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..interval import TIE_ULPS, Interval
from .base import (
    REQUIRED,
    Layer,
    LayerType,
    SpecError,
    check_int,
    pair,
    register,
    square,
    window_shape,
)
from .conv import unfold_seeds


def pool_geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    """kernel_size, stride, padding and dilation of a pooling module as pairs."""
    kernel = pair(module.kernel_size)
    return {"kernel_size": kernel, "stride": pair(module.stride or kernel),
            "padding": pair(module.padding), "dilation": pair(getattr(module, "dilation", 1))}


def windows(t: Tensor, geometry: dict[str, tuple[int, int]], fill: float) -> Tensor:
    """The pooling windows of t (b, C, H, W), padded with `fill`: (b, C, K, L) for K entries
    per window and L windows (row-major, the order torch scans a window in)."""
    (ph, pw), (b, c) = geometry["padding"], t.shape[:2]
    padded = F.pad(t, (pw, pw, ph, ph), value=fill) if ph or pw else t
    columns = F.unfold(padded, geometry["kernel_size"], dilation=geometry["dilation"],
                       stride=geometry["stride"])  # (b, C·K, L)
    return columns.reshape(b, c, -1, columns.shape[-1])


def sum_windows(columns: Interval, geometry: dict[str, tuple[int, int]],
                size: tuple[int, int]) -> Interval:
    """Transpose of `windows`: add every window entry (b, C, K, L) back onto its input pixel
    (overlapping windows sum; padding is dropped) -> (b, C, H, W)."""
    (ph, pw), (h, w), b = geometry["padding"], size, columns.shape[0]

    def fold(t: Tensor) -> Tensor:
        image = F.fold(t.reshape(b, -1, t.shape[-1]), (h + 2 * ph, w + 2 * pw),
                       geometry["kernel_size"], dilation=geometry["dilation"],
                       stride=geometry["stride"])
        return image[..., ph:ph + h, pw:pw + w]

    return Interval(fold(columns.lower), fold(columns.upper))


def max_pool(pool: nn.MaxPool2d, x: Tensor) -> Tensor:
    """pool(x) for a spec's max pool (no padding, dilation or ceil mode) as the elementwise
    maximum of its kh·kw strided slices: the same values, without the indices of the maxima
    that torch's CPU kernel computes. At inference it pools LeNet-5's maps ~10x faster, and a
    pruned LeNet-5 ran ~5x faster with it (README, "Convolutional networks")."""
    (kh, kw), (sh, sw) = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size)
    rows, cols = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[..., i:i + sh * (rows - 1) + 1:sh, j:j + sw * (cols - 1) + 1:sw]
            out = window if out is None else torch.maximum(out, window)
    return out


class Pool(LayerType):
    """A square pooling window over (C, H, W): the channels stay, the positions change. With
    padding p, torch's semantics: a max pool pads with -inf (padding is never a maximum), an
    average pool with zeros that count in the window size (count_include_pad=True)."""

    role = "pool"
    fields = {"kernel": REQUIRED, "stride": None, "padding": 0}
    optional = ("padding",)  # left out at 0: specs stored before it existed stay as they were
    input_ranks = (3,)
    # torch's keyword names of the functional form's positional arguments after the input
    call_args: ClassVar[tuple[str, ...]]

    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        if field == "stride" and value is None:
            return layer["kernel"]
        if field == "padding":
            check_int(value, f"{where}: {self.name} padding", 0)
            if 2 * value > layer["kernel"]:
                raise SpecError(f"{where}: {self.name} padding {value} exceeds half the kernel "
                                f"{layer['kernel']} (torch refuses it)")
            return value
        return check_int(value, f"{where}: {self.name} {field}", 1)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return window_shape(layer, shape, where, shape[0] if shape else 0)

    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        return self.modules[0](layer["kernel"], layer["stride"], layer.get("padding", 0))

    def refused(self, module: nn.Module) -> list[str]:
        """The settings of `module` a spec cannot hold, as 'name=value'."""
        dilation = square(getattr(module, "dilation", 1), "dilation", module)
        return [f"dilation={dilation}"] * (dilation != 1) + ["ceil_mode=True"] * module.ceil_mode

    def read(self, module: nn.Module) -> Layer:
        refused = self.refused(module)
        if refused:
            raise TypeError(f"{type(module).__name__} with {', '.join(refused)} is not supported")
        stride = module.stride if module.stride is not None else module.kernel_size
        layer = {"type": self.name, "kernel": square(module.kernel_size, "kernel", module),
                 "stride": square(stride, "stride", module)}
        padding = square(module.padding, "padding", module)
        return {**layer, "padding": padding} if padding else layer

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """F.max_pool2d(x, kernel_size, stride=None, padding=0, ...) and F.avg_pool2d alike."""
        given = {**dict(zip(self.call_args, args[1:], strict=False)), **kwargs}
        if given.get("stride") is None:
            given["stride"] = given["kernel_size"]
        return self.read(self.modules[0](**given))

    def check(self, module: nn.Module) -> None:
        if module.ceil_mode:
            raise ValueError(f"{type(module).__name__} with ceil_mode=True is not supported")
        if getattr(module, "return_indices", False):
            raise ValueError("MaxPool2d with return_indices=True returns a tuple, not a value")


# A max-pool window's routing is decided on rounded bounds: two entries whose bounds lie within
# TIE_ULPS · ε · (their channel's largest magnitude) of each other count as possibly tied.


@register
class MaxPool2d(Pool):
    name = "maxpool2d"
    modules = (nn.MaxPool2d,)
    calls = ("max_pool2d", "max_pool2d_with_indices")
    call_args = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

    def run(self, module: nn.Module, x: Tensor) -> Tensor:
        """The pool as strided maxima (`max_pool`, no indices) at inference; torch's own pool
        where a spec's pool has padding."""
        return module(x) if pair(module.padding) != (0, 0) else max_pool(module, x)

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[max lo, max hi] over each window: max is non-decreasing in every entry
        (Interval.monotone), and exact (each end is attained at a corner)."""
        result = x.monotone(lambda t: F.max_pool2d(t, **pool_geometry(module)))
        if module.padding and bool(result.lower.isneginf().any()):  # dilation can skip all data
            raise ValueError(f"{module} has a window that lies entirely in the padding "
                             f"(its maximum is -inf) for inputs of shape {tuple(x.shape[1:])}")
        return result

    def derivative(self, module: nn.Module, x: Interval) -> Interval:
        """The range [d_wi] of ∂y_w/∂x_i over the box for each window w and entry i: (b, C, K, L).

        At a point x, torch routes the adjoint of window w to one input: the first (in scan order)
        of the window's maxima, so ∂y_w/∂x_i ∈ {0, 1}. Over the box, with a margin δ >= 0:
        - d = 0 if hi_i < max_j lo_j - δ: then x_i <= hi_i < max_j lo_j <= max_j x_j at every point,
          so x_i is never a maximum (a padding entry, hi = -inf, is never one);
        - d = 1 if lo_i > max_{j≠i} hi_j + δ: then x_i > x_j for all j ≠ i at every point, so x_i is
          the only maximum;
        - [0, 1] otherwise (ties allowed: with hi_i = max lo_j both may be the maximum).
        With δ = 0 this is exact reasoning on exact bounds. The bounds are rounded, not directed
        outward, and ties are common, not rare: at a box corner where the inputs are 0 every entry
        of a channel is its bias, and a dead region maps to one constant. A bound that equals such a
        tie value exactly may come out an ulp below it (e.g. (w h/2 + b) + |w| h/2 for
        max(b + w x) over x in [0, h], w < 0), and δ = 0 would then exclude the entry that torch's
        point computation finds tied and picks. So δ = 2¹⁰ ε · m (m the largest magnitude in the
        channel's bounds, ε the dtype's machine epsilon): far above the few ulps of m that each
        bound's sums of products are off by, far below any difference between entries that is not a
        tie; entries closer than δ count as possibly tied (d in [0, 1]).
        A window whose entries all have width 0 is a single point, the same at every point of the
        box. There d is exactly torch's choice, 1 at the first maximum and 0 elsewhere, where the
        interval's numbers are the ones torch computes: where the window's maximum is attained
        exactly (bit for bit) and every other entry is more than δ below it (a constant region gives
        the same constant in both, so they tie alike), and where the layer's whole input is one
        point (a degenerate box: the sweep is torch's own computation at that point, whose
        rounding, not exact arithmetic, breaks the ties). Other point windows follow the rule above.
        """
        geometry = pool_geometry(module)
        lo, hi = (windows(t, geometry, -math.inf) for t in (x.lower, x.upper))
        floor = lo.amax(dim=2, keepdim=True)  # lower bound of the window's maximum
        if lo.shape[2] > 1:
            top = hi.topk(2, dim=2)  # the largest and second-largest upper bound
            entry = torch.arange(lo.shape[2], device=lo.device)[:, None]
            others = torch.where(entry == top.indices[:, :, :1], top.values[:, :, 1:],
                                 top.values[:, :, :1])  # max over j ≠ i of hi_j
        else:
            others = torch.full_like(hi, -math.inf)  # a window of one entry
        magnitude = x.magnitude.flatten(2).amax(dim=2)[..., None, None]  # (b, C, 1, 1)
        margin = TIE_ULPS * torch.finfo(x.dtype).eps * magnitude
        certain, possible = lo > others + margin, hi >= floor - margin
        point = (lo == hi).all(dim=2, keepdim=True)  # no subtraction: padding is -inf in both
        exact = (possible == (lo == floor)).all(dim=2, keepdim=True)  # near maxima tie bit for bit
        whole = (x.lower == x.upper).flatten(1).all(dim=1)[:, None, None, None]  # (b, 1, 1, 1)
        point &= exact | whole
        if bool(point.any()):
            first = lo.movedim(2, -1).argmax(dim=-1)  # first maximum (a contiguous reduction)
            first = F.one_hot(first, lo.shape[2]).movedim(-1, 2).bool()
            certain = torch.where(point, first, certain)
            possible = torch.where(point, first, possible)
        return Interval(certain.to(x.dtype), possible.to(x.dtype))

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄_i = Σ_{w ∋ i} ȳ_w ⊗ [d_wi] (`derivative`): interval products, summed over
        the windows that contain x_i (they overlap when stride < kernel)."""
        derivative = self.derivative(module, x)  # (b, C, K, L)
        b, k, c = out_adjoint.shape[:3]
        routed = out_adjoint.reshape(b, k, c, 1, -1) * derivative[:, None]  # (b', k, C, K, L)
        columns = routed.reshape(-1, *routed.shape[2:])
        return unfold_seeds(sum_windows(columns, pool_geometry(module), x.shape[-2:]),
                             (routed.shape[0], k))


@register
class AvgPool2d(Pool):
    name = "avgpool2d"
    modules = (nn.AvgPool2d,)
    calls = ("avg_pool2d",)
    call_args = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")

    def refused(self, module: nn.Module) -> list[str]:
        """Also divisor_override, and count_include_pad=False where there is padding."""
        refused = super().refused(module)
        if module.divisor_override:
            refused.append(f"divisor_override={module.divisor_override}")
        if not module.count_include_pad and square(module.padding, "padding", module):
            refused.append("count_include_pad=False")
        return refused

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """[avg lo, avg hi] over each window: an average with weights >= 0 is non-decreasing in
        every entry (Interval.monotone), and exact."""
        return x.monotone(lambda t: F.avg_pool2d(
            t, module.kernel_size, module.stride, module.padding, False, module.count_include_pad,
            module.divisor_override))

    def divisor(self, module: nn.Module, x: Interval) -> Tensor | float:
        """What torch divides each window's sum by: divisor_override, else the window size, or with
        count_include_pad=False the number of non-padding entries: a float or (1, 1, 1, L)."""
        geometry = pool_geometry(module)
        if module.divisor_override:
            return float(module.divisor_override)
        if module.count_include_pad:
            return float(math.prod(geometry["kernel_size"]))
        ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.lower.device)
        return windows(ones, geometry, 0.0).sum(dim=2, keepdim=True)

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """x̄_i = Σ_{w ∋ i} ȳ_w / n_w (n_w the window's divisor): the transpose of the average, a
        point linear map with weights >= 0 applied to both bounds."""
        b, k, c = out_adjoint.shape[:3]
        shares = out_adjoint.reshape(b * k, c, 1, -1) * (1 / self.divisor(module, x))
        kernel = math.prod(pool_geometry(module)["kernel_size"])
        columns = shares.expand(-1, -1, kernel, -1)
        return unfold_seeds(sum_windows(columns, pool_geometry(module), x.shape[-2:]), (b, k))
