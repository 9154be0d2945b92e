"""What an algorithm's settings are made of, below the command line: a field with its help and
valid range (:func:`setting`), the range check (:func:`check_valid`, :func:`validate_fields`) and
budget amounts with K/M/G suffixes (:class:`Amount`).

``shrink/``, ``search/``, ``cost/`` and the other algorithm packages declare their settings
dataclasses with these and import nothing of the CLI (``neas.config``, ``neas.options``,
``neas.schemas``); the schemas nest those dataclasses, and :mod:`neas.config` reads the same field
metadata to make their YAML keys and flags. Standard library only: no torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from neas.errors import NeasError, show, suggest

__all__ = ["Amount", "check_valid", "parse_amount", "setting", "validate_fields"]


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    valid: str | tuple | None = None,
    default_help: str | None = None,
):
    """A settings field: its default, the help text its flag and YAML key show, and its valid
    values (see :func:`check_valid`), kept in the field's metadata."""
    metadata = {"help": help, "valid": valid, "default_help": default_help}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def check_valid(spec: str | tuple | None, value: Any, name: str) -> Any:
    """``value`` if it is ``None`` or within ``spec`` (see :func:`option`); else a NeasError naming ``name``."""
    if isinstance(spec, tuple):  # declared choices
        if value is not None and value not in spec:
            raise NeasError(
                f"{name}: unknown {show(value)}{suggest(str(value), [str(c) for c in spec])}; choose "
                f"{', '.join(map(str, spec))}"
            )
        return value
    if spec is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    integer = isinstance(value, int)
    finite = integer or math.isfinite(value)
    spec = spec.strip()
    if ".." in spec:
        lo, hi = (int(x) for x in spec.split(".."))
        ok, phrase = lo <= value <= hi, f"be in {spec}"
    elif spec.startswith(">"):
        strict = not spec.startswith(">=")
        bound = spec[1 if strict else 2 :].strip()
        ok = finite and (value > float(bound) if strict else value >= float(bound))
        if integer:
            least = int(float(bound)) + strict
            phrase = "not be negative" if least == 0 else f"be at least {least}"
        else:
            phrase = f"be a finite number {'>' if strict else '>='} {bound}"
    else:
        lo, hi = (float(x) for x in spec[1:-1].split(","))
        ok = (
            finite
            and (value >= lo if spec[0] == "[" else value > lo)
            and (value <= hi if spec[-1] == "]" else value < hi)
        )
        phrase = f"be in {spec}"
    if not ok:
        raise NeasError(f"{name} must {phrase}, got {show(value)}")
    return value


def validate_fields(obj) -> None:
    """Checks every field of the dataclass ``obj`` that declares ``valid`` (mixins' fields included)."""
    for f in dataclasses.fields(obj):
        check_valid(f.metadata.get("valid"), getattr(obj, f.name), f.name)


class Amount(int):
    """A count (MACs, FLOPs, params) that configs and flags may write as ``300M``, ``1.5G``, ``800K``."""

    @classmethod
    def parse(cls, value: str | int | float) -> Amount:
        return cls(parse_amount(value))


def parse_amount(text: str | int | float) -> int:
    """Parses ``300M``, ``1.5G``, ``800K`` or a plain number into an integer."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and math.isfinite(text):
        return int(text)
    raw = str(text).strip()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}.get(raw[-1:].lower(), 1)
    number = raw[:-1] if scale != 1 else raw
    try:
        value = float(number)
    except ValueError:
        raise NeasError(
            f"cannot read {show(text)} as an amount: expected a number with an optional K/M/G suffix, e.g. 300M"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise NeasError(f"amount {show(text)} must be a finite number >= 0")
    return int(round(value * scale))
