"""python -m iaprune STEP ...: the same as the `iaprune` console command."""

from iaprune.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
