"""No import cycle among the project's own modules, nor among its packages.

The graph is read from the source with :mod:`ast`, nothing is imported. It counts every
``import x`` and ``from x import y`` (relative ones resolved), at module level and inside
functions and classes alike, since a function-level import is a dependency all the same; only
imports under ``if TYPE_CHECKING:`` are left out, as they never run. ``from p import y`` is an
edge to the module ``p.y`` when that is a module of the project, else to ``p``. Importing
``p.q`` also runs ``p/__init__.py``, but that implied edge is not counted: a package whose
``__init__`` re-exports its submodules would otherwise always be a cycle.

Modules are checked strictly; packages (``server``, ``rooms``, ``signaling``,
``persistence``) are too, each package being one node of the graph (imports within a package
are not edges).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("server", "rooms", "signaling", "persistence")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports_in(other)
        else:
            yield from _imports(child)


def _imports_in(node: ast.stmt) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def _deepest(name: str, known: Iterable[str]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module, if any."""
    names = set(known)
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in names:
            return candidate
    return None


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (see the module docstring for what counts)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for stmt in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            else:
                if stmt.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (stmt.level - 1)]
                    base = ".".join(base_parts + ([stmt.module] if stmt.module else []))
                else:
                    base = stmt.module or ""
                targets = [f"{base}.{alias.name}" for alias in stmt.names]
                targets = [t if t in mods else base for t in targets]
            for target in targets:
                found = _deepest(target, mods)
                if found is not None and found != name:
                    edges.add(found)
        graph[name] = edges
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with each top-level package as one node (no self-edges)."""
    out: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for source, targets in graph.items():
        top = source.partition(".")[0]
        out[top] |= {t.partition(".")[0] for t in targets} - {top}
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(sorted(c), graph) for c in components]


def _cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the component's first node back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:  # breadth-first: the shortest cycle through ``start``
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError("a strongly connected component always has a cycle")


def _describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_cycle_between_modules() -> None:
    cycles = find_cycles(import_graph(modules()))
    assert not cycles, "import cycles between modules:\n" + _describe(cycles)


def test_no_cycle_between_packages() -> None:
    graph = package_graph(import_graph(modules()))
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between packages:\n" + _describe(cycles)
    assert graph["signaling"] == set(), "signaling/ imports only the standard library"


# the checker itself ------------------------------------------------------------------------------
def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    files = {
        "rooms/__init__.py": "",
        "rooms/a.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import rooms.b\n"
            "from . import c\n"
            "from .sub import thing\n"
            "if TYPE_CHECKING:\n"
            "    from server.x import Hidden\n"
            "else:\n"
            "    import persistence\n"
            "def f():\n"
            "    from signaling.v import check\n"
        ),
        "rooms/b.py": "from rooms.sub.d import X\n",
        "rooms/c.py": "import os\n",
        "rooms/sub/__init__.py": "from ..c import y\n",
        "rooms/sub/d.py": "from .. import a\n",
        "server/__init__.py": "",
        "server/x.py": "from rooms import a\n",
        "signaling/__init__.py": "",
        "signaling/v.py": "",
        "persistence/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(modules(tmp_path))
    assert graph["rooms.a"] == {"rooms.b", "rooms.c", "rooms.sub", "persistence", "signaling.v"}
    assert graph["rooms.sub"] == {"rooms.c"}
    assert graph["rooms.sub.d"] == {"rooms.a"}
    assert graph["server.x"] == {"rooms.a"}
    assert find_cycles(graph) == [["rooms.a", "rooms.b", "rooms.sub.d", "rooms.a"]]
    assert package_graph(graph)["rooms"] == {"persistence", "signaling"}
    assert find_cycles(package_graph(graph)) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"c"}}) == [["a", "b", "a"], ["c", "c"]]
