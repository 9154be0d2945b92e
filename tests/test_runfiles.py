"""One owner of a run's layout: every run file and folder name is spelled in ``neas/runfiles.py``
only, read from the source of ``src/`` and ``experiments/``."""

import ast
from pathlib import Path

import pytest

import neas.runfiles as runfiles
from neas.runfiles import PipelineLayout

ROOT = Path(__file__).resolve().parents[1]
OWNER = ROOT / "src" / "neas" / "runfiles.py"
_CONSTANTS = {value for name, value in vars(runfiles).items() if name.isupper() and isinstance(value, str)}
# a string may not spell a run file anywhere outside runfiles.py ...
NAMES = {value for value in _CONSTANTS if "." in value.strip(".")}
# ... nor a folder of a run in a path join (``run / "search"``): as a bare string a folder's name is also
# a command, a config key or a word ("report", "shrink")
FOLDERS = _CONSTANTS - NAMES


def spellings(source: str) -> list[tuple[int, str]]:
    """(line, what) of every run file or folder name spelled in ``source``: a string constant equal to
    one of :data:`NAMES`, or a ``path / "folder"`` join with a folder of the layout."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and isinstance(right.value, str) and right.value in FOLDERS:
                found.append((node.lineno, f"/ {right.value!r}"))
    return found


# joins with a folder that shares a run folder's name but is none: the package's shipped configs, the study's own
NOT_RUN_FOLDERS = {("src/neas/schemas/run.py", "/ 'configs'"), ("experiments/cifar10/study.py", "/ 'configs'")}


def _sources() -> list[Path]:
    return sorted(p for folder in ("src", "experiments") for p in (ROOT / folder).rglob("*.py") if p != OWNER)


def test_no_run_file_or_folder_is_spelled_outside_runfiles():
    spelled = [
        f"{p.relative_to(ROOT)}:{line}: {what}"
        for p in _sources()
        for line, what in spellings(p.read_text())
        if (str(p.relative_to(ROOT)), what) not in NOT_RUN_FOLDERS
    ]
    assert not spelled, "spell these with neas.runfiles:\n" + "\n".join(spelled)


@pytest.mark.parametrize(
    "code",
    ['path = run / "eval.json"', 'name = "metrics.jsonl"', 'folder = run / "search"', 'x = Path(out, "arch.json")'],
)
def test_the_check_finds_a_name_spelled_by_hand(code):
    assert spellings(code)


def test_messages_commands_and_docstrings_that_mention_a_name_are_not_spellings():
    code = '"""Writes eval.json."""\nraise E(f"{path}: no eval.json")\nrun("retrain", "--out", out)\n'
    assert spellings(code) == []


def test_the_layout_puts_each_stage_and_budget_where_neas_run_does(tmp_path):
    layout = PipelineLayout(tmp_path)
    assert layout.search.parent == layout.retrain.parent == tmp_path
    assert layout.budget("max_macs-1.5M").retrain == tmp_path / "budgets" / "max_macs-1.5M" / "retrain"
