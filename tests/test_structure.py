"""Shape rules of the code that ruff does not check (docs/DESIGN.md, STYLE.md): no function over 60
lines; no module defining one top-level name twice (ruff's F811 misses a redefined ``def``); every
recipe (a module, or each module of a recipe package) under 350 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted(p for folder in ("src", "experiments", "benchmarks") for p in (ROOT / folder).rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_RECIPE_LINES = 350


def _too_long(tree: ast.AST) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def _defined_twice(tree: ast.Module) -> list[str]:
    seen, twice = set(), []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in seen:
                twice.append(f"{node.name} (line {node.lineno})")
            seen.add(node.name)
    return twice


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_over_60_lines_and_no_top_level_name_is_defined_twice(path):
    tree = ast.parse(path.read_text())
    assert not _too_long(tree), f"{path.relative_to(ROOT)}: {_too_long(tree)}"
    assert not _defined_twice(tree), f"{path.relative_to(ROOT)} defines twice: {_defined_twice(tree)}"


def test_every_recipe_is_under_350_lines():
    recipes = ROOT / "src" / "neas" / "recipes"
    sizes = {p.relative_to(recipes): len(p.read_text().splitlines()) for p in recipes.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n >= MAX_RECIPE_LINES} == {}


def test_the_checks_catch_what_they_guard():
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _too_long(ast.parse(f"def f():\n{body}\n"))
    assert not _too_long(ast.parse("def f():\n    return 1\n"))
    assert _defined_twice(ast.parse("def f():\n    pass\n\n\ndef f():\n    pass\n")) == ["f (line 5)"]
