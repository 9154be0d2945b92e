"""The job's side of :mod:`neas.executor`: :class:`NeasCommand`, the callable submitit runs in a
job's process (or, for ``debug``, in the caller's), with the job's threads and device and, for a
local job, its ties to the process that started it.

A local job dies with that process however it ends: SIGTERM and SIGHUP are handled like Ctrl-C (in
the job and in the process that runs the jobs: :func:`interrupted_by`); on Linux the job gets
SIGKILL when its submitit controller dies (``PR_SET_PDEATHSIG``); and a thread of the job polls the
starting process every :data:`WATCH_S` (by PID and start time, so a later process given the same
PID is not taken for it) and stops the job, like Ctrl-C, once it is gone: after a SIGKILL of
``neas compare`` nothing keeps training, and its rerun finds no job of it still holding a run
directory. The threads (torch, OpenMP, MKL) are set for the call and restored after it.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["CLI", "RESUME", "NeasCommand", "interrupted_by", "process_start"]

CLI = "neas.cli:main"  # what a job runs: the neas command line, resolved by name in the job's process
RESUME = "--resume"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
STOP_S = 30.0  # after SIGTERM, how long a stopped local job gets to end before it is killed
WATCH_S = 1.0  # how often a local job checks that the process that started it still runs


class NeasCommand:
    """The callable submitit runs: ``main(argv)`` of ``target`` (``"module:function"``, the neas CLI
    unless a test says otherwise) in the job's process. Returns the run's seconds; raises when the
    command exits non-zero, so submitit records the job as failed. submitit calls :meth:`checkpoint`
    when the job is preempted or times out (duck-typed like ``submitit.helpers.Checkpointable``).

    ``threads``: the job's torch / OpenMP / MKL threads (None: as its process has them); ``env``:
    variables set for the job (a local job's ``CUDA_VISIBLE_DEVICES``); ``parent``: the process that
    started a local job, ``(pid, start time)`` (:func:`process_start`), which the job dies with. Both
    are restored after the call (a ``debug`` job runs in the caller's process)."""

    def __init__(self, target: str = CLI, threads: int | None = None, env: dict | None = None, parent=None):
        self.target = target
        self.threads = threads
        self.env = dict(env or {})
        self.parent = parent

    def __call__(self, argv: Sequence[str]) -> float:
        module, _, name = self.target.partition(":")
        with _job_settings(self.threads, self.env), _tied_to(self.parent):
            main = getattr(importlib.import_module(module), name)
            start = time.perf_counter()
            try:
                status = main(list(argv))
            except SystemExit as exc:  # argparse's --help and its exits
                status = exc.code if isinstance(exc.code, int) or exc.code is None else 1
        if status:
            raise RuntimeError(f"neas {' '.join(argv)} exited with status {status}")
        return time.perf_counter() - start

    def checkpoint(self, argv: Sequence[str]):
        """The requeued submission: the same command, continued with ``--resume``."""
        from submitit.helpers import DelayedSubmission

        argv = list(argv)
        return DelayedSubmission(copy.copy(self), argv if RESUME in argv else [*argv, RESUME])


@contextlib.contextmanager
def _job_settings(threads: int | None, env: dict):
    """A job's environment variables and thread count, restored afterwards."""
    names = [*env, *(THREAD_VARIABLES if threads is not None else ())]
    saved, torch_threads = {k: os.environ.get(k) for k in names}, torch.get_num_threads()
    os.environ.update(env)
    if threads is not None:
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(torch_threads)


@contextlib.contextmanager
def interrupted_by(signals=(signal.SIGTERM, signal.SIGHUP)):
    """SIGTERM and SIGHUP handled like Ctrl-C (KeyboardInterrupt, once: a second one while stopping
    is ignored) until the block ends; only the main thread can receive them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _tied_to(parent):
    """A local job's ties to the process that started it (``parent``; None: none): SIGTERM and SIGHUP
    handled like Ctrl-C (submitit's job ignores SIGTERM, which SLURM sends before a requeue), death
    with the submitit controller (Linux), and a watcher that stops the job once ``parent`` is gone."""
    if parent is None:
        yield
        return
    _die_with_parent()
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(parent, os.getppid(), done), daemon=True, name="neas-parent")
    with interrupted_by():
        watcher.start()
        try:
            yield
        finally:
            done.set()


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent (the submitit controller) dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _watch(parent, controller: int, done: threading.Event) -> None:
    """Stops this job (SIGTERM: like Ctrl-C; SIGKILL :data:`STOP_S` later) when ``parent`` no longer
    runs or the controller that started the job is gone."""
    pid, start = parent
    while not done.wait(WATCH_S):
        if _alive(pid, start) and os.getppid() == controller:
            continue
        print(f"neas: the process that started this job (PID {pid}) is gone: stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        if not done.wait(STOP_S):
            os.kill(os.getpid(), signal.SIGKILL)
        return


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``: tells it from a later process given the same
    PID); None where it cannot be read, or the process has ended (a zombie counts as ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, start: str | None) -> bool:
    if start is not None:
        return process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
