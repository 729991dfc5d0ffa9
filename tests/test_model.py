"""Models: the MLP as a spec Net, counting, and the per-layer table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iaprune.groups import units
from iaprune.model import count_params, hidden_label, layer_table, mlp_net, parse_hidden_label
from iaprune.spec import PRESETS, SpecError, build, spec_of


def test_mlp_is_a_plain_stack_of_linears_and_activations():
    """784-256-64-10 ReLU is Linear, ReLU, Linear, ReLU, Linear with logits out."""
    model = mlp_net([784, 256, 64, 10])
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)  # images are flattened


@pytest.mark.parametrize("activation, module", [("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_activation_choice(activation, module):
    """The activation name picks the module between Linears."""
    assert isinstance(mlp_net([4, 3, 2], activation)[1], module)


def test_spec_round_trip_rebuilds_the_same_function():
    """A model rebuilt from its spec and state_dict computes the same outputs."""
    model = mlp_net([6, 5, 4, 3], "tanh", seed=1)
    clone = build(spec_of(model))
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(8, 6)
    torch.testing.assert_close(clone(x), model(x))


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    """The same seed gives the same weights without consuming the global random stream."""
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = mlp_net([5, 4, 2], seed=7)
    assert torch.equal(torch.rand(1), expected)
    b = mlp_net([5, 4, 2], seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_units_params_and_hidden_label():
    """units are read off the layers; params count weights and biases."""
    model = mlp_net([784, 256, 64, 10])
    assert units(model) == [256, 64] and hidden_label(units(model)) == "256-64"
    assert count_params(model) == 784 * 256 + 256 + 256 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("sizes", [[5, 0, 2], [5, 2.5, 2], [5, True, 2]])
def test_bad_sizes_are_rejected(sizes):
    """Hidden sizes must be integers >= 1."""
    with pytest.raises(SpecError):
        mlp_net(sizes)


def test_unknown_activation_is_rejected():
    """An unknown activation names the valid ones."""
    with pytest.raises(ValueError, match="relu"):
        mlp_net([3, 2, 1], "softsign")


def test_layer_table_counts_conv_and_linear_params_and_macs():
    """LeNet-5: 431,080 parameters and 2.29 M multiply-accumulates per image."""
    text, params, macs = layer_table(build(PRESETS["lenet5"]([1, 28, 28], 10)))
    assert params == 431_080 and macs == 288_000 + 1_600_000 + 400_000 + 5_000
    assert "conv2d" in text and text.splitlines()[-1].split()[-1] == str(macs)


def test_units_label_names_the_inputs_read_first_and_parses_back():
    """'54-13' for hidden units, '300:54-13' when the input features are pruned too; both read
    back to (inputs or None, hidden counts)."""
    assert hidden_label([54, 13]) == "54-13" and hidden_label([300, 54, 13], inputs=True) == \
        "300:54-13"
    assert parse_hidden_label("54-13") == (None, [54, 13])
    assert parse_hidden_label("300:54-13") == (300, [54, 13])
