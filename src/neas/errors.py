"""The one exception type users see.

Every check of user input (a preset name, an op, an arch, a YAML key, a data directory)
raises :class:`NeasError` with a one-line message that says what was wrong and where; the
CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

import difflib

__all__ = ["NeasError", "suggest"]


class NeasError(ValueError):
    """A user-facing error: bad input, named precisely."""


def suggest(word: str, choices) -> str:
    """Returns `` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
