"""IA-Prune: structural pruning of neural networks guided by interval-adjoint significance.

The public API (everything else is internal and may change):

    from iaprune import PruneConfig, run, load_dataset, from_module, save_checkpoint

    data = load_dataset("digits")
    results = run(PruneConfig(dataset="digits"), "sessions/api")   # train, prune, retrain
    print(results.recommended)

Workflow steps: `run` (train + prune + retrain, resumable), `geometric_schedule` /
`write_schedule` (the retention schedule), `evaluate` (re-evaluate a model); the tables,
plots and recommendation of a session are gathered by `run` itself (and by the concatenate
step). Models: `build` (a network from an architecture spec),
`from_module` (import your own nn.Module), `spec_of`, `save_checkpoint`, `load_model`,
`load_pruned_model` (a pruned checkpoint back into your own class). One pruning step by hand:
`score` (one significance per unit of every prunable group), `keep_indices`, `shrink`.
The soundness-critical value type is `Interval`.

Names are imported on first use, so `import iaprune` stays cheap (the command lines and the
deploy runtime do not pay for what they do not use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "run": "iaprune.engine",
    "Results": "iaprune.engine",
    "PruneConfig": "iaprune.config",
    "Training": "iaprune.config",
    "Retraining": "iaprune.config",
    "Scoring": "iaprune.config",
    "load_dataset": "iaprune.data",
    "Dataset": "iaprune.data",
    "from_module": "iaprune.model",
    "build": "iaprune.spec",
    "spec_of": "iaprune.spec",
    "save_checkpoint": "iaprune.checkpoint",
    "load_model": "iaprune.checkpoint",
    "load_pruned_model": "iaprune_runtime",
    "geometric_schedule": "iaprune.retain",
    "write_schedule": "iaprune.retain",
    "read_schedule": "iaprune.retain",
    "evaluate": "iaprune.validator",
    "score": "iaprune.significance",
    "ScoreData": "iaprune.significance",
    "keep_indices": "iaprune.prune",
    "shrink": "iaprune.prune",
    "Interval": "iaprune.interval",
    "UserError": "iaprune.errors",
}
__all__ = ["__version__", "run", "Results", "PruneConfig", "Training", "Retraining", "Scoring",
           "load_dataset", "Dataset", "from_module", "build", "spec_of", "save_checkpoint",
           "load_model", "load_pruned_model", "geometric_schedule", "write_schedule",
           "read_schedule", "evaluate", "score", "ScoreData", "keep_indices",
           "shrink", "Interval", "UserError"]

if TYPE_CHECKING:  # static tools see the real names
    from iaprune.checkpoint import load_model, save_checkpoint
    from iaprune.config import PruneConfig, Retraining, Scoring, Training
    from iaprune.data import Dataset, load_dataset
    from iaprune.engine import Results, run
    from iaprune.errors import UserError
    from iaprune.interval import Interval
    from iaprune.model import from_module
    from iaprune.prune import keep_indices, shrink
    from iaprune.retain import geometric_schedule, read_schedule, write_schedule
    from iaprune.significance import ScoreData, score
    from iaprune.spec import build, spec_of
    from iaprune.validator import evaluate
    from iaprune_runtime import load_pruned_model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iaprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
