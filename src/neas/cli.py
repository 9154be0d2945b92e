"""The ``neas`` command: one subcommand per recipe.

Options come from the commands' config dataclasses (:mod:`neas.config`): each is declared once
there, and is a flag here, a YAML key in ``--config`` files and a ``key=value`` override.
Every user-input error is a :class:`~neas.errors.NeasError`, printed as one line
(``neas: error: ...``) with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from neas import __version__
from neas.config import add_options, flat_fields, resolve_config
from neas.errors import report_error
from neas.parser import Parser
from neas.recipes import ABLATIONS, COMMANDS, EXAMPLES
from neas.schemas.run import DEMO, check_override

__all__ = ["build_parser", "main"]


def _schema(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _examples(lines) -> str | None:
    """The ``examples:`` block closing a ``--help`` (None without examples)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) if lines else None


def _command(sub, name: str, help: str, schema: str | None, handler, extra=(), skip=(), required=()) -> None:
    help = help.replace("%", "%%")  # argparse formats help strings with %
    epilog = _examples(EXAMPLES.get(f"ablate {name}" if sub.dest == "ablation" else name))
    p = sub.add_parser(
        name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.set_defaults(handler=handler, schema=schema, fixed=required)
    p.fill = lambda: _options(p, name, schema, extra, skip, required)  # when this command is parsed or helped


def _options(p: argparse.ArgumentParser, name: str, schema: str | None, extra, skip, required) -> None:
    """Adds a command's arguments; only then is its schema's module (and torch) imported."""
    if schema is not None:
        cls = _schema(schema)
        yaml_config = not schema.split(":")[1].endswith("Command")
        if yaml_config and not _names_a_config(cls):
            demo = " (default: the built-in digits demo, configs/demo.yaml, which sets its own values)"
            p.add_argument(
                "--config", help="YAML file with any of the options below as keys" + (demo if name == "run" else "")
            )
        add_options(p, cls, skip, required)
        if yaml_config:
            p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=_override_help(name, cls))
    for flag, kw in extra:
        p.add_argument(flag, **kw)


def _override_help(name: str, cls: type) -> str:
    """What a command's ``key=value`` overrides set, with an example that its config takes."""
    if name == "run":
        return "overrides of the config's keys: top-level (seed=1) or a stage's, dotted (supernet.epochs=3)"
    if any(f.name == "run_overrides" for f in dataclasses.fields(cls)):
        return (
            "overrides of this command's keys (slurm.partition=gpu) and, for every row, of the keys of its "
            "`neas run` config (supernet.epochs=6)"
        )
    fields = flat_fields(cls)
    keys = {ff.key for ff in fields}
    chosen = [f"{k}={v}" for k, v in (("epochs", 3), ("seed", 1), ("batch_size", 64)) if k in keys]
    chosen += [f"{ff.key}={ff.default}" for ff in fields if isinstance(ff.default, (int, float, str)) and ff.cli]
    return "overrides of YAML keys" + (f", e.g. {chosen[0]}" if chosen else "")


def _names_a_config(cls: type) -> bool:
    """Whether ``cls`` has its own ``config`` option (``neas compare``'s `neas run` YAML): it is then the
    ``--config`` flag, and the command takes its other YAML-only keys as ``key=value`` overrides."""
    return any(f.name == "config" for f in dataclasses.fields(cls))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="neas",
        description="One-shot neural ensemble architecture search (NEAS).",
        epilog=_examples(EXAMPLES[None]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"neas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help, schema, handler, extra) in COMMANDS.items():
        _command(sub, name, help, schema, handler, extra)
    ab = sub.add_parser(
        "ablate",
        help="the paper's ablations, and a deep ensemble: homo-hetero, split, paths, search, deep-ensemble (resumable)",
    )
    ab = ab.add_subparsers(dest="ablation", required=True, metavar="ABLATION")
    for name, (help, schema, required) in ABLATIONS.items():
        _command(ab, name, help, schema, "neas.recipes.ablate:main", skip=("resume",), required=required)
    return parser


def _config(args):
    if args.schema is None:
        return None
    cls = _schema(args.schema)
    if args.command == "run":  # defaults to the demo; only set flags override it
        args.config = args.config or DEMO
    fixed = {k: getattr(args, k) for k in args.fixed}  # given as flags only: a YAML file may not move them
    config_file = None if _names_a_config(cls) else getattr(args, "config", None)
    overrides = getattr(args, "overrides", None) or []
    if args.command == "run":  # a stage's key given bare is refused with its dotted forms
        for item in overrides:
            check_override(item)
    if any(f.name == "run_overrides" for f in dataclasses.fields(cls)):  # compare: the rest go to its `neas run` config
        own = {ff.key for ff in flat_fields(cls)}
        fixed["run_overrides"] = [item for item in overrides if _override_key(item) not in own]
        overrides = [item for item in overrides if _override_key(item) in own]
    return resolve_config(cls, config_file, vars(args), overrides, fixed, inputs=True)


def _override_key(item: str) -> str:
    """The top-level key a ``key=value`` override sets (``slurm`` for ``slurm.partition=gpu``)."""
    return item.split("=", 1)[0].strip().split(".")[0]


def main(argv: list[str] | None = None) -> int:
    """Every error a user can cause ends as one line on stderr (:func:`neas.errors.report_error`)."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
        cfg = _config(args)
        handler = _schema(args.handler) if isinstance(args.handler, str) else args.handler
        # in a terminal (where bars are drawn), a log line during a bar is written above it, not into it
        with logging_redirect_tqdm() if sys.stderr.isatty() else contextlib.nullcontext():
            handler(cfg, args)
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
