"""Interval forward and reverse sweep: soundness against torch (the oracle), hand values, errors.

Soundness is checked in float64 with a tolerance of 1e-9 relative to the magnitude of the numbers
compared: the bounds come from centre/radius products, the point values from torch's own matmuls,
so the two round differently by a few ulps. That tolerance is some 10⁷ ulps: it absorbs rounding
only, and any real unsoundness (a missed sign, a wrong derivative range) is orders larger.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from src.adjoint import LayerBounds, interval_sweep
from src.interval import Interval
from src.model import MLP, build_model

TOL = 1e-9
D = torch.float64


def tol_for(*tensors: torch.Tensor) -> float:
    return TOL * max(1.0, *(t.abs().max().item() for t in tensors))


def point_values(model: nn.Sequential, x: torch.Tensor,
                 post: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per hidden layer: pre-activations z (P, n) and autograd Jacobians ∂y_k/∂z (P, K, n);
    with post, the activations' outputs a and ∂y_k/∂a instead."""
    linear_at = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    zs, h = [], x
    for i, module in enumerate(model):
        h = module(h)
        if (i - post) in linear_at[:-1]:  # MLPs put an activation after every hidden Linear
            zs.append(h)
    per_output = [torch.autograd.grad(h[:, k].sum(), zs, retain_graph=True)
                  for k in range(h.shape[1])]  # each row of the batch is its own point
    return [(z.detach(), torch.stack([g[layer] for g in per_output], dim=1))
            for layer, z in enumerate(zs)]


def random_box(g: torch.Generator, n_in: int, degenerate: bool) -> Interval:
    centre = 2 * torch.rand(n_in, generator=g, dtype=D) - 1
    radius = torch.zeros(n_in, dtype=D) if degenerate else torch.rand(n_in, generator=g, dtype=D)
    return Interval.from_centre_radius(centre, radius)


def points_in(box: Interval, n: int, g: torch.Generator) -> torch.Tensor:
    """n points: half random corners (where extremes are attained), half uniform inside."""
    u = torch.rand(n, box.shape[-1], generator=g, dtype=D)
    u[: n // 2] = u[: n // 2].round()
    return box.lower + u * box.width


def assert_encloses(box: Interval, values: torch.Tensor) -> None:
    tol = tol_for(box.lower, box.upper, values)
    inside = box.contains(values, tol)
    assert bool(inside.all()), f"{int((~inside).sum())} values outside their interval"


networks = st.tuples(
    st.sampled_from(["relu", "sigmoid", "tanh"]),
    st.lists(st.integers(1, 6), min_size=3, max_size=6),  # sizes: n_in, 1-4 hidden, n_out
    st.integers(0, 2**31 - 1),  # seed of weights, box and points
)


def check_sweep_encloses_points(network, seed_mode: str, measure: str) -> None:
    """Random MLP, box and 48 points in it: every point value and autograd derivative at the
    `measure` side of each hidden activation lies in its interval."""
    activation, sizes, seed = network
    model = build_model(sizes, activation, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights and biases make kinks and saturation likelier
        for p in model.parameters():
            p.mul_(2).add_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
    box = random_box(g, sizes[0], degenerate=False)
    bounds = interval_sweep(model, box, seed_mode, measure=measure)
    points = point_values(model, points_in(box, 48, g), post=measure == "post")
    assert len(bounds) == len(points) == len(sizes) - 2
    for (value, adjoint), (v, jac) in zip(bounds, points, strict=True):
        assert_encloses(value, v)
        assert_encloses(adjoint, jac if seed_mode == "per_output" else jac.sum(dim=1))


@settings(max_examples=300, deadline=None)
@given(network=networks, seed_mode=st.sampled_from(["per_output", "sum"]))
def test_point_values_and_derivatives_lie_in_the_intervals(network, seed_mode):
    """For random MLPs (ReLU, sigmoid, tanh; 1-4 hidden layers), boxes and points inside them,
    every point pre-activation z(x) and every autograd derivative ∂y_k/∂z(x) (or ∂Σy/∂z for
    seed="sum") lies in its interval."""
    check_sweep_encloses_points(network, seed_mode, "pre")


@settings(max_examples=150, deadline=None)
@given(network=networks, seed_mode=st.sampled_from(["per_output", "sum"]))
def test_post_activation_values_and_derivatives_lie_in_the_intervals(network, seed_mode):
    """measure="post": every point activation a(x) = φ(z(x)) and every autograd ∂y_k/∂a(x)
    lies in its interval."""
    check_sweep_encloses_points(network, seed_mode, "post")


@settings(max_examples=100, deadline=None)
@given(network=networks)
def test_degenerate_box_collapses_to_the_point_values(network):
    """On a box of width 0 the intervals have width 0 and equal torch's pre-activations and
    autograd's derivatives (for both seeds)."""
    activation, sizes, seed = network
    model = build_model(sizes, activation, seed=seed).double()
    box = random_box(torch.Generator().manual_seed(seed), sizes[0], degenerate=True)
    points = point_values(model, box.lower[None])
    for seed_mode in ("per_output", "sum"):
        for (value, adjoint), (z, jac) in zip(interval_sweep(model, box, seed_mode), points,
                                              strict=True):
            expected = jac[0] if seed_mode == "per_output" else jac[0].sum(dim=0)
            for bounds, point in ((value, z[0]), (adjoint, expected)):
                assert torch.equal(bounds.lower, bounds.upper)
                torch.testing.assert_close(bounds.lower, point, rtol=TOL, atol=TOL)


def test_degenerate_box_at_a_relu_kink_is_sound():
    """A point whose pre-activation is exactly 0 gets torch's ReLU'(0) = 0: adjoint [0, 0]."""
    model = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model[0].bias.zero_()
        model[2].weight.fill_(3.0)
    box = Interval.point(torch.tensor([0.5, 0.5], dtype=D))  # z = 0.5 - 0.5 = 0
    ((value, adjoint),) = interval_sweep(model, box)
    ((z, jac),) = point_values(model, box.lower[None])
    assert value.lower.item() == value.upper.item() == z.item() == 0.0
    assert adjoint.lower.item() == adjoint.upper.item() == jac.item() == 0.0


def two_two(out_rows: list[list[float]]) -> nn.Sequential:
    """W1 = [[1, -1], [2, 1]], b1 = [0, -1], ReLU, W2 = out_rows, b2 = 0.5."""
    model = MLP([2, 2, len(out_rows)]).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0]))
        model[2].weight.copy_(torch.tensor(out_rows))
        model[2].bias.fill_(0.5)
    return model


UNIT = Interval(torch.zeros(2, dtype=D), torch.ones(2, dtype=D))


def test_hand_computed_2_2_1_both_seeds():
    """On [0, 1]²: z1 = x1 - x2 ∈ [-1, 1], z2 = 2x1 + x2 - 1 ∈ [-1, 2]; both straddle, so
    ReLU' ∈ [0, 1] and with W2 = [1, -2] the adjoints are [0, 1] and [-2, 0] for either seed."""
    model = two_two([[1.0, -2.0]])
    for seed_mode, shape in (("per_output", (1, 2)), ("sum", (2,))):
        ((value, adjoint),) = interval_sweep(model, UNIT, seed_mode)
        assert value.lower.tolist() == [-1.0, -1.0] and value.upper.tolist() == [1.0, 2.0]
        assert adjoint.shape == shape
        assert adjoint.lower.flatten().tolist() == [0.0, -2.0]
        assert adjoint.upper.flatten().tolist() == [1.0, 0.0]


def test_hand_computed_2_2_2_seeds_differ():
    """With W2 = [[1, -2], [-1, 1]], per-output adjoints are [0,1],[-2,0] (y1) and [-1,0],[0,1]
    (y2); seeding the sum gives (1 - 1)·[0,1] = [0,0] and (-2 + 1)·[0,1] = [-1,0]."""
    model = two_two([[1.0, -2.0], [-1.0, 1.0]])
    ((_, per_output),) = interval_sweep(model, UNIT, "per_output")
    assert per_output.lower.tolist() == [[0.0, -2.0], [-1.0, 0.0]]
    assert per_output.upper.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    ((_, summed),) = interval_sweep(model, UNIT, "sum")
    assert summed.lower.tolist() == [0.0, -1.0] and summed.upper.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("seed_mode", ["per_output", "sum"])
def test_batch_of_boxes_equals_one_sweep_per_box(seed_mode):
    """A (batch, n_in) box gives, row by row, the bounds of sweeping each box alone."""
    model = build_model([5, 4, 3, 2], "tanh", seed=0).double()
    g = torch.Generator().manual_seed(1)
    boxes = Interval.from_centre_radius(torch.rand(3, 5, generator=g, dtype=D),
                                        0.1 * torch.rand(3, 5, generator=g, dtype=D))
    batched = interval_sweep(model, boxes, seed_mode)
    for b in range(3):
        for together, alone in zip(batched, interval_sweep(model, boxes[b], seed_mode),
                                   strict=True):
            for x, y in ((together.value, alone.value), (together.adjoint, alone.adjoint)):
                torch.testing.assert_close(x.lower[b], y.lower)
                torch.testing.assert_close(x.upper[b], y.upper)


def test_batch_dimension_is_kept_without_activations():
    """Even with no activation between a hidden layer and the output, batched adjoints are
    (batch, n_out, n)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    boxes = Interval(torch.zeros(5, 3), torch.ones(5, 3))
    ((value, adjoint),) = interval_sweep(model, boxes)
    assert value.shape == (5, 4) and adjoint.shape == (5, 2, 4)


def test_output_activation_is_swept_through():
    """A plain nn.Sequential ending in Sigmoid is accepted and stays sound at its outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid()).double()
    box = Interval(-torch.ones(3, dtype=D), torch.ones(3, dtype=D))
    ((value, adjoint),) = interval_sweep(model, box)
    ((z, jac),) = point_values(model, points_in(box, 64, torch.Generator().manual_seed(0)))
    assert_encloses(value, z)
    assert_encloses(adjoint, jac)


def test_sweep_returns_named_pairs_in_float64_when_the_box_is():
    """A float32 model swept over a float64 box gives float64 LayerBounds(value, adjoint)."""
    model = build_model([3, 2, 2], seed=0)
    (bounds,) = interval_sweep(model, Interval(torch.zeros(3, dtype=D), torch.ones(3, dtype=D)))
    assert isinstance(bounds, LayerBounds) and bounds.value.dtype == D
    assert bounds.adjoint.dtype == D


def test_no_hidden_layer_gives_no_bounds():
    """A single Linear has no hidden neurons."""
    assert interval_sweep(nn.Sequential(nn.Linear(3, 2)), Interval(torch.zeros(3),
                                                                   torch.ones(3))) == []


def test_unsupported_module_is_a_type_error_naming_it():
    """A module other than Linear/ReLU/Sigmoid/Tanh is refused by name, never skipped."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="Dropout"):
        interval_sweep(model, Interval(torch.zeros(3), torch.ones(3)))


def test_model_without_linear_layers_is_a_value_error():
    """A chain of activations alone has nothing to sweep."""
    with pytest.raises(ValueError, match="no Linear"):
        interval_sweep(nn.Sequential(nn.ReLU()), Interval(torch.zeros(3), torch.ones(3)))


def test_non_sequential_model_is_a_type_error():
    """Only chains (MLP / nn.Sequential) can be swept."""
    with pytest.raises(TypeError, match="Linear"):
        interval_sweep(nn.Linear(3, 2), Interval(torch.zeros(3), torch.ones(3)))


def test_wrong_box_shape_is_a_value_error():
    """The box's last dimension must be the model's input size."""
    with pytest.raises(ValueError, match=r"\(3,\)"):
        interval_sweep(MLP([3, 2, 2]), Interval(torch.zeros(4), torch.ones(4)))


def test_unknown_seed_is_a_value_error():
    """The seed is "per_output" or "sum"."""
    with pytest.raises(ValueError, match="per_output"):
        interval_sweep(MLP([3, 2, 2]), Interval(torch.zeros(3), torch.ones(3)), seed="max")


def test_box_must_be_an_interval():
    """A raw tensor is not a box."""
    with pytest.raises(TypeError, match="Interval"):
        interval_sweep(MLP([3, 2, 2]), torch.zeros(3))
