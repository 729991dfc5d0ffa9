"""Loading a pruned checkpoint into a user's own nn.Module: resize its layers, then load strictly.

The user's Conv2d, BatchNorm1d/2d and Linear layers, in registration order, are matched one to
one with the checkpoint's (in the order of its spec). Every check runs before anything changes,
so a refused model is left as it was.

Input pruning: a checkpoint whose network starts with a select reads only some input features
(`indices` of the flattened input). A user's forward cannot know that, so `inputs` says what to do:
- "error" (default): refuse with a ValueError that explains the two choices below;
- "indices": the first Linear is resized to the kept features and the indices are attached as
  `model.input_indices` (a LongTensor); your forward must apply them to the flattened input,
  `x = x.flatten(1)[:, self.input_indices]`, before the first Linear;
- "zeros": the first Linear keeps its full input width; the kept columns get the checkpoint's
  weights and the pruned ones zeros, so an unchanged forward computes the pruned network's
  outputs (up to float rounding), without the first layer's speed-up.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .layers import LayerType, lookup
from .model import DeployedNet

InputMode = Literal["error", "indices", "zeros"]
INPUT_MODES: tuple[InputMode, ...] = ("error", "indices", "zeros")


def _kind(module: nn.Module) -> LayerType | None:
    """The layer type of a user's module (a subclass counts as its base) when it holds weights
    that get resized: a producer (Linear, Conv2d) or per-unit layer (BatchNorm), else None."""
    found = lookup(module, exact=False)
    return found if found is not None and found.role in ("producer", "per_unit") else None


def _n_in(module: nn.Module) -> int:
    return _kind(module).features(module)


def _n_out(module: nn.Module) -> int:
    return _kind(module).units(module)


def _check_pair(where: str, mine: nn.Module, ref: nn.Module) -> None:
    """ValueError unless `mine` can be resized to `ref` (same kind and fixed settings)."""
    if not isinstance(mine, type(ref)):
        raise ValueError(f"{where} is a {type(mine).__name__} but the checkpoint's layer there is "
                         f"a {type(ref).__name__}")
    _kind(ref).check_pair(mine, ref, where)


def _selected(reference: DeployedNet) -> Tensor | None:
    """The kept input indices of a reference network with a select, else None."""
    selects = [m for m in reference if lookup(m).role == "inputs"]
    return selects[0].indices if selects else None


def copy_into(target: nn.Module, reference: DeployedNet, inputs: InputMode = "error"
              ) -> nn.Module:
    """Resize `target`'s Conv2d/BatchNorm/Linear layers in place to `reference`'s and load its
    weights strictly; see the module docstring for `inputs`. Returns `target` in eval mode."""
    if inputs not in INPUT_MODES:
        raise ValueError(f"unknown inputs mode {inputs!r}; choose from {list(INPUT_MODES)}")
    cls = type(target).__name__
    mine = [(name, m) for name, m in target.named_modules() if _kind(m) is not None]
    theirs = [m for m in reference if _kind(m) is not None]
    kinds = ", ".join(type(m).__name__ for m in theirs)
    if len(mine) != len(theirs):
        raise ValueError(f"{cls} has {len(mine)} Conv2d/BatchNorm/Linear layers but the checkpoint "
                         f"has {len(theirs)} ({kinds}); load_pruned_model needs one per "
                         "checkpoint layer, in the same order")
    for (name, m), ref in zip(mine, theirs, strict=True):
        _check_pair(f"{cls}.{name}", m, ref)
    first, last = mine[0][1], mine[-1][1]
    if _n_out(last) != _n_out(theirs[-1]):
        raise ValueError(f"{cls}.{mine[-1][0]} has {_n_out(last)} outputs but the checkpoint "
                         f"has {_n_out(theirs[-1])}")
    indices = _selected(reference)
    n_first = _n_in(theirs[0])  # the input size the first layer gets
    allowed = {n_first}
    if indices is not None:
        if inputs == "error":
            raise ValueError(
                f"the checkpoint reads {len(indices)} of its {reference.n_inputs} input "
                "features (input pruning); pass inputs='indices' (your first layer is resized "
                "and model.input_indices is set: your forward must apply "
                "x.flatten(1)[:, self.input_indices]) or inputs='zeros' (the pruned inputs get "
                "zero weights; your forward stays as it is)")
        if inputs == "zeros":
            if not _kind(theirs[0]).reads_flat:
                raise ValueError("inputs='zeros' needs the checkpoint's first layer after its "
                                 f"select to be a Linear, not a {type(theirs[0]).__name__}")
            n_first = reference.n_inputs
            allowed = {n_first}
        else:  # your first layer may take every input feature or only the kept ones
            allowed = {n_first, reference.n_inputs}
    if _n_in(first) not in allowed:
        raise ValueError(f"{cls}.{mine[0][0]} takes {_n_in(first)} inputs but the checkpoint's "
                         f"first layer takes {' or '.join(map(str, sorted(allowed)))}")

    state: dict[str, Tensor] = {}
    for (name, _), ref in zip(mine, theirs, strict=True):
        for key, value in ref.state_dict().items():
            state[f"{name}.{key}" if name else key] = value.detach()
    if indices is not None and inputs == "zeros":
        key = f"{mine[0][0]}.weight" if mine[0][0] else "weight"
        full = torch.zeros(_n_out(theirs[0]), reference.n_inputs, dtype=state[key].dtype)
        full[:, indices] = state[key]
        state[key] = full
    others = sorted(set(target.state_dict()) - set(state))
    if others:
        raise ValueError(f"{cls} has parameters/buffers the checkpoint does not provide: {others}")

    for i, ((_, m), ref) in enumerate(zip(mine, theirs, strict=True)):
        _kind(ref).resize(m, ref, n_first if i == 0 else _n_in(ref))
    target.load_state_dict(state, strict=True)
    if indices is not None and inputs == "indices":
        if hasattr(target, "input_indices") and "input_indices" not in target._buffers:
            target.input_indices = indices.clone()  # your own attribute of that name: replaced
        else:  # a buffer follows model.to(device) but stays out of your state_dict
            target.register_buffer("input_indices", indices.clone(), persistent=False)
    return target.eval()
