"""Pruning = a pure plan (scores -> keep-indices) + one surgery (`shrink`) for every group kind.

`shrink` builds a new, physically smaller Net: for each prunable group (iaprune.groups) it keeps the
chosen units' rows/filters in the producer, their BatchNorm entries, and their columns (or input
channels, or column blocks across a Flatten) in the consumer, and folds the removed units'
contribution into the consumer. No masks, no hooks; the input model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from iaprune.adjoint import sweep
from iaprune.data.rows import Rows, batches, head, value_range
from iaprune.device import for_inference, inference_batch
from iaprune.groups import Group, Use, groups
from iaprune.interval import Interval
from iaprune.spec import Net, Select
from iaprune_runtime.layers import entry_of

BiasFold = Literal["linear", "mean", "mid", "none"]
RIDGE = 1e-3  # per-sample ridge of the linear fold: keeps the solve stable for dead units
# A conv net's folds look at up to this many training inputs: its forward pass costs ~10x an
# MLP's per input, and on LeNet-5/MNIST 10,000 inputs folded as well as all 55,000 in a
# quarter of the time (README, "Convolutional networks"). An MLP's folds read every input.
FOLD_SAMPLES = 10_000


def keep_indices(scores: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """The pruning plan: which units of each group to keep (a pure function).

    Ties are broken by position (the earlier unit is kept), so the plan is deterministic.

    Args:
        scores: one 1-D score tensor per prunable group (from `score`).
        counts: how many units each group keeps (a schedule row).

    Returns:
        list[Tensor]: the kept indices of each group, ascending.

    Example:
        >>> import torch
        >>> from iaprune import keep_indices
        >>> keep_indices([torch.tensor([0.3, 0.1, 0.9, 0.5])], [2])
        [tensor([2, 3])]
    """
    if len(scores) != len(counts):
        raise ValueError(f"{len(counts)} unit counts given for {len(scores)} prunable groups")
    plan = []
    for g, (score, count) in enumerate(zip(scores, counts, strict=True)):
        if not 1 <= count <= len(score):
            raise ValueError(f"group {g + 1} has {len(score)} units; cannot keep {count} (must "
                             f"be between 1 and {len(score)})")
        if torch.isnan(score).any():
            raise ValueError(f"group {g + 1}: significance scores contain NaN")
        order = torch.argsort(score, descending=True, stable=True)
        plan.append(order[:count].sort().values)
    return plan


def keep_global(scores: Sequence[Tensor], total: int, minimum: int = 1) -> list[Tensor]:
    """Indices (ascending) of the `total` highest-scoring units over all groups together, each
    group keeping at least `minimum` of its own (its best ones).

    For scores that are comparable across groups (interval-adjoint significances all bound a
    change of the outputs), this lets a schedule row's total be split where it matters. Ties
    are broken by group, then by position, so the plan is deterministic.
    """
    sizes = [len(s) for s in scores]
    floor = [min(minimum, n) for n in sizes]
    if not sum(floor) <= total <= sum(sizes):
        raise ValueError(f"cannot keep {total} units of groups of {sizes} units with at least "
                         f"{minimum} per group (must be between {sum(floor)} and {sum(sizes)})")
    for g, score in enumerate(scores):
        if torch.isnan(score).any():
            raise ValueError(f"group {g + 1}: significance scores contain NaN")
    reserved = keep_indices(scores, floor)
    flat = torch.cat([s.double() for s in scores])  # (sum of sizes,)
    offsets = [sum(sizes[:g]) for g in range(len(sizes))]
    taken = torch.zeros(len(flat), dtype=torch.bool)
    for g, idx in enumerate(reserved):
        taken[offsets[g] + idx] = True
    free = torch.where(taken, torch.tensor(-torch.inf, dtype=flat.dtype), flat)
    order = torch.argsort(free, descending=True, stable=True)
    taken[order[:total - sum(floor)]] = True
    return [torch.nonzero(taken[o:o + n]).flatten() for o, n in zip(offsets, sizes, strict=True)]


def model_input(model: Net, x: Tensor) -> Tensor:
    """Flat data rows (n, n_features) in the shape the Net's first module takes."""
    return x.reshape(len(x), -1) if model.flat_input else x.reshape(len(x), *model.input_shape)


@torch.no_grad()
def value_at(model: Net, x: Rows, index: int) -> Tensor:
    """Value `index` of the network (0: the input, i + 1: module i's output; in a chain, module
    index's input) for data rows x, computed in inference-sized batches (a conv net's feature
    maps of all rows at once would not fit in memory, only the values asked for are kept)."""
    batch = inference_batch(model)
    if model.wiring is None:
        front = nn.Sequential(*list(for_inference(model))[:index])
        return torch.cat([front(model_input(model, xb)) for xb in batches(x, batch)])
    net = for_inference(model)
    return torch.cat([net.values(model_input(model, xb), True, (index,), index)[index]
                      for xb in batches(x, batch)])


def unit_view(u: Tensor, group: Group, use: Use | None = None) -> Tensor:
    """A value (n, ...) as (n, units, positions) of the group's units: channels' maps or column
    blocks (of a value holding several groups' units, the group's block at `use`'s offset)."""
    if use is None or use.units in (0, group.size):
        return u.reshape(len(u), group.size, -1)
    return u.reshape(len(u), use.units, -1)[:, use.offset:use.offset + group.size]


class Fold(NamedTuple):
    """Removed units' values u_R are replaced by offset + coef @ u_K (coef None: offset only);
    one estimate per unit, shared by its positions."""

    offset: Tensor  # (r,) for the r removed units
    coef: Tensor | None = None  # (r, k) on the k kept units' values


def _samples(model: Net, x: Rows) -> Rows:
    """The data a fold looks at: every row for an MLP, the first FOLD_SAMPLES for a conv net."""
    if len(x) > FOLD_SAMPLES and any(entry_of(m).spatial for m in model):
        return head(x, FOLD_SAMPLES)
    return x


def _needs_data(x: Rows | None, fold: str) -> Rows:
    if x is None:
        raise ValueError(f"bias_fold={fold!r} needs the training inputs (data=...)")
    return x


def _rows(model: Net, group: Group, use: Use, x: Rows) -> Tensor:
    """The group's units in the value a reader reads, as samples: (n·positions, units)."""
    u = unit_view(value_at(model, _samples(model, x), use.value), group, use)  # (n, units, P)
    return u.transpose(1, 2).reshape(-1, group.size) if u.shape[2] > 1 else u[:, :, 0]


def _fold_mean(model: Net, group: Group, use: Use, keep: Tensor, removed: Tensor,
               x: Rows | None, box: Interval | None) -> Fold:
    """Mean value of each removed unit over the training inputs (and its positions)."""
    return Fold(_rows(model, group, use, _needs_data(x, "mean")).mean(0)[removed])


def _fold_mid(model: Net, group: Group, use: Use, keep: Tensor, removed: Tensor,
              x: Rows | None, box: Interval | None) -> Fold:
    """Midpoint of each removed unit's value interval over the input box (default: data box)."""
    if box is None:
        box = Interval(*value_range(_needs_data(x, "mid")))
    value = Interval(model_input(model, box.lower[None]), model_input(model, box.upper[None]))
    if model.wiring is None:
        for module in list(model)[:use.value]:
            value = entry_of(module).forward(module, value)
    else:  # the forward half of the sweep (no module is below len(model): no reverse sweep)
        value = sweep(model, value, lowest=len(model)).values[use.value]
    mid = unit_view(value.mid, group, use)[0].mean(dim=1)  # (units,)
    return Fold(mid[removed])


def _fold_linear(model: Net, group: Group, use: Use, keep: Tensor, removed: Tensor,
                 x: Rows | None, box: Interval | None) -> Fold:
    """Least-squares prediction of the removed units' values from the kept ones (ridge-damped;
    for channels position-wise, one coefficient per channel pair).

    Centred ridge regression u_R - mean_R ≈ coef (u_K - mean_K), so constant units are folded
    exactly (coef = 0, offset = their value) and `mean` is the special case coef = 0.
    """
    a = _rows(model, group, use, _needs_data(x, "linear")).double()  # (samples, units)
    centred = a - a.mean(0)
    # One (h, h) scatter matrix, then its kept rows: half the time of gathering the kept and
    # removed columns of the (n, h) values and multiplying those.
    scatter = (centred.T @ centred)[keep]  # (k, h)
    ridge = RIDGE * len(a) * torch.eye(len(keep), dtype=a.dtype, device=a.device)
    gram = scatter[:, keep] + ridge
    coef = torch.linalg.solve(gram, scatter[:, removed]).T  # (r, k)
    offset = a.mean(0)[removed] - coef @ a.mean(0)[keep]
    return Fold(offset, coef)


FoldFn = Callable[[Net, Group, Use, Tensor, Tensor, Tensor | None, Interval | None], Fold]
FOLDS: dict[str, FoldFn | None] = {
    "linear": _fold_linear, "mean": _fold_mean, "mid": _fold_mid, "none": None}


def _cut_inputs(model: Net, group: Group, idx: Tensor) -> list[nn.Module]:
    """The modules of a Net that reads only input features `idx` (a Select before them)."""
    modules = list(model)
    if modules and entry_of(modules[0]).role == "inputs":
        chosen = modules[0].indices[idx]
        n_in = modules[0].n_in
        modules = modules[1:]
    else:
        chosen, n_in = idx, group.size
    return [Select(chosen.tolist(), n_in), *modules]


@torch.no_grad()
def shrink(model: Net, keep: Sequence[Tensor], bias_fold: BiasFold = "linear",
           data: Rows | None = None, box: Interval | None = None,
           inputs: bool = False) -> Net:
    """The surgery: a new, physically smaller Net keeping units `keep[g]` of each prunable
    group g (order preserved); the input model is not changed.

    The removed units' contribution is folded into their consumer: their values u_R are replaced
    by an estimate from the data, and W[:, R] u_R moves into the consumer's bias (and, for
    "linear", onto the kept units' weights). Groups are cut one after another, so each fold sees
    the groups before it already pruned.

    Args:
        model: the network to prune.
        keep: the kept indices of each group (from `keep_indices`).
        bias_fold: "linear" (least-squares u_R ≈ offset + coef u_K over `data`), "mean" (the
            mean value over `data`), "mid" (the midpoint of the value interval over `box`) or
            "none".
        data: training inputs (n, features) for the "linear" and "mean" folds.
        box: the input box for the "mid" fold.
        inputs: the first group is the input features.

    Returns:
        Net: the pruned network.

    Example:
        >>> from iaprune import ScoreData, build, keep_indices, load_dataset, score, shrink
        >>> data = load_dataset("digits")
        >>> net = build({"input": [64], "layers": [{"type": "linear", "out": 16}, "relu",
        ...                                        {"type": "linear", "out": 10}]}, seed=0)
        >>> scores = score("interval_adjoint", net, ScoreData(data.train.x, data.train.y))
        >>> shrink(net, keep_indices(scores, [8]), data=data.train.x)[0]
        Linear(in_features=64, out_features=8, bias=True)
    """
    if bias_fold not in FOLDS:
        raise ValueError(f"unknown bias_fold {bias_fold!r}; choose from {list(FOLDS)}")
    found = groups(model, inputs)
    if len(keep) != len(found):
        raise ValueError(f"{len(keep)} keep-lists given for {len(found)} prunable groups")
    current = model
    for g, idx in enumerate(keep):
        group = groups(current, inputs)[g]
        idx = torch.as_tensor(idx, dtype=torch.long).cpu()  # a plan is made on the CPU
        n = group.size
        if len(idx) == 0 or len(torch.unique(idx)) != len(idx) or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"group {g + 1}: keep-indices must be distinct, in [0, {n}) and at "
                             "least one")
        idx = idx.sort().values
        removed = torch.ones(n, dtype=torch.bool)
        removed[idx] = False
        fold_fn = FOLDS[bias_fold]
        estimates: list[Fold | None] = [None] * len(group.readers)
        if fold_fn is not None and removed.any():  # each reader folds the value it reads
            found: dict[tuple[int, int, int], Fold] = {}  # readers of one value share its fold
            for use in group.readers:
                key = (use.value, use.offset, use.units)
                if key not in found:
                    found[key] = fold_fn(current, group, use, idx, removed, data, box)
            estimates = [found[(use.value, use.offset, use.units)] for use in group.readers]
        current = _cut(current, group, idx, removed, estimates)
    return current


def _within(use: Use, group: Group, idx: Tensor, removed: Tensor) -> tuple[Tensor, Tensor, int]:
    """(kept indices, removed mask, units) among all the units `use`'s module sees, of which
    the group's are [offset, offset + size): the other groups' units are all kept."""
    units = use.units or group.size
    if units == group.size:
        return idx, removed, units
    before = torch.arange(use.offset)
    after = torch.arange(use.offset + group.size, units)
    mask = torch.zeros(units, dtype=torch.bool)
    mask[use.offset:use.offset + group.size] = removed
    return torch.cat([before, idx + use.offset, after]), mask, units


def _widened(fold: Fold | None, use: Use, group: Group, kept: int) -> Fold | None:
    """A fold on the group's kept units as one on all `kept` units the reader keeps (the other
    groups' units get coefficient 0)."""
    if fold is None or fold.coef is None or kept == fold.coef.shape[1]:
        return fold
    coef = fold.coef.new_zeros(len(fold.coef), kept)
    coef[:, use.offset:use.offset + fold.coef.shape[1]] = fold.coef
    return Fold(fold.offset, coef)


def _into_norm(model: Net, modules: list[nn.Module], reader: int) -> None:
    """Move the bias a fold gave a bias-free reader into the BatchNorm that alone reads its
    output (a ResNet's conv -> BatchNorm), so the pruned layer keeps the user's layout (no bias)
    and loads back into the user's class; the outputs are the same."""
    links = model.wiring or [(i,) for i in range(len(model))]
    after = [i for i, reads in enumerate(links) if reader + 1 in reads]
    if len(after) == 1 and entry_of(modules[after[0]]).role == "per_unit":
        norm = modules[after[0]]
        if entry_of(norm).absorb_shift(norm, modules[reader].bias.detach()):
            modules[reader].bias = None


def _cut(model: Net, group: Group, idx: Tensor, removed: Tensor,
         folds: Sequence[Fold | None]) -> Net:
    """A copy of `model` with group `group` cut to `idx` and each reader's fold applied."""
    modules = [copy.deepcopy(m) for m in model]
    for i in group.producers:  # the producers' rows/filters
        entry_of(modules[i]).keep_outputs(modules[i], idx)
    for use in group.norms:  # the BatchNorms' entries
        entry_of(modules[use.module]).keep_outputs(modules[use.module],
                                                   _within(use, group, idx, removed)[0])
    for use, fold in zip(group.readers, folds, strict=True):  # columns/channels/blocks + fold
        kept, gone, units = _within(use, group, idx, removed)
        reader = modules[use.module]
        had_bias = getattr(reader, "bias", None) is not None
        entry_of(reader).keep_inputs(reader, units, kept, gone, _widened(fold, use, group,
                                                                         len(kept)))
        if not had_bias and getattr(reader, "bias", None) is not None:
            _into_norm(model, modules, use.module)
    if group.kind == "input":
        modules = _cut_inputs(Net(modules, model.input_shape), group, idx)
        return Net(modules, model.input_shape)
    return model.like(modules)
