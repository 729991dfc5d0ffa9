"""load_pruned_model checks the user's own forward on the pruned weights: a reshape to a fixed size
is one clear error naming the constant to change, and the model is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import iaprune_runtime as deploy
from iaprune.checkpoint import save_checkpoint
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.prune import keep_indices, shrink
from iaprune.significance import interval_adjoint
from iaprune_runtime.user_model import reshape_constant


class TutorialCNN(nn.Module):
    """A tutorial-style CNN whose forward flattens to a fixed size, x.view(-1, 16*2*2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 16, 2)
        self.fc1, self.fc2 = nn.Linear(16 * 2 * 2, 43), nn.Linear(43, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 16*2*2)
        return self.fc2(F.relu(self.fc1(x)))


class FlexibleCNN(TutorialCNN):
    """The same network with a forward that flattens whatever it gets."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def pruned_checkpoint(user: nn.Module, path, channels: int = 6) -> nn.Module:
    """The user's network imported, scored and shrunk to 4, `channels` and 20 units, saved at
    path."""
    net = from_module(user, [1, 12, 12])
    scores = interval_adjoint(net, Interval(torch.zeros(144), torch.ones(144)))
    small = shrink(net, keep_indices(scores, [4, channels, 20]), "none")
    save_checkpoint(path, small)
    return small


@pytest.mark.parametrize("channels", [6, 8])
def test_a_fixed_reshape_is_one_error_naming_the_constant_and_the_model_is_unchanged(tmp_path,
                                                                                      channels):
    """x.view(-1, 16*2*2) cannot feed the pruned fc1 (channels · 2 · 2 features; with 8 the view
    itself succeeds on a wrong batch and fc1 fails): the error names the constant and its new
    value, and the user's model keeps its sizes and weights."""
    user = TutorialCNN()
    pruned_checkpoint(user, tmp_path / "pruned.pth", channels)
    before = copy.deepcopy(user.state_dict())
    new = channels * 4
    with pytest.raises(ValueError, match=rf"reshapes to 64 features; the pruned network's fc1 "
                                         rf"takes {new}: change the constant 16\*2\*2 \(=64\) to "
                                         rf"{new}"):
        deploy.load_pruned_model(user, tmp_path / "pruned.pth")
    assert user.fc1.in_features == 64 and user.conv2.out_channels == 16
    assert all(torch.equal(before[k], v) for k, v in user.state_dict().items())
    assert user.state_dict().keys() == before.keys()


def test_a_forward_without_fixed_sizes_loads_and_matches(tmp_path):
    """A forward that flattens whatever it gets loads the pruned weights and computes the pruned
    network's outputs."""
    user = FlexibleCNN()
    small = pruned_checkpoint(user, tmp_path / "pruned.pth")
    mine = deploy.load_pruned_model(user, tmp_path / "pruned.pth")
    x = torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), small.eval()(x))


def test_reshape_constant_finds_the_expression_in_a_view():
    """The constant is read from the class's source: the expression inside .view/.reshape."""
    assert reshape_constant(TutorialCNN, 64) == "16*2*2"
    assert reshape_constant(TutorialCNN, 24) is None
    assert reshape_constant(FlexibleCNN, 64) is None
