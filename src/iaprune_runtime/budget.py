"""The memory budget of a network, computed from its spec's shapes before anything is allocated.

A spec, a checkpoint or a bundle manifest may declare any size (a typo, or a hostile file): a
layer of 10⁹ units would take the machine's memory, or fail deep in torch's allocator, before
any weight is read. `check_memory` estimates what the network needs from the layer registry's
shape rules alone, with Python integers (no overflow), and refuses it in one line naming the
layer that costs most when the estimate exceeds the limit:

    need = Σ_layers 4 bytes · (COPIES · values held + BATCH · output values per sample)

COPIES = 4 counts what training holds per weight (the weight, its gradient and Adam's two
moments); BATCH rows of every layer's outputs are what one training batch keeps for backward.
The limit is `memory_limit(gb)`'s value while it is active (the commands' --max-memory), else
$IAPRUNE_MAX_MEMORY (GB), else a quarter of the machine's physical memory.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from .layers import Layer, SpecError, entry

ENV = "IAPRUNE_MAX_MEMORY"  # the limit in GB, for every command and the Python API
FRACTION = 4  # default limit: physical memory / FRACTION (a typo never takes the machine)
FALLBACK = 4 * 2**30  # where the machine's memory cannot be read
COPIES = 4  # weight, gradient, Adam's two moments
BATCH = 256  # rows of activations one training batch holds (the default batch size)
BYTES = 4  # float32
GB = 2**30

_LIMIT: ContextVar[int | None] = ContextVar("iaprune_memory_limit", default=None)


class MemoryBudgetError(SpecError):
    """A network whose declared sizes need more memory than the limit allows."""


def physical_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gigabytes(text: Any) -> float:
    """A positive finite number of GB (for --max-memory and $IAPRUNE_MAX_MEMORY)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a memory limit is a positive number of GB, got {text!r}")
    return value


def default_limit() -> tuple[int, str]:
    """(bytes, where it comes from) without --max-memory: $IAPRUNE_MAX_MEMORY, else a quarter
    of the physical memory."""
    if os.environ.get(ENV):
        try:
            return int(gigabytes(os.environ[ENV]) * GB), f"${ENV}"
        except ValueError as exc:
            raise SpecError(f"${ENV}: {exc}") from None
    memory = physical_memory()
    if memory is None:
        return FALLBACK, "the default"
    return memory // FRACTION, f"1/{FRACTION} of this machine's memory"


def current_limit() -> tuple[int, str]:
    """(bytes, where it comes from): the active memory_limit, else default_limit()."""
    active = _LIMIT.get()
    return (active, "--max-memory") if active is not None else default_limit()


@contextlib.contextmanager
def memory_limit(gb: float | None) -> Iterator[None]:
    """Within the block, networks may need up to `gb` GB (None: the default limit)."""
    token = _LIMIT.set(None if gb is None else int(gigabytes(gb) * GB))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def layer_bytes(layer: Layer, in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """The estimate of one checked layer on inputs `in_shape` (see the module docstring)."""
    held = entry(layer["type"]).params(layer, tuple(in_shape))
    return BYTES * (COPIES * held + BATCH * math.prod(out_shape))


def size(n: int) -> str:
    """'3.5 GB', '120 MB', '1,920 GB'."""
    if n >= 1000 * GB:
        return f"{n / GB:,.0f} GB"
    return f"{n / GB:.3g} GB" if n >= GB else f"{n / 2**20:.3g} MB"


def check_memory(layers: Sequence[Layer], shapes: Sequence[Sequence[int]],
                 wiring: Sequence[Sequence[int]] | None = None) -> int:
    """The estimated bytes of checked `layers` whose values have `shapes` (spec.shapes: the
    input, then each layer's output; in a graph, layer i reads value wiring[i][0]);
    MemoryBudgetError naming the costliest layer when above the limit."""
    costs = [("the input", BYTES * BATCH * math.prod(shapes[0]))]
    for i, layer in enumerate(layers):
        where = f"layer {i} ({entry(layer['type']).describe(layer)})"
        given = shapes[i] if wiring is None else shapes[wiring[i][0]]
        costs.append((where, layer_bytes(layer, given, shapes[i + 1])))
    need = sum(cost for _, cost in costs)
    limit, source = current_limit()
    if need > limit:
        where, worst = max(costs, key=lambda c: c[1])
        raise MemoryBudgetError(
            f"{where} needs ~{size(worst)} of the network's ~{size(need)}, above the memory "
            f"limit of {size(limit)} ({source}); raise it with --max-memory GB or ${ENV}")
    return need


def add_memory_flag(parser: argparse.ArgumentParser) -> None:
    """--max-memory GB on a command that builds networks."""
    parser.add_argument("--max-memory", type=gigabytes, metavar="GB",
                        help=f"refuse networks whose sizes need more memory (default ${ENV}, "
                        f"else 1/{FRACTION} of this machine's memory)")


ALLOCATOR = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory", "out of memory",
             "Storage size calculation overflowed", "negative dimension")


def resource_problem(exc: BaseException) -> str | None:
    """One line for the machine running out (memory, stack) that a check missed: a MemoryError,
    torch's allocator errors, a RecursionError (input nested too deeply); None for any other
    exception (a bug, whose traceback stays)."""
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'MemoryError'}); a smaller input or network fits"
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (RecursionError)"
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in ALLOCATOR):
        return (f"out of memory: {str(exc).strip().splitlines()[0]} (the sizes above are too "
                f"large for this machine; lower them, or --max-memory GB)")
    return None
