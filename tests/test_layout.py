"""The package layout: no import cycles, thin command lines, one home per shared name."""

from __future__ import annotations

import ast
from pathlib import Path

import iaprune_runtime.bundle
from iaprune import session

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
    assert set(functions) <= {"parse_args", "main", "summary_table"}
    assert len((SRC / "iterativeprune.py").read_text().splitlines()) < 120


def test_deploy_repeats_the_session_names_exactly():
    """iaprune_runtime never imports iaprune, so it repeats a few names: they must equal src's."""
    assert iaprune_runtime.bundle.MODES == tuple(session.MODES.values())
    assert iaprune_runtime.bundle.RESULTS == Path(session.RESULTS_DIR) / session.RECOMMENDED_FILE
    assert iaprune_runtime.bundle.MODEL_NAME == session.CHECKPOINT_FILE


RUNTIME = SRC.parent / "iaprune_runtime"
LAYERS = RUNTIME / "layers"


def _dotted(node: ast.AST) -> str:
    """'nn.Linear' for an attribute chain or a name, '' for anything else."""
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}".lstrip(".")
    return node.id if isinstance(node, ast.Name) else ""


def _named(node: ast.AST) -> list[ast.AST]:
    """The node, or the elements of a tuple/list/set literal or of a union `A | B`."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_named(node.left), *_named(node.right)]
    return list(node.elts) if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]


def layer_type_switches(path: Path) -> list[str]:
    """Lines of `path` that switch on a layer type: isinstance / issubclass / `type(x) is` /
    `type(x) in` against a registered torch class (nn.Linear, Select, ...), or a comparison
    with a registered spec type name ("conv2d", "relu", ...)."""
    from iaprune_runtime import layers

    classes = {cls.__name__ for cls in layers.by_module()}
    kinds = set(layers.names())

    def is_class(node: ast.AST) -> bool:
        return any(_dotted(n).rpartition(".")[2] in classes for n in _named(node))

    def is_kind(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Constant) and n.value in kinds for n in _named(node))

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and _dotted(node.func) in ("isinstance", "issubclass") \
                and len(node.args) == 2 and is_class(node.args[1]):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            typed = any(isinstance(n, ast.Call) and _dotted(n.func) == "type" for n in operands)
            if any(is_kind(n) for n in operands) or (typed and any(is_class(n) for n in operands)):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_the_layer_switch_test_finds_switches(tmp_path):
    """The scan below recognises the switches it forbids (so its silence means something)."""
    sample = tmp_path / "sample.py"
    sample.write_text("if isinstance(m, nn.Conv2d): pass\nif type(m) is nn.MaxPool2d: pass\n"
                      "if layer['type'] == 'conv2d': pass\nif kind in ('linear', 'x'): pass\n"
                      "if isinstance(m, (Select, int)): pass\nif isinstance(m, Tensor): pass\n"
                      "if isinstance(m, nn.Linear | nn.Conv2d): pass\n")
    assert [line.split()[0] for line in layer_type_switches(sample)] == [
        "sample.py:1", "sample.py:2", "sample.py:3", "sample.py:4", "sample.py:5", "sample.py:7"]


def test_only_the_layer_registry_switches_on_layer_types():
    """Outside iaprune_runtime/layers/, no module branches on a layer type: each type's
    behaviour lives in its registry entry, so adding a type touches one place."""
    files = [p for p in (*SRC.rglob("*.py"), *RUNTIME.rglob("*.py")) if LAYERS not in p.parents]
    switches = [line for path in sorted(files) for line in layer_type_switches(path)]
    assert switches == []


def test_the_runtime_never_imports_the_library():
    """iaprune_runtime (layer registry included) imports torch, numpy and the standard library,
    never iaprune: a deployed model runs without the library."""
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "iaprune" or n.startswith("iaprune.") for n in names), path
