"""Checkpoints: self-describing, atomic, loaded safely."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from iaprune.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from iaprune.model import mlp_net
from iaprune.spec import PRESETS, build, spec_of


def test_round_trip_restores_architecture_weights_and_meta(tmp_path):
    """A saved model reloads with its sizes, activation, weights and metadata."""
    model = mlp_net([8, 5, 3, 2], "sigmoid", seed=0)
    path = save_checkpoint(tmp_path / "best_model.pth", model, dataset="blobs", iteration=3)
    loaded, meta = load_model(path)
    assert spec_of(loaded) == spec_of(model)
    assert meta["iteration"] == 3 and meta["dataset"] == "blobs"
    x = torch.rand(4, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_checkpoint_is_plain_data_loadable_with_weights_only(tmp_path):
    """best_model.pth loads with torch.load(weights_only=True) into a dict: no classes pickled."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([4, 3, 2], seed=0))
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "ia-prune/2" and payload["input"]["shape"] == [4]
    assert [layer["type"] for layer in payload["spec"]] == ["linear", "relu", "linear"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_payload_is_refused(tmp_path):
    """A file carrying an arbitrary pickled object is refused, naming the file."""
    path = tmp_path / "evil.pth"
    torch.save({"format": "ia-prune/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_checkpoint(path)


def test_truncated_file_is_reported_as_corrupt(tmp_path):
    """A checkpoint cut short (a killed copy) gives a clear error naming the file."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([4, 3, 2], seed=0))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="m.pth: truncated or corrupt"):
        load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    """A torch file that is not an IA-Prune checkpoint is refused."""
    path = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not an IA-Prune checkpoint"):
        load_checkpoint(path)


def test_text_file_is_refused(tmp_path):
    """A file that is not a torch file at all is refused."""
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_checkpoint(path)


def test_missing_file_is_named(tmp_path):
    """A missing checkpoint names the path."""
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_mismatched_weights_are_refused(tmp_path):
    """Weights that do not fit the recorded spec are refused (strict loading)."""
    path = save_checkpoint(tmp_path / "m.pth", mlp_net([4, 3, 2], seed=0))
    payload = torch.load(path, weights_only=True)
    payload["spec"][0]["out"] = 5
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    """atomic_write creates folders, replaces content whole, and leaves no temp file behind."""
    target = tmp_path / "a" / "b.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    assert os.listdir(target.parent) == ["b.txt"]


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    """If the rename fails, the previous file is intact and the temp file is removed."""
    target = tmp_path / "keep.txt"
    atomic_write(target, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["keep.txt"]


def test_pickle_module_not_used_for_loading(tmp_path):
    """Loading never falls back to unrestricted unpickling (weights_only errors stay errors)."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"format": "ia-prune/1", "x": Evil()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_atomic_write_gives_the_usual_permissions(tmp_path, umask, mask):
    """A written file gets 0666 & ~umask like any other, not the temp file's private 0600."""
    umask(mask)
    path = atomic_write(tmp_path / "shared.txt", "x")
    atomic_write(path, "replaced")  # replacing keeps the usual mode too
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask


def test_a_text_file_is_not_a_checkpoint_and_unsafe_loading_is_never_suggested(tmp_path):
    """A non-checkpoint file is called that; torch's advice to load with weights_only=False,
    which could run code from the file, is never relayed."""
    path = tmp_path / "README.md"
    path.write_text("# a README\n\nsome text\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "README.md: not a PyTorch checkpoint" in message
    assert "weights_only" not in message and "\n" not in message


def test_pickled_objects_are_named_and_unsafe_loading_is_never_suggested(tmp_path):
    """A torch file holding Python objects is refused naming the object, with no advice to
    load it unsafely."""
    path = tmp_path / "evil.pth"
    torch.save({"format": "ia-prune/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "posix.system" in message or "os.system" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message


def test_empty_file_is_reported_as_empty(tmp_path):
    """A zero-byte checkpoint (an interrupted copy) says so."""
    path = tmp_path / "m.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="m.pth: empty file"):
        load_checkpoint(path)


def test_a_folder_is_reported_as_a_folder(tmp_path):
    """A folder given for a checkpoint says it is a folder (and points at the checkpoint
    inside), not 'no such file'."""
    folder = tmp_path / "3" / "prune_w_retrain"
    save_checkpoint(folder / "best_model.pth", mlp_net([4, 3, 2], seed=0))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    assert str(info.value) == (f"{folder}: is a folder, not a checkpoint file "
                               f"(did you mean {folder / 'best_model.pth'}?)")


def test_a_first_format_checkpoint_still_loads(tmp_path):
    """ia-prune/1 (sizes + activation, keys 0./2./4.) loads as the same MLP."""
    model = mlp_net([784, 16, 8, 10], "tanh", seed=0)
    path = tmp_path / "old.pth"
    torch.save({"format": "ia-prune/1", "sizes": [784, 16, 8, 10], "activation": "tanh",
                "input": {"shape": [1, 28, 28], "scale": 1 / 255},
                "state_dict": model.state_dict()}, path)
    loaded, _ = load_model(path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
    assert spec_of(loaded)["input"] == [1, 28, 28]


def test_a_cnn_round_trips_with_batchnorm_buffers(tmp_path):
    """Conv, BatchNorm (with its running statistics), pooling: saved, loaded, same outputs."""
    spec = {"input": [1, 8, 8], "layers": [
        {"type": "conv2d", "out": 3, "kernel": 3}, "batchnorm", "relu",
        {"type": "avgpool2d", "kernel": 2}, "flatten", {"type": "dropout", "p": 0.2},
        {"type": "linear", "out": 10}]}
    model = build(spec, seed=0)
    model.train()
    model(torch.rand(16, 64))  # moves the running statistics away from their defaults
    model.eval()
    loaded, _ = load_model(save_checkpoint(tmp_path / "cnn.pth", model))
    x = torch.rand(4, 64)
    torch.testing.assert_close(loaded(x), model(x))
    assert spec_of(build(PRESETS["lenet5"]([1, 28, 28], 10)))["layers"][0]["type"] == "conv2d"
