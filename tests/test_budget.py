"""Sizes a spec, a checkpoint or a manifest declares are checked against a memory limit before
anything is allocated: one `error:` line naming the layer, exit code 2, nothing written."""

from __future__ import annotations

import json
import os

import pytest
import torch

import iaprune_runtime.budget as budget
import iaprune_runtime.model
from iaprune import cli
from iaprune.iterativeprune import entry as prune
from iaprune.spec import SpecError, build, check_spec
from iaprune.validator import entry as validate
from iaprune_runtime.__main__ import main as deploy_main
from iaprune_runtime.__main__ import run as deploy_run

DEEP = 200_000  # JSON nesting that overflows Python's recursion


def deploy(argv: list[str]) -> int:
    return deploy_run(deploy_main, argv)


def mlp(out: int, n_in: int = 64) -> dict:
    return {"input": [n_in], "layers": [{"type": "linear", "out": out}, "relu",
                                        {"type": "linear", "out": 10}]}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def save_raw(path, spec_layers: list, state_dict: dict, shape=(64,)) -> str:
    """A checkpoint written by hand: any spec beside any tensors."""
    torch.save({"format": "ia-prune/2", "spec": spec_layers, "input": {"shape": list(shape)},
                "state_dict": state_dict, "dataset": "digits"}, path)
    return str(path)


def test_arch_with_3e6_units_is_refused_before_config_json_is_written(tmp_path, capsys):
    """`--arch` naming a linear of 3·10⁶ units: one line naming the layer, no session files."""
    arch = tmp_path / "wide.json"
    arch.write_text(json.dumps([{"type": "linear", "out": 3_000_000}, "relu",
                                {"type": "linear", "out": 10}]))
    session = tmp_path / "s"
    assert prune(["--dataset", "digits", "--arch", str(arch), "--session", str(session),
                  "--quiet", "--max-memory", "1"]) == 2
    err = one_error_line(capsys)
    assert "layer 0 (linear 3000000)" in err and "--max-memory" in err
    assert not (session / "config.json").exists() and not (session / "retain").exists()


def test_hidden_of_1e11_units_is_one_line_with_the_default_limit(tmp_path, capsys):
    """`--hidden 100000000000` (no --max-memory): refused by any machine's default limit."""
    assert prune(["--dataset", "digits", "--hidden", "100000000000", "--session",
                  str(tmp_path / "s"), "--quiet"]) == 2
    assert "layer 0 (linear 100000000000)" in one_error_line(capsys)
    assert not (tmp_path / "s" / "config.json").exists()


def test_a_huge_padding_is_refused_not_an_allocator_overflow():
    """A conv padding of 10¹² gives maps too large to exist: a SpecError naming the conv, where
    torch said 'Storage size calculation overflowed'."""
    spec = {"input": [1, 8, 8], "layers": [
        {"type": "conv2d", "out": 2, "kernel": 3, "padding": 10**12}, "flatten",
        {"type": "linear", "out": 10}]}
    with pytest.raises(SpecError, match=r"layer 0 \(conv2d 2 3 1 1000000000000\) needs"):
        build(spec)


def test_a_checkpoint_declaring_1e9_units_is_one_line_in_every_reader(tmp_path, capsys):
    """validator and deploy bundle/predict refuse a checkpoint of 10⁹ units in one line."""
    path = save_raw(tmp_path / "m.pth", mlp(10**9)["layers"], {})
    assert validate([path]) == 2
    assert "linear 1000000000" in one_error_line(capsys)
    for argv in (["bundle", path, "--out", str(tmp_path / "b"), "--no-onnx"],
                 ["predict", "--bundle", path, str(tmp_path / "x.npy")]):
        assert deploy(argv) == 2
        assert "linear 1000000000" in one_error_line(capsys)
    assert not (tmp_path / "b").exists()


def test_small_tensors_under_a_huge_declared_layer_are_refused_before_it_is_built(
        tmp_path, monkeypatch, capsys):
    """A checkpoint declaring 300,000 units but holding 8: the weights' shapes are compared with
    the spec's on torch's meta device, so the 300,000-unit network is never allocated."""
    small = build(mlp(8), seed=0).state_dict()
    path = save_raw(tmp_path / "m.pth", mlp(300_000)["layers"], small)

    def never(*args, **kwargs):
        raise AssertionError("the declared network was allocated")

    monkeypatch.setattr(iaprune_runtime.model.DeployedNet, "__init__", never)
    assert deploy(["bundle", path, "--out", str(tmp_path / "b"), "--no-onnx",
                   "--max-memory", "100"]) == 2
    err = one_error_line(capsys)
    assert "0.weight has shape [8, 64], the architecture needs [300000, 64]" in err


def test_the_default_limit_is_a_quarter_of_physical_memory(monkeypatch):
    """Without --max-memory or $IAPRUNE_MAX_MEMORY the limit is physical memory / 4."""
    monkeypatch.delenv(budget.ENV, raising=False)
    monkeypatch.setattr(budget, "physical_memory", lambda: 64 * budget.GB)
    assert budget.current_limit()[0] == 16 * budget.GB
    check_spec(mlp(3_000_000))  # ~9 GB: fits 16 GB
    monkeypatch.setattr(budget, "physical_memory", lambda: 8 * budget.GB)
    with pytest.raises(SpecError, match=r"above the memory limit of 2 GB \(1/4 of this"):
        check_spec(mlp(3_000_000))


def test_the_flag_and_the_environment_set_the_limit(monkeypatch):
    """--max-memory (memory_limit) wins over $IAPRUNE_MAX_MEMORY, which wins over the default."""
    monkeypatch.setenv(budget.ENV, "0.5")
    with pytest.raises(SpecError, match=r"limit of 512 MB \(\$IAPRUNE_MAX_MEMORY\)"):
        check_spec(mlp(1_000_000))
    with budget.memory_limit(100):
        check_spec(mlp(1_000_000))
    monkeypatch.setenv(budget.ENV, "lots")
    with pytest.raises(SpecError, match="IAPRUNE_MAX_MEMORY"):
        check_spec(mlp(8))


def test_running_out_of_memory_anyway_is_one_line_and_other_errors_keep_their_traceback(
        capsys):
    """An allocator failure a check missed is one line; any other RuntimeError is a bug."""
    def oom(argv):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 9999999999 bytes.\nmore")

    def bug(argv):
        raise RuntimeError("a bug")

    assert cli.run(oom, []) == 2
    assert "out of memory" in one_error_line(capsys)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(bug, [])


@pytest.mark.parametrize("reader", ["arch", "config", "manifest"])
def test_json_nested_200000_deep_is_one_line(tmp_path, capsys, reader):
    """The JSON readers of the commands (--arch spec, config.json, manifest) say 'nested too
    deeply' in one line, exit 2, where Python raised RecursionError."""
    deep = "[" * DEEP + "]" * DEEP
    session = tmp_path / "s"
    if reader == "arch":
        (tmp_path / "deep.json").write_text(deep)
        code = prune(["--dataset", "digits", "--arch", str(tmp_path / "deep.json"),
                      "--session", str(session), "--quiet"])
    elif reader == "config":
        session.mkdir()
        (session / "config.json").write_text(deep)
        code = prune(["--dataset", "digits", "--session", str(session), "--quiet"])
    elif reader == "manifest":
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "manifest.json").write_text(deep)
        code = deploy(["predict", "--bundle", str(tmp_path / "b"), str(tmp_path / "x.npy")])
    assert code == 2
    assert "nested too deeply" in one_error_line(capsys)
    assert not os.path.exists(session / "retain")


def test_a_deep_concatenate_json_is_a_results_error(tmp_path):
    """concatenate.json nested 200,000 deep: the results error (one line), not RecursionError."""
    from iaprune.concatenate import ResultsError, read_settings

    (tmp_path / "concatenate.json").write_text("[" * DEEP + "]" * DEEP)
    with pytest.raises(ResultsError, match="nested too deeply"):
        read_settings(tmp_path)


def test_a_npy_header_declaring_1e12_values_is_one_line(tmp_path, capsys):
    """A 100-byte .npy whose header declares 10¹² values: predict reads it mapped, so the
    mismatch is one line (it asked numpy for a terabyte before)."""
    import numpy as np

    model = tmp_path / "m.pth"
    from iaprune import save_checkpoint
    save_checkpoint(model, build(mlp(4), seed=0), dataset="digits")
    path = tmp_path / "x.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**12,)})
        fh.write(bytes(100))
    assert deploy(["predict", "--bundle", str(model), str(path)]) == 2
    assert str(path) in one_error_line(capsys)
