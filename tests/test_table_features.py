"""Inputs of tables are features: with input pruning, the kept inputs are named by column in
summary.txt, features.txt, concatenate's outputs and the trackers, and a deployed table model
predicts from a CSV holding only the columns it kept; a colour-image bundle predicts RGB files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rgb_folder

import iaprune_runtime as deploy
from iaprune.concatenate import concatenate
from iaprune.config import PruneConfig, Retraining, Training
from iaprune.data import load_dataset
from iaprune.engine import run
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.tracking import make_tracker
from iaprune_runtime.__main__ import main as deploy_main
from iaprune_runtime.__main__ import run as deploy_run
from iaprune_runtime.bundle import write_bundle

COLUMNS = ["radius", "area, mm2", "noise", "texture"]  # a comma in a name on purpose
FAST = dict(hidden=(8, 4), training=Training(epochs=2, batch_size=16),
            retraining=Retraining(epochs=1, batch_size=16))


def write_csv(path: Path, rows: np.ndarray, columns: list[str], labels=None) -> Path:
    head = ",".join(f'"{c}"' if "," in c else c for c in columns)
    lines = [head + (",kind" if labels is not None else "")]
    for i, row in enumerate(rows):
        lines.append(",".join(f"{v:.6g}" for v in row) +
                     ("" if labels is None else f",{labels[i]}"))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 4-column CSV whose label depends on radius and area; (its path, its feature rows)."""
    folder = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(120, 4)) * [1, 10, 1, 0.01] + [5, 100, 0, 1]
    labels = np.where(rows[:, 0] + rows[:, 1] / 10 > 15, "big", "small")
    return write_csv(folder / "t.csv", rows, COLUMNS, labels), rows


@pytest.fixture(scope="module")
def session(table, tmp_path_factory) -> Path:
    """A table session pruning its inputs 4 -> 2, tracked by TensorBoard (and MLflow)."""
    root = tmp_path_factory.mktemp("features")
    retain = root / "retain.txt"
    write_schedule([ScheduleRow(0, (8, 4), 100.0, 4), ScheduleRow(1, (8, 4), 87.5, 2)], retain)
    uri = None
    try:
        import mlflow  # noqa: F401
        import sqlalchemy  # noqa: F401
        uri = f"sqlite:///{root / 'mlflow.db'}"
    except ImportError:
        pass
    tb = root / "tb" if _has_tensorboard() else None
    tracker = make_tracker(uri, "features", root / "s", tb)
    run(PruneConfig(dataset=str(table[0]), target="kind", **FAST), root / "s", retain=retain,
        quiet=True, log=lambda line: None, tracker=tracker)
    return root / "s"


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def kept(session: Path) -> list[str]:
    path = session / "iterative_pruning" / "1" / "prune_w_retrain" / "features.txt"
    return path.read_text().splitlines()


def test_an_iteration_names_the_columns_its_model_reads(session):
    """features.txt lists the 2 kept columns, and summary.txt names them after the count."""
    names = kept(session)
    assert len(names) == 2 and set(names) <= set(COLUMNS)
    summary = (session / "iterative_pruning" / "1" / "prune_w_retrain" / "summary.txt")
    assert f"input features read: 2 of 4: {', '.join(names)}" in summary.read_text()
    base = session / "iterative_pruning" / "0" / "prune_w_retrain" / "features.txt"
    assert base.read_text().splitlines() == COLUMNS


def test_concatenate_writes_and_reports_the_kept_columns(session, capsys):
    """The results folder's features.txt has a tab-separated line per iteration, and the report
    names the recommended model's columns."""
    result = concatenate(session / "iterative_pruning")
    lines = (session / "iterative_pruning" / "prune_w_retrain_results" /
             "features.txt").read_text().splitlines()
    assert lines[0] == "Iteration\tFeatures\tColumns"
    assert lines[1] == "\t".join(["0", "4", *COLUMNS])
    assert lines[2] == "\t".join(["1", "2", *kept(session)])
    chosen = result.row(result.recommended).features
    assert f"reads {len(chosen)} input columns: {', '.join(chosen)}" in capsys.readouterr().out


def test_tensorboard_shows_the_kept_columns_as_text(session):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = session.parent / "tb" / "s" / "iteration-1"
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    [text] = events.Tensors("features_kept/text_summary")
    assert text.tensor_proto.string_val[0].decode() == f"2: {', '.join(kept(session))}"


def test_mlflow_tags_each_iteration_with_its_kept_columns(session):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{session.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("features")
    children = [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("iteration") == "1"]
    assert children[0].data.tags["features_kept"] == f"2: {', '.join(kept(session))}"


def bundle_of(session: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    write_bundle(session / "iterative_pruning" / "1" / "prune_w_retrain" / "best_model.pth",
                 out, onnx=False)
    return out


def test_a_table_bundle_predicts_a_csv_of_its_kept_columns_only(session, table, tmp_path,
                                                                capsys):
    """`deploy predict` on a CSV with only the kept columns (in another order, plus a column
    it ignores) prints what the model predicts from the full rows."""
    names, (_, rows) = kept(session), table
    bundle = bundle_of(session, tmp_path)
    model = deploy.load(bundle)
    want = deploy.predict(model, rows.astype(np.float64)).labels.tolist()
    picked = [COLUMNS.index(n) for n in names]
    order = list(reversed(names)) + ["unused"]
    values = np.column_stack([rows[:, picked][:, ::-1], np.zeros(len(rows))])
    csv = write_csv(tmp_path / "new.csv", values, order)
    assert deploy_run(deploy_main, ["predict", "--bundle", str(bundle), str(csv)]) == 0
    got = [line.rsplit(": ", 1)[1].split(" (")[0] for line in capsys.readouterr().out.split("\n")
           if line]
    assert got == [model.classes[k] for k in want]


def test_a_missing_kept_column_is_one_line_naming_it(session, table, tmp_path, capsys):
    names = kept(session)
    csv = write_csv(tmp_path / "new.csv", np.ones((3, 1)), [names[0]])
    assert deploy_run(deploy_main, ["predict", "--bundle", str(bundle_of(session, tmp_path)),
                                    str(csv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"no column {names[1]!r}, which the model reads" in err


def test_a_colour_bundle_predicts_rgb_files_as_evaluated(tmp_path, capsys):
    """A model trained on a 3-channel folder: `deploy predict` on its RGB test files (one of
    them 12x9, resized as in training) gives the predictions the engine's test split gives."""
    rgb_folder(tmp_path, 12, odd=lambda i: i == 1)
    retain = tmp_path / "retain.txt"
    write_schedule([ScheduleRow(0, (8, 4), 100.0)], retain)
    run(PruneConfig(dataset=str(tmp_path / "rgb"), **FAST), tmp_path / "s", retain=retain,
        quiet=True, log=lambda line: None)
    bundle = tmp_path / "bundle"
    write_bundle(tmp_path / "s" / "iterative_pruning" / "0" / "prune_w_retrain" /
                 "best_model.pth", bundle, onnx=False)
    model = deploy.load(bundle)
    data = load_dataset(tmp_path / "rgb")
    with torch.no_grad():
        want = model(data.test.x).argmax(1).tolist()
    files = [p for name in data.classes for p in sorted((tmp_path / "rgb" / "test" / name)
                                                        .iterdir(), key=lambda p: p.name)]
    assert deploy_run(deploy_main, ["predict", "--bundle", str(bundle),
                                    *map(str, files)]) == 0
    got = [line.rsplit(": ", 1)[1].split(" (")[0] for line in capsys.readouterr().out.split("\n")
           if line]
    assert got == [model.classes[k] for k in want]
