"""The package's data flow runs one way: no module imports a module of a later stage.

The stages, first to last, are the ones the README's Layout section shows. An import inside a
function counts as much as one at the top; a ``TYPE_CHECKING`` import (types only) does not.
"""

from __future__ import annotations

import ast
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
