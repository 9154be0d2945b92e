"""Typed values from text: the hardened YAML reader, and dataclasses read from and written to flat
mappings with every key and value checked (an unknown key is named with the nearest valid one).

:func:`from_dict` / :func:`to_dict` are the one reader and writer of every dataclass neas stores
as data: command configs (through :mod:`neas.config`, which adds flags and overrides), search
spaces, settings. A settings dataclass nested in another (:func:`nested`) is spelled flat outside
Python (``shrink_every`` for ``cfg.shrink.every``; :func:`flat_fields`). :func:`load_yaml` reads a
YAML mapping as ``yaml.safe_load`` does, refusing duplicate keys and alias bombs. Standard library
and PyYAML only: the space and the algorithm packages read their data here, below the CLI.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from neas.errors import NeasError, show, suggest
from neas.settings import check_valid

__all__ = ["FlatField", "flat_fields", "from_dict", "load_yaml", "nested", "parse_yaml_value", "to_dict"]

T = TypeVar("T")


def nested(settings: type, prefix: str = "", rename: dict | None = None):
    """A field holding a settings dataclass (``ShrinkSettings``), its default built by the class,
    whose keys are spelled flat outside Python: each starts with ``prefix`` (``"shrink_"``) unless
    ``rename`` spells it otherwise (``{"mode": "shrink"}``)."""
    metadata = {"help": "", "cli": True, "prefix": prefix, "rename": rename or {}}
    return dataclasses.field(default_factory=settings, metadata=metadata)


@dataclass(frozen=True)
class FlatField:
    """One key of a schema as written outside Python."""

    key: str  # YAML key; the flag is --key-with-dashes
    path: tuple[str, ...]  # attribute path in the dataclass (one element unless nested)
    hint: Any
    default: Any
    help: str
    cli: bool
    default_help: str | None
    positional: bool = False
    required: bool = False
    valid: str | None = None


def _nested(f: dataclasses.Field, hint: Any) -> bool:
    return "prefix" in f.metadata and dataclasses.is_dataclass(hint)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@cache
def flat_fields(cls: type) -> tuple[FlatField, ...]:
    """The keys of ``cls`` as written in YAML and on the command line, nested settings flattened."""
    hints = typing.get_type_hints(cls)
    own = inspect.get_annotations(cls)
    out = []
    for f in sorted(
        dataclasses.fields(cls), key=lambda f: f.name not in own
    ):  # a mixin's options after the class's own
        if not f.init:
            continue
        hint = hints[f.name]
        if _nested(f, hint):
            for sub in flat_fields(hint):
                key = f.metadata["rename"].get(sub.key, f.metadata["prefix"] + sub.key)
                out.append(
                    dataclasses.replace(
                        sub, key=key, path=(f.name, *sub.path), cli=sub.cli and f.metadata.get("cli", True)
                    )
                )
        else:
            meta = f.metadata
            out.append(
                FlatField(
                    f.name,
                    (f.name,),
                    hint,
                    _default(f),
                    meta.get("help", ""),
                    meta.get("cli", True),
                    meta.get("default_help"),
                    meta.get("positional", False),
                    meta.get("required", False),
                    meta.get("valid"),
                )
            )
    return tuple(out)


MAX_YAML_NODES = 100_000  # values a YAML document may expand to through aliases (a config has a few hundred)
MAX_YAML_VALUES = 20_000  # values a YAML document may hold as written: composing each costs ~30 us
MAX_INT_BITS = 63  # an integer option, like the tensors' sizes it sets, fits int64
MAX_YAML_BYTES = 2**20  # a config or space file: the largest we ship is 1.5 KB; a larger one is not a config


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing duplicate keys, documents that aliases blow up, documents
    of more than :data:`MAX_YAML_VALUES` values (refused while they are read, not after) and integers
    too long for Python to convert."""

    composed = 0

    def compose_node(self, parent, index):
        self.composed += 1
        if self.composed > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"more than {MAX_YAML_VALUES} values (a config has a few hundred)",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            value = None
        if value is None or value.bit_length() > MAX_INT_BITS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the integer {show(node.value, 40)} is too large (at most {2**MAX_INT_BITS - 1})",
                node.start_mark,
            )
        return value

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"duplicate key {show(key.value)} (first on line {seen[key.value].line + 1})",
                            key.start_mark,
                        )
                    seen[key.value] = key.start_mark
        return super().construct_mapping(node, deep)


class _OverrideLoader(_Loader):
    """:class:`_Loader` with YAML 1.2 booleans: only true/false, so ``off``, ``no``, ``yes``, ``on`` stay strings."""

    yaml_implicit_resolvers: typing.ClassVar[dict] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_OverrideLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_size(node, sizes: dict, mark) -> int:
    """How many values ``node`` stands for with every alias expanded (memoised: aliases share nodes)."""
    if id(node) in sizes:
        if sizes[id(node)] is None:
            raise yaml.constructor.ConstructorError(None, None, "a recursive alias", mark)
        return sizes[id(node)]
    sizes[id(node)] = None
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    size = 1 + sum(_expanded_size(child, sizes, mark) for child in children)
    if size > MAX_YAML_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"its aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?)", node.start_mark
        )
    sizes[id(node)] = size
    return size


def _parse_yaml(text: str, where: str, loader: type = _Loader) -> Any:
    """``text`` read as one YAML document by ``loader``; errors are a NeasError naming ``where``."""
    parser = loader(text)
    try:
        return parser.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NeasError(f"{where}:{at} malformed YAML: {problem}") from None
    except RecursionError:
        raise NeasError(f"{where}: malformed YAML: nested too deeply") from None
    finally:
        parser.dispose()


def load_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping as ``yaml.safe_load`` does, refusing duplicate keys and alias bombs; errors name the
    file."""
    path = Path(path)
    if not path.is_file():
        raise NeasError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise NeasError(
            f"{path}: {size} bytes is too large for a YAML config (at most {MAX_YAML_BYTES}; a config has a few KB)"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NeasError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    data = _parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NeasError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Builds dataclass ``cls`` from ``data``, validating keys and value types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise NeasError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    nested = {name: {} for name, f in fields.items() if _nested(f, hints[name])}
    routes = {ff.key: ff for ff in flat_fields(cls) if len(ff.path) > 1}
    keys = [ff.key for ff in flat_fields(cls)]
    kwargs, schema = {}, _Schema(fields, hints, routes, keys)
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        try:
            _read_key(key, value, path, schema, nested, kwargs)
        except NeasError as exc:
            exc.key = key  # the outermost key wins: resolve_config names where it came from
            raise
    for name, values in nested.items():
        kwargs[name] = from_dict(hints[name], values, where)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise NeasError(f"{where or cls.__name__}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


class _Schema(typing.NamedTuple):
    """What :func:`from_dict` knows of a dataclass: its fields, their types, the flat keys of its
    nested settings (key -> :class:`FlatField`) and every valid key."""

    fields: dict
    hints: dict
    routes: dict
    keys: list


def _read_key(key, value, path: str, schema: _Schema, nested: dict, kwargs: dict):
    """Checks one key of :func:`from_dict`'s mapping into ``kwargs`` (or ``nested`` for flat-spelled settings)."""
    fields, hints, keys = schema.fields, schema.hints, schema.keys
    if key in schema.routes:  # a nested settings field, spelled flat: checked under the user's spelling
        ff = schema.routes[key]
        if isinstance(value, dict):
            raise NeasError(
                f"{path}: expected a value, got a mapping (nested settings are spelled flat, e.g. shrink_every: 5)"
            )
        node = nested[ff.path[0]]
        for part in ff.path[1:-1]:
            node = node.setdefault(part, {})
        node[ff.path[-1]] = check_valid(ff.valid, _coerce(ff.hint, value, path), path)
        return
    if key not in fields or key in nested:
        raise NeasError(f"unknown key {show(path)}{suggest(str(key), keys)}; valid keys: {', '.join(keys)}")
    kwargs[key] = check_valid(fields[key].metadata.get("valid"), _coerce(hints[key], value, path), path)
    if key == "out" and isinstance(kwargs[key], str) and not kwargs[key].strip():
        raise NeasError("out: an empty path; give a directory (the current directory is never a run directory)")


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: dataclasses become (flat) dicts, tuples lists, values ``str()`` if custom."""
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int) and callable(getattr(type(obj), "parse", None)):
        return int(obj)  # amounts: an int with a parser for "300M"
    if callable(getattr(type(obj), "parse", None)):
        return str(obj)  # values with a string form (ops)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for ff in flat_fields(type(obj)):
            value = obj
            for part in ff.path:
                value = getattr(value, part)
            out[ff.key] = to_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _coerce_sequence(origin, args: tuple, value: Any, path: str):
    """A list or tuple value, each item coerced to its type."""
    if not isinstance(value, (list, tuple)):
        raise NeasError(f"{path}: expected a list, got {show(value)}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise NeasError(f"{path}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    inner = args[0] if args else Any
    items = [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _coerce_union(args: tuple, value: Any, path: str) -> Any:
    """``value`` as the first member of a union that takes it (None where the union allows it)."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, path)
        except NeasError as exc:
            errors.append(str(exc))
    raise NeasError(errors[0] if errors else f"{path}: invalid value {show(value)}")


def _as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise NeasError(f"{path}: expected true or false, got {show(value)}")
    return value


def _as_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NeasError(f"{path}: expected an integer, got {show(value)}")
    if value.bit_length() > MAX_INT_BITS:  # torch would fail "Overflow when unpacking long long"
        raise NeasError(f"{path}: {show(value, 40)} is too large for an integer option (at most {2**MAX_INT_BITS - 1})")
    return value


def _as_float(value: Any, path: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NeasError(f"{path}: expected a number, got {show(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond 1.8e308
        raise NeasError(f"{path}: {show(value, 40)} is too large for a number") from None


def _as_str(value: Any, path: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise NeasError(f"{path}: expected a string, got {show(value)}")
    return str(value)


def _as_dict(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise NeasError(f"{path}: expected a mapping, got {show(value)}")
    return dict(value)


_SCALARS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _coerce(hint: Any, value: Any, path: str) -> Any:
    """``value`` (from YAML, a flag or an override) checked and converted to the type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(typing.get_args(hint), value, path)
    if hint is Any:
        return value
    if callable(getattr(hint, "parse", None)):
        try:
            return hint.parse(value)
        except NeasError as exc:
            raise NeasError(str(exc) if str(exc).startswith(path) else f"{path}: {exc}") from None
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (tuple, list):
        return _coerce_sequence(origin, typing.get_args(hint), value, path)
    if origin is dict:
        return _as_dict(value, path)
    if hint in _SCALARS:
        return _SCALARS[hint](value, path)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise NeasError(f"{path}: cannot interpret {show(value)} as {getattr(hint, '__name__', hint)}")


def parse_yaml_value(text: str, where: str) -> Any:
    """One ``key=value`` override's value, read as a YAML scalar with YAML 1.2 booleans (only
    true/false: ``off``, ``no``, ``yes``, ``on`` stay strings)."""
    return _parse_yaml(text, where, _OverrideLoader)
