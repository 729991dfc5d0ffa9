"""Interval forward sweep and interval reverse (adjoint) sweep over a chain of modules.

A network is a chain: an nn.Sequential of the module types in `RULES` (Linear, Conv2d,
BatchNorm1d/2d, ReLU/Sigmoid/Tanh, MaxPool2d, AvgPool2d, Flatten, Dropout, and the Select of the
input features an input-pruned network reads). The forward sweep
encloses every intermediate value over an input box; the reverse sweep walks the list back from a
seed on the outputs and encloses the adjoints ∂y/∂v of every intermediate value v. Each module
type has one `Rule`, its forward map of a value interval and its adjoint map (the transposed
derivative applied to an adjoint interval), each with its formula in the docstring. For an MLP:

    [ā_{l-1}] = [z̄_l] W_l               (point matrix, centre/radius form)
    [z̄_l]     = [ā_l] ⊗ φ'([z_l])        (interval product with the derivative range)

Modules are evaluated as in eval mode (BatchNorm with its running statistics, Dropout the
identity), whatever their `training` flag. Values are (batch, *shape) and adjoints
(batch, k, *shape): a leading batch of boxes is swept at once, and per-output seeding is one
batched sweep with an identity seed (k = number of outputs), never a Python loop over outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iaprune.interval import Interval
from iaprune.spec import Select

Seed = Literal["per_output", "sum"]
SEEDS: tuple[str, ...] = get_args(Seed)
Measure = Literal["pre", "post"]
MEASURES: tuple[str, ...] = get_args(Measure)


class Sweep(NamedTuple):
    """Enclosures of every value of a chain of n modules and of its adjoints."""

    # n + 1 entries: values[i] is the input of module i, values[-1] the output; (batch, *shape_i)
    values: list[Interval]
    # n + 1 entries: adjoints[i] = [∂y/∂values[i]], (batch, k, *shape_i) with k = number of
    # outputs ("per_output") or 1 ("sum"); None below `lowest`. They may be expanded views.
    adjoints: list[Interval | None]


class LayerBounds(NamedTuple):
    """Enclosures for one hidden layer of n neurons (a leading batch dimension when batched)."""

    value: Interval  # [z] (pre-activation) or [a] (post-activation): (n,) or (batch, n)
    # [∂y/∂z] or [∂y/∂a]: "sum" (n,) or (batch, n); "per_output" (n_out, n) or (batch, n_out, n)
    adjoint: Interval


@dataclass(frozen=True)
class Rule:
    """How one module type maps an interval forward and an adjoint interval backward."""

    # (module, input value (batch, *in)) -> output value (batch, *out)
    forward: Callable[[nn.Module, Interval], Interval]
    # (module, input value (batch, *in), adjoint of the output (b, k, *out)) -> adjoint of the
    # input (b', k, *in); b and b' are the batch size or 1 (an adjoint not yet batch-dependent)
    backward: Callable[[nn.Module, Interval, Interval], Interval]
    ranks: tuple[int, ...] | None = None  # input ranks it takes, batch dim excluded (None: any)
    # the size of the input's first non-batch dimension (features, channels) it needs
    features: Callable[[nn.Module], int] | None = None
    keeps_rank: bool = True  # the output has the input's rank (False: Flatten)
    # raises ValueError for settings of the module that the rule does not cover
    check: Callable[[nn.Module], None] | None = None


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _param(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.to(dtype)


def _fold_seeds(adjoint: Interval) -> tuple[Interval, tuple[int, int]]:
    """(b, k, C, H, W) -> (b·k, C, H, W): image ops see the seeds as more batch."""
    b, k = adjoint.shape[:2]
    return adjoint.reshape(b * k, *adjoint.shape[2:]), (b, k)


def _unfold_seeds(adjoint: Interval, bk: tuple[int, int]) -> Interval:
    return adjoint.reshape(*bk, *adjoint.shape[1:])


# ---- Linear ------------------------------------------------------------------------------------

def _linear_forward(module: nn.Linear, x: Interval) -> Interval:
    """z = a Wᵀ + b in centre/radius form (Interval.linear)."""
    return x.linear(module.weight.to(x.dtype), _param(module.bias, x.dtype))


def _linear_backward(module: nn.Linear, x: Interval, out_adjoint: Interval) -> Interval:
    """ā = z̄ W (row vectors), a point-matrix product in centre/radius form."""
    return out_adjoint @ module.weight.to(x.dtype)


# ---- Conv2d ------------------------------------------------------------------------------------

def _conv_check(module: nn.Conv2d) -> None:
    if module.padding_mode != "zeros":
        raise ValueError(f"Conv2d with padding_mode={module.padding_mode!r} is not supported "
                         f"(only 'zeros')")


def _conv_padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding; "same" puts the odd pixel last, as torch does."""
    if module.padding == "valid":
        return 0, 0, 0, 0
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        return total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2
    ph, pw = _pair(module.padding)
    return ph, ph, pw, pw


def _conv_forward(module: nn.Conv2d, x: Interval) -> Interval:
    """c' = conv(c, W) + b, r' = conv(r, |W|) (Interval.conv2d)."""
    return x.conv2d(module.weight.to(x.dtype), _param(module.bias, x.dtype), module.stride,
                    module.padding, module.dilation, module.groups)


def _conv_backward(module: nn.Conv2d, x: Interval, out_adjoint: Interval) -> Interval:
    """x̄ = convᵀ(ȳ, W): the transposed convolution, in centre/radius form
    (Interval.conv_transpose2d), with the seed dimension folded into the batch.

    The forward conv reads the zero-padded input (Hp = H + top + bottom rows) and its stride may
    skip the last rows; output_padding restores those rows (their adjoint is 0), and the padding
    is cut off again (by convᵀ's own padding when symmetric, by slicing otherwise), so x̄ has
    exactly x's shape."""
    adjoint, bk = _fold_seeds(out_adjoint)
    top, bottom, left, right = _conv_padding(module)
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
    return _unfold_seeds(result, bk)


# ---- BatchNorm ---------------------------------------------------------------------------------

def _batchnorm_check(module: nn.modules.batchnorm._BatchNorm) -> None:
    if module.running_mean is None or module.running_var is None:
        raise ValueError(f"{type(module).__name__} without running statistics "
                         f"(track_running_stats=False) has no eval-mode map to sweep")


def _batchnorm_affine(module: nn.modules.batchnorm._BatchNorm, x: Interval) -> tuple[Tensor,
                                                                                     Tensor]:
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


def _batchnorm_forward(module: nn.modules.batchnorm._BatchNorm, x: Interval) -> Interval:
    """[y] = s [x] + t: the interval product with a point scale (min/max of s lo and s hi, so a
    negative γ flips the bounds), then a point shift; exact per coordinate."""
    scale, shift = _batchnorm_affine(module, x)
    return x * scale + shift


def _batchnorm_backward(module: nn.modules.batchnorm._BatchNorm, x: Interval,
                        out_adjoint: Interval) -> Interval:
    """x̄ = s ȳ per channel (the derivative of y = s x + t), a point product."""
    scale, _ = _batchnorm_affine(module, x)
    return out_adjoint * scale


# ---- pooling -----------------------------------------------------------------------------------

def _pool_check(module: nn.MaxPool2d | nn.AvgPool2d) -> None:
    if module.ceil_mode:
        raise ValueError(f"{type(module).__name__} with ceil_mode=True is not supported")
    if getattr(module, "return_indices", False):
        raise ValueError("MaxPool2d with return_indices=True returns a tuple, not a value")


def _pool_geometry(module: nn.MaxPool2d | nn.AvgPool2d) -> dict[str, tuple[int, int]]:
    """kernel_size, stride, padding and dilation of a pooling module as pairs."""
    kernel = _pair(module.kernel_size)
    return {"kernel_size": kernel, "stride": _pair(module.stride or kernel),
            "padding": _pair(module.padding), "dilation": _pair(getattr(module, "dilation", 1))}


def _windows(t: Tensor, geometry: dict[str, tuple[int, int]], fill: float) -> Tensor:
    """The pooling windows of t (b, C, H, W), padded with `fill`: (b, C, K, L) for K entries
    per window and L windows (row-major, the order torch scans a window in)."""
    (ph, pw), (b, c) = geometry["padding"], t.shape[:2]
    padded = F.pad(t, (pw, pw, ph, ph), value=fill) if ph or pw else t
    columns = F.unfold(padded, geometry["kernel_size"], dilation=geometry["dilation"],
                       stride=geometry["stride"])  # (b, C·K, L)
    return columns.reshape(b, c, -1, columns.shape[-1])


def _sum_windows(columns: Interval, geometry: dict[str, tuple[int, int]],
                 size: tuple[int, int]) -> Interval:
    """Transpose of `_windows`: add every window entry (b, C, K, L) back onto its input pixel
    (overlapping windows sum; padding is dropped) -> (b, C, H, W)."""
    (ph, pw), (h, w), b = geometry["padding"], size, columns.shape[0]

    def fold(t: Tensor) -> Tensor:
        image = F.fold(t.reshape(b, -1, t.shape[-1]), (h + 2 * ph, w + 2 * pw),
                       geometry["kernel_size"], dilation=geometry["dilation"],
                       stride=geometry["stride"])
        return image[..., ph:ph + h, pw:pw + w]

    return Interval(fold(columns.lower), fold(columns.upper))


def _maxpool_forward(module: nn.MaxPool2d, x: Interval) -> Interval:
    """[max lo, max hi] over each window: max is non-decreasing in every entry
    (Interval.monotone), and exact (each end is attained at a corner)."""
    result = x.monotone(lambda t: F.max_pool2d(t, **_pool_geometry(module)))
    if module.padding and bool(result.lower.isneginf().any()):  # dilation can skip all data
        raise ValueError(f"{module} has a window that lies entirely in the padding "
                         f"(its maximum is -inf) for inputs of shape {tuple(x.shape[1:])}")
    return result


# A max-pool window's routing is decided on rounded bounds: two entries whose bounds lie within
# _TIE_ULPS · ε · (their channel's largest magnitude) of each other count as possibly tied.
_TIE_ULPS = 2**10


def _maxpool_derivative(module: nn.MaxPool2d, x: Interval) -> Interval:
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
    geometry = _pool_geometry(module)
    lo, hi = (_windows(t, geometry, -math.inf) for t in (x.lower, x.upper))
    floor = lo.amax(dim=2, keepdim=True)  # lower bound of the window's maximum
    if lo.shape[2] > 1:
        top = hi.topk(2, dim=2)  # the largest and second-largest upper bound
        entry = torch.arange(lo.shape[2], device=lo.device)[:, None]
        others = torch.where(entry == top.indices[:, :, :1], top.values[:, :, 1:],
                             top.values[:, :, :1])  # max over j ≠ i of hi_j
    else:
        others = torch.full_like(hi, -math.inf)  # a window of one entry
    magnitude = x.magnitude.flatten(2).amax(dim=2)[..., None, None]  # (b, C, 1, 1)
    margin = _TIE_ULPS * torch.finfo(x.dtype).eps * magnitude
    certain, possible = lo > others + margin, hi >= floor - margin
    point = (lo == hi).all(dim=2, keepdim=True)  # no subtraction: padding is -inf in both
    exact = (possible == (lo == floor)).all(dim=2, keepdim=True)  # near maxima tie bit for bit
    whole = (x.lower == x.upper).flatten(1).all(dim=1)[:, None, None, None]  # (b, 1, 1, 1)
    point &= exact | whole
    if bool(point.any()):
        first = lo.movedim(2, -1).argmax(dim=-1)  # first maximum (a contiguous reduction)
        first = F.one_hot(first, lo.shape[2]).movedim(-1, 2).bool()
        certain, possible = torch.where(point, first, certain), torch.where(point, first, possible)
    return Interval(certain.to(x.dtype), possible.to(x.dtype))


def _maxpool_backward(module: nn.MaxPool2d, x: Interval, out_adjoint: Interval) -> Interval:
    """x̄_i = Σ_{w ∋ i} ȳ_w ⊗ [d_wi] (`_maxpool_derivative`): interval products, summed over
    the windows that contain x_i (they overlap when stride < kernel)."""
    derivative = _maxpool_derivative(module, x)  # (b, C, K, L)
    b, k, c = out_adjoint.shape[:3]
    routed = out_adjoint.reshape(b, k, c, 1, -1) * derivative[:, None]  # (b', k, C, K, L)
    columns = routed.reshape(-1, *routed.shape[2:])
    return _unfold_seeds(_sum_windows(columns, _pool_geometry(module), x.shape[-2:]),
                         (routed.shape[0], k))


def _avgpool_forward(module: nn.AvgPool2d, x: Interval) -> Interval:
    """[avg lo, avg hi] over each window: an average with weights >= 0 is non-decreasing in
    every entry (Interval.monotone), and exact."""
    return x.monotone(lambda t: F.avg_pool2d(
        t, module.kernel_size, module.stride, module.padding, False, module.count_include_pad,
        module.divisor_override))


def _avgpool_divisor(module: nn.AvgPool2d, x: Interval) -> Tensor | float:
    """What torch divides each window's sum by: divisor_override, else the window size, or with
    count_include_pad=False the number of non-padding entries: a float or (1, 1, 1, L)."""
    geometry = _pool_geometry(module)
    if module.divisor_override:
        return float(module.divisor_override)
    if module.count_include_pad:
        return float(math.prod(geometry["kernel_size"]))
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.lower.device)
    return _windows(ones, geometry, 0.0).sum(dim=2, keepdim=True)


def _avgpool_backward(module: nn.AvgPool2d, x: Interval, out_adjoint: Interval) -> Interval:
    """x̄_i = Σ_{w ∋ i} ȳ_w / n_w (n_w the window's divisor): the transpose of the average, a
    point linear map with weights >= 0 applied to both bounds."""
    b, k, c = out_adjoint.shape[:3]
    shares = out_adjoint.reshape(b * k, c, 1, -1) * (1 / _avgpool_divisor(module, x))
    kernel = math.prod(_pool_geometry(module)["kernel_size"])
    columns = shares.expand(-1, -1, kernel, -1)
    return _unfold_seeds(_sum_windows(columns, _pool_geometry(module), x.shape[-2:]), (b, k))


# ---- reshapes and identities -------------------------------------------------------------------

def _flatten_forward(module: nn.Flatten, x: Interval) -> Interval:
    """A reshape: [x] flattened from start_dim to end_dim (of the batched value)."""
    start = module.start_dim % x.lower.ndim
    if start == 0:
        raise ValueError(f"Flatten(start_dim={module.start_dim}) would merge the batch "
                         f"dimension of a {x.lower.ndim}-d value (batch, ...) into the features")
    return x.monotone(lambda t: t.flatten(module.start_dim, module.end_dim))


def _flatten_backward(module: nn.Flatten, x: Interval, out_adjoint: Interval) -> Interval:
    """The adjoint of a reshape is the inverse reshape."""
    return out_adjoint.reshape(*out_adjoint.shape[:2], *x.shape[1:])


def _select_forward(module: Select, x: Interval) -> Interval:
    """y_j = x_{indices[j]}: the kept features of a flat input (batch, n_in) -> (batch, k);
    exact, both bounds picked alike."""
    return x[:, module.indices]


def _select_backward(module: Select, x: Interval, out_adjoint: Interval) -> Interval:
    """x̄_i = ȳ_j where i = indices[j], and exactly 0 for every feature the network does not
    read (∂y/∂x_i = 0): the selection's transpose scatters (b, k_out, k) into zeros (b, k_out,
    n_in)."""
    index = module.indices.to(out_adjoint.lower.device)

    def scatter(t: Tensor) -> Tensor:
        full = t.new_zeros(*t.shape[:-1], x.shape[-1])
        return full.index_copy(-1, index, t)

    return Interval(scatter(out_adjoint.lower), scatter(out_adjoint.upper))


def _identity_forward(module: nn.Module, x: Interval) -> Interval:
    """Dropout in eval mode: y = x."""
    return x


def _identity_backward(module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
    """x̄ = ȳ."""
    return out_adjoint


# ---- activations -------------------------------------------------------------------------------

def _activation_rule(value: Callable[[Interval], Interval],
                     derivative: Callable[[Interval], Interval]) -> Rule:
    """A pointwise activation: a = φ(z) forward, z̄ = ā ⊗ φ'([z]) backward."""
    def backward(module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        return out_adjoint * derivative(x[:, None])  # broadcast over the seed dimension

    return Rule(lambda module, x: value(x), backward)


RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: Rule(_linear_forward, _linear_backward, ranks=(1,),
                    features=lambda m: m.in_features),
    nn.Conv2d: Rule(_conv_forward, _conv_backward, ranks=(3,),
                    features=lambda m: m.in_channels, check=_conv_check),
    nn.BatchNorm1d: Rule(_batchnorm_forward, _batchnorm_backward, ranks=(1, 2),
                         features=lambda m: m.num_features, check=_batchnorm_check),
    nn.BatchNorm2d: Rule(_batchnorm_forward, _batchnorm_backward, ranks=(3,),
                         features=lambda m: m.num_features, check=_batchnorm_check),
    nn.ReLU: _activation_rule(Interval.relu, Interval.relu_derivative),
    nn.Sigmoid: _activation_rule(Interval.sigmoid, Interval.sigmoid_derivative),
    nn.Tanh: _activation_rule(Interval.tanh, Interval.tanh_derivative),
    nn.MaxPool2d: Rule(_maxpool_forward, _maxpool_backward, ranks=(3,), check=_pool_check),
    nn.AvgPool2d: Rule(_avgpool_forward, _avgpool_backward, ranks=(3,), check=_pool_check),
    nn.Flatten: Rule(_flatten_forward, _flatten_backward, keeps_rank=False),
    nn.Dropout: Rule(_identity_forward, _identity_backward),
    Select: Rule(_select_forward, _select_backward, ranks=(1,), features=lambda m: m.n_in),
}


def _checked(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """The modules as a list, each of a type in RULES (else TypeError) with settings its rule
    covers (else ValueError)."""
    modules = list(modules)
    supported = ", ".join(t.__name__ for t in RULES)
    for position, module in enumerate(modules):
        if type(module) not in RULES:  # exact type: a subclass may compute something else
            raise TypeError(f"unsupported module {type(module).__name__} at position {position}; "
                            f"the sweep supports {supported}")
        if RULES[type(module)].check is not None:
            RULES[type(module)].check(module)
    return modules


def chain(model: nn.Module) -> list[nn.Module]:
    """The modules of an nn.Sequential in order, each checked to have a rule in RULES."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an MLP or nn.Sequential, got {type(model).__name__}")
    return _checked(model)


def _is_batched(modules: list[nn.Module], shape: tuple[int, ...],
                input_shape: Sequence[int] | None) -> bool:
    """Whether a box of `shape` is a batch of boxes: by `input_shape` when given, else by the
    input rank the first rank-fixing module takes (as torch: a Linear takes (n,) or (batch, n),
    a Conv2d (C, H, W) or (batch, C, H, W)); a chain that starts with Flatten takes a batch,
    as torch's Flatten does, unless the box is 1-d."""
    if input_shape is not None:
        if shape == tuple(input_shape):
            return False
        if shape[1:] == tuple(input_shape):
            return True
        raise ValueError(f"box has shape {shape}; input_shape {tuple(input_shape)} asks for "
                         f"{tuple(input_shape)} or (batch, *{tuple(input_shape)})")
    for position, module in enumerate(modules):
        rule = RULES[type(module)]
        if rule.ranks is not None:
            if len(shape) - 1 in rule.ranks:
                return True
            if len(shape) in rule.ranks:
                return False
            raise ValueError(f"box has shape {shape} but module {position} "
                             f"({type(module).__name__}) takes inputs with "
                             f"{' or '.join(map(str, rule.ranks))} dimension(s), plus an "
                             f"optional batch dimension")
        if not rule.keeps_rank:
            break
    return len(shape) >= 2


def _check_input(position: int, module: nn.Module, shape: tuple[int, ...]) -> None:
    """ValueError unless one input of `shape` (batch excluded) fits module `position`."""
    rule = RULES[type(module)]
    name = f"module {position} ({type(module).__name__})"
    if rule.ranks is not None and len(shape) not in rule.ranks:
        raise ValueError(f"{name} takes inputs with {' or '.join(map(str, rule.ranks))} "
                         f"dimension(s) (batch excluded), got shape {shape}")
    if rule.features is not None and shape[0] != rule.features(module):
        raise ValueError(f"{name} takes {rule.features(module)} features/channels in its "
                         f"first dimension, got shape {shape}")


def _dtype(modules: list[nn.Module], box: Interval) -> torch.dtype:
    """The promoted dtype of the box and every floating parameter and buffer."""
    dtype = box.dtype
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


@torch.no_grad()
def sweep(modules: Sequence[nn.Module], box: Interval, seed: Seed = "per_output",
          lowest: int = 0, input_shape: Sequence[int] | None = None) -> Sweep:
    """Interval forward + reverse sweep of a chain of modules (an nn.Sequential or a list) over
    `box`, one input box (*input_shape) or a batch of them (batch, *input_shape).

    values[i] encloses module i's input (values[-1] the output) and, for i >= lowest,
    adjoints[i] the derivatives of the outputs with respect to it: "per_output" seeds each output
    y_k separately (k = number of outputs, adjoints[i][..., k, ...] = ∂y_k/∂values[i]), "sum"
    seeds all outputs with 1 at once (k = 1, ∂(Σ_k y_k)/∂values[i]). lowest=0 reaches the input.
    Shapes are (batch, *shape_i) and (batch, k, *shape_i), without the batch dimension for an
    unbatched box. `input_shape` (one input's shape) settles whether the box is batched; without
    it, torch's rule decides: a box with one dimension more than the first module takes is a
    batch (Linear: (n,) or (batch, n); Conv2d: (C, H, W) or (batch, C, H, W)), and a chain that
    starts with Flatten takes a batch unless the box is 1-d. Works in the promoted dtype of box,
    parameters and buffers.
    """
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose from {list(SEEDS)}")
    if not isinstance(box, Interval):
        raise TypeError(f"box must be an Interval, got {type(box).__name__}")
    modules = chain(modules) if isinstance(modules, nn.Module) else _checked(modules)
    if isinstance(lowest, bool) or not isinstance(lowest, int) or not 0 <= lowest <= len(modules):
        raise ValueError(f"lowest must be an integer in [0, {len(modules)}], got {lowest!r}")
    batched = _is_batched(modules, tuple(box.shape), input_shape)
    x = box.to(_dtype(modules, box))
    values = [x if batched else x[None]]  # (batch, *input_shape)
    for position, module in enumerate(modules):
        _check_input(position, module, tuple(values[-1].shape[1:]))
        values.append(RULES[type(module)].forward(module, values[-1]))

    out_shape = values[-1].shape[1:]
    n_out = math.prod(out_shape)
    start = (torch.eye(n_out, dtype=x.dtype, device=x.lower.device) if seed == "per_output"
             else torch.ones(1, n_out, dtype=x.dtype, device=x.lower.device))
    adjoints: list[Interval | None] = [None] * len(values)
    adjoints[-1] = Interval.point(start.reshape(1, len(start), *out_shape))  # (1, k, *out)
    for i in range(len(modules) - 1, lowest - 1, -1):
        adjoints[i] = RULES[type(modules[i])].backward(modules[i], values[i], adjoints[i + 1])

    def shaped(adjoint: Interval | None, value: Interval) -> Interval | None:
        """Give every adjoint the batch dimension, where no batch-dependent rule brought it in."""
        if adjoint is None:
            return None
        adjoint = adjoint.expand(len(value), adjoint.shape[1], *value.shape[1:])
        return adjoint if batched else adjoint[0]

    return Sweep([v if batched else v[0] for v in values],
                 [shaped(a, v) for a, v in zip(adjoints, values, strict=True)])


@torch.no_grad()
def interval_sweep(model: nn.Module, box: Interval, seed: Seed = "per_output",
                   measure: Measure = "pre") -> list[LayerBounds]:
    """Interval forward + reverse sweep of an MLP over `box` (n_in,) or (batch, n_in): one
    LayerBounds per hidden layer (every Linear but the last), value and adjoint of the outputs
    taken before the activation (measure="pre": z) or after it (measure="post": a = φ(z); a
    hidden Linear that no activation follows has a = z).

    seed="per_output" seeds each output y_k separately (adjoint (n_out, n) = ∂y_k/∂z);
    seed="sum" seeds all outputs with 1 at once (adjoint (n,) = ∂(Σ_k y_k)/∂z).
    Works in the promoted dtype of box and weights (float64 boxes/models give float64 bounds).
    """
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose from {list(SEEDS)}")
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {list(MEASURES)}")
    if not isinstance(box, Interval):
        raise TypeError(f"box must be an Interval, got {type(box).__name__}")
    modules = chain(model)
    linear_at = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    if not linear_at:
        raise ValueError("the model has no Linear layer")
    n_in = modules[linear_at[0]].in_features
    if box.lower.ndim not in (1, 2) or box.shape[-1] != n_in:
        raise ValueError(f"box must have shape ({n_in},) or (batch, {n_in}) for this model, "
                         f"got {tuple(box.shape)}")
    hidden = linear_at[:-1]
    if not hidden:
        return []
    if measure == "post":  # each hidden neuron is read at the output of its activation
        hidden = [i + 1 if not isinstance(modules[i + 1], nn.Linear) else i for i in hidden]
    result = sweep(modules, box, seed, lowest=hidden[0] + 1, input_shape=box.shape[-1:])
    bounds = []
    for i in hidden:  # module i's output is values[i + 1]
        adjoint = result.adjoints[i + 1]
        bounds.append(LayerBounds(result.values[i + 1],
                                  adjoint[..., 0, :] if seed == "sum" else adjoint))
    return bounds
