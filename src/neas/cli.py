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
from neas.config import add_options, resolve_config
from neas.errors import report_error
from neas.parser import Parser
from neas.recipes import ABLATIONS, COMMANDS
from neas.schemas.run import DEMO

__all__ = ["build_parser", "main"]


def _schema(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _command(sub, name: str, help: str, schema: str | None, handler, extra=(), skip=(), required=()) -> None:
    help = help.replace("%", "%%")  # argparse formats help strings with %
    p = sub.add_parser(name, help=help, description=help)
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
            p.add_argument(
                "overrides",
                nargs="*",
                metavar="KEY=VALUE",
                help="overrides of YAML keys, e.g. epochs=3 (run: supernet.epochs=3)",
            )
    for flag, kw in extra:
        p.add_argument(flag, **kw)


def _names_a_config(cls: type) -> bool:
    """Whether ``cls`` has its own ``config`` option (``neas compare``'s `neas run` YAML): it is then the
    ``--config`` flag, and the command takes its other YAML-only keys as ``key=value`` overrides."""
    return any(f.name == "config" for f in dataclasses.fields(cls))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="neas", description="One-shot neural ensemble architecture search (NEAS).")
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
    return resolve_config(cls, config_file, vars(args), getattr(args, "overrides", None), fixed, inputs=True)


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
