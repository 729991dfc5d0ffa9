"""`python -m iaprune.study ...`: the study's command line (iaprune.study.cli)."""

from iaprune.study.cli import entry

if __name__ == "__main__":
    raise SystemExit(entry())
