"""Shared benchmark helpers: the repository root, the reference-epoch timer, tables.

The benchmarks import the installed package (pip install -e . from the repository root)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from iaprune.data import Dataset
from iaprune.model import mlp_net
from iaprune.spec import build

ROOT = Path(__file__).resolve().parents[1]  # the repository: benchmarks/results/, sessions/

REFERENCE_SIZES = [784, 256, 64, 10]


def reference_epoch(data: Dataset, seed: int = 0, spec: dict[str, Any] | None = None) -> float:
    """Seconds for one epoch of the dense 784-256-64-10 (or of the dense `spec`, e.g. LeNet-5)
    with a plain DataLoader at batch 64, as built (no layout or device placement).

    This is the "reference epoch" of the issues: the way the thesis code trained.
    """
    model = mlp_net(REFERENCE_SIZES, seed=seed) if spec is None else build(spec, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def cpu_and_wall(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds as `fn` reports them, CPU seconds of this process) for one call."""
    started = time.process_time()
    wall = fn(*args, **kwargs)
    return wall, time.process_time() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
