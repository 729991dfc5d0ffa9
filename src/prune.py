"""Structural shrinking of consecutive Linear layers, with bias compensation.

Pruning is a pure plan (scores -> keep-indices) followed by one surgery (`shrink`) that builds a
new, physically smaller MLP: rows of hidden layer l's Linear and the matching columns of layer
l+1's Linear are kept. No masks, no hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from src.adjoint import interval_sweep
from src.interval import Interval
from src.model import MLP
from src.significance import data_box

BiasFold = Literal["mean", "mid", "none"]


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


def _fold_mean(model: MLP, layer: int, x: Tensor | None, box: Interval | None) -> Tensor:
    """Mean post-activation over the training inputs."""
    if x is None:
        raise ValueError("bias_fold='mean' needs the training inputs (data=...)")
    return post_activations(model, x, layer).mean(0)


def _fold_mid(model: MLP, layer: int, x: Tensor | None, box: Interval | None) -> Tensor:
    """Midpoint of the post-activation interval over the input box (default: the data box)."""
    if box is None:
        if x is None:
            raise ValueError("bias_fold='mid' needs an input box or the training inputs")
        box = data_box(x)
    value = interval_sweep(model, box, seed="sum")[layer].value
    return POST_ACTIVATION[model.activation](value).mid


POST_ACTIVATION = {"relu": Interval.relu, "sigmoid": Interval.sigmoid, "tanh": Interval.tanh}


FOLDS: dict[str, Callable[[MLP, int, Tensor | None, Interval | None], Tensor] | None] = {
    "mean": _fold_mean, "mid": _fold_mid, "none": None}


@torch.no_grad()
def shrink(model: MLP, keep: Sequence[Tensor], bias_fold: BiasFold = "mean",
           data: Tensor | None = None, box: Interval | None = None) -> MLP:
    """A new, smaller MLP keeping neurons `keep[l]` of each hidden layer l (order preserved).

    The removed neurons' expected contribution is folded into the next layer's bias:
    b_{l+1} += W_{l+1}[:, removed] @ c_removed, with c the mean post-activation over `data`
    ("mean"), the midpoint of the post-activation interval over `box` ("mid"), or nothing
    ("none"). Layers are cut one after another, so each fold sees the layers before it already
    pruned. Inputs and outputs are never pruned; the input model is not modified.
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
        fold = FOLDS[bias_fold]
        centre = fold(current, layer, data, box) if fold is not None else None
        current = _cut(current, layer, idx, centre)
    return current


def _cut(model: MLP, layer: int, idx: Tensor, centre: Tensor | None) -> MLP:
    """Remove all but `idx` from hidden layer `layer`, folding `centre` of the removed ones."""
    sizes = model.sizes
    sizes[layer + 1] = len(idx)
    smaller = MLP(sizes, model.activation).to(model.linears[0].weight.dtype)
    linears, new = model.linears, smaller.linears
    for i, (old, fresh) in enumerate(zip(linears, new, strict=True)):
        weight, bias = old.weight.detach().clone(), old.bias.detach().clone()
        if i == layer:  # rows of the pruned layer
            weight, bias = weight[idx], bias[idx]
        elif i == layer + 1:  # columns of the next layer, plus the folded contribution
            removed = torch.ones(weight.shape[1], dtype=torch.bool)
            removed[idx] = False
            if centre is not None and removed.any():
                bias = bias + weight[:, removed] @ centre[removed].to(weight.dtype)
            weight = weight[:, idx]
        fresh.weight.copy_(weight)
        fresh.bias.copy_(bias)
    return smaller
