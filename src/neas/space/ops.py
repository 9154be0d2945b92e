"""The op vocabulary: MBConv ``k{kernel}e{expansion}`` and ``skip``.

Ops are small frozen values with a readable string form. The official NEAS code names the
six MBConv candidates by integer ids (0 k3e4, 1 k3e6, 2 k5e4, 3 k5e6, 4 k7e4, 5 k7e6) and skip
by -1; those ids are used only at the border with the official ``arch_list``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from neas.errors import NeasError

__all__ = ["OFFICIAL_IDS", "SKIP", "Op", "op_from_official", "op_to_official", "parse_op"]

_PATTERN = re.compile(r"^k(\d+)e(\d+)$")


@dataclass(frozen=True, order=True)
class Op:
    """One candidate operation of a searchable layer, written ``k<kernel>e<expansion>`` or ``skip``.

    Args:
        kernel: the depthwise convolution's kernel size (odd); 0 encodes skip (identity).
        expansion: the inverted bottleneck's expansion ratio; 0 for skip.

    An op that is not skip is an MBConv with a depthwise ``kernel x kernel`` convolution and
    expansion ratio ``expansion``. :meth:`parse` reads the written form.

    Example:
        >>> from neas import Op
        >>> Op.parse("k5e6") == Op(5, 6)
        True
        >>> str(Op(3, 4)), Op.parse("skip").is_skip
        ('k3e4', True)
    """

    kernel: int  # depthwise kernel size; 0 for skip
    expansion: int  # expansion ratio of the inverted bottleneck; 0 for skip

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0

    def __str__(self) -> str:
        return "skip" if self.is_skip else f"k{self.kernel}e{self.expansion}"

    def __repr__(self) -> str:
        return f"Op({str(self)!r})"

    @staticmethod
    def parse(name: str | Op) -> Op:
        """The op written ``name`` (``"k5e6"``, ``"skip"``); raises :class:`~neas.errors.NeasError` otherwise."""
        return parse_op(name)


SKIP = Op(0, 0)


def parse_op(name: str | Op) -> Op:
    """Parses ``"k5e6"`` or ``"skip"`` into an :class:`Op`."""
    if isinstance(name, Op):
        return name
    text = str(name).strip().lower()
    if text in ("skip", "identity", "id"):
        return SKIP
    match = _PATTERN.match(text)
    if not match:
        raise NeasError(f"unknown op {name!r}: expected 'skip' or 'k<kernel>e<expansion>' such as 'k5e6'")
    kernel, expansion = int(match.group(1)), int(match.group(2))
    if kernel % 2 == 0 or kernel < 1:
        raise NeasError(f"op {name!r}: the kernel size must be odd and positive")
    if expansion < 1:
        raise NeasError(f"op {name!r}: the expansion ratio must be at least 1")
    return Op(kernel, expansion)


# Official ids of the released NEAS code (docs/DESIGN.md §2).
OFFICIAL_IDS: dict[int, Op] = {
    0: Op(3, 4),
    1: Op(3, 6),
    2: Op(5, 4),
    3: Op(5, 6),
    4: Op(7, 4),
    5: Op(7, 6),
    -1: SKIP,
}
_TO_OFFICIAL = {op: i for i, op in OFFICIAL_IDS.items()}


def op_from_official(op_id: int) -> Op:
    try:
        return OFFICIAL_IDS[int(op_id)]
    except (KeyError, ValueError, TypeError):
        raise NeasError(f"unknown official op id {op_id!r}: expected one of {sorted(OFFICIAL_IDS)}") from None


def op_to_official(op: Op) -> int:
    try:
        return _TO_OFFICIAL[op]
    except KeyError:
        raise NeasError(
            f"op {op} has no official id (official ops: {', '.join(map(str, OFFICIAL_IDS.values()))})"
        ) from None
