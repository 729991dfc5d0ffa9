"""The package layout: no import cycles, thin command lines, one home per shared name."""

from __future__ import annotations

import ast
from pathlib import Path

import iaprune_runtime.bundle
from iaprune import records

SRC = Path(__file__).resolve().parents[1] / "src" / "iaprune"


def module_file(name: str) -> Path | None:
    """The file of module `name` (iaprune.x.y -> x/y.py or x/y/__init__.py), None if none."""
    path = SRC.joinpath(*name.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(("iaprune", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imports_of(path: Path) -> set[str]:
    """The iaprune modules a file imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] == "iaprune":
            for alias in node.names:  # `from iaprune.study import cli` imports iaprune.study.cli
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("iaprune.")}
    return {name for name in found if module_file(name) and name != "iaprune"}


def graph() -> dict[str, set[str]]:
    """iaprune's modules (subpackages included, the package's own __init__ not) -> imports."""
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py") if p != SRC / "__init__.py"}


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
    """iaprune_runtime never imports iaprune, so it repeats a few names: they must equal
    iaprune.records'."""
    assert iaprune_runtime.bundle.MODES == tuple(records.MODES.values())
    assert iaprune_runtime.bundle.RESULTS == Path(records.RESULTS_DIR) / records.RECOMMENDED_FILE
    assert iaprune_runtime.bundle.MODEL_NAME == records.CHECKPOINT_FILE


def record_names() -> set[str]:
    """Every file and folder name iaprune.records defines (the session record's names) but bare
    words (the folder `retain` is also the step `retain`)."""
    names = set()
    for name, value in vars(records).items():
        if name.endswith(("_FILE", "_FILES", "_DIR", "_PLOT", "_PLOTS")):
            names.update(str(v) for v in (value if isinstance(value, tuple) else (value,)))
    return {part for name in names for part in Path(name).parts if "." in part or "_" in part}


def spelled_names(tree: ast.AST) -> set[str]:
    """The record names a module spells in code: string constants (docstrings apart) that are
    a record name or a path (a/b/c) with one as a part."""
    names, docstrings = record_names(), set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant):
            docstrings.add(id(body[0].value))
    return {part for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings
            for part in node.value.split("/") if part in names}


def test_record_names_are_spelled_only_in_records():
    """A result file's name (best_model.pth, validation_results.txt, ...) or a results folder's
    is written as a literal only in iaprune/records.py: every other module imports it."""
    assert {"best_model.pth", "validation_results.txt", "concatenate.json", "retain.txt",
            "prune_w_retrain", "prune_w_retrain_results"} <= record_names()
    found = {str(path.relative_to(SRC)): spelled for path in sorted(SRC.rglob("*.py"))
             if path.name != "records.py"
             and (spelled := spelled_names(ast.parse(path.read_text())))}
    assert found == {}


def test_the_checker_finds_a_spelled_record_name():
    """The check above is not vacuous: a literal name in code is found, one in a docstring not."""
    tree = ast.parse('"""Writes validation_results.txt."""\n'
                     'path = folder / "prune_w_retrain/validation_results.txt"\n')
    assert spelled_names(tree) == {"prune_w_retrain", "validation_results.txt"}


def column_lists(tree: ast.AST) -> list[list[str]]:
    """Literal lists, tuples, sets and dict keys in `tree` naming two or more result columns."""
    columns = {c.name for c in (*records.VALIDATION, *records.EPOCH, *records.RUN)}
    found = []
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, ast.List | ast.Tuple | ast.Set) else []
        named = [i.value for i in items if isinstance(i, ast.Constant) and i.value in columns]
        if len(named) >= 2:
            found.append(named)
    return found


def test_column_lists_are_spelled_only_in_records():
    """No other module keeps its own list or mapping of result columns (the header of
    validation_results.txt, a metric -> column table): they derive from iaprune.records."""
    assert column_lists(ast.parse('row = {"Train_Loss": 1.0, "Val_Loss": 2.0}')) == \
        [["Train_Loss", "Val_Loss"]]
    found = {str(path.relative_to(SRC)): spelled for path in sorted(SRC.rglob("*.py"))
             if path.name != "records.py" and (spelled := column_lists(ast.parse(
                 path.read_text())))}
    assert found == {}


def test_ray_workers_import_the_package_from_the_study_root():
    """The study's ROOT (Ray workers' code path) is the folder that holds the iaprune package, so
    a worker imports the task functions of iaprune.study.runner from there."""
    from iaprune.study import grid, runner

    assert (grid.ROOT / "iaprune" / "study" / "runner.py").resolve() == \
        Path(runner.__file__).resolve()
    assert runner._ray_task.__module__ == "iaprune.study.runner"


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
