"""The MNIST / Fashion-MNIST test split read from its IDX files, for `verify` (no torchvision)."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT_ENV = "IAPRUNE_DATA"
DEFAULT_ROOT = "data"


@dataclass(frozen=True)
class SplitFiles:
    """Where a dataset's test split lives under the data root and its known checksums."""

    folder: str  # torchvision's folder name, e.g. "MNIST"
    gz_md5: dict[str, str]  # file stem -> md5 of the .gz file
    raw_md5: dict[str, str] = field(default_factory=dict)  # file stem -> md5 uncompressed


IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
DATASETS: dict[str, SplitFiles] = {
    "mnist": SplitFiles("MNIST",
                       {IMAGES: "9fb629c4189551a2d022fa330f9573f3",
                        LABELS: "ec29112dd5afa0611ce80d1b7f02629c"},
                       {IMAGES: "2646ac647ad5339dbf082846283269ea",
                        LABELS: "27ae3e4e09519cfbb04c329615203637"}),
    "fashion-mnist": SplitFiles("FashionMNIST",
                               {IMAGES: "bef4ecab320f06d8554ea6380940ec79",
                                LABELS: "bb300cfdad3c16e7a12a480ee83cd310"}),
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $IAPRUNE_DATA, else data/."""
    return Path(root if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def parse_idx(payload: bytes, source: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian dims)."""
    if len(payload) < 4 or payload[:3] != b"\x00\x00\x08":
        raise ValueError(f"{source}: not an IDX file of unsigned bytes")
    ndim = payload[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(payload) < header or len(payload) != header + int(np.prod(dims)):
        raise ValueError(f"{source}: IDX file size does not match its header (truncated?)")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


def _read(raw: Path, stem: str, files: SplitFiles) -> np.ndarray:
    """One IDX file, .gz preferred, md5-checked against the original where known."""
    for path, known, unpack in ((raw / f"{stem}.gz", files.gz_md5, gzip.decompress),
                                (raw / stem, files.raw_md5, lambda b: b)):
        if path.is_file():
            data = path.read_bytes()
            if stem in known and hashlib.md5(data).hexdigest() != known[stem]:
                raise ValueError(f"{path}: md5 mismatch (corrupt or not the original file)")
            try:
                return parse_idx(unpack(data), str(path))
            except (OSError, EOFError) as exc:
                raise ValueError(f"{path}: cannot decompress ({exc})") from None
    raise FileNotFoundError(f"{raw / stem}.gz: missing; pass --data-root (or set {ROOT_ENV}) "
                            f"to the folder holding {files.folder}/raw/")


def load_test_split(name: str, root: str | os.PathLike | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) uint8) of a dataset's full test split."""
    if name not in DATASETS:
        raise ValueError(f"deploy cannot read dataset {name!r}; choose from {list(DATASETS)}")
    files = DATASETS[name]
    raw = data_root(root) / files.folder / "raw"
    images, labels = _read(raw, IMAGES, files), _read(raw, LABELS, files)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{raw}: test images {images.shape} and labels {labels.shape} disagree")
    return images, labels
