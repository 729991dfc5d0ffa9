"""IA-Prune: interval-adjoint guided structural pruning of fully-connected networks."""

__version__ = "0.1.0"
