"""An image folder read from disk in batches (streaming) gives the in-memory results: the same
splits and rows, the same input box, criteria and folds, and the same validation results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import rgb_folder

from iaprune import cli
from iaprune.data import load_dataset
from iaprune.data.dataset import DatasetError
from iaprune.data.rows import batches, take
from iaprune.data.stream import DiskRows
from iaprune.iterativeprune import main
from iaprune.prune import shrink
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.significance import ScoreData, data_box, quantile_box, sample_boxes, score
from iaprune.spec import build

FAST = ["--hidden", "8", "4", "--epochs", "2", "--retrain-epochs", "1", "--batch-size", "16",
        "--retrain-batch-size", "16", "--quiet"]


@pytest.fixture
def rgb(tmp_path) -> Path:
    """Three classes of RGB PNGs, mostly 10x10, a few 12x9 (resized), a train/test layout."""
    return rgb_folder(tmp_path, 14)


def both(folder: Path):
    memory = load_dataset(folder, val_size=6, seed=3)
    streamed = load_dataset(folder, val_size=6, seed=3, stream=True)
    return memory, streamed


def test_streaming_is_forced_and_reads_the_in_memory_rows_in_order(rgb):
    """stream=True gives DiskRows whose batches, in any order, are the in-memory rows."""
    memory, streamed = both(rgb)
    assert isinstance(streamed.train.x, DiskRows) and isinstance(memory.train.x, torch.Tensor)
    assert streamed.input_info() == memory.input_info()
    assert streamed.record == memory.record
    for a, b in ((memory.train, streamed.train), (memory.val, streamed.val),
                 (memory.test, streamed.test)):
        assert torch.equal(a.y, b.y)
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
        got = torch.cat(list(batches(replace(b.x, workers=2), 5, order)))
        assert torch.equal(got, a.x[order])


def test_the_box_and_criteria_are_those_of_the_in_memory_data(rgb):
    """Data box, quantile box, sample boxes, taylor and the folds read the same numbers."""
    memory, streamed = both(rgb)
    m, s = memory.train.x, streamed.train.x
    for box in (data_box, quantile_box):
        assert torch.equal(box(m).lower, box(s).lower) and torch.equal(box(m).upper,
                                                                        box(s).upper)
    assert torch.equal(sample_boxes(m, 0.1, 5, seed=2).lower, sample_boxes(s, 0.1, 5,
                                                                           seed=2).lower)
    net = build({"input": list(memory.input_shape), "layers": [
        {"type": "linear", "out": 6}, "relu", {"type": "linear", "out": 3}]}, seed=0)
    for criterion in ("interval_adjoint", "taylor", "apoz"):
        want = score(criterion, net, ScoreData(m, memory.train.y, box="quantile"), True)
        got = score(criterion, net, ScoreData(s, streamed.train.y, box="quantile"), True)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True)), criterion
    keep = [torch.arange(0, 300, 2), torch.tensor([0, 2, 3])]
    for fold in ("linear", "mean", "mid"):
        a = shrink(net, keep, fold, data=m, inputs=True)
        b = shrink(net, keep, fold, data=s, inputs=True)
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_streamed_run_writes_the_in_memory_validation_results(tmp_path, rgb):
    """A short run (tiny MLP, 2 epochs, 2 schedule rows) with --stream writes the same
    validation_results.txt of every iteration as the run that holds the folder in memory."""
    retain = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(0, (8, 4), 100.0), ScheduleRow(1, (6, 3), 75.0)], retain)
    runs = {}
    for name, extra in (("memory", []), ("stream", ["--stream"])):
        session = tmp_path / name
        assert cli.run(main, [str(a) for a in ("--dataset", rgb, *FAST, "--retain", retain,
                                               "--session", session, *extra)]) == 0
        runs[name] = [(session / "iterative_pruning" / str(i) / "prune_w_retrain" /
                       "validation_results.txt").read_text() for i in (0, 1)]
    assert runs["stream"] == runs["memory"]


def test_an_image_that_fails_to_decode_while_streaming_is_named_in_one_line(rgb):
    """A truncated file found by a worker is a DatasetError naming it, one line."""
    bad = rgb / "train" / "red" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header still reads
    data = load_dataset(rgb, val_size=6, stream=True)
    x = replace(data.train.x, workers=1)
    with pytest.raises(DatasetError) as caught:
        take(x, torch.arange(len(x)))
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("source", ["digits", "table"])
def test_stream_is_refused_for_data_held_in_memory(tmp_path, source, capsys):
    """--stream on a built-in set or a table: one line, exit 2, nothing written."""
    if source == "table":
        source = tmp_path / "t.csv"
        source.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    session = tmp_path / "s"
    assert cli.run(main, [str(a) for a in ("--dataset", source, "--target", "label") if
                          source != "digits" or a not in ("--target", "label")] +
                   ["--stream", "--session", str(session)]) == 2
    assert "--stream applies to" in capsys.readouterr().err
    assert not session.exists()


@pytest.mark.parametrize("flag", [["--target", "label"], ["--image-size", "8"], ["--stream"]])
def test_validator_refuses_own_data_flags_with_a_built_in_set(tmp_path, flag, capsys):
    """validator --dataset digits with --target, --image-size or --stream: one line, exit 2
    (they were ignored before)."""
    from iaprune import validator
    from iaprune.checkpoint import save_checkpoint

    net = build({"input": [1, 8, 8], "layers": [{"type": "linear", "out": 10}]}, seed=0)
    path = tmp_path / "m.pth"
    save_checkpoint(path, net, dataset="digits")
    assert cli.run(validator.main, [str(path), "--dataset", "digits", *flag]) == 2
    assert f"error: {flag[0]} applies to your own data, not to the built-in digits" in \
        capsys.readouterr().err


def test_validator_streams_a_folder_to_the_in_memory_figures(tmp_path, rgb, capsys):
    """validator --stream prints the same metrics as without it."""
    from iaprune import validator
    from iaprune.checkpoint import save_checkpoint

    data = load_dataset(rgb)
    net = build({"input": list(data.input_shape), "layers": [{"type": "linear", "out": 3}]},
                seed=0)
    path = tmp_path / "m.pth"
    save_checkpoint(path, net, dataset=str(rgb), input=data.input_info(),
                    classes=list(data.classes))
    outputs = []
    for extra in ([], ["--stream"]):
        assert cli.run(validator.main, [str(path), "--dataset", str(rgb), *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_a_folder_streams_by_itself_when_it_exceeds_half_the_available_memory(rgb, monkeypatch):
    """Without stream=..., the folder is streamed when its float32 inputs exceed half the
    available memory, and held in memory otherwise; stream=False holds it in memory."""
    from iaprune.data import stream

    size = (14 + 4) * 3 * 3 * 10 * 10 * 4  # 54 images of 3x10x10 float32
    monkeypatch.setattr(stream, "available_memory", lambda: 2 * size - 2)
    assert isinstance(load_dataset(rgb).train.x, DiskRows)
    assert isinstance(load_dataset(rgb, stream=False).train.x, torch.Tensor)
    monkeypatch.setattr(stream, "available_memory", lambda: 2 * size)
    assert isinstance(load_dataset(rgb).train.x, torch.Tensor)
