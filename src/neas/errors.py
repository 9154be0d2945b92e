"""The one exception type users see.

Every check of user input (a preset name, an op, an arch, a YAML key, a data directory)
raises :class:`NeasError` with a one-line message that says what was wrong and where; the
CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import signal
import sys

__all__ = ["NeasError", "report_error", "show", "suggest"]

MAX_MESSAGE = 1000  # characters of an error line: a crafted input must not print megabytes
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 8


class NeasError(ValueError):
    """A user-facing error: bad input, named precisely.

    Args:
        message: one line that names the option, field or file, what was given and what is valid.

    The CLI prints it as ``neas: error: <message>`` and exits with status 2; from Python it is a
    ``ValueError``, so ``except ValueError`` catches it too.

    Example:
        >>> from neas import NeasError, Op
        >>> try:
        ...     Op.parse("k4e6")
        ... except NeasError as error:
        ...     print(error)
        op 'k4e6': the kernel size must be odd and positive
    """


def suggest(word: str, choices) -> str:
    """Returns `` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def show(value, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for echoing user input in an error."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer of more digits than str() converts (sys.get_int_max_str_digits)
        digits = f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits" if isinstance(value, int) else ""
        text = digits or f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# torch's DataLoader re-raises a worker's exception with the worker's whole traceback as its message
_WORKER = re.compile(
    r"Caught (?P<kind>\w+) in (?P<where>DataLoader worker process \d+)\.\s*Original Traceback \(most recent call "
    r"last\):\n.*\n[\w.]+: ?(?P<message>.*?)\s*$",
    re.S,
)


def _text(exc: BaseException) -> str:
    """``str(exc)``; for an exception a DataLoader worker raised, its own message and the worker, not the
    traceback that torch puts in front of it."""
    text = str(exc)
    worker = _WORKER.match(text)
    if worker is None:
        return text
    kind = "" if isinstance(exc, NeasError) else f"{worker['kind']} "
    return f"{worker['message']} ({kind}in {worker['where']})"


def _interrupted(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The line and exit status of an interruption: 128 + the signal's number, the shell's convention
    for a process a signal stopped (Ctrl-C 130; SIGTERM 143 and SIGHUP 129, which ``neas compare``
    handles like Ctrl-C: ``KeyboardInterrupt("SIGTERM")``), so a caller can tell which stopped it."""
    name = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "SIGINT"
    number = getattr(signal.Signals, name, signal.SIGINT) if name.startswith("SIG") else signal.SIGINT
    by = "" if number == signal.SIGINT else f" by {number.name}"
    return f"interrupted{by} (a run resumes with --resume from its last checkpoint)", 128 + int(number)


def report_error(exc: BaseException) -> int:
    """Prints ``exc`` as one line ``neas: error: ...`` on stderr; returns the exit status (2, or
    128 + the signal's number for an interruption: 130 for Ctrl-C, 143 for SIGTERM). An unexpected
    exception is re-raised when ``NEAS_DEBUG`` is set."""
    if isinstance(exc, KeyboardInterrupt):
        message, status = _interrupted(exc)
    elif isinstance(exc, NeasError):
        message, status = _text(exc), 2
    elif isinstance(exc, OSError):  # an unwritable, missing or wrong path
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        message, status = f"{exc.strerror or _text(exc)}{where}", 2
    elif os.environ.get("NEAS_DEBUG"):
        raise exc
    else:
        message, status = f"unexpected {type(exc).__name__}: {_text(exc)} (set NEAS_DEBUG=1 to see the traceback)", 2
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters cut)"
    print(f"neas: error: {message}", file=sys.stderr)
    return status
