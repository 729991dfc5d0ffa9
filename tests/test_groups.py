"""Prunable groups and the one surgery (shrink) for every group kind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iaprune.groups import groups, units
from iaprune.model import from_module, mlp_net
from iaprune.prune import keep_indices, shrink
from iaprune.spec import PRESETS, build, spec_of

D = torch.float64


def test_groups_of_an_mlp_are_its_hidden_layers():
    model = mlp_net([12, 7, 5, 3])
    found = groups(model)
    assert [(g.kind, g.producer, g.consumer, g.size) for g in found] == [
        ("neuron", 0, 2, 7), ("neuron", 2, 4, 5)]
    assert units(model) == [7, 5] and units(model, inputs=True) == [12, 7, 5]


def test_lenet5_groups_are_conv_channels_then_hidden_neurons():
    found = groups(build(PRESETS["lenet5"]([1, 28, 28], 10)))
    assert [(g.kind, g.size, g.block) for g in found] == [
        ("channel", 20, 1), ("channel", 50, 16), ("neuron", 500, 1)]


def test_a_batchnorm_after_the_producer_belongs_to_the_group():
    spec = {"input": [6], "layers": [{"type": "linear", "out": 5}, "batchnorm", "relu",
                                      {"type": "linear", "out": 2}]}
    (group,) = groups(build(spec))
    assert group.batchnorms == (1,) and group.activation == 2


@pytest.mark.parametrize("fold", ["linear", "mean", "mid", "none"])
def test_shrink_removes_rows_and_columns_and_never_mutates_its_input(fold):
    model = mlp_net([6, 5, 4, 3], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = shrink(model, [torch.tensor([0, 2, 4]), torch.tensor([1, 3])], fold,
                   data=torch.rand(50, 6))
    assert units(small) == [3, 2] and small(torch.rand(4, 6)).shape == (4, 3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def _dead_channel_cnn() -> nn.Module:
    """A CNN whose conv channel 1 is dead (ReLU of a very negative constant)."""
    spec = {"input": [1, 8, 8], "layers": [
        {"type": "conv2d", "out": 3, "kernel": 3}, "batchnorm", "relu",
        {"type": "maxpool2d", "kernel": 2}, {"type": "conv2d", "out": 4, "kernel": 2}, "relu",
        "flatten", {"type": "linear", "out": 5}, "relu", {"type": "linear", "out": 2}]}
    model = build(spec, seed=0).double().eval()
    with torch.no_grad():
        model[0].weight[1] = 0.0
        model[0].bias[1] = -100.0
    return model


@pytest.mark.parametrize("fold", ["linear", "mean", "none"])
def test_removing_a_dead_channel_leaves_outputs_unchanged(fold):
    model = _dead_channel_cnn()
    x = torch.rand(20, 64, dtype=D)
    small = shrink(model, [torch.tensor([0, 2]), torch.arange(4), torch.arange(5)], fold, data=x)
    assert units(small) == [2, 4, 5] and small[1].num_features == 2
    torch.testing.assert_close(small(x), model(x))


def test_a_constant_channel_folds_exactly_across_a_flatten():
    """A channel whose post-activation map is constant is folded into the consumer's bias
    (per position across the Flatten): outputs are unchanged."""
    spec = {"input": [1, 6, 6], "layers": [
        {"type": "conv2d", "out": 3, "kernel": 3}, "relu", "flatten",
        {"type": "linear", "out": 4}, "relu", {"type": "linear", "out": 2}]}
    model = build(spec, seed=1).double()
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = 0.7  # relu(0.7) everywhere
    x = torch.rand(30, 36, dtype=D)
    for fold in ("mean", "linear"):
        small = shrink(model, [torch.tensor([0, 1]), torch.arange(4)], fold, data=x)
        assert small[3].in_features == 2 * 16
        torch.testing.assert_close(small(x), model(x))


def test_a_constant_channel_folds_exactly_into_a_conv_consumer_without_padding():
    spec = {"input": [1, 7, 7], "layers": [
        {"type": "conv2d", "out": 3, "kernel": 2}, "relu", {"type": "conv2d", "out": 2,
                                                             "kernel": 3, "bias": False},
        "relu", "flatten", {"type": "linear", "out": 2}]}
    model = build(spec, seed=2).double()
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = 1.5
    x = torch.rand(25, 49, dtype=D)
    small = shrink(model, [torch.tensor([1, 2]), torch.arange(2)], "mean", data=x)
    assert small[2].in_channels == 2 and small[2].bias is not None
    torch.testing.assert_close(small(x), model(x))
    assert spec_of(small)["layers"][2]["bias"] is True


def test_keep_indices_is_a_pure_deterministic_plan():
    scores = [torch.tensor([0.5, 0.1, 0.5, 0.9]), torch.tensor([1.0, 2.0])]
    assert [p.tolist() for p in keep_indices(scores, [2, 1])] == [[0, 3], [1]]
    with pytest.raises(ValueError, match="cannot keep 5"):
        keep_indices(scores, [5, 1])


class SimpleNN(nn.Module):
    """The thesis's own model: fc1/fc2/fc3 attributes, F.relu and a view in forward."""

    def __init__(self, n_in: int = 64, h1: int = 16, h2: int = 8):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_in, h1), nn.Linear(h1, h2), nn.Linear(h2, 10)

    def forward(self, x):
        x = x.view(len(x), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class UserCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


def test_a_users_simple_nn_imports_as_the_mlp_spec():
    user = SimpleNN()
    net = from_module(user, [1, 8, 8])
    assert spec_of(net) == spec_of(mlp_net([64, 16, 8, 10], input_shape=[1, 8, 8]))
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(net(x), user(x))


def test_a_users_cnn_imports_with_functional_calls():
    user = UserCNN()
    net = from_module(user, [1, 8, 8])
    assert [layer["type"] for layer in spec_of(net)["layers"]] == [
        "conv2d", "batchnorm", "relu", "maxpool2d", "flatten", "linear"]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x) + x)


class Softsign(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.softsign(self.fc1(x)))


@pytest.mark.parametrize("module, message", [(Residual(), "unsupported operation 'add'"),
                                             (Softsign(), "unsupported operation 'softsign'")])
def test_an_unsupported_step_is_a_type_error_naming_it(module, message):
    with pytest.raises(TypeError, match=message):
        from_module(module, [4])
