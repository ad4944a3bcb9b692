"""Structure of the ``ablate`` package: no import cycles between its modules, no oversized module.

The import graph is read from the source with :mod:`ast`, so it holds every import a module can
run: top-level ones and those inside functions (a lazy import still makes the two modules depend
on each other, it only moves the failure to run time). Imports under ``if TYPE_CHECKING:`` never
run and are left out of the cycle check.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ablate"
MAX_LINES = 450


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` of ``path``."""

    source: str
    target: str
    path: str
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return (f"{self.path}:{self.line} {self.source} -> {self.target}"
                + (" (in a function)" if self.lazy else ""))


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__``)."""
    root = package.parent
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(source: str, module: str, is_package: bool, modules: set[str],
               path: str = "<source>") -> list[Edge]:
    """Every import of a package module in ``source`` (the code of ``module``)."""
    edges: list[Edge] = []

    def add(target: str | None, node: ast.stmt, lazy: bool, type_only: bool) -> None:
        if target is not None:
            edges.append(Edge(module, target, path, node.lineno, lazy, type_only))

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name, modules), node, lazy, type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package that holds this module
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                # ``from ablate.x import y``: the module ablate.x.y if there is one, else ablate.x
                add(_resolve(f"{prefix}.{alias.name}", modules), node, lazy, type_only)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, lazy, True)
            for child in node.orelse:
                visit(child, lazy, type_only)
        else:
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner, type_only)

    visit(ast.parse(source), False, False)
    return [e for e in edges if e.target != module]


def import_graph(package: Path = PACKAGE) -> list[Edge]:
    """Every import between the package's modules, type-checking ones included."""
    names = module_names(package)
    edges = []
    for module, path in names.items():
        edges += imports_of(path.read_text(), module, path.name == "__init__.py", set(names),
                            str(path.relative_to(package.parent)))
    return edges


def strongly_connected(nodes: set[str], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        succ[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                connect(w)
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

    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return sorted(found)


def shortest_cycle(component: list[str], edges: list[Edge]) -> list[Edge]:
    """A shortest cycle through the component's first module, as the imports that form it."""
    inside = set(component)
    first: dict[tuple[str, str], Edge] = {}
    for e in sorted(edges, key=lambda e: (e.path, e.line)):
        if e.source in inside and e.target in inside:
            first.setdefault((e.source, e.target), e)
    start = component[0]
    came_from: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for (a, b), e in first.items():
                if a != v:
                    continue
                if b == start:
                    path = [e]
                    while path[0].source != start:
                        path.insert(0, came_from[path[0].source])
                    return path
                if b not in came_from:
                    came_from[b] = e
                    following.append(b)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def cycle_report(edges: list[Edge]) -> list[str]:
    """One paragraph per import cycle: its modules, one cycle as file:line imports, and every
    import between its modules (each a candidate to cut)."""
    runtime = [e for e in edges if not e.type_only]
    nodes = {e.source for e in edges} | {e.target for e in edges}
    paragraphs = []
    for component in strongly_connected(nodes, runtime):
        inside = set(component)
        within = sorted((e for e in runtime if e.source in inside and e.target in inside),
                        key=lambda e: (e.path, e.line))
        example = shortest_cycle(component, runtime)
        lines = [f"cycle among {len(component)} modules: {', '.join(component)}",
                 "  for example: " + " -> ".join([e.source for e in example] + [component[0]])]
        lines += [f"    {e}" for e in example]
        lines.append(f"  all {len(within)} imports between them:")
        lines += [f"    {e}" for e in within]
        paragraphs.append("\n".join(lines))
    return paragraphs


# -- the checker itself ---------------------------------------------------------------------

CHECKED = {"pkg", "pkg.a", "pkg.b", "pkg.b.c", "pkg.d"}


def test_imports_are_found_at_every_level() -> None:
    source = """
import os
import pkg.a
from pkg import b
from pkg.b import c, helper
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pkg.d import Thing
def f():
    from pkg.d import thing
class K:
    def g(self):
        import pkg.b.c as cc
"""
    edges = imports_of(source, "pkg.x", False, CHECKED | {"pkg.x"})
    got = {(e.target, e.line, e.lazy, e.type_only) for e in edges}
    assert got == {("pkg.a", 3, False, False), ("pkg.b", 4, False, False),
                   ("pkg.b.c", 5, False, False), ("pkg.b", 5, False, False),
                   ("pkg.d", 8, False, True), ("pkg.d", 10, True, False),
                   ("pkg.b.c", 13, True, False)}


def test_relative_imports_are_resolved() -> None:
    edges = imports_of("from . import c\nfrom .. import a\nfrom ..d import x\n", "pkg.b.q",
                       False, CHECKED | {"pkg.b.q"})
    assert [e.target for e in edges] == ["pkg.b.c", "pkg.a", "pkg.d"]
    edges = imports_of("from . import c\n", "pkg.b", True, CHECKED)
    assert [e.target for e in edges] == ["pkg.b.c"]


def test_a_lazy_cycle_is_reported_and_a_type_checking_one_is_not() -> None:
    def edge(source: str, target: str, line: int, lazy: bool = False,
             type_only: bool = False) -> Edge:
        return Edge(source, target, f"{source}.py", line, lazy, type_only)

    edges = [edge("pkg.a", "pkg.b", 1), edge("pkg.b", "pkg.a", 7, lazy=True),
             edge("pkg.c", "pkg.d", 2), edge("pkg.d", "pkg.c", 3, type_only=True)]
    report = cycle_report(edges)
    assert len(report) == 1
    assert report[0].startswith("cycle among 2 modules: pkg.a, pkg.b\n"
                                "  for example: pkg.a -> pkg.b -> pkg.a\n"
                                "    pkg.a.py:1 pkg.a -> pkg.b\n"
                                "    pkg.b.py:7 pkg.b -> pkg.a (in a function)\n")


# -- the package ----------------------------------------------------------------------------

def test_the_package_is_parsed() -> None:
    edges = import_graph()
    assert ("ablate.cli", "ablate.cli.run") in {(e.source, e.target) for e in edges}
    assert any(e.lazy for e in edges) and any(e.type_only for e in edges)


def test_no_import_cycles() -> None:
    report = cycle_report(import_graph())
    if report:
        pytest.fail(f"{len(report)} import cycle(s) among ablate modules, counting imports "
                    f"inside functions (each needs one of its imports removed or moved):\n\n"
                    + "\n\n".join(report), pytrace=False)


def test_no_module_over_the_line_limit() -> None:
    long = {str(path.relative_to(PACKAGE.parent)): n
            for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    if long:
        pytest.fail(f"{len(long)} module(s) of ablate over {MAX_LINES} lines (split them):\n"
                    + "\n".join(f"  {p}: {n} lines" for p, n in
                                sorted(long.items(), key=lambda item: -item[1])),
                    pytrace=False)


MAX_FUNCTION_LINES = 80


def test_no_function_over_the_line_limit() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"  {path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                f"{node.name}: {lines} lines")
    if long:
        pytest.fail(f"{len(long)} function(s) of ablate over {MAX_FUNCTION_LINES} lines:\n"
                    + "\n".join(long), pytrace=False)


def _external_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level package, line, inside a function) of every import in a module."""
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name.split(".")[0], node.lineno, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module.split(".")[0], node.lineno, lazy))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_mlflow_is_imported_by_the_tracking_package_only() -> None:
    outside = [f"{path.relative_to(PACKAGE.parent)}:{line}"
               for path in sorted(PACKAGE.rglob("*.py"))
               if path.parent.name != "tracking"
               for package, line, _ in _external_imports(path) if package == "mlflow"]
    assert outside == [], f"mlflow imported outside ablate/tracking/: {outside}"


def test_the_study_model_knows_neither_the_engine_nor_tracking() -> None:
    """ablate/study/ says what a study is; running it (Ray) and recording it (MLflow) build on
    it, never the other way round. Ray appears only lazily, where a scheduler hands Tune its
    own scheduler object."""
    edges = [e for e in import_graph() if e.source.startswith("ablate.study")
             and e.target.split(".")[1] in ("engine", "tracking", "report", "cli")]
    assert edges == [], [str(e) for e in edges]
    eager_ray = [f"{path.name}:{line}" for path in sorted((PACKAGE / "study").glob("*.py"))
                 for package, line, lazy in _external_imports(path)
                 if package in ("ray", "mlflow") and not lazy]
    assert eager_ray == [], eager_ray
