"""Data sources as in-memory tensors with train/val/test splits and the scaling they record.

    builtin   MNIST, Fashion-MNIST (IDX files), scikit-learn's digits: their splits unchanged
    images    a folder of images, one subfolder per class (Pillow)
    arrays    an .npz file, (x, y) arrays or tensors, a torch Dataset
    table     a CSV (or Parquet) table with a label column
    prepare   labels, stratified splits and scaling shared by the sources above
    source    load_dataset: one entry point for all of them, and the data's fingerprint
"""

from __future__ import annotations

import hashlib  # noqa: F401  (kept importable as iaprune.data.hashlib, as before)

from iaprune.data.builtin import (
    DATASETS,
    DEFAULT_ROOT,
    DEFAULT_VAL_SIZE,
    DIGITS_CLASSES,
    DIGITS_TEST_SIZE,
    INPUT_SHAPE,
    ROOT_ENV,
    SOURCES,
    IdxSource,
    _split_off,
    data_root,
    dataset_sizes,
    load_builtin,
    load_idx,
    md5,
    parse_idx,
    read_idx_file,
)
from iaprune.data.dataset import Dataset, DatasetError, MissingDataError, Split
from iaprune.data.source import (
    PYTHON_OBJECT,
    check_name,
    fingerprint_change,
    holds_data,
    is_path,
    load_dataset,
    path_fingerprint,
)

__all__ = ["DATASETS", "DEFAULT_ROOT", "DEFAULT_VAL_SIZE", "DIGITS_CLASSES", "DIGITS_TEST_SIZE",
           "INPUT_SHAPE", "PYTHON_OBJECT", "ROOT_ENV", "SOURCES", "Dataset", "DatasetError",
           "IdxSource", "MissingDataError", "Split", "check_name", "data_root", "dataset_sizes",
           "fingerprint_change", "holds_data", "is_path", "load_builtin", "load_dataset",
           "load_idx", "md5", "parse_idx", "path_fingerprint", "read_idx_file", "_split_off"]
