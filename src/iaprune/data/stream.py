"""An image folder read from disk in batches instead of held in memory.

A folder whose model inputs (float32) would take more than half the available memory, or any
folder when streaming is asked for, becomes a Dataset whose splits hold `DiskRows` in place of
an input tensor: the files of the split, decoded in batches by torch DataLoader worker
processes. Labels, splits and scaling are the in-memory ones (the same `plan_splits`, the same
decoding and the same float32 expression per image), and batches come in the order asked for
whatever the number of workers, so a run reads the same numbers from disk as from memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iaprune.data.dataset import Dataset, DatasetError, Split
from iaprune.data.images import Scan, decode
from iaprune.data.prepare import UNIT_SCALE, plan_splits

MEMORY_SHARE = 0.5  # a folder is streamed when its model inputs need more than this share
LOAD_BATCH = 512  # images per batch when rows are read for a criterion or the input range


def default_workers() -> int:
    """DataLoader worker processes: one per core but one, at most 4, at least 1."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def available_memory() -> int | None:
    """Bytes of memory available now: Linux's MemAvailable (free memory plus the caches it can
    drop), else the free pages; None when unknown on this system."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decoded_bytes(scan: Scan) -> int:
    """Bytes the folder's model inputs take in memory (float32, every split)."""
    count = sum(len(files) for files in scan.files.values())
    return count * int(np.prod(scan.sample_shape)) * 4


def streams(scan: Scan, stream: bool | None) -> bool:
    """Whether to read the folder from disk: `stream` when given, else when its model inputs
    exceed MEMORY_SHARE of the available memory."""
    if stream is not None:
        return bool(stream)
    memory = available_memory()
    return memory is not None and decoded_bytes(scan) > MEMORY_SHARE * memory


class FolderImages(torch.utils.data.Dataset):
    """Map-style dataset of model input rows: item i = image i decoded, flattened, scaled."""

    def __init__(self, scan: Scan, paths: list[Path], scale: float,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.scan, self.paths, self.scale, self.mean, self.std = scan, paths, scale, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        # float32 first, then * scale: prepare's expression for in-memory data, per image
        row = decode(self.scan, self.paths[i]).reshape(-1).astype(np.float32) * self.scale
        if self.mean is not None:
            row = (row - self.mean) / self.std
        return torch.from_numpy(row)  # (n_features,) float32


@dataclass(frozen=True)
class DiskRows:
    """The model inputs of one split, (n, n_features), read from disk in batches."""

    images: FolderImages
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    workers: int = 0  # DataLoader worker processes (0: decode in this process)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(np.prod(self.images.scan.sample_shape)))

    def to(self, target: torch.device | str | torch.dtype) -> DiskRows:
        """These rows delivered on a device or as a dtype (as Tensor.to)."""
        if isinstance(target, torch.dtype):
            return replace(self, dtype=target)
        return replace(self, device=torch.device(target))

    def batches(self, size: int, order: Tensor | None = None) -> Iterator[Tensor]:
        """Rows `order[i:i + size]` (default: all in turn), batch by batch, in that order."""
        order = torch.arange(len(self)) if order is None else order.cpu()
        sampler = [order[i:i + size].tolist() for i in range(0, len(order), size)]
        loader = torch.utils.data.DataLoader(self.images, batch_sampler=sampler,
                                             num_workers=self.workers)
        try:
            for batch in loader:
                yield batch.to(self.device, self.dtype)
        except DatasetError as exc:  # raised in a worker: keep the original line only
            raise DatasetError(str(exc).strip().splitlines()[-1].split("Error: ", 1)[-1]) \
                from None

    def take(self, rows: Tensor) -> Tensor:
        """Rows `rows` as one tensor (len(rows), n_features)."""
        parts = list(self.batches(LOAD_BATCH, rows))
        return torch.cat(parts) if parts else torch.empty(0, self.shape[1], dtype=self.dtype,
                                                         device=self.device)

    def value_range(self) -> tuple[Tensor, Tensor]:
        """Per-feature (min, max) over every row: (n_features,) each."""
        low = high = None
        for batch in self.batches(LOAD_BATCH):
            low = batch.amin(0) if low is None else torch.minimum(low, batch.amin(0))
            high = batch.amax(0) if high is None else torch.maximum(high, batch.amax(0))
        return low, high

    def order_statistics(self, ks: list[int]) -> list[Tensor]:
        """Per feature, the k-th smallest value (1-based) for each k in `ks`: (n_features,) each.

        Exact, from per-feature counts of the 256 values an 8-bit image's pixel can take (the
        model inputs of a folder too large to sort in memory)."""
        images = self.images
        if images.scan.wide or images.mean is not None:
            raise DatasetError("--box quantile on a streamed image folder needs 8-bit images "
                               "that are not standardised; use --box data")
        table = torch.from_numpy(np.arange(256, dtype=np.float32) * images.scale)  # sorted
        counts = torch.zeros(self.shape[1], 256, dtype=torch.int64)
        for batch in replace(self, device=torch.device("cpu"),
                             dtype=torch.float32).batches(LOAD_BATCH):
            level = torch.searchsorted(table, batch.T.contiguous())  # (features, b) raw values
            counts.scatter_add_(1, level, torch.ones_like(level))
        below = counts.cumsum(1)
        return [table[(below < k).sum(1)].to(self.device, self.dtype) for k in ks]


def stream_folder(scan: Scan, name: str, val_size: int | None, seed: int,
                  record: dict[str, Any] | None, scaling: dict[str, Any] | None = None,
                  workers: int | None = None) -> Dataset:
    """The Dataset of a scanned image folder, its splits read from disk (see the module)."""
    y = np.array([cls for cls, _ in scan.files["train"]])
    given_test = scan.files.get("test")
    y_test = None if given_test is None else np.array([cls for cls, _ in given_test])
    plan = plan_splits(y, y_test, val_size, seed)
    paths = np.array([path for _, path in scan.files["train"]], dtype=object)
    test_paths = paths if given_test is None else np.array([p for _, p in given_test],
                                                            dtype=object)
    scale, mean, std = UNIT_SCALE[scan.dtype], None, None
    if scaling is not None:
        scale = float(scaling.get("scale", scale))
        if scaling.get("mean") is not None:
            mean = np.asarray(scaling["mean"], dtype=np.float32)
            std = np.asarray(scaling["std"], dtype=np.float32)
    workers = default_workers() if workers is None else workers

    def split(chosen: np.ndarray, labels: np.ndarray) -> Split:
        images = FolderImages(scan, list(chosen), scale, mean, std)
        return Split(DiskRows(images, workers=workers), torch.from_numpy(labels))

    pool = paths[plan.pool]
    pool_labels = plan.labels[plan.pool]
    return Dataset(
        name, split(pool[plan.train], pool_labels[plan.train]),
        split(pool[plan.val], pool_labels[plan.val]),
        split(test_paths[plan.test], plan.test_labels), scan.sample_shape,
        len(plan.classes), scale, plan.classes, raw_dtype=scan.dtype.name,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
        bounded=mean is None, record=record)
