"""The package's layout: imports run one way, Figure 1's way, with no cycles and none hidden in functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "simsiam_keras"
# A module may import from its own subpackage or from a lower rank, never from a higher one.
RANKS = {
    "config": 0, "run_files": 0, "run_lock": 0,
    "augment": 1, "nets": 1,
    "data": 2,
    "method": 3,
    # Reading a saved run back: below both export (which writes what it reads) and evaluate.
    "saved_run": 4,
    "export": 5,
    "evaluate": 6,
    "train": 7,
    "benchmark": 8, "convert": 8,
    "cli": 9,
    "__init__": 10,
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(imported simsiam_keras module, at module level?) for each import in a module."""
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("simsiam_keras"):
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.append((full if full in MODULES else child.module, top))
            elif isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names if a.name.startswith("simsiam_keras"))
            visit(child, top and not nested)

    visit(tree, True)
    return found


MODULES = _modules()
GRAPH = {name: _imports(ast.parse(path.read_text())) for name, path in MODULES.items()}


def _rank(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in RANKS, f"{module}: {top} has no place in the layout (add it to RANKS)"
    return top, RANKS[top]


def test_no_package_import_is_hidden_inside_a_function():
    hidden = {m: [i for i, top in imports if not top] for m, imports in GRAPH.items()}
    assert not {m: i for m, i in hidden.items() if i}, "imports hidden in functions (move them to the top)"


def test_imports_point_down_the_layout():
    upward = []
    for module, imports in GRAPH.items():
        top, rank = _rank(module)
        for imported, _ in imports:
            other_top, other_rank = _rank(imported)
            if other_top != top and other_rank >= rank:
                upward.append(f"{module} -> {imported}")
    assert not upward, upward


def test_there_is_no_import_cycle():
    edges = {m: {i for i, _ in imports if i in MODULES and i != m} for m, imports in GRAPH.items()}
    state: dict[str, int] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path + [nxt]
            if nxt not in state and (found := cycle_from(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            assert (found := cycle_from(module, [module])) is None, " -> ".join(found)


def _imported_by(module: str) -> set[str]:
    """Every package module that importing `module` loads, through its imports and their parent packages.

    The package's own __init__ (which imports the public API, export included) is left out: it
    is what any import loads first, not what a module depends on.
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(2, len(parts))]
        for found in [i for i, _ in GRAPH.get(name, [])] + parents:
            if found in MODULES and found != "simsiam_keras" and found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


def test_the_training_knn_monitor_does_not_import_export():
    for module in ("simsiam_keras.evaluate.monitor", "simsiam_keras.evaluate.knn"):
        found = _imported_by(module)
        assert "simsiam_keras.saved_run" in found, module  # the walk reaches what it loads a run with
        assert not [m for m in found if m.split(".")[:2] == ["simsiam_keras", "export"]], (module, sorted(found))


def test_the_config_package_imports_nothing_from_the_rest_of_the_package():
    config = {m: i for m, i in GRAPH.items() if m == "simsiam_keras.config" or m.startswith("simsiam_keras.config.")}
    assert len(config) > 1, "config is a package of modules"
    assert not [i for imports in config.values() for i, _ in imports if not i.startswith("simsiam_keras.config")]


def test_the_public_api_is_importable_from_the_package():
    import simsiam_keras

    for name in simsiam_keras.__all__:
        assert getattr(simsiam_keras, name) is not None, name
