"""Pooling with padding, global average pooling (adaptive_avgpool2d, global_avgpool) and
dropout2d (registry entries): spec, import, runtime, interval rules. Soundness in float64 with
torch as the oracle, as in test_leaky_relu.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import iaprune_runtime as deploy
from iaprune.adjoint import sweep
from iaprune.groups import groups
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.prune import keep_indices, shrink
from iaprune.significance import interval_adjoint
from iaprune.spec import SpecError, build, check_spec, describe, spec_of
from iaprune_runtime.layers import entry, entry_of
from iaprune_runtime.layers.global_pool import GlobalAvgPool

D = torch.float64


def jacobian_check(net: nn.Sequential, shape: tuple[int, ...], seed: int = 0, points: int = 12,
                   width: float = 0.5) -> None:
    """Every sampled point's values and autograd input derivatives (per output) lie in the sweep's
    intervals over a random box; a zero-width box reproduces torch's values."""
    net = net.double().eval()
    g = torch.Generator().manual_seed(seed)
    lower = torch.randn(1, *shape, generator=g, dtype=D)
    box = Interval(lower, lower + width)
    result = sweep(net, box, "per_output", lowest=0)
    n_out = result.values[-1].shape[-1]
    for _ in range(points):
        x = (lower + width * torch.rand(lower.shape, generator=g, dtype=D)).requires_grad_(True)
        y = net(x)
        jac = torch.stack([torch.autograd.grad(y[0, k], x, retain_graph=True)[0][0]
                           for k in range(n_out)])
        assert bool(result.values[-1].contains(y.detach(), 1e-12).all())
        assert bool(result.adjoints[0][0].contains(jac, 1e-12).all())
    point = sweep(net, Interval.point(lower), "per_output", lowest=0)
    torch.testing.assert_close(point.values[-1].lower, net(lower).detach())


PADDED = {"input": [2, 7, 7], "layers": [
    {"type": "conv2d", "out": 3, "kernel": 3, "padding": 1}, "relu",
    {"type": "maxpool2d", "kernel": 3, "stride": 2, "padding": 1},
    {"type": "conv2d", "out": 4, "kernel": 2}, "relu",
    {"type": "avgpool2d", "kernel": 2, "stride": 1, "padding": 1},
    "flatten", {"type": "linear", "out": 3}]}
GLOBAL = {"input": [2, 6, 6], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3}, "silu", {"type": "dropout2d", "p": 0.2},
    {"type": "conv2d", "out": 5, "kernel": 3}, "relu", "global_avgpool",
    {"type": "linear", "out": 3}]}
ADAPTIVE = {"input": [2, 6, 6], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3}, "relu", "adaptive_avgpool2d", "flatten",
    {"type": "linear", "out": 3}]}


@pytest.mark.parametrize("spec", [PADDED, GLOBAL, ADAPTIVE], ids=["padded", "global", "adaptive"])
def test_the_sweep_encloses_values_and_autograds_jacobian(spec):
    """Through padded max/avg pools, global/adaptive average pooling and dropout2d, the sweep
    encloses every sampled point's outputs and input derivatives."""
    jacobian_check(build(spec, seed=0), tuple(spec["input"]))


def test_padded_pools_build_torchs_modules_and_shapes():
    """maxpool2d/avgpool2d padding gives torch's module and output shapes."""
    net = build(PADDED, seed=0).eval()
    assert net[2].padding == 1 and net[5].padding == 1 and net[5].count_include_pad
    x = torch.randn(3, 2, 7, 7)
    h = net[1](net[0](x))
    assert net[2](h).shape == (3, 3, 4, 4)
    assert net(x).shape == (3, 3)


def test_specs_without_padding_stay_as_they_were():
    """A pool spec without padding checks, describes and reads back without a padding field, and
    inference takes the fast strided-maxima path."""
    spec = check_spec({"input": [1, 4, 4], "layers": [{"type": "maxpool2d", "kernel": 2},
                                                      "flatten", {"type": "linear", "out": 2}]})
    assert spec["layers"][0] == {"type": "maxpool2d", "kernel": 2, "stride": 2}
    assert describe(spec).startswith("maxpool2d 2 2, flatten")
    assert spec_of(build(spec)) == spec
    called = []
    pool = build(spec)[0]
    pool.forward = lambda x: called.append(1)  # torch's pool is not called at inference
    with torch.no_grad():
        entry_of(pool).run(pool, torch.randn(1, 1, 4, 4))
    assert called == []


def test_padded_max_pool_runs_torchs_pool_at_inference():
    """With padding, inference runs torch's own pool (padding is -inf there) with its values."""
    pool = nn.MaxPool2d(3, 2, 1)
    x = -torch.rand(2, 3, 5, 5)  # all negative: a zero padding would win every border window
    with torch.no_grad():
        assert torch.equal(entry("maxpool2d").run(pool, x), pool(x))


@pytest.mark.parametrize(("layer", "match"), [
    ({"type": "maxpool2d", "kernel": 2, "padding": 2}, "exceeds half the kernel"),
    ({"type": "avgpool2d", "kernel": 3, "padding": -1}, "padding must be an integer >= 0")])
def test_a_bad_padding_is_a_spec_error(layer, match):
    with pytest.raises(SpecError, match=match):
        check_spec({"input": [1, 6, 6], "layers": [layer, "flatten", {"type": "linear", "out": 2}]})


@pytest.mark.parametrize(("module", "match"), [
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode=True"),
    (nn.MaxPool2d(3, dilation=2), "dilation=2"),
    (nn.AvgPool2d(3, padding=1, count_include_pad=False), "count_include_pad=False"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
    (nn.AdaptiveAvgPool2d(2), "output_size=2")])
def test_unsupported_pool_settings_are_named(module, match):
    """Settings a spec cannot hold are TypeErrors naming them."""
    with pytest.raises(TypeError, match=match):
        entry_of(module).read(module)


class UserPools(nn.Module):
    """Padded pools, dropout2d and a global mean written as calls and modules."""

    def __init__(self, keepdim: bool = False):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3)
        self.pool, self.drop, self.fc = nn.MaxPool2d(3, 2, 1), nn.Dropout2d(0.1), nn.Linear(6, 3)
        self.keepdim = keepdim

    def forward(self, x):
        x = self.drop(self.pool(F.relu(self.conv1(x))))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2, 1, padding=1)
        x = F.dropout2d(x, 0.2, training=self.training)
        if self.keepdim:
            return self.fc(torch.flatten(x.mean((-2, -1), keepdim=True), 1))
        return self.fc(torch.mean(x, dim=(2, 3)))


@pytest.mark.parametrize("keepdim", [False, True])
def test_from_module_reads_pools_dropout2d_and_means_and_prunes(keepdim):
    """A user's padded pools, Dropout2d/F.dropout2d and x.mean((2, 3)) import, compute the
    module's outputs, are scored, shrunk and deployed with the same outputs."""
    user = UserPools(keepdim)
    net = from_module(user, [1, 8, 8])
    kinds = [layer["type"] for layer in spec_of(net)["layers"]]
    assert kinds == ["conv2d", "relu", "maxpool2d", "dropout2d", "conv2d", "relu", "avgpool2d",
                     "dropout2d", *(["adaptive_avgpool2d", "flatten"] if keepdim else
                                    ["global_avgpool"]), "linear"]
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(net(x), user.eval()(x))
    assert [(g.kind, g.size, g.block) for g in groups(net)] == [("channel", 4, 1),
                                                                ("channel", 6, 1)]
    scores = interval_adjoint(net, Interval(torch.zeros(64), torch.ones(64)))
    small = shrink(net, keep_indices(scores, [3, 4]), "linear", data=torch.rand(40, 64))
    assert small[-1].in_features == 4
    deployed = deploy.DeployedNet(small.spec)
    deployed.load_state_dict(small.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(deployed.eval()(x), small.eval()(x))


def test_removing_a_dead_channel_before_global_pooling_keeps_the_outputs():
    """A channel whose consumer column is zero contributes nothing: removing it (fold none)
    leaves the outputs unchanged."""
    net = build(GLOBAL, seed=0).eval()
    with torch.no_grad():
        net[-1].weight[:, 2] = 0
    small = shrink(net, [torch.arange(4), torch.tensor([0, 1, 3, 4])], "none")
    x = torch.rand(6, 2, 6, 6)
    torch.testing.assert_close(small(x), net(x))


def test_other_means_are_refused():
    """A mean over the channels is not global pooling: a TypeError naming the dims."""
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean(1).flatten(1))

    with pytest.raises(TypeError, match="not a global average pooling"):
        from_module(Bad(), [1, 5, 5])


def test_global_avgpool_module_is_the_mean():
    """GlobalAvgPool computes x.mean((2, 3))."""
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(GlobalAvgPool()(x), x.mean((2, 3)))


def test_dropout2d_needs_feature_maps():
    """dropout2d on flat features is a SpecError."""
    with pytest.raises(SpecError, match="dropout2d needs"):
        check_spec({"input": [4], "layers": ["dropout2d", {"type": "linear", "out": 2}]})
