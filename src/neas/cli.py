"""The ``neas`` command: one subcommand per recipe.

Every user-input error is a :class:`~neas.errors.NeasError`, printed as one line
(``neas: error: ...``) with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from neas.errors import NeasError

__all__ = ["main", "build_parser"]


def _load_arch_and_space(spec: str, space_spec: "str | None"):
    from neas.space import EnsembleArch, SearchSpace

    arch = EnsembleArch.resolve(spec)
    space_name = space_spec
    if space_name is None and str(spec).endswith(".json") and Path(spec).is_file():
        stored = json.loads(Path(spec).read_text()).get("space")
        if isinstance(stored, dict):
            return arch, SearchSpace.from_dict(stored)
        space_name = stored
    return arch, SearchSpace.resolve(space_name or "imagenet")


def _cmd_arch(args) -> int:
    from neas.recipes.inspect import arch_report, arch_summary

    arch, space = _load_arch_and_space(args.arch, args.space)
    arch.validate(space)
    if args.json:
        print(json.dumps(arch_summary(space, arch, args.num_classes, args.input_size)))
    else:
        print(arch_report(space, arch, args.num_classes, args.input_size, title=str(args.arch)))
    return 0


def _cmd_space(args) -> int:
    from neas.recipes.inspect import space_report
    from neas.space import SearchSpace

    space = SearchSpace.resolve(args.space)
    print(space.to_yaml() if args.yaml else space_report(space))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neas", description="One-shot neural ensemble architecture search (NEAS).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("arch", help="print an ensemble architecture with its cost")
    p.add_argument("arch", help="neas-s, neas-m, neas-l or an arch JSON file")
    p.add_argument("--space", help="search space preset or YAML file (default: the file's, else imagenet)")
    p.add_argument("--input-size", type=int, help="input resolution (default: the space's)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_arch)

    p = sub.add_parser("space", help="print a search space")
    p.add_argument("space", help="preset (imagenet, cifar, tiny) or YAML file")
    p.add_argument("--yaml", action="store_true", help="print the resolved space as YAML")
    p.set_defaults(func=_cmd_space)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args) or 0
    except NeasError as exc:
        print(f"neas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
