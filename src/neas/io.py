"""The one module that writes files, and reads safetensors files (docs/DESIGN.md, "Files").

Every write is atomic: the bytes go to a temporary file beside the target (opened exclusively,
never through a symlink), are flushed and fsynced, and renamed over the target, whose folder is
fsynced too — a reader sees the old file or the new one, never half of one, whatever moment a
run is killed at. A symlink at the target is replaced, not followed. Nothing here unpickles.

torch and safetensors are imported by the functions that need them: the space, the config and
the command line write files too and must not pay for importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from neas.errors import NeasError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_JSON_BYTES",
    "append_line",
    "atomic_write",
    "check_distinct_outputs",
    "check_output",
    "check_output_dir",
    "load_matching",
    "load_weights",
    "loads_json",
    "read_json",
    "read_jsonl",
    "read_metadata",
    "record_sha256",
    "remove_stale_temporaries",
    "save_figure",
    "save_tensors",
    "tensors_sha256",
    "write_bytes",
    "write_json",
    "write_text",
    "write_yaml",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: int = 0o644) -> Path:
    """Calls ``write(binary file)`` on a temporary file beside ``path``, then renames it over ``path``
    (``mode`` less the umask, as for every file neas writes). A failed write (a full disk)
    leaves the old file and raises a :class:`NeasError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    try:
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:  # left by a killed writer that had this PID: ours to replace
            tmp.unlink()
            fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise NeasError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NeasError(
                f"{path}: cannot write ({exc.strerror or exc}); the previous file, if any, is kept"
            ) from None
        raise
    _fsync_dir(path.parent)
    return path


_TEMPORARY = re.compile(r"\.(.+)\.(\d+)\.tmp")  # the name atomic_write gives the bytes it has not renamed yet


def remove_stale_temporaries(root: str | Path, nested_marker: str) -> list[Path]:
    """Removes the temporary files that :func:`atomic_write` leaves when its process is killed mid-write
    (``.name.<pid>.tmp``) under ``root``, except those of a process that still runs (other than this one)
    and those below a nested directory holding ``nested_marker`` (another run's, with its own writer).
    Call it with ``root`` locked by this process (no write of ours in progress there); returns the removed."""
    removed = []
    for folder, subfolders, files in os.walk(root):  # symlinked folders are not entered
        subfolders[:] = [d for d in subfolders if not os.path.lexists(os.path.join(folder, d, nested_marker))]
        for name in files:
            match = _TEMPORARY.fullmatch(name)
            if match and not _runs_elsewhere(int(match.group(2))):
                path = Path(folder, name)
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _runs_elsewhere(pid: int) -> bool:
    """Whether another process with ``pid`` runs (this process's own PID: a killed run's, reused)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or no PID at all: left alone
    return True


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """NumPy arrays as one uncompressed ``.npz`` (readable with ``numpy.load(path)``, no pickles)."""
    import numpy as np  # the vocabulary layer imports no numpy at module load (neas --help stays light)

    return atomic_write(path, lambda f: np.savez(f, **arrays))


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    """``value`` as JSON with a final newline (``indent=None``: one line)."""
    return write_text(path, json.dumps(value, indent=indent) + "\n")


def write_yaml(path: str | Path, value: Any) -> Path:
    return write_text(path, yaml.safe_dump(value, sort_keys=False))


def append_line(path: str | Path, line: str) -> None:
    """Appends one line (a metrics record): a line cut by a kill is skipped by its readers."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(line.rstrip("\n") + "\n")


MAX_JSON_BYTES = 256 * 2**20  # no JSON file of ours is this large; a larger one is not ours


def _check_size(path: Path, what: str, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise NeasError(f"{path}: too large for {what} ({size} bytes)")


def loads_json(data: str | bytes):
    """:func:`json.loads` whose every failure on bad input is a ``ValueError`` that says what is wrong: a
    document nested deeper than the interpreter's recursion limit (``[[[[...]]]]``, 200,000 deep) raises
    ``RecursionError`` there, which no reader's ``except ValueError`` would catch, and an integer of
    thousands of digits advises ``sys.set_int_max_str_digits()``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) or "integer string conversion" not in str(exc):
            raise
        raise ValueError(f"an integer of more than {sys.get_int_max_str_digits()} digits") from None


def _read_capped(path: Path, what: str) -> str:
    _check_size(path, what, MAX_JSON_BYTES)
    return path.read_text()


def read_json(path: str | Path, what: str, required: tuple[str, ...] = (), *, max_bytes: int | None = None) -> dict:
    """A JSON object read with a size cap (``max_bytes``, default :data:`MAX_JSON_BYTES`), checked to be
    an object with the ``required`` keys; every error names the file (and the key). The bytes are
    decoded as :func:`json.loads` decodes bytes: UTF-8 (a byte-order mark tolerated), UTF-16 or UTF-32,
    whatever the locale."""
    path = Path(path)
    try:
        _check_size(path, what, MAX_JSON_BYTES if max_bytes is None else max_bytes)
        value = loads_json(path.read_bytes())
    except FileNotFoundError:
        raise NeasError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, NeasError):
            raise
        raise NeasError(f"{path}: not a readable {what} ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise NeasError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
    missing = [k for k in required if k not in value]
    if missing:
        raise NeasError(f"{path}: {what} lacks {', '.join(repr(k) for k in missing)}")
    return value


def read_jsonl(path: str | Path, what: str = "metric lines") -> list[dict]:
    """The JSON objects of a JSON-lines file written by :func:`append_line`, read with a size cap;
    [] when there is none. A line cut by a kill (not JSON, or not an object) is skipped, as
    :func:`append_line` promises."""
    path = Path(path)
    try:
        text = _read_capped(path, what)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise NeasError(f"{path}: not readable {what} ({exc.__class__.__name__}: {exc})") from None
    records = []
    for line in text.splitlines():
        try:
            record = loads_json(line)
        except ValueError:
            continue  # a line cut by a kill (or an empty one)
        if isinstance(record, dict):
            records.append(record)
    return records


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of the tensors' bytes, in sorted key order: the integrity check every weights file records."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(tensors):
        flat = tensors[key].detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    return digest.hexdigest()


def record_sha256(fields: dict[str, Any]) -> str:
    """The SHA-256 of a record's fields (JSON values; an absent one as null) as canonical JSON: sorted keys,
    no spaces, NaN refused. What a file records beside the fields that change what it computes (a model
    file's temperature, classes, path order, cascade; ``cascade.json``), so a hand edit reads as damage.
    An integrity check against edits and damage, not a signature: whoever edits the file can recompute it."""
    try:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NeasError(f"a record to hash must be plain JSON ({exc})") from None
    return hashlib.sha256(text.encode()).hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of ``tensors`` (moved to the CPU, contiguous) with string ``metadata`` and
    ``sha256`` (:func:`tensors_sha256`), which :func:`load_weights` checks."""
    from safetensors import SafetensorError
    from safetensors.torch import save as safetensors_bytes

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        data = safetensors_bytes(tensors, metadata={**(metadata or {}), "sha256": tensors_sha256(tensors)})
    except SafetensorError as exc:
        raise NeasError(f"{path}: cannot write ({exc})") from None
    return write_bytes(path, data)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG (closed afterwards)."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors; errors name the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise NeasError(f"{path}: not a readable safetensors file ({exc})") from None


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A weights file (safetensors) and its metadata, its tensors checked against the ``sha256`` it
    records (files written before it was recorded load unchecked); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise NeasError(f"{path}: no such weights file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise NeasError(f"{path}: not a readable safetensors file ({exc})") from None
    if "sha256" in meta and tensors_sha256(tensors) != meta["sha256"]:
        raise NeasError(f"{path}: damaged: its tensors do not match the SHA-256 recorded in the file")
    return tensors, meta


def check_matching(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, source: str = "file", skip=()
) -> None:
    """Checks that the keys and shapes of ``tensors`` match ``module``'s state_dict exactly (keys in ``skip``
    need only be present in one of them); otherwise a one-line :class:`NeasError` starting with ``what`` lists
    what differs (shapes as ``{source} (..) vs model (..)``)."""
    own = module.state_dict()
    skip = set(skip)
    missing = sorted(set(own) - set(tensors) - skip)
    unexpected = sorted(set(tensors) - set(own) - skip)
    mismatched = [
        f"{k}: {source} {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(tensors) - skip)
        if tensors[k].shape != own[k].shape
    ]
    parts = [
        f"{label} {len(keys)} key(s): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if mismatched:
        parts.append(
            f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:6])}{' ...' if len(mismatched) > 6 else ''}"
        )
    if parts:
        raise NeasError(f"{what} ({'; '.join(parts)})")


def load_matching(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, source: str = "file"
) -> torch.nn.Module:
    """Loads ``tensors`` into ``module`` after checking that the keys and shapes match exactly
    (:func:`check_matching`); otherwise a :class:`NeasError` starting with ``what`` lists what differs."""
    check_matching(module, tensors, what, source)
    module.load_state_dict(tensors)
    return module


def check_output(
    out: str | Path, inputs=(), force: bool = False, flag: str = "--out", inside: tuple[str, ...] = ()
) -> Path:
    """Refuses an output path that is one of the ``inputs`` (or, for an input directory, its files
    named in ``inside``) — never, even with ``force`` — a directory, an existing file (unless
    ``force``), or a file whose directory does not exist or is not writable (the work would be done,
    then lost); returns it. Call it before the work starts."""
    out = Path(out)
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        candidates = [given, *(given / name for name in inside)] if given.is_dir() else [given]
        if any(out.resolve() == c.resolve() for c in candidates):
            raise NeasError(f"{flag} {out} is an input of this command; it would be overwritten")
    if out.is_dir():
        raise NeasError(f"{flag} {out} is a directory; give a file name")
    if out.exists() and not force:
        raise NeasError(f"{flag} {out} already exists; pass --force to overwrite it")
    _check_parent(out, flag)
    return out


def _check_parent(out: Path, flag: str) -> None:
    parent = out.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise NeasError(f"{flag} {out}: its directory {parent} {what}; create it first (nothing was done)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NeasError(f"{flag} {out}: its directory {parent} is not writable (nothing was done)")


def check_distinct_outputs(outputs: dict[str, str | Path | None]) -> None:
    """Refuses two output flags (``{"--json": ..., "--save-scores": ...}``) that name one file: the
    second write would replace the first. ``None`` and ``"-"`` (standard output) name no file."""
    seen: dict[Path, str] = {}
    for flag, out in outputs.items():
        if out is None or str(out) == "-":
            continue
        where = Path(out).resolve()
        if where in seen:
            raise NeasError(f"{seen[where]} and {flag} name the same file {out}; give each its own")
        seen[where] = flag


def check_output_dir(
    out: str | Path, inputs=(), force: bool = False, flag: str = "--out", writes: str = "--cascade"
) -> Path:
    """The rule of :func:`neas.io.check_output` for an output directory: never one of the ``inputs``
    or a directory holding one, never an existing file; an existing directory only with ``force``."""
    out = Path(out)
    for given in inputs:
        if given is not None and (
            out.resolve() == Path(given).resolve() or out.resolve() in Path(given).resolve().parents
        ):
            raise NeasError(f"{flag} {out} is or holds an input of this command; it would be overwritten")
    if out.exists() and not out.is_dir():
        raise NeasError(f"{flag} {out} is a file; {writes} writes a directory")
    if out.exists() and not force:
        raise NeasError(f"{flag} {out} already exists; pass --force to write into it")
    return out
