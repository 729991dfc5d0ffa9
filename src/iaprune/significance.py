"""Scoring criteria: "interval_adjoint" (the default) and the baselines.

A criterion maps (model, ScoreData) to one 1-D score tensor per prunable group (iaprune.groups), one
score per unit; higher = keep. The interval-adjoint significance of unit j of a group over an
input box [x] is

    S_j = width([z]_j) · max(|lo([z̄]_j)|, |hi([z̄]_j)|)

with [z] the interval value of the unit (before its activation, or after it with
measure="post"; by default after it in a network with conv layers and before it in an MLP,
see `default_measure`) and [z̄] the interval adjoint ∂y/∂z (adjoint.py); for seed="per_output" it is
maximised over the outputs y_k, for a conv channel it is aggregated over the channel's positions
(`CHANNEL_AGGREGATE`), and for a batch of boxes (box="samples") it is averaged over the boxes.
An input feature is scored the same way with the reverse sweep continued to the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from iaprune.adjoint import MEASURES, SEEDS, Measure, Seed, chain, sweep
from iaprune.data.rows import Rows, head, take, value_range
from iaprune.data.stream import DiskRows
from iaprune.errors import UserError
from iaprune.groups import Group, Use, groups
from iaprune.interval import Interval
from iaprune.prune import unit_view
from iaprune.spec import Net
from iaprune_runtime.layers import entry_of, logits_end, logits_value

BoxKind = Literal["data", "quantile", "samples"]
Aggregate = Literal["sum", "max"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
# A conv channel's significance: the sum over its positions. Against the max, on LeNet-5/MNIST
# without retraining (3 seeds, 6 rows), the two tied (README, "Convolutional networks"); the sum
# counts every position a channel can pass on, not the one where it is widest.
CHANNEL_AGGREGATE: Aggregate = "sum"
SUBSET = 10_000  # taylor/apoz look at up to this many training samples, drawn with the seed
# box="quantile" spans each feature's QUANTILE to 1 - QUANTILE quantile of the training values:
# a pixel lit in a handful of images gets the width of its typical values, not of its outliers
QUANTILE = 0.05


@dataclass(frozen=True)
class ScoreData:
    """What a criterion may look at."""

    x: Rows  # (n, n_in) training inputs in the model's input scale (flattened; a Tensor, or
    # DiskRows for an image folder streamed from disk)
    y: Tensor  # (n,) int64 labels
    seed: int = 0  # for `random` and for choosing samples
    seed_mode: Seed = "per_output"  # interval_adjoint reverse-sweep seeding
    measure: Measure | None = None  # interval_adjoint: before/after the activation (None: auto)
    box: BoxKind | Interval = "data"  # input box for interval_adjoint
    aggregate: Aggregate = CHANNEL_AGGREGATE  # interval_adjoint: a channel's positions sum/max
    eps: float = 0.05  # half-width of sample boxes (box="samples")
    n_samples: int = 64  # number of sample boxes (box="samples"; at most len(x))

    def __post_init__(self):
        if not isinstance(self.x, DiskRows) and (not isinstance(self.x, Tensor) or
                                                  self.x.ndim != 2 or
                                                  not self.x.is_floating_point()):
            raise ValueError("ScoreData.x must be a 2-D floating-point tensor (n, n_in)")
        if not isinstance(self.y, Tensor) or self.y.shape != (len(self.x),):
            raise ValueError(f"ScoreData.y must have shape ({len(self.x)},), one label per row")
        if len(self.x) == 0:
            raise ValueError("ScoreData needs at least one sample")
        if self.seed_mode not in SEEDS:
            raise ValueError(f"unknown seed_mode {self.seed_mode!r}; choose from {list(SEEDS)}")
        if self.measure is not None and self.measure not in MEASURES:
            raise ValueError(f"unknown measure {self.measure!r}; choose from {list(MEASURES)}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose from "
                             f"{list(AGGREGATES)}")
        if not isinstance(self.box, Interval) and self.box not in ("data", "quantile", "samples"):
            raise ValueError(f"box must be 'data', 'quantile', 'samples' or an Interval, got "
                             f"{self.box!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")


Criterion = Callable[[Net, ScoreData, bool], list[Tensor]]


# ---- boxes --------------------------------------------------------------------------------

def data_box(X: Rows) -> Interval:  # noqa: N803 (X is a data matrix)
    """Per-feature [min, max] over the rows of X (n, ...), in the model's input scale: (n_in,)."""
    return Interval(*value_range(X))


def quantile_box(X: Rows, q: float = QUANTILE) -> Interval:  # noqa: N803
    """Per-feature [q-quantile, (1-q)-quantile] over the rows of X (n, ...): the data box
    without each feature's rarest values (q = 0 is the data box). Quantiles are order
    statistics (the lower one rounded down, the upper one up), so the box lies inside the
    data box: (n_in,)."""
    if not 0.0 <= q < 0.5:
        raise ValueError(f"quantile must be in [0, 0.5), got {q}")
    low = math.floor(q * (len(X) - 1))
    high = math.ceil((1 - q) * (len(X) - 1))
    if isinstance(X, DiskRows):
        return Interval(*X.order_statistics([low + 1, high + 1]))
    flat = X.flatten(1)
    # kthvalue per column (1-based): torch.quantile refuses inputs of more than 2**24 values
    return Interval(flat.kthvalue(low + 1, dim=0).values, flat.kthvalue(high + 1, dim=0).values)


def sample_boxes(X: Rows, eps: float, n: int, seed: int = 0,  # noqa: N803
                 clip: bool = True) -> Interval:
    """Boxes [x - eps, x + eps] around n rows of X drawn without replacement with `seed`:
    a batch (n, n_in). With clip, each box is cut to the data box (the observed feature range)."""
    if not eps >= 0 or n < 1:
        raise ValueError(f"need eps >= 0 and n >= 1, got eps={eps}, n={n}")
    if n > len(X):
        raise ValueError(f"asked for {n} sample boxes but X has only {len(X)} rows")
    rows = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:n]
    centres = take(X, rows).flatten(1)  # (n, n_in)
    lower, upper = centres - eps, centres + eps
    if clip:
        bounds = data_box(X)
        lower, upper = torch.maximum(lower, bounds.lower), torch.minimum(upper, bounds.upper)
    return Interval(lower, upper)


def _box(data: ScoreData) -> Interval:
    """The input box ScoreData asks for."""
    if isinstance(data.box, Interval):
        return data.box
    if data.box == "samples":
        return sample_boxes(data.x, data.eps, min(data.n_samples, len(data.x)), seed=data.seed)
    if data.box == "quantile":
        return quantile_box(data.x)
    return data_box(data.x)


# ---- criteria -----------------------------------------------------------------------------

def _per_unit(values: Tensor, aggregate: Aggregate) -> Tensor:
    """(batch, units, ...) -> (batch, units): a channel's positions summed or maximised."""
    if values.ndim == 2:
        return values
    flat = values.flatten(2)
    return flat.sum(2) if aggregate == "sum" else flat.amax(2)


def _value_indices(group: Group, measure: Measure) -> tuple[int, ...]:
    """Where a group's units are read in the sweep (values[i] is module i's input in a chain):
    each producer's output, or with measure="post" the output of the first activation after
    it (a coupled group has one per producer; values shared by several are read once)."""
    return tuple(dict.fromkeys(group.post if measure == "post" else group.pre))


def default_measure(model: Net) -> Measure:
    """Where units are read when no measure is given: after their activation in a network with
    conv layers, before it in an MLP.

    On LeNet-5/MNIST without retraining (3 seeds, first 6 rows), reading after the activation
    kept 96.5 % mean test accuracy against 94.1 % before it, with a fifth of the spread over
    seeds (std 0.8 against 4.3 points). After a ReLU the width counts only the part of a unit's
    range that it passes on (over the data box, 55-58 % of LeNet-5's pre-activation widths lie
    below zero). On the MLP the two tied (96.85 vs 96.88 %), and it keeps the reading its
    results were measured with (README, "Convolutional networks")."""
    return "post" if any(entry_of(m).spatial for m in model) else "pre"


def interval_adjoint(model: Net, box: Interval, seed: Seed = "per_output",
                     measure: Measure | None = None, inputs: bool = False,
                     aggregate: Aggregate = CHANNEL_AGGREGATE,
                     coupled: Aggregate = "sum") -> list[Tensor]:
    """S = width([z]) · max(|lo [z̄]|, |hi [z̄]|) per unit of every group, max over outputs for
    "per_output", summed (or maximised) over a conv channel's positions, mean over boxes for a
    batch of boxes (box shape (batch, n_in)). With measure="post", the post-activation
    a = φ(z) and its adjoint ā take the place of z and z̄.

    Coupled channels (tied by residual adds) are one unit in several values: their
    significance is the sum of S over those values (each producer's output, or the first
    activation after it). Removing the channel takes it out of every one of them, and the
    output's change is bounded by the sum of the changes each removal makes (a telescoping sum
    over the removals, each bounded by its own S): the sum is the bound; a max would not be
    (coupled="max" takes it anyway, for comparison: benchmarks/prune_resnet.py)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose from {list(AGGREGATES)}")
    found = groups(model, inputs)
    if not found:
        return []
    measure = measure or default_measure(model)
    where = [_value_indices(g, measure) for g in found]
    batched = box.lower.ndim == 2
    if not batched:
        box = Interval(box.lower[None], box.upper[None])
    box = Interval(_shaped(model, box.lower), _shaped(model, box.upper))
    result = sweep(list(chain(model)), box, seed, lowest=min(min(w) for w in where),
                   wiring=model.wiring)
    scores = []
    for group, values in zip(found, where, strict=True):
        total = None
        for i in values:
            value, adjoint = result.values[i], result.adjoints[i]
            reach = adjoint.magnitude  # (batch, k, ...)
            reach = reach.amax(dim=1) if seed == "per_output" else reach[:, 0]
            product = value.width * reach
            if product.shape[1] != group.size:  # a flattened map: (batch, units, positions)
                product = product.reshape(len(product), group.size, -1)
            significance = _per_unit(product, aggregate)  # (batch, units)
            if total is None:
                total = significance
            else:
                total = total + significance if coupled == "sum" else torch.maximum(
                    total, significance)
        scores.append(total.mean(dim=0) if batched else total[0])
    return scores


def _shaped(model: Net, x: Tensor) -> Tensor:
    """Flat rows in the shape the Net's first module takes."""
    return x.reshape(len(x), -1) if model.flat_input else x.reshape(len(x), *model.input_shape)


def _interval_adjoint_criterion(model: Net, data: ScoreData, inputs: bool) -> list[Tensor]:
    return interval_adjoint(model, _box(data), data.seed_mode, data.measure, inputs,
                            data.aggregate)


def _no_inputs(name: str, inputs: bool) -> None:
    if inputs:
        raise UserError(f"criterion {name} has no input-feature form; choose interval_adjoint, "
                         "random, magnitude, taylor or apoz to prune inputs")


@torch.no_grad()
def random_scores(model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """Uniform random scores from a generator seeded with data.seed (a control baseline)."""
    generator = torch.Generator().manual_seed(data.seed)
    return [torch.rand(g.size, generator=generator) for g in groups(model, inputs)]


@torch.no_grad()
def magnitude(model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """L1 norm of each unit's incoming weights (a Linear's row, a Conv2d's filter; bias
    excluded); an input feature's outgoing column of the first Linear."""
    scores = []
    for g in groups(model, inputs):
        if g.producer is None:
            scores.append(model[g.consumer].weight.abs().sum(dim=0))
        else:  # coupled channels: the norms of every producer's filter summed
            scores.append(sum(model[p].weight.abs().flatten(1).sum(dim=1) for p in g.producers))
    return scores


def _subset(data: ScoreData) -> tuple[Tensor, Tensor]:
    """Up to SUBSET training samples drawn without replacement with data.seed."""
    if len(data.x) <= SUBSET:
        return head(data.x, len(data.x)), data.y
    rows = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(data.seed))[:SUBSET]
    return take(data.x, rows), data.y[rows]


def _reads(group: Group) -> list[Use]:
    """One reader per value the group's readers read (a coupled group's stream is read at
    several depths; a chain group's consumer reads one value)."""
    return list({use.value: use for use in group.readers}.values())


def _consumer_inputs(model: Net, x: Tensor, found: list[Group]
                     ) -> tuple[list[list[Tensor]], Tensor]:
    """(per group, the values its readers read = its units after activation etc., the
    logits)."""
    # the logits are the input of a trailing softmax (the loss is taken on them)
    kinds = [entry_of(m) for m in model]
    end, logits = logits_end(kinds), logits_value(kinds, model.wiring)
    wanted = tuple({use.value for g in found for use in _reads(g)} | {logits})
    values = model.values(_shaped(model, x), keep=wanted, upto=end)
    return [[values[use.value] for use in _reads(g)] for g in found], values[logits]


def taylor(model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """|mean over samples (and positions) of a · ∂L/∂a| per unit output a, L the per-sample
    cross-entropy (Molchanov et al. 2017, first-order Taylor), on up to SUBSET samples."""
    x, y = _subset(data)
    found = groups(model, inputs)
    dtype = next(model.parameters()).dtype
    with torch.enable_grad():
        x = x.to(dtype).detach().requires_grad_(True)  # keeps the graph even for frozen weights
        outputs, logits = _consumer_inputs(model, x, found)
        loss = F.cross_entropy(logits, y, reduction="sum")  # per-sample gradients, not / n
        grads = iter(torch.autograd.grad(loss, [a for values in outputs for a in values]))
    scores = []
    for g, values in zip(found, outputs, strict=True):
        total = 0
        for a, use in zip(values, _reads(g), strict=True):  # a coupled group: summed over reads
            product = unit_view(a * next(grads), g, use).mean(dim=0)  # (units, positions)
            total = total + product.mean(dim=1).abs().detach()
        scores.append(total)
    return scores


@torch.no_grad()
def apoz(model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """1 - APoZ: the fraction of samples (and positions) on which a unit's ReLU output is
    non-zero (Hu et al. 2016: a high average percentage of zeros means unimportant). ReLU
    only (activations that output exact zeros); for input features, the fraction of non-zero
    inputs."""
    others = sorted({type(m).__name__ for m in chain(model)
                     if entry_of(m).activation and not entry_of(m).sparse})
    if others:
        raise UserError(f"apoz counts zero activations and needs ReLU; the model uses {others}")
    x, _ = _subset(data)
    found = groups(model, inputs)
    outputs, _ = _consumer_inputs(model, x.to(next(model.parameters()).dtype), found)
    return [sum((unit_view(a, g, use) != 0).to(a.dtype).mean(dim=0).mean(dim=1)
                for a, use in zip(values, _reads(g), strict=True)) / len(values)
            for g, values in zip(found, outputs, strict=True)]


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
def fpgm(model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """Distance of each unit's incoming weights (row or filter) to the group's geometric median
    (He et al. 2019: units near the median are replaceable by the others)."""
    _no_inputs("fpgm", inputs)
    scores = []
    for g in groups(model):  # coupled channels: every producer's filters side by side
        rows = torch.cat([model[p].weight.flatten(1) for p in g.producers], 1)
        rows = rows.double()  # Weiszfeld is sensitive to rounding near the median
        distance = (rows - geometric_median(rows)).norm(dim=1)
        scores.append(distance.to(model[g.producer].weight.dtype))
    return scores


CRITERIA: dict[str, Criterion] = {
    "interval_adjoint": _interval_adjoint_criterion,
    "random": random_scores,
    "magnitude": magnitude,
    "taylor": taylor,
    "apoz": apoz,
    "fpgm": fpgm,
}


def score(name: str, model: Net, data: ScoreData, inputs: bool = False) -> list[Tensor]:
    """Score every prunable unit of a network: one significance per unit, higher = keep.

    Args:
        name: the criterion: "interval_adjoint" (the default of the workflow: width of the
            unit's value interval x its largest |derivative| over the input box), or a
            baseline ("magnitude", "taylor", "apoz", "fpgm", "random").
        model: the network (a Net).
        data: what a criterion may look at: training inputs and labels, the box, seeding.
        inputs: also score the input features (first in the list).

    Returns:
        list[Tensor]: one 1-D tensor per prunable group (hidden layer, conv layer), in the
        order of the schedule's columns.

    Example:
        >>> from iaprune import ScoreData, build, load_dataset, score
        >>> data = load_dataset("digits")
        >>> net = build({"input": [64], "layers": [{"type": "linear", "out": 16}, "relu",
        ...                                        {"type": "linear", "out": 10}]}, seed=0)
        >>> [s.shape for s in score("interval_adjoint", net, ScoreData(data.train.x,
        ...                                                            data.train.y))]
        [torch.Size([16])]
    """
    if name not in CRITERIA:
        raise UserError(f"unknown criterion {name!r}; choose from {list(CRITERIA)}")
    chain(model)  # an unsupported module is a TypeError naming it, for every criterion
    return CRITERIA[name](model, data, inputs)
