"""Shared fixtures: tiny synthetic datasets (fast) and the real MNIST root when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from iaprune.data import Dataset, Split


def make_blobs(n_train: int = 400, n_val: int = 100, n_test: int = 100, n_features: int = 12,
               n_classes: int = 3, seed: int = 0) -> Dataset:
    """A small, learnable classification problem: Gaussian blobs squashed into [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_classes, n_features, generator=g)

    def split(n: int) -> Split:
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = (centres[y] + 0.08 * torch.randn(n, n_features, generator=g)).clamp(0, 1)
        return Split(x, y)

    return Dataset("blobs", split(n_train), split(n_val), split(n_test), (n_features,),
                   n_classes, 1.0, tuple(str(c) for c in range(n_classes)))


@pytest.fixture
def blobs() -> Dataset:
    return make_blobs()


def mnist_root() -> Path | None:
    """The folder holding MNIST/raw/ ($IAPRUNE_DATA or ../shared/data), or None."""
    for candidate in (os.environ.get("IAPRUNE_DATA"), "../shared/data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def mnist_data_root() -> Path:
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST files not found (set IAPRUNE_DATA)")
    return root


@pytest.fixture
def umask():
    """Set the umask to 022 (the call sets another) and restore the caller's afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)
