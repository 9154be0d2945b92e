"""Whether a command's output may be written, decided torch-free: the rules :mod:`neas.rundir` applies when
it creates or continues a run directory, and the refusal of an existing output directory, read from the
directory alone (its marker) without writing anything.

The command line asks them through each schema's ``check_outputs()`` before the command's module (and
torch) is imported, so an existing ``--out`` costs 0.1 s, not the 4-5 CPU-seconds of importing torch
(issue 39 item 4); the recipes ask again when they create the directory (the Python API's guard, and
the one that counts: the directory may have changed in between).
"""

from __future__ import annotations

from pathlib import Path

from neas.errors import NeasError
from neas.io import MAX_JSON_BYTES, loads_json
from neas.runfiles import MARKER

__all__ = [
    "check_claim_dir",
    "check_kind",
    "check_new_folder",
    "check_run_dir",
    "is_run_dir",
    "read_marker",
    "resumes",
    "run_kind",
]


def is_run_dir(run: Path) -> bool:
    """Whether ``run`` is a neas run directory (it has the marker)."""
    return (run / MARKER).is_file()


def read_marker(run: Path) -> dict:
    """The marker's fields ({} when there is none); a damaged marker is an error naming it."""
    path = run / MARKER
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ValueError("too large")
        marker = loads_json(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        marker = exc
    if not isinstance(marker, dict) or not all(isinstance(marker.get(k, ""), str) for k in ("kind", "cwd")):
        why = marker if isinstance(marker, Exception) else "not a JSON object with kind and cwd strings"
        raise NeasError(f"{path}: damaged run marker ({why}); nothing was touched: restore it, or choose another --out")
    return marker


def run_kind(path: str | Path | None) -> str | None:
    """The kind a run directory records in its marker (``retrain``, ``detect``, ``compare``, ...), of
    ``path`` or, for a file in one (its ``model.safetensors``), of its folder; None when there is none."""
    if path is None:
        return None
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return read_marker(folder).get("kind") if folder.is_dir() else None


def check_kind(run: Path, kind: str) -> None:
    """Refuses a run directory whose marker names another kind of command."""
    found = read_marker(run).get("kind", kind)
    if found != kind:
        raise NeasError(f"{run} is a {found} directory, not a {kind} one; choose another --out")


def _not_a_file(run: Path) -> None:
    if run.exists() and not run.is_dir():
        raise NeasError(f"--out {run} is a file, not a directory")


def check_run_dir(out: str | Path, resume: bool, kind: str) -> Path:
    """What :func:`neas.rundir.prepare_run_dir` refuses before it writes: a file; with ``resume``, a
    directory that is missing, has no marker or another kind's; without, any non-empty directory."""
    run = Path(out)
    _not_a_file(run)
    if resume:
        if not run.is_dir():
            raise NeasError(f"--resume: {run} does not exist, so there is no checkpoint to resume from")
        if not is_run_dir(run):
            raise NeasError(f"--resume: {run} is not a neas run directory (no {MARKER}); nothing in it was touched")
        check_kind(run, kind)
    elif run.exists() and any(run.iterdir()):
        raise NeasError(f"run directory {run} already exists: pass --resume to continue it, or choose another --out")
    return run


def resumes(out: str | Path, resume: bool) -> bool:
    """``--resume`` of `neas run` and `neas detect`: of a directory not there yet (or empty), it just starts."""
    out = Path(out)
    return resume and out.is_dir() and any(out.iterdir())


def check_claim_dir(out: str | Path, kind: str) -> Path:
    """What :func:`neas.rundir.claim_dir` refuses before it writes: a file, and a non-empty directory
    that is not one this kind of command made (results accumulate across calls there)."""
    run = Path(out)
    _not_a_file(run)
    if run.is_dir() and any(run.iterdir()):
        if not is_run_dir(run):
            raise NeasError(
                f"--out {run} exists and is not a neas {kind} directory (no {MARKER}); choose another --out; nothing "
                "was touched"
            )
        check_kind(run, kind)
    return run


def check_new_folder(out: str | Path) -> Path:
    """An output folder that must be new or empty (``neas subimagenet``, ``neas carve-test``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeasError(f"--out {out} is a file; choose another --out (nothing is overwritten)")
    if out.exists() and any(out.iterdir()):
        raise NeasError(f"{out} already exists and is not empty; choose another --out")
    return out
