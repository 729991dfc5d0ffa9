"""The `iaprune` console command: one subcommand per workflow step.

    iaprune retain ...            # = python -m iaprune.retain ...
    iaprune iterativeprune ...    # = python -m iaprune.iterativeprune ... (alias: prune)
    iaprune concatenate ...       # = python -m iaprune.concatenate ...
    iaprune validator ...         # = python -m iaprune.validator ...
    iaprune deploy ...            # = python -m iaprune.deploy ... (the torch-only runtime)
    iaprune study ...             # = python -m iaprune.study ...

Each subcommand is the step's own `main`: the same flags, `--help`, errors and exit codes.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> module holding its `main` and `entry` (cli.run or the runtime's own run)
STEPS: dict[str, tuple[str, str]] = {
    "retain": ("iaprune.retain", "geometric retention schedule -> retain/"),
    "iterativeprune": ("iaprune.iterativeprune", "train the base, prune + retrain per row"),
    "concatenate": ("iaprune.concatenate", "gather a session's iterations: tables, plots"),
    "validator": ("iaprune.validator", "re-evaluate any best_model.pth"),
    "deploy": ("iaprune.deploy", "bundle | predict | verify with torch alone"),
    "study": ("iaprune.study.cli", "criteria x seeds x modes grids and --search, on Ray"),
}
ALIASES = {"prune": "iterativeprune", "validate": "validator"}


def usage() -> str:
    lines = ["usage: iaprune STEP [ARGS ...]   (iaprune STEP --help for a step's flags)", "",
             "steps:"]
    lines += [f"  {name:<15} {what}" for name, (_, what) in STEPS.items()]
    lines += ["", "aliases: " + ", ".join(f"{a} = {s}" for a, s in ALIASES.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `iaprune STEP ARGS` to the step's command line; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from iaprune import __version__
        print(f"iaprune {__version__}")
        return 0
    step = ALIASES.get(argv[0], argv[0])
    if step not in STEPS:
        print(f"error: unknown step {argv[0]!r}; choose from {', '.join(STEPS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(STEPS[step][0])
    return module.entry(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
