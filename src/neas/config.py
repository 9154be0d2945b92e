"""Dataclass schemas: one declaration per option, read from YAML, the command line and
``key=value`` overrides, with errors that name the key.

A stage's config dataclass is its single schema. Each field is declared once with
:func:`option` (default and help text); library settings dataclasses nest inside it
(``shrink: ShrinkSettings``) with a ``prefix``, and are spelled *flat* outside Python — YAML keys
and CLI flags alike (``shrink_every`` / ``--shrink-every`` for ``cfg.shrink.every``). From the
schema come:

- :func:`from_dict` / :func:`to_dict`: flat mapping <-> dataclass, checking every key (an
  unknown one is named with the nearest valid key) and every value's type (they, the YAML reader
  and :func:`nested` live in :mod:`neas.fields`, below the CLI, and are re-exported here);
- :func:`add_options`: the argparse flags of a command, with help and defaults;
- :func:`resolve_config`: defaults <- ``--config`` YAML <- flags <- ``key=value`` overrides;
- :func:`check_inputs`: the input paths of :data:`INPUT_PATHS` exist, and :func:`check_outputs`: an
  existing output is refused as its command would refuse it, checked by the command line before the
  schema's own checks and the command's module import anything heavy.

Validation lives in each dataclass's ``__post_init__`` and raises :class:`NeasError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from neas.errors import NeasError, show
from neas.fields import flat_fields, from_dict, load_yaml, nested, parse_yaml_value, to_dict

__all__ = [
    "INPUT_PATHS",
    "add_options",
    "apply_overrides",
    "check_inputs",
    "check_outputs",
    "flat_fields",
    "from_dict",
    "load_yaml",
    "nested",
    "option",
    "resolve_config",
    "to_dict",
]

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    cli: bool = True,
    default_help: str | None = None,
    positional: bool = False,
    required: bool = False,
    valid: str | tuple | None = None,
):
    """A config field declared once: its default and help text become the YAML key's and the flag's.

    Args:
        cli: whether the command line gets a flag for it.
        default_help: how help describes the default when the value itself would not say it.
        positional, required: a positional argument, or a flag that must be given (small commands).
        valid: the valid values of a number — ``">= 1"``, ``"> 0"``, ``"[0, 1)"`` (an interval) or
            ``"9..21"`` (integers) — or a tuple of choices; checked for YAML, flags and Python alike,
            shown in the help.
    """
    metadata = {
        "help": help,
        "cli": cli,
        "default_help": default_help,
        "positional": positional,
        "required": required,
        "valid": valid,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies dotted ``key=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise NeasError(f"override {show(item)}: expected key=value")
        key, raw = item.split("=", 1)
        value = parse_yaml_value(raw, f"override {show(item)}") if raw else None
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is not None and not isinstance(node[part], dict):
                raise NeasError(f"override {show(item)}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def _flag_type(hint: Any) -> tuple[Any, str | None]:
    """(argparse type, nargs) of a field's type hint; ``None`` type: a string."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    origin = typing.get_origin(hint)
    if origin in (list, tuple) or hint in (list, tuple):
        inner = (typing.get_args(hint) or (str,))[0]
        return (inner if inner in (int, float) else None), "+"
    if hint in (int, float):
        return hint, None
    return None, None


def add_options(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), required: tuple[str, ...] = ()
) -> None:
    """Adds a flag (``--key-with-dashes``) for every key of ``cls``'s schema, except ``skip``.

    Flags default to ``None``, so a flag that is not given leaves the YAML's or the default's
    value; help shows the field's help and its default. Boolean keys get ``--key/--no-key``.
    Keys in ``required`` must be given as flags here.
    """
    for ff in flat_fields(cls):
        if not ff.cli or ff.key in skip:
            continue
        if ff.key in required:
            ff = dataclasses.replace(ff, required=True)
        shown = ff.default_help or ("none" if ff.default in (None, dataclasses.MISSING) else ff.default)
        valid = f"; valid: {', '.join(ff.valid) if isinstance(ff.valid, tuple) else ff.valid}" if ff.valid else ""
        help_text = (ff.help if ff.positional or ff.required else f"{ff.help} (default: {shown}{valid})").replace(
            "%", "%%"
        )
        name = ff.key.replace("_", "-")
        if ff.positional:
            parser.add_argument(ff.key, help=help_text)
            continue
        hint = ff.hint
        if hint is bool:
            parser.add_argument(
                f"--{name}", dest=ff.key, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kind, nargs = _flag_type(hint)
        metavar = ff.key.upper() if nargs is None else ff.key[0].upper()
        if isinstance(ff.valid, tuple):  # declared choices: shown here, checked (with suggestions) by check_valid
            metavar = "{" + ",".join(map(str, ff.valid)) + "}"
        parser.add_argument(
            f"--{name}",
            dest=ff.key,
            type=kind,
            nargs=nargs,
            default=None,
            help=help_text,
            required=ff.required,
            metavar=metavar,
        )


def resolve_config(
    cls: type[T],
    config_file: str | Path | None,
    flags: dict | None = None,
    overrides: list[str] | None = None,
    fixed: dict | None = None,
    *,
    inputs: bool = False,
) -> T:
    """``cls`` from its defaults, then the YAML ``config_file``, then the given ``flags`` (those
    that are not ``None``), then ``key=value`` ``overrides``, then ``fixed`` values; with ``inputs``,
    its input paths are checked first (:func:`check_inputs`), then an existing output (:func:`check_outputs`)."""
    data = load_yaml(config_file) if config_file else {}
    source = dict.fromkeys(data, f"{config_file}: ")  # where each top-level key was last set: a prefix or suffix
    keys = {ff.key for ff in flat_fields(cls)}
    given = {k: v for k, v in {**(flags or {}), **(fixed or {})}.items() if k in keys and v is not None}
    data.update(given)
    source.update(dict.fromkeys(given, ""))  # a flag's error names its key
    for item in overrides or []:
        data = apply_overrides(data, [item])
        source[item.split("=", 1)[0].strip().split(".")[0]] = f" (in override {show(item)})"
    data.update(fixed or {})
    try:
        if inputs:
            check_inputs(cls, data)
    except NeasError as exc:
        raise _blamed_on(exc, source, config_file) from None
    if inputs:
        check_outputs(cls, data)  # the line the command itself would say, as it says it
    try:
        return from_dict(cls, data)
    except NeasError as exc:
        raise _blamed_on(exc, source, config_file) from None


def _blamed_on(exc: NeasError, source: dict, config_file: str | Path | None) -> NeasError:
    """``exc`` with where its key was given: the YAML file (a prefix) or an override (a suffix)."""
    key, message = getattr(exc, "key", None), str(exc)
    blamed = source.get(key, f"{config_file}: " if config_file else "")
    return NeasError(f"{message}{blamed}" if blamed.startswith(" ") else f"{blamed}{message}")


# The keys that name an input mean the same in every command (a key is declared once: neas.options), so
# they are listed once here, with what each must be: a file, a directory, either ("path"), or a preset name
# or a file ("name or file": a file when it looks like one). The command line checks them before anything
# heavy is imported: a wrong path costs 0.1 s, not the 3-6 CPU-seconds of importing torch (fuzz report
# 2026-12, section 12). Existence only: what a file holds is its reader's to check.
INPUT_PATHS = {
    "checkpoint": "path",
    "init": "path",
    "official_checkpoint": "file",
    "backbone_weights": "file",
    "config": "file",
    "latency_table": "file",
    "scratch": "file",
    "arch": "name or file",
    "space": "name or file",
    "data_dir": "directory",
    "ood_data_dir": "directory",
    "supernet": "path",
    "run": "directory",
    "imagenet": "directory",
    "src": "directory",
}
_NOUNS = {"file": "file", "directory": "directory", "path": "file or directory", "name or file": "file"}
_BUILT_IN = {"data_dir": ("data", "download"), "ood_data_dir": ("ood_data", "ood_download")}  # its dataset, download


def check_inputs(cls: type, data: dict) -> None:
    """Refuses an input path given in ``data`` (keys of ``cls``) that does not exist, is a directory
    where a file is expected or the reverse, or is given to a dataset that reads no directory (the
    bundled digits); the error names the key and says what is expected. A default path (``neas
    search``'s runs/supernet) is its command's to check: a value error comes first."""
    fields = {ff.key: ff for ff in flat_fields(cls)}
    values = {k: ff.default for k, ff in fields.items() if ff.default is not dataclasses.MISSING} | data
    for key, kind in INPUT_PATHS.items():
        given = data.get(key) if key in fields else None
        if key in _BUILT_IN and given is not None:
            dataset, download = (values.get(k) for k in _BUILT_IN[key])
            if dataset == "digits":
                raise _blamed(key, f"{key}: the digits dataset is bundled with scikit-learn and reads no directory")
            if download:
                continue  # torchvision downloads into it: it may not exist yet
        for value in given if isinstance(given, list) else [given]:
            if isinstance(value, str) and value:
                _check_input(key, value, kind, fields[key].help)


def check_outputs(cls: type, data: dict) -> None:
    """Refuses an existing output (``--out``) before the schema's own checks and the command's module
    import torch (issue 39 item 4): ``cls.check_outputs(values)`` (the schema's flat keys, defaults
    included) applies the rule its command applies later when it writes (:mod:`neas.outputs`), with the
    command's ``--force`` and ``--resume``. Under torchrun only rank 0, the one that creates the directory,
    checks. A malformed ``out`` is :func:`from_dict`'s to name."""
    check = getattr(cls, "check_outputs", None)
    fields = {ff.key: ff for ff in flat_fields(cls)}
    values = {k: ff.default for k, ff in fields.items() if ff.default is not dataclasses.MISSING} | data
    if check is None or not isinstance(values.get("out"), str) or not values["out"]:
        return
    if os.environ.get("RANK", "0") == "0":
        check(values)


def _check_input(key: str, value: str, kind: str, help: str) -> None:
    path = Path(value).expanduser()
    if kind == "name or file" and not (path.suffix in (".json", ".yaml", ".yml") or "/" in value or path.exists()):
        return  # a preset name: the command's own reader knows them
    expected = f" (expected {help})" if help else ""
    if not path.exists():
        raise _blamed(key, f"{key}: no such {_NOUNS[kind]} {show(value)}{expected}")
    if kind == "directory" and not path.is_dir():
        raise _blamed(key, f"{key}: {show(value)} is a file, not a directory{expected}")
    if kind in ("file", "name or file") and path.is_dir():
        raise _blamed(key, f"{key}: {show(value)} is a directory, not a file{expected}")


def _blamed(key: str, message: str) -> NeasError:
    """An error about ``key``: :func:`resolve_config` says where it was given (a YAML file, an override)."""
    exc = NeasError(message)
    exc.key = key
    return exc
