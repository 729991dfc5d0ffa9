"""The package layout: no import cycles, thin command lines, one home per shared name."""

from __future__ import annotations

import ast
from pathlib import Path

import iaprune_runtime.bundle
import iaprune_runtime.model
from iaprune import session, spec

SRC = Path(__file__).resolve().parents[1] / "src" / "iaprune"


def imports_of(path: Path) -> set[str]:
    """The src modules a file imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "iaprune":
                found |= {f"iaprune.{alias.name}" for alias in node.names}
            elif node.module.startswith("iaprune."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("iaprune.")}
    return {name for name in found if (SRC / f"{name[8:]}.py").is_file()}


def graph() -> dict[str, set[str]]:
    return {f"iaprune.{p.stem}": imports_of(p) for p in SRC.glob("*.py") if p.stem != "__init__"}


def test_src_has_no_import_cycle():
    """No module of iaprune imports (directly or through others) a module that imports it."""
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_library_modules_never_import_command_lines():
    """The engine, tracking and the rest are a library: nothing imports iaprune.iterativeprune."""
    for module, imported in graph().items():
        assert "iaprune.iterativeprune" not in imported, module


def test_the_command_line_is_thin():
    """iaprune/iterativeprune.py only parses arguments and calls the engine."""
    tree = ast.parse((SRC / "iterativeprune.py").read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert set(functions) <= {"parse_args", "main", "entry", "summary_table"}
    assert len((SRC / "iterativeprune.py").read_text().splitlines()) < 120


def test_deploy_repeats_the_session_names_exactly():
    """iaprune_runtime never imports iaprune, so it repeats a few names: they must equal src's."""
    assert iaprune_runtime.bundle.MODES == tuple(session.MODES.values())
    assert iaprune_runtime.bundle.RESULTS == Path(session.RESULTS_DIR) / session.RECOMMENDED_FILE
    assert iaprune_runtime.bundle.MODEL_NAME == session.CHECKPOINT_FILE


def test_deploy_knows_every_layer_type_of_the_spec():
    assert set(iaprune_runtime.model.FIELDS) == set(spec.FIELDS)
