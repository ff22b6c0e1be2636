"""The package's data flow runs one way: no module imports a module of a later stage, and no
modules import each other in a cycle.

The stages, first to last, are the ones the Layout section of docs/architecture.md shows. An
import inside a function counts as much as one at the top; for the stages a ``TYPE_CHECKING``
import (types only) does not, for cycles it does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

import pytest

import se_search

PACKAGE = Path(se_search.__file__).parent

#: Each stage and the modules (dotted prefixes below ``se_search``) in it, first to last.
STAGES = [
    ("foundation", ["", "errors", "commands", "display"]),  # "": the package (__version__)
    ("stats", ["stats"]),
    ("models", ["models"]),
    ("space", ["space"]),
    ("data", ["data"]),
    ("events", ["events"]),
    ("storage", ["storage"]),
    ("costs", ["costs"]),
    ("evaluation", ["evaluation"]),
    ("engines", ["engines"]),
    ("outputs", ["outputs"]),
    ("bench", ["bench"]),
    ("testing", ["testing"]),
    ("cli", ["cli"]),
]


def _stage(module: str) -> int:
    """The stage of ``se_search.<module>``: its longest matching prefix's."""
    rest = module.removeprefix("se_search").removeprefix(".")
    best, found = -1, None
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (rest == prefix or rest.startswith(prefix + ".") or not prefix) and len(
                prefix
            ) > best:
                best, found = len(prefix), index
    assert found is not None, module
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every se_search import outside ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in [node.module, *names]]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] == "se_search"]


def _resolves(module: str) -> bool:
    """Whether ``module`` is a module or package of se_search (not a name imported from one)."""
    parts = module.split(".")[1:]
    return (PACKAGE.joinpath(*parts).with_suffix(".py")).is_file() or (
        PACKAGE.joinpath(*parts) / "__init__.py"
    ).is_file()


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_later_stage(path: Path) -> None:
    here = _module_name(path)
    own = _stage(here)
    late = [
        f"line {line}: {module} ({STAGES[_stage(module)][0]})"
        for line, module in _imports(ast.parse(path.read_text()))
        if _resolves(module) and _stage(module) > own
    ]
    assert not late, f"{here} ({STAGES[own][0]}) imports a later stage: {late}"


def test_every_module_has_a_stage_and_the_check_can_fail() -> None:
    assert all(_stage(_module_name(p)) >= 0 for p in SOURCES)
    # the check itself: a storage module importing the engines would be refused
    tree = ast.parse("from se_search.engines.recorder import StudyRecorder")
    [(_, module), *_] = _imports(tree)
    assert _stage(module) > _stage("se_search.storage.store")


# ----------------------------------------------------------------------------- import cycles
#
# Stages order the package, but a cycle inside one stage (evaluation.evaluator <->
# evaluation.strategies) passes the stage check. This graph has an edge for every import of an
# se_search module, wherever it is written: at the top, inside a function, under
# ``if TYPE_CHECKING:`` (a cycle of types is still a cycle in the design). ``from pkg import
# name`` is an import of ``pkg.name`` where that is a module, else of ``pkg``; the package
# ``__init__`` that Python runs first is not counted as imported, else every package that
# re-exports its modules would be a cycle with each of them (import-linter's graph, too).

#: Every module of the package, by dotted name.
MODULES = {_module_name(p): p for p in SOURCES}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    is_package = MODULES.get(module, Path()).name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _known(name: str, modules: set[str]) -> str | None:
    """``name`` if it is a module, else its longest prefix that is (None: not se_search)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _edges(module: str, tree: ast.AST, modules: set[str]) -> dict[str, list[int]]:
    """The se_search modules ``module`` imports, each with the lines that import it."""
    edges: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name, modules) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _known(base, modules)
                for a in node.names
            ]
        for target in targets:
            if target is not None and node.lineno not in edges.get(target, []):
                edges.setdefault(target, []).append(node.lineno)
    return edges


def _import_graph() -> dict[str, dict[str, list[int]]]:
    modules = set(MODULES)
    return {m: _edges(m, ast.parse(p.read_text()), modules) for m, p in MODULES.items()}


def _components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted, in order of their first member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _path(
    graph: Mapping[str, Iterable[str]], start: str, goals: set[str], within: set[str]
) -> list[str]:
    """The shortest path from ``start`` to one of ``goals`` (one step at least), in ``within``."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        step = []
        for node in frontier:
            for succ in sorted(graph.get(node, ())):
                if succ in within and succ not in parents:
                    parents[succ] = node
                    if succ in goals:
                        path = [succ]
                        while path[-1] != start or len(path) == 1:
                            path.append(parents[path[-1]])
                        return path[::-1]
                    step.append(succ)
        frontier = step
    raise AssertionError(f"no path from {start} to {goals}")  # an SCC always has one


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every import cycle: per strongly connected component of more than one module, or of one
    that imports itself, a closed walk through all its members in import order, from its
    first member by name back to it (``[a, b, a]``)."""
    cycles = []
    for component in _components(graph):
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        walk, left = [start], members - {start}
        while left:
            walk += _path(graph, walk[-1], left, members)[1:]
            left -= set(walk)
        walk += _path(graph, walk[-1], {start}, members)[1:]
        cycles.append(walk)
    return cycles


def _describe_cycle(cycle: list[str], graph: dict[str, dict[str, list[int]]]) -> str:
    """``a -> b -> a`` and the file and lines of every import among its modules: the walk's
    steps first, then any other import between two of them (each one has to go)."""
    walk = list(dict.fromkeys(pairwise(cycle)))
    members = set(cycle)
    others = [(a, b) for a in sorted(members) for b in sorted(graph[a]) if b in members]
    lines = [
        f"    {MODULES[a].relative_to(PACKAGE.parent)}:"
        f"{','.join(map(str, graph[a][b]))} imports {b.removeprefix('se_search.')}"
        for a, b in [*walk, *(e for e in others if e not in walk)]
    ]
    return "\n".join([" -> ".join(m.removeprefix("se_search.") for m in cycle), *lines])


def test_no_import_cycles() -> None:
    graph = _import_graph()
    cycles = _cycles(graph)
    report = "\n".join(_describe_cycle(c, graph) for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s); move what both sides need down:\n{report}"


def test_the_cycle_check_finds_cycles_and_reads_every_kind_of_import() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e", "a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _cycles({"x": {"y", "z"}, "y": {"x"}, "z": {"x"}}) == [["x", "y", "x", "z", "x"]]
    # every kind of import is an edge: a function's, TYPE_CHECKING's, a submodule by from,
    # a name from a package (the package), relative ones
    source = """
from typing import TYPE_CHECKING
from se_search.models import arch
from se_search.models.backbones import get_backbone
if TYPE_CHECKING:
    from se_search.space.specs import SearchSpace
def f():
    import se_search.costs.flops
    from . import sampling
    from ..models.blocks import SqueezeExcite
"""
    edges = _edges("se_search.space.build", ast.parse(source), set(MODULES))
    assert edges == {
        "se_search.models.arch": [3],
        "se_search.models.backbones": [4],
        "se_search.space.specs": [6],
        "se_search.costs.flops": [8],
        "se_search.space.sampling": [9],
        "se_search.models.blocks": [10],
    }
