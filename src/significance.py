"""Neuron-scoring criteria: "interval_adjoint" (the default) and the baselines.

A criterion maps (model, ScoreData) to one 1-D score tensor per hidden layer; higher = keep.
The interval-adjoint significance of neuron j of hidden layer l over an input box [x] is

    S_lj = width([z_l]_j) · max(|lo([z̄_l]_j)|, |hi([z̄_l]_j)|)

with [z_l] the interval pre-activation and [z̄_l] the interval adjoint ∂y/∂z_l (src.adjoint);
for seed="per_output" it is maximised over the outputs y_k, and for a batch of boxes
(box="samples") it is averaged over the boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.adjoint import MEASURES, SEEDS, Measure, Seed, chain, interval_sweep
from src.interval import Interval
from src.model import MLP

BoxKind = Literal["data", "samples"]
SUBSET = 10_000  # taylor/apoz look at up to this many training samples, drawn with the seed


@dataclass(frozen=True)
class ScoreData:
    """What a criterion may look at."""

    x: Tensor  # (n, n_in) training inputs in the model's input scale (flattened, [0, 1])
    y: Tensor  # (n,) int64 labels
    seed: int = 0  # for `random` and for choosing samples
    seed_mode: Seed = "per_output"  # interval_adjoint reverse-sweep seeding
    measure: Measure = "pre"  # interval_adjoint: neuron read before or after its activation
    box: BoxKind | Interval = "data"  # input box for interval_adjoint
    eps: float = 0.05  # half-width of sample boxes (box="samples")
    n_samples: int = 64  # number of sample boxes (box="samples"; at most len(x))

    def __post_init__(self):
        if not isinstance(self.x, Tensor) or self.x.ndim != 2 or not self.x.is_floating_point():
            raise ValueError("ScoreData.x must be a 2-D floating-point tensor (n, n_in)")
        if not isinstance(self.y, Tensor) or self.y.shape != (len(self.x),):
            raise ValueError(f"ScoreData.y must have shape ({len(self.x)},), one label per row")
        if len(self.x) == 0:
            raise ValueError("ScoreData needs at least one sample")
        if self.seed_mode not in SEEDS:
            raise ValueError(f"unknown seed_mode {self.seed_mode!r}; choose from {list(SEEDS)}")
        if self.measure not in MEASURES:
            raise ValueError(f"unknown measure {self.measure!r}; choose from {list(MEASURES)}")
        if not isinstance(self.box, Interval) and self.box not in ("data", "samples"):
            raise ValueError(f"box must be 'data', 'samples' or an Interval, got {self.box!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")


Criterion = Callable[[MLP, ScoreData], list[Tensor]]


# ---- boxes --------------------------------------------------------------------------------

def data_box(X: Tensor) -> Interval:  # noqa: N803 (X is a data matrix)
    """Per-feature [min, max] over the rows of X (n, ...), in the model's input scale: (n_in,)."""
    flat = X.flatten(1)
    # two reductions: torch.aminmax over dim 0 was ~5x slower on (55000, 784)
    return Interval(flat.amin(dim=0), flat.amax(dim=0))


def sample_boxes(X: Tensor, eps: float, n: int, seed: int = 0,  # noqa: N803
                 clip: bool = True) -> Interval:
    """Boxes [x - eps, x + eps] around n rows of X drawn without replacement with `seed`:
    a batch (n, n_in). With clip, each box is cut to the data box (the observed feature range)."""
    if not eps >= 0 or n < 1:
        raise ValueError(f"need eps >= 0 and n >= 1, got eps={eps}, n={n}")
    flat = X.flatten(1)
    if n > len(flat):
        raise ValueError(f"asked for {n} sample boxes but X has only {len(flat)} rows")
    rows = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:n]
    centres = flat[rows]  # (n, n_in)
    lower, upper = centres - eps, centres + eps
    if clip:
        bounds = data_box(flat)
        lower, upper = torch.maximum(lower, bounds.lower), torch.minimum(upper, bounds.upper)
    return Interval(lower, upper)


def _box(data: ScoreData) -> Interval:
    """The input box ScoreData asks for."""
    if isinstance(data.box, Interval):
        return data.box
    if data.box == "samples":
        return sample_boxes(data.x, data.eps, min(data.n_samples, len(data.x)), seed=data.seed)
    return data_box(data.x)


# ---- criteria -----------------------------------------------------------------------------

def interval_adjoint(model: nn.Module, box: Interval, seed: Seed = "per_output",
                     measure: Measure = "pre") -> list[Tensor]:
    """S = width([z]) · max(|lo [z̄]|, |hi [z̄]|) per hidden neuron, max over outputs for
    "per_output", mean over boxes for a batch of boxes (box shape (batch, n_in)). With
    measure="post", the post-activation a = φ(z) and its adjoint ā take the place of z and z̄."""
    scores = []
    for value, adjoint in interval_sweep(model, box, seed, measure):
        reach = adjoint.magnitude  # (..., n_out, n) or (..., n)
        if seed == "per_output":
            reach = reach.amax(dim=-2)
        significance = value.width * reach  # (n,) or (batch, n)
        scores.append(significance.mean(dim=0) if significance.ndim == 2 else significance)
    return scores


def _interval_adjoint_criterion(model: MLP, data: ScoreData) -> list[Tensor]:
    return interval_adjoint(model, _box(data), data.seed_mode, data.measure)


def _hidden_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers whose outputs are hidden neurons (all but the last)."""
    return [m for m in chain(model) if isinstance(m, nn.Linear)][:-1]


@torch.no_grad()
def random_scores(model: MLP, data: ScoreData) -> list[Tensor]:
    """Uniform random scores from a generator seeded with data.seed (a control baseline)."""
    generator = torch.Generator().manual_seed(data.seed)
    return [torch.rand(layer.out_features, generator=generator) for layer in _hidden_linears(model)]


@torch.no_grad()
def magnitude(model: MLP, data: ScoreData) -> list[Tensor]:
    """L1 norm of each hidden neuron's incoming weights (the row of W_l; bias excluded)."""
    return [layer.weight.abs().sum(dim=1) for layer in _hidden_linears(model)]


def _subset(data: ScoreData) -> tuple[Tensor, Tensor]:
    """Up to SUBSET training samples drawn without replacement with data.seed."""
    if len(data.x) <= SUBSET:
        return data.x, data.y
    rows = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(data.seed))[:SUBSET]
    return data.x[rows], data.y[rows]


def _hidden_outputs(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """(the input of every Linear but the first = the hidden neurons' outputs, the logits)."""
    inputs, h = [], x
    for module in chain(model):
        if isinstance(module, nn.Linear):
            inputs.append(h)
        h = module(h)
    return inputs[1:], h


def taylor(model: MLP, data: ScoreData) -> list[Tensor]:
    """|mean over samples of a · ∂L/∂a| per hidden neuron output a, L the per-sample
    cross-entropy (Molchanov et al. 2017, first-order Taylor), on up to SUBSET samples."""
    x, y = _subset(data)
    dtype = next(model.parameters()).dtype
    with torch.enable_grad():
        x = x.to(dtype).detach().requires_grad_(True)  # keeps the graph even for frozen weights
        outputs, logits = _hidden_outputs(model, x)
        loss = F.cross_entropy(logits, y, reduction="sum")  # per-sample gradients, not / n
        grads = torch.autograd.grad(loss, outputs)
    return [(a * g).mean(dim=0).abs().detach() for a, g in zip(outputs, grads, strict=True)]


@torch.no_grad()
def apoz(model: MLP, data: ScoreData) -> list[Tensor]:
    """1 - APoZ: the fraction of samples (up to SUBSET) on which a hidden ReLU output is
    non-zero (Hu et al. 2016: a high average percentage of zeros means unimportant). ReLU only."""
    others = sorted({type(m).__name__ for m in chain(model) if type(m) in (nn.Sigmoid, nn.Tanh)})
    if others:
        raise ValueError(f"apoz counts zero activations and needs ReLU; the model uses {others}")
    x, _ = _subset(data)
    outputs, _ = _hidden_outputs(model, x.to(next(model.parameters()).dtype))
    return [(a != 0).to(a.dtype).mean(dim=0) for a in outputs]


def geometric_median(points: Tensor, iterations: int = 200, tol: float = 1e-7) -> Tensor:
    """The point minimising the sum of Euclidean distances to the rows of `points` (Weiszfeld)."""
    median = points.mean(dim=0)
    for _ in range(iterations):
        distance = (points - median).norm(dim=1).clamp_min(1e-12)  # avoid 1/0 at a data point
        weights = 1 / distance
        step = (weights[:, None] * points).sum(dim=0) / weights.sum()
        moved = (step - median).norm()
        median = step
        if moved <= tol * (1 + median.norm()):
            break
    return median


@torch.no_grad()
def fpgm(model: MLP, data: ScoreData) -> list[Tensor]:
    """Distance of each hidden neuron's incoming weight row to the layer's geometric median
    (He et al. 2019: neurons near the median are replaceable by the others)."""
    scores = []
    for layer in _hidden_linears(model):
        rows = layer.weight.double()  # Weiszfeld is sensitive to rounding near the median
        scores.append((rows - geometric_median(rows)).norm(dim=1).to(layer.weight.dtype))
    return scores


CRITERIA: dict[str, Criterion] = {
    "interval_adjoint": _interval_adjoint_criterion,
    "random": random_scores,
    "magnitude": magnitude,
    "taylor": taylor,
    "apoz": apoz,
    "fpgm": fpgm,
}


def score(name: str, model: MLP, data: ScoreData) -> list[Tensor]:
    """Scores of criterion `name` (one 1-D tensor per hidden layer, higher = keep)."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose from {list(CRITERIA)}")
    return CRITERIA[name](model, data)
