"""The run directory: one owner for its files, its marker and lock, its config and rank 0.

Every command that writes results writes them into a run directory (docs/DESIGN.md, "Run
directories"). This module is the only one that spells the directory's file names (the
constants below) and that decides whether a directory may be created, continued or refused:

- the marker (``neas-run.json``: kind, creation time, the working directory its relative paths
  mean) is written before anything else, then the lock (``.neas.lock``, ``fcntl``, held by the
  process) is taken, so a run killed at any moment leaves a directory ``--resume`` accepts;
- a non-empty directory without the marker is never touched; one with another kind's marker is
  refused; ``--resume`` compares the config with the one the run started with, except
  :data:`NOT_COMPARED`;
- only rank 0 writes (:meth:`RunDir.write_json`, :meth:`RunDir.write_text`); every rank gets
  the same :class:`RunDir` with ``rank``, ``world``, ``device`` and ``resuming``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from neas import dist
from neas.config import from_dict, to_dict
from neas.errors import NeasError
from neas.io import read_jsonl, remove_stale_temporaries, write_json, write_text, write_yaml
from neas.options import EXECUTOR_KEYS
from neas.outputs import check_claim_dir, check_run_dir, is_run_dir, read_marker, run_kind
from neas.runfiles import CONFIG, LOCK, MARKER, METRICS, has_checkpoint

__all__ = [
    "NOT_COMPARED",
    "RunDir",
    "check_resume_config",
    "claim_dir",
    "config_differences",
    "is_run_dir",
    "lock_holder",
    "prepare_run_dir",
    "release_run_dir",
    "releases_run_dir",
    "run_kind",
    "truncate_metrics",
]

log = logging.getLogger(__name__)

# Keys a --resume does not compare with the config the run started with.
NOT_COMPARED = ("resume", "out", "device", "workers", *EXECUTOR_KEYS)  # how a run is run, not what it computes

_LOCKS: dict[str, object] = {}  # run directory -> its open, locked lock file (held until released or exit)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _lock(run: Path) -> None:
    """Takes the exclusive lock of ``run`` for this process; a second process on the same directory
    is refused with the holder's PID. The lock file is never opened through a symlink, and the
    lock goes with the process, so a killed run leaves no stale lock behind."""

    key = str(run.resolve())
    if key in _LOCKS:
        return
    try:
        fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as exc:
        raise NeasError(f"{run / LOCK}: cannot open the lock file ({exc.strerror}; a symlink is refused)") from None
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise NeasError(
            f"{run} is in use by another neas process (PID {holder}): wait for it to finish or stop it"
        ) from None
    previous = handle.read().strip()
    if previous and previous != str(os.getpid()):
        log.info("%s: taking over from process %s, which no longer runs", run, previous)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _LOCKS[key] = handle
    for path in remove_stale_temporaries(run, MARKER):  # a killed write's leftovers: ours now, nobody renames them
        log.info("removed %s, left by a write that was killed", path)


def lock_holder(run: str | Path) -> str | None:
    """The PID (as its lock file records it) of another process that holds ``run``'s lock, or None:
    no lock file, free, or held by this process. Only probes: the lock is not kept."""
    run = Path(run)
    if str(run.resolve()) in _LOCKS:
        return None
    try:
        fd = os.open(run / LOCK, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def release_run_dir(run: str | Path) -> None:
    handle = _LOCKS.pop(str(Path(run).resolve()), None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


def releases_run_dir(recipe):
    """Decorates a recipe ``recipe(cfg)``: whatever happens, its run directory's lock is let go when it
    returns (a notebook keeps its process; a failed run must not keep the lock)."""

    @functools.wraps(recipe)
    def run(cfg):
        try:
            return recipe(cfg)
        finally:
            release_run_dir(Path(cfg.out))

    return run


def _write_marker(run: Path, kind: str) -> None:
    """Writes the marker (kept once written), with ``cwd``: what the relative paths of the
    ``config.yaml`` written beside it mean."""
    marker = read_marker(run) or {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if marker.get("cwd") != str(Path.cwd()):
        write_json(run / MARKER, {**marker, "cwd": str(Path.cwd())}, indent=None)


def _claim(run: Path, kind: str) -> None:
    """Creates ``run`` if needed, then writes the marker before taking the lock."""
    run.mkdir(parents=True, exist_ok=True)
    _write_marker(run, kind)
    _lock(run)


def claim_dir(out: str | Path, kind: str) -> Path:
    """The output directory of a command whose results accumulate across calls (``rank``,
    ``ablate``: each call reuses what earlier ones finished): created with the marker, or one this
    kind of command made before; any other non-empty directory is refused, untouched. Locked like
    a run directory."""
    run = check_claim_dir(out, kind)
    _claim(run, kind)
    return run


def prepare_run_dir(out: str | Path, resume: bool, config, kind: str, ignore: tuple = NOT_COMPARED) -> Path:
    """Creates the run directory, or checks it for ``--resume``; marks and locks it; writes ``config.yaml``.

    Refuses to reuse a non-empty directory without ``--resume`` (nothing is overwritten), and
    ``--resume`` of a directory that is not a neas run of this ``kind`` (nothing in it is touched)
    or whose config differs (the differing keys are listed; paths compare resolved, and ``out``
    not at all, so a moved or copied run resumes). A run that stopped before its first checkpoint
    starts over in place.
    """
    run = check_run_dir(out, resume, kind)
    if resume:
        if has_checkpoint(run):
            check_resume_config(run, config, ignore)
        else:  # nothing to continue: start over in place, with the corrected config if it changed
            log.info("%s stopped before its first checkpoint: starting it over in place", run)
            _lock(run)
            (run / METRICS).unlink(missing_ok=True)  # ours (the directory carries the marker)
    _claim(run, kind)
    write_yaml(run / CONFIG, to_dict(config))
    return run


@dataclass
class RunDir:
    """A run directory as every rank sees it: ``RunDir.open(cfg, kind)`` in a recipe, then
    ``run / name`` for a path and ``run.write_json(name, value)`` for a rank-0 write."""

    path: Path
    kind: str
    resuming: bool  # --resume of a run that has a checkpoint (else it starts over)
    device: torch.device
    rank: int = 0
    world: int = 1

    @classmethod
    def open(
        cls,
        cfg,
        kind: str,
        device: torch.device | None = None,
        ignore: tuple = NOT_COMPARED,
        resume: bool | None = None,
    ) -> RunDir:
        """Prepares ``cfg.out`` on rank 0 (created, or checked for ``cfg.resume`` — or ``resume``
        when given; marked, locked, ``config.yaml`` written), then returns it on every rank."""
        resume = cfg.resume if resume is None else resume
        path = prepare_run_dir(cfg.out, resume, cfg, kind, ignore) if dist.is_main_process() else Path(cfg.out)
        dist.barrier()
        device = device if device is not None else torch.device("cpu")
        return cls(path, kind, bool(resume) and has_checkpoint(path), device, dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        """Whether this process is rank 0, the one that writes."""
        return self.rank == 0

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def write_json(self, name: str, value: Any, indent: int | None = 1) -> None:
        if self.main:
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path / name, value, indent=indent)

    def write_text(self, name: str, text: str) -> None:
        if self.main:
            write_text(self.path / name, text)

    def progress(self, **kwargs) -> tqdm:
        """A tqdm bar that rank 0 draws (in a terminal); silent on the other ranks."""
        return tqdm(disable=None if self.main else True, **kwargs)

    def on_main(self, action: Callable[[], Any]) -> Any:
        """Runs ``action`` on rank 0 only (a file write that is not JSON or text); None elsewhere."""
        return action() if self.main else None


def _same_value(old, new, old_home: Path, old_cwd: Path, new_home: Path) -> bool:
    """Whether a config value is unchanged: equal, or paths naming the same place — resolved (old
    relative paths against the directory the run was started from), or at the same place relative
    to the run's home (the directory holding ``out``), so a moved or copied pipeline resumes."""
    if not (isinstance(old, str) and isinstance(new, str) and old and new):
        return old == new
    old_path, new_path = (old_cwd / old).resolve(), Path(new).resolve()
    if old_path == new_path or (old == new and not old_path.exists() and not new_path.exists()):
        return True  # (a name, not a path: a preset, a dataset, a mode)
    try:
        return old_path.relative_to(old_home) == new_path.relative_to(new_home)
    except ValueError:
        return False


def config_differences(run: Path, config, ignore: tuple = NOT_COMPARED) -> list[tuple[str, object, object]]:
    """``(key, old, new)`` for every key but ``ignore`` whose value in ``run``'s ``config.yaml`` differs
    from ``config``'s: the one rule of "is this the same config?" (resume, compare, ablate's --reuse).
    Values are compared parsed, not spelled ("1.5M" and 1500000 are one budget), and paths by the place
    they name (old relative paths against the directory the run was started from, or the same place
    relative to the run's home, so a moved or copied pipeline is the same run)."""
    path = run / CONFIG
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
        raise NeasError(f"{path} is not a readable config") from None
    if not isinstance(old, dict):
        raise NeasError(f"{path} is not a neas config (not a mapping)")
    with contextlib.suppress(NeasError):
        old = to_dict(from_dict(type(config), old))
    new = to_dict(config)
    old_cwd = Path(read_marker(run).get("cwd") or Path.cwd())
    old_home = (old_cwd / str(old.get("out") or run)).resolve().parent
    new_home = Path(str(new.get("out") or run)).resolve().parent
    return [
        (k, old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if k not in ignore and not _same_value(old.get(k), new.get(k), old_home, old_cwd, new_home)
    ]


def check_resume_config(run: Path, config, ignore: tuple = NOT_COMPARED) -> None:
    """Refuses to continue ``run`` under a config that differs from its ``config.yaml`` (except
    ``ignore``), and a run that has a checkpoint but lost its ``config.yaml``: the config it was
    started with cannot be compared then (docs/DECISIONS.md, issue 30)."""
    path = run / CONFIG
    if not path.is_file():
        if has_checkpoint(run):
            raise NeasError(
                f"--resume: {path} is missing, so the config {run} was started with cannot be checked; restore it "
                f"(its values must match this run's), or start a new run with another --out"
            )
        return
    try:
        diff = config_differences(run, config, ignore)
    except NeasError as exc:
        raise NeasError(f"--resume: {exc}") from None
    if diff:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diff)
        raise NeasError(f"--resume: the config differs from the one {run} was started with ({detail})")


def truncate_metrics(run: Path, last_epoch: int, key: str = "epoch") -> None:
    """Drops metric lines of epochs (or another ``key``: generations) after ``last_epoch``: they
    are redone on resume."""
    path = Path(run) / METRICS
    if not path.is_file():
        return
    keep = [record for record in read_jsonl(path) if record.get(key, -1) <= last_epoch]  # torn lines skipped
    write_text(path, "".join(json.dumps(record) + "\n" for record in keep))
