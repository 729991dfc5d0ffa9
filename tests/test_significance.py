"""Neuron significance: the interval-adjoint criterion, its boxes, and the baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iaprune.adjoint import chain, interval_sweep, sweep
from iaprune.interval import Interval
from iaprune.model import mlp_net
from iaprune.significance import (
    CRITERIA,
    ScoreData,
    data_box,
    default_measure,
    geometric_median,
    interval_adjoint,
    quantile_box,
    sample_boxes,
    score,
)
from iaprune.spec import Net, build

D = torch.float64


def set_weights(model: nn.Module, *params: list) -> nn.Module:
    """Copy (weight, bias, weight, bias, ...) into the model's Linear layers (float64)."""
    model = model.double()
    with torch.no_grad():
        for p, value in zip(model.parameters(), params, strict=True):
            p.copy_(torch.tensor(value, dtype=D))
    return model


def two_two(out_rows: list[list[float]], b1=(0.0, -1.0)) -> nn.Module:
    """W1 = [[1, -1], [2, 1]], b1, ReLU, W2 = out_rows, b2 = 0."""
    return set_weights(mlp_net([2, 2, len(out_rows)]), [[1.0, -1.0], [2.0, 1.0]], list(b1),
                       out_rows, [0.0] * len(out_rows))


UNIT = Interval(torch.zeros(2, dtype=D), torch.ones(2, dtype=D))


def small_data(n: int = 200, n_in: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_in, generator=g), torch.randint(0, 3, (n,), generator=g)


# ---- interval adjoint -----------------------------------------------------------------------

def test_hand_computed_significance_2_2_1():
    """[z] = [-1, 1], [-1, 2] and [z̄] = [0, 1], [-2, 0] give S = 2·1, 3·2 (either seed)."""
    model = two_two([[1.0, -2.0]])
    for seed in ("per_output", "sum"):
        (s,) = interval_adjoint(model, UNIT, seed)
        assert s.tolist() == [2.0, 6.0]


def test_hand_computed_post_activation_significance_2_2_1():
    """After the ReLU, [a] = [0, 1], [0, 2] and [ā] = W2 = [1, -2]: S = 1·1, 2·2. The negative
    part of a neuron's pre-activation range, which the ReLU cuts, no longer counts."""
    model = two_two([[1.0, -2.0]])
    for seed in ("per_output", "sum"):
        (s,) = interval_adjoint(model, UNIT, seed, measure="post")
        assert s.tolist() == [1.0, 4.0]
    (s,) = score("interval_adjoint", model, ScoreData(torch.rand(5, 2, dtype=D),
                                                      torch.zeros(5, dtype=torch.long),
                                                      box=UNIT, measure="post"))
    assert s.tolist() == [1.0, 4.0]


def test_sum_seed_can_cancel_where_per_output_does_not():
    """W2 = [[1, -2], [-1, 1]]: per-output S = [2·1, 3·2]; the summed seed cancels neuron 1's
    two paths (1 - 1 = 0) and halves neuron 2's (|-2 + 1| = 1): S = [0, 3]."""
    model = two_two([[1.0, -2.0], [-1.0, 1.0]])
    assert interval_adjoint(model, UNIT, "per_output")[0].tolist() == [2.0, 6.0]
    assert interval_adjoint(model, UNIT, "sum")[0].tolist() == [0.0, 3.0]


@pytest.mark.parametrize("measure", ["pre", "post"])
@pytest.mark.parametrize("b1", [(0.0, -4.0), (0.0, -3.0)])
def test_dead_neuron_has_zero_significance(b1, measure):
    """A ReLU neuron with hi <= 0 over the box (here [-4, -1], and [-3, 0] touching the kink)
    has zero adjoint and so zero significance, although its pre-activation has width 3; read
    after the ReLU, its value interval [0, 0] has width 0."""
    model = two_two([[1.0, -2.0]], b1=b1)
    (s,) = interval_adjoint(model, UNIT, measure=measure)
    assert s[1].item() == 0.0 and s[0].item() > 0


def test_relu_lower_bound_is_clipped_before_the_next_layer():
    """Layer 2 sees relu([z1]) = [0, 1], not [-1, 1]: with W2 = [1, 0], b2 = 0 its
    pre-activation is [0, 1] (width 1), hence S = 1 · 1."""
    model = set_weights(mlp_net([2, 2, 1, 1]), [[1.0, -1.0], [0.0, 0.0]], [0.0, 0.0],
                        [[1.0, 0.0]], [0.0], [[1.0]], [0.0])
    _, (s2,) = interval_adjoint(model, UNIT)
    assert s2.item() == 1.0


def test_constant_input_feature_contributes_nothing():
    """A feature that is constant over the box adds no width: a neuron fed only by it scores 0,
    and changing that feature's weights leaves every first-layer width unchanged."""
    box = Interval(torch.tensor([0.0, 0.7], dtype=D), torch.tensor([1.0, 0.7], dtype=D))
    model = set_weights(mlp_net([2, 2, 1]), [[0.0, 5.0], [1.0, 1.0]], [0.0, 0.0], [[1.0, 1.0]],
                        [0.0])
    (s,) = interval_adjoint(model, box)
    assert s[0].item() == 0.0 and s[1].item() > 0
    ((before, _),) = interval_sweep(model, box)
    with torch.no_grad():
        model[0].weight[:, 1] = torch.tensor([-3.0, 9.0], dtype=D)
    ((after, _),) = interval_sweep(model, box)
    torch.testing.assert_close(after.width, before.width)


def test_batched_boxes_average_the_per_box_significances():
    """For a batch of boxes the score is the mean of the single-box scores."""
    model = mlp_net([6, 5, 4, 3], "sigmoid", seed=0)
    x, _ = small_data(n_in=6)
    boxes = sample_boxes(x, 0.1, 4, seed=1)
    batched = interval_adjoint(model, boxes)
    alone = [interval_adjoint(model, boxes[b]) for b in range(4)]
    for layer, scores in enumerate(batched):
        expected = torch.stack([a[layer] for a in alone]).mean(dim=0)
        torch.testing.assert_close(scores, expected)


def test_significances_are_nonnegative_and_shaped_per_layer():
    """One non-negative score per neuron of each hidden layer."""
    model = mlp_net([12, 7, 5, 3], "tanh", seed=2)
    scores = interval_adjoint(model, data_box(small_data()[0]))
    assert [s.shape for s in scores] == [(7,), (5,)]
    assert all(bool((s >= 0).all()) for s in scores)


# ---- boxes ----------------------------------------------------------------------------------

def test_data_box_is_the_per_feature_range_of_flattened_inputs():
    """data_box takes each feature's min and max over the samples (images are flattened)."""
    x = torch.tensor([[[0.2, 0.9]], [[0.5, 0.1]], [[0.4, 0.3]]])  # (3, 1, 2)
    box = data_box(x)
    assert box.lower.tolist() == pytest.approx([0.2, 0.1])
    assert box.upper.tolist() == pytest.approx([0.5, 0.9])


def test_quantile_box_ignores_values_seen_in_few_samples():
    """box="quantile": a feature lit in 2 of 100 samples gets width 0 (a pixel that is almost
    always dark scores 0); a feature spread evenly keeps nearly its range; q = 0 is the data
    box, and the box always lies inside it."""
    x = torch.zeros(100, 3)
    x[:2, 0] = 1.0  # rare
    x[:, 1] = torch.linspace(0, 1, 100)  # spread
    x[:, 2] = 0.3  # constant
    box = quantile_box(x)  # the 5th and 95th of 100 values: order statistics 4 and 95 (of 0..99)
    assert box.width.tolist() == pytest.approx([0.0, (95 - 4) / 99, 0.0])
    assert bool((box.lower >= data_box(x).lower).all() and (box.upper <= data_box(x).upper).all())
    full = quantile_box(x, 0.0)
    assert torch.equal(full.lower, data_box(x).lower) and torch.equal(full.upper,
                                                                      data_box(x).upper)
    with pytest.raises(ValueError, match="quantile"):
        quantile_box(x, 0.5)


def test_sample_boxes_surround_seeded_samples_within_the_data_range():
    """n boxes of half-width eps around distinct rows of X, cut to the data box, reproducible."""
    x, _ = small_data(n=50, n_in=4)
    boxes = sample_boxes(x, 0.05, 8, seed=3)
    assert boxes.shape == (8, 4)
    assert bool((boxes.width <= 0.1 + 1e-7).all())
    assert bool(data_box(x).contains(boxes.lower).all() and data_box(x).contains(boxes.upper).all())
    centres_in_x = [(boxes.contains(row).all(dim=1)).any().item() for row in x]
    assert sum(centres_in_x) >= 8
    again = sample_boxes(x, 0.05, 8, seed=3)
    assert torch.equal(again.lower, boxes.lower)
    assert not torch.equal(sample_boxes(x, 0.05, 8, seed=4).lower, boxes.lower)


def test_sample_boxes_validate_their_arguments():
    """More boxes than samples, n < 1 or a negative eps are ValueErrors."""
    x, _ = small_data(n=5, n_in=3)
    for eps, n in ((0.1, 6), (0.1, 0), (-0.1, 2)):
        with pytest.raises(ValueError):
            sample_boxes(x, eps, n)


def test_box_choice_in_score_data():
    """box="data" uses data_box(x); "quantile" quantile_box(x); "samples" the seeded sample
    boxes; an Interval itself."""
    model = mlp_net([12, 6, 3], seed=0)
    x, y = small_data()
    data = ScoreData(x, y)
    torch.testing.assert_close(score("interval_adjoint", model, data)[0],
                               interval_adjoint(model, data_box(x))[0])
    samples = ScoreData(x, y, box="samples", eps=0.1, n_samples=5, seed=2)
    torch.testing.assert_close(score("interval_adjoint", model, samples)[0],
                               interval_adjoint(model, sample_boxes(x, 0.1, 5, seed=2))[0])
    quantiles = ScoreData(x, y, box="quantile")
    torch.testing.assert_close(score("interval_adjoint", model, quantiles)[0],
                               interval_adjoint(model, quantile_box(x))[0])
    own = Interval(torch.zeros(12), torch.full((12,), 0.5))
    given = ScoreData(x, y, box=own, seed_mode="sum")
    torch.testing.assert_close(score("interval_adjoint", model, given)[0],
                               interval_adjoint(model, own, "sum")[0])


# ---- baselines ------------------------------------------------------------------------------

def test_random_is_seeded():
    """random gives the same scores for the same seed and different ones for another."""
    model = mlp_net([12, 6, 4, 3], seed=0)
    x, y = small_data()
    a, b = score("random", model, ScoreData(x, y, seed=1)), score("random", model,
                                                                  ScoreData(x, y, seed=1))
    c = score("random", model, ScoreData(x, y, seed=2))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_magnitude_is_the_l1_norm_of_incoming_weights():
    """Rows [1, -2] and [0.5, 0] of W1 score 3 and 0.5 (the bias does not count)."""
    model = set_weights(mlp_net([2, 2, 1]), [[1.0, -2.0], [0.5, 0.0]], [9.0, 9.0], [[1.0, 1.0]],
                        [0.0])
    (s,) = score("magnitude", model, ScoreData(*small_data(n_in=2)))
    assert s.tolist() == [3.0, 0.5]


def test_taylor_matches_the_first_order_formula():
    """taylor = |mean_i a_ij · ∂L_i/∂a_ij| with ∂L/∂a = (softmax - onehot) W2, computed by hand;
    a neuron with no outgoing weights scores 0."""
    model = set_weights(mlp_net([2, 3, 2]), [[1.0, -1.0], [2.0, 1.0], [1.0, 1.0]], [0.1, -0.5, 0.0],
                        [[1.0, -2.0, 0.0], [-1.0, 0.5, 0.0]], [0.0, 0.3])
    x = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [1.0, 0.0]], dtype=D)
    y = torch.tensor([0, 1, 1, 0])
    a = torch.relu(x @ model[0].weight.detach().T + model[0].bias.detach())
    logits = a @ model[2].weight.detach().T + model[2].bias.detach()
    grad_a = (logits.softmax(dim=1) - F.one_hot(y, 2)) @ model[2].weight.detach()
    (s,) = score("taylor", model, ScoreData(x, y))
    torch.testing.assert_close(s, (a * grad_a).mean(dim=0).abs())
    assert s[2].item() == 0.0


def test_taylor_leaves_parameter_gradients_alone():
    """Scoring does not write .grad into the model's parameters."""
    model = mlp_net([12, 6, 3], seed=0)
    score("taylor", model, ScoreData(*small_data()))
    assert all(p.grad is None for p in model.parameters())


def test_apoz_scores_the_fraction_of_nonzero_activations():
    """Neurons active on 2 of 4, 0 of 4 and 4 of 4 samples score 0.5, 0 and 1 (1 - APoZ)."""
    model = set_weights(mlp_net([1, 3, 1]), [[1.0], [-1.0], [0.0]], [-0.5, 0.0, 1.0],
                        [[1.0, 1.0, 1.0]], [0.0])
    x = torch.tensor([[0.2], [0.4], [0.6], [0.8]], dtype=D)
    (s,) = score("apoz", model, ScoreData(x, torch.zeros(4, dtype=torch.int64)))
    assert s.tolist() == [0.5, 0.0, 1.0]


def test_apoz_refuses_non_relu_models():
    """Zero activations only mean 'off' for ReLU: a tanh model is a ValueError."""
    with pytest.raises(ValueError, match="Tanh"):
        score("apoz", mlp_net([12, 4, 3], "tanh", seed=0), ScoreData(*small_data()))


def test_geometric_median_of_a_symmetric_cross_is_its_centre():
    """The points ±e1, ±e2 and the origin have, by symmetry, their geometric median at 0."""
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]], dtype=D)
    torch.testing.assert_close(geometric_median(points), torch.zeros(2, dtype=D), atol=1e-6,
                               rtol=0)


def test_fpgm_scores_distance_to_the_geometric_median():
    """Incoming rows ±e1, ±2e2, 0: the median is 0, so the zero row (replaceable) scores 0 and
    the others their norms 1, 1, 2, 2."""
    rows = [[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0], [0.0, 0.0]]
    model = set_weights(mlp_net([2, 5, 1]), rows, [0.0] * 5, [[1.0] * 5], [0.0])
    (s,) = score("fpgm", model, ScoreData(*small_data(n_in=2)))
    torch.testing.assert_close(s, torch.tensor([1.0, 1.0, 2.0, 2.0, 0.0], dtype=D), atol=1e-6,
                               rtol=0)


# ---- registry -------------------------------------------------------------------------------

def test_interval_adjoint_is_the_default_criterion():
    """The registry lists interval_adjoint first, then the baselines."""
    assert list(CRITERIA) == ["interval_adjoint", "random", "magnitude", "taylor", "apoz", "fpgm"]


@pytest.mark.parametrize("name", list(CRITERIA))
def test_every_criterion_scores_every_hidden_neuron(name):
    """Each criterion returns one finite 1-D tensor per hidden layer, sized like the layer."""
    model = mlp_net([12, 7, 5, 3], "relu", seed=0)
    scores = score(name, model, ScoreData(*small_data()))
    assert [s.shape for s in scores] == [(7,), (5,)]
    assert all(bool(s.isfinite().all()) and not s.requires_grad for s in scores)


def test_unknown_criterion_lists_the_valid_names():
    """An unknown name is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="interval_adjoint.*fpgm"):
        score("l2", mlp_net([12, 4, 3], seed=0), ScoreData(*small_data()))


def test_criteria_refuse_unsupported_modules():
    """A model with a module the criteria do not understand is a TypeError naming it."""
    model = nn.Sequential(nn.Linear(12, 4), nn.Softsign(), nn.Linear(4, 3))
    for name in CRITERIA:
        with pytest.raises(TypeError, match="Softsign"):
            score(name, model, ScoreData(*small_data()))


@pytest.mark.parametrize("kwargs", [
    {"seed_mode": "max"}, {"box": "everything"}, {"eps": -1.0}, {"n_samples": 0},
    {"measure": "mid"},
])
def test_score_data_validates_its_settings(kwargs):
    """ScoreData refuses an unknown seed_mode/box and eps < 0 or n_samples < 1."""
    with pytest.raises(ValueError):
        ScoreData(*small_data(), **kwargs)


def test_score_data_validates_its_tensors():
    """x must be 2-D floats with at least one row, and y one label per row."""
    x, y = small_data()
    with pytest.raises(ValueError):
        ScoreData(x[0], y)
    with pytest.raises(ValueError):
        ScoreData(x, y[:-1])
    with pytest.raises(ValueError):
        ScoreData(x[:0], y[:0])


# ---- conv channels ---------------------------------------------------------------------------
CNN = {"input": [1, 6, 6], "layers": [
    {"type": "conv2d", "out": 3, "kernel": 3}, "relu", {"type": "maxpool2d", "kernel": 2},
    "flatten", {"type": "linear", "out": 5}, "relu", {"type": "linear", "out": 2}]}


def test_conv_nets_read_units_after_their_activation_and_mlps_before_it_by_default():
    """Without a measure, a network with conv layers is scored post-activation and an MLP
    pre-activation (the choices measured on LeNet-5 and the MLP)."""
    cnn, net = build(CNN, seed=0), mlp_net([12, 6, 3], seed=0)
    box = Interval(torch.zeros(36), torch.ones(36))
    assert default_measure(cnn) == "post" and default_measure(net) == "pre"
    for got, want in zip(interval_adjoint(cnn, box), interval_adjoint(cnn, box, measure="post"),
                         strict=True):
        torch.testing.assert_close(got, want)
    small = Interval(torch.zeros(12), torch.ones(12))
    for got, want in zip(interval_adjoint(net, small), interval_adjoint(net, small, measure="pre"),
                         strict=True):
        torch.testing.assert_close(got, want)


def test_a_channels_score_sums_or_maximises_width_times_reach_over_its_positions():
    """Channel c of a conv scores Σ_p (or max_p) width([a]_cp) · max_k |[ā_k]_cp| over its
    positions p, read after its ReLU (measure="post")."""
    model = build(CNN, seed=0).double()
    box = Interval(torch.zeros(36, dtype=D), torch.ones(36, dtype=D))
    image = Interval(box.lower.reshape(1, 1, 6, 6), box.upper.reshape(1, 1, 6, 6))
    swept = sweep(list(chain(model)), image, "per_output", lowest=0)
    value, adjoint = swept.values[2], swept.adjoints[2]  # the ReLU's output: (1, 3, 4, 4)
    per_position = value.width[0] * adjoint.magnitude[0].amax(0)  # (3, 4, 4)
    torch.testing.assert_close(interval_adjoint(model, box, measure="post")[0],
                               per_position.sum((1, 2)))
    torch.testing.assert_close(interval_adjoint(model, box, measure="post", aggregate="max")[0],
                               per_position.amax((1, 2)))
    with pytest.raises(ValueError, match="aggregate"):
        interval_adjoint(model, box, aggregate="mean")


# ---- input features -------------------------------------------------------------------------

def test_hand_computed_input_significance_2_2_1():
    """The sweep continued to the input: [x̄] = [z̄] W1 = [-4, 1], [-3, 0] over the unit box,
    so the inputs score width 1 · 4 and 1 · 3; the hidden scores stay 2 and 6."""
    model = two_two([[1.0, -2.0]])
    s_in, s_hidden = interval_adjoint(model, UNIT, inputs=True)
    assert s_in.tolist() == [4.0, 3.0] and s_hidden.tolist() == [2.0, 6.0]


@pytest.mark.parametrize("seed_mode", ["per_output", "sum"])
def test_constant_input_features_score_exactly_zero(seed_mode):
    """A feature that is constant over the data box (width 0, like MNIST's border pixels)
    scores exactly 0, whatever its weights; the others score > 0."""
    model = mlp_net([12, 7, 5, 3], seed=0)
    x, y = small_data()
    x[:, [0, 5]] = torch.tensor([0.0, 0.4])
    s_in = score("interval_adjoint", model, ScoreData(x, y, seed_mode=seed_mode), inputs=True)[0]
    assert s_in[[0, 5]].tolist() == [0.0, 0.0]
    assert bool((s_in[[1, 2, 3, 4, 6, 7, 8, 9, 10, 11]] > 0).all())


def test_input_scores_of_a_pruned_model_are_those_of_the_features_it_reads():
    """A model with a Select scores its kept features exactly as the same network without the
    Select scores them over the kept features' box: the sweep runs through the Select."""
    from iaprune.prune import shrink

    x, y = small_data(n_in=12)
    model = mlp_net([12, 7, 5, 3], seed=3).double()
    kept = torch.tensor([1, 4, 6, 7, 10])
    pruned = shrink(model, [kept, torch.arange(7), torch.arange(5)], "none", inputs=True)
    plain = Net(list(pruned)[1:], [5])  # the same modules without the Select
    box = data_box(x.double())
    ours = interval_adjoint(pruned, box, inputs=True)
    theirs = interval_adjoint(plain, Interval(box.lower[kept], box.upper[kept]), inputs=True)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_magnitude_of_an_input_is_the_l1_norm_of_its_column():
    """An input feature's magnitude is the L1 norm of its column of the first Linear."""
    model = set_weights(mlp_net([2, 2, 1]), [[1.0, -2.0], [0.5, 0.0]], [9.0, 9.0], [[1.0, 1.0]],
                        [0.0])
    s_in, _ = score("magnitude", model, ScoreData(*small_data(n_in=2)), inputs=True)
    assert s_in.tolist() == [1.5, 2.0]


def test_apoz_of_an_input_is_the_fraction_of_nonzero_values():
    """Inputs non-zero on 4, 2 and 0 of 4 samples score 1, 0.5 and 0."""
    model = mlp_net([3, 2, 2], seed=0).double()
    x = torch.tensor([[0.1, 0.0, 0.0], [0.2, 0.5, 0.0], [0.3, 0.0, 0.0], [0.4, 0.9, 0.0]],
                     dtype=D)
    s_in, _ = score("apoz", model, ScoreData(x, torch.zeros(4, dtype=torch.int64)), inputs=True)
    assert s_in.tolist() == [1.0, 0.5, 0.0]


def test_taylor_of_an_input_is_the_first_order_formula():
    """taylor for inputs = |mean_i x_ij · ∂L_i/∂x_ij|, checked against autograd."""
    model = mlp_net([4, 3, 2], seed=1).double()
    x, y = torch.rand(6, 4, dtype=D), torch.tensor([0, 1, 1, 0, 1, 0])
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    s_in, _ = score("taylor", model, ScoreData(x, y), inputs=True)
    torch.testing.assert_close(s_in, (x * grad).mean(dim=0).abs())


@pytest.mark.parametrize("name", [n for n in CRITERIA if n != "fpgm"])
def test_every_input_criterion_scores_every_input_first(name):
    """With inputs=True each criterion (but fpgm) returns a score per input feature first."""
    model = mlp_net([12, 7, 5, 3], "relu", seed=0)
    scores = score(name, model, ScoreData(*small_data()), inputs=True)
    assert [s.shape for s in scores] == [(12,), (7,), (5,)]
    assert all(bool(s.isfinite().all()) and not s.requires_grad for s in scores)


def test_fpgm_has_no_input_form():
    """fpgm compares a unit's incoming weights; inputs have none: a one-line error naming the
    criteria that do."""
    with pytest.raises(ValueError, match="fpgm has no input-feature form.*interval_adjoint"):
        score("fpgm", mlp_net([12, 4, 3], seed=0), ScoreData(*small_data()), inputs=True)
