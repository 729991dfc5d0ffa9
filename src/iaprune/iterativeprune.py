"""Command line of the pruning engine (iaprune.engine): parse the flags, call `run`, print.

    python -m iaprune.iterativeprune [--dataset mnist] [--arch mlp] [--session sessions/<today>] ...

Running it again with the same --session resumes after the last complete iteration.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from iaprune import cli
from iaprune.checkpoint import recorded_dataset
from iaprune.config import add_flags, apply, given_settings
from iaprune.engine import DEFAULT_RETAIN, read_config, run
from iaprune.session import Session, check_session_folder, holds_results
from iaprune.tracking import make_tracker
from iaprune_runtime.budget import add_memory_flag, memory_limit


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m iaprune.iterativeprune",
        description="Train a base network, then prune it per schedule row by interval-adjoint "
                    "significance (or a baseline criterion), retraining after each step. "
                    "Resumable: run again with the same --session to continue.")
    p.add_argument("--session", help="session folder [sessions/<today>]")
    p.add_argument("--retain", help=f"schedule file [{DEFAULT_RETAIN} when it fits the model, "
                                    "else the default geometric schedule]")
    p.add_argument("--data-root", help="folder holding MNIST/raw/ etc. [$IAPRUNE_DATA, else "
                                       "data/]")
    p.add_argument("--begin-itr", type=int, help="redo iterations from K on, starting from "
                                                 "K-1's checkpoint [after the last complete one]")
    add_flags(p.add_argument_group("settings (saved in the session's config.json)"))
    p.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                   help="track the run in MLflow (parent run + one child per iteration); "
                        "without a URI, a local sqlite:///mlflow.db beside the sessions folder")
    p.add_argument("--mlflow-experiment", help="MLflow experiment name [the session name]")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write TensorBoard runs to DIR/<session name>/: per-epoch curves of every "
                        "iteration, one point per iteration, significance histograms [off]")
    p.add_argument("--wait", action="store_true",
                   help="when another process runs this session, wait for it to finish "
                        "[refuse, naming that process]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_memory_flag(p)
    return p.parse_args(argv)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The one-screen summary printed at the end of a run."""
    head = (f"{'itr':>3} {'units':>9} {'retain%':>8} {'params':>8} {'no-retrain%':>12} "
            f"{'test%':>7} {'val%':>7}")
    lines = [head] + [
        f"{r['iteration']:>3} {r['Hidden']:>9} {r['PercentageRetain']:>8.2f} {r['Params']:>8} "
        f"{r['NoRetrain_Test_Accuracy']:>12.2f} {r['Test_Accuracy']:>7.2f} "
        f"{r['Val_Accuracy']:>7.2f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with memory_limit(args.max_memory):  # every network's sizes are checked against it
        root = Path(args.session or f"sessions/{datetime.date.today().isoformat()}")
        check_session_folder(root)
        # Flags not given keep the session's settings, so re-running the same command resumes; a
        # session without a complete iteration is started again with the flags given.
        saved = read_config(Session(root))
        given = given_settings(args)
        keep = saved is not None and (holds_results(root) or not (given or args.retain))
        if "--base-model" in given and "--dataset" not in given and not keep:
            recorded = recorded_dataset(given["--base-model"])  # the data the model was made for
            if recorded is not None:
                given["--dataset"] = recorded
        config = apply(saved if keep else None, given)
        tracker = make_tracker(args.mlflow, args.mlflow_experiment, root, args.tensorboard)
        try:
            results = run(config, root, retain=args.retain, begin=args.begin_itr,
                          data_root=args.data_root, tracker=tracker, quiet=args.quiet,
                          wait=args.wait)
        except KeyboardInterrupt:
            print(f"\ninterrupted; the unfinished iteration was discarded. Resume with:\n"
                  f"  python -m iaprune.iterativeprune --session {root}", file=sys.stderr)
            return cli.EXIT_INTERRUPTED
        if results.rows:
            print(f"\n{summary_table(results.rows)}\n")
            print(f"results in {results.session.results_dir}; recommended model: "
                  f"{results.recommended}")
        return 0


def entry(argv: list[str] | None = None) -> int:
    """The console entry point: main() with expected errors as one line, exit code 2."""
    return cli.run(main, argv)


if __name__ == "__main__":
    raise SystemExit(entry())
