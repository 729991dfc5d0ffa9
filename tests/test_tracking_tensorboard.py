"""TensorBoard tracking of pruning sessions, end to end on the offline digits set (tiny MLP).

The event files are read back with TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from iaprune import cli
from iaprune.engine import IterativePruning
from iaprune.iterativeprune import main
from iaprune.records import read_epochs
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.tracking import (
    EPOCH_METRICS,
    ROW_METRICS,
    TB_MARKER,
    TensorBoardTracker,
    Trackers,
    make_tracker,
)

pytest.importorskip("tensorboard", reason="tensorboard is not installed")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

ROWS = [(16, 8), (12, 6), (8, 4)]
FAST = ["--dataset", "digits", "--hidden", "16", "8", "--epochs", "2", "--retrain-epochs", "1",
        "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder holding the schedule, the sessions and the TensorBoard folder `tb`."""
    root = tmp_path_factory.mktemp("tensorboard")
    total = sum(ROWS[0])
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / total) for t, r in enumerate(ROWS)],
                   root / "retain.txt")
    return root


def run(root: Path, session: str, *extra, tensorboard: bool = True) -> int:
    """Run the engine on session `session` (a fresh one gets the 3-row schedule)."""
    argv = [*FAST, "--session", root / session, *extra]
    if not (root / session / "config.json").exists():
        argv += ["--retain", root / "retain.txt"]
    if tensorboard:
        argv += ["--tensorboard", root / "tb"]
    return cli.run(main, [str(a) for a in argv])


def folder(root: Path, session: str, i: int) -> Path:
    return root / session / "iterative_pruning" / str(i) / "prune_w_retrain"


def results(root: Path, session: str, i: int) -> dict[str, str]:
    text = (folder(root, session, i) / "validation_results.txt").read_text()
    header, values = text.splitlines()[:2]
    return dict(zip(header.split(), values.split(), strict=True))


def events(run_dir: Path) -> EventAccumulator:
    """Everything TensorBoard reads from one run folder (no sampling)."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                                "tensors": 0})
    return accumulator.Reload()


def points(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """The (step, value) points of a scalar tag ([] when none was written: an iteration that
    needed no retraining epoch has no curves)."""
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def recording_scores():
    """Patch the engine so that every score it computes is recorded: {iteration: scores}."""
    original, seen = IterativePruning.scores, {}

    def scores(self, model, i):
        seen[i] = original(self, model, i)
        return seen[i]

    IterativePruning.scores = scores
    return original, seen


@pytest.fixture(scope="module")
def tracked(root):
    """Session 'a', run once with --tensorboard; the scores the engine computed."""
    original, seen = recording_scores()
    try:
        assert run(root, "a") == 0
    finally:
        IterativePruning.scores = original
    return seen


@pytest.fixture(scope="module")
def lifecycle(root, tracked):
    """Session 'c', a copy of 'a' up to iteration 1, tracked from iteration 2 on: interrupted in
    iteration 2 ("killed"), resumed ("resumed"), redone from 1 and interrupted in iteration 2
    ("redo_killed"), resumed ("redone"). {phase: ({run name: its events}, {i: scores})}."""
    shutil.copytree(root / "a", root / "c")
    shutil.rmtree(root / "c" / "iterative_pruning" / "2")
    phases, original_iteration = {}, IterativePruning.run_iteration
    steps = [("killed", (), 2), ("resumed", (), None), ("redo_killed", ("--begin-itr", "1"), 2),
             ("redone", (), None)]
    for phase, extra, interrupt_at in steps:
        original, scores = recording_scores()

        def run_iteration(self, i, interrupt_at=interrupt_at):
            if i == interrupt_at:
                raise KeyboardInterrupt
            return original_iteration(self, i)

        IterativePruning.run_iteration = run_iteration
        try:
            expected = 0 if interrupt_at is None else cli.EXIT_INTERRUPTED
            assert run(root, "c", *extra) == expected
        finally:
            IterativePruning.scores, IterativePruning.run_iteration = original, original_iteration
        runs = sorted(p for p in (root / "tb" / "c").iterdir() if p.is_dir())
        phases[phase] = {p.name: events(p) for p in runs}, dict(scores)
    return phases


# ------------------------------------------------------------------------------ what is written
def test_one_run_per_iteration_and_a_summary(root, tracked):
    """DIR/<session>/ holds iteration-0..2 (one event file each) and summary/."""
    runs = sorted(p.name for p in (root / "tb" / "a").iterdir() if p.is_dir())
    assert runs == ["iteration-0", "iteration-1", "iteration-2", "summary"]
    for name in runs:
        assert len(list((root / "tb" / "a" / name).glob("events.out.tfevents.*"))) == 1


def test_per_epoch_curves_match_train_results(root, tracked):
    """Each iteration's run has every train_results.txt column as a curve, step = epoch."""
    for i in range(len(ROWS)):
        accumulator = events(root / "tb" / "a" / f"iteration-{i}")
        epochs = read_epochs(folder(root, "a", i) / "train_results.txt")
        for column, tag in EPOCH_METRICS.items():
            assert points(accumulator, tag) == \
                [(int(e["Epoch"]), pytest.approx(e[column])) for e in epochs]


def test_summary_has_one_point_per_iteration(root, tracked):
    """summary/ holds each iteration's accuracy, % retained, params and MACs at step = i."""
    accumulator = events(root / "tb" / "a" / "summary")
    rows = [results(root, "a", i) for i in range(len(ROWS))]
    for column in ("Test_Accuracy", "Val_Accuracy", "NoRetrain_Test_Accuracy",
                   "PercentageRetain", "Params", "MACs"):
        assert points(accumulator, f"pruning/{ROW_METRICS[column]}") == \
            [(i, pytest.approx(float(row[column]), abs=1e-3)) for i, row in enumerate(rows)]
    assert [v for _, v in points(accumulator, "pruning/percent_retained")] == \
        pytest.approx([100 * sum(r) / 24 for r in ROWS], abs=0.01)


def test_hparams_session_per_iteration(root, tracked):
    """Each iteration is an HParams session: % retained, hidden, params and MACs against the
    kept model's final metrics (TensorBoard's accuracy-vs-% retained scatter plot)."""
    for i, (h1, h2) in enumerate(ROWS):
        accumulator = events(root / "tb" / "a" / f"iteration-{i}")
        content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        row = results(root, "a", i)
        assert hparams["hidden"].string_value == f"{h1}-{h2}"
        assert hparams["percent_retained"].number_value == pytest.approx(100 * (h1 + h2) / 24,
                                                                         abs=0.01)
        assert (hparams["params"].number_value, hparams["macs"].number_value) == \
            (int(row["Params"]), int(row["MACs"]))
        assert points(accumulator, "final/test_accuracy") == \
            [(i, pytest.approx(float(row["Test_Accuracy"]), abs=1e-3))]


def test_significance_histograms_are_the_engine_scores(root, tracked):
    """Iterations 1 and 2 carry one histogram per hidden layer of the scores they pruned by
    (count, min, max and sum equal the engine's); the base model has none."""
    assert events(root / "tb" / "a" / "iteration-0").Tags()["histograms"] == []
    assert sorted(tracked) == [1, 2]
    for i, scores in tracked.items():
        accumulator = events(root / "tb" / "a" / f"iteration-{i}")
        assert sorted(accumulator.Tags()["histograms"]) == ["significance/h1", "significance/h2"]
        for layer, values in enumerate(scores, start=1):
            (event,) = accumulator.Histograms(f"significance/h{layer}")
            h = event.histogram_value
            assert event.step == i and h.num == len(values) == ROWS[i - 1][layer - 1]
            assert (h.min, h.max, h.sum) == pytest.approx(
                (values.min().item(), values.max().item(), values.sum().item()), rel=1e-5)


# ------------------------------------------------------------------------------ resume and redo
def test_iterations_run_untracked_are_backfilled_without_histograms(lifecycle):
    """Interrupted in iteration 2, the first tracked run has logged 0 and 1 from their folders
    (curves, summary; no histograms: scores are not saved) and nothing of iteration 2."""
    runs, _ = lifecycle["killed"]
    assert sorted(runs) == ["iteration-0", "iteration-1", "summary"]
    assert runs["iteration-1"].Tags()["histograms"] == []
    assert len(points(runs["iteration-0"], "epoch/val_loss")) >= 1  # the base model's curves
    assert [s for s, _ in points(runs["summary"], "pruning/test_accuracy")] == [0, 1]


def test_resumed_run_adds_only_the_new_iteration(lifecycle):
    """Resuming logs iteration 2 (with its histograms) and leaves 0 and 1 as they were."""
    runs, scores = lifecycle["resumed"]
    killed, _ = lifecycle["killed"]
    assert sorted(runs) == ["iteration-0", "iteration-1", "iteration-2", "summary"]
    assert sorted(scores) == [2] and len(runs["iteration-2"].Histograms("significance/h1")) == 1
    for i in (0, 1):
        assert points(runs[f"iteration-{i}"], "epoch/val_loss") == \
            points(killed[f"iteration-{i}"], "epoch/val_loss")
    assert [s for s, _ in points(runs["summary"], "pruning/test_accuracy")] == [0, 1, 2]


def test_redo_drops_the_runs_of_later_iterations(lifecycle):
    """Once a redo has rewritten iteration 1, iteration 2's old run is gone (the engine removed
    its folder), even when the redo is interrupted before iteration 2 is done again."""
    runs, scores = lifecycle["redo_killed"]
    assert sorted(runs) == ["iteration-0", "iteration-1", "summary"]
    assert sorted(scores) == [1] and len(runs["iteration-1"].Histograms("significance/h1")) == 1
    assert [s for s, _ in points(runs["summary"], "pruning/test_accuracy")] == [0, 1]


def test_redo_replaces_the_redone_iterations_without_duplicates(root, lifecycle):
    """After a redo from 1 (interrupted, then resumed), every run holds each step once,
    iterations 1 and 2 carry the redo's curves and histograms, and the summary equals the
    session's current results."""
    runs, scores = lifecycle["redone"]
    scores = {**lifecycle["redo_killed"][1], **scores}
    assert sorted(runs) == ["iteration-0", "iteration-1", "iteration-2", "summary"]
    for accumulator in runs.values():
        for tag in accumulator.Tags()["scalars"]:
            steps = [s for s, _ in points(accumulator, tag)]
            assert steps == sorted(set(steps)), tag
    for i in (1, 2):
        epochs = read_epochs(folder(root, "c", i) / "train_results.txt")
        assert points(runs[f"iteration-{i}"], "epoch/val_loss") == \
            [(int(e["Epoch"]), pytest.approx(e["ValLoss"])) for e in epochs]
        (event,) = runs[f"iteration-{i}"].Histograms("significance/h1")
        assert event.histogram_value.sum == pytest.approx(scores[i][0].sum().item(), rel=1e-5)
    assert points(runs["summary"], "pruning/test_accuracy") == \
        [(i, pytest.approx(float(results(root, "c", i)["Test_Accuracy"]), abs=1e-3))
         for i in range(len(ROWS))]


def test_complete_session_is_caught_up_without_training(root, tracked):
    """Re-running a complete session with --tensorboard logs it all from its folders."""
    shutil.copytree(root / "a", root / "d")
    assert run(root, "d") == 0
    runs = sorted(p.name for p in (root / "tb" / "d").iterdir() if p.is_dir())
    assert runs == ["iteration-0", "iteration-1", "iteration-2", "summary"]
    assert events(root / "tb" / "d" / "iteration-1").Tags()["histograms"] == []


def test_iteration_redone_while_untracked_is_logged_again(root, tracked):
    """Runs of iterations redone without --tensorboard are replaced from the folders when
    tracking starts again, and runs of iterations the session no longer has are dropped."""
    shutil.copytree(root / "a", root / "e")
    assert run(root, "e") == 0
    # as if iteration 1 had been redone untracked and the run had stopped there
    shutil.rmtree(root / "e" / "iterative_pruning" / "2")
    (folder(root, "e", 1) / "train_results.txt").write_text(
        "Epoch TrainLoss TrainAccuracy ValLoss ValAccuracy TestLoss TestAccuracy Seconds\n"
        "1 9 9 9 9 9 9 9\n")
    tracker = make_tracker(None, None, root / "e", root / "tb")
    config = json.loads((root / "e" / "config.json").read_text())
    tracker.start(root / "e" / "config.json", config, 2)
    tb = root / "tb" / "e"
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == \
        ["iteration-0", "iteration-1", "summary"]
    assert points(events(tb / "iteration-1"), "epoch/val_loss") == [(1, 9.0)]
    assert [s for s, _ in points(events(tb / "summary"), "pruning/test_accuracy")] == [0, 1]


# ------------------------------------------------------------------------------ choosing trackers
# MLflow 3.17's store uses an SQLAlchemy 2.1 deprecated loader option; not ours to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.store")
def test_both_trackers_at_once(root, tracked):
    """--mlflow and --tensorboard together: one MLflow child and one TensorBoard run per
    iteration."""
    pytest.importorskip("mlflow", reason="mlflow-skinny is not installed")
    pytest.importorskip("sqlalchemy", reason="the sqlite store needs SQLAlchemy")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert isinstance(make_tracker(uri, None, root / "b", root / "tb"), Trackers)
    assert run(root, "b", "--mlflow", uri) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("b")
    children = [r for r in client.search_runs([experiment.experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.tags["iteration"]) for r in children) == [0, 1, 2]
    runs = sorted(p.name for p in (root / "tb" / "b").iterdir() if p.is_dir())
    assert runs == ["iteration-0", "iteration-1", "iteration-2", "summary"]


def test_missing_tensorboard_is_a_one_line_error_with_the_pip_command(tmp_path, monkeypatch,
                                                                       capsys):
    """Without the tensorboard package, --tensorboard is one `error:` line naming what to
    install, before anything is written."""
    for name in [m for m in sys.modules if "tensorboard" in m.split(".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    argv = [*FAST, "--session", str(tmp_path / "s"), "--tensorboard", str(tmp_path / "tb")]
    assert cli.run(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tensorboard needs TensorBoard") and "\n" not in err
    assert "pip install tensorboard==" in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "tb").exists()


def test_dir_that_is_a_file_is_refused(tmp_path):
    """--tensorboard naming a file is an error."""
    (tmp_path / "tb").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        make_tracker(None, None, tmp_path / "s", tmp_path / "tb")


def test_folder_of_another_session_with_the_same_name_is_refused(tmp_path):
    """Two existing sessions named alike cannot share DIR/<name>/ (neither would be right)."""
    for session in (tmp_path / "x" / "s", tmp_path / "y" / "s"):
        session.mkdir(parents=True)
        (session / "config.json").write_text("{}")
    (tmp_path / "tb" / "s").mkdir(parents=True)
    (tmp_path / "tb" / "s" / TB_MARKER).write_text(json.dumps({"session": str(tmp_path / "x" /
                                                                              "s")}))
    assert isinstance(make_tracker(None, None, tmp_path / "x" / "s", tmp_path / "tb"),
                      TensorBoardTracker)
    with pytest.raises(ValueError, match="holds the runs of session"):
        make_tracker(None, None, tmp_path / "y" / "s", tmp_path / "tb")


def test_foreign_folder_is_never_overwritten(tmp_path):
    """A non-empty DIR/<name>/ that IA-Prune did not write is refused, not cleared."""
    (tmp_path / "tb" / "s" / "summary").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no IA-Prune session"):
        make_tracker(None, None, tmp_path / "s", tmp_path / "tb")
    assert (tmp_path / "tb" / "s" / "summary").is_dir()

