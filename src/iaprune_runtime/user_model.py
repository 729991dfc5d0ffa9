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

import ast
import copy
import inspect
import operator
import textwrap
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
    weights strictly; see the module docstring for `inputs`. Returns `target` in eval mode.

    The load is tried on a copy first, whose own forward must then compute the pruned network's
    outputs on a small random batch (`check_forward`): a forward that reshapes to a fixed size
    is a ValueError naming the constant to change, and `target` is left as it was. With
    inputs="indices" the forward is not checked: it is yours to change (it must apply
    model.input_indices, which it may not do yet)."""
    if inputs not in INPUT_MODES:
        raise ValueError(f"unknown inputs mode {inputs!r}; choose from {list(INPUT_MODES)}")
    trial = _load(copy.deepcopy(target), reference, inputs)
    if inputs != "indices" or _selected(reference) is None:
        check_forward(trial, target, reference)
    return _load(target, reference, inputs)


def _load(target: nn.Module, reference: DeployedNet, inputs: InputMode) -> nn.Module:
    """copy_into without the forward check."""
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


FORWARD_SAMPLES = 4  # the random batch the user's forward is checked on
UNSIZED = "does it assume the unpruned layer sizes?"


_ARITHMETIC = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


def _int_value(node: ast.AST) -> int | None:
    """The value of an integer constant expression (16 * 2 * 2), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    combine = _ARITHMETIC.get(type(node.op)) if isinstance(node, ast.BinOp) else None
    if combine is not None:
        a, b = _int_value(node.left), _int_value(node.right)
        return None if a is None or b is None else combine(a, b)
    return None


def reshape_constant(cls: type, value: int) -> str | None:
    """The source of a constant expression equal to `value` in a .view/.reshape call of `cls`'s
    code ('16*2*2' in x.view(-1, 16*2*2)), else None (no source, or no such constant)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("view", "reshape"):
            for arg in ast.walk(node):
                if arg is not node and _int_value(arg) == value:
                    return ast.get_source_segment(source, arg)
    return None


def _fixed_size_hint(trial: nn.Module, original: nn.Module, wrong: tuple[str, int] | None
                     ) -> str:
    """What to change when a forward feeds a Linear a fixed, now wrong, number of features."""
    before = dict(original.named_modules())
    changed = [(name, _n_in(before[name]), _n_in(m)) for name, m in trial.named_modules()
               if _kind(m) is not None and _kind(m).reads_flat and _n_in(before[name]) != _n_in(m)]
    if wrong is not None:  # a Linear got `got` features: the old size, from a fixed reshape
        name, got = wrong
        changed = [(name, got, _n_in(dict(trial.named_modules())[name]))]
    for name, old, new in changed:
        expr = reshape_constant(type(original), old)
        if expr is not None or wrong is not None:
            constant = f"{expr} (={old})" if expr is not None and expr != str(old) else str(old)
            return (f"your forward reshapes to {old} features; the pruned network's {name} "
                    f"takes {new}: change the constant {constant} to {new}")
    return ""


@torch.no_grad()
def check_forward(trial: nn.Module, original: nn.Module, reference: DeployedNet) -> None:
    """ValueError unless `trial` (a copy of `original` holding the pruned weights) computes the
    pruned network `reference`'s outputs on a random batch; it names the constant of a reshape to
    a fixed size (x.view(-1, 16*2*2)) when that is what fails."""
    param = next(trial.parameters())
    x = torch.rand(FORWARD_SAMPLES, *reference.input_shape,
                   generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    theirs = next(reference.parameters())
    expected = reference.eval()(x.to(theirs.device, theirs.dtype))
    wrong: list[tuple[str, int]] = []
    hooks = [m.register_forward_pre_hook(
        lambda m, args, name=name: wrong.append((name, args[0].shape[-1]))
        if args and args[0].shape[-1] != _n_in(m) else None)
        for name, m in trial.named_modules() if _kind(m) is not None and _kind(m).reads_flat]
    cls = type(original).__name__
    try:
        got = trial.eval()(x.flatten(1) if reference.flat_input else x)
    except Exception as exc:  # noqa: BLE001 (any failure of the user's own code is reported)
        hint = _fixed_size_hint(trial, original, wrong[0] if wrong else None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{cls}.forward fails on the pruned weights ({first}); "
                         f"{hint or UNSIZED}; your model was left as it was") from None
    finally:
        for hook in hooks:
            hook.remove()
    expected = expected.to(got.device, got.dtype)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        diff = (f"max abs diff {float((got - expected).abs().max()):.3g}"
                if got.shape == expected.shape else f"shape {tuple(got.shape)}, expected "
                f"{tuple(expected.shape)}")
        hint = _fixed_size_hint(trial, original, wrong[0] if wrong else None)
        raise ValueError(f"{cls}.forward on the pruned weights does not compute the pruned "
                         f"network's outputs ({diff}); {hint or UNSIZED}; your model was left "
                         "as it was")
