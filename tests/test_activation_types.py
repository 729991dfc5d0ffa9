"""The relu6, elu, gelu and silu layer types (registry entries): spec, import, runtime, interval
rules. Soundness is checked in float64 with torch as the oracle, as in test_leaky_relu.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import iaprune_runtime as deploy
from iaprune.adjoint import sweep
from iaprune.interval import Interval
from iaprune.model import from_module
from iaprune.prune import keep_indices, shrink
from iaprune.significance import interval_adjoint
from iaprune.spec import SpecError, build, check_spec, spec_of
from iaprune_runtime.layers import entry
from iaprune_runtime.layers.smooth import GELU_POINTS, GELU_TANH_POINTS, SILU_POINTS

D = torch.float64
# (module, the entry's name, torch's function): every setting the rules distinguish
CASES = [(nn.ReLU6(), "relu6", F.relu6), (nn.ELU(), "elu", F.elu),
         (nn.ELU(0.3), "elu", lambda t: F.elu(t, 0.3)),
         (nn.ELU(2.5), "elu", lambda t: F.elu(t, 2.5)),
         (nn.GELU(), "gelu", F.gelu),
         (nn.GELU("tanh"), "gelu", lambda t: F.gelu(t, approximate="tanh")),
         (nn.SiLU(), "silu", F.silu)]
IDS = ["relu6", "elu", "elu0.3", "elu2.5", "gelu", "gelu_tanh", "silu"]
# kinks and critical points: boxes start, end and straddle there
SPECIAL = [0.0, 6.0, *GELU_POINTS, *GELU_TANH_POINTS, *SILU_POINTS]


def grads(f, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's f(z) and its autograd derivative at every entry of z."""
    z = z.clone().requires_grad_(True)
    y = f(z)
    (d,) = torch.autograd.grad(y.sum(), z)
    return y.detach(), d


@pytest.mark.parametrize(("module", "name", "f"), CASES, ids=IDS)
def test_zero_width_boxes_give_torchs_values_and_derivatives(module, name, f):
    """At a point (kinks and critical points included) the forward rule is torch's value and the
    derivative range is exactly autograd's derivative."""
    z = torch.tensor([-30.0, -2.5, -1e-300, 1e-300, 0.7, 5.9, 7.0, 40.0, *SPECIAL], dtype=D)
    value, derivative = grads(f, z)
    box = Interval.point(z)[None]
    out, d = entry(name).forward(module, box), entry(name).derivative(module, box)
    assert torch.equal(out.lower[0], value) and torch.equal(out.upper[0], value)
    assert torch.equal(d.lower[0], derivative) and torch.equal(d.upper[0], derivative)


@pytest.mark.parametrize(("module", "name", "f"), CASES, ids=IDS)
def test_points_inside_a_box_have_values_and_derivatives_inside_its_intervals(module, name, f):
    """For random boxes (wide, narrow, around each kink and critical point, with a bound on one)
    every sampled point's torch value and autograd derivative lie inside the intervals."""
    g = torch.Generator().manual_seed(0)
    n = 400
    lower = torch.randn(n, generator=g, dtype=D) * 3
    upper = lower + torch.rand(n, generator=g, dtype=D) * torch.tensor([4.0, 1e-3], dtype=D
                                                                        ).repeat(n // 2)
    centres = torch.tensor(SPECIAL, dtype=D).repeat(10)
    k = len(centres)
    spread = torch.rand(k, generator=g, dtype=D) * 0.5
    lower[:k], upper[:k] = centres - spread, centres + spread
    lower[k:2 * k], upper[k:2 * k] = centres, centres + spread  # a bound on the point
    box = Interval(lower, upper)[None]
    out, d = entry(name).forward(module, box), entry(name).derivative(module, box)
    for _ in range(30):
        u = torch.rand(n, generator=g, dtype=D)
        u[:20], u[20:40] = 0.0, 1.0  # the corners
        value, derivative = grads(f, lower + u * (upper - lower))
        assert bool(out.contains(value[None]).all()), name
        assert bool(d.contains(derivative[None]).all()), name


def tanh_gelu(t):
    return F.gelu(t, approximate="tanh")


SHAPES = [(F.gelu, GELU_POINTS), (tanh_gelu, GELU_TANH_POINTS), (F.silu, SILU_POINTS)]


@pytest.mark.parametrize(("f", "points"), SHAPES, ids=["gelu", "gelu_tanh", "silu"])
def test_the_critical_points_are_where_the_derivatives_vanish(f, points):
    """Newton's points: φ' = 0 at the minimiser of φ; φ'' = 0 at the extrema of φ'."""
    z = torch.tensor(points, dtype=D, requires_grad=True)
    (d1,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    d1 = d1.detach()
    assert abs(float(d1[0])) < 1e-14 and float(d2[1:].abs().max()) < 1e-14


@pytest.mark.parametrize(("f", "points"), SHAPES, ids=["gelu", "gelu_tanh", "silu"])
def test_the_critical_points_are_the_only_sign_changes_on_a_grid(f, points):
    """The shape the rules assume: on a fine grid over [-8, 8], φ' changes sign only at the
    minimiser of φ, and φ'' only at the two extrema of φ' (beyond, the tails are monotone)."""
    z = torch.linspace(-8, 8, 160_001, dtype=D, requires_grad=True)
    (d1,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    z = z.detach()

    def changes(d: torch.Tensor) -> list[float]:
        flips = (torch.sign(d[1:]) * torch.sign(d[:-1]) < 0).nonzero()[:, 0]
        return z[flips].tolist()

    assert changes(d1.detach()) == pytest.approx([points[0]], abs=1e-4)
    assert changes(d2) == pytest.approx(list(points[1:]), abs=1e-4)


def test_a_box_around_the_minimum_reaches_below_both_endpoints():
    """GELU/SiLU are not monotone: the range over a box around the minimiser is its value, not
    the endpoints'."""
    for module, name, point in [(nn.GELU(), "gelu", GELU_POINTS[0]),
                                (nn.SiLU(), "silu", SILU_POINTS[0])]:
        box = Interval(torch.tensor([[point - 0.5]], dtype=D),
                       torch.tensor([[point + 0.5]], dtype=D))
        out = entry(name).forward(module, box)
        bottom = module(torch.tensor(point, dtype=D))
        assert float(out.lower) <= float(bottom) < float(module(box.lower).min())


SPEC = {"input": [6], "layers": [{"type": "linear", "out": 5}, "gelu",
                                 {"type": "linear", "out": 5}, {"type": "elu", "alpha": 0.5},
                                 {"type": "linear", "out": 4}, "silu",
                                 {"type": "linear", "out": 4}, "relu6",
                                 {"type": "linear", "out": 3}]}


def test_the_sweep_encloses_autograds_jacobian_through_every_new_activation():
    """Over an MLP with gelu, elu, silu and relu6, the swept values and per-output adjoints of the
    first hidden layer contain every sampled point's values and autograd derivatives."""
    net = build(SPEC, seed=0).double().eval()
    g = torch.Generator().manual_seed(1)
    lower = torch.rand(6, generator=g, dtype=D) * 4 - 2
    box = Interval(lower, lower + 1.0)
    result = sweep(net, box, "per_output", lowest=1)
    rest = nn.Sequential(*list(net)[1:])
    for _ in range(40):
        x = (lower + torch.rand(6, generator=g, dtype=D))[None]
        z = net[0](x).detach().requires_grad_(True)
        y = rest(z)
        jac = torch.stack([torch.autograd.grad(y[0, k], z, retain_graph=True)[0][0]
                           for k in range(3)])
        assert bool(result.values[1].contains(z[0].detach(), 1e-12).all())
        assert bool(result.adjoints[1].contains(jac, 1e-12).all())


def test_specs_round_trip_and_fill_defaults():
    """'elu' gets alpha 1.0; a built network reads back as the same spec."""
    spec = check_spec({"input": [3], "layers": ["elu", {"type": "linear", "out": 2}]})
    assert spec["layers"][0] == {"type": "elu", "alpha": 1.0}
    tanh = check_spec({"input": [3], "layers": [{"type": "gelu", "approximate": "tanh"},
                                                 {"type": "linear", "out": 2}]})
    assert build(tanh)[0].approximate == "tanh" and spec_of(build(tanh)) == tanh
    with pytest.raises(SpecError, match="gelu approximate must be one of"):
        check_spec({"input": [3], "layers": [{"type": "gelu", "approximate": "erf"},
                                             {"type": "linear", "out": 2}]})
    net = build(SPEC, seed=0)
    assert [type(m) for m in net][1::2] == [nn.GELU, nn.ELU, nn.SiLU, nn.ReLU6]
    assert spec_of(net) == check_spec(SPEC)


@pytest.mark.parametrize("alpha", [0, -1.0, True, "1"])
def test_an_elu_alpha_that_is_not_positive_is_a_spec_error(alpha):
    """ELU's alpha must be a number > 0 (then ELU is increasing)."""
    with pytest.raises(SpecError, match="elu alpha must be"):
        check_spec({"input": [3], "layers": [{"type": "elu", "alpha": alpha},
                                             {"type": "linear", "out": 2}]})


@pytest.mark.parametrize(("module", "match"), [(nn.ELU(-0.5), "alpha=-0.5")])
def test_modules_with_unsupported_settings_are_named(module, match):
    """A negative ELU alpha is a TypeError naming the setting."""
    with pytest.raises(TypeError, match=match):
        spec_of(nn.Sequential(nn.Linear(3, 2), module, nn.Linear(2, 2)), [3])


class UserActs(nn.Module):
    """Every new activation, as modules and as calls."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(n, m) for n, m in [(6, 8), (8, 8), (8, 8), (8, 8),
                                                            (8, 8), (8, 8), (8, 8), (8, 3)])
        self.acts = nn.ModuleList([nn.GELU(), nn.SiLU(), nn.ReLU6(), nn.ELU(0.7)])

    def forward(self, x):
        for fc, act in zip(self.fc[:4], self.acts, strict=True):
            x = act(fc(x))
        x = F.gelu(self.fc[4](x), approximate="tanh")
        x = F.silu(self.fc[5](x))
        x = F.elu(self.fc[6](x), alpha=2.0)
        return self.fc[7](F.relu6(x))


def test_from_module_reads_the_modules_and_calls_and_prunes():
    """A user's nn.GELU/SiLU/ReLU6/ELU and F.gelu/silu/elu/relu6 import with their settings, the
    Net computes the module's outputs, and it is scored, shrunk and deployed."""
    user = UserActs()
    net = from_module(user, [6])
    kinds = [layer for layer in spec_of(net)["layers"] if layer["type"] != "linear"]
    assert kinds == [{"type": "gelu"}, {"type": "silu"}, {"type": "relu6"},
                     {"type": "elu", "alpha": 0.7}, {"type": "gelu", "approximate": "tanh"},
                     {"type": "silu"},
                     {"type": "elu", "alpha": 2.0}, {"type": "relu6"}]
    x = torch.randn(8, 6)
    torch.testing.assert_close(net(x), user(x))
    scores = interval_adjoint(net, Interval(torch.zeros(6), torch.ones(6)))
    assert len(scores) == 7 and all(bool(torch.isfinite(s).all()) for s in scores)
    small = shrink(net, keep_indices(scores, [4] * 7), "mean", data=torch.rand(32, 6))
    deployed = deploy.DeployedNet(small.spec)
    deployed.load_state_dict(small.state_dict(), strict=True)
    assert torch.equal(deployed.eval()(x), small.eval()(x))


def test_hardtanh_0_6_reads_as_relu6_and_other_ranges_are_refused():
    """F.hardtanh(x, 0, 6) is relu6; F.hardtanh(x) (range [-1, 1]) is a TypeError."""
    class Hard(nn.Module):
        def __init__(self, low):
            super().__init__()
            self.fc1, self.fc2, self.low = nn.Linear(4, 5), nn.Linear(5, 2), low

        def forward(self, x):
            return self.fc2(F.hardtanh(self.fc1(x), self.low, 6.0))

    assert spec_of(from_module(Hard(0.0), [4]))["layers"][1] == {"type": "relu6"}
    with pytest.raises(TypeError, match="hardtanh"):
        from_module(Hard(-1.0), [4])
