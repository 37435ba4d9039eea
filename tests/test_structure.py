"""The package's shape: no import cycle, imports only down the floors, modules and workflow
functions of readable size, and a pinned, documented front door."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import reptune

PACKAGE = Path(reptune.__file__).parent

#: The floors, bottom first. A module may import from its own floor or below, never above.
#: Everything at the package root (models, pairs, hooks, steering, vectors, extract, io,
#: plotting, ...) is the core floor; ``reptune/__init__.py`` is the front door and exports from
#: any floor lazily.
FLOORS = [
    {"core"},
    {"training", "evaluation", "analysis"},
    {"behaviours"},
    {"reporting"},
    {"workflow", "publish"},
    {"serve", "commands", "cli"},
]
MAX_MODULE_LINES = 420  # "about 400"
MAX_WORKFLOW_FUNCTION_LINES = 80

FRONT_DOOR = [
    "__version__",
    "DEFAULT_MODEL",
    "ContrastivePair",
    "RepTuneConfig",
    "RepTuneTrainer",
    "SteeredModel",
    "SteeringVectors",
    "extract_vectors",
    "learn_vectors",
    "load_caa_pairs",
    "load_jsonl_pairs",
    "load_model",
    "push_run",
    "write_model_card",
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["reptune", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """The reptune modules ``name`` imports (at any depth of its code)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        # ``from pkg import module`` names the module; ``from module import name`` the module.
        hit = next((c for c in candidates if c in modules), None)
        if hit and hit != name:
            out.add(hit)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _floor(module: str) -> int:
    parts = module.split(".")
    group = parts[1] if len(parts) > 1 and parts[1] in set().union(*FLOORS) else "core"
    return next(i for i, floor in enumerate(FLOORS) if group in floor)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_reader_sees_relative_and_absolute_imports(tmp_path):
    modules = {"reptune.a", "reptune.a.b", "reptune.c", "reptune.a.d"}
    source = tmp_path / "m.py"
    source.write_text("from . import d\nfrom ..c import x\nimport reptune.a.b\n")
    assert _imports("reptune.a.m", source, modules) == {"reptune.a.d", "reptune.c", "reptune.a.b"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _floor("reptune.models") == 0 and _floor("reptune.commands.evaluate") == 5


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_imports_only_go_down_the_floors():
    graph = _graph()
    upward = [
        f"{module} (floor {_floor(module)}) -> {target} (floor {_floor(target)})"
        for module, targets in graph.items()
        if module != "reptune"
        for target in targets
        if _floor(target) > _floor(module)
    ]
    assert upward == []


def test_modules_are_of_readable_size():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_workflow_functions_are_of_readable_size():
    long = []
    for path in (PACKAGE / "workflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_WORKFLOW_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert long == []


def test_no_module_sets_matplotlib_state_on_import():
    offenders = []
    for name, path in _modules().items():
        text = path.read_text()
        if "matplotlib.pyplot" in text or "matplotlib.use(" in text:
            offenders.append(name)
    assert offenders == []


def test_the_front_door_is_pinned():
    assert sorted(reptune.__all__) == sorted(FRONT_DOOR)
    assert set(FRONT_DOOR) <= set(dir(reptune))
    with pytest.raises(AttributeError, match="no attribute 'forward_until'"):
        reptune.forward_until  # noqa: B018  (an internal: reachable from reptune.hooks)


@pytest.mark.parametrize(
    "name", [n for n in FRONT_DOOR if n not in ("__version__", "DEFAULT_MODEL")]
)
def test_every_front_door_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(reptune, name)) or ""
    assert doc.strip() and "Example:" in doc and ">>>" in doc, name


def test_the_front_door_constants_are_shown_in_the_package_example():
    doc = inspect.getdoc(reptune)
    example = doc[doc.index("Example:") :]
    assert "DEFAULT_MODEL" in example and "__version__" in example
