"""The shape of the code: stages import one way (import-linter also runs in scripts/test), no import
cycle, short functions."""

from __future__ import annotations

import ast

import grimp
import pytest

from helpers import REPO

SRC = REPO / "src" / "posfeat"
STAGES = ["core", "io", "engine", "analyses", "outputs", "training", "experiments", "cli"]
MAX_STATEMENTS = 50  # per function (ruff format spreads a call over lines; statements stay)


def test_no_module_imports_a_later_stage():
    graph = grimp.build_graph("posfeat")
    for i, stage in enumerate(STAGES):
        for later in STAGES[i + 1 :]:
            assert not graph.chain_exists(
                importer=f"posfeat.{stage}", imported=f"posfeat.{later}", as_packages=True
            ), (stage, later)


def test_no_import_cycle():
    graph = grimp.build_graph("posfeat")
    modules = sorted(m for m in graph.modules if m != "posfeat")
    edges = {
        m: {
            x
            for x in graph.find_modules_directly_imported_by(m)
            if x != "posfeat" and x in graph.modules
        }
        for m in modules
    }
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in edges.get(m, ()):
            if state.get(n) == 1:
                pytest.fail(
                    "import cycle: " + " -> ".join([*path[path.index(n) :], n]) if n in path else n
                )
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m, [m])


def _statements(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Statements of a function (each counted once, on the line it starts; its docstring left out): a length that
    does not change when the formatter splits a long call over several lines."""
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    body = node.body[1:] if docstring else node.body
    return len({s.lineno for b in body for s in ast.walk(b) if isinstance(s, ast.stmt)})


def test_no_function_longer_than_fifty_statements():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _statements(node) > MAX_STATEMENTS
            ):
                long.append(
                    f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({_statements(node)} statements)"
                )
    assert long == []


def test_every_module_imports():
    """Renames and moves leave no import pointing at a module that is gone (ruff and import-linter do not look)."""
    import importlib
    import pkgutil

    import posfeat

    names = [
        m.name
        for m in pkgutil.walk_packages(posfeat.__path__, "posfeat.")
        if "triton" not in m.name
    ]
    assert len(names) > 60
    for name in names:
        importlib.import_module(name)
