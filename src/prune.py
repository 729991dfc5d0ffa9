"""Structural shrinking of consecutive Linear layers, with bias compensation.

Pruning is a pure plan (scores -> keep-indices) followed by one surgery (`shrink`) that builds a
new, physically smaller MLP: rows of hidden layer l's Linear and the matching columns of layer
l+1's Linear are kept. No masks, no hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from src.adjoint import interval_sweep
from src.interval import Interval
from src.model import MLP
from src.significance import data_box

BiasFold = Literal["linear", "mean", "mid", "none"]


def keep_indices(scores: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """Indices (ascending) of the `counts[l]` highest-scoring neurons of each hidden layer.

    Ties are broken by position (the earlier neuron is kept), so the plan is deterministic.
    """
    if len(scores) != len(counts):
        raise ValueError(f"{len(counts)} neuron counts given for {len(scores)} hidden layers")
    plan = []
    for layer, (score, count) in enumerate(zip(scores, counts, strict=True)):
        if not 1 <= count <= len(score):
            raise ValueError(f"hidden layer {layer + 1} has {len(score)} neurons; cannot keep "
                             f"{count} (must be between 1 and {len(score)})")
        if torch.isnan(score).any():
            raise ValueError(f"hidden layer {layer + 1}: significance scores contain NaN")
        order = torch.argsort(score, descending=True, stable=True)
        plan.append(order[:count].sort().values)
    return plan


@torch.no_grad()
def post_activations(model: MLP, x: Tensor, layer: int) -> Tensor:
    """Post-activation values of hidden layer `layer` (0-based) for inputs x: (n, h_layer)."""
    h = x.flatten(1)
    for module in list(model)[: 2 * layer + 2]:  # Linear, act pairs up to this layer
        h = module(h)
    return h


class Fold(NamedTuple):
    """Removed activations a_R are replaced by offset + coef @ a_K (coef None: offset only)."""

    offset: Tensor  # (r,) for the r removed neurons
    coef: Tensor | None = None  # (r, k) on the k kept neurons' activations


def _needs_data(x: Tensor | None, fold: str) -> Tensor:
    if x is None:
        raise ValueError(f"bias_fold={fold!r} needs the training inputs (data=...)")
    return x


def _fold_mean(model: MLP, layer: int, keep: Tensor, removed: Tensor, x: Tensor | None,
               box: Interval | None) -> Fold:
    """Mean post-activation over the training inputs."""
    return Fold(post_activations(model, _needs_data(x, "mean"), layer).mean(0)[removed])


def _fold_mid(model: MLP, layer: int, keep: Tensor, removed: Tensor, x: Tensor | None,
              box: Interval | None) -> Fold:
    """Midpoint of the post-activation interval over the input box (default: the data box)."""
    if box is None:
        box = data_box(_needs_data(x, "mid"))
    value = interval_sweep(model, box, seed="sum")[layer].value
    return Fold(POST_ACTIVATION[model.activation](value).mid[removed])


def _fold_linear(model: MLP, layer: int, keep: Tensor, removed: Tensor, x: Tensor | None,
                 box: Interval | None) -> Fold:
    """Least-squares prediction of the removed activations from the kept ones (ridge-damped).

    Centred ridge regression a_R - mean_R ≈ coef (a_K - mean_K), so constant neurons are folded
    exactly (coef = 0, offset = their value) and `mean` is the special case coef = 0.
    """
    a = post_activations(model, _needs_data(x, "linear"), layer).double()  # (n, h)
    centred = a - a.mean(0)
    # One (h, h) scatter matrix, then its kept rows: half the time of gathering the kept and
    # removed columns of the (n, h) activations and multiplying those.
    scatter = (centred.T @ centred)[keep]  # (k, h)
    gram = scatter[:, keep] + RIDGE * len(a) * torch.eye(len(keep), dtype=a.dtype)
    coef = torch.linalg.solve(gram, scatter[:, removed]).T  # (r, k)
    offset = a.mean(0)[removed] - coef @ a.mean(0)[keep]
    return Fold(offset, coef)


RIDGE = 1e-3  # per-sample ridge of the linear fold: keeps the solve stable for dead neurons
POST_ACTIVATION = {"relu": Interval.relu, "sigmoid": Interval.sigmoid, "tanh": Interval.tanh}
FoldFn = Callable[[MLP, int, Tensor, Tensor, Tensor | None, Interval | None], Fold]
FOLDS: dict[str, FoldFn | None] = {
    "linear": _fold_linear, "mean": _fold_mean, "mid": _fold_mid, "none": None}


@torch.no_grad()
def shrink(model: MLP, keep: Sequence[Tensor], bias_fold: BiasFold = "linear",
           data: Tensor | None = None, box: Interval | None = None) -> MLP:
    """A new, smaller MLP keeping neurons `keep[l]` of each hidden layer l (order preserved).

    The removed neurons' contribution is folded into the next layer: their activations a_R
    are replaced by an estimate from the data and W_{l+1}[:, R] a_R moves into the next layer's
    bias (and, for "linear", onto the kept neurons' weights):
    "linear": least-squares a_R ≈ offset + coef a_K over `data`; "mean": the mean
    post-activation over `data`; "mid": the midpoint of the post-activation interval over `box`;
    "none": nothing. Layers are cut one after another, so each fold sees the layers before it
    already pruned. Inputs and outputs are never pruned; the input model is not modified.
    """
    if bias_fold not in FOLDS:
        raise ValueError(f"unknown bias_fold {bias_fold!r}; choose from {list(FOLDS)}")
    hidden = model.hidden
    if len(keep) != len(hidden):
        raise ValueError(f"{len(keep)} keep-lists given for {len(hidden)} hidden layers")
    current = model
    for layer, idx in enumerate(keep):
        idx = torch.as_tensor(idx, dtype=torch.long)
        n = current.hidden[layer]
        if len(idx) == 0 or len(torch.unique(idx)) != len(idx) or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"hidden layer {layer + 1}: keep-indices must be distinct, in "
                             f"[0, {n}) and at least one")
        idx = idx.sort().values
        removed = torch.ones(n, dtype=torch.bool)
        removed[idx] = False
        fold = FOLDS[bias_fold]
        estimate = None
        if fold is not None and removed.any():
            estimate = fold(current, layer, idx, removed, data, box)
        current = _cut(current, layer, idx, removed, estimate)
    return current


def _cut(model: MLP, layer: int, idx: Tensor, removed: Tensor, fold: Fold | None) -> MLP:
    """Remove all but `idx` from hidden layer `layer`, folding the removed ones' estimate."""
    sizes = model.sizes
    sizes[layer + 1] = len(idx)
    smaller = MLP(sizes, model.activation).to(model.linears[0].weight.dtype)
    linears, new = model.linears, smaller.linears
    for i, (old, fresh) in enumerate(zip(linears, new, strict=True)):
        weight, bias = old.weight.detach().clone(), old.bias.detach().clone()
        if i == layer:  # rows of the pruned layer
            weight, bias = weight[idx], bias[idx]
        elif i == layer + 1:  # columns of the next layer, plus the folded contribution
            gone = weight[:, removed].double()  # (n_out, r)
            weight = weight[:, idx]
            if fold is not None:
                bias = bias + (gone @ fold.offset.double()).to(bias.dtype)
                if fold.coef is not None:
                    weight = weight + (gone @ fold.coef.double()).to(weight.dtype)
        fresh.weight.copy_(weight)
        fresh.bias.copy_(bias)
    return smaller
