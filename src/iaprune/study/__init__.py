"""Studies: many pruning sessions compared at scale, each an ordinary engine session (the session
folders are the cache, so a killed study resumes).

    grid.py           a grid's cells (criteria and variants x seeds x modes x curves): pure data
    runner.py         how cells and trials run: one at a time in this process or on Ray; the
                      progress bar
    report.py         the grid's tables and plots
    search.py         --search: Ray Tune and Optuna pick per-layer retention factors q
    search_report.py  the search's table and plot
    cli.py            the command line: `python -m iaprune.study` or `iaprune study`
"""
