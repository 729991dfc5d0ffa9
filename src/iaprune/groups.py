"""Prunable groups: sets of units removed together, found by following each unit through the
network's graph (a chain is the simple case).

- a hidden neuron j of a Linear: row j (+ bias j) of the producer, entry j of any BatchNorm after
  it, column j of the consumer Linear;
- an output channel c of a Conv2d: filter c (+ bias c), entry c of any BatchNorm after it, input
  channel c of the consumer Conv2d, or, across a Flatten, the consumer Linear's column block
  [c·H·W, (c+1)·H·W);
- an input feature i of a network that reads flat inputs: column i of the first Linear;
- coupled channels: the channels of several producers joined by a residual `add` are one group
  (the channels of a ResNet stage's stream: its stem or first shortcut, and every block's last
  conv), removed from every producer, BatchNorm and consumer at once;
- a `concat` passes its inputs' channels on side by side: a consumer reading it reads a block
  of each producer's channels (at an offset), each group still removed on its own.

The output layer is never a group, nor are channels that reach the output or the input. Criteria
return one score per unit of every group, in the order of `groups(model)` (by first producer);
the schedule has one column per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from iaprune.spec import Net, shapes, spec_of
from iaprune_runtime.layers import LayerType, entry_of

Kind = Literal["neuron", "channel", "input"]


@dataclass(frozen=True)
class Use:
    """A module that holds one entry per unit of a group, in a value of several groups' units:
    the group's units are entries [offset, offset + size) of the `units` the module sees."""

    module: int  # index in the Net
    value: int  # the value it reads (0: the input, i + 1: module i's output)
    offset: int = 0
    units: int = 0  # units of that value, every group's together (0: the group's own size)
    block: int = 1  # a consumer's input features per unit: H*W across a Flatten, else 1


@dataclass(frozen=True)
class Group:
    """One prunable group of `size` units: made by `producers`, held per unit by `norms`
    (BatchNorms), read by `readers` (the Linear/Conv2d layers taking them as inputs)."""

    kind: Kind
    size: int
    producers: tuple[int, ...]  # the Linear/Conv2d layers making the units (empty: input)
    readers: tuple[Use, ...]
    norms: tuple[Use, ...] = ()
    pre: tuple[int, ...] = ()  # values holding the units before their activation, one per producer
    post: tuple[int, ...] = ()  # the same after it (the first activation on the way)
    activations: tuple[int | None, ...] = field(default=())  # that activation, per producer

    @property
    def coupled(self) -> bool:
        """Units of several producers tied by a residual add."""
        return len(self.producers) > 1

    @property
    def producer(self) -> int | None:
        """The (first) producer's index (None: input features)."""
        return self.producers[0] if self.producers else None

    @property
    def consumer(self) -> int:
        """The first reader's index."""
        return self.readers[0].module

    @property
    def block(self) -> int:
        """The first reader's input features per unit."""
        return self.readers[0].block

    @property
    def batchnorms(self) -> tuple[int, ...]:
        return tuple(use.module for use in self.norms)

    @property
    def activation(self) -> int | None:
        """The first activation after the (first) producer (for measure="post")."""
        return self.activations[0] if self.activations else None

    @property
    def output(self) -> int:
        """The value that holds the units before the activation: the producer's output."""
        return self.pre[0] if self.pre else 0


# ---- following units through the graph -----------------------------------------------------

class _Spaces:
    """Union-find over unit spaces: a producer's outputs are a space; an add ties spaces."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, space: int) -> None:
        self.parent.setdefault(space, space)

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def tie(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


Segments = tuple[tuple[int, int], ...]  # a value's channels: (space, count) blocks in order
INPUT, FIXED = -1, -2  # spaces of the network's input and of channels no group can cut


def _segments(model: Net, kinds: list[LayerType], links: list[tuple[int, ...]],
              first: int, spaces: _Spaces) -> list[Segments]:
    """Each value's channel blocks; spaces tied by adds are merged in `spaces` (a space a
    mismatched add or an unknown layer touches is tied to FIXED)."""
    spaces.add(INPUT)
    spaces.add(FIXED)
    values: list[Segments] = [((INPUT, first),)]
    for i, (module, kind, reads) in enumerate(zip(model, kinds, links, strict=True)):
        given = [values[j] for j in reads]
        if kind.role == "producer":
            spaces.add(i)
            values.append(((i, kind.units(module)),))
        elif kind.joins == "same":
            shape = [c for _, c in given[0]]
            for other in given[1:]:
                if [c for _, c in other] != shape:  # blocks that do not line up: keep them all
                    for s, _ in (*given[0], *other):
                        spaces.tie(s, FIXED)
                    continue
                for (a, _), (b, _) in zip(given[0], other, strict=True):
                    spaces.tie(a, b)
            values.append(given[0])
        elif kind.joins == "stack":
            values.append(tuple(s for segs in given for s in segs))
        elif kind.role in ("per_unit", "elementwise", "pool", "reshape", "inputs"):
            values.append(given[0])
        else:  # a layer type whose channels this walk does not know: nothing through it is cut
            for s, _ in given[0]:
                spaces.tie(s, FIXED)
            values.append(((FIXED, 0),))
    return values


def _walk_to_activation(kinds: list[LayerType], readers: dict[int, list[int]], start: int
                        ) -> int | None:
    """The first activation after value `start` on its single-reader path through BatchNorms,
    element-wise layers, pools, reshapes and adds (a producer, a concat or a fork stops it)."""
    value = start
    while len(readers.get(value, [])) == 1:
        i = readers[value][0]
        kind = kinds[i]
        if kind.activation:
            return i
        if kind.role == "producer" or kind.joins == "stack":
            return None
        value = i + 1
    return None


def groups(model: Net, inputs: bool = False) -> list[Group]:
    """The prunable groups of `model` in order of their first producer (with `inputs`, the
    input features first)."""
    spec = spec_of(model)
    value_shapes = shapes(spec["layers"], spec["input"])
    kinds = [entry_of(m) for m in model]
    links = list(model.wiring or [(i,) for i in range(len(model))])
    readers: dict[int, list[int]] = {}
    for i, reads in enumerate(links):
        for j in reads:
            readers.setdefault(j, []).append(i)
    spaces = _Spaces()
    values = _segments(model, kinds, links, value_shapes[0][0], spaces)
    for s, _ in values[-1]:  # the outputs (logits) are never cut
        spaces.tie(s, FIXED)

    found: list[Group] = []
    if inputs:
        found.append(_input_group(model, kinds))
    members: dict[int, list[int]] = {}
    for i, kind in enumerate(kinds):
        if kind.role == "producer" and spaces.root(i) not in (spaces.root(FIXED),
                                                            spaces.root(INPUT)):
            members.setdefault(spaces.root(i), []).append(i)
    for root, producers in members.items():
        found.append(_group(model, kinds, links, values, value_shapes, spaces, root, producers,
                            readers))
    return found


def _uses(spaces: _Spaces, segments: Segments, root: int) -> tuple[int, int] | None:
    """(offset, total) of the blocks of space `root` in a value's segments (None: not in it)."""
    offset, at = 0, None
    for s, count in segments:
        if s >= 0 and spaces.root(s) == root and at is None:
            at = offset
        offset += count
    return None if at is None else (at, offset)


def _group(model: Net, kinds: list[LayerType], links: list[tuple[int, ...]],
           values: list[Segments], value_shapes: list[tuple[int, ...]], spaces: _Spaces,
           root: int, producers: list[int], readers: dict[int, list[int]]) -> Group:
    size = kinds[producers[0]].units(model[producers[0]])
    uses, norms = [], []
    for i, (kind, reads) in enumerate(zip(kinds, links, strict=True)):
        if kind.role not in ("producer", "per_unit"):
            continue
        where = _uses(spaces, values[reads[0]], root)
        if where is None:
            continue
        offset, total = where
        if kind.role == "per_unit":
            norms.append(Use(i, reads[0], offset, total))
            continue
        flat = len(value_shapes[reads[0]]) == 1  # a Linear's features: a block per unit
        block = math.prod(value_shapes[reads[0]]) // total if flat else 1
        uses.append(Use(i, reads[0], offset, total, block))
    spatial = kinds[producers[0]].spatial
    after = [_walk_to_activation(kinds, readers, p + 1) for p in producers]
    pre = tuple(p + 1 for p in producers)
    post = tuple(p + 1 if a is None else a + 1 for p, a in zip(producers, after, strict=True))
    return Group("channel" if spatial else "neuron", size, tuple(producers), tuple(uses),
                 tuple(norms), pre, post, tuple(after))


def _input_group(model: Net, kinds: list[LayerType]) -> Group:
    """The input features, read by the first Linear of a chain that reads the input directly."""
    producers = [i for i, kind in enumerate(kinds) if kind.role == "producer"]
    first = producers[0]
    if model.wiring is not None:
        raise ValueError("input features can be pruned only in a chain network (this one "
                         "has a graph: skip connections or concatenations)")
    if not kinds[first].reads_flat or not model.flat_input:
        raise ValueError("input features can be pruned only in a network whose first layer "
                         "is a Linear on the flattened input")
    if any(kinds[i].role != "inputs" and (kinds[i].role != "elementwise"
                                          or kinds[i].activation) for i in range(first)):
        raise ValueError("input pruning needs the first Linear to read the input directly")
    size = kinds[first].features(model[first])
    return Group("input", size, (), (Use(first, first, 0, size),), (), (first,), (first,),
                 (None,))


def units(model: Net, inputs: bool = False) -> list[int]:
    """Number of units of every group: the model's row of a retention schedule."""
    return [g.size for g in groups(model, inputs)]
