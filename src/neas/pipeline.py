"""Orchestrating stages (``neas run``, ``neas ablate``, the executor's jobs): whether a stage's
run directory is finished under a config, and running it (skipped, resumed or started).

Split from :mod:`neas.rundir`, which owns one run directory (marker, lock, resume check, rank-0
writes); this module decides about a run directory as one stage of a larger command.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from neas.errors import NeasError
from neas.io import load_weights
from neas.rundir import check_resume_config, is_run_dir
from neas.runfiles import MARKER

__all__ = ["run_stage", "stage_finished"]

log = logging.getLogger(__name__)


def _damaged_weights(directory: Path, done: list[str]) -> str | None:
    """Why a finished stage's weights file among ``done`` does not read back intact (header, SHA-256), or None."""
    for name in done:
        if name.endswith(".safetensors") and (directory / name).is_file():
            try:
                load_weights(directory / name)
            except NeasError as exc:
                return str(exc)
    return None


def stage_finished(directory: Path, done: list[str], cfg, name: str) -> bool:
    """Whether the stage in ``directory`` is finished under ``cfg`` (every file in ``done`` there,
    its weights intact, its config the same); refuses a directory that is not a neas run. A stage
    with damaged weights is not finished: it is rebuilt by resuming it."""
    damaged = _damaged_weights(directory, done)
    if damaged:  # rebuilt by resuming the stage: from its last checkpoint (docs/DECISIONS.md, issue 30)
        log.warning("%s: %s; rebuilding it by resuming the stage", name, damaged)
    elif all((directory / f).is_file() for f in done):
        check_resume_config(directory, cfg)  # never a stale result for new settings
        log.info("%s: done already (%s)", name, directory)
        return True
    if directory.is_dir() and any(directory.iterdir()) and not is_run_dir(directory):
        raise NeasError(
            f"{directory} exists but is not a neas run directory (no {MARKER}): move it away; nothing was deleted"
        )
    return False


def run_stage(directory: Path, done: list[str], runner, cfg, name: str):
    """Runs one stage of an orchestrating command (``neas run``, ``neas ablate``) in this process:
    skips it when :func:`stage_finished`, resumes (or restarts in place) a stage directory it
    created, starts it otherwise. A directory that is not a neas run is refused, never deleted."""
    if not stage_finished(directory, done, cfg, name):
        runner(dataclasses.replace(cfg, resume=directory.is_dir() and any(directory.iterdir())))
