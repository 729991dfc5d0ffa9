"""Datasets: IDX reading, md5 verification, the offline error, splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from iaprune import data as data_module
from iaprune.data import DatasetError, MissingDataError, dataset_sizes, load_dataset, parse_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_idx_dataset(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True):
    """Write a tiny MNIST-shaped dataset in torchvision's layout; returns the arrays and md5s."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gz_md5, raw_md5 = {}, {}
    for stem, array in arrays.items():
        payload = idx_bytes(array)
        raw_md5[stem] = data_module.hashlib.md5(payload).hexdigest()
        if gz:
            packed = gzip.compress(payload)
            (raw / f"{stem}.gz").write_bytes(packed)
            gz_md5[stem] = data_module.hashlib.md5(packed).hexdigest()
        else:
            (raw / stem).write_bytes(payload)
    return arrays, gz_md5, raw_md5


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A fake MNIST whose md5s are registered in place of the real ones; no network."""
    arrays, gz_md5, raw_md5 = fake_idx_dataset(tmp_path)
    source = data_module.IdxSource("MNIST", ("http://127.0.0.1:9/",), gz_md5, raw_md5)
    monkeypatch.setitem(data_module.SOURCES, "mnist", source)
    return tmp_path, arrays


def test_parse_idx_reads_shape_and_values():
    """An IDX payload decodes to the array it encodes."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)


def test_parse_idx_rejects_truncated_payload():
    """A payload shorter than its header says is an error, not silent garbage."""
    payload = idx_bytes(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match="header says"):
        parse_idx(payload[:-1])


def test_parse_idx_rejects_foreign_bytes():
    """Bytes without the IDX magic are refused."""
    with pytest.raises(DatasetError, match="not an IDX"):
        parse_idx(b"PK\x03\x04 not idx")


def test_load_gzipped_idx_scales_to_unit_interval(fake_mnist):
    """Gzipped IDX files load as float32 in [0, 1] with the original pixel values / 255."""
    root, arrays = fake_mnist
    ds = load_dataset("mnist", root, val_size=10)
    assert ds.train.x.dtype == torch.float32 and ds.input_shape == (1, 28, 28)
    assert len(ds.train) + len(ds.val) == 60 and len(ds.test) == 20
    expected = arrays["t10k-images-idx3-ubyte"].reshape(20, -1).astype(np.float32) / 255
    np.testing.assert_allclose(ds.test.x.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_uncompressed_idx_files_are_read(tmp_path, monkeypatch):
    """Uncompressed IDX files in the same layout are accepted (md5 of the raw file)."""
    arrays, _, raw_md5 = fake_idx_dataset(tmp_path, gz=False)
    source = data_module.IdxSource("MNIST", (), {k: "0" * 32 for k in raw_md5}, raw_md5)
    monkeypatch.setitem(data_module.SOURCES, "mnist", source)
    ds = load_dataset("mnist", tmp_path, val_size=10)
    assert len(ds.test) == 20


def test_corrupted_file_fails_md5(fake_mnist):
    """A file whose bytes changed is refused by the md5 check, naming the file."""
    root, _ = fake_mnist
    target = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-3] + b"xyz")
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: md5 mismatch"):
        load_dataset("mnist", root)


def test_missing_files_offline_give_one_line_error(tmp_path, monkeypatch):
    """Missing files with no reachable mirror: one line naming the files and where they go."""
    source = data_module.IdxSource("MNIST", ("http://127.0.0.1:9/",),
                                   data_module.SOURCES["mnist"].gz_md5)
    monkeypatch.setitem(data_module.SOURCES, "mnist", source)
    with pytest.raises(MissingDataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte.gz" in message


def test_root_comes_from_environment(fake_mnist, monkeypatch):
    """Without a root argument, IAPRUNE_DATA names the data folder."""
    root, _ = fake_mnist
    monkeypatch.setenv("IAPRUNE_DATA", str(root))
    assert len(load_dataset("mnist", val_size=10).test) == 20


def test_unknown_dataset_is_rejected():
    """An unknown dataset name lists the valid ones."""
    with pytest.raises(ValueError, match="digits"):
        load_dataset("cifar")


def test_digits_splits_are_disjoint_and_fixed():
    """digits: train/val/test partition the 1797 images, the same for the same seed."""
    a, b = load_dataset("digits"), load_dataset("digits")
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    torch.testing.assert_close(a.val.x, b.val.x)
    assert float(a.train.x.max()) == 1.0 and float(a.train.x.min()) == 0.0


def test_carved_split_is_disjoint_from_the_rest():
    """Carving a split takes each sample exactly once: carved and rest never overlap."""
    x = torch.arange(50, dtype=torch.float32).unsqueeze(1)
    rest, carved = data_module._split_off(x, torch.zeros(50, dtype=torch.long), 7, seed=3)
    assert len(carved) == 7 and len(rest) == 43
    assert set(rest.x.flatten().tolist()).isdisjoint(carved.x.flatten().tolist())


def test_validation_split_depends_on_seed_and_never_touches_test(fake_mnist):
    """The val split is carved from train with the seed; test stays the dataset's own."""
    root, _ = fake_mnist
    a = load_dataset("mnist", root, val_size=10, seed=0)
    b = load_dataset("mnist", root, val_size=10, seed=1)
    assert not torch.equal(a.val.x, b.val.x)
    torch.testing.assert_close(a.test.x, b.test.x)
    together = torch.cat([a.train.x, a.val.x])
    assert len(torch.unique(together, dim=0)) == 60  # train and val are disjoint


def test_validation_size_is_checked(fake_mnist):
    """A validation split as large as the training set is refused."""
    root, _ = fake_mnist
    with pytest.raises(ValueError, match="validation size"):
        load_dataset("mnist", root, val_size=60)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_mnist_loads_with_standard_sizes(mnist_data_root):
    """The real MNIST files verify and split into 55,000 / 5,000 / 10,000."""
    ds = load_dataset("mnist", mnist_data_root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert ds.n_features == 784 and ds.num_classes == 10
    assert dataset_sizes("mnist") == (ds.n_features, ds.num_classes)


def test_dataset_sizes_known_without_loading_agree_with_the_loaded_digits():
    """dataset_sizes (used to refuse a mismatched model before reading data) matches the data."""
    ds = load_dataset("digits")
    assert dataset_sizes("digits") == (ds.n_features, ds.num_classes) == (64, 10)
