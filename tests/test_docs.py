"""The README and docs/ stay true to the code and to the measured results.

- A table marked `<!-- table: benchmarks/results/NAME.md -->` ... `<!-- end -->` is a copy of a
  table the benchmark wrote (its header, and some or all of its rows in their order).
- The figures in the README's results table appear in the results file named in their row.
- Every relative link (and image) points to an existing file, and an anchor to a heading.
- Every `iaprune STEP ...`, `python -m iaprune.STEP ...` and `python -m iaprune_runtime ...`
  command names a real step, and its flags are that step's own: shell commands are parsed with
  the step's argparse parser (nothing is run), commands quoted in the text have their flags
  looked up in it.
- The README stays short.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from iaprune.commands import ALIASES, STEPS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 320

MARKED = re.compile(r"<!-- table: (\S+) -->\n(.*?)<!-- end -->", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL = {"bash", "sh", "shell", "console"}
INLINE = re.compile(r"`((?:iaprune |python3? -m iaprune)[^`]*)`")
SEPARATORS = {"&&", "||", ";", "|", "&"}
RUNTIME = "iaprune_runtime"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def tables(text: str) -> list[list[str]]:
    """The markdown tables of a text, each a list of its lines."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def marked_blocks() -> list[tuple[str, str, list[str]]]:
    return [(rel(page), m.group(1), [ln for ln in m.group(2).splitlines() if ln.strip()])
            for page in PAGES for m in MARKED.finditer(page.read_text())]


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    rest = iter(whole)
    return all(any(line == other for other in rest) for line in part)


def test_readme_is_short():
    """The README is an introduction, not the manual: at most 320 lines."""
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_docs_mark_some_benchmark_tables():
    """The measured tables of the docs are marked, so the next test has something to check."""
    assert len(marked_blocks()) >= 10


@pytest.mark.parametrize("page, source, block", marked_blocks(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_marked_table_is_a_copy_of_the_benchmark_table(page, source, block):
    """A marked table is the header and some rows, in order, of one table of its source file."""
    path = ROOT / source
    assert path.is_file(), f"{page}: marked table names {source}, which does not exist"
    assert all(line.startswith("|") for line in block), f"{page}: the {source} block is not a table"
    candidates = [t for t in tables(path.read_text()) if t[:2] == block[:2]]
    assert candidates, f"{page}: no table of {source} has the header {block[0]!r}"
    assert any(is_subsequence(block[2:], t[2:]) for t in candidates), \
        f"{page}: rows of the {source} block differ from the file (re-copy the table)"


def numbers(text: str) -> set[str]:
    """The numbers in a text, thousands separators dropped (8,766 -> 8766)."""
    return set(re.findall(r"\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d{3})", "", text)))


def headline_rows() -> list[tuple[str, str]]:
    """(measured cell, source link) of each row of the README's results table."""
    table = next(t for t in tables(README.read_text()) if t[0].startswith("| what | measured |"))
    rows = []
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[1], LINK.search(cells[2]).group(1)))
    return rows


@pytest.mark.parametrize("measured, source", headline_rows())
def test_readme_results_are_in_their_source(measured, source):
    """Every figure of a README results row appears in the benchmark file the row names."""
    path = README.parent / source
    assert path.is_file(), source
    missing = numbers(measured) - numbers(path.read_text())
    assert not missing, f"README results row cites {sorted(missing)}, not in {source}: {measured}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        found += [(rel(page), target) for target in LINK.findall(text)
                  if not re.match(r"[a-z]+:", target)]
    return found


@pytest.mark.parametrize("page, target", links())
def test_relative_link_points_to_an_existing_file(page, target):
    """A link or image in the README or docs opens an existing file (and heading)."""
    source = ROOT / page
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    assert file.exists(), f"{page}: link {target} -> {file} does not exist"
    if anchor:
        assert anchor in anchors(file), f"{page}: link {target}: no heading with that anchor"


class Captured(Exception):
    """Raised instead of parsing: carries the parser a step's main() built."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


@cache
def parser_of(step: str) -> argparse.ArgumentParser:
    """The argparse parser of a step (built by its own main(), which is stopped before it
    parses anything)."""
    module = STEPS[step][0]
    if module == "iaprune.deploy":
        return importlib.import_module(f"{RUNTIME}.__main__").parser()

    def capture(self, args=None, namespace=None):
        raise Captured(self)

    main = importlib.import_module(module).main
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        try:
            main([])
        except Captured as captured:
            return captured.parser
    raise AssertionError(f"{module}.main() built no parser")


def step_and_args(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(step, its arguments) of a command line, None when it is no IA-Prune command."""
    if tokens[:1] == ["iaprune"]:
        if len(tokens) == 1:
            return None
        step, args = tokens[1], tokens[2:]
    elif len(tokens) >= 3 and tokens[0] in ("python", "python3") and tokens[1] == "-m" \
            and tokens[2].split(".")[0] in ("iaprune", RUNTIME):
        module, args = tokens[2], tokens[3:]
        if module == RUNTIME:
            step = "deploy"
        elif module == "iaprune":  # python -m iaprune STEP
            if not args:
                return None
            step, args = args[0], args[1:]
        else:
            step = module.removeprefix("iaprune.")
    else:
        return None
    if re.fullmatch(r"[A-Z]+|<\w+>", step):  # a placeholder: iaprune STEP, iaprune.<step>
        return None
    return ALIASES.get(step, step), args


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && ; | ...), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


def documented_commands() -> list[tuple[str, str, bool]]:
    """(page, command, in a shell block) of every IA-Prune command in the README and docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in FENCE.finditer(text):
            if block.group(1) in SHELL:
                for line in block.group(2).replace("\\\n", " ").splitlines():
                    found += [(rel(page), shlex.join(c), True) for c in split_commands(line)
                              if step_and_args(c)]
        prose = FENCE.sub("", text)
        found += [(rel(page), m.group(1), False) for m in INLINE.finditer(prose)
                  if step_and_args(shlex.split(m.group(1)))]
    return found


def subparser(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    """The subcommand's parser when `parser` has subcommands and `args` names one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = next((a for a in args if not a.startswith("-")), None)
            return action.choices.get(name, parser)
    return parser


def test_docs_show_many_commands():
    """The command check below finds the commands (it would pass vacuously otherwise)."""
    commands = documented_commands()
    assert sum(shell for _, _, shell in commands) >= 40
    assert {step_and_args(shlex.split(c))[0] for _, c, _ in commands} == set(STEPS)


@pytest.mark.parametrize("page, command, shell", documented_commands())
def test_command_parses_with_its_steps_parser(page, command, shell):
    """A documented command names an existing step and only flags that step has; a command in
    a shell block is accepted by the step's own parser as written."""
    tokens = shlex.split(command)
    step, args = step_and_args(tokens)
    assert step in STEPS, f"{page}: `{command}`: no step {step!r} (steps: {', '.join(STEPS)})"
    parser = parser_of(step)
    options = subparser(parser, args)._option_string_actions
    unknown = [a.split("=")[0] for a in args
               if a.startswith("--") and a.split("=")[0] not in options]
    assert not unknown, f"{page}: `{command}`: {step} has no flag {', '.join(unknown)}"
    if shell:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                assert exc.code == 0, f"{page}: `{command}`: {errors.getvalue().strip()}"


def test_benchmark_commands_name_existing_scripts():
    """`python benchmarks/NAME.py` in the README and docs names a script that exists."""
    for page in PAGES:
        for name in re.findall(r"python3? (benchmarks/[a-z_]+\.py)", page.read_text()):
            assert (ROOT / name).is_file(), f"{rel(page)}: {name} does not exist"
