"""The softmax and log_softmax layer types: a final normaliser after the logits. Interval rules
checked in float64 against torch; the loss and the significance are taken on the logits; the
pytorch/examples MNIST Net imports verbatim, trains, is scored, pruned and loaded back."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import spec_workflow
from torch import nn

import iaprune_runtime as deploy
from iaprune.adjoint import sweep
from iaprune.checkpoint import save_checkpoint
from iaprune.data import Dataset, Split
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.prune import keep_indices, shrink
from iaprune.significance import ScoreData, interval_adjoint, taylor
from iaprune.spec import SpecError, build, check_spec, spec_of
from iaprune.trainer import TrainConfig, train
from iaprune.validator import evaluate_split
from iaprune_runtime.layers import entry
from iaprune_runtime.layers.softmax import logits_of

D = torch.float64
TORCH = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}
MLP = [{"type": "linear", "out": 6}, "relu", {"type": "linear", "out": 4}]


def vjp(name: str, z: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """seed @ ∂f(z)/∂z by autograd, for each row of seed: (k, n)."""
    z = z.clone().requires_grad_(True)
    y = TORCH[name](z, -1)
    return torch.stack([torch.autograd.grad(y, z, s, retain_graph=True)[0] for s in seed])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_zero_width_boxes_give_torchs_values_and_adjoints(name):
    """A point row gives torch's values exactly, and the adjoint of a point seed is autograd's."""
    z = torch.tensor([[-3.0, 0.5, 2.0, 30.0], [0.0, 0.0, 0.0, 0.0]], dtype=D)
    box = Interval.point(z)
    out = entry(name).forward(nn.Softmax(1), box)
    assert torch.equal(out.lower, TORCH[name](z, -1)) and torch.equal(out.upper, out.lower)
    seed = torch.eye(4, dtype=D)
    adjoint = entry(name).backward(nn.Softmax(1), box, Interval.point(seed[None].expand(2, 4, 4)))
    for row in range(2):
        torch.testing.assert_close(adjoint.lower[row], vjp(name, z[row], seed))
        torch.testing.assert_close(adjoint.upper[row], vjp(name, z[row], seed))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_points_inside_a_box_have_values_and_adjoints_inside_its_intervals(name):
    """For random boxes of logits and random adjoint boxes, every sampled point's torch value and
    vector-Jacobian product with a sampled adjoint lie inside the intervals."""
    g = torch.Generator().manual_seed(0)
    lower = torch.randn(20, 5, generator=g, dtype=D) * 4
    upper = lower + torch.rand(20, 5, generator=g, dtype=D) * torch.tensor([3.0, 0.0, 1e-3, 1.0,
                                                                           5.0], dtype=D)
    seed_lo = torch.randn(20, 3, 5, generator=g, dtype=D)
    seed_hi = seed_lo + torch.rand(20, 3, 5, generator=g, dtype=D)
    box, seeds = Interval(lower, upper), Interval(seed_lo, seed_hi)
    out = entry(name).forward(nn.Softmax(1), box)
    adjoint = entry(name).backward(nn.Softmax(1), box, seeds)
    for _ in range(10):
        z = lower + torch.rand(lower.shape, generator=g, dtype=D) * (upper - lower)
        s = seed_lo + torch.rand(seed_lo.shape, generator=g, dtype=D) * (seed_hi - seed_lo)
        assert bool(out.contains(TORCH[name](z, -1)).all())
        for row in range(20):
            assert bool(adjoint[row].contains(vjp(name, z[row], s[row]), 1e-12).all())


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_a_trailing_normaliser_is_allowed_after_the_logits_only(name):
    """softmax/log_softmax may be the last layer after the logits layer, nowhere else."""
    spec = check_spec({"input": [5], "layers": [*MLP, name]})
    assert spec["layers"][-1] == {"type": name}
    with pytest.raises(SpecError, match="may only be the last layer"):
        check_spec({"input": [5], "layers": [MLP[0], name, *MLP[1:]]})
    with pytest.raises(SpecError, match="optionally followed by one"):
        check_spec({"input": [5], "layers": [*MLP, "relu", name]})


def test_the_sweep_seeds_the_logits_before_the_normaliser():
    """With a trailing log_softmax the sweep's adjoints equal those of the network without it
    (the significance is taken on the logits), and the normaliser's value is still swept."""
    net = build({"input": [5], "layers": [*MLP, "log_softmax"]}, seed=0).double().eval()
    box = Interval(torch.zeros(5, dtype=D), torch.ones(5, dtype=D))
    with_it, without = sweep(net, box, lowest=0), sweep(list(net)[:-1], box, lowest=0)
    assert with_it.adjoints[-1] is None
    for a, b in zip(with_it.adjoints[:-1], without.adjoints, strict=True):
        assert torch.equal(a.lower, b.lower) and torch.equal(a.upper, b.upper)
    x = torch.rand(7, 5, dtype=D)
    assert bool(with_it.values[-1].contains(net(x)).all())


def blob_data(n: int = 96) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 1).long() + 2 * (x[:, 2] > 0.5).long()
    split = Split(x, y)
    return Dataset("blobs", split, split, split, (5,), 4, 1.0, ("0", "1", "2", "3"))


def test_training_with_a_trailing_softmax_takes_the_loss_on_the_logits():
    """The same network with and without a trailing softmax trains to the same weights, and its
    evaluation and Taylor scores are the logits' (cross-entropy is never taken on
    probabilities)."""
    plain = build({"input": [5], "layers": MLP}, seed=0)
    normed = build({"input": [5], "layers": [*MLP, "softmax"]}, seed=0)
    data = blob_data()
    config = TrainConfig(epochs=2, batch_size=32, shift=0, precision="fp32")
    train(plain, data, config, quiet=True)
    train(normed, data, config, quiet=True)
    for a, b in zip(plain.state_dict().values(), normed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert evaluate_split(plain, data.val) == evaluate_split(normed, data.val)
    torch.testing.assert_close(logits_of(normed, data.val.x), plain(data.val.x))
    scores = ScoreData(data.train.x, data.train.y)
    for a, b in zip(taylor(plain, scores), taylor(normed, scores), strict=True):
        assert torch.equal(a, b)


def test_predict_reports_probabilities_of_the_logits():
    """The runtime's predict gives softmax(logits) as probabilities, also for a softmax model."""
    spec = {"input": [5], "layers": [*MLP, "softmax"]}
    net = deploy.DeployedNet(spec)
    net.load_state_dict(build(spec, seed=0).state_dict())
    net.input_spec = deploy.InputSpec(shape=(5,), scale=1.0, dtype="float32")
    x = torch.rand(3, 5)
    result = deploy.predict(net, x.numpy(), raw=False)
    torch.testing.assert_close(result.probabilities, net.eval()(x))


class MNISTNet(nn.Module):
    """The pytorch/examples mnist/main.py Net, as published."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def test_the_pytorch_examples_mnist_net_imports_trains_prunes_and_loads_back(tmp_path):
    """The official MNIST Net imports verbatim (log_softmax kept), trains on the logits, is
    scored by the interval adjoint, shrunk, deployed, and loads back into its own class."""
    user = MNISTNet()
    net = from_module(user, [1, 28, 28])
    assert [layer["type"] for layer in spec_of(net)["layers"]] == [
        "conv2d", "relu", "conv2d", "relu", "maxpool2d", "dropout", "flatten", "linear", "relu",
        "dropout", "linear", "log_softmax"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 784, generator=g)
    y = (x[:, :392].mean(1) > x[:, 392:].mean(1)).long() * 3
    split = Split(x, y)
    data = Dataset("toy", split, split, split, (1, 28, 28), 10, 1 / 255,
                   tuple(map(str, range(10))))
    result = train(net, data, TrainConfig(epochs=1, batch_size=16, shift=0, precision="fp32"),
                   quiet=True)
    assert result.best is not None
    scores = interval_adjoint(net, Interval(torch.zeros(784), torch.ones(784)))
    assert [len(s) for s in scores] == [32, 64, 128]
    small = shrink(net, keep_indices(scores, [16, 40, 64]), "mean", data=x)
    assert small[7].in_features == 40 * 12 * 12 and isinstance(small[-1], nn.LogSoftmax)
    probe = x[:5]
    path = tmp_path / "pruned.pth"
    save_checkpoint(path, small)
    mine = deploy.load_pruned_model(copy.deepcopy(user), path)
    with torch.no_grad():
        torch.testing.assert_close(mine(probe.view(-1, 1, 28, 28)), small.eval()(probe))


def test_the_workflow_prunes_a_network_of_the_new_layer_types_ending_in_log_softmax(tmp_path):
    """--arch with gelu, a padded max pool, dropout2d, silu, global average pooling, elu and a
    final log_softmax: the engine trains, prunes per schedule row, validates and bundles it."""
    from iaprune.groups import units
    from iaprune_runtime.__main__ import main as deploy_main

    result, model = spec_workflow(tmp_path, [
        {"type": "conv2d", "out": 6, "kernel": 3, "padding": 1}, "gelu",
        {"type": "maxpool2d", "kernel": 3, "stride": 2, "padding": 1}, "dropout2d",
        {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, "silu", "global_avgpool",
        {"type": "linear", "out": 12}, "elu", {"type": "linear", "out": 10}, "log_softmax"],
        [(6, 8, 12), (4, 6, 8)])
    assert units(model) == [4, 6, 8] and isinstance(model[-1], nn.LogSoftmax)
    assert all(r["Test_Accuracy"] > 10 for r in result.rows)  # better than a constant predictor
    assert deploy_main(["bundle", str(result.session.checkpoint(1)), "--out",
                        str(tmp_path / "b")]) == 0
