"""Structural shrinking: the plan, the surgery and bias compensation."""

from __future__ import annotations

import pytest
import torch

from iaprune.groups import units
from iaprune.model import mlp_net
from iaprune.prune import keep_global, keep_indices, shrink, value_at


def test_plan_keeps_highest_scores_in_order():
    """keep_indices picks the top-k per layer and returns them ascending."""
    plan = keep_indices([torch.tensor([0.1, 0.9, 0.5, 0.7]), torch.tensor([3.0, 1.0])], [2, 1])
    assert plan[0].tolist() == [1, 3] and plan[1].tolist() == [0]


def test_plan_breaks_ties_by_position():
    """Equal scores keep the earlier neurons, so plans are deterministic."""
    assert keep_indices([torch.zeros(5)], [2])[0].tolist() == [0, 1]


@pytest.mark.parametrize("count", [0, 5])
def test_plan_rejects_impossible_counts(count):
    """At least one neuron survives and no layer can grow."""
    with pytest.raises(ValueError, match="cannot keep"):
        keep_indices([torch.rand(4)], [count])


def test_plan_rejects_nan_scores():
    """A NaN significance is an error, never a silent ranking."""
    with pytest.raises(ValueError, match="NaN"):
        keep_indices([torch.tensor([1.0, float("nan")])], [1])


def test_shrunk_model_has_the_planned_sizes_and_weights():
    """Rows of layer l and columns of layer l+1 are kept by index; in/out are untouched."""
    model = mlp_net([6, 5, 4, 3], seed=0)
    keep = [torch.tensor([0, 2, 4]), torch.tensor([1, 3])]
    small = shrink(model, keep, bias_fold="none")
    assert units(small) == [3, 2] and small[0].in_features == 6 and small[4].out_features == 3
    torch.testing.assert_close(small[0].weight, model[0].weight[[0, 2, 4]])
    torch.testing.assert_close(small[2].weight, model[2].weight[[1, 3]][:, [0, 2, 4]])
    torch.testing.assert_close(small[4].weight, model[4].weight[:, [1, 3]])
    torch.testing.assert_close(small[4].bias, model[4].bias)


def test_original_model_is_not_modified():
    """shrink returns a new model and leaves its input alone."""
    model = mlp_net([6, 5, 3], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink(model, [torch.tensor([1, 2])], bias_fold="none")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_removing_dead_neurons_leaves_outputs_unchanged():
    """Neurons whose ReLU is always 0 on the data can be removed without changing anything."""
    model = mlp_net([4, 6, 3], seed=0).double()
    with torch.no_grad():  # make neurons 1 and 4 dead: large negative bias, inputs in [0, 1]
        model[0].weight[[1, 4]] = model[0].weight[[1, 4]].abs().neg()
        model[0].bias[[1, 4]] = -5.0
    x = torch.rand(64, 4, dtype=torch.float64)
    small = shrink(model, [torch.tensor([0, 2, 3, 5])], bias_fold="none")
    torch.testing.assert_close(small(x), model(x))


def test_mean_fold_is_exact_for_constant_neurons():
    """Neurons with constant activation are removed exactly when their mean is folded in."""
    model = mlp_net([4, 6, 5, 3], seed=1).double()
    with torch.no_grad():  # neurons 0 and 3 of layer 1 ignore the input: constant ReLU(b) > 0
        model[0].weight[[0, 3]] = 0.0
        model[0].bias[[0, 3]] = torch.tensor([0.7, 1.3], dtype=torch.float64)
    x = torch.rand(50, 4, dtype=torch.float64)
    keep = [torch.tensor([1, 2, 4, 5]), torch.arange(5)]
    folded = shrink(model, keep, bias_fold="mean", data=x)
    torch.testing.assert_close(folded(x), model(x))
    unfolded = shrink(model, keep, bias_fold="none")
    assert not torch.allclose(unfolded(x), model(x))


def test_mean_fold_preserves_the_mean_output():
    """With mean folding, the mean pre-activation of the next layer is unchanged (linearity)."""
    model = mlp_net([5, 8, 3], seed=2).double()
    x = torch.rand(200, 5, dtype=torch.float64)
    small = shrink(model, [torch.tensor([0, 1, 2])], bias_fold="mean", data=x)
    torch.testing.assert_close(small(x).mean(0), model(x).mean(0))


def test_mean_fold_needs_data():
    """bias_fold='mean' without data is a clear error."""
    with pytest.raises(ValueError, match="training inputs"):
        shrink(mlp_net([3, 4, 2], seed=0), [torch.tensor([0])], bias_fold="mean")


def test_unknown_fold_and_bad_indices_are_rejected():
    """An unknown fold or out-of-range / duplicate indices raise ValueError."""
    model = mlp_net([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match="bias_fold"):
        shrink(model, [torch.tensor([0])], bias_fold="median")
    for idx in ([0, 0], [4], []):
        with pytest.raises(ValueError, match="keep-indices"):
            shrink(model, [torch.tensor(idx, dtype=torch.long)], bias_fold="none")


def test_value_at_is_the_input_of_a_module():
    """value_at(model, x, 4) is ReLU(W_2 ReLU(W_1 x)): what the third Linear reads."""
    model = mlp_net([4, 5, 3, 2], seed=0)
    x = torch.rand(7, 4)
    expected = torch.relu(model[2](torch.relu(model[0](x))))
    torch.testing.assert_close(value_at(model, x, 4), expected)


def test_mid_fold_uses_the_interval_midpoint():
    """bias_fold='mid' adds W[:, removed] @ mid(ReLU([z])) over the data box to the next bias."""
    from iaprune.adjoint import interval_sweep
    from iaprune.significance import data_box

    model = mlp_net([3, 4, 2], seed=0).double()
    x = torch.rand(30, 3, dtype=torch.float64)
    small = shrink(model, [torch.tensor([0, 1])], bias_fold="mid", data=x)
    value = interval_sweep(model, data_box(x), seed="sum")[0].value
    mid = (value.lower.clamp(min=0) + value.upper.clamp(min=0)) / 2
    expected = model[2].bias + model[2].weight[:, [2, 3]] @ mid[[2, 3]]
    torch.testing.assert_close(small[2].bias, expected)


def test_linear_fold_is_exact_for_neurons_that_are_combinations_of_kept_ones():
    """A removed ReLU neuron equal to a sum of kept ones is folded (almost) exactly."""
    model = mlp_net([4, 3, 2], seed=0).double()
    with torch.no_grad():  # neuron 2 = ReLU(z0) + ReLU(z1) when z0, z1 > 0 on all inputs
        model[0].weight[:2] = model[0].weight[:2].abs()
        model[0].bias[:2] = 0.1
        model[0].weight[2] = model[0].weight[0] + model[0].weight[1]
        model[0].bias[2] = 0.2
    x = torch.rand(500, 4, dtype=torch.float64)
    small = shrink(model, [torch.tensor([0, 1])], bias_fold="linear", data=x)
    torch.testing.assert_close(small(x), model(x), atol=1e-2, rtol=0)
    mean_only = shrink(model, [torch.tensor([0, 1])], bias_fold="mean", data=x)
    assert (mean_only(x) - model(x)).abs().max() > 5 * (small(x) - model(x)).abs().max()


def test_linear_fold_is_exact_for_constant_neurons():
    """Constant neurons are folded exactly by the linear fold too (it generalises mean)."""
    model = mlp_net([4, 6, 3], seed=1).double()
    with torch.no_grad():
        model[0].weight[[0, 3]] = 0.0
        model[0].bias[[0, 3]] = torch.tensor([0.7, 1.3], dtype=torch.float64)
    x = torch.rand(80, 4, dtype=torch.float64)
    small = shrink(model, [torch.tensor([1, 2, 4, 5])], bias_fold="linear", data=x)
    torch.testing.assert_close(small(x), model(x))


# ---- input features -------------------------------------------------------------------------

def _constant_inputs(fold: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """A model, the same with its constant inputs 0 and 3 removed by `fold`, and the data."""
    model = mlp_net([6, 5, 4, 3], seed=2).double()
    x = torch.rand(60, 6, dtype=torch.float64)
    x[:, 0], x[:, 3] = 0.25, 0.0  # a grey pixel and a border pixel: the same in every image
    keep = [torch.tensor([1, 2, 4, 5]), torch.arange(5), torch.arange(4)]
    return model, shrink(model, keep, fold, data=x, inputs=True), x


@pytest.mark.parametrize("fold", ["mean", "linear", "mid"])
def test_removing_constant_inputs_folds_them_exactly(fold):
    """Constant input features are folded into the first Linear's bias: the pruned model,
    given the full input, computes the same outputs (mean, linear, and mid over the data box)."""
    model, small, x = _constant_inputs(fold)
    assert small[1].in_features == 4 and small[0].indices.tolist() == [1, 2, 4, 5]
    torch.testing.assert_close(small(x), model(x))


def test_removing_inputs_without_a_fold_drops_their_contribution():
    """With bias_fold='none' only the zero-valued feature is removed exactly."""
    model, small, x = _constant_inputs("none")
    assert not torch.allclose(small(x), model(x))


def test_pruning_inputs_again_composes_the_selection():
    """A second input prune keeps indices into the original input: one Select that reads
    features 2 and 5 of the six, and the network still takes the full input."""
    model = mlp_net([6, 5, 3], seed=0)
    once = shrink(model, [torch.tensor([1, 2, 4, 5]), torch.arange(5)], "none", inputs=True)
    twice = shrink(once, [torch.tensor([1, 3]), torch.arange(5)], "none", inputs=True)
    assert [type(m).__name__ for m in twice].count("Select") == 1
    assert twice[0].indices.tolist() == [2, 5] and units(twice, inputs=True) == [2, 5]
    x = torch.rand(7, 6)
    expected = torch.nn.functional.linear(x[:, [2, 5]], model[0].weight[:, [2, 5]],
                                          model[0].bias)
    torch.testing.assert_close(twice(x), model[2](torch.relu(expected)))


def test_global_plan_splits_the_total_by_score_across_groups():
    """keep_global takes the highest scores of all groups together, ascending per group."""
    scores = [torch.tensor([0.1, 5.0, 0.2, 4.0]), torch.tensor([3.0, 0.05, 2.0])]
    assert [p.tolist() for p in keep_global(scores, 4)] == [[1, 3], [0, 2]]
    assert [p.tolist() for p in keep_global(scores, 2)] == [[1], [0]]


def test_global_plan_keeps_at_least_one_unit_per_group():
    """A group whose every score is below the others' keeps its best unit all the same."""
    scores = [torch.tensor([9.0, 8.0, 7.0, 6.0]), torch.tensor([0.1, 0.3, 0.2])]
    assert [p.tolist() for p in keep_global(scores, 3)] == [[0, 1], [1]]


@pytest.mark.parametrize("total", [1, 8])
def test_global_plan_rejects_impossible_totals(total):
    """Fewer units than groups, or more than there are, is a ValueError."""
    with pytest.raises(ValueError, match="cannot keep"):
        keep_global([torch.rand(4), torch.rand(3)], total)
