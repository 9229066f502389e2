"""The SimSiam class holds the method only (issue 23): its own methods fit on a screen, and every use of a
private Keras attribute lives in one module, the base class's (method/base.py). Pure Python: the package
is read with `ast`, never imported for this."""

import ast
from pathlib import Path

import keras
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "simsiam_keras"
MAX_SIMSIAM_LINES = 120
# The one module allowed to touch Keras' private attributes.
MACHINERY = "method/base.py"
# Keras' own optimizers call their base class's `_get_variable_index`; ours (TorchSGD, LARS) may too.
OPTIMIZER_EXCEPTION = "_get_variable_index"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _keras_private_names() -> frozenset[str]:
    """The private attributes of Keras' classes (their methods and class attributes) and of their
    instances (`_name`, `_layers`, ...): what a use in this package would reach into."""
    classes = [keras.Model, keras.Sequential, keras.layers.Layer, keras.optimizers.Optimizer,
               keras.optimizers.LossScaleOptimizer, keras.optimizers.SGD, keras.metrics.Metric,
               keras.callbacks.Callback, keras.Variable, keras.optimizers.schedules.LearningRateSchedule]
    instances = [keras.layers.Dense(1), keras.Sequential(), keras.optimizers.SGD(), keras.metrics.Mean(),
                 keras.callbacks.Callback(), keras.Variable(0.0)]
    names = {n for cls in classes for n in dir(cls)} | {n for obj in instances for n in vars(obj)}
    return frozenset(n for n in names | {"_name"} if _private(n))


KERAS_PRIVATE = _keras_private_names()


def _derives_from(cls: ast.ClassDef, names: set[str], prefix: str = "keras.") -> bool:
    return any(ast.unparse(b).startswith(prefix) or ast.unparse(b) in names for b in cls.bases)


def keras_classes(sources: list[str]) -> set[str]:
    """The package's classes that derive from a Keras class, directly or through one another."""
    classes = [n for s in sources for n in ast.walk(ast.parse(s)) if isinstance(n, ast.ClassDef)]
    found: set[str] = set()
    while True:
        more = {c.name for c in classes if _derives_from(c, found)} - found
        if not more:
            return found
        found |= more


def private_keras_uses(source: str, ours: set[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, name) of each private Keras attribute `source` reads, writes, calls or overrides.

    `self._x` counts inside a class deriving from Keras (directly or through `ours`, the package's
    Keras classes); elsewhere it is the class's own attribute. `x._y` on anything else counts.
    """
    uses = []

    def visit(node: ast.AST, keras_class: bool, optimizer_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            in_keras, in_optimizer = keras_class, optimizer_class
            if isinstance(child, ast.ClassDef):
                in_keras = _derives_from(child, set(ours))
                in_optimizer = any("optimizers." in ast.unparse(base) for base in child.bases)
                for item in child.body:
                    if in_keras and isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in KERAS_PRIVATE:
                        uses.append((item.lineno, item.name))  # an override of a Keras internal
            elif isinstance(child, ast.Attribute) and child.attr in KERAS_PRIVATE:
                on_self = isinstance(child.value, ast.Name) and child.value.id == "self"
                on_super = isinstance(child.value, ast.Call) and ast.unparse(child.value.func) == "super"
                if (on_self or on_super) and not keras_class:
                    pass  # a plain class's own attribute
                elif not (on_self and optimizer_class and child.attr == OPTIMIZER_EXCEPTION):
                    uses.append((child.lineno, child.attr))
            visit(child, in_keras, in_optimizer)

    visit(ast.parse(source), False, False)
    return uses


SOURCES = {path.relative_to(PACKAGE).as_posix(): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}
OURS = keras_classes(list(SOURCES.values()))


def _simsiam_class() -> ast.ClassDef:
    tree = ast.parse((PACKAGE / "method" / "model.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SimSiam")


def test_simsiam_class_methods_fit_on_a_screen():
    methods = [n for n in _simsiam_class().body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lines = {m.name: m.end_lineno - min([m.lineno, *(d.lineno for d in m.decorator_list)]) + 1 for m in methods}
    assert {"call", "train_step", "compute_simsiam_loss", "encode"} <= set(lines)
    assert sum(lines.values()) <= MAX_SIMSIAM_LINES, lines
    assert lines["train_step"] <= 12, "the train step: tape, forward, loss, apply gradients, trackers"


def test_private_keras_attributes_are_used_in_one_module_only():
    assert {"SimSiam", "BaseMethod", "TorchSGD", "LARS"} <= OURS
    found = {module: uses for module, source in SOURCES.items() if (uses := private_keras_uses(source, OURS))}
    assert set(found) == {MACHINERY}, {m: u for m, u in found.items() if m != MACHINERY}
    assert "_maybe_symbolic_build" in {name for _, name in found[MACHINERY]}


def test_each_private_keras_use_in_the_machinery_names_the_upstream_issue():
    source = SOURCES[MACHINERY]
    lines = source.splitlines()
    functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for number, name in private_keras_uses(source, OURS):
        function = min((f for f in functions if f.lineno <= number <= f.end_lineno), key=lambda f: f.end_lineno - f.lineno)
        assert "keras-team/keras#" in "\n".join(lines[function.lineno - 1:function.end_lineno]), f"line {number}: {name}"


@pytest.mark.parametrize("source, expected", [
    ("layer._name = 'x'", ["_name"]),
    ("model._flatten_layers()", ["_flatten_layers"]),
    ("class M(keras.Model):\n    def _maybe_symbolic_build(self):\n        pass", ["_maybe_symbolic_build"]),
    ("class O(keras.optimizers.SGD):\n    def f(self, v):\n        return self._get_variable_index(v)", []),
    ("class L(keras.layers.Layer):\n    def f(self, v):\n        return self._get_variable_index(v)", ["_get_variable_index"]),
    ("parser._actions; self._metric_values = 1", []),  # not Keras'
    ("class U(pickle.Unpickler):\n    def f(self):\n        return self._path", []),  # a plain class's own
    ("class V(keras.layers.Layer):\n    def f(self):\n        return self._path", ["_path"]),
    ("x = variable._path", ["_path"]),
])
def test_the_scan_finds_keras_internals_and_only_those(source, expected):
    assert [name for _, name in private_keras_uses(source)] == expected
