"""Job configs: files an orchestrating command derives from its own config and writes once for its
jobs (``neas compare``'s ``OUT/configs/*.yaml``). Each is written headed by the SHA-256 of its text,
which tells, on a rerun, a file damaged or edited since it was written (rewritten from the plan: it
is derived data, nothing of the user's) from one that holds another plan intact (refused: the
finished jobs ran that plan)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from neas.errors import NeasError
from neas.io import write_text

__all__ = ["STAMP", "job_configs_to_write", "write_job_config"]

log = logging.getLogger(__name__)

STAMP = "# written by neas from its plan; SHA-256 of the lines below: "


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stamped(text: str) -> str:
    return f"{STAMP}{_digest(text)}\n{text}"


def write_job_config(path: Path, text: str) -> None:
    """Writes the job config ``text`` to ``path``, headed by its SHA-256 (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, _stamped(text))


def _must_write(path: Path, text: str, source: str) -> bool:
    """Whether ``path`` (planned content ``text``) is to be written: it is not there, or it was
    damaged or edited since it was written from this same plan. One that holds another plan intact
    is refused, and so is one whose origin cannot be told (no intact header)."""
    try:
        held = path.read_text()
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError):
        held = ""
    if held in (_stamped(text), text):  # as written (unstamped: by an older neas)
        return False
    first, _, rest = held.partition("\n")
    written = first.removeprefix(STAMP) if first.startswith(STAMP) else None
    if written == _digest(text):
        log.warning("%s: damaged or edited since it was written; rewritten from the plan", path)
        return True
    if written is not None and written == _digest(rest):
        raise NeasError(
            f"{path}: differs from the config this call would run now (was {source} edited?); restore it, "
            "or use another --out"
        )
    raise NeasError(
        f"{path}: damaged, and what it held cannot be told; if {source} is unchanged since its jobs started, "
        "delete it and rerun (it is rewritten from the plan), else use another --out"
    )


def job_configs_to_write(files: dict[Path, str], source: str) -> list[Path]:
    """Those of ``files`` (path -> planned text) to write now (:func:`_must_write`); raises, naming the
    file, when one holds another plan (``source``: what the plan comes from, for the message)."""
    return [path for path, text in files.items() if _must_write(path, text, source)]
