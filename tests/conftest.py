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


def rgb_folder(root: Path, train: int, test: int = 4, odd=lambda i: i % 5 == 0) -> Path:
    """Three classes of RGB PNGs (blue, green, red: the class's channel is bright), 10x10 and,
    where odd(i), 12x9 (resized when read), in a train/test layout under root/rgb."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, count in (("train", train), ("test", test)):
        for k, name in enumerate(("blue", "green", "red")):
            folder = root / "rgb" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (9, 12, 3) if odd(i) else (10, 10, 3)
                pixels = rng.integers(0, 90, shape, dtype=np.uint8)
                pixels[..., 2 - k] += np.uint8(120)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root / "rgb"


def spec_workflow(tmp_path: Path, layers: list, rows: list[tuple[int, ...]]):
    """Run the workflow on digits with an --arch spec file of `layers` and the schedule `rows`
    (2 epochs of base training, 1 of retraining); returns (Results, the last checkpoint's Net)."""
    import json

    from iaprune.checkpoint import load_model
    from iaprune.config import PruneConfig, Retraining, Training
    from iaprune.engine import run
    from iaprune.retain import ScheduleRow, write_schedule

    arch = tmp_path / "net.json"
    arch.write_text(json.dumps({"input": [1, 8, 8], "layers": layers}))
    retain = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / sum(rows[0])) for t, r in enumerate(rows)],
                   retain)
    config = PruneConfig(dataset="digits", arch=str(arch), training=Training(epochs=2),
                         retraining=Retraining(epochs=1))
    result = run(config, tmp_path / "s", retain=retain, quiet=True, log=lambda line: None)
    return result, load_model(result.session.checkpoint(len(rows) - 1))[0]
