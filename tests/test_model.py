"""The MLP and its architecture spec."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.model import MLP, build_model, count_params, hidden_label, model_spec


def test_mlp_is_a_plain_stack_of_linears_and_activations():
    """784-256-64-10 ReLU is Linear, ReLU, Linear, ReLU, Linear with logits out."""
    model = MLP([784, 256, 64, 10])
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)  # images are flattened


@pytest.mark.parametrize("activation, module", [("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_activation_choice(activation, module):
    """The activation name picks the module between Linears."""
    assert isinstance(MLP([4, 3, 2], activation)[1], module)


def test_spec_round_trip_rebuilds_the_same_function():
    """A model rebuilt from its spec and state_dict computes the same outputs."""
    model = build_model([6, 5, 4, 3], "tanh", seed=1)
    clone = MLP(**model_spec(model))
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(8, 6)
    torch.testing.assert_close(clone(x), model(x))
    assert model_spec(model) == {"sizes": [6, 5, 4, 3], "activation": "tanh"}


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    """The same seed gives the same weights without consuming the global random stream."""
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_model([5, 4, 2], seed=7)
    assert torch.equal(torch.rand(1), expected)
    b = build_model([5, 4, 2], seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_sizes_params_and_hidden_label():
    """sizes/hidden are read off the layers; params count weights and biases."""
    model = MLP([784, 256, 64, 10])
    assert model.hidden == [256, 64] and hidden_label(model.hidden) == "256-64"
    assert count_params(model) == 784 * 256 + 256 + 256 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("sizes", [[5], [5, 0, 2], [5, 2.5, 2], [5, True, 2]])
def test_bad_sizes_are_rejected(sizes):
    """Sizes must be at least two integers >= 1."""
    with pytest.raises(ValueError):
        MLP(sizes)


def test_unknown_activation_is_rejected():
    """An unknown activation names the valid ones."""
    with pytest.raises(ValueError, match="relu"):
        MLP([3, 2, 1], "gelu")
