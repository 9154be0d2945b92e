"""Dataclass schemas from plain dicts (YAML), with errors that name the key.

One helper turns a nested ``dict`` into a (frozen) dataclass, checking that every key exists
(an unknown key is named, with the nearest valid key suggested) and that every value has the
declared type. It serves the search-space YAML and every recipe config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from neas.errors import NeasError, suggest

__all__ = ["from_dict", "to_dict", "load_yaml", "apply_overrides"]

T = TypeVar("T")


def load_yaml(path: "str | Path") -> dict:
    """Reads a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise NeasError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NeasError(f"{path}:{where}: malformed YAML: {problem}") from None
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
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise NeasError(f"unknown key {path!r}{suggest(key, fields)}; valid keys: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, path)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise NeasError(f"{where or cls.__name__}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: dataclasses become dicts, tuples lists, values ``str()`` if custom."""
    if callable(getattr(type(obj), "parse", None)):
        return str(obj)  # values with a string form (ops)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def apply_overrides(data: dict, overrides: "list[str]") -> dict:
    """Applies dotted ``key=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise NeasError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
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
        raise NeasError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if hint is Any:
        return value
    if callable(getattr(hint, "parse", None)):
        return hint.parse(value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise NeasError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise NeasError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise NeasError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise NeasError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NeasError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NeasError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise NeasError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise NeasError(f"{path}: cannot interpret {value!r} as {getattr(hint, '__name__', hint)}")
