"""Interval forward and reverse sweep: soundness against torch (the oracle), hand values, errors.

Soundness is checked in float64 with a tolerance of 1e-9 relative to the magnitude of the numbers
compared: the bounds come from centre/radius products, the point values from torch's own matmuls,
so the two round differently by a few ulps. That tolerance is some 10⁷ ulps: it absorbs rounding
only, and any real unsoundness (a missed sign, a wrong derivative range) is orders larger.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from iaprune.adjoint import RULES, LayerBounds, chain, interval_sweep, sweep
from iaprune.interval import Interval
from iaprune.model import mlp_net
from iaprune.spec import Select

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
    model = mlp_net(sizes, activation, seed=seed).double()
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
    model = mlp_net(sizes, activation, seed=seed).double()
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
    model = mlp_net([2, 2, len(out_rows)]).double()
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
    model = mlp_net([5, 4, 3, 2], "tanh", seed=0).double()
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
    model = mlp_net([3, 2, 2], seed=0)
    (bounds,) = interval_sweep(model, Interval(torch.zeros(3, dtype=D), torch.ones(3, dtype=D)))
    assert isinstance(bounds, LayerBounds) and bounds.value.dtype == D
    assert bounds.adjoint.dtype == D


def test_no_hidden_layer_gives_no_bounds():
    """A single Linear has no hidden neurons."""
    assert interval_sweep(nn.Sequential(nn.Linear(3, 2)), Interval(torch.zeros(3),
                                                                   torch.ones(3))) == []


def test_unsupported_module_is_a_type_error_naming_it():
    """A module without a rule (here Softsign) is refused by name, never skipped."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Softsign(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="Softsign"):
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
        interval_sweep(mlp_net([3, 2, 2]), Interval(torch.zeros(4), torch.ones(4)))


def test_unknown_seed_is_a_value_error():
    """The seed is "per_output" or "sum"."""
    with pytest.raises(ValueError, match="per_output"):
        interval_sweep(mlp_net([3, 2, 2]), Interval(torch.zeros(3), torch.ones(3)), seed="max")


def test_box_must_be_an_interval():
    """A raw tensor is not a box."""
    with pytest.raises(TypeError, match="Interval"):
        interval_sweep(mlp_net([3, 2, 2]), torch.zeros(3))


# ---- general chains: convolutional networks ---------------------------------------------------

def chain_points(model: nn.Sequential, x: torch.Tensor) -> tuple[list[torch.Tensor],
                                                                 list[torch.Tensor]]:
    """Point values of every module's input and of the output (P, *shape_i) at the points x,
    and the autograd Jacobians of every output y_k with respect to them (P, K, *shape_i)."""
    values = [x.clone().requires_grad_(True)]
    for module in model:
        values.append(module(values[-1]))
    out = values[-1].flatten(1)
    grads = [torch.autograd.grad(out[:, k].sum(), values, retain_graph=True)
             for k in range(out.shape[1])]  # each row of the batch is its own point
    return ([v.detach() for v in values],
            [torch.stack([g[i] for g in grads], dim=1) for i in range(len(values))])


def conv_layer(draw, channels: int) -> nn.Module:
    out = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0 and out % g == 0]))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from([0, 1, (0, 1), "valid"] + ["same"] * (stride == 1)))
    return nn.Conv2d(channels, out, kernel, stride, padding, dilation, groups,
                     bias=draw(st.booleans()))


def pool_layer(draw, kind: type[nn.Module]) -> nn.Module:
    kernel = draw(st.integers(1, 3))
    geometry = {"kernel_size": kernel, "stride": draw(st.integers(1, 3)),
                "padding": draw(st.integers(0, kernel // 2))}
    if kind is nn.MaxPool2d:
        return nn.MaxPool2d(**geometry, dilation=draw(st.integers(1, 2)))
    return nn.AvgPool2d(**geometry, count_include_pad=draw(st.booleans()),
                        divisor_override=draw(st.sampled_from([None, 3])))


def image_layer(draw, kind: str, channels: int) -> nn.Module:
    if kind == "conv":
        return conv_layer(draw, channels)
    if kind in ("maxpool", "avgpool"):
        return pool_layer(draw, nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)
    return {"bn": lambda: nn.BatchNorm2d(channels), "relu": nn.ReLU, "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid, "dropout": nn.Dropout}[kind]()


LAYERS = ["conv", "conv", "bn", "relu", "tanh", "sigmoid", "maxpool", "maxpool", "avgpool",
          "dropout"]


@st.composite
def cnns(draw) -> tuple[nn.Sequential, tuple[int, ...], int]:
    """A random small CNN (conv/bn/activations/pooling/dropout, then flatten and a linear head,
    maybe with BatchNorm1d), in float64 eval mode, its input shape and a seed for box/points."""
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)  # the layers' initial weights: the example alone fixes the network
    input_shape = (draw(st.integers(1, 2)), draw(st.integers(4, 8)), draw(st.integers(4, 8)))
    shape, layers = input_shape, []
    for kind in draw(st.lists(st.sampled_from(LAYERS), min_size=2, max_size=6)):
        layer = image_layer(draw, kind, shape[0])
        try:  # a layer whose window does not fit the current size is left out
            out = layer.eval()(torch.zeros(1, *shape))
        except RuntimeError:
            continue
        if not bool(out.isfinite().all()):  # a dilated max-pool window entirely in the padding
            continue
        shape = tuple(out.shape[1:])
        layers.append(layer)
    hidden = draw(st.integers(1, 4))
    layers += [nn.Flatten(), nn.Linear(math.prod(shape), hidden)]
    if draw(st.booleans()):
        layers += [nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, draw(st.integers(1, 3)))]
    model = nn.Sequential(*layers).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights, and BatchNorm statistics and negative scales
        for p in model.parameters():
            p.mul_(2).add_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
        for m in model:
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=D))
                m.running_var.copy_(0.2 + torch.rand(m.num_features, generator=g, dtype=D))
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=D))  # any sign
    return model, input_shape, seed


def image_box(g: torch.Generator, shape: tuple[int, ...], degenerate: bool,
              batch: tuple[int, ...] = ()) -> Interval:
    centre = 2 * torch.rand(*batch, *shape, generator=g, dtype=D) - 1
    radius = (torch.zeros_like(centre) if degenerate
              else 0.5 * torch.rand(*batch, *shape, generator=g, dtype=D))
    return Interval.from_centre_radius(centre, radius)


def image_points(box: Interval, n: int, g: torch.Generator) -> torch.Tensor:
    """n points of an unbatched box (n, *shape): half random corners, half uniform inside."""
    u = torch.rand(n, *box.shape, generator=g, dtype=D)
    u[: n // 2] = u[: n // 2].round()
    return box.lower + u * box.width


def check_chain_encloses_points(model: nn.Sequential, box: Interval, points: torch.Tensor,
                                seed_mode: str) -> None:
    """Every point value and autograd derivative (per output, or summed) at every module's
    input and at the output lies in its interval, the input's adjoint included."""
    bounds = sweep(model, box, seed_mode, input_shape=box.shape)
    values, jacobians = chain_points(model, points)
    assert len(bounds.values) == len(bounds.adjoints) == len(values) == len(model) + 1
    for value, adjoint, v, jac in zip(*bounds, values, jacobians, strict=True):
        assert value.shape == v.shape[1:]
        assert_encloses(value, v)
        assert_encloses(adjoint, jac if seed_mode == "per_output" else jac.sum(dim=1,
                                                                               keepdim=True))


@settings(max_examples=150, deadline=None)
@given(network=cnns(), seed_mode=st.sampled_from(["per_output", "sum"]))
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_cnn_point_values_and_derivatives_lie_in_the_intervals(network, seed_mode):
    """For random small CNNs (conv with random kernel/stride/padding/dilation/groups, BatchNorm,
    ReLU/tanh/sigmoid, max and average pooling, dropout, flatten, linear head), boxes and points
    and corners inside them, every point value and every autograd derivative of every output
    with respect to every module's input lies in its interval."""
    model, shape, seed = network
    g = torch.Generator().manual_seed(seed)
    box = image_box(g, shape, degenerate=False)
    check_chain_encloses_points(model, box, image_points(box, 16, g), seed_mode)


@settings(max_examples=80, deadline=None)
@given(network=cnns())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_cnn_degenerate_box_reproduces_torch(network):
    """On a box of width 0 every value and adjoint interval has width 0 and equals torch's
    value and autograd's derivative, for both seeds (ties in a max-pool window included: the
    interval picks torch's first maximum)."""
    model, shape, seed = network
    box = image_box(torch.Generator().manual_seed(seed), shape, degenerate=True)
    values, jacobians = chain_points(model, box.lower[None])
    for seed_mode in ("per_output", "sum"):
        bounds = sweep(model, box, seed_mode, input_shape=shape)
        for value, adjoint, v, jac in zip(*bounds, values, jacobians, strict=True):
            expected = jac[0] if seed_mode == "per_output" else jac[0].sum(dim=0, keepdim=True)
            for interval, point in ((value, v[0]), (adjoint, expected)):
                assert torch.equal(interval.lower, interval.upper)
                torch.testing.assert_close(interval.lower, point, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("seed_mode", ["per_output", "sum"])
def test_cnn_batch_of_boxes_equals_one_sweep_per_box(seed_mode):
    """A (batch, C, H, W) box gives, row by row, the values and adjoints of sweeping each box
    alone (max pooling makes adjoints depend on the box; convolutions do not)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(3, 2, 2), nn.Flatten(), nn.Linear(8, 3)).double().eval()
    boxes = image_box(torch.Generator().manual_seed(1), (2, 6, 6), False, batch=(3,))
    together = sweep(model, boxes, seed_mode)
    for b in range(3):
        alone = sweep(model, boxes[b], seed_mode)
        for x, y in zip(together.values + together.adjoints, alone.values + alone.adjoints,
                        strict=True):
            torch.testing.assert_close(x.lower[b], y.lower)
            torch.testing.assert_close(x.upper[b], y.upper)


# ---- input selection (an input-pruned network) ------------------------------------------------

@st.composite
def selecting_mlps(draw) -> tuple[nn.Sequential, int, int]:
    """A random MLP that reads a random subset of its n_in inputs (Select first), in float64,
    with n_in and a seed for box and points."""
    n_in = draw(st.integers(2, 9))
    kept = sorted(draw(st.sets(st.integers(0, n_in - 1), min_size=1, max_size=n_in)))
    activation = draw(st.sampled_from([nn.ReLU, nn.Sigmoid, nn.Tanh]))
    hidden, n_out, seed = draw(st.integers(1, 5)), draw(st.integers(1, 3)), \
        draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    model = nn.Sequential(Select(kept, n_in), nn.Linear(len(kept), hidden), activation(),
                          nn.Linear(hidden, n_out)).double()
    return model, n_in, seed


@settings(max_examples=100, deadline=None)
@given(network=selecting_mlps(), seed_mode=st.sampled_from(["per_output", "sum"]))
def test_select_values_and_adjoints_enclose_the_points(network, seed_mode):
    """Through a Select, every point value and autograd derivative lies in its interval, the
    full input's adjoint included (exactly 0 for the features the network does not read)."""
    model, n_in, seed = network
    g = torch.Generator().manual_seed(seed)
    box = random_box(g, n_in, degenerate=False)
    check_chain_encloses_points(model, box, points_in(box, 16, g), seed_mode)
    unread = torch.ones(n_in, dtype=torch.bool)
    unread[model[0].indices] = False
    adjoint = sweep(model, box, seed_mode).adjoints[0]
    assert bool((adjoint.lower[..., unread] == 0).all() and (adjoint.upper[..., unread] == 0).all())


@settings(max_examples=50, deadline=None)
@given(network=selecting_mlps())
def test_select_degenerate_box_reproduces_torch(network):
    """On a point box, the Select's values and the input adjoint equal torch's and autograd's."""
    model, n_in, seed = network
    box = random_box(torch.Generator().manual_seed(seed), n_in, degenerate=True)
    values, jacobians = chain_points(model, box.lower[None])
    bounds = sweep(model, box, "per_output")
    for interval, point in ((bounds.values[1], values[1][0]), (bounds.adjoints[0],
                                                               jacobians[0][0])):
        assert torch.equal(interval.lower, interval.upper)
        torch.testing.assert_close(interval.lower, point, rtol=TOL, atol=TOL)


def test_select_of_a_batch_of_boxes_keeps_the_batch():
    """A (batch, n_in) box through a Select gives (batch, k) values and a (batch, k_out, n_in)
    input adjoint."""
    model = nn.Sequential(Select([0, 3], 5), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    box = Interval(torch.zeros(4, 5), torch.ones(4, 5))
    result = sweep(model, box)
    assert result.values[1].shape == (4, 2) and result.adjoints[0].shape == (4, 2, 5)


def test_a_box_of_the_wrong_width_for_a_select_is_a_value_error():
    """A Select takes the full input: a box of the kept features' width is refused."""
    model = nn.Sequential(Select([0, 3], 5), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Select.*5 features"):
        sweep(model, Interval(torch.zeros(2), torch.ones(2)))


def lenet_like() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(36, 5), nn.ReLU(), nn.Linear(5, 3))


def test_sweep_shapes_batched_and_unbatched():
    """values[i] is (batch, *shape_i) and adjoints[i] (batch, k, *shape_i), k = 3 outputs for
    per_output and 1 for sum; an unbatched (C, H, W) box drops the batch dimension."""
    model = lenet_like()
    shapes = [(1, 8, 8), (4, 6, 6), (4, 3, 3), (4, 3, 3), (36,), (5,), (5,), (3,)]
    batch = Interval(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8))
    for box, lead in ((batch, (2,)), (batch[0], ())):
        for seed_mode, k in (("per_output", 3), ("sum", 1)):
            result = sweep(model, box, seed_mode)
            assert [tuple(v.shape) for v in result.values] == [(*lead, *s) for s in shapes]
            assert [tuple(a.shape) for a in result.adjoints] == [(*lead, k, *s) for s in shapes]


def test_lowest_limits_the_reverse_sweep():
    """adjoints[i] is None below `lowest` and the same as a full sweep's from it on."""
    model = lenet_like()
    box = Interval(torch.zeros(1, 8, 8), torch.ones(1, 8, 8))
    full, part = sweep(model, box), sweep(model, box, lowest=4)
    assert part.adjoints[:4] == [None] * 4
    for a, b in zip(full.adjoints[4:], part.adjoints[4:], strict=True):
        assert torch.equal(a.lower, b.lower) and torch.equal(a.upper, b.upper)
    assert sweep(model, box, lowest=len(model)).adjoints[:-1] == [None] * len(model)


def test_input_shape_settles_whether_the_box_is_batched():
    """A chain that starts with Flatten takes a batch like torch's Flatten does; input_shape
    says that a (1, 4, 4) box is one (1, 4, 4) image instead."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    box = Interval(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    assert sweep(model, box).adjoints[0].shape == (1, 2, 4, 4)  # one (4, 4) box
    assert sweep(model, box, input_shape=(1, 4, 4)).adjoints[0].shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="input_shape"):
        sweep(model, box, input_shape=(16,))


def test_sweep_works_in_the_promoted_dtype():
    """A float32 CNN over a float64 box gives float64 values and adjoints."""
    result = sweep(lenet_like(), Interval(torch.zeros(1, 8, 8, dtype=D), torch.ones(1, 8, 8,
                                                                                    dtype=D)))
    assert {v.dtype for v in result.values + result.adjoints} == {D}


def test_modules_are_swept_as_in_eval_mode():
    """BatchNorm uses its running statistics and Dropout is the identity even when the model
    is in training mode: the bounds equal those of the same model in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    box = image_box(torch.Generator().manual_seed(0), (1, 4, 3), False)
    training = sweep(model.train(), box)
    evaluating = sweep(model.eval(), box)
    for x, y in zip(training.values + training.adjoints,
                    evaluating.values + evaluating.adjoints, strict=True):
        assert torch.equal(x.lower, y.lower) and torch.equal(x.upper, y.upper)


# ---- hand-computed rules ------------------------------------------------------------------------

def pool_adjoint(pool: nn.Module, lower: list[list[float]],
                 upper: list[list[float]]) -> Interval:
    """[∂(Σ y)/∂x] of one pooling layer over a (1, H, W) box."""
    box = Interval(torch.tensor([lower], dtype=D), torch.tensor([upper], dtype=D))
    return sweep(nn.Sequential(pool), box, "sum").adjoints[0][0, 0]


def test_maxpool_routes_the_adjoint_to_the_certain_maximum():
    """In [[0,1] [0.5,0.8]; [-1,-0.5] [2,3]] the last entry always wins: adjoint 1 there and
    0 elsewhere."""
    adjoint = pool_adjoint(nn.MaxPool2d(2), [[0, 0.5], [-1, 2]], [[1, 0.8], [-0.5, 3]])
    assert adjoint.lower.tolist() == adjoint.upper.tolist() == [[0, 0], [0, 1]]


def test_maxpool_adjoint_is_0_1_for_entries_that_may_be_the_maximum():
    """In [[0,2] [1,3]; [-1,0.5] [1,1]]: 0.5 < 1 (a certain lower bound of the max) rules out
    the third entry; the others may win (the last only in a tie at 1, which torch may break
    its way): [0, 1]."""
    adjoint = pool_adjoint(nn.MaxPool2d(2), [[0, 1], [-1, 1]], [[2, 3], [0.5, 1]])
    assert adjoint.lower.tolist() == [[0, 0], [0, 0]]
    assert adjoint.upper.tolist() == [[1, 1], [0, 1]]


def test_maxpool_tie_at_a_point_matches_torch():
    """A width-0 window [[1, 1], [0, 1]] has three maxima; torch routes to the first, and so
    does the interval (exactly, width 0)."""
    x = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(nn.MaxPool2d(2)(x).sum(), x)
    adjoint = pool_adjoint(nn.MaxPool2d(2), x[0].tolist(), x[0].tolist())
    assert adjoint.lower.tolist() == adjoint.upper.tolist() == grad[0].tolist() == [[1, 0],
                                                                                    [0, 0]]


def test_maxpool_tie_at_a_corner_survives_rounded_bounds():
    """v = b + w x with w = -1.3, b = 0.05 on x ∈ [[0, 0.3], [0, 0]] has exact bounds
    [[b + 0.3 w, b], [b, b]]; at the corner x = 0 both entries are b, a tie torch routes to the
    first. A sweep may round the first upper bound an ulp below b (centre/radius:
    (b + 0.15 w) + 0.15 |w|); built here so, it must not rule that entry out of the max: both
    adjoint ranges are [0, 1], holding torch's [1, 0] at the corner."""
    b = torch.tensor(0.05, dtype=D)
    rounded = torch.nextafter(b, torch.tensor(-math.inf, dtype=D)).item()  # b - 1 ulp
    assert rounded < 0.05  # the rounding this test is about
    values = Interval(torch.tensor([[[0.05 - 1.3 * 0.3, 0.05]]], dtype=D),
                      torch.tensor([[[rounded, 0.05]]], dtype=D))
    pool = nn.Sequential(nn.MaxPool2d((1, 2)))
    _, jacobians = chain_points(pool, torch.full((1, 1, 1, 2), 0.05, dtype=D))
    assert jacobians[0].flatten().tolist() == [1.0, 0.0]  # torch's choice at the tie
    adjoint = sweep(pool, values, "sum").adjoints[0]
    assert_encloses(adjoint, jacobians[0][0])
    assert adjoint.lower.flatten().tolist() == [0.0, 0.0]  # each may win, or not
    assert adjoint.upper.flatten().tolist() == [1.0, 1.0]


@pytest.mark.parametrize("up", [0, 1])
def test_maxpool_at_a_point_follows_the_rounding_that_breaks_a_tie(up):
    """Two entries that would tie in exact arithmetic can come out of a layer one ulp apart
    (0.2 and 0.2 + 1 ulp here; which one is larger depends on the layer's rounding). On a
    degenerate box the sweep is torch's own computation at that point, so it routes as torch
    does, to the larger entry, exactly (width 0), not to both as a near-tie on a real box."""
    tie = torch.tensor(0.2, dtype=D)
    near = torch.stack([tie, tie])
    near[up] = torch.nextafter(tie, torch.tensor(math.inf, dtype=D))
    x = near.reshape(1, 1, 2)
    pool = nn.Sequential(nn.MaxPool2d((1, 2)))
    _, jacobians = chain_points(pool, x[None])
    assert jacobians[0].flatten().tolist() == [float(i == up) for i in range(2)]
    adjoint = sweep(pool, Interval.point(x), "sum").adjoints[0]
    assert adjoint.lower.tolist() == adjoint.upper.tolist() == jacobians[0][0].tolist()


def test_overlapping_max_windows_sum_their_adjoints():
    """With stride 1, a 5 that wins two overlapping windows gets adjoint 1 + 1 = 2."""
    x = [[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]
    adjoint = pool_adjoint(nn.MaxPool2d(2, stride=1), x, [[r + 0.5 for r in row] for row in x])
    assert adjoint.lower.tolist() == [[0, 2, 0], [0, 0, 0]]
    assert adjoint.upper.tolist() == [[0, 2, 0], [0, 0, 0]]


def test_avgpool_without_padding_counts_shares_edge_windows():
    """AvgPool2d(2, stride 1, padding 1, count_include_pad=False) on a 1x1 input: each of the
    4 windows sees only the input, so each passes its whole adjoint: 4."""
    adjoint = pool_adjoint(nn.AvgPool2d(2, 1, 1, count_include_pad=False), [[0.0]], [[1.0]])
    assert adjoint.lower.tolist() == adjoint.upper.tolist() == [[4.0]]


def test_batchnorm_with_negative_scale_flips_the_bounds():
    """Eval BatchNorm with γ = -2, β = 1, mean 0, var 1 - ε maps [1, 3] to [-5, -1] and
    passes the adjoint times -2."""
    bn = nn.BatchNorm1d(1).double().eval()
    with torch.no_grad():
        bn.weight.fill_(-2.0)
        bn.bias.fill_(1.0)
        bn.running_var.fill_(1.0 - bn.eps)
    result = sweep(nn.Sequential(bn), Interval(torch.tensor([1.0], dtype=D),
                                               torch.tensor([3.0], dtype=D)))
    assert result.values[1].lower.tolist() == [-5.0] and result.values[1].upper.tolist() == [-1.0]
    assert result.adjoints[0].lower.tolist() == result.adjoints[0].upper.tolist() == [[-2.0]]


def test_batchnorm1d_on_sequences_matches_torch():
    """BatchNorm1d on (C, L) inputs (a (batch, C, L) box) is swept per channel: on a point the
    values and adjoints equal torch's; on a box they hold the points' ones."""
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -2.0, 0.5]))
        bn.running_mean.copy_(torch.tensor([0.1, -0.3, 0.2]))
    model = nn.Sequential(bn, nn.Tanh(), nn.Flatten(), nn.Linear(12, 2)).double().eval()
    g = torch.Generator().manual_seed(0)
    point = image_box(g, (3, 4), degenerate=True, batch=(1,))
    values, jacobians = chain_points(model, point.lower)
    result = sweep(model, point)
    for value, adjoint, v, jac in zip(*result, values, jacobians, strict=True):
        torch.testing.assert_close(value.lower, v, rtol=TOL, atol=TOL)
        torch.testing.assert_close(adjoint.upper, jac, rtol=TOL, atol=TOL)
    box = image_box(g, (3, 4), degenerate=False)
    check_chain_encloses_points(model, box, image_points(box, 16, g), "per_output")


@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    (8, 3, 2, 1, 1), (7, 3, 2, 0, 1), (9, 3, 3, 2, 1), (6, 3, 1, 2, 1), (9, 3, 2, 1, 2),
    (6, 2, 1, "same", 1), (7, 4, 1, "same", 1), (7, (2, 3), 1, "same", 2)])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv_adjoint_has_the_input_shape_and_autograd_values(size, kernel, stride, padding,
                                                              dilation):
    """The transposed convolution gives x̄ the input's exact shape whatever the stride skips
    (output_padding) and however the padding is split ("same" with an even kernel pads one
    more pixel at the end), and on a point it equals autograd's input gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, kernel, stride, padding, dilation)).double()
    x = torch.rand(1, 2, size, size + 1, dtype=D)
    (adjoint,) = sweep(model, Interval.point(x[0]), "sum").adjoints[:1]
    values, jacobians = chain_points(model, x)
    assert adjoint.shape == (1, 2, size, size + 1)
    torch.testing.assert_close(adjoint.lower, jacobians[0][0].sum(dim=0, keepdim=True))


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, match", [
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices"),
    (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (nn.BatchNorm2d(1, track_running_stats=False), "running statistics"),
])
def test_unsupported_settings_are_a_value_error_naming_them(module, match):
    """Settings a rule does not cover are refused up front, never swept wrongly."""
    with pytest.raises(ValueError, match=match):
        sweep(nn.Sequential(module), Interval(torch.zeros(1, 4, 4), torch.ones(1, 4, 4)))


def test_maxpool_window_entirely_in_the_padding_is_a_value_error():
    """A dilated window that skips every input pixel has maximum -inf in torch: refused."""
    pool = nn.MaxPool2d(2, stride=1, padding=1, dilation=2)
    with pytest.raises(ValueError, match="padding"):
        sweep(nn.Sequential(pool), Interval(torch.zeros(1, 1, 1), torch.ones(1, 1, 1)))


def test_flatten_over_the_batch_is_a_value_error():
    """Flatten(start_dim=0) would mix the boxes of a batch."""
    with pytest.raises(ValueError, match="batch"):
        sweep(nn.Sequential(nn.Flatten(0)), Interval(torch.zeros(2, 3), torch.ones(2, 3)))


def test_box_that_does_not_fit_is_a_value_error_naming_the_module():
    """A box with the wrong rank or channel count is refused, naming the module."""
    model = lenet_like()
    with pytest.raises(ValueError, match="module 0 \\(Conv2d\\)"):
        sweep(model, Interval(torch.zeros(8, 8), torch.ones(8, 8)))
    with pytest.raises(ValueError, match="module 0 \\(Conv2d\\) takes 1"):
        sweep(model, Interval(torch.zeros(2, 8, 8), torch.ones(2, 8, 8)))
    with pytest.raises(ValueError, match="module 4 \\(Linear\\) takes 36"):
        sweep(model, Interval(torch.zeros(1, 10, 10), torch.ones(1, 10, 10)))


def test_lowest_out_of_range_is_a_value_error():
    """lowest is an index of values: 0 .. len(modules)."""
    for lowest in (-1, 8, 1.5):
        with pytest.raises(ValueError, match="lowest"):
            sweep(lenet_like(), Interval(torch.zeros(1, 8, 8), torch.ones(1, 8, 8)),
                  lowest=lowest)


def test_chain_accepts_every_rule_type():
    """chain() takes an nn.Sequential of every module type that has a rule."""
    assert {nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Sigmoid, nn.Tanh,
            nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, Select} <= set(RULES)
    model = lenet_like()
    assert chain(model) == list(model)
