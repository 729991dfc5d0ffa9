"""Interval: an immutable box [lower, upper] of same-shaped tensors and its arithmetic.

Every rule encloses the exact image of the box (up to floating-point rounding, which is not
directed outward: the bounds are tight to a few ulps, not machine-verified). Each soundness-critical
rule lives in exactly one place with its formula in the docstring:

- affine map (`linear`): centre/radius form, c' = c Wᵀ + b, r' = r |W|ᵀ; the same form for a
  convolution (`conv2d`, c' = conv(c, W) + b, r' = conv(r, |W|)) and its transpose
  (`conv_transpose2d`);
- monotone maps (`monotone`, e.g. pooling): [f(lo), f(hi)];
- interval product (`__mul__`): min/max of the four endpoint products;
- ReLU (`relu`) and its derivative range (`relu_derivative`);
- sigmoid/tanh (monotone endpoints) and their derivative ranges (even, peak at 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

# Rounded bounds within TIE_ULPS ulps (of the largest magnitude involved) of a tie count as
# possibly tied: the margin of the ReLU derivative and of the max-pool routing.
TIE_ULPS = 2**10


@dataclass(frozen=True)
class Interval:
    """The box {x : lower <= x <= upper} (elementwise); shapes and dtypes must agree, no NaN."""

    lower: Tensor
    upper: Tensor

    def __post_init__(self):
        lo, hi = self.lower, self.upper
        if not isinstance(lo, Tensor) or not isinstance(hi, Tensor):
            raise TypeError(f"Interval bounds must be tensors, got {type(lo).__name__} "
                            f"and {type(hi).__name__}")
        if lo.shape != hi.shape or lo.dtype != hi.dtype:
            raise ValueError(f"Interval bounds differ: lower {tuple(lo.shape)} {lo.dtype}, "
                             f"upper {tuple(hi.shape)} {hi.dtype}")
        if not lo.is_floating_point():
            raise TypeError(f"Interval bounds must be floating point, got {lo.dtype}")
        # One fused check: a comparison with NaN is False, so this also rejects NaN.
        if not bool((lo <= hi).all()):
            if bool(lo.isnan().any() or hi.isnan().any()):
                raise ValueError("Interval bounds contain NaN")
            worst = (lo - hi).max().item()
            raise ValueError(f"Interval needs lower <= upper; lower exceeds upper by {worst:g}")

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def point(cls, x: Tensor) -> Interval:
        """The degenerate box [x, x]."""
        return cls(x, x)

    @classmethod
    def from_centre_radius(cls, centre: Tensor, radius: Tensor) -> Interval:
        """[centre - radius, centre + radius]; radius must be >= 0."""
        return cls(centre - radius, centre + radius)

    @classmethod
    def _ordered(cls, lower: Tensor, upper: Tensor) -> Interval:
        """The box of bounds a rule computed in an order that keeps lower <= upper (c - r and
        c + r with r >= 0, sums of lower and of upper bounds, the min and max of products,
        monotone maps): rounding to nearest is monotone, so the rounded bounds keep their order,
        and the check on creation (a full pass over both bounds, ~15 % of a ResNet's sweep) is
        skipped. NaN bounds are caught where a sweep starts (its box) and where its scores end."""
        result = object.__new__(cls)
        object.__setattr__(result, "lower", lower)
        object.__setattr__(result, "upper", upper)
        return result

    @classmethod
    def _centred(cls, centre: Tensor, radius: Tensor) -> Interval:
        """[centre - radius, centre + radius] of a rule's radius (>= 0 by construction)."""
        return cls._ordered(centre - radius, centre + radius)

    # ---- shape and derived quantities -----------------------------------------------------

    @property
    def shape(self) -> torch.Size:
        return self.lower.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.lower.dtype

    @property
    def width(self) -> Tensor:
        """upper - lower."""
        return self.upper - self.lower

    @property
    def mid(self) -> Tensor:
        """(lower + upper) / 2."""
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        """(upper - lower) / 2."""
        return (self.upper - self.lower) / 2

    @property
    def magnitude(self) -> Tensor:
        """max(|lower|, |upper|): the largest absolute value in the box."""
        return torch.maximum(self.lower.abs(), self.upper.abs())

    def _rearranged(self, f: Callable[[Tensor], Tensor]) -> Interval:
        """The box with both bounds rearranged by f (an index, a reshape, a transpose, an
        expand): each bound pair of the result is a pair of this checked box, so lower <= upper
        still holds and the check on creation is skipped (it would cost a full pass)."""
        result = object.__new__(Interval)
        object.__setattr__(result, "lower", f(self.lower))
        object.__setattr__(result, "upper", f(self.upper))
        return result

    @property
    def mT(self) -> Interval:  # noqa: N802 (torch's name for the batched transpose)
        """Transpose of the last two dimensions."""
        return self._rearranged(lambda t: t.mT)

    def __getitem__(self, index) -> Interval:
        return self._rearranged(lambda t: t[index])

    def __len__(self) -> int:
        return len(self.lower)

    def reshape(self, *shape: int) -> Interval:
        """The same box with both bounds reshaped (as Tensor.reshape)."""
        return self._rearranged(lambda t: t.reshape(*shape))

    def expand(self, *shape: int) -> Interval:
        """The box repeated along dimensions of size 1 (as Tensor.expand: a view)."""
        return self._rearranged(lambda t: t.expand(*shape))

    def to(self, dtype: torch.dtype) -> Interval:
        """The same box with bounds cast to `dtype`."""
        return Interval(self.lower.to(dtype), self.upper.to(dtype))

    def contains(self, x: Tensor | float, tol: float = 0.0) -> Tensor:
        """Elementwise lower - tol <= x <= upper + tol (a bool tensor; use .all() for the box)."""
        return (self.lower - tol <= x) & (x <= self.upper + tol)

    # ---- arithmetic -----------------------------------------------------------------------

    def __add__(self, other: Interval | Tensor | float) -> Interval:
        """[a] + [b] = [a.lo + b.lo, a.hi + b.hi]; a point is a degenerate interval."""
        if isinstance(other, Interval):
            return Interval._ordered(self.lower + other.lower, self.upper + other.upper)
        return Interval._ordered(self.lower + other, self.upper + other)

    __radd__ = __add__

    def __neg__(self) -> Interval:
        """-[a] = [-a.hi, -a.lo]."""
        return Interval(-self.upper, -self.lower)

    def __sub__(self, other: Interval | Tensor | float) -> Interval:
        """a - b = a + (-b)."""
        return self + (-other)

    def __rsub__(self, other: Tensor | float) -> Interval:
        """b - a = (-a) + b."""
        return (-self) + other

    def __mul__(self, other: Interval | Tensor | float) -> Interval:
        """[a] * [b] = [min, max] of {a.lo b.lo, a.lo b.hi, a.hi b.lo, a.hi b.hi}.

        A tensor or scalar t is the degenerate interval [t, t] (then two products suffice).
        """
        if isinstance(other, Interval):
            products = (self.lower * other.lower, self.lower * other.upper,
                        self.upper * other.lower, self.upper * other.upper)
            return Interval._ordered(torch.minimum(torch.minimum(products[0], products[1]),
                                                   torch.minimum(products[2], products[3])),
                                     torch.maximum(torch.maximum(products[0], products[1]),
                                                   torch.maximum(products[2], products[3])))
        if not isinstance(other, Tensor | Real):
            return NotImplemented
        a, b = self.lower * other, self.upper * other
        return Interval._ordered(torch.minimum(a, b), torch.maximum(a, b))

    __rmul__ = __mul__

    def times_nonnegative(self, factor: Interval) -> Interval:
        """[a] * [d] for a factor with d.lower >= 0 (the derivative range of a non-decreasing
        activation): x t is linear in t >= 0 and in x, so over the box it lies between
        min(a.lo d.lo, a.lo d.hi) and max(a.hi d.lo, a.hi d.hi) — the same bounds as the
        general product (`__mul__`) with half of its comparisons."""
        return Interval._ordered(torch.minimum(self.lower * factor.lower,
                                               self.lower * factor.upper),
                                 torch.maximum(self.upper * factor.lower,
                                               self.upper * factor.upper))

    def linear(self, weight: Tensor, bias: Tensor | None = None,
               abs_weight: Tensor | None = None) -> Interval:
        """[x] Wᵀ + b for a point matrix W (out, in), as in nn.Linear, in centre/radius form.

        c' = c Wᵀ + b, r' = r |W|ᵀ: the exact image of the box (every output coordinate
        attains c' ± r' at some corner). `abs_weight` may pass |W| when it is already known.
        """
        centre = self.mid @ weight.mT
        if bias is not None:
            centre = centre + bias
        radius = self.radius @ (weight.abs() if abs_weight is None else abs_weight).mT
        return Interval._centred(centre, radius)

    def conv2d(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
               dilation=1, groups: int = 1) -> Interval:
        """conv([x], W) + b for a point kernel W (out, in / groups, kh, kw), as F.conv2d, in
        centre/radius form: c' = conv(c, W) + b, r' = conv(r, |W|).

        Exact image of the box: each output is a linear form of the inputs in which every input
        appears at most once, with a single kernel entry w as coefficient, so its range is
        c' ± Σ |w| r. Zero padding pads the box with [0, 0] (c = r = 0).
        """
        conv = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        return Interval._centred(F.conv2d(self.mid, weight, bias, **conv),
                                 F.conv2d(self.radius, weight.abs(), None, **conv))

    def conv_transpose2d(self, weight: Tensor, stride=1, padding=0, output_padding=0,
                         dilation=1, groups: int = 1) -> Interval:
        """convᵀ([x], W) for a point kernel W, as F.conv_transpose2d (no bias), in centre/radius
        form: c' = convᵀ(c, W), r' = convᵀ(r, |W|).

        Exact image for the same reason as `conv2d`: convᵀ is the transposed matrix of a
        convolution, whose entries are single kernel entries (or 0), so |convᵀ| = convᵀ with |W|.
        """
        conv = {"stride": stride, "padding": padding, "output_padding": output_padding,
                "dilation": dilation, "groups": groups}
        return Interval._centred(F.conv_transpose2d(self.mid, weight, **conv),
                                 F.conv_transpose2d(self.radius, weight.abs(), **conv))

    def monotone(self, f: Callable[[Tensor], Tensor]) -> Interval:
        """[f(lo), f(hi)] for f non-decreasing in every input coordinate (max or average
        pooling, a reshape): x <= x' elementwise implies f(x) <= f(x'), so every point of the box
        maps between the images of its corners lo and hi. Exact when f is a max or a sum with
        non-negative weights of separate coordinates (each output attains both ends)."""
        return Interval._ordered(f(self.lower), f(self.upper))

    def __matmul__(self, matrix: Tensor) -> Interval:
        """[x] @ M = [x] (Mᵀ)ᵀ: the affine rule of `linear` without bias."""
        return self.linear(matrix.mT)

    def __rmatmul__(self, matrix: Tensor) -> Interval:
        """M @ [x] = ([x]ᵀ Mᵀ)ᵀ; for a vector [x], M @ [x] = [x] Mᵀ."""
        if self.lower.ndim == 1:
            return self.linear(matrix)
        return self.mT.linear(matrix).mT

    # ---- activations and their derivative ranges ----------------------------------------

    def relu(self) -> Interval:
        """ReLU is monotone: [max(lo, 0), max(hi, 0)] (the lower bound is clipped at 0)."""
        return Interval._ordered(self.lower.clamp_min(0), self.upper.clamp_min(0))

    def sigmoid(self) -> Interval:
        """sigmoid is increasing: [σ(lo), σ(hi)]."""
        return Interval(torch.sigmoid(self.lower), torch.sigmoid(self.upper))

    def tanh(self) -> Interval:
        """tanh is increasing: [tanh(lo), tanh(hi)]."""
        return Interval(torch.tanh(self.lower), torch.tanh(self.upper))

    def relu_derivative(self) -> Interval:
        """Range of ReLU'(z) = 1[z > 0] (torch's convention, ReLU'(0) = 0) over the box.

        {1} if lo > δ, {0} if hi <= 0, [0, 1] otherwise, with δ = 2¹⁰ ε · max(|lo|, |hi|).
        The bounds are rounded, not directed outward, and a bound of exactly 0 is common: a
        unit without bias (or a zero one) at a box corner whose inputs are 0 (pixels, ReLU
        outputs) is exactly 0 there in torch's point computation, so ReLU' = 0, while its
        computed lo = c - r may come out an ulp above 0 (c and r are sums of the same products
        in another order). δ admits that 0: far above the few ulps of max(|lo|, |hi|) the bound
        is off by at such a tie, far below any lo that is not one. The {0} test needs no
        margin: at such a tie torch's point value is exactly 0, whose derivative is 0 too. A
        point box [z, z] keeps torch's derivative exactly (z > δ whenever z > 0); a degenerate
        box at the kink, [0, 0], gives {0}.
        """
        margin = TIE_ULPS * torch.finfo(self.dtype).eps * self.magnitude
        return Interval((self.lower > margin).to(self.dtype), (self.upper > 0).to(self.dtype))

    def sigmoid_derivative(self) -> Interval:
        """Range of σ'(z) = σ(z)(1 - σ(z)) over the box (even, peak 1/4 at 0, falls with |z|)."""
        return self._even_peaked_range(_sigmoid_grad, 0.25)

    def tanh_derivative(self) -> Interval:
        """Range of tanh'(z) = 1 - tanh(z)² over the box (even, peak 1 at 0, falls with |z|)."""
        return self._even_peaked_range(_tanh_grad, 1.0)

    def _even_peaked_range(self, grad: Callable[[Tensor], Tensor], peak: float) -> Interval:
        """Range of an even f decreasing in |z|: min at an endpoint; max = f(0) if 0 is inside,
        else at an endpoint. Endpoints are evaluated as torch's backward does, so a degenerate
        box reproduces autograd's value exactly."""
        at_lo, at_hi = grad(self.lower), grad(self.upper)
        straddles = (self.lower <= 0) & (self.upper >= 0)
        top = torch.where(straddles, peak, torch.maximum(at_lo, at_hi))
        return Interval(torch.minimum(at_lo, at_hi), top)


def _sigmoid_grad(z: Tensor) -> Tensor:
    """σ'(z) computed as torch's sigmoid backward does: y (1 - y) with y = σ(z)."""
    y = torch.sigmoid(z)
    return (1 - y) * y


def _tanh_grad(z: Tensor) -> Tensor:
    """tanh'(z) computed as torch's tanh backward does: 1 - y² with y = tanh(z)."""
    y = torch.tanh(z)
    return 1 - y * y
