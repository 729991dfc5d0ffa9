"""Graph networks: specs with named inputs, the add/concat nodes, the interval sweep over a graph,
coupled groups, surgery and folds on graphs, and the import of a user's ResNet and DenseNet.

Soundness is checked in float64 with torch as the oracle, as in test_adjoint.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import spec_workflow
from torch import nn

from iaprune.adjoint import sweep
from iaprune.groups import groups, units
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.prune import keep_indices, shrink
from iaprune.significance import CRITERIA, ScoreData, score
from iaprune.spec import SpecError, build, check_spec, spec_of

D = torch.float64


def residual_spec(channels: int = 4, act: str = "relu") -> dict:
    """stem conv -> act -> conv -> add(stem act, conv) -> act -> concat(it, conv 1x1 of it)
    -> avgpool -> flatten -> linear: an add and a concat in one small graph."""
    return {"input": [2, 6, 6], "layers": [
        {"type": "conv2d", "out": channels, "kernel": 3, "padding": 1},
        {"type": act, "name": "a"},
        {"type": "conv2d", "out": channels, "kernel": 3, "padding": 1},
        {"type": "batchnorm", "name": "b"},
        {"type": "add", "inputs": ["a", "b"]},
        {"type": act, "name": "s"},
        {"type": "conv2d", "out": 3, "kernel": 1, "name": "side"},
        {"type": "concat", "inputs": ["s", "side"]},
        {"type": "avgpool2d", "kernel": 2},
        "flatten",
        {"type": "linear", "out": 3}]}


def randomised(spec: dict, seed: int) -> nn.Module:
    """The network of `spec` in float64 with random BatchNorm statistics, in eval mode."""
    net = build(spec, seed=seed).double().eval()
    g = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g, dtype=D))
            module.running_var.copy_(torch.rand(module.num_features, generator=g, dtype=D) + .5)
    return net


# ---- specs -------------------------------------------------------------------------------------

def test_a_chain_spec_means_what_it_meant_and_gains_no_keys():
    spec = {"input": [4], "layers": [{"type": "linear", "out": 3}, "relu",
                                      {"type": "linear", "out": 2}]}
    net = build(spec)
    assert net.wiring is None and net.names is None
    assert spec_of(net) == check_spec(spec)
    assert all(set(layer) <= {"type", "out", "bias"} for layer in spec_of(net)["layers"])


def test_a_graph_spec_round_trips_through_a_net():
    spec = check_spec(residual_spec())
    net = build(spec)
    assert spec_of(net) == spec
    assert net.wiring[4] == (2, 4) and net.wiring[7] == (6, 7)


@pytest.mark.parametrize("change, message", [
    (lambda layers: layers[4].update(inputs=["a", "nowhere"]), "'nowhere' is not the name"),
    (lambda layers: layers[4].update(inputs=["a", "side"]), "comes later"),
    (lambda layers: layers[4].update(inputs=["a"]), "joins two or more inputs"),
    (lambda layers: layers[6].update(inputs=["a", "s"]), "reads one input"),
    (lambda layers: layers[7].update(inputs=["s", "s"]), "never read"),
    (lambda layers: layers[3].update(name="a"), "used twice"),
    (lambda layers: layers[2].update(out=5), r"a skip connection \(add\) needs inputs of one"),
])
def test_a_bad_graph_is_one_spec_error_naming_the_layer(change, message):
    spec = residual_spec()
    change(spec["layers"])
    with pytest.raises(SpecError, match=message):
        build(spec)


# ---- the interval sweep over a graph -----------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_every_point_value_and_derivative_lies_inside_the_graph_sweep(seed, act):
    net = randomised(residual_spec(3 + seed % 2, act), seed)
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(1, 2, 6, 6, generator=g, dtype=D)
    box = Interval(centre - 0.3, centre + 0.3)
    result = sweep(net, box)
    points = (box.lower + torch.rand(64, 2, 6, 6, generator=g, dtype=D)
              * box.width).requires_grad_(True)
    values = net.values(points, keep=tuple(range(len(net) + 1)))
    for i, value in enumerate(values):
        assert result.values[i].contains(value.detach(), 1e-9).all(), i
    for k in range(3):
        grads = torch.autograd.grad(values[-1][:, k].sum(), values[:-1], retain_graph=True)
        for i, grad in enumerate(grads):
            adjoint = result.adjoints[i][:, k]
            assert adjoint.contains(grad, 1e-9).all(), (k, i)


def test_a_point_box_reproduces_the_graph_forward():
    net = randomised(residual_spec(), 0)
    x = torch.rand(5, 2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=D)
    result = sweep(net, Interval.point(x))
    assert torch.allclose(result.values[-1].lower, net(x), atol=1e-12)
    assert torch.allclose(result.values[-1].upper, net(x), atol=1e-12)


# ---- coupled groups, surgery and folds ---------------------------------------------------------

def test_channels_tied_by_an_add_are_one_group_and_a_concat_reads_blocks():
    net = build(residual_spec())
    found = groups(net)
    assert [(g.producers, g.size) for g in found] == [((0, 2), 4), ((6,), 3)]
    stream, side = found
    assert stream.coupled and stream.batchnorms == (3,)
    assert [(u.module, u.offset, u.units, u.block) for u in stream.readers] == [
        (2, 0, 4, 1), (6, 0, 4, 1), (10, 0, 7, 9)]
    assert [(u.module, u.offset, u.units, u.block) for u in side.readers] == [(10, 4, 7, 9)]


@pytest.mark.parametrize("criterion", sorted(set(CRITERIA) - {"apoz"}))
def test_every_criterion_scores_coupled_groups_once_per_unit(criterion):
    net = randomised(residual_spec(act="tanh"), 0)
    x = torch.rand(40, 72, dtype=D)
    scores = score(criterion, net, ScoreData(x, torch.randint(0, 3, (40,))))
    assert [len(s) for s in scores] == units(net) == [4, 3]


@pytest.mark.parametrize("fold", ["linear", "mean", "mid", "none"])
def test_shrink_cuts_a_graph_and_never_mutates_it(fold):
    net = randomised(residual_spec(), 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(40, 2, 6, 6, dtype=D)
    small = shrink(net, [torch.tensor([0, 2]), torch.tensor([1])], fold, data=x)
    assert units(small) == [2, 1] and small(x).shape == (40, 3)
    assert spec_of(small)["layers"][4]["inputs"] == ["a", "b"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])


def _kill(net: nn.Module, channel: int) -> None:
    """Make stream channel `channel` of the residual spec exactly 0 everywhere: the stem's
    filter is 0 with a very negative bias (the ReLU gives 0) and the branch's BatchNorm
    outputs a very negative constant (the ReLU after the add gives 0)."""
    with torch.no_grad():
        net[0].weight[channel] = 0.0
        net[0].bias[channel] = -100.0
        net[3].weight[channel] = 0.0
        net[3].bias[channel] = -100.0


@pytest.mark.parametrize("fold", ["linear", "mean", "none"])
def test_removing_a_dead_coupled_channel_leaves_the_outputs_unchanged(fold):
    net = randomised(residual_spec(), 0)
    _kill(net, 1)
    x = torch.rand(30, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=D)
    small = shrink(net, [torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2])], fold, data=x)
    assert units(small) == [3, 3]
    assert torch.allclose(small(x), net(x), atol=1e-10)


def test_removing_a_dead_channel_read_through_a_concat_leaves_the_outputs_unchanged():
    net = randomised(residual_spec(), 0)
    with torch.no_grad():  # side channel 1 is dead: its ReLU-less 1x1 conv outputs 0
        net[6].weight[1] = 0.0
        net[6].bias[1] = 0.0
    x = torch.rand(30, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=D)
    small = shrink(net, [torch.arange(4), torch.tensor([0, 2])], "linear", data=x)
    assert torch.allclose(small(x), net(x), atol=1e-10)


# ---- a user's own graph module -----------------------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision's BasicBlock as users write it: a 1x1-conv shortcut when the shape changes,
    the identity (an empty nn.Sequential) otherwise, `out += shortcut` then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.linear = nn.Linear(16, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.avg_pool2d(out, out.size(3))
        return self.linear(out.view(out.size(0), -1))


class DenseBlock(nn.Module):
    """A DenseNet-style block: every conv reads the concatenation of all maps before it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.c1 = nn.Conv2d(4, 3, 3, padding=1)
        self.c2 = nn.Conv2d(7, 3, 3, padding=1)
        self.fc = nn.Linear(10 * 4 * 4, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = torch.cat([x, F.relu(self.c1(x))], 1)
        x = torch.cat([x, F.relu(self.c2(x))], 1)
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


def _trained_like(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return module.double().eval()


def test_a_users_resnet_imports_with_coupled_stream_groups():
    user = _trained_like(TinyResNet())
    net = from_module(user, [3, 8, 8])
    x = torch.rand(6, 3, 8, 8, dtype=D)
    assert torch.allclose(net(x), user(x), atol=1e-12)
    layers = spec_of(net)["layers"]
    adds = [layer for layer in layers if layer["type"] == "add"]
    assert [a["inputs"] for a in adds] == [["layer1.bn2", "relu2"],
                                           ["layer2.bn2", "layer2.shortcut.1"]]
    found = groups(net)
    assert [(g.size, g.coupled) for g in found] == [(8, True), (8, False), (16, False),
                                                   (16, True)]
    small = shrink(net, keep_indices(score("interval_adjoint", net, ScoreData(
        x.flatten(1), torch.zeros(6, dtype=torch.long))), [4, 4, 8, 8]), data=x.flatten(1))
    assert units(small) == [4, 4, 8, 8] and small(x).shape == (6, 5)


def test_a_dense_block_imports_with_concat_offsets():
    user = _trained_like(DenseBlock())
    net = from_module(user, [1, 8, 8])
    x = torch.rand(6, 1, 8, 8, dtype=D)
    assert torch.allclose(net(x), user(x), atol=1e-12)
    found = groups(net)
    assert [[(u.offset, u.units) for u in g.readers] for g in found] == [
        [(0, 4), (0, 7), (0, 10)], [(4, 7), (4, 10)], [(7, 10)]]
    small = shrink(net, [torch.tensor([0, 3]), torch.tensor([1]), torch.tensor([0, 2])],
                   "mean", data=x.flatten(1))
    assert units(small) == [2, 1, 2] and small(x).shape == (6, 4)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block(x) * 2)


class PlusOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x) + 1)


@pytest.mark.parametrize("module, message", [
    (Scaled(), "unsupported operation 'mul'"),
    (PlusOne(), "a skip connection adds two values"),
])
def test_an_unsupported_operation_is_a_type_error_naming_it(module, message):
    with pytest.raises(TypeError, match=message):
        from_module(module, [4])


@pytest.mark.parametrize("cls, shape, keep", [
    (TinyResNet, [3, 8, 8], [[0, 2, 5], [1, 3], [0, 4, 9, 15], [2, 3, 7, 11, 12]]),
    (DenseBlock, [1, 8, 8], [[0, 3], [1], [0, 2]]),
])
def test_a_pruned_graph_loads_back_into_the_users_own_class(tmp_path, cls, shape, keep):
    """A pruned import saved as a checkpoint loads into a fresh instance of the user's class,
    whose own forward then computes the pruned network's outputs."""
    from iaprune import load_pruned_model
    from iaprune.checkpoint import save_checkpoint

    net = from_module(_trained_like(cls()), shape)
    x = torch.rand(8, *shape, dtype=D)
    small = shrink(net, [torch.tensor(k) for k in keep], "linear", data=x.flatten(1))
    path = save_checkpoint(tmp_path / "best_model.pth", small)
    mine = load_pruned_model(cls().double(), path)
    assert (mine(x) - small(x)).abs().max() <= 1e-5


def test_the_workflow_prunes_a_residual_network_from_its_spec_to_a_checked_bundle(tmp_path,
                                                                                   capsys):
    """--arch of a graph spec (an add, a concat, global pooling): the engine trains, prunes the
    coupled group with the others, validates; summary.txt counts the graph's MACs; the bundle
    verifies with torch alone (ONNX included when installed) and predicts."""
    import numpy as np

    from iaprune.validator import main as validate
    from iaprune_runtime.__main__ import main as deploy_main

    result, model = spec_workflow(tmp_path, [
        {"type": "conv2d", "out": 6, "kernel": 3, "padding": 1, "bias": False},
        "batchnorm", {"type": "relu", "name": "stem"},
        {"type": "conv2d", "out": 6, "kernel": 3, "padding": 1, "bias": False},
        "batchnorm", "relu", {"type": "conv2d", "out": 6, "kernel": 3, "padding": 1},
        {"type": "batchnorm", "name": "branch"},
        {"type": "add", "inputs": ["stem", "branch"]}, {"type": "relu", "name": "sum"},
        {"type": "conv2d", "out": 4, "kernel": 1, "name": "side"},
        {"type": "concat", "inputs": ["sum", "side"]}, "global_avgpool",
        {"type": "linear", "out": 10}], [(6, 6, 4), (4, 3, 2)])
    assert units(model) == [4, 3, 2] and model.wiring is not None
    assert all(r["Test_Accuracy"] > 15 for r in result.rows)  # not a constant predictor
    summary = (result.session.final(1) / "summary.txt").read_text()
    assert f"{result.rows[-1]['MACs']:>10}" in summary.splitlines()[-1]
    assert validate([str(result.session.checkpoint(1))]) == 0
    bundle = tmp_path / "b"
    assert deploy_main(["bundle", str(result.session.checkpoint(1)), "--out", str(bundle)]) == 0
    assert deploy_main(["verify", "--bundle", str(bundle)]) == 0
    sample = tmp_path / "x.npy"
    np.save(sample, np.zeros((2, 8, 8), dtype=np.uint8))
    capsys.readouterr()
    assert deploy_main(["predict", "--bundle", str(bundle), str(sample)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock verbatim in structure: one in-place ReLU module called twice,
    `identity = x`, a `downsample` branch, `out += identity`."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def test_a_torchvision_style_block_with_a_relu_module_called_twice_imports():
    user = _trained_like(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(4), nn.ReLU(), TorchvisionBlock(4, 4, 1),
                                       TorchvisionBlock(4, 8, 2), nn.AdaptiveAvgPool2d(1),
                                       nn.Flatten(), nn.Linear(8, 3)))
    net = from_module(user, [1, 8, 8])
    x = torch.rand(5, 1, 8, 8, dtype=D)
    assert torch.allclose(net(x), user(x), atol=1e-12)
    assert [(g.size, g.coupled) for g in groups(net)] == [(4, True), (4, False), (8, False),
                                                         (8, True)]
