"""The layer registry: one entry per layer type, everything about the type in one place.

`entry("conv2d")`, `entry_of(module)` and `of_call("relu")` find an entry; `names()` lists the
spec types. The library (iaprune) and this runtime build, read, sweep and prune networks
through these entries only. Adding a layer type = one module here with one `@register`ed
`LayerType` subclass (every module of the package is imported) plus its tests; see base.py for
the contract.
"""

import importlib
import pkgutil

from .base import (
    REQUIRED,
    Layer,
    LayerType,
    SpecError,
    by_module,
    entries,
    entry,
    entry_of,
    logits_end,
    logits_value,
    lookup,
    names,
    of_call,
    register,
    supported,
)

# The core types first, in the order messages list them; every other module of this package is
# an entry too: a new layer type is a new file here.
CORE = ("select", "linear", "conv", "batchnorm", "activations", "pooling", "flatten", "dropout")
for _name in (*CORE, *sorted(m.name for m in pkgutil.iter_modules(__path__))):
    importlib.import_module(f"{__name__}.{_name}")

from .pooling import max_pool  # noqa: E402
from .select import Select  # noqa: E402

__all__ = ["REQUIRED", "Layer", "LayerType", "Select", "SpecError", "by_module", "entries",
           "entry", "entry_of", "logits_end", "logits_value", "lookup", "max_pool", "names",
           "of_call", "register", "supported"]
