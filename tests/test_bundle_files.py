"""A bundle folder's files: one writer at a time (the folder lock), no symbolic links read, and a
bundle write that dies at any write leaves a folder that loads as the old bundle or is refused,
never a mix, and the next bundle ends as an uninterrupted one with no temp file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import iaprune_runtime as deploy
import iaprune_runtime.bundle as bundle_module
from iaprune import build, save_checkpoint
from iaprune_runtime.__main__ import main, run
from iaprune_runtime.bundle import LOCK_FILE, write_bundle
from iaprune_runtime.files import TEMP_NAME, holding


def checkpoint(path: Path, seed: int) -> Path:
    net = build({"input": [64], "layers": [{"type": "linear", "out": 6}, "relu",
                                           {"type": "linear", "out": 10}]}, seed=seed)
    save_checkpoint(path, net, dataset="digits")
    return path


@pytest.fixture
def models(tmp_path) -> tuple[Path, Path]:
    return checkpoint(tmp_path / "old.pth", 0), checkpoint(tmp_path / "new.pth", 1)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_second_bundle_into_a_folder_waits_for_the_first(tmp_path, models):
    """While one writer holds the folder's lock, another bundle into it writes nothing; it
    writes a whole bundle once the lock is free."""
    out = tmp_path / "b"
    done = threading.Event()
    with holding(out / LOCK_FILE):
        writer = threading.Thread(target=lambda: (write_bundle(models[1], out, onnx=False),
                                                  done.set()))
        writer.start()
        time.sleep(1.0)
        assert not done.is_set() and not (out / "model.pth").exists()
    writer.join(30)
    assert done.is_set() and deploy.load(out).info["sha256"]
    assert not (out / LOCK_FILE).exists()  # removed by its last holder


def test_a_lock_planted_as_a_symbolic_link_is_refused_and_its_target_untouched(
        tmp_path, models, capsys):
    """A .bundle.lock linking elsewhere is one error line; the linked file keeps its bytes."""
    out, target = tmp_path / "b", tmp_path / "precious.txt"
    target.write_text("keep me\n")
    out.mkdir()
    (out / LOCK_FILE).symlink_to(target)
    code = run(main, ["bundle", str(models[0]), "--out", str(out), "--no-onnx"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and LOCK_FILE in err
    assert target.read_text() == "keep me\n" and not (out / "model.pth").exists()


@pytest.mark.parametrize("name", ["model.pth", "manifest.json", "notes.txt"])
def test_a_symbolic_link_in_a_bundle_is_refused_by_load_verify_and_predict(
        tmp_path, models, capsys, name):
    """A bundle file replaced by a link (even to identical bytes) or any link in the folder:
    load, verify and predict refuse it in one line naming it."""
    out = tmp_path / "b"
    write_bundle(models[0], out, onnx=False)
    elsewhere = tmp_path / f"elsewhere-{name}"
    if name == "notes.txt":
        elsewhere.write_text("hello\n")
    else:
        os.replace(out / name, elsewhere)
    (out / name).symlink_to(elsewhere)
    with pytest.raises(deploy.BundleError, match=f"{name}: is a symbolic link"):
        deploy.load(out)
    for argv in (["verify", "--bundle", str(out)],
                 ["predict", "--bundle", str(out), str(tmp_path / "x.npy")]):
        assert run(main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "symbolic link" in err


class Killed(Exception):
    """The injected failure standing for a kill."""


def test_a_bundle_dying_at_any_write_leaves_the_old_bundle_or_a_refused_one(
        tmp_path, models, monkeypatch):
    """An injected failure at every write of `deploy bundle` (each one leaving a half-written
    temp file, as a kill would): the folder then loads as the old bundle or is refused, and
    bundling again leaves exactly an uninterrupted bundle, with no temp file."""
    old, new = models
    reference = tmp_path / "reference"
    write_bundle(new, reference, onnx=False)
    expected = folder_bytes(reference)
    new_sha = deploy.load(reference).info["sha256"]
    real = bundle_module.atomic_write
    kills = 0
    while True:
        out = tmp_path / f"kill-{kills}"
        write_bundle(old, out, onnx=False)
        old_sha = deploy.load(out).info["sha256"]
        count = 0

        def dying(path, data, n=kills):
            nonlocal count
            if count == n:
                Path(path).with_name(f".{Path(path).name}.0badcafe.tmp").write_bytes(b"half")
                raise Killed(str(path))
            count += 1
            return real(path, data)

        monkeypatch.setattr(bundle_module, "atomic_write", dying)
        try:
            write_bundle(new, out, onnx=False)
            finished = True
        except Killed:
            finished = False
        monkeypatch.undo()
        try:
            assert deploy.load(out).info["sha256"] in (old_sha, new_sha)
        except deploy.BundleError as exc:
            assert "sha256 does not match" in str(exc)
        write_bundle(new, out, onnx=False)
        assert folder_bytes(out) == expected, kills
        assert not [p for p in out.iterdir() if TEMP_NAME.fullmatch(p.name)], kills
        if finished:
            break
        kills += 1
    assert kills == 2  # model.pth, manifest.json
