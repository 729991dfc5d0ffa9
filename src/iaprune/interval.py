"""Interval, the box [lower, upper] of tensors and its arithmetic: it lives in the torch-only
runtime (iaprune_runtime.interval), beside the layer registry whose rules use it."""

from iaprune_runtime.interval import Interval

__all__ = ["Interval"]
