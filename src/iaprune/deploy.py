"""Command line of the deploy step: `python -m iaprune.deploy bundle | predict | verify`.

The deploy runtime is its own small package, `iaprune_runtime` (torch + numpy only, never this
library), so that a deployed model needs neither IA-Prune nor its dependencies; this module
only gives it the step's name inside the package.
"""

from __future__ import annotations

from iaprune_runtime.__main__ import main, run


def entry(argv: list[str] | None = None) -> int:
    """Run the deploy command line on `argv`; expected errors are one line, exit code 2."""
    return run(main, argv)


if __name__ == "__main__":
    raise SystemExit(entry())
