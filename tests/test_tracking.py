"""MLflow tracking of pruning sessions, end to end on the offline digits set (tiny MLP).

The sessions share one temporary sqlite store; each gets its own experiment (its folder name).
"""

from __future__ import annotations

import ast
import http.server
import importlib.util
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from iaprune import cli
from iaprune.config import PruneConfig, flat
from iaprune.engine import IterativePruning
from iaprune.iterativeprune import main
from iaprune.records import read_epochs
from iaprune.retain import ScheduleRow, write_schedule
from iaprune.tracking import (
    EPOCH_METRICS,
    ROW_METRICS,
    SERVER_TIMEOUT,
    MlflowTracker,
    NullTracker,
    check_server,
    default_uri,
    make_tracker,
)

pytest.importorskip("mlflow", reason="mlflow-skinny is not installed")
pytest.importorskip("sqlalchemy", reason="the sqlite store needs SQLAlchemy")
# MLflow 3.17's store uses an SQLAlchemy 2.1 deprecated loader option; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.store")
from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

ROWS = [(16, 8), (12, 6), (8, 4)]
FAST = ["--dataset", "digits", "--hidden", "16", "8", "--epochs", "2", "--retrain-epochs", "1",
        "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder holding the store, the schedule and the sessions of this module."""
    root = tmp_path_factory.mktemp("tracking")
    total = sum(ROWS[0])
    write_schedule([ScheduleRow(t, r, 100 * sum(r) / total) for t, r in enumerate(ROWS)],
                   root / "retain.txt")
    return root


@pytest.fixture(scope="module")
def uri(root) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(uri) -> MlflowClient:
    return MlflowClient(uri)


def run(root: Path, uri: str | None, session: str, *extra) -> int:
    """Run the engine on session `session` (a fresh one gets the 3-row schedule)."""
    argv = [*FAST, "--session", root / session, *extra]
    if not (root / session / "config.json").exists() and "--retain" not in extra:
        argv += ["--retain", root / "retain.txt"]
    if uri is not None:
        argv += ["--mlflow", uri]
    return cli.run(main, [str(a) for a in argv])


def runs(client: MlflowClient, experiment: str, view=ViewType.ACTIVE_ONLY) -> list:
    """Every run of `experiment`, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], run_view_type=view,
                              order_by=["attributes.start_time ASC"])


def split(all_runs: list) -> tuple[list, dict[int, list]]:
    """(parent runs, {iteration: child runs})."""
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children: dict[int, list] = {}
    for r in all_runs:
        if "mlflow.parentRunId" in r.data.tags:
            children.setdefault(int(r.data.tags["iteration"]), []).append(r)
    return parents, children


def folder(root: Path, session: str, i: int) -> Path:
    return root / session / "iterative_pruning" / str(i) / "prune_w_retrain"


@pytest.fixture(scope="module")
def tracked(root, uri, client):
    """Session 'a': one complete tracked run; (parent, {iteration: child})."""
    assert run(root, uri, "a") == 0
    parents, children = split(runs(client, "a"))
    assert len(parents) == 1
    return parents[0], {i: c[0] for i, c in children.items()}


@pytest.fixture(scope="module")
def lifecycle(root, uri, client, tracked):
    """Session 'c', a copy of 'a' up to iteration 1 without its run id, tracked from iteration 2
    on: interrupted in iteration 2, resumed, then redone from 1. {phase: (parent id, runs)}."""
    shutil.copytree(root / "a", root / "c")
    shutil.rmtree(root / "c" / "iterative_pruning" / "2")
    config = json.loads((root / "c" / "config.json").read_text())
    del config["mlflow_run_id"]
    (root / "c" / "config.json").write_text(json.dumps(config))
    original, phases = IterativePruning.run_iteration, {}

    def interrupt(self, i):
        raise KeyboardInterrupt

    def snapshot(phase: str) -> None:
        parent_id = json.loads((root / "c" / "config.json").read_text())["mlflow_run_id"]
        phases[phase] = parent_id, runs(client, "c", ViewType.ALL)

    IterativePruning.run_iteration = interrupt
    try:
        assert run(root, uri, "c") == cli.EXIT_INTERRUPTED
    finally:
        IterativePruning.run_iteration = original
    snapshot("killed")
    assert run(root, uri, "c") == 0
    snapshot("resumed")
    assert run(root, uri, "c", "--begin-itr", "1") == 0
    snapshot("redone")
    return phases


def active(all_runs: list) -> list:
    return [r for r in all_runs if r.info.lifecycle_stage == "active"]


# ------------------------------------------------------------------------------ structure
def test_one_parent_with_one_child_per_iteration(tracked):
    """A tracked session is one finished parent run with a finished child run per iteration."""
    parent, children = tracked
    assert parent.info.status == "FINISHED"
    assert sorted(children) == [0, 1, 2]
    for i, child in children.items():
        assert child.info.run_name == f"iteration-{i}"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"


def test_parent_id_is_kept_in_the_session_config(root, tracked):
    """config.json records the parent run's id (what a resumed run attaches to)."""
    parent, _ = tracked
    assert json.loads((root / "a" / "config.json").read_text())["mlflow_run_id"] == \
        parent.info.run_id


def test_parent_logs_the_config_and_base_metrics(root, tracked):
    """The parent's params are the session's settings; base_* are iteration 0's metrics."""
    parent, children = tracked
    config = flat(PruneConfig.from_json(json.loads((root / "a" / "config.json").read_text()),
                                        "config.json"))
    for key in ("dataset", "hidden", "criterion", "epochs", "retrain_epochs", "seed"):
        assert parent.data.params[key] == str(config[key])
    for name in ROW_METRICS.values():
        assert parent.data.metrics[f"base_{name}"] == children[0].data.metrics[name]


def test_child_params_describe_the_pruned_network(tracked):
    """Each child has its neurons per layer, % retained and the criterion as params."""
    _, children = tracked
    for i, (h1, h2) in enumerate(ROWS):
        params = children[i].data.params
        assert (params["hidden"], params["h1"], params["h2"]) == (f"{h1}-{h2}", str(h1), str(h2))
        assert float(params["percent_retained"]) == pytest.approx(100 * (h1 + h2) / 24, abs=0.01)
        assert params["criterion"] == "interval_adjoint" and params["iteration"] == str(i)


def test_child_params_name_the_inputs_read_when_the_inputs_are_pruned(root, uri, client):
    """With the input column in the schedule, each child also has `inputs` (the features read)
    beside h1, h2, and `hidden` is the label written in validation_results.txt."""
    rows = [(64, 16, 8), (40, 12, 6)]
    write_schedule([ScheduleRow(t, r[1:], 100 * sum(r) / sum(rows[0]), r[0])
                    for t, r in enumerate(rows)], root / "retain_inputs.txt")
    assert run(root, uri, "inputs", "--retain", root / "retain_inputs.txt") == 0
    _, children = split(runs(client, "inputs"))
    params = children[1][0].data.params
    assert (params["hidden"], params["inputs"], params["h1"], params["h2"]) == (
        "40:12-6", "40", "12", "6")


def test_child_metrics_match_the_iteration_files(root, tracked):
    """Final metrics, accuracy before retraining, params and MACs equal validation_results.txt."""
    _, children = tracked
    for i, child in children.items():
        text = (folder(root, "a", i) / "validation_results.txt").read_text()
        header, values = text.splitlines()[:2]
        row = dict(zip(header.split(), values.split(), strict=True))
        metrics = child.data.metrics
        assert set(ROW_METRICS.values()) <= set(metrics)
        for column in ("Test_Accuracy", "Val_Accuracy", "NoRetrain_Test_Accuracy", "Train_Loss"):
            assert metrics[ROW_METRICS[column]] == pytest.approx(float(row[column]), abs=1e-3)
        assert (metrics["params"], metrics["macs"]) == (float(row["Params"]), float(row["MACs"]))


def test_per_epoch_history_has_the_epoch_as_step(root, client, tracked):
    """Every train_results.txt column is a metric history with one point per epoch."""
    _, children = tracked
    for i, child in children.items():
        epochs = read_epochs(folder(root, "a", i) / "train_results.txt")
        for column, name in EPOCH_METRICS.items():
            history = client.get_metric_history(child.info.run_id, name)
            assert [(m.step, m.value) for m in history] == \
                [(int(e["Epoch"]), pytest.approx(e[column])) for e in epochs]


def test_artifacts_are_logged(root, client, tracked, tmp_path):
    """Children carry summary.txt and best_model.pth; the parent the results table and plots."""
    parent, children = tracked
    for i, child in children.items():
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"summary.txt", "best_model.pth", "train_results.txt"} <= names
        local = client.download_artifacts(child.info.run_id, "best_model.pth", str(tmp_path))
        assert Path(local).read_bytes() == (folder(root, "a", i) / "best_model.pth").read_bytes()
    results = {a.path for a in client.list_artifacts(parent.info.run_id, "results")}
    assert {"results/validations.txt", "results/accuracies.png", "results/losses.png"} <= results
    session = {a.path for a in client.list_artifacts(parent.info.run_id, "session")}
    assert {"session/config.json", "session/retain.txt"} <= session


def test_local_sqlite_store_keeps_artifacts_beside_it(root, tracked):
    """With a sqlite store the artifacts go to mlartifacts/ beside the database, not the cwd."""
    parent, _ = tracked
    assert parent.info.artifact_uri.startswith((root / "mlartifacts").as_uri())


# ------------------------------------------------------------------------------ resume and redo
def test_interrupt_marks_the_parent_killed(lifecycle):
    """Ctrl+C closes the parent run as KILLED, keeping the children already complete."""
    parent_id, all_runs = lifecycle["killed"]
    (parent,), children = split(active(all_runs))
    assert parent.info.run_id == parent_id and parent.info.status == "KILLED"
    assert sorted(children) == [0, 1]


def test_iterations_run_untracked_are_logged_when_tracking_starts(client, lifecycle, tracked):
    """Iterations completed before tracking began get children logged from their folders."""
    _, all_runs = lifecycle["killed"]
    (parent,), children = split(active(all_runs))
    assert [children[i][0].data.tags.get("backfilled") for i in (0, 1)] == ["true", "true"]
    for i in (0, 1):
        assert children[i][0].data.metrics["test_accuracy"] == \
            pytest.approx(tracked[1][i].data.metrics["test_accuracy"], abs=1e-3)
        names = {a.path for a in client.list_artifacts(children[i][0].info.run_id)}
        assert {"summary.txt", "best_model.pth"} <= names
    assert parent.data.metrics["base_test_accuracy"] == \
        pytest.approx(tracked[0].data.metrics["base_test_accuracy"], abs=1e-3)


def test_resumed_run_finishes_the_same_parent(lifecycle):
    """Resuming after Ctrl+C logs into the same parent, adding only the new iteration."""
    parent_id, all_runs = lifecycle["resumed"]
    assert parent_id == lifecycle["killed"][0]
    (parent,), children = split(all_runs)
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert {i: len(c) for i, c in children.items()} == {0: 1, 1: 1, 2: 1}
    assert children[2][0].data.tags.get("backfilled") is None


def test_redo_keeps_one_parent(lifecycle):
    """A --begin-itr redo logs into the parent the session already has."""
    parent_id, all_runs = lifecycle["redone"]
    parents, _ = split(all_runs)
    assert parent_id == lifecycle["killed"][0]
    assert [p.info.run_id for p in parents] == [parent_id]
    assert parents[0].info.status == "FINISHED"


def test_redo_supersedes_the_old_children(lifecycle):
    """Redoing from iteration 1 leaves one active child per iteration; the old ones of 1 and 2
    are deleted and tagged with the run that replaced them; iteration 0's is kept."""
    _, all_runs = lifecycle["redone"]
    _, children = split(all_runs)
    now = {i: active(cs) for i, cs in children.items()}
    assert {i: len(cs) for i, cs in now.items()} == {0: 1, 1: 1, 2: 1}
    assert len(children[0]) == 1
    for i in (1, 2):
        (old,) = [c for c in children[i] if c.info.lifecycle_stage == "deleted"]
        assert old.data.tags["superseded_by"] == now[1][0].info.run_id


def test_unknown_parent_run_is_a_one_line_error(tmp_path, uri):
    """A config.json naming a run the store lacks is refused (no second parent is made)."""
    config = tmp_path / "s" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"mode": "iterative", "criterion": "magnitude",
                                  "mlflow_run_id": "0" * 32}))
    tracker = make_tracker(uri, None, tmp_path / "s")
    with pytest.raises(ValueError, match="does not have"):
        tracker.start(config, {"mode": "iterative", "criterion": "magnitude"}, 0)


def test_other_experiment_on_resume_is_refused(root, uri, tracked):
    """Resuming a tracked session under another --mlflow-experiment is an error."""
    tracker = make_tracker(uri, "elsewhere", root / "a")
    config = json.loads((root / "a" / "config.json").read_text())
    with pytest.raises(ValueError, match="tracked in experiment 'a'"):
        tracker.start(root / "a" / "config.json", config, 3)


# ------------------------------------------------------------------------------ choosing a store
def test_without_mlflow_flag_nothing_is_tracked(tmp_path):
    """No --mlflow (uri None) gives the NullTracker."""
    assert isinstance(make_tracker(None, None, tmp_path), NullTracker)


def test_default_store_is_sqlite_beside_the_session(tmp_path):
    """--mlflow without a URI means sqlite mlflow.db in the folder holding the session."""
    assert default_uri(tmp_path / "sessions" / "s") == \
        f"sqlite:///{(tmp_path / 'sessions' / 'mlflow.db').as_posix()}"


def test_empty_uri_opens_the_default_store(root, client):
    """make_tracker("") opens that default store; the experiment is the session's name."""
    tracker = make_tracker("", None, root / "s")
    assert isinstance(tracker, MlflowTracker)
    assert tracker.uri == default_uri(root / "s") == f"sqlite:///{root / 'mlflow.db'}"
    assert tracker.experiment == "s"


def test_missing_mlflow_gives_an_install_hint(tmp_path, monkeypatch, capsys):
    """Without MLflow installed, --mlflow is one `error:` line saying what to pip install."""
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ValueError, match="pip install mlflow-skinny"):
        make_tracker("", None, tmp_path / "s")
    assert cli.run(main, [*FAST, "--session", str(tmp_path / "s"), "--mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mlflow needs MLflow") and "\n" not in err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_sqlite_store_without_sqlalchemy_says_what_to_install(tmp_path, monkeypatch):
    """A sqlite URI without SQLAlchemy/alembic names the missing packages."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "alembic" else real(name, *a))
    with pytest.raises(ValueError, match="needs alembic: pip install"):
        make_tracker(f"sqlite:///{tmp_path / 'x.db'}", None, tmp_path / "s")


@pytest.mark.parametrize("package", ["mlflow", "tensorboard"])
def test_only_the_tracking_module_imports_trackers_and_only_inside_functions(package):
    """No module of the project imports MLflow or TensorBoard (also via torch.utils.tensorboard)
    at import time; iaprune/tracking.py (sessions) and iaprune/study/cli.py (studies, MLflow)
    alone use them."""
    repo = Path(__file__).parents[1]
    for path in [*repo.glob("src/iaprune/**/*.py"), *repo.glob("src/iaprune_runtime/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = {(node, name) for node in ast.walk(tree)
                   for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                                else [node.module or ""] if isinstance(node, ast.ImportFrom)
                                else [])}
        using = [node for node, name in imports if package in name.split(".")]
        assert not using or path.relative_to(repo / "src" / "iaprune").as_posix() in (
            "tracking.py", "study/cli.py"), path
        assert not [node for node in using if node in tree.body], path


# ------------------------------------------------------------------------------ unreachable server
def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_against(tmp_path: Path, url: str, capsys) -> tuple[int, str, float]:
    """Start a fresh session tracked at `url`: (exit code, stderr, seconds)."""
    started = time.perf_counter()
    code = cli.run(main, [*FAST, "--session", str(tmp_path / "s"), "--mlflow", url])
    return code, capsys.readouterr().err.strip(), time.perf_counter() - started


def test_closed_port_fails_at_once_with_how_to_start_a_server(tmp_path, capsys):
    """--mlflow at a port nothing listens on is one `error:` line within seconds (MLflow's
    client alone retries for about 4 minutes) that says how to start a server or use the local
    store, and nothing is written."""
    port = closed_port()
    code, err, seconds = run_against(tmp_path, f"http://127.0.0.1:{port}", capsys)
    assert code == 2 and seconds < 30  # without the check: about 4 minutes of retries
    assert err.startswith(f"error: --mlflow http://127.0.0.1:{port}: no MLflow server") and \
        "\n" not in err
    assert f"mlflow server --host 127.0.0.1 --port {port}" in err
    assert "--mlflow without a URI" in err
    assert not (tmp_path / "s").exists()


def test_server_that_never_answers_fails_within_seconds(tmp_path, capsys):
    """A server that accepts connections but never replies is refused after SERVER_TIMEOUT
    seconds (a few), not after MLflow's minutes of retries."""
    assert SERVER_TIMEOUT <= 10
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code, err, seconds = run_against(tmp_path, url, capsys)
    assert code == 2 and SERVER_TIMEOUT <= seconds < 30  # without the check: minutes
    assert err.startswith(f"error: --mlflow {url}: no MLflow server answers there") and \
        f"(no answer within {SERVER_TIMEOUT:g} s)" in err and "\n" not in err
    assert not (tmp_path / "s").exists()


def test_any_http_answer_counts_as_a_server(tmp_path):
    """A server that answers, even with an error status, passes the check (MLflow then reports
    what is wrong); only silence or a refused connection is refused early."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler API's name
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_server(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="no MLflow server"):
        check_server(f"http://127.0.0.1:{closed_port()}")
    check_server("sqlite:///x.db")  # only http(s) stores are servers
