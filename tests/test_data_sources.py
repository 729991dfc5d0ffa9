"""Data sources: image folders, arrays, tables, Python objects; their splits, scaling and errors."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaprune.config import ConfigError, PruneConfig
from iaprune.data import Dataset, DatasetError, load_dataset
from iaprune.data.prepare import TEST_FRACTION

# sha256 of the built-in splits' tensors, computed with the single-module iaprune/data.py
# before it became a package: the built-in sets must stay bit-identical.
BUILTIN_SHA256 = {
    "digits": "7a0fddc5ae2fb19ae7ed7ae7f0b04b83d3d52ee3e11dd6daa632c12352102173",
    "mnist": "a10536df7991ae553476cacb1a0d631b2d9d7aa33889cf2fff189dd88eca39df",
}


def splits_sha256(data: Dataset) -> str:
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def write_png(path: Path, value: int | tuple[int, int, int] = 0, size=(8, 8), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def image_folder(root: Path, per_class: int = 10, classes=("cat", "dog")) -> Path:
    """Class k's 8x8 gray PNGs all hold the pixel value 40 + 100 k."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", 40 + 100 * k)
    return root


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table_text(n: int = 30) -> str:
    rows = "".join(f"{i},{(i * 7) % 11},{'yes' if i % 2 else 'no'}\n" for i in range(n))
    return "age,score,label\n" + rows


# --- built-in sets -----------------------------------------------------------------------------

def test_digits_splits_are_bit_identical_to_before_the_package():
    """The built-in digits set gives the same tensors and splits as before user data existed."""
    assert splits_sha256(load_dataset("digits")) == BUILTIN_SHA256["digits"]


def test_mnist_splits_are_bit_identical_to_before_the_package(mnist_data_root):
    """MNIST gives the same tensors and splits as before user data existed."""
    assert splits_sha256(load_dataset("mnist", mnist_data_root)) == BUILTIN_SHA256["mnist"]


# --- image folders -----------------------------------------------------------------------------

def test_image_folder_classes_are_sorted_folder_names_and_pixels_scale_to_unit_range(tmp_path):
    """Folders name the classes in sorted order; uint8 pixels become pixel / 255."""
    data = load_dataset(image_folder(tmp_path / "pets", classes=("dog", "cat")))
    assert data.classes == ("cat", "dog") and data.input_shape == (1, 8, 8)
    for split in (data.train, data.val, data.test):  # dog (written first) holds 40, cat 140
        expected = (np.float32(140) - 100 * split.y.numpy().astype(np.float32)) * (1 / 255)
        np.testing.assert_array_equal(split.x.numpy(), np.repeat(
            expected.astype(np.float32)[:, None], 64, 1))
    assert data.input_info()["classes"] == ["cat", "dog"]


def test_color_images_give_three_channels_first(tmp_path):
    """One RGB image among gray ones makes every sample (3, H, W), channels first."""
    root = image_folder(tmp_path / "f")
    write_png(root / "cat" / "red.png", (255, 0, 0), mode="RGB")
    data = load_dataset(root)
    assert data.input_shape == (3, 8, 8)
    x = torch.cat([data.train.x, data.val.x, data.test.x]).reshape(-1, 3, 8, 8)
    red = (x[:, 0] == 1.0).all((1, 2)) & (x[:, 1] == 0).all((1, 2))
    assert red.sum() == 1


def test_images_of_other_sizes_are_resized_to_the_most_common(tmp_path):
    """The most common image size wins; a bigger image is resized to it."""
    root = image_folder(tmp_path / "f")
    write_png(root / "dog" / "big.png", 140, size=(12, 10))
    data = load_dataset(root)
    assert data.input_shape == (1, 8, 8) and len(data.train) + len(data.val) + len(data.test) == 21


def test_image_size_overrides_the_most_common_size(tmp_path):
    """image_size=N resizes every image to N x N."""
    data = load_dataset(image_folder(tmp_path / "f"), image_size=5)
    assert data.input_shape == (1, 5, 5)


def test_train_and_test_folders_keep_their_test_split(tmp_path):
    """ROOT/train and ROOT/test: the test split is exactly the test folder's images."""
    image_folder(tmp_path / "f" / "train", per_class=10)
    image_folder(tmp_path / "f" / "test", per_class=3)
    data = load_dataset(tmp_path / "f")
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 20


def test_16_bit_gray_images_scale_by_65535(tmp_path):
    """16-bit grayscale images keep their depth: model input = value / 65535."""
    for k, name in enumerate(("a", "b")):
        for i in range(5):
            path = tmp_path / "f" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), 1000 + 30000 * k, np.uint16)).save(path)
    data = load_dataset(tmp_path / "f")
    assert data.input_info()["dtype"] == "uint16"
    values = {float(v) for v in torch.cat([data.train.x, data.test.x]).unique()}
    assert values == {float(np.float32(1000) * (1 / 65535)), float(np.float32(31000) *
                                                                      (1 / 65535))}


def test_empty_folder_is_refused(tmp_path):
    """A folder without class folders is a one-line error saying where images go."""
    (tmp_path / "f").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(tmp_path / "f")


def test_class_folder_without_images_is_refused(tmp_path):
    """A class folder that holds no image file is named."""
    root = image_folder(tmp_path / "f")
    (root / "eel").mkdir()
    (root / "eel" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="eel: class folder holds no image"):
        load_dataset(root)


def test_one_class_only_is_refused(tmp_path):
    """A classifier needs two classes: one class folder is an error."""
    with pytest.raises(DatasetError, match="one class only"):
        load_dataset(image_folder(tmp_path / "f", classes=("cat",)))


def test_unreadable_image_is_refused_by_name(tmp_path):
    """A file with an image extension that is not an image is named in the error."""
    root = image_folder(tmp_path / "f")
    (root / "dog" / "fake.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"1 unreadable image file: .*fake\.png"):
        load_dataset(root)


def test_truncated_image_is_refused_by_name(tmp_path):
    """A PNG cut short is refused (not skipped), naming the file."""
    root = image_folder(tmp_path / "f")
    whole = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(whole)
    (root / "cat" / "cut.png").write_bytes(whole.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"cut\.png"):
        load_dataset(root)


# --- arrays ------------------------------------------------------------------------------------

def test_npz_with_its_own_test_split_uses_it_as_is(tmp_path):
    """x_test/y_test are the test split; (n, H, W) uint8 samples become (1, H, W) / 255."""
    rng = np.random.default_rng(0)
    x_test = rng.integers(0, 256, (7, 5, 5), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (40, 5, 5), np.uint8),
             y_train=np.arange(40) % 2, x_test=x_test, y_test=np.arange(7) % 2)
    data = load_dataset(tmp_path / "d.npz")
    assert data.input_shape == (1, 5, 5)
    np.testing.assert_array_equal(data.test.x.numpy(),
                                  x_test.reshape(7, -1).astype(np.float32) * (1 / 255))


def test_npz_keeps_channel_first_samples(tmp_path):
    """(n, C, H, W) samples keep their shape."""
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3, 4, 4), np.uint8), y=np.arange(20) % 2)
    assert load_dataset(tmp_path / "d.npz").input_shape == (3, 4, 4)


def test_string_labels_become_sorted_class_names(tmp_path):
    """Text labels are classes in sorted order; each label is its class's index."""
    y = np.array(["zebra", "ant", "mole"] * 10)
    np.savez(tmp_path / "d.npz", x=np.arange(30, dtype=np.float32)[:, None], y=y)
    data = load_dataset(tmp_path / "d.npz")
    assert data.classes == ("ant", "mole", "zebra")
    assert torch.equal(torch.cat([data.train.y, data.val.y, data.test.y]).bincount(),
                       torch.tensor([10, 10, 10]))


def test_feature_arrays_are_standardised_with_training_statistics(tmp_path):
    """Float feature vectors: (x - mean) / std with the training split's mean and std."""
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, (100, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(100) % 2)
    data = load_dataset(tmp_path / "d.npz")
    torch.testing.assert_close(data.train.x.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train.x.std(0, unbiased=False), torch.ones(3), atol=1e-5,
                               rtol=0)
    info = data.input_info()
    raw_test = data.test.x * torch.tensor(info["std"]) + torch.tensor(info["mean"])
    nearest = torch.cdist(raw_test, torch.from_numpy(x), compute_mode="donot_use_mm_for_euclid_dist"
                          ).min(1).values  # each test row is one of the raw rows
    assert info["range"] is None and nearest.max() < 1e-4


def test_labels_that_are_not_integers_or_strings_are_refused(tmp_path):
    """Fractional float labels are refused, naming one."""
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.linspace(0, 1, 10))
    with pytest.raises(DatasetError, match="integers or strings"):
        load_dataset(tmp_path / "d.npz")


def test_arrays_of_mismatched_lengths_are_refused(tmp_path):
    """x and y of different lengths are an error giving both counts."""
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.arange(9) % 2)
    with pytest.raises(DatasetError, match="10 samples but 9 labels"):
        load_dataset(tmp_path / "d.npz")


def test_npz_without_the_expected_arrays_is_refused(tmp_path):
    """An .npz without x/y or x_train/y_train lists what it holds."""
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match=r"holds \['images'\]; expected x_train"):
        load_dataset(tmp_path / "d.npz")


# --- tables ------------------------------------------------------------------------------------

def test_csv_records_features_target_and_standardisation(tmp_path):
    """A CSV's columns become features (named), its target text labels classes."""
    data = load_dataset(write_csv(tmp_path / "t.csv", table_text()), target="label")
    info = data.input_info()
    assert info["features"] == ["age", "score"] and info["target"] == "label"
    assert data.classes == ("no", "yes") and len(info["mean"]) == 2
    assert len(data.test) == round(TEST_FRACTION * 30)


def test_table_without_target_is_refused_listing_columns(tmp_path):
    """No target given: the error asks for --target and lists the columns."""
    with pytest.raises(DatasetError, match="--target COLUMN.*age, score, label"):
        load_dataset(write_csv(tmp_path / "t.csv", table_text()))


def test_target_column_that_does_not_exist_is_refused(tmp_path):
    """A misspelt target names itself and the columns there are."""
    with pytest.raises(DatasetError, match="no column 'lable'; columns: age, score, label"):
        load_dataset(write_csv(tmp_path / "t.csv", table_text()), target="lable")


def test_non_numeric_feature_column_is_refused_by_name(tmp_path):
    """Text in a feature column is refused naming the column; encoding is the user's step."""
    text = table_text().replace("3,10,yes", "3,high,yes")
    with pytest.raises(DatasetError, match="column 'score' is not numeric .*'high'.*one-hot"):
        load_dataset(write_csv(tmp_path / "t.csv", text), target="label")


def test_missing_value_is_refused_naming_line_and_column(tmp_path):
    """An empty cell is refused with its file line and column."""
    text = table_text().replace("4,6,no", "4,,no")
    with pytest.raises(DatasetError, match="line 6, column 'score': missing value"):
        load_dataset(write_csv(tmp_path / "t.csv", text), target="label")


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    """Reading Parquet where pyarrow cannot be imported is one line: pip install pyarrow."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match="needs pyarrow: pip install pyarrow$"):
        load_dataset(tmp_path / "t.parquet", target="label")


def test_parquet_table_reads_like_the_same_csv(tmp_path):
    """A Parquet table gives the same dataset as the CSV with the same values."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    n = 30
    columns = {"age": list(range(n)), "score": [float((i * 7) % 11) for i in range(n)],
               "label": ["yes" if i % 2 else "no" for i in range(n)]}
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    a = load_dataset(tmp_path / "t.parquet", target="label")
    b = load_dataset(write_csv(tmp_path / "t.csv", table_text(n)), target="label")
    assert torch.equal(a.train.x, b.train.x) and a.classes == b.classes


def test_recorded_scaling_prepares_other_data_as_the_model_was_trained(tmp_path):
    """scaling=<a model's input_info> standardises new data with the model's mean and std."""
    first = load_dataset(write_csv(tmp_path / "a.csv", table_text()), target="label")
    shifted = "age,score,label\n" + "".join(f"{i + 100},{i},{'yes' if i % 2 else 'no'}\n"
                                            for i in range(30))
    other = load_dataset(write_csv(tmp_path / "b.csv", shifted), target="label",
                         scaling=first.input_info())
    assert other.mean == first.mean and other.std == first.std
    assert other.train.x[:, 0].min() > 2  # ages 100+ lie far above the first table's mean


# --- splits ------------------------------------------------------------------------------------

def test_carved_splits_are_stratified_disjoint_and_complete(tmp_path):
    """Train, val and test cover every sample once, each with the classes' proportions."""
    x = np.arange(200, dtype=np.float32)[:, None]
    y = np.array([0] * 150 + [1] * 50)
    data = load_dataset((x, y), val_size=40)
    raw = (torch.cat([data.train.x, data.val.x, data.test.x]) * data.std[0] + data.mean[0])
    assert sorted(raw.round().long().flatten().tolist()) == list(range(200))
    assert data.test.y.bincount().tolist() == [30, 10]
    assert data.val.y.bincount().tolist() == [30, 10]


def test_the_seed_moves_the_validation_split_but_never_the_test_split():
    """Another seed draws another validation split from the same training samples."""
    x, y = torch.arange(100.0)[:, None], torch.arange(100) % 2
    a, b = load_dataset((x, y), seed=0), load_dataset((x, y), seed=1)
    assert torch.equal(a.test.x * a.std[0] + a.mean[0], b.test.x * b.std[0] + b.mean[0])
    assert not torch.equal(a.val.x * a.std[0] + a.mean[0], b.val.x * b.std[0] + b.mean[0])


# --- Python objects ----------------------------------------------------------------------------

def test_tensor_dataset_equals_the_same_tensors_as_a_pair():
    """A TensorDataset and the (x, y) pair of its tensors give the same Dataset."""
    x, y = torch.rand(30, 1, 4, 4), torch.arange(30) % 3
    a, b = load_dataset(torch.utils.data.TensorDataset(x, y)), load_dataset((x, y))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.record["source"] == "python object" and a.record == b.record


def test_any_map_style_torch_dataset_of_pairs_is_read():
    """A custom torch Dataset returning (tensor, str) pairs becomes classes by name."""
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return torch.full((3,), float(i)), "odd" if i % 2 else "even"

    data = load_dataset(Pairs())
    assert data.classes == ("even", "odd") and data.input_shape == (3,)


def test_torch_dataset_items_that_are_not_pairs_are_refused():
    """Items must be (x, y) pairs; a dict item is named."""
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": i}

    with pytest.raises(DatasetError, match="item 0 of Dicts is a dict, not an"):
        load_dataset(Dicts())


def test_a_dataset_setting_that_is_not_data_names_what_it_takes():
    """PruneConfig(dataset=<a bare array>) lists what the setting takes; a pathlib.Path is a
    path."""
    with pytest.raises(ConfigError, match=r"an \(x, y\) pair of arrays or tensors, or a torch "
                                          r"Dataset; got a ndarray"):
        PruneConfig(dataset=np.zeros((3, 2)))
    assert PruneConfig(dataset=Path("/data/pets")).dataset == "/data/pets"


def test_a_path_dataset_setting_is_stored_absolute(tmp_path, monkeypatch):
    """A relative path in the dataset setting is made absolute: any folder finds the data."""
    monkeypatch.chdir(tmp_path)
    config = PruneConfig(dataset="data/pets")
    assert config.dataset == str(tmp_path / "data" / "pets") and config.val_size is None


def test_the_data_package_depends_only_on_errors_and_files():
    """iaprune.data is a leaf: its modules import no other part of iaprune (no cycles); the
    runtime (iaprune_runtime, which never imports the library) is allowed: it shares how images
    and tables are read with it."""
    import ast

    import iaprune.data

    folder = Path(iaprune.data.__file__).parent
    for module in folder.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iaprune"):
                assert node.module.startswith(("iaprune.data", "iaprune_runtime.")) or \
                    node.module in (
                    "iaprune.errors", "iaprune.files"), f"{module.name} imports {node.module}"
