"""The contract of a layer type and the registry that finds one by spec name, module or call.

A `LayerType` holds everything IA-Prune knows about one type of layer:

- the spec: its fields with defaults (`fields`, REQUIRED marks a field without one) and their
  checks (`check_field`), the shape rule (`out_shape`), a one-line description (`describe`);
- the network: the builder (`build`: a module from a checked layer spec and its input shape),
  the inference step (`run`), the multiply-accumulates per sample (`macs`);
- the import: the reader of a module (`read`, a TypeError for settings it does not cover) and
  of the functional calls named in `calls` (`read_call`, e.g. F.relu, x.view);
- the interval sweep: the forward map of a value interval and the adjoint map (`forward`,
  `backward`, formulas in their docstrings), the input ranks and first dimension it takes
  (`ranks`, `features`) and the settings it does not cover (`check`);
- the pruning: its `role` in a prunable group and the tensor surgery of that role
  (`keep_outputs`, `keep_inputs`, `resize`).

An entry is one instance, registered with `@register`: by its spec name, by each torch class in
`modules` (exact types: a subclass may compute something else) and by its call names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from iaprune_runtime.interval import Interval

Layer = dict[str, Any]
REQUIRED = object()  # marks a field without a default
# producer: computes units (Linear rows, Conv2d filters) and reads the previous group's units;
# per_unit: one entry per unit, cut with them (BatchNorm); elementwise: acts on each value alone
# (activations, dropout); reshape: changes the shape, not the values (Flatten); pool: keeps the
# channels, changes the positions; inputs: the input features a network reads (select);
# merge: joins several values of a graph network (add, concat); normaliser: a softmax/log_softmax
# after the logits (the last layer).
Role = Literal["producer", "per_unit", "elementwise", "reshape", "pool", "inputs", "merge",
               "normaliser"]


class SpecError(ValueError):
    """An architecture spec that cannot be checked or built."""


def check_int(value: Any, what: str, minimum: int) -> int:
    """`value` when it is an int >= minimum (not a bool), else a SpecError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(value: Any, what: str) -> bool:
    """`value` when it is a bool, else a SpecError naming `what`."""
    if not isinstance(value, bool):
        raise SpecError(f"{what} must be true or false, got {value!r}")
    return value


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """A torch size argument (int or pair) as a pair of ints."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window_shape(layer: Layer, shape: tuple[int, ...], where: str, channels: int
                 ) -> tuple[int, ...]:
    """(channels, H', W') of a square window (conv or pool) of a checked layer on (C, H, W)."""
    if len(shape) != 3:
        raise SpecError(f"{where}: {layer['type']} needs (C, H, W) input, got {shape}")
    pad = layer.get("padding", 0)
    size = [(s + 2 * pad - layer["kernel"]) // layer["stride"] + 1 for s in shape[1:]]
    if min(size) < 1:
        raise SpecError(f"{where}: {layer['type']} kernel {layer['kernel']} does not fit input "
                        f"{shape}")
    return (channels, *size)


def square(value: Any, what: str, module: nn.Module) -> int:
    """A square kernel/stride/padding as one int (specs are square); TypeError otherwise."""
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise TypeError(f"{type(module).__name__} with non-square {what} {tuple(value)} is "
                            "not supported")
        value = value[0]
    return int(value)


class LayerType:
    """One layer type; subclasses override what their type does differently (see the module
    docstring). The defaults describe a layer without fields that keeps its input's shape."""

    name: ClassVar[str]  # the spec's "type"
    modules: ClassVar[tuple[type[nn.Module], ...]]  # the torch classes of this type (exact)
    role: ClassVar[Role]
    fields: ClassVar[dict[str, Any]] = {}  # field -> default (REQUIRED: none)
    calls: ClassVar[tuple[str, ...]] = ()  # functional calls read as this type (name sans "_")
    activation: ClassVar[bool] = False  # a nonlinearity after a unit: measure="post" reads there
    sparse: ClassVar[bool] = False  # outputs exact zeros for inactive units (what APoZ counts)
    reads_flat: ClassVar[bool] = False  # as a network's first shape-changing layer: flat input
    logits: ClassVar[bool] = False  # may be the last layer of a network
    # softmax/log_softmax: allowed only after the logits layer, as the network's last layer;
    # the loss and the significance are taken on its input (layers/softmax.py says why)
    normaliser: ClassVar[bool] = False
    # fields left out of a checked spec while they hold their default: fields added after specs
    # were stored (a pool's padding), so that those specs, manifests and descriptions stay as
    # they were
    optional: ClassVar[tuple[str, ...]] = ()
    spatial: ClassVar[bool] = False  # a producer of feature maps (its units are channels)
    input_ranks: ClassVar[tuple[int, ...] | None] = None  # input ranks, batch excluded (any)
    keeps_rank: ClassVar[bool] = True  # the output has the input's rank
    merge: ClassVar[bool] = False  # reads several values (add, concat): the *_many rules
    # how a merge passes its inputs' units on: "same" (an add: its inputs' channels are the same
    # units, tied into one group) or "stack" (a concat: side by side, each group its own)
    joins: ClassVar[Literal["same", "stack"] | None] = None

    # ---- spec --------------------------------------------------------------------------------
    def check_field(self, field: str, value: Any, where: str, layer: Layer) -> Any:
        """The checked value of one field (`layer` holds the fields checked before it)."""
        return check_int(value, f"{where}: {self.name} {field}", 1)

    def out_shape(self, layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        """The output shape (without batch) on inputs of `shape`; SpecError if it does not fit."""
        return shape

    def describe(self, layer: Layer) -> str:
        """'conv2d 6 5 1 0': the type and its field values."""
        return " ".join([self.name, *(str(v) for k, v in layer.items()
                                       if k not in ("type", "bias", "name", "inputs"))])

    # ---- network -----------------------------------------------------------------------------
    def build(self, layer: Layer, shape: tuple[int, ...]) -> nn.Module:
        """The freshly initialised torch module of a checked layer spec on inputs of `shape`."""
        return self.modules[0]()

    def run(self, module: nn.Module, x: Tensor) -> Tensor:
        """module(x) at inference (no autograd): an entry may compute it faster, same values."""
        return module(x)

    def macs(self, module: nn.Module, out_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates per sample (0 for layers without weights, as thop counts)."""
        return 0

    def params(self, layer: Layer, shape: tuple[int, ...]) -> int:
        """Values its module holds (parameters and buffers) for a checked layer spec on inputs
        of `shape`, computed without building it (the memory budget, iaprune_runtime.budget)."""
        return 0

    # ---- import ------------------------------------------------------------------------------
    def read(self, module: nn.Module) -> Layer:
        """The layer spec of `module`; TypeError for settings this type does not cover."""
        return {"type": self.name}

    def read_call(self, args: tuple, kwargs: dict, result: Tensor) -> Layer:
        """The layer spec of a functional call `func(*args, **kwargs) -> result` on the chain's
        tensor args[0]; TypeError when it is not one this type covers."""
        return {"type": self.name}

    # ---- interval sweep ----------------------------------------------------------------------
    def check(self, module: nn.Module) -> None:
        """ValueError for settings of `module` that the interval rules do not cover."""

    def ranks(self, module: nn.Module) -> tuple[int, ...] | None:
        """The input ranks (batch excluded) `module` takes; None: any."""
        return self.input_ranks

    def features(self, module: nn.Module) -> int | None:
        """The size of the input's first non-batch dimension it needs (None: any)."""
        return None

    def forward(self, module: nn.Module, x: Interval) -> Interval:
        """The output value interval (batch, *out) of input value interval x (batch, *in)."""
        raise NotImplementedError(f"{self.name} has no interval forward rule")

    def backward(self, module: nn.Module, x: Interval, out_adjoint: Interval) -> Interval:
        """The adjoint of the input (b', k, *in) from the output's adjoint (b, k, *out) at input
        value x; b and b' are the batch size or 1 (an adjoint not yet batch-dependent)."""
        raise NotImplementedError(f"{self.name} has no interval adjoint rule")

    def forward_many(self, module: nn.Module, xs: Sequence[Interval]) -> Interval:
        """A merge node's output interval from its inputs' value intervals."""
        raise NotImplementedError(f"{self.name} reads one value")

    def backward_many(self, module: nn.Module, xs: Sequence[Interval],
                      out_adjoint: Interval) -> list[Interval]:
        """A merge node's input adjoints (one per input) from its output's adjoint."""
        raise NotImplementedError(f"{self.name} reads one value")

    # ---- prunable groups and shrink ----------------------------------------------------------
    def units(self, module: nn.Module) -> int:
        """Units it produces (role producer) or holds one entry of (role per_unit)."""
        raise NotImplementedError(f"{self.name} has no units")

    def keep_outputs(self, module: nn.Module, idx: Tensor) -> None:
        """Keep only output units `idx` of `module`, in place (producer, per_unit)."""
        raise NotImplementedError(f"{self.name} has no output units to keep")

    def keep_inputs(self, module: nn.Module, size: int, idx: Tensor, removed: Tensor,
                    fold: Any) -> None:
        """Keep only input units `idx` of `size` of `module` (a producer reading them) in place,
        folding the removed units' estimate `fold` (offset, coef) into it (None: no fold)."""
        raise NotImplementedError(f"{self.name} reads no units")

    def absorb_shift(self, module: nn.Module, shift: Tensor) -> bool:
        """Take a per-unit shift b of its input into `module` in place, so that module(x + b)
        computes what module(x) did before (in eval mode); False when this type cannot."""
        return False

    def check_pair(self, mine: nn.Module, ref: nn.Module, where: str) -> None:
        """ValueError unless a user's module `mine` can take the weights of `ref` once resized."""

    def resize(self, module: nn.Module, ref: nn.Module, n_in: int) -> None:
        """Give a user's `module` the sizes of `ref` (input size `n_in`), with empty values."""
        raise NotImplementedError(f"{self.name} has no sizes")


def parameter(value: Tensor, like: nn.Parameter) -> nn.Parameter:
    """`value` as a parameter with the dtype and requires_grad of `like`."""
    return nn.Parameter(value.to(like.dtype).contiguous(), requires_grad=like.requires_grad)


def empty_like(shape: torch.Size, old: Tensor) -> Tensor:
    return torch.empty(shape, dtype=old.dtype, device=old.device)


# ---- the registry ------------------------------------------------------------------------------

_BY_NAME: dict[str, LayerType] = {}
_BY_MODULE: dict[type[nn.Module], LayerType] = {}
_BY_CALL: dict[str, LayerType] = {}


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator: add one instance of a layer type to the registry."""
    entry = cls()
    if entry.name in _BY_NAME:
        raise ValueError(f"layer type {entry.name!r} is registered twice")
    _BY_NAME[entry.name] = entry
    for module in entry.modules:
        _BY_MODULE[module] = entry
    for call in entry.calls:
        _BY_CALL[call] = entry
    return cls


def names() -> tuple[str, ...]:
    """The spec names of every registered layer type, in registration order."""
    return tuple(_BY_NAME)


def entries() -> tuple[LayerType, ...]:
    """Every registered layer type."""
    return tuple(_BY_NAME.values())


def by_module() -> dict[type[nn.Module], LayerType]:
    """Torch class -> layer type (a copy)."""
    return dict(_BY_MODULE)


def entry(name: str) -> LayerType:
    """The layer type of spec name `name` (KeyError if none)."""
    return _BY_NAME[name]


def lookup(module: nn.Module, exact: bool = True) -> LayerType | None:
    """The layer type of `module`: by its exact class, or with exact=False also by a base class
    (a user's subclass of nn.Linear); None when none is registered."""
    if exact:
        return _BY_MODULE.get(type(module))
    return next((_BY_MODULE[c] for c in type(module).__mro__ if c in _BY_MODULE), None)


def supported() -> str:
    """'Linear, Conv2d, ...': the torch classes of every layer type, for error messages."""
    return ", ".join(c.__name__ for c in _BY_MODULE)


def entry_of(module: nn.Module) -> LayerType:
    """The layer type of `module` (exact class); TypeError naming an unsupported one."""
    found = lookup(module)
    if found is None:
        raise TypeError(f"unsupported module {type(module).__name__}; IA-Prune supports "
                        f"{supported()}")
    return found


def logits_end(kinds: Sequence[LayerType]) -> int:
    """The number of leading layers that compute the logits: all of them, or all but a trailing
    normaliser (softmax, log_softmax)."""
    return len(kinds) - 1 if kinds and kinds[-1].normaliser else len(kinds)


def logits_value(kinds: Sequence[LayerType], wiring: Sequence[Sequence[int]] | None = None
                 ) -> int:
    """The value holding the logits (value 0: the input, value i + 1: layer i's output): the
    last layer's output, or the value a trailing normaliser reads (in a graph, its `wiring`)."""
    end = logits_end(kinds)
    return wiring[end][0] if wiring is not None and end < len(kinds) else end


def of_call(name: str) -> LayerType | None:
    """The layer type of a functional call by its name (leading/trailing '_' ignored)."""
    return _BY_CALL.get(name.strip("_"))
