"""The ``neas`` command: one subcommand per recipe.

Options come from the commands' config dataclasses (:mod:`neas.config`): each is declared once
there, and is a flag here, a YAML key in ``--config`` files and a ``key=value`` override.
Every user-input error is a :class:`~neas.errors.NeasError`, printed as one line
(``neas: error: ...``) with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from neas.config import add_options, resolve_config
from neas.errors import report_error
from neas.rundir import ARCH, MODEL, SUPERNET

__all__ = ["main", "build_parser"]


def _artefact(runner: str, name: str):
    def handle(cfg, args) -> None:
        from neas import dist

        run = getattr(importlib.import_module(f"neas.recipes.{runner}"), runner)(cfg)
        if dist.is_main_process():
            print(f"{name.split('.')[0]}: {run / name}")
        dist.cleanup()

    return handle


_RETRAIN = "neas.recipes.retrain:RetrainConfig"
_TOOLS = "neas.recipes.tools:"
# name: (help, schema "module:Class" or None, handler(cfg, args) or None to call the schema, extra arguments)
COMMANDS = {
    "train-supernet": (
        "train the K-path supernet with search-space shrinking",
        "neas.recipes.train_supernet:SupernetConfig",
        _artefact("train_supernet", SUPERNET),
        (),
    ),
    "search": (
        "search the trained supernet for the best ensemble under a budget",
        "neas.recipes.search:SearchConfig",
        _artefact("search", ARCH),
        (),
    ),
    "retrain": (
        "retrain an ensemble from scratch with the released models' recipe",
        _RETRAIN,
        _artefact("retrain", MODEL),
        (),
    ),
    "evaluate": (
        "top-1, NLL, ECE, Brier of an ensemble, its paths and anytime sub-ensembles; calibration, corruptions, cost, "
        "latency",
        "neas.recipes.evaluate:EvaluateConfig",
        "neas.recipes.evaluate:main",
        (
            ("--json", {"nargs": "?", "const": "-", "help": "print JSON, or write it to this file"}),
            ("--force", {"action": "store_true", "help": "overwrite an existing --json file"}),
        ),
    ),
    "rank": (
        "Kendall tau / Spearman rho of supernet vs from-scratch accuracies (with 95% CIs)",
        "neas.recipes.rank:RankConfig",
        "neas.recipes.rank:main",
        (),
    ),
    "run": (
        "the whole pipeline in one run directory (no arguments: the digits demo)",
        "neas.recipes.run:RunConfig",
        "neas.recipes.run:main",
        (),
    ),
    "arch": ("print an ensemble architecture with its cost", _TOOLS + "ArchCommand", None, ()),
    "space": ("print a search space", _TOOLS + "SpaceCommand", None, ()),
    "latency-table": (
        "measure the per-(layer, op) latency table of a space on this machine",
        "neas.recipes.latency:LatencyTableCommand",
        None,
        (),
    ),
    "export": ("export an ensemble as one module (safetensors or ONNX), verified", _TOOLS + "ExportCommand", None, ()),
    "subimagenet": (
        "write the paper's 100-class subImageNet (250 train + 50 val per class)",
        "neas.data.subimagenet:SubImageNetCommand",
        None,
        (),
    ),
    "carve-test": (
        "split a train-only image folder into fixed, stratified train/ and test/ parts",
        "neas.data.carve:CarveTestCommand",
        None,
        (),
    ),
    "report": ("write RUN_DIR/report/index.html with the run's plots", _TOOLS + "ReportCommand", None, ()),
}
ABLATIONS = {
    "homo-hetero": ("retrain the searched ensemble and its mirrored (homogeneous) variants (Table 3)", _RETRAIN, ()),
    "split": (
        "retrain the ensemble with and without shared layers, and the best unshared one under the same budget (Table "
        "4)",
        _RETRAIN,
        (
            (
                "--equal-budget",
                {
                    "action": argparse.BooleanOptionalAction,
                    "default": True,
                    "help": "also search the best unshared ensemble under the search's budget (default: on)",
                },
            ),
        ),
    ),
    "paths": (
        "run one `neas run` config for K = 2, 3, 5 ... paths under its budget (Table 5)",
        None,
        (
            (
                "--config",
                {"required": True, "help": "a `neas run` YAML config (its budget and stages are used for every K)"},
            ),
            ("--paths", {"type": int, "nargs": "+", "default": [2, 3, 5], "help": "values of K (default: 2 3 5)"}),
            (
                "--reuse",
                {"nargs": "+", "metavar": "K=RUN", "help": "a finished `neas run` of the same config to use for K"},
            ),
            ("--out", {"required": True}),
        ),
    ),
    "deep-ensemble": (
        "retrain one arch N times from independent initialisations and score their average (a deep ensemble)",
        _RETRAIN,
        (("--copies", {"type": int, "default": 2, "help": "independently trained copies (default: 2)"}),),
    ),
    "search": (
        "evolution vs random search at equal evaluations, from runs with compare_random (Figure 5)",
        None,
        (
            (
                "--run",
                {"nargs": "+", "required": True, "help": "`neas run` directories with search/ and search_random/"},
            ),
            (
                "--top",
                {"type": int, "default": 10, "help": "also track the mean of the top-N ensembles found (default: 10)"},
            ),
            ("--out", {"required": True}),
        ),
    ),
}


def _schema(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _command(sub, name: str, help: str, schema: "str | None", handler, extra=(), skip=(), required=()) -> None:
    help = help.replace("%", "%%")  # argparse formats help strings with %
    p = sub.add_parser(name, help=help, description=help)
    if schema is not None:
        cls = _schema(schema)
        yaml_config = not schema.split(":")[1].endswith("Command")
        if yaml_config:
            p.add_argument(
                "--config",
                help="YAML file with any of the options below as keys"
                + (
                    " (default: the built-in digits demo, configs/demo.yaml, which sets its own values)"
                    if name == "run"
                    else ""
                ),
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
    p.set_defaults(handler=handler, schema=schema, fixed=required)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neas", description="One-shot neural ensemble architecture search (NEAS).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help, schema, handler, extra) in COMMANDS.items():
        _command(sub, name, help, schema, handler, extra)
    ab = sub.add_parser(
        "ablate",
        help="the paper's ablations, and a deep ensemble: homo-hetero, split, paths, search, deep-ensemble (resumable)",
    )
    ab = ab.add_subparsers(dest="ablation", required=True, metavar="ABLATION")
    for name, (help, schema, extra) in ABLATIONS.items():
        _command(
            ab,
            name,
            help,
            schema,
            "neas.recipes.ablate:main",
            extra,
            skip=("resume",),
            required=("arch", "out") if schema else (),
        )
    return parser


def _config(args):
    if args.schema is None:
        return None
    cls = _schema(args.schema)
    if args.command == "run":  # defaults to the demo; only set flags override it
        from neas.recipes.run import DEMO

        args.config = args.config or DEMO
    fixed = {k: getattr(args, k) for k in args.fixed}  # given as flags only: a YAML file may not move them
    return resolve_config(cls, getattr(args, "config", None), vars(args), getattr(args, "overrides", None), fixed)


def main(argv: "list[str] | None" = None) -> int:
    """Every error a user can cause ends as one line on stderr (:func:`neas.errors.report_error`)."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
        cfg = _config(args)
        handler = _schema(args.handler) if isinstance(args.handler, str) else args.handler
        (handler or (lambda cfg, args: print(cfg())))(cfg, args)
        return 0
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - argparse's SystemExit passes through
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
