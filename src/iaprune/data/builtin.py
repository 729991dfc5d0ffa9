"""The built-in datasets (MNIST, Fashion-MNIST, digits) as in-memory tensors with their splits.

MNIST and Fashion-MNIST are read straight from their IDX files in torchvision's on-disk layout
(`root/MNIST/raw/`, `root/FashionMNIST/raw/`), gzipped or not; torchvision is not needed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iaprune.data.dataset import Dataset, DatasetError, MissingDataError, Split
from iaprune.files import atomic_write

DEFAULT_ROOT = "data"
ROOT_ENV = "IAPRUNE_DATA"


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset lives and how to check it."""

    folder: str  # torchvision's folder name under root, e.g. "MNIST"
    mirrors: tuple[str, ...]  # base URLs tried in order
    # file stem -> md5 of the .gz file, and of the uncompressed file where known
    gz_md5: dict[str, str]
    raw_md5: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        folder="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion-mnist": IdxSource(
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}
DATASETS = (*SOURCES, "digits")
DEFAULT_VAL_SIZE = {"mnist": 5000, "fashion-mnist": 5000, "digits": 180}
# per-sample input shape, known without reading the files
INPUT_SHAPE = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "digits": (1, 8, 8)}
DIGITS_CLASSES = tuple(str(d) for d in range(10))
DIGITS_TEST_SIZE = 360  # scikit-learn's digits has no test split: one is carved with a fixed seed


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $IAPRUNE_DATA, else data/."""
    return Path(root if root is not None else os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian dims)."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != 0x08:
        raise DatasetError(f"{source}: not an IDX file of unsigned bytes")
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    dims = [int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(payload) != expected:
        raise DatasetError(f"{source}: IDX size {len(payload)} bytes, header says {expected}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


def _download(source: IdxSource, stem: str, target: Path) -> None:
    """Fetch `stem`.gz from the mirrors into `target` (md5 checked); raises DatasetError."""
    errors = []
    for mirror in source.mirrors:
        try:
            with urllib.request.urlopen(mirror + stem + ".gz", timeout=20) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{mirror}: {getattr(exc, 'reason', exc)}")
            continue
        if hashlib.md5(payload).hexdigest() != source.gz_md5[stem]:
            errors.append(f"{mirror}: md5 mismatch")
            continue
        atomic_write(target, payload)
        return
    raise MissingDataError("; ".join(errors))


def read_idx_file(raw: Path, stem: str, source: IdxSource, download: bool = True) -> np.ndarray:
    """Read `stem` from `raw` (.gz, else uncompressed), md5-verified; downloaded if absent."""
    gz, plain = raw / f"{stem}.gz", raw / stem
    if not gz.exists() and not plain.exists() and download:
        _download(source, stem, gz)
    if gz.exists():
        if md5(gz) != source.gz_md5[stem]:
            raise DatasetError(f"{gz}: md5 mismatch (corrupt or not the original file)")
        try:
            payload = gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{gz}: cannot decompress ({exc})") from None
        return parse_idx(payload, str(gz))
    if plain.exists():
        if stem in source.raw_md5 and md5(plain) != source.raw_md5[stem]:
            raise DatasetError(f"{plain}: md5 mismatch (corrupt or not the original file)")
        return parse_idx(plain.read_bytes(), str(plain))
    raise MissingDataError(f"{gz}: missing")


def load_idx(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) of an IDX dataset as uint8 arrays."""
    source = SOURCES[name]
    raw = root / source.folder / "raw"
    arrays = []
    for stem in source.gz_md5:
        try:
            arrays.append(read_idx_file(raw, stem, source))
        except MissingDataError as exc:
            files = ", ".join(f"{s}.gz" for s in source.gz_md5)
            raise MissingDataError(
                f"{name} files not found in {raw} and the download failed ({exc}); "
                f"put {files} there (or set {ROOT_ENV} / --data-root to the folder holding "
                f"{source.folder}/raw/)"
            ) from None
    train_x, train_y, test_x, test_y = arrays
    return train_x, train_y, test_x, test_y


def _split_off(x: Tensor, y: Tensor, n: int, seed: int) -> tuple[Split, Split]:
    """Carve `n` samples from (x, y) with a fixed-seed permutation: (rest, carved)."""
    if not 0 < n < len(y):
        raise DatasetError(f"validation size must be between 1 and {len(y) - 1}, got {n}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    rest, carved = perm[n:].sort().values, perm[:n].sort().values
    return Split(x[rest], y[rest]), Split(x[carved], y[carved])


def dataset_sizes(name: str) -> tuple[int, int]:
    """(inputs per sample, classes) of dataset `name`, without loading it."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    classes = DIGITS_CLASSES if name == "digits" else SOURCES[name].classes
    return int(np.prod(INPUT_SHAPE[name])), len(classes)


def load_builtin(name: str, root: str | os.PathLike | None = None,
                 val_size: int | None = None, seed: int = 0) -> Dataset:
    """Load a built-in dataset as in-memory float32 tensors in [0, 1].

    The validation split is carved from the training set with `seed`; the test split is the
    dataset's own and never overlaps it.

    Args:
        name: 'mnist', 'fashion-mnist' or 'digits' (scikit-learn's 8x8 digits, offline).
        root: the folder holding MNIST/raw/ and FashionMNIST/raw/ (default $IAPRUNE_DATA, else
            data/); missing IDX files are downloaded and md5-checked.
        val_size: validation samples (default 5000 for the IDX sets, 180 for digits).
        seed: the seed of the validation split.

    Returns:
        Dataset: `train`, `val`, `test` splits (each `.x` (n, features) and `.y` (n,)),
        `input_shape`, `num_classes`, `classes` and `input_info()` for checkpoints.

    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    val_size = DEFAULT_VAL_SIZE[name] if val_size is None else val_size
    if name == "digits":
        from sklearn.datasets import load_digits  # offline: ships with scikit-learn

        bunch = load_digits()
        x = torch.from_numpy(bunch.data.astype(np.float32)) / 16.0
        y = torch.from_numpy(bunch.target.astype(np.int64))
        train_all, test = _split_off(x, y, DIGITS_TEST_SIZE, seed=12345)  # fixed forever
        shape, scale, classes = INPUT_SHAPE["digits"], 1 / 16, DIGITS_CLASSES
    else:
        train_x, train_y, test_x, test_y = load_idx(name, data_root(root))
        scale = 1 / 255
        to_x = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) * scale)  # noqa: E731
        to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
        train_all = Split(to_x(train_x), to_y(train_y))
        test = Split(to_x(test_x), to_y(test_y))
        shape, classes = (1, *train_x.shape[1:]), SOURCES[name].classes
    train, val = _split_off(train_all.x, train_all.y, val_size, seed)
    return Dataset(name, train, val, test, shape, len(classes), scale, classes)
