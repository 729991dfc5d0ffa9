"""What `--base-model` takes: an IA-Prune checkpoint, whose recorded data the run uses; a
plain state_dict or a pickled model is refused with the Python that converts it."""

from __future__ import annotations

import torch
from torch import nn

from iaprune import build, save_checkpoint
from iaprune.iterativeprune import entry


def mlp(hidden: int = 8):
    return build({"input": [1, 8, 8], "layers": [{"type": "linear", "out": hidden}, "relu",
                                                 {"type": "linear", "out": 10}]}, seed=0)


def test_a_state_dict_given_as_base_model_is_refused_with_the_conversion(tmp_path, capsys):
    """A bare state_dict is one `error:` line showing the two lines of Python (load_state_dict,
    then from_module + save_checkpoint) that make it a checkpoint; nothing is written."""
    torch.save(nn.Linear(64, 10).state_dict(), tmp_path / "weights.pth")
    session = tmp_path / "s"
    assert entry(["--base-model", str(tmp_path / "weights.pth"), "--session", str(session)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a plain state_dict" in err
    assert "load_state_dict(torch.load(PATH))" in err and "iaprune.from_module(" in err
    assert not session.exists()


def test_a_pickled_model_given_as_base_model_is_refused_without_unpickling(tmp_path, capsys):
    """A torch.save(model) file is refused (loading it could run code), with the conversion."""
    torch.save(nn.Sequential(nn.Linear(64, 10)), tmp_path / "whole.pth")
    assert entry(["--base-model", str(tmp_path / "whole.pth"), "--session",
                  str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "weights_only=False" in err and "save_checkpoint" in err


def test_base_model_without_dataset_uses_the_data_the_checkpoint_records(tmp_path, capsys,
                                                                          monkeypatch):
    """A digits checkpoint given with --base-model alone prunes on digits (the default would
    be MNIST, which is not even on this machine's path)."""
    monkeypatch.setenv("IAPRUNE_DATA", str(tmp_path / "no-data-here"))
    save_checkpoint(tmp_path / "digits.pth", mlp(), dataset="digits")
    (tmp_path / "retain.txt").write_text("Iteration h1NodesRetained perNodesRetained\n0 8 100\n")
    session = tmp_path / "s"
    assert entry(["--base-model", str(tmp_path / "digits.pth"), "--retain",
                  str(tmp_path / "retain.txt"), "--session", str(session), "--quiet"]) == 0
    assert '"dataset": "digits"' in (session / "config.json").read_text()
