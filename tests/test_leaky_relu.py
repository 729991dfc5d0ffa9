"""The leaky_relu layer type (one registry entry): spec, import, runtime, interval rules.

Soundness is checked in float64 against torch as the oracle, as in test_adjoint.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import iaprune_runtime as deploy
from iaprune.adjoint import sweep
from iaprune.errors import UserError
from iaprune.groups import groups
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.significance import ScoreData, apoz, interval_adjoint
from iaprune.spec import SpecError, build, check_spec, spec_of
from iaprune_runtime.layers import entry

D = torch.float64
LEAKY = entry("leaky_relu")
MLP = {"input": [6], "layers": [{"type": "linear", "out": 5}, {"type": "leaky_relu", "slope": 0.2},
                                {"type": "linear", "out": 4}, "leaky_relu",
                                {"type": "linear", "out": 3}]}


def grads(z: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's leaky_relu(z) and its autograd derivative at every entry of z."""
    z = z.clone().requires_grad_(True)
    y = F.leaky_relu(z, slope)
    (d,) = torch.autograd.grad(y.sum(), z)
    return y.detach(), d


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3])
def test_zero_width_boxes_give_torchs_values_and_derivatives(slope):
    """At a point (the kink 0 included) the forward rule is torch's leaky_relu and the
    derivative range is exactly autograd's derivative (slope at 0, torch's convention)."""
    z = torch.tensor([-2.5, -1e-300, 0.0, 1e-300, 0.7, 3.0], dtype=D)
    module = nn.LeakyReLU(slope)
    value, derivative = grads(z, slope)
    box = Interval.point(z)[None]
    out = LEAKY.forward(module, box)
    assert torch.equal(out.lower[0], value) and torch.equal(out.upper[0], value)
    d = LEAKY.derivative(module, box)
    assert torch.equal(d.lower[0], derivative) and torch.equal(d.upper[0], derivative)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.5])
def test_points_inside_a_box_have_values_and_derivatives_inside_its_intervals(slope):
    """For random boxes (straddling 0, touching it with a bound, or on one side) every point's
    value and derivative lie inside the forward and derivative intervals."""
    g = torch.Generator().manual_seed(0)
    lower = torch.randn(200, generator=g, dtype=D)
    upper = lower + torch.rand(200, generator=g, dtype=D) * 2
    lower[:10], upper[:10] = 0.0, torch.rand(10, generator=g, dtype=D)  # a bound at the kink
    upper[10:20], lower[10:20] = 0.0, -torch.rand(10, generator=g, dtype=D)
    box = Interval(lower, upper)[None]
    module = nn.LeakyReLU(slope)
    out, d = LEAKY.forward(module, box), LEAKY.derivative(module, box)
    for _ in range(20):
        u = torch.rand(200, generator=g, dtype=D)
        u[:5] = 0.0  # the lower corner (the kink itself for the first boxes)
        value, derivative = grads(lower + u * (upper - lower), slope)
        assert bool(out.contains(value[None]).all()) and bool(d.contains(derivative[None]).all())


def test_the_sweep_through_leaky_relu_encloses_autograds_jacobian():
    """Over an MLP with leaky_relu layers, the swept values and per-output adjoints of the first
    hidden layer contain every sampled point's values and autograd derivatives."""
    net = build(MLP, seed=0).double().eval()
    g = torch.Generator().manual_seed(1)
    lower = torch.rand(6, generator=g, dtype=D) - 0.5
    box = Interval(lower, lower + 0.4)
    result = sweep(net, box, "per_output", lowest=1)
    for _ in range(50):
        x = (lower + 0.4 * torch.rand(6, generator=g, dtype=D))[None]
        z = net[0](x).detach().requires_grad_(True)
        y = nn.Sequential(*list(net)[1:])(z)
        jac = torch.stack([torch.autograd.grad(y[0, k], z, retain_graph=True)[0][0]
                           for k in range(3)])
        assert bool(result.values[1].contains(z[0].detach(), 1e-12).all())
        assert bool(result.adjoints[1].contains(jac, 1e-12).all())


def test_spec_fills_the_default_slope_and_round_trips():
    """'leaky_relu' gets slope 0.01; a built network reads back as the same spec."""
    spec = check_spec(MLP)
    assert spec["layers"][3] == {"type": "leaky_relu", "slope": 0.01}
    net = build(spec, seed=0)
    assert [type(m) for m in net][1] is nn.LeakyReLU and net[1].negative_slope == 0.2
    assert spec_of(net) == spec


@pytest.mark.parametrize("slope", [-0.1, 1.0, True, "0.1"])
def test_a_slope_outside_0_1_is_a_spec_error(slope):
    """A slope must be a number in [0, 1)."""
    with pytest.raises(SpecError, match="leaky_relu slope must be in"):
        check_spec({"input": [3], "layers": [{"type": "leaky_relu", "slope": slope},
                                             {"type": "linear", "out": 2}]})


def test_a_module_with_an_unsupported_slope_is_named():
    """nn.LeakyReLU(1.5) has no spec: reading it is a TypeError naming the setting."""
    with pytest.raises(TypeError, match="negative_slope=1.5"):
        spec_of(nn.Sequential(nn.Linear(3, 2), nn.LeakyReLU(1.5), nn.Linear(2, 2)), [3])


class UserLeaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2, self.fc3 = (nn.Linear(6, 5), nn.LeakyReLU(0.1),
                                                  nn.Linear(5, 4), nn.Linear(4, 3))

    def forward(self, x):
        x = F.leaky_relu(self.fc2(self.act(self.fc1(x))), negative_slope=0.3)
        return self.fc3(F.leaky_relu(x))


def test_from_module_reads_leaky_relu_modules_and_calls():
    """A user's nn.LeakyReLU and F.leaky_relu calls (slope by keyword or default) import with
    their slopes, and the Net computes the module's outputs."""
    user = UserLeaky()
    net = from_module(user, [6])
    assert [layer for layer in spec_of(net)["layers"] if layer["type"] == "leaky_relu"] == [
        {"type": "leaky_relu", "slope": 0.1}, {"type": "leaky_relu", "slope": 0.3},
        {"type": "leaky_relu", "slope": 0.01}]
    x = torch.randn(8, 6)
    torch.testing.assert_close(net(x), user(x))


def test_the_runtime_builds_the_same_network():
    """iaprune_runtime's DeployedNet of a leaky_relu spec takes the library's weights and
    computes the library's outputs."""
    net = build(MLP, seed=0).eval()
    deployed = deploy.DeployedNet(MLP)
    deployed.load_state_dict(net.state_dict(), strict=True)
    deployed.eval()
    x = torch.randn(7, 6)
    assert torch.equal(deployed(x), net(x))
    assert deployed.activation == "leaky_relu" and deployed.sizes == [6, 5, 4, 3]


def test_units_are_read_after_leaky_relu_and_scored():
    """leaky_relu is an activation: measure='post' reads a hidden neuron after it, and the
    interval-adjoint criterion scores every unit."""
    net = build(MLP, seed=0).eval()
    assert [g.activation for g in groups(net)] == [1, 3]
    scores = interval_adjoint(net, Interval(torch.zeros(6), torch.ones(6)), measure="post")
    assert [len(s) for s in scores] == [5, 4] and all(bool((s >= 0).all()) for s in scores)


def test_apoz_refuses_leaky_relu():
    """leaky_relu never outputs exact zeros, so APoZ (which counts them) refuses it."""
    data = ScoreData(torch.rand(10, 6), torch.zeros(10, dtype=torch.long))
    with pytest.raises(UserError, match="LeakyReLU"):
        apoz(build(MLP, seed=0), data)
