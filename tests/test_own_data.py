"""Your own data end to end: a PNG folder through the command line, tensors through run(data=),
the data fingerprint on resume, the validator and a deploy bundle applying the same scaling, and
`iaprune deploy verify` re-evaluating a bundle on its own data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iaprune_runtime as deploy
from iaprune import cli, validator
from iaprune import deploy as deploy_step
from iaprune.concatenate import read_validation_results
from iaprune.config import PruneConfig, Retraining, Training
from iaprune.data import DatasetError, load_dataset
from iaprune.engine import run
from iaprune.iterativeprune import main
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.run_data import DataChangedError
from iaprune_runtime import __main__ as runtime
from iaprune_runtime.bundle import write_bundle

FAST = ["--hidden", "8", "4", "--epochs", "2", "--retrain-epochs", "1", "--batch-size", "16",
        "--retrain-batch-size", "16", "--quiet"]
CONFIG = PruneConfig(hidden=(8, 4), training=Training(epochs=2, batch_size=16),
                     retraining=Retraining(epochs=1, batch_size=16))


@pytest.fixture
def retain(tmp_path) -> Path:
    """Two schedule rows for an 8-4 network."""
    path = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(0, (8, 4), 100.0), ScheduleRow(1, (6, 3), 75.0)], path)
    return path


@pytest.fixture
def pngs(tmp_path) -> Path:
    """Two classes of 8x8 PNGs: a bright or a dark square on noise."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "light")):
        (tmp_path / "pngs" / name).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            pixels[2:6, 2:6] += np.uint8(150 * k)
            Image.fromarray(pixels).save(tmp_path / "pngs" / name / f"{i}.png")
    return tmp_path / "pngs"


def run_cli(*argv) -> int:
    return cli.run(main, [str(a) for a in argv])


def last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def complete(session: Path) -> list[int]:
    return sorted(int(p.parts[-3]) for p in (session / "iterative_pruning").glob(
        "*/prune_w_retrain/validation_results.txt"))


def test_png_folder_runs_two_schedule_rows_from_the_command_line(tmp_path, pngs, retain):
    """iaprune iterativeprune --dataset FOLDER trains and prunes; the checkpoint names classes."""
    session = tmp_path / "s"
    assert run_cli("--dataset", pngs, *FAST, "--retain", retain, "--session", session) == 0
    assert complete(session) == [0, 1]
    checkpoint = torch.load(session / "iterative_pruning/1/prune_w_retrain/best_model.pth",
                            weights_only=True)
    assert checkpoint["classes"] == ["dark", "light"]
    assert checkpoint["input"]["shape"] == [1, 8, 8] and checkpoint["dataset"] == str(pngs)
    record = json.loads((session / "config.json").read_text())["data"]
    assert record["source"] == str(pngs) and record["fingerprint"]["files"] == 32


def test_validator_reproduces_a_folder_runs_test_accuracy(tmp_path, pngs, retain, capsys):
    """iaprune validator CKPT reads the recorded folder and matches the run's test accuracy."""
    session = tmp_path / "s"
    run_cli("--dataset", pngs, *FAST, "--retain", retain, "--session", session)
    folder = session / "iterative_pruning/1/prune_w_retrain"
    capsys.readouterr()
    assert validator.main([str(folder / "best_model.pth")]) == 0
    test_row = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("test"))
    recorded = read_validation_results(folder / "validation_results.txt")["Test_Accuracy"]
    assert float(test_row.split()[-1]) == pytest.approx(recorded, abs=0.006)


def test_a_bad_folder_is_one_line_and_writes_nothing(tmp_path, retain, capsys):
    """A folder without class folders: exit 2, one line, no session folder."""
    (tmp_path / "empty").mkdir()
    session = tmp_path / "s"
    assert run_cli("--dataset", tmp_path / "empty", *FAST, "--retain", retain,
                   "--session", session) == 2
    assert "no class folders" in last_line(capsys) and not session.exists()


def test_resuming_after_the_folder_changed_names_the_change(tmp_path, pngs, retain, capsys):
    """An image added to the folder: resuming is refused, saying what changed; nothing moves."""
    session = tmp_path / "s"
    run_cli("--dataset", pngs, *FAST, "--retain", retain, "--session", session)
    Image.new("L", (8, 8), 9).save(pngs / "dark" / "extra.png")
    before = (session / "iterative_pruning/1/prune_w_retrain/best_model.pth").read_bytes()
    assert run_cli("--session", session, "--begin-itr", "1") == 2
    assert "changed since (it has 33 files" in last_line(capsys)
    assert (session / "iterative_pruning/1/prune_w_retrain/best_model.pth").read_bytes() == before


def test_run_with_a_tensor_dataset_records_a_python_object(tmp_path, retain):
    """run(config, session, data=TensorDataset) prunes it and records its sha256."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.rand(120, 6, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 6)
    data = torch.utils.data.TensorDataset(x, y)
    results = run(CONFIG, tmp_path / "s", retain=retain, data=data, quiet=True,
                  log=lambda line: None)
    assert [r["iteration"] for r in results.rows] == [0, 1]
    saved = json.loads((tmp_path / "s" / "config.json").read_text())
    assert saved["dataset"] == "python object" and saved["val_size"] is None
    assert saved["data"]["fingerprint"] == load_dataset(data).record["fingerprint"]


def test_the_data_itself_as_the_dataset_setting_runs_as_run_data(tmp_path, retain):
    """PruneConfig(dataset=TensorDataset) runs as run(data=...) does, to the same numbers; an
    (x, y) pair too; the data given both ways at once is one error, before anything is written."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.rand(90, 6, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 6)
    data = torch.utils.data.TensorDataset(x, y)
    quiet = {"retain": retain, "quiet": True, "log": lambda line: None}

    def holding(data):
        return PruneConfig(dataset=data, hidden=(8, 4), training=CONFIG.training,
                           retraining=CONFIG.retraining)

    given = run(CONFIG, tmp_path / "given", data=data, **quiet)
    shown = repr(holding(data))
    assert "dataset=<TensorDataset of 90 samples>, " in shown and "hidden=(8, 4)" in shown
    held = run(holding(data), tmp_path / "held", **quiet)
    assert held.rows[1]["Test_Accuracy"] == given.rows[1]["Test_Accuracy"]
    for name in ("config.json", "iterative_pruning/1/prune_w_retrain/validation_results.txt"):
        assert (tmp_path / "held" / name).read_text() == (tmp_path / "given" / name).read_text()
    pair = run(holding((x.numpy(), y.numpy())), tmp_path / "pair", **quiet)
    assert [r["iteration"] for r in pair.rows] == [0, 1]
    with pytest.raises(DatasetError, match="the data is given twice"):
        run(holding(data), tmp_path / "twice", data=(x, y), **quiet)
    assert not (tmp_path / "twice" / "config.json").exists()
    assert repr(held).startswith(f"<Results {tmp_path / 'held'} (iterative): 2 iterations run "
                                 "now; recommended: iteration ")
    assert "\n" not in repr(held)


def test_a_session_that_recorded_batch_sizes_resumes_with_them_left_unset(tmp_path, retain):
    """Your own data's batch sizes are left to the trainer; a session whose config.json records
    numbers for them (as sessions run before did) resumes from a config that leaves them unset,
    with the recorded sizes: the same numbers as the uninterrupted run."""
    x, y = torch.rand(60, 4), torch.arange(60) % 2
    quiet = {"retain": retain, "quiet": True, "log": lambda line: None}
    run(CONFIG, tmp_path / "s", data=(x, y), **quiet)  # batch 16 recorded
    last = tmp_path / "s/iterative_pruning/1/prune_w_retrain/validation_results.txt"
    before = last.read_text()
    shutil.rmtree(last.parent.parent)
    unset = PruneConfig(dataset=(x, y), hidden=(8, 4), training=Training(epochs=2),
                        retraining=Retraining(epochs=1))
    assert unset.training.batch_size is None
    resumed = run(unset, tmp_path / "s", **quiet)
    assert [r["iteration"] for r in resumed.rows] == [1] and last.read_text() == before


def test_resuming_with_other_tensors_is_refused(tmp_path, retain):
    """Other tensors for a python-object session: one line naming the content change."""
    x, y = torch.rand(60, 4), torch.arange(60) % 2
    run(CONFIG, tmp_path / "s", retain=retain, data=(x, y), quiet=True, log=lambda line: None)
    with pytest.raises(DataChangedError, match="python object changed since .*content differs"):
        run(CONFIG, tmp_path / "s", retain=retain, begin=1, data=(x + 1, y), quiet=True,
            log=lambda line: None)


def test_a_table_bundle_standardises_raw_rows_as_training_did(tmp_path, retain):
    """A deploy bundle of a CSV-trained model turns raw rows into the training inputs exactly."""
    rows = [(i, (i * 7) % 11 + 0.5, i % 3) for i in range(60)]
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,kind\n" + "".join(f"{a},{b},{k}\n" for a, b, k in rows))
    config = PruneConfig(dataset=str(csv), target="kind", hidden=(8, 4),
                         training=Training(epochs=1, batch_size=16),
                         retraining=Retraining(epochs=0))
    run(config, tmp_path / "s", retain=retain, quiet=True, log=lambda line: None)
    bundle = tmp_path / "bundle"
    write_bundle(tmp_path / "s/iterative_pruning/1/prune_w_retrain/best_model.pth", bundle,
                 onnx=False)
    model = deploy.load(bundle)
    raw = np.array([(a, b) for a, b, _ in rows], dtype=np.float32)
    inputs = deploy.preprocess(raw, model.input_spec)  # floats are raw for a standardising model
    data = load_dataset(csv, target="kind")
    trained = torch.cat([data.train.x, data.val.x, data.test.x])
    order = lambda t: t[t[:, 0].argsort()]  # noqa: E731  (column a is unique and increasing)
    assert torch.equal(order(inputs), order(trained))


def test_validator_resizes_another_folder_to_the_models_input(tmp_path, pngs, retain, capsys):
    """validator --dataset OTHER reads a folder of 16x16 images at the model's 8x8 size."""
    session = tmp_path / "s"
    run_cli("--dataset", pngs, *FAST, "--retain", retain, "--session", session)
    for name in ("dark", "light"):
        (tmp_path / "big" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (16, 16), 30 + 150 * (name == "light")).save(
                tmp_path / "big" / name / f"{i}.png")
    checkpoint = session / "iterative_pruning/1/prune_w_retrain/best_model.pth"
    assert cli.run(validator.main, [str(checkpoint), "--dataset", str(tmp_path / "big")]) == 0


def test_validator_refuses_a_folder_of_other_classes(tmp_path, pngs, retain, capsys):
    """A folder whose class names differ from the model's is one line naming both."""
    session = tmp_path / "s"
    run_cli("--dataset", pngs, *FAST, "--retain", retain, "--session", session)
    pngs.joinpath("light").rename(pngs / "bright")
    checkpoint = session / "iterative_pruning/1/prune_w_retrain/best_model.pth"
    capsys.readouterr()
    assert cli.run(validator.main, [str(checkpoint), "--dataset", str(pngs)]) == 2
    assert "classes ['dark', 'light'] differ" in last_line(capsys)


# ---- iaprune deploy verify on your own data ---------------------------------------------------


def table_csv(path: Path, shift: int = 0) -> Path:
    """A 60-row table of two features and a 3-class label `kind` the features tell apart (labels
    moved on by `shift`)."""
    rows = [(i % 3 * 10 + (i * 7) % 5, (i * 7) % 11 + 0.5, i % 3) for i in range(60)]
    path.write_text("a,b,kind\n" + "".join(f"{a},{b},{(k + shift) % 3}\n" for a, b, k in rows))
    return path


TABLE = ["--target", "kind", "--lr", "0.1"]  # 2 epochs of 3 steps learn the table at this lr


def bundled(tmp_path: Path, dataset: Path, retain: Path, *flags, onnx: bool = False) -> Path:
    """A short session (tiny MLP, 2 epochs, 2 schedule rows) on `dataset`, iteration 1 bundled."""
    session = tmp_path / "s"
    assert run_cli("--dataset", dataset, *flags, *FAST, "--retain", retain,
                   "--session", session) == 0
    write_bundle(session / "iterative_pruning/1/prune_w_retrain/best_model.pth",
                 tmp_path / "bundle", onnx=onnx)
    return tmp_path / "bundle"


def verify(bundle: Path, *flags) -> int:
    """`iaprune deploy verify --bundle BUNDLE FLAGS` (the library's deploy step)."""
    return deploy_step.entry(["verify", "--bundle", str(bundle), *map(str, flags)])


def accuracy_line(out: str) -> str:
    return next(line for line in out.splitlines() if " test split: accuracy " in line)


def test_deploy_verify_rechecks_a_table_bundle_on_its_csv(tmp_path, retain, capsys):
    """A CSV session's bundle: verify reads the table's carved test split again (the recorded
    label column, scaling and split seed; no flags) and finds the manifest's accuracy."""
    csv = table_csv(tmp_path / "t.csv")
    bundle = bundled(tmp_path, csv, retain, *TABLE)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "kind" and manifest["data"]["kind"] == "table"
    capsys.readouterr()
    assert verify(bundle) == 0
    out = capsys.readouterr().out
    assert accuracy_line(out).startswith(f"{csv} test split: accuracy "
                                         f"{manifest['test_accuracy']:.2f}% (")
    assert accuracy_line(out).endswith(": ok") and out.splitlines()[-1] == "verify: ok"
    assert "note:" not in out  # the same file: its fingerprint is the bundle's


def test_deploy_verify_rechecks_a_png_folder_bundle_and_its_onnx(tmp_path, pngs, retain,
                                                                 capsys):
    """A PNG-folder session's bundle: verify resizes the folder to the recorded input size,
    finds the manifest's accuracy and checks model.onnx on the same inputs."""
    bundle = bundled(tmp_path, pngs, retain, onnx=True)
    expected = json.loads((bundle / "manifest.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert verify(bundle) == 0
    out = capsys.readouterr().out
    assert f"{pngs} test split: accuracy {expected:.2f}% (" in out and "verify: ok" in out
    if (bundle / "model.onnx").exists():  # onnx and onnxruntime installed
        assert "model.onnx: matches torch on the test split" in out


def test_deploy_verify_reads_a_streamed_folder_alike(tmp_path, pngs, retain, capsys,
                                                     monkeypatch):
    """A folder too large for memory is read from disk in batches: the same accuracy."""
    bundle = bundled(tmp_path, pngs, retain)
    expected = json.loads((bundle / "manifest.json").read_text())["test_accuracy"]
    monkeypatch.setattr("iaprune.data.stream.streams", lambda scan, stream: True)
    capsys.readouterr()
    assert verify(bundle) == 0
    assert f"accuracy {expected:.2f}% (" in capsys.readouterr().out


def test_deploy_verify_on_relabeled_data_is_a_mismatch(tmp_path, retain, capsys):
    """--dataset PATH names other data: a copy whose labels moved on is evaluated (with a note
    that it is not the bundle's data) and fails the comparison, exit EXIT_FAILED."""
    bundle = bundled(tmp_path, table_csv(tmp_path / "t.csv"), retain, *TABLE)
    other = table_csv(tmp_path / "relabeled.csv", shift=1)
    capsys.readouterr()
    assert verify(bundle, "--dataset", other) == runtime.EXIT_FAILED
    out = capsys.readouterr().out
    assert f"note: {other} differs from the data the bundle's model was trained on" in out
    assert "MISMATCH" in accuracy_line(out) and out.splitlines()[-1] == "verify: FAILED"
    assert verify(bundle, "--dataset", tmp_path / "t.csv") == 0  # the bundle's own data: ok


def test_a_moved_dataset_is_one_line_and_dataset_path_finds_it(tmp_path, retain, capsys):
    """The recorded table moved: one line naming it and --dataset PATH, exit 2; --dataset with
    its new place verifies it (a moved file keeps its fingerprint: no note)."""
    csv = table_csv(tmp_path / "t.csv")
    bundle = bundled(tmp_path, csv, retain, *TABLE)
    (tmp_path / "moved").mkdir()
    moved = csv.rename(tmp_path / "moved" / csv.name)
    capsys.readouterr()
    assert verify(bundle) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {csv}: no such file or folder")
    assert "--dataset PATH" in err
    assert verify(bundle, "--dataset", moved) == 0
    out = capsys.readouterr().out
    assert "verify: ok" in out and "note:" not in out


def test_the_runtime_alone_does_not_check_own_data(tmp_path, retain, capsys):
    """python -m iaprune_runtime verify (no library): sha256 checked, the accuracy not, one line
    saying `iaprune deploy verify` checks it; exit 0. --dataset takes a path there too."""
    csv = table_csv(tmp_path / "t.csv")
    bundle = bundled(tmp_path, csv, retain, *TABLE)
    capsys.readouterr()
    for flags in ([], ["--dataset", str(csv)]):
        assert runtime.run(runtime.main, ["verify", "--bundle", str(bundle), *flags]) == 0
        out = capsys.readouterr().out
        assert "sha256 ok" in out and " test split" not in out
        assert out.splitlines()[-1].startswith("accuracy: not checked (")
        assert "`iaprune deploy verify` (with the IA-Prune library installed) checks" in out


def test_deploy_verify_of_a_python_object_bundle_is_not_checked(tmp_path, retain, capsys):
    """A model trained on data held in Python: verify cannot read it again; one line saying so,
    exit 0."""
    x, y = torch.rand(60, 4), torch.arange(60) % 2
    run(CONFIG, tmp_path / "s", retain=retain, data=(x, y), quiet=True, log=lambda line: None)
    write_bundle(tmp_path / "s/iterative_pruning/1/prune_w_retrain/best_model.pth",
                 tmp_path / "bundle", onnx=False)
    capsys.readouterr()
    assert verify(tmp_path / "bundle") == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("accuracy: not checked (the model was trained on data given as a "
                           "Python object; pass that data to iaprune.validator.evaluate")
