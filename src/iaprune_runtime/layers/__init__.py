"""The layer registry: one entry per layer type, everything about the type in one place.

`entry("conv2d")`, `entry_of(module)` and `of_call("relu")` find an entry; `names()` lists the
spec types. The library (iaprune) and this runtime build, read, sweep and prune networks
through these entries only. Adding a layer type = one module here with one `@register`ed
`LayerType` subclass (imported below) plus its tests; see base.py for the contract.
"""

from . import activations, batchnorm, conv, dropout, flatten, linear, pooling, select  # noqa: F401
from .base import (
                   REQUIRED,
                   Layer,
                   LayerType,
                   SpecError,
                   by_module,
                   entries,
                   entry,
                   entry_of,
                   lookup,
                   names,
                   of_call,
                   register,
                   supported,
)
from .pooling import max_pool
from .select import Select

__all__ = ["REQUIRED", "Layer", "LayerType", "Select", "SpecError", "by_module", "entries",
           "entry", "entry_of", "lookup", "max_pool", "names", "of_call", "register", "supported"]
