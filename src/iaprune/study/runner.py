"""How a study's cells run: each cell one engine session, run (or resumed) by a process that
holds its lock, on one thread, its output appended to its log; all of them one after another
in this process or as Ray tasks on a local Ray or a Ray cluster, with one progress bar.

Used by iaprune.study.cli (the grid) and iaprune.study.search (the search's base models and
reference; its trials run through the same sequential runner and progress bar).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from iaprune import __version__
from iaprune.checkpoint import atomic_write
from iaprune.config import dumps
from iaprune.engine import read_config, run
from iaprune.files import LockHeld, holding  # noqa: F401 (re-exported: study.search)
from iaprune.records import CONFIG_FILE, RETAIN_FILE
from iaprune.retain import write_schedule
from iaprune.session import check_session_folder
from iaprune.study.grid import ROOT, Cell, StudyError, cell_done, check_cached

RAY_INSTALL = "pip install ray==2.60.0"


# ----------------------------------------------------------------------------------- one cell
def run_cell(cell: Cell, data_root: str | None, log: Callable[[str], None]) -> None:
    """Run (or resume) the cell's session with the engine: the study's one call into it."""
    if not cell.session.config.is_file():
        start_session(cell)
    # The session's own settings and schedule (check_cached fitted it): run() resumes it. Its
    # stop rule is the cell's (a search asks for another accuracy drop than an earlier one).
    saved = replace(read_config(cell.session),
                    max_accuracy_drop=cell.config.max_accuracy_drop)
    # gather=False: the study reads the iterations' results; each cell's tables and plots
    # would cost more than a small cell's pruning (iaprune concatenate writes them later)
    run(saved, cell.root, data_root=data_root, quiet=True, log=log, gather=False)


def start_session(cell: Cell) -> None:
    """Create the cell's session folder with its config.json and schedule in one rename.

    A worker killed at any moment of the start leaves no folder that looks like a session
    (only a staging folder, which the next start replaces).
    """
    check_session_folder(cell.root)  # absent or empty: anything else is not the study's
    staging = cell.root.with_name(cell.root.name + ".start")
    shutil.rmtree(staging, ignore_errors=True)
    write_schedule(list(cell.schedule), staging / RETAIN_FILE)
    atomic_write(staging / CONFIG_FILE, dumps(cell.config, version=__version__))
    if cell.root.is_dir():
        cell.root.rmdir()
    staging.rename(cell.root)


@dataclass(frozen=True)
class Outcome:
    """What running a cell did."""

    ran: bool  # False: it was complete already (another runner finished it)
    seconds: float


def is_running(cell: Cell) -> bool:
    """Whether some process holds the cell's lock now."""
    try:
        with open(cell.lock, encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return False


def execute(cell: Cell, data_root: str | None,
            on_line: Callable[[str], None] = lambda line: None) -> Outcome:
    """Run one cell in this process on one thread, its output appended to its log file."""
    started, threads = time.perf_counter(), torch.get_num_threads()
    buffer = io.StringIO()
    ran = False

    def log(line: str) -> None:
        print(line, file=buffer)
        on_line(line)

    try:
        torch.set_num_threads(1)  # one cell per core; the same numbers as any other run
        with holding(cell.lock), contextlib.redirect_stdout(buffer), \
                contextlib.redirect_stderr(buffer):
            ran = not cell_done(cell)  # another runner may have finished it meanwhile
            if ran:
                run_cell(cell, data_root, log)
    except BaseException:
        buffer.write(traceback.format_exc())
        raise
    finally:
        torch.set_num_threads(threads)
        if ran or buffer.getvalue():
            previous = cell.log.read_text() if cell.log.is_file() else ""
            atomic_write(cell.log, f"{previous}$ {cell.label} on {socket.gethostname()} pid "
                                   f"{os.getpid()}\n{buffer.getvalue()}\n")
    return Outcome(ran, time.perf_counter() - started)


def _ray_task(cell: Cell, data_root: str | None, *bases: Outcome) -> Outcome:
    """A cell as a Ray task; `bases` (its base model's outcome) only orders it after its base."""
    return execute(cell, data_root)


def first_line(exc: BaseException) -> str:
    """'ValueError: the first line of its message'."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ----------------------------------------------------------------------------------- progress
class Progress:
    """One bar over a study's cells or a search's trials (done / running / failed, time left,
    and a `note` such as the best so far); one line per finished or failed item, printed
    through the bar, or plainly when stderr is not a terminal."""

    def __init__(self, what: str, unit: str, total: int, done: int,
                 echo: Callable[[str], None] = print):
        self.total, self.done, self.failed, self.running, self.echo = total, done, 0, 0, echo
        self.partial = 0.0  # the running items' share complete
        self.note = ""  # appended to the status, e.g. ", best 1,234 params"
        self.bar = tqdm(total=total, initial=done, unit=unit, smoothing=0,
                        dynamic_ncols=True, disable=not sys.stderr.isatty(),
                        bar_format=f"{what}: {{percentage:3.0f}}%|{{bar}}| {{desc}} "
                                   "[{elapsed}, {remaining} left]")
        self.update()

    def status(self) -> str:
        return f"done {self.done}/{self.total}, running {self.running}, failed " \
               f"{self.failed}{self.note}"

    def update(self, running: int | None = None, partial: float | None = None) -> None:
        """Redraw, with `running` items now, `partial` of them complete (kept when None)."""
        self.running = self.running if running is None else running
        self.partial = self.partial if partial is None else partial
        self.bar.n = min(self.total, self.done + self.failed + self.partial)
        self.bar.set_description_str(self.status(), refresh=False)
        self.bar.refresh()

    def line(self, text: str) -> None:
        if self.bar.disable:
            self.echo(text)
        else:
            self.bar.write(text)

    def started(self) -> None:
        self.update(self.running + 1, 0.0)

    def finished(self, text: str) -> None:
        """One more done: its line is `text` after the count."""
        self.done += 1
        self.line(f"[{self.done + self.failed:>3}/{self.total}] {text}")
        self.update(max(0, self.running - 1), 0.0)

    def fail(self, text: str) -> None:
        """One more failed: its line is FAILED `text` after the count."""
        self.failed += 1
        self.line(f"[{self.done + self.failed:>3}/{self.total}] FAILED {text}")
        self.update(max(0, self.running - 1), 0.0)

    def close(self) -> None:
        self.bar.close()


def cells_progress(total: int, cached: int) -> Progress:
    """The bar over a grid's (or a search's first) cells."""
    return Progress("study", "cell", total, cached)


def share_complete(cells: Sequence[Cell]) -> float:
    """How much of `cells` is complete: each the share of its rows (+1: its end)."""
    return sum(max(0, c.session.last_complete() + 1) / (c.rows + 1) for c in cells)


def cell_line(cell: Cell, outcome: Outcome) -> str:
    what = "ran" if outcome.ran else "cached"
    return f"{what:<6} {cell.label:<48} {cell.rows:>2} rows {outcome.seconds:7.1f}s"


def cell_failure(cell: Cell, why: str) -> str:
    return f"{cell.label}: {why} (log: {cell.log})"


# ----------------------------------------------------------------------------------- in turn
@dataclass(frozen=True)
class Job:
    """One item for `run_in_turn`: a study's cell or a search's trial."""

    key: Hashable  # names it in the failures
    run: Callable[[], str]  # does the work; returns its line for the progress
    failure: Callable[[str], str]  # the FAILED line for a reason (and anything to tell first)
    after: Hashable | None = None  # a job that must not have failed (a cell's base model)
    done: Callable[[], None] = lambda: None  # after its line (not a failure of the job)


def run_in_turn(jobs: Iterable[Job], progress: Progress) -> dict[Hashable, str]:
    """Run `jobs` one after another in this process (a lazy iterable: a search asks for the
    next trial only when the last one is done). A job that fails, or whose `after` failed, is
    a FAILED line and the others go on. Returns {key: why it failed}."""
    failures: dict[Hashable, str] = {}
    for job in jobs:
        if job.after is not None and job.after in failures:
            failures[job.key] = "its base model failed"
            progress.fail(job.failure(failures[job.key]))
            continue
        progress.started()
        try:
            line = job.run()
        except Exception as exc:  # noqa: BLE001 - one failed job does not stop the others
            failures[job.key] = first_line(exc)
            progress.fail(job.failure(failures[job.key]))
        else:
            progress.finished(line)
            job.done()
    progress.update(0, 0.0)
    return failures


# ----------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Runner:
    """How the cells run; not part of the grid (every choice gives the same numbers)."""

    workers: int | None = None  # local Ray with this many CPUs (None: all); 0: in-process, no Ray
    address: str | None = None  # a Ray cluster ('auto', 'ray://HOST:10001'); None: a local Ray
    max_retries: int = 3  # times a cell whose worker died is run again (Ray)
    data_root: str | None = None  # folder holding MNIST/raw/ (None: $IAPRUNE_DATA, else data/)

    def __post_init__(self):
        if self.workers is not None and self.workers < 0:
            raise StudyError(f"--workers must be >= 0 (0: sequential), got {self.workers}")
        if self.address is not None and self.workers is not None:
            raise StudyError("--workers is for a local Ray; a cluster (--address) runs as many "
                             "cells at once as it has CPUs")
        if self.max_retries < 0:
            raise StudyError(f"--max-retries must be >= 0, got {self.max_retries}")

    @property
    def sequential(self) -> bool:
        return self.workers == 0

    def describe(self) -> str:
        if self.sequential:
            return "sequential, in this process"
        if self.address is not None:
            return f"Ray cluster at {self.address}"
        return f"local Ray, {self.workers or os.cpu_count()} workers"


def connect(runner: Runner) -> Any:
    """Import Ray and start a local Ray (or join the cluster at --address); returns `ray`."""
    try:
        import ray
        from ray.job_config import JobConfig
    except ImportError:
        raise StudyError(f"running cells on Ray needs the ray package ({RAY_INSTALL}); or run "
                         "them one after another with --workers 0") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload
    # Workers import iaprune.study from the repository (the same path on every node of a cluster);
    # Ray Client (ray://) takes the path as the workers' PYTHONPATH instead of a JobConfig.
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if (runner.address or "").startswith("ray://"):
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    else:
        options["job_config"] = JobConfig(code_search_path=[str(ROOT)])
    if runner.address is not None:
        check_reachable(runner.address)
    try:
        if runner.address is None:  # "local": a new Ray, never a cluster `ray start` left here
            ray.init(address="local", num_cpus=runner.workers or os.cpu_count(),
                     include_dashboard=False, **options)
        else:
            ray.init(address=runner.address, **options)
    except ImportError as exc:  # ray:// needs the client extra
        raise StudyError(f"--address {runner.address}: {first_line(exc)}; pip install "
                         '"ray[client]==2.60.0"') from None
    except (ConnectionError, RuntimeError) as exc:
        where = "a local Ray" if runner.address is None else \
            f"the Ray cluster at --address {runner.address}"
        hint = "" if runner.address is None or os.environ.get("RAY_AUTH_MODE") else \
            ("; a cluster started with `ray start` checks a token: export RAY_AUTH_MODE=token "
             "and give this machine the head's ~/.ray/auth_token")
        raise StudyError(f"cannot start or reach {where}: {first_line(exc)}{hint}") from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse a HOST:PORT where nothing listens (Ray itself would wait for minutes)."""
    host, colon, port = address.rpartition(":")
    if "://" in address or not colon or not port.isdigit():
        return  # 'auto' and ray:// addresses fail quickly by themselves
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise StudyError(f"--address {address}: nothing answers there ({exc.strerror or exc}); "
                         "start the head node with `ray start --head` or check the address") \
            from None


def cell_job(cell: Cell, runner: Runner, progress: Progress,
             on_done: Callable[[Cell], None]) -> Job:
    """A cell for `run_in_turn`: executed here, the bar following its rows."""

    def run() -> str:
        progress.update(partial=share_complete([cell]))
        outcome = execute(cell, runner.data_root,
                          lambda line: progress.update(partial=share_complete([cell])))
        return cell_line(cell, outcome)

    return Job(cell.id, run, lambda why: cell_failure(cell, why), cell.base,
               lambda: on_done(cell))


def run_on_ray(ray: Any, cells: Sequence[Cell], runner: Runner, progress: Progress,
               on_done: Callable[[Cell], None]) -> dict[str, str]:
    """Run `cells` as Ray tasks, each after its base; returns {cell id: why it failed}."""
    # _ray_task lives here, never in __main__ (`python -m iaprune.study`), which a worker cannot
    # import.
    task = ray.remote(num_cpus=1, max_retries=runner.max_retries)(_ray_task)
    refs: dict[str, Any] = {}
    pending: dict[Any, Cell] = {}
    for cell in cells:  # bases come first, so a cell's base is submitted before it
        ref = task.remote(cell, runner.data_root, *([refs[cell.base]] if cell.base in refs
                                                    else []))
        refs[cell.id], pending[ref] = ref, cell
    failures: dict[str, str] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
        for ref in sorted(ready, key=lambda r: pending[r].track is not None):  # bases first
            cell = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                failures[cell.id] = "its base model failed" if cell.base in failures else \
                    first_line(cause if isinstance(cause, BaseException) else exc)
                progress.fail(cell_failure(cell, failures[cell.id]))
            else:
                progress.finished(cell_line(cell, outcome))
                on_done(cell)
        running = [c for c in pending.values() if is_running(c)]
        progress.update(len(running), share_complete(running))
    return failures


def check_cache(cells: Sequence[Cell]) -> None:
    """Refuse cached sessions of other settings now, not after hours of other cells."""
    for cell in cells:
        if cell.session.config.is_file():
            check_cached(cell)


def run_cells(cells: Sequence[Cell], runner: Runner, ray: Any = None,
              on_done: Callable[[Cell], None] = lambda cell: None) -> dict[str, str]:
    """Run every cell the cache does not hold yet (on Ray when `ray` is given; bases before
    the cells that wait for them); `on_done` is called in this process for each cell that
    finishes. Returns {cell id: why it failed}."""
    check_cache(cells)
    todo = [c for c in cells if not cell_done(c)]
    progress = cells_progress(len(cells), len(cells) - len(todo))
    try:
        if not todo:
            return {}
        if ray is None:
            return run_in_turn((cell_job(c, runner, progress, on_done) for c in todo), progress)
        return run_on_ray(ray, todo, runner, progress, on_done)
    finally:
        progress.close()
