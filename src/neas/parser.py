"""argparse that speaks neas: no prefix matching, one-line errors, subcommands filled lazily.

Used by :mod:`neas.cli` for the parser and every subparser: ``--epoch`` is not taken for
``--epochs``; every argparse error becomes one :class:`~neas.errors.NeasError` line
(``neas: error: ...``, with a suggestion for an unknown command or flag) instead of a usage block;
a subcommand's arguments (and the import of its schema's module) wait until it is parsed or its
help is shown, so ``neas --help`` imports no torch.
"""

from __future__ import annotations

import argparse
import re

from neas.errors import NeasError, suggest

__all__ = ["Parser"]

_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")  # a key=value override (supernet.epochs=6)


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (``--epoch`` is not ``--epochs``), whose errors are one
    :class:`NeasError` line (``neas: error: ...``) instead of a usage block and ``exit(2)``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    fill = None  # a subcommand's arguments, added the first time it is parsed or its help shown

    def _filled(self) -> None:
        fill, self.fill = self.fill, None
        if fill is not None:
            fill()

    def parse_known_args(self, args=None, namespace=None):
        self._filled()
        return super().parse_known_args(self._overrides_last(args), namespace)

    def _overrides_last(self, args):
        """``key=value`` overrides moved behind ``--``, so a list flag before them (``--rows neas
        supernet.epochs=6``, ``--budgets 1M 2M seed=1``) does not take them as its values; a token that is
        a one-value flag's value (``--out a=b``) stays."""
        if args is None or not any(a.dest == "overrides" for a in self._actions):
            return args
        single = {f for a in self._actions if a.nargs in (None, "?") for f in a.option_strings}
        kept, moved = [], []
        for i, token in enumerate(args):
            after_separator = "--" in kept
            if not after_separator and _OVERRIDE.match(token) and not (i and args[i - 1] in single):
                moved.append(token)
            else:
                kept.append(token)
        return kept + ([] if not moved or "--" in kept else ["--"]) + moved

    def format_help(self) -> str:
        self._filled()
        return super().format_help()

    def error(self, message: str):
        choice = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from", message)
        commands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        if choice and commands and choice.group(1) in ("COMMAND", "ABLATION"):
            names = list(commands[0].choices)
            what = "command" if choice.group(1) == "COMMAND" else "ablation"
            where = "" if self.prog == "neas" else f"{self.prog}: "  # the top level: "neas: error:" says it
            raise NeasError(
                f"{where}unknown {what} {choice.group(2)!r}{suggest(choice.group(2), names)}; "
                f"{what}s: {', '.join(names)}"
            )
        unknown = re.match(r"unrecognized arguments: (-\S+)", message)
        if unknown:
            flags = [f for p in _parsers(self) for a in p._actions for f in a.option_strings]
            message += suggest(unknown.group(1).split("=")[0], flags)
        kind = re.match(r"argument (\S+): invalid (int|float) value: (.*)", message)
        if kind:
            number = "an integer" if kind.group(2) == "int" else "a number"
            message = f"{kind.group(1)}: expected {number}, got {kind.group(3)}"
            if re.fullmatch(r"'[-+]?\d+'", kind.group(3)):  # digits that int() refuses: more than it converts
                digits = sum(c.isdigit() for c in kind.group(3))
                message = f"{kind.group(1)}: an integer of {digits} digits is too large"
        where = "" if self.prog == "neas" else f"{self.prog}: "  # the top level: "neas: error:" says it already
        raise NeasError(f"{where}{message} (see {self.prog} --help)")


def _parsers(parser: argparse.ArgumentParser):
    """``parser`` and every subparser built under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)
