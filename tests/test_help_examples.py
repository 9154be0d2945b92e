"""Every example of every ``--help`` runs (issue 39 item 3).

The ``examples:`` lines of ``neas --help`` and of each command's (and ablation's) ``--help`` are read from
the help text itself and run in-process, in the order shown, from a scratch directory laid out like a
checkout: its ``configs/demo.yaml`` (also what a bare ``neas run`` runs) is the demo shrunk to seconds, and
the sizes written in a line are shrunk the same way (:data:`TINY`). Everything else runs as written: the
paths (runs/demo, runs/search/arch.json, ...), the flags and the ``key=value`` overrides. The ``KEY=VALUE``
help of each command names keys its config has.
"""

import argparse
import re
import shlex

import pytest
import yaml

import neas.cli
from neas.cli import build_parser, main
from neas.config import flat_fields
from neas.recipes import EXAMPLES
from neas.schemas.run import STAGES, check_override

from .helpers import tiny_supernet_section

# the demo shrunk to seconds a run (digits, the tiny space, one epoch per stage, one generation)
DEMO = {
    "out": "runs/demo",
    "space": "tiny",
    "data": "digits",
    "device": "cpu",
    "supernet": tiny_supernet_section(epochs=1, shrink="none"),
    "search": {"max_macs": "0.7M", "population": 4, "parents": 2, "generations": 1, "mutations": 2, "crossovers": 2},
    "retrain": {"epochs": 1, "batch_size": 128, "holdout": 0.1, "randaugment": "none", "erase_prob": 0.0},
}
# the sizes an example writes -> tiny ones; the local executor's jobs would each import torch in a process of
# their own, the debug executor runs the same jobs in this one
TINY = [
    (r"--epochs \d+", "--epochs 1"),
    (r"\b(supernet|retrain)\.epochs=\d+", r"\1.epochs=1"),
    (r"--population \d+", "--population 4 --parents 2 --mutations 2 --crossovers 2"),
    (r"--generations \d+", "--generations 1"),
    (r"--seeds \d+", "--seeds 1"),
    (r"--max-parallel \d+", "--max-parallel 1 --executor debug"),
]


def _helps() -> dict[str, str]:
    """Every --help text: ``neas``'s, each command's and each ablation's."""
    parser = build_parser()
    helps = {"neas": parser.format_help()}
    stack = [(parser, "neas")]
    while stack:
        p, prog = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    helps[f"{prog} {name}"] = sub.format_help()
                    stack.append((sub, f"{prog} {name}"))
    return helps


def _examples(text: str) -> list[str]:
    """The commands of a help's ``examples:`` block, without their comments."""
    _, found, block = text.partition("\nexamples:\n")
    if not found:
        return []
    lines = [line for line in block.splitlines() if line.startswith("  neas")]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines]


def _tiny(command: str) -> list[str]:
    for pattern, replacement in TINY:
        command = re.sub(pattern, replacement, command)
    return shlex.split(command)[1:]  # without "neas"


def test_every_command_in_the_examples_table_shows_its_examples_in_its_help():
    helps = _helps()
    for command, lines in EXAMPLES.items():
        shown = _examples(helps["neas" if command is None else f"neas {command}"])
        assert shown == [re.sub(r"\s+#.*$", "", line).strip() for line in lines], command


def test_every_key_value_example_of_a_help_names_a_key_of_its_command():
    helps = _helps()
    checked = 0
    for prog, text in helps.items():
        described = re.search(r"KEY=VALUE\s+(overrides.*?)(?:\n\n|\noptions:)", text, re.S)
        if not described:
            continue
        items = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)?=[\w.]+)", " ".join(described.group(1).split()))
        parser = build_parser()
        args = prog.split()[1:]
        sub = parser
        for name in args:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        schema = sub._defaults.get("schema") or sub.get_default("schema")
        cls = neas.cli._schema(schema)
        keys = {ff.key for ff in flat_fields(cls)}
        for item in items:
            key = item.split("=")[0]
            if prog in ("neas run", "neas compare") and key.split(".")[0] not in keys:
                check_override(item)  # a `neas run` key: top-level, or a stage's dotted
                assert key.split(".")[0] in STAGES or key in {
                    ff.key for ff in flat_fields(neas.cli._schema("neas.schemas.run:RunConfig"))
                }, (prog, item)
            else:
                assert key.split(".")[0] in keys, (prog, item)
            checked += 1
    assert checked >= 10


@pytest.mark.slow
def test_every_example_of_every_help_runs_at_tiny_size(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text(yaml.safe_dump(DEMO))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(neas.cli, "DEMO", tmp_path / "configs" / "demo.yaml")
    helps = _helps()
    # neas --help first (its `neas run` makes runs/demo), then each command's in the table's order
    order = ["neas", *(f"neas {c}" for c in EXAMPLES if c is not None)]
    order += [prog for prog in helps if prog not in order]
    commands = list(dict.fromkeys(c for prog in order for c in _examples(helps[prog])))
    assert len(commands) >= 15
    for command in commands:
        code = main(_tiny(command))
        assert code == 0, f"{command}: {capsys.readouterr().err}"
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "ensemble.onnx").is_file()
    assert (tmp_path / "runs" / "compare" / "compare.md").is_file()
