"""A full disk or a read-only folder is the machine's state, not a bug: one `error:` line naming
the file, exit code 2, and the session resumes once the space is back."""

from __future__ import annotations

import errno
import os

import pytest

import iaprune_runtime.files
from iaprune.iterativeprune import entry as prune
from iaprune.retain import entry as retain
from iaprune_runtime.__main__ import main as deploy_main
from iaprune_runtime.__main__ import run as deploy_run

REAL_FSYNC = os.fsync


def disk_full_after(monkeypatch, writes: int) -> None:
    """Every atomic write after the first `writes` fails as on a full disk (ENOSPC)."""
    left = [writes]

    def fsync(fd):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= 1
        return REAL_FSYNC(fd)

    monkeypatch.setattr(iaprune_runtime.files.os, "fsync", fsync)


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """`iaprune retain` on a full disk: `error: .../retain.txt: No space left on device`, exit 2,
    and no temp file left behind."""
    disk_full_after(monkeypatch, 0)
    assert retain(["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'r'}") and os.strerror(errno.ENOSPC) in err
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_a_deploy_bundle_into_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """The runtime's command line says the same in one line (no traceback)."""
    from iaprune import build, save_checkpoint

    net = build({"input": [64], "layers": [{"type": "linear", "out": 10}]}, seed=0)
    save_checkpoint(tmp_path / "m.pth", net, dataset="digits")
    disk_full_after(monkeypatch, 0)
    code = deploy_run(deploy_main, ["bundle", str(tmp_path / "m.pth"), "--out",
                                    str(tmp_path / "b"), "--no-onnx"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and os.strerror(errno.ENOSPC) in err


@pytest.mark.parametrize("writes", [3, 12])
def test_a_session_stopped_by_a_full_disk_resumes_to_the_same_results(tmp_path, monkeypatch,
                                                                      capsys, writes):
    """A run that hits a full disk mid-way stops with one line; run again once there is space,
    it ends with the validation results of a run that never hit it."""
    (tmp_path / "retain.txt").write_text(
        "Iteration h1NodesRetained h2NodesRetained perNodesRetained\n0 8 4 100\n1 6 3 75\n")
    flags = ["--dataset", "digits", "--hidden", "8", "4", "--retain",
             str(tmp_path / "retain.txt"), "--quiet", "--epochs", "3", "--retrain-epochs", "2"]
    assert prune([*flags, "--session", str(tmp_path / "clean")]) == 0
    disk_full_after(monkeypatch, writes)
    assert prune([*flags, "--session", str(tmp_path / "full")]) == 2
    assert os.strerror(errno.ENOSPC) in capsys.readouterr().err
    monkeypatch.setattr(iaprune_runtime.files.os, "fsync", REAL_FSYNC)
    assert prune([*flags, "--session", str(tmp_path / "full")]) == 0
    for i in (0, 1):
        name = f"iterative_pruning/{i}/prune_w_retrain/validation_results.txt"
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
