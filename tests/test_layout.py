"""The tree shows the architecture: no import cycles in the core (at module or at layer level),
no core module too long to read in one sitting without a reason at its top, plugins that use
only the public API, and a README and docs/architecture.md that name every core module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "privbench"
LONG = 400
"""Lines a core module may have unless its docstring says why it has more."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in CORE.rglob("*.py")}


def _runtime_imports(path: Path) -> set[str]:
    """The core modules *path* imports when it runs (anywhere in it, functions included;
    ``if TYPE_CHECKING:`` blocks aside). ``from a.b import c`` counts as importing ``a.b.c``
    when that is a module, else ``a.b``."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
    return {name for name in found if name in MODULES}


GRAPH = {name: _runtime_imports(path) - {name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_core_module_imports_one_that_imports_it_back():
    assert _cycles(GRAPH) == []


def test_the_layers_depend_one_way():
    """Layers of the core (its sub-packages and top-level modules) form no cycle either: the
    plugin system below the engine, the engine below suites, the CLI and the facade."""

    def layer(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    layers: dict[str, set[str]] = defaultdict(set)
    for module, imported in GRAPH.items():
        for other in imported:
            if layer(other) != layer(module):
                layers[layer(module)].add(layer(other))
    assert _cycles(dict(layers)) == []
    assert "privbench" not in {o for deps in layers.values() for o in deps}, (
        "a core module imports the public facade privbench/__init__.py"
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_core_module_is_short_or_says_why_not(name):
    path = MODULES[name]
    lines = len(path.read_text().splitlines())
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert docstring, f"{path.relative_to(ROOT)} has no docstring saying what it owns"
    if lines > LONG:
        assert f"Longer than {LONG} lines" in docstring, (
            f"{path.relative_to(ROOT)} has {lines} lines: split it, or say at its top why not"
        )


def test_built_in_plugins_import_only_the_public_api():
    public = {"privbench", "privbench.helpers", "privbench.testing"}
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("privbench."):
                module = node.module or ""
                assert any(module == p or module.startswith(p + ".") for p in public), (
                    f"{path.relative_to(ROOT)} imports {module}, which is not public API"
                )


def test_readme_and_architecture_name_every_core_module():
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "architecture.md").read_text()
    for path in MODULES.values():
        relative = path.relative_to(ROOT)
        shown = relative.name if relative.name != "__init__.py" else f"{relative.parent.name}/"
        assert shown in text, f"neither README.md nor docs/architecture.md mentions {relative}"
