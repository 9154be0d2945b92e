"""The import rules of docs/DESIGN.md ("Imports"), read from the source: no cycle among the modules
of src/neas or of an experiment's scripts, function-level imports counted; each package imports
only the packages before it in the documented order (cost/ below the plain ensemble); nothing in
the library imports a recipe or the CLI."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# docs/DESIGN.md, "Imports": a package imports only those before it (those on one line: either way round)
LAYERS = [
    ("errors", "lazy", "runfiles"),
    ("io",),
    ("outputs",),  # whether an output may be written (the run directory's refusals, read-only): torch-free
    ("records",),  # the typed records of a run's files: torch-free, readable by the algorithm and the report
    ("settings",),  # neas.settings and every algorithm package's settings module: torch-free, below the CLI
    ("fields",),  # typed values: the YAML reader and from_dict/to_dict, below the CLI (spaces read it)
    ("parser",),
    ("config",),
    ("stats",),
    ("options",),
    ("schemas",),
    ("dist",),
    ("seeding",),
    ("rundir",),
    ("pipeline",),
    ("log",),
    ("space",),
    ("nn",),
    ("cost",),
    ("data",),
    ("ensemble",),
    ("supernet",),
    ("detection",),
    ("shrink", "search", "train"),
    ("report",),
    ("executor",),
    ("recipes",),
    ("cli",),
    ("__main__",),
]


def _module_names(folder: Path, prefix: str) -> dict[str, Path]:
    names = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([prefix, *parts] if prefix else parts)] = path
    return names


def _imports(name: str, path: Path, known: "set[str]") -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its file: ``from a import b`` is
    an import of the module ``a.b`` when there is one, else of ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return (found & known) - {name}


def _graph(folder: Path, prefix: str) -> dict[str, set[str]]:
    names = _module_names(folder, prefix)
    return {name: _imports(name, path, set(names)) for name, path in names.items()}


def _cycle(graph: "dict[str, set[str]]") -> "list[str] | None":
    """One import cycle of ``graph``, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.fixture(scope="module")
def package():
    return _graph(ROOT / "src" / "neas", "neas")


def test_the_package_has_no_import_cycle(package):
    assert _cycle(package) is None


@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "experiments").iterdir() if p.is_dir()))
def test_an_experiments_scripts_have_no_import_cycle(folder):
    assert _cycle(_graph(ROOT / "experiments" / folder, "")) is None


def test_the_study_and_its_tables_share_a_plan_and_import_neither_each_other():
    graph = _graph(ROOT / "experiments" / "cifar10", "")
    assert graph["study"] & {"tables"} == set()
    assert graph["tables"] & {"study"} == set()
    assert "plan" in graph["study"]
    assert "plan" in graph["tables"]


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 3 and parts[2] == "settings":  # neas.shrink.settings: the algorithm's settings, below the CLI
        return "settings"
    return parts[1] if len(parts) > 1 else ""


def test_each_package_imports_only_the_packages_before_it(package):
    level = {name: i for i, names in enumerate(LAYERS) for name in names}
    level[""] = -1  # neas/__init__.py: its names load lazily, by importlib
    for name, targets in package.items():
        if _package(name):
            later = {t for t in targets if level[_package(t)] > level[_package(name)]}
            assert not later, f"{name} imports {sorted(later)}, after it in docs/DESIGN.md's order"


ALGORITHM = ("space", "nn", "cost", "supernet", "shrink", "search", "ensemble")
CLI_AND_RUNS = ("neas.config", "neas.options", "neas.schemas", "neas.rundir")


def test_the_algorithm_packages_import_nothing_of_the_command_line_or_the_run_directory(package):
    """timm's model functions take plain arguments and train.py maps flags onto them: likewise the
    algorithm packages own their settings (``<package>/settings.py``) and the schemas nest them."""
    for name, targets in package.items():
        if _package(name) in ALGORITHM or name.endswith(".settings"):
            found = {t for t in targets if t.startswith(CLI_AND_RUNS)}
            assert not found, f"{name} imports {sorted(found)}"


ORCHESTRATORS = ("neas.recipes.run", "neas.recipes.compare", "neas.recipes.ablate")


def _recipe(name: str) -> str:
    """The recipe a module belongs to: itself, or the recipe package it is part of (``neas.recipes.ablate``)."""
    return ".".join(name.split(".")[:3])


def test_a_recipe_imports_another_only_to_orchestrate(package):
    """Helpers two recipes need live in the library package they belong to (STYLE.md rule 4)."""
    for name, targets in package.items():
        if name.startswith("neas.recipes.") and _recipe(name) not in ORCHESTRATORS:
            others = {t for t in targets if t.startswith("neas.recipes.") and _recipe(t) != _recipe(name)}
            assert not others, f"{name} imports {sorted(others)}"


def test_cost_imports_nothing_above_it(package):
    above = ("neas.ensemble", "neas.supernet", "neas.search", "neas.shrink", "neas.train", "neas.recipes", "neas.dist")
    for name, targets in package.items():
        if name.startswith("neas.cost"):
            assert not {t for t in targets if t.startswith(above)}, name


def test_only_the_cli_imports_a_recipe(package):
    for name, targets in package.items():
        if not name.startswith(("neas.recipes", "neas.cli", "neas.__main__")):
            assert not {t for t in targets if t.startswith(("neas.recipes", "neas.cli"))}, name


_HELP_EVERY_COMMAND = """
import sys
from neas.cli import build_parser, main
from neas.recipes import ABLATIONS, COMMANDS
parser = build_parser()
commands = [[name] for name in COMMANDS] + [["ablate", name] for name in ABLATIONS]
for argv in commands:
    try:
        parser.parse_args([*argv, "--help"])
    except SystemExit:
        pass
    assert main([*argv, "--no-such-flag"]) == 2
assert main(["retrain", "--epochs", "1.5"]) == 2
heavy = sorted(m for m in ("torch", "numpy", "timm", "torchmetrics", "pymoo", "matplotlib") if m in sys.modules)
print("heavy:", heavy)
"""


def test_help_and_option_errors_of_every_command_import_no_torch():
    """``neas <command> --help`` and a bad flag are answered from the torch-free schemas (neas.schemas)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _HELP_EVERY_COMMAND], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"


def test_the_space_records_and_settings_import_no_torch():
    """The space is data (docs/DESIGN.md): reading a space, an arch, the run's records or the algorithms'
    settings needs neither torch nor numpy."""
    import subprocess
    import sys

    code = (
        "import sys; import neas.space, neas.records, neas.fields, neas.search.settings, neas.shrink.settings; "
        "from neas.space import EnsembleArch, SearchSpace; EnsembleArch.sample(SearchSpace.preset('tiny'), 0); "
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
