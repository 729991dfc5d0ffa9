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

from .model import DeployedNet, Select

InputMode = Literal["error", "indices", "zeros"]
INPUT_MODES: tuple[InputMode, ...] = ("error", "indices", "zeros")
LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)  # the layers that get resized
CONV_FIXED = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")


def _kind(module: nn.Module) -> type[nn.Module]:
    return next(cls for cls in LAYERS if isinstance(module, cls))


def _n_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.in_channels if isinstance(module, nn.Conv2d) else module.num_features


def _n_out(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.out_channels if isinstance(module, nn.Conv2d) else module.num_features


def _check_pair(where: str, mine: nn.Module, ref: nn.Module) -> None:
    """ValueError unless `mine` can be resized to `ref` (same kind and fixed settings)."""
    if _kind(mine) is not _kind(ref):
        raise ValueError(f"{where} is a {type(mine).__name__} but the checkpoint's layer there is "
                         f"a {_kind(ref).__name__}")
    if isinstance(ref, nn.Conv2d):
        for name in CONV_FIXED:
            if getattr(mine, name) != getattr(ref, name):
                raise ValueError(f"{where}: {name} {getattr(mine, name)!r} differs from the "
                                 f"checkpoint's {getattr(ref, name)!r}")
    if isinstance(ref, nn.Linear | nn.Conv2d) and (mine.bias is None) != (ref.bias is None):
        has = "has" if ref.bias is not None else "has no"
        raise ValueError(f"{where}: the checkpoint's layer {has} a bias, yours differs")
    if isinstance(ref, nn.BatchNorm1d | nn.BatchNorm2d):
        if not (mine.affine and mine.track_running_stats):
            raise ValueError(f"{where}: needs affine=True and track_running_stats=True to "
                             "receive the checkpoint's weights and running statistics")
        if mine.eps != ref.eps:
            raise ValueError(f"{where}: eps {mine.eps} differs from the checkpoint's {ref.eps}")


def _selected(reference: DeployedNet) -> Tensor | None:
    """The kept input indices of a reference network with a select, else None."""
    selects = [m for m in reference if isinstance(m, Select)]
    return selects[0].indices if selects else None


def _empty_like(shape: torch.Size, old: Tensor) -> Tensor:
    return torch.empty(shape, dtype=old.dtype, device=old.device)


def _resize(module: nn.Module, ref: nn.Module, n_in: int) -> None:
    """Give `module` the checkpoint layer's sizes (input size `n_in`), with empty values."""
    if isinstance(module, nn.Linear):
        module.in_features, module.out_features = n_in, ref.out_features
    elif isinstance(module, nn.Conv2d):
        module.in_channels, module.out_channels = n_in, ref.out_channels
    else:
        module.num_features = ref.num_features
        for name in ("running_mean", "running_var"):
            setattr(module, name, _empty_like(getattr(ref, name).shape, getattr(module, name)))
    for name in ("weight", "bias"):
        old = getattr(module, name)
        if old is not None:
            shape = getattr(ref, name).shape
            if name == "weight" and isinstance(module, nn.Linear):
                shape = torch.Size((ref.out_features, n_in))
            setattr(module, name, nn.Parameter(_empty_like(shape, old),
                                               requires_grad=old.requires_grad))


def copy_into(target: nn.Module, reference: DeployedNet, inputs: InputMode = "error"
              ) -> nn.Module:
    """Resize `target`'s Conv2d/BatchNorm/Linear layers in place to `reference`'s and load its
    weights strictly; see the module docstring for `inputs`. Returns `target` in eval mode."""
    if inputs not in INPUT_MODES:
        raise ValueError(f"unknown inputs mode {inputs!r}; choose from {list(INPUT_MODES)}")
    cls = type(target).__name__
    mine = [(name, m) for name, m in target.named_modules() if isinstance(m, LAYERS)]
    theirs = [m for m in reference if isinstance(m, LAYERS)]
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
            if not isinstance(theirs[0], nn.Linear):
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
        full = torch.zeros(theirs[0].out_features, reference.n_inputs, dtype=state[key].dtype)
        full[:, indices] = state[key]
        state[key] = full
    others = sorted(set(target.state_dict()) - set(state))
    if others:
        raise ValueError(f"{cls} has parameters/buffers the checkpoint does not provide: {others}")

    for i, ((_, m), ref) in enumerate(zip(mine, theirs, strict=True)):
        _resize(m, ref, n_first if i == 0 else _n_in(ref))
    target.load_state_dict(state, strict=True)
    if indices is not None and inputs == "indices":
        if hasattr(target, "input_indices") and "input_indices" not in target._buffers:
            target.input_indices = indices.clone()  # your own attribute of that name: replaced
        else:  # a buffer follows model.to(device) but stays out of your state_dict
            target.register_buffer("input_indices", indices.clone(), persistent=False)
    return target.eval()
