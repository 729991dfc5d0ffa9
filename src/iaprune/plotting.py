"""Shared figure setup: headless matplotlib figures written atomically to PNG files."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from iaprune.files import atomic_write

DPI = 120
# One colour per quantity, used by every plot so that "test" looks the same everywhere.
COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c", "before": "#d62728",
          "recommended": "#9467bd", "reference": "#7f7f7f"}


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 8.0, height: float = 5.0,
               **subplot_kw) -> tuple[Figure, list[Axes]]:
    """A figure on the Agg canvas (never a window, no pyplot state) and its axes, flattened."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    return fig, list(axes.flat)


def plain_number(value: float, _pos: int | None = None) -> str:
    """Short label without scientific notation: 0.5, 2, 100, 2000, 21.5k, 1.2M."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.4g}"


def log_axis(ax: Axes, which: str = "x", values: Sequence[float] = ()) -> None:
    """Logarithmic axis with plain 1-2-5 tick labels (1, 2, 5, 10, 20, 50, ...).

    `values`: the data on that axis; a single distinct value gets a +-25% range (not singular).
    """
    axis = ax.xaxis if which == "x" else ax.yaxis
    if values and min(values) == max(values) > 0:
        (ax.set_xlim if which == "x" else ax.set_ylim)(values[0] / 1.25, values[0] * 1.25)
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render `fig` to PNG and write it atomically to `path`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write(path, buffer.getvalue())
