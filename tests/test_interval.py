"""Interval: construction checks, arithmetic, activations and their derivative ranges.

Property tests draw random boxes and random points inside them (float64) and check that the
image of every point lies in the image of the box. The bounds are computed by different
floating-point operations than the point values (e.g. centre/radius instead of x @ W), so the two
may disagree by a few ulps; `TOL` (1e-9 relative in float64, some 10⁷ ulps, far below any
meaningful looseness) absorbs that rounding and nothing else.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from iaprune.interval import Interval

TOL = 1e-9
D = torch.float64


def tol_for(*tensors: torch.Tensor) -> float:
    """TOL relative to the magnitude of the numbers compared (at least absolute TOL)."""
    return TOL * max(1.0, *(t.abs().max().item() for t in tensors))


def iv(lower, upper) -> Interval:
    return Interval(torch.tensor(lower, dtype=D), torch.tensor(upper, dtype=D))


def random_box(seed: int, shape: tuple[int, ...], degenerate: bool = False) -> Interval:
    g = torch.Generator().manual_seed(seed)
    centre = 4 * torch.rand(shape, generator=g, dtype=D) - 2
    radius = torch.zeros(shape, dtype=D) if degenerate else 2 * torch.rand(shape, generator=g,
                                                                             dtype=D)
    return Interval.from_centre_radius(centre, radius)


def points_in(box: Interval, n: int, seed: int) -> torch.Tensor:
    """n points of the box (n, *shape): half uniform, half random corners (where extremes live)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((n, *box.shape), generator=g, dtype=D)
    u[: n // 2] = u[: n // 2].round()
    return box.lower + u * box.width


def assert_encloses(box: Interval, values: torch.Tensor) -> None:
    assert bool(box.contains(values, tol_for(box.lower, box.upper, values)).all())


# ---- construction ---------------------------------------------------------------------------

def test_lower_above_upper_is_rejected():
    """An interval with lower > upper anywhere is a ValueError."""
    with pytest.raises(ValueError, match="lower <= upper"):
        iv([0.0, 2.0], [1.0, 1.0])


def test_nan_is_rejected():
    """A NaN bound is a ValueError, not a silent empty box."""
    with pytest.raises(ValueError, match="NaN"):
        iv([0.0, float("nan")], [1.0, 1.0])


def test_mismatched_bounds_are_rejected():
    """Bounds of different shapes or dtypes are a ValueError."""
    with pytest.raises(ValueError, match="differ"):
        Interval(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="differ"):
        Interval(torch.zeros(2), torch.ones(2, dtype=D))


def test_non_float_bounds_are_rejected():
    """Bounds must be floating-point tensors (TypeError otherwise)."""
    with pytest.raises(TypeError):
        Interval([0.0], [1.0])
    with pytest.raises(TypeError):
        Interval(torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64))


def test_interval_is_immutable():
    """An Interval is a frozen value."""
    box = iv([0.0], [1.0])
    with pytest.raises(AttributeError):
        box.lower = torch.ones(1)


def test_width_mid_radius_magnitude():
    """[-1, 3] has width 4, midpoint 1, radius 2 and magnitude 3."""
    box = iv([-1.0, -5.0], [3.0, -2.0])
    assert box.width.tolist() == [4.0, 3.0]
    assert box.mid.tolist() == [1.0, -3.5]
    assert box.radius.tolist() == [2.0, 1.5]
    assert box.magnitude.tolist() == [3.0, 5.0]


def test_contains_is_elementwise_and_closed():
    """contains is true on the closed box, false outside, elementwise."""
    box = iv([0.0, 0.0], [1.0, 1.0])
    assert box.contains(torch.tensor([1.0, 0.5], dtype=D)).tolist() == [True, True]
    assert box.contains(torch.tensor([1.5, -0.1], dtype=D)).tolist() == [False, False]


# ---- arithmetic -----------------------------------------------------------------------------

def test_product_takes_min_and_max_of_four_products():
    """[-1, 2] * [-3, 1] = [-6, 3] (from the products 3, -1, -6, 2)."""
    product = iv([-1.0], [2.0]) * iv([-3.0], [1.0])
    assert (product.lower.item(), product.upper.item()) == (-6.0, 3.0)


def test_negative_scalar_product_flips_bounds():
    """-2 * [1, 3] = [-6, -2]; scalars work on either side."""
    for product in (iv([1.0], [3.0]) * -2.0, -2.0 * iv([1.0], [3.0])):
        assert (product.lower.item(), product.upper.item()) == (-6.0, -2.0)


def test_subtraction_is_addition_of_the_negation():
    """[1, 2] - [0, 3] = [-2, 2] and 5 - [1, 2] = [3, 4]."""
    diff = iv([1.0], [2.0]) - iv([0.0], [3.0])
    assert (diff.lower.item(), diff.upper.item()) == (-2.0, 2.0)
    rdiff = 5.0 - iv([1.0], [2.0])
    assert (rdiff.lower.item(), rdiff.upper.item()) == (3.0, 4.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), op=st.sampled_from(["add", "sub", "mul", "tmul"]))
def test_arithmetic_encloses_pointwise_results(seed, op):
    """For points a in [a], b in [b]: a op b lies in [a] op [b] (interval or tensor operand)."""
    a, b = random_box(seed, (5,)), random_box(seed + 1, (5,))
    pa, pb = points_in(a, 64, seed), points_in(b, 64, seed + 2)
    t = torch.randn(5, generator=torch.Generator().manual_seed(seed), dtype=D)
    result, values = {
        "add": (a + b, pa + pb),
        "sub": (a - b, pa - pb),
        "mul": (a * b, pa * pb),
        "tmul": (a * t, pa * t),
    }[op]
    assert_encloses(result, values)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_linear_map_is_exact_over_the_corners(seed):
    """[x] Wᵀ + b by centre/radius is the exact image: its bounds are attained at box corners."""
    box = random_box(seed, (3,))
    g = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(4, 3, generator=g, dtype=D), torch.randn(4, generator=g, dtype=D)
    image = box.linear(weight, bias)
    corners = torch.stack([torch.where(torch.tensor(c), box.upper, box.lower)
                           for c in itertools.product([False, True], repeat=3)])
    values = corners @ weight.T + bias  # (8, 4)
    torch.testing.assert_close(image.lower, values.min(0).values, rtol=TOL, atol=TOL)
    torch.testing.assert_close(image.upper, values.max(0).values, rtol=TOL, atol=TOL)


def test_matmul_on_either_side_agrees_with_linear():
    """[x] @ M, M @ [x] (vector) and M @ [X] (matrix) are the same affine rule."""
    box = random_box(3, (3,))
    m = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=D)
    right, left = box @ m, m.T @ box
    torch.testing.assert_close(right.lower, left.lower)
    torch.testing.assert_close(right.upper, left.upper)
    columns = m.T @ Interval(box.lower[:, None], box.upper[:, None])  # (4, 1)
    torch.testing.assert_close(columns.lower[:, 0], right.lower)


convolutions = st.tuples(
    st.integers(0, 2**31 - 1),  # seed of kernel, bias and box
    st.integers(1, 3), st.integers(1, 3),  # kernel height, width
    st.integers(1, 2), st.integers(0, 2), st.integers(1, 2),  # stride, padding, dilation
    st.sampled_from([(1, 2, 1), (2, 4, 1), (2, 4, 2)]),  # (in channels, out channels, groups)
)


def conv_case(case) -> tuple[Interval, torch.Tensor, torch.Tensor, dict]:
    """A random (2, C, 5, 6) box, kernel, bias and conv settings."""
    seed, kh, kw, stride, padding, dilation, (c_in, c_out, groups) = case
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=D)
    bias = torch.randn(c_out, generator=g, dtype=D)
    return (random_box(seed, (2, c_in, 5, 6)), weight, bias,
            {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})


@settings(max_examples=30, deadline=None)
@given(case=convolutions)
def test_conv2d_is_the_exact_image_of_the_box(case):
    """conv2d in centre/radius form equals the exact affine rule (`linear`) applied with the
    convolution's dense matrix (its Jacobian): the same bounds, so it is sound and tight, and
    a width-0 box reproduces F.conv2d exactly."""
    box, weight, bias, conv = conv_case(case)
    image = box.conv2d(weight, bias, **conv)
    flat_in = box.shape[1:].numel()

    def f(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.reshape(1, *box.shape[1:]), weight, **conv).flatten()

    matrix = torch.autograd.functional.jacobian(f, torch.zeros(flat_in, dtype=D))
    dense = box.reshape(2, flat_in).linear(matrix, bias.repeat_interleave(
        image.shape[2:].numel()))
    torch.testing.assert_close(image.lower.flatten(1), dense.lower, rtol=TOL, atol=TOL)
    torch.testing.assert_close(image.upper.flatten(1), dense.upper, rtol=TOL, atol=TOL)
    point = Interval.point(box.lower).conv2d(weight, bias, **conv)
    assert torch.equal(point.lower, F.conv2d(box.lower, weight, bias, **conv))
    assert torch.equal(point.upper, point.lower)


@settings(max_examples=30, deadline=None)
@given(case=convolutions)
def test_conv_transpose2d_is_the_exact_image_of_the_box(case):
    """conv_transpose2d in centre/radius form equals `linear` with the transposed convolution's
    dense matrix (sound and tight); a width-0 box reproduces F.conv_transpose2d exactly."""
    box, weight, _, conv = conv_case(case)
    box = box.reshape(2, weight.shape[0], 5, 3)  # convᵀ maps the conv's output channels back
    conv = {**conv, "padding": 0, "output_padding": conv["stride"] - 1}  # the largest allowed
    image = box.conv_transpose2d(weight, **conv)
    flat_in = box.shape[1:].numel()

    def f(x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x.reshape(1, *box.shape[1:]), weight, **conv).flatten()

    matrix = torch.autograd.functional.jacobian(f, torch.zeros(flat_in, dtype=D))
    dense = box.reshape(2, flat_in).linear(matrix)
    torch.testing.assert_close(image.lower.flatten(1), dense.lower, rtol=TOL, atol=TOL)
    torch.testing.assert_close(image.upper.flatten(1), dense.upper, rtol=TOL, atol=TOL)
    point = Interval.point(box.lower).conv_transpose2d(weight, **conv)
    assert torch.equal(point.lower, F.conv_transpose2d(box.lower, weight, **conv))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), pool=st.sampled_from(["max", "avg"]))
def test_monotone_pooling_encloses_points_and_is_attained_at_the_corners(seed, pool):
    """Max and average pooling are non-decreasing: [f(lo), f(hi)] holds f(x) for every x in the
    box, and its ends are the images of the corners lo and hi."""
    box = random_box(seed, (2, 5, 5))
    f = {"max": lambda t: F.max_pool2d(t, 2, 1), "avg": lambda t: F.avg_pool2d(t, 3, 2, 1)}[pool]
    image = box.monotone(f)
    assert_encloses(image, f(points_in(box, 32, seed)))
    assert torch.equal(image.lower, f(box.lower)) and torch.equal(image.upper, f(box.upper))


def test_rearranging_moves_both_bounds_alike():
    """Indexing, reshape, expand and mT move lower and upper bounds together."""
    box = random_box(0, (2, 3))
    for result, f in ((box[1:], lambda t: t[1:]), (box.reshape(3, 2), lambda t: t.reshape(3, 2)),
                      (box[None].expand(4, 2, 3), lambda t: t[None].expand(4, 2, 3)),
                      (box.mT, lambda t: t.mT)):
        assert isinstance(result, Interval)
        assert torch.equal(result.lower, f(box.lower)) and torch.equal(result.upper,
                                                                       f(box.upper))


# ---- activations ----------------------------------------------------------------------------

def test_relu_clips_the_lower_bound_at_zero():
    """relu([-2, 3]) = [0, 3] and relu([-2, -1]) = [0, 0]."""
    out = iv([-2.0, -2.0], [3.0, -1.0]).relu()
    assert out.lower.tolist() == [0.0, 0.0] and out.upper.tolist() == [3.0, 0.0]


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_activation_encloses_pointwise_values(name, seed):
    """φ(z) for z in [z] lies in φ([z]) for ReLU, sigmoid and tanh."""
    box = random_box(seed, (6,))
    assert_encloses(getattr(box, name)(), getattr(torch, name)(points_in(box, 64, seed)))


@pytest.mark.parametrize("lower, upper, expected", [
    (1.0, 2.0, (1.0, 1.0)),  # active
    (-2.0, -1.0, (0.0, 0.0)),  # dead
    (-1.0, 2.0, (0.0, 1.0)),  # straddling
    (-1.0, 0.0, (0.0, 0.0)),  # hi = 0: ReLU'(0) = 0 in torch, so the neuron is dead
    (0.0, 1.0, (0.0, 1.0)),  # lo = 0 is a point with derivative 0
    (0.0, 0.0, (0.0, 0.0)),  # degenerate at the kink: torch's derivative there is 0
])
def test_relu_derivative_range(lower, upper, expected):
    """ReLU' over a box is {1}, {0} or [0, 1], with torch's ReLU'(0) = 0 convention."""
    d = iv([lower], [upper]).relu_derivative()
    assert (d.lower.item(), d.upper.item()) == expected


def test_relu_derivative_at_the_kink_matches_autograd():
    """At z = 0 exactly, autograd's ReLU derivative (0) lies in the degenerate range."""
    z = torch.zeros(1, dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(torch.relu(z).sum(), z)
    assert bool(Interval.point(z.detach()).relu_derivative().contains(grad).all())


def sigmoid_grad(z: float) -> float:
    s = torch.sigmoid(torch.tensor(z, dtype=D))
    return (s * (1 - s)).item()


@pytest.mark.parametrize("lower, upper, expected", [
    (-1.0, 2.0, (sigmoid_grad(2.0), 0.25)),  # contains 0: peak 1/4
    (1.0, 2.0, (sigmoid_grad(2.0), sigmoid_grad(1.0))),  # right of 0: decreasing
    (-3.0, -1.0, (sigmoid_grad(-3.0), sigmoid_grad(-1.0))),  # left of 0: increasing
])
def test_sigmoid_derivative_true_range(lower, upper, expected):
    """σ' over [lo, hi] peaks at 1/4 when 0 is inside, else lies between the endpoint values."""
    d = iv([lower], [upper]).sigmoid_derivative()
    assert d.lower.item() == pytest.approx(expected[0], rel=1e-12)
    assert d.upper.item() == pytest.approx(expected[1], rel=1e-12)


def test_tanh_derivative_true_range():
    """tanh' over [-0.5, 2] is [1 - tanh(2)², 1] (the peak at 0 counts)."""
    d = iv([-0.5], [2.0]).tanh_derivative()
    assert d.lower.item() == pytest.approx(1 - torch.tanh(torch.tensor(2.0, dtype=D)).item() ** 2)
    assert d.upper.item() == 1.0


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_derivative_range_encloses_autograd_and_is_tight(name, seed):
    """Autograd derivatives at points of [z] lie in φ'([z]); for sigmoid/tanh a dense grid
    comes within 1e-3 of both ends (the range is the true range, not a loose bound)."""
    box = random_box(seed, (4,))
    grid = box.lower + torch.linspace(0, 1, 2001, dtype=D)[:, None] * box.width  # (2001, 4)
    z = grid.clone().requires_grad_(True)
    (grads,) = torch.autograd.grad(getattr(torch, name)(z).sum(), z)
    d = getattr(box, f"{name}_derivative")()
    assert_encloses(d, grads)
    if name != "relu":
        torch.testing.assert_close(d.lower, grads.min(0).values, rtol=0, atol=1e-3)
        torch.testing.assert_close(d.upper, grads.max(0).values, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_degenerate_box_reproduces_torch(name):
    """On [z, z], φ and φ' collapse to one value: torch's value and autograd's derivative
    (up to an ulp: torch's vectorised kernels may round differently)."""
    z = torch.linspace(-3, 3, 13, dtype=D).requires_grad_(True)
    out = getattr(torch, name)(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    box = Interval.point(z.detach())
    value, derivative = getattr(box, name)(), getattr(box, f"{name}_derivative")()
    for bounds, expected in ((value, out.detach()), (derivative, grad)):
        assert torch.equal(bounds.lower, bounds.upper)
        torch.testing.assert_close(bounds.lower, expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_derivative_admits_zero_for_a_lower_bound_rounded_above_a_zero_tie(dtype):
    """A lower bound one ulp above 0, as rounding makes of a unit that is exactly 0 at a box
    corner (torch's ReLU' there: 0), gives [0, 1], not {1}."""
    one = torch.ones(1, dtype=dtype)
    lower = torch.nextafter(torch.zeros(1, dtype=dtype), one)  # the rounded 0
    d = Interval(lower, one).relu_derivative()
    assert (d.lower.item(), d.upper.item()) == (0.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_derivative_of_a_point_box_stays_torchs(dtype):
    """Point boxes just above 0, at 0 and just below keep autograd's derivative exactly."""
    zero, one = torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)
    z = torch.stack([torch.nextafter(zero[0], one[0]), zero[1], -torch.nextafter(zero[2], one[2])])
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.relu(z).sum(), z)
    d = Interval.point(z.detach()).relu_derivative()
    assert torch.equal(d.lower, grad) and torch.equal(d.upper, grad)
