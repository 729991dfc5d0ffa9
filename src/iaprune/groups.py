"""Prunable groups: sets of units removed together, found by walking a Net's layers.

- a hidden neuron j of a Linear: row j (+ bias j) of the producer, entry j of any BatchNorm after
  it, column j of the consumer Linear;
- an output channel c of a Conv2d: filter c (+ bias c), entry c of any BatchNorm after it, input
  channel c of the consumer Conv2d, or, across a Flatten, the consumer Linear's column block
  [c·H·W, (c+1)·H·W);
- an input feature i of a network that reads flat inputs: column i of the first Linear.

The output layer is never a group. Criteria return one score per unit of every group, in the
order of `groups(model)`; the schedule has one column per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from iaprune.spec import Net, shapes, spec_of
from iaprune_runtime.layers import entry_of

Kind = Literal["neuron", "channel", "input"]


@dataclass(frozen=True)
class Group:
    """One prunable group: `size` units produced by module `producer` and read by `consumer`."""

    kind: Kind
    producer: int | None  # index in the Net of the Linear/Conv2d producing the units (None: input)
    consumer: int  # index of the Linear/Conv2d reading them
    size: int  # number of units (neurons, channels, input features)
    block: int = 1  # consumer input features per unit: H*W for channels across a Flatten, else 1
    batchnorms: tuple[int, ...] = ()  # BatchNorms between producer and consumer (unit entries)
    activation: int | None = None  # the first activation after the producer (for measure="post")

    @property
    def output(self) -> int:
        """Index of the value that holds the units before the activation: the producer's output
        (values[i] is module i's input, so the producer's output is values[producer + 1])."""
        return 0 if self.producer is None else self.producer + 1


def _between(model: Net, start: int, end: int) -> tuple[tuple[int, ...], int | None, bool]:
    """Per-unit layers (BatchNorms), the first activation and whether a reshape (Flatten) lies
    in modules start..end-1."""
    norms, activation, flatten = [], None, False
    for i in range(start, end):
        found = entry_of(model[i])
        if found.role == "per_unit":
            norms.append(i)
        elif found.activation and activation is None:
            activation = i
        elif found.role == "reshape":
            flatten = True
    return tuple(norms), activation, flatten


def groups(model: Net, inputs: bool = False) -> list[Group]:
    """The prunable groups of `model` in order (with `inputs`, the input features first)."""
    spec = spec_of(model)
    layer_shapes = shapes(spec["layers"], spec["input"])
    kinds = [entry_of(m) for m in model]
    producers = [i for i, kind in enumerate(kinds) if kind.role == "producer"]
    found: list[Group] = []
    if inputs:
        first = producers[0]
        if not kinds[first].reads_flat or not model.flat_input:
            raise ValueError("input features can be pruned only in a network whose first layer "
                             "is a Linear on the flattened input")
        if any(kinds[i].role != "inputs" and (kinds[i].role != "elementwise"
                                              or kinds[i].activation) for i in range(first)):
            raise ValueError("input pruning needs the first Linear to read the input directly")
        found.append(Group("input", None, first, kinds[first].features(model[first])))
    for producer, consumer in zip(producers[:-1], producers[1:], strict=True):
        norms, activation, flatten = _between(model, producer + 1, consumer)
        size = kinds[producer].units(model[producer])
        if not kinds[producer].spatial:
            found.append(Group("neuron", producer, consumer, size, 1, norms, activation))
            continue
        block = math.prod(layer_shapes[consumer]) // size if flatten else 1
        found.append(Group("channel", producer, consumer, size, block, norms, activation))
    return found


def units(model: Net, inputs: bool = False) -> list[int]:
    """Number of units of every group: the model's row of a retention schedule."""
    return [g.size for g in groups(model, inputs)]
