"""Runs independent ``neas`` jobs through submitit: in-process (``debug``), as local subprocesses
(``local``) or as a SLURM job array (``slurm``).

A :class:`Job` is an ordinary ``neas`` command line in its own run directory, e.g.::

    Job("single-s0", ["retrain", "--arch", "a.json", "--out", "R/single-s0", "--seed", "0"], "R/single-s0", EVAL)
    run_jobs(jobs, executor="local", max_parallel=2, log_dir="R/jobs")

Decisions:

- a job whose ``done`` file and ``reads`` (the other files its caller reads from it) exist is
  skipped; one whose run directory has the marker (it was started, then killed, or lost one of
  those files) is run again with ``--resume`` appended (unless ``resume=False``: ``rank`` and
  ``ablate`` continue their directory without the flag); any other job runs as given;
- the submitted callable is :class:`~neas.executor.command.NeasCommand` (the job's side: its
  threads, its device, its ties to this process), a small module-level class that calls the CLI's
  ``main(argv)`` in the job's process and raises when it returns non-zero. It names the CLI as the
  string ``"neas.cli:main"``, resolved when the job runs: the library never imports the CLI (no
  import cycle through the recipes that use this module). Its pickles, written by submitit into
  ``log_dir``, hold only our own job descriptions (strings, numbers and an argv);
- ``local`` runs at most ``max_parallel`` jobs at once (submitit's LocalExecutor would start all of
  them), each with ``threads`` threads (torch, OpenMP, MKL; default 1, never derived from
  ``max_parallel``: results differ in their last digits between thread counts, and how many jobs run
  at once must not change them; the commands pass their ``--threads-per-job``, :func:`job_command`) and,
  when there are CUDA devices, one of them (``CUDA_VISIBLE_DEVICES``, round-robin over the parallel
  slots). The devices are those ``CUDA_VISIBLE_DEVICES`` lists when it is set, else
  ``torch.cuda.device_count()`` (asked only then, and it creates no CUDA context in this process);
  ``debug`` and ``slurm`` jobs get ``threads`` too when it is given;
- local jobs die with the process that runs them: SIGTERM and SIGHUP of it are handled like Ctrl-C
  (its running jobs get SIGTERM, which a local job handles like Ctrl-C too, and whatever still runs
  after :data:`STOP_S` is killed), and a job whose parent process is gone however it ended (SIGKILL
  included) stops on its own within about a second (it polls that process; on Linux it also dies with
  its submitit controller, ``PR_SET_PDEATHSIG``). A job whose run directory another process still
  holds (a job of an earlier, killed call) is waited for up to :data:`HELD_WAIT_S`, then reported as
  failed with that process's PID;
- ``slurm`` submits one job array (``array_parallelism`` defaults to ``max_parallel``); a job that
  is preempted or times out is requeued by submitit through :meth:`NeasCommand.checkpoint`, which
  resubmits the same argv with ``--resume``. ``sbatch``, ``srun`` and ``sacct`` (how submitit follows
  the jobs) must be on PATH; when sacct reports no state of the array for :data:`SACCT_WAIT_S`, the
  wait ends with an error (the jobs are left to SLURM). SLURM jobs are not tied to this process;
- when a job fails the others still run to the end; then one :class:`~neas.errors.NeasError` names
  every failed job with its run directory, its last ``neas: error:`` line and its stderr log
  (``check=False`` returns the records, ``status="failed"``, instead). Finished jobs are skipped on
  the next call, so a rerun repeats only the failed ones;
- progress: one log line per finished job (name, status, seconds) and a tqdm bar over all jobs.

submitit is imported only where a batch is run, so a missing install is a one-line error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from neas.config import to_dict
from neas.errors import NeasError, show, suggest
from neas.executor.command import CLI, RESUME, STOP_S, NeasCommand, interrupted_by, process_start
from neas.io import write_yaml
from neas.options import EXECUTORS, SLURM_OPTIONS
from neas.pipeline import stage_finished
from neas.rundir import is_run_dir, lock_holder

__all__ = [
    "CLI",
    "EXECUTORS",
    "SLURM_KEYS",
    "Job",
    "JobResult",
    "NeasCommand",
    "check_executor",
    "job_command",
    "job_options",
    "run_jobs",
    "stage_job",
]

log = logging.getLogger(__name__)

# The keys of run_jobs(slurm=...): submitit's names; additional_parameters are extra #SBATCH options.
SLURM_KEYS = tuple(SLURM_OPTIONS)
SLURM_TOOLS = ("sbatch", "srun", "sacct")  # submit, run, and follow the jobs (submitit asks sacct for their states)
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would kill a retraining
POLL_S = {"local": 0.1, "slurm": 15.0}  # between checks of running jobs (submitit rate-limits sacct itself)
HELD_WAIT_S = 15.0  # how long a job whose run directory another process holds is waited for
SACCT_WAIT_S = 600.0  # how long a SLURM array may go without sacct reporting any state


@dataclass(frozen=True)
class Job:
    """One ``neas`` command in its own run directory."""

    name: str  # in log lines and errors
    argv: tuple[str, ...]  # the neas command line without "neas", e.g. ("retrain", "--out", "R/a", ...)
    out: Path  # the run directory the command writes
    done: str | None = None  # a file in ``out`` whose existence means the job finished
    resume: bool = True  # whether an unfinished run directory is continued with --resume
    reads: tuple[Path, ...] = ()  # files the caller reads from the job besides ``done``: finished only with them

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "reads", tuple(Path(p) for p in self.reads))
        if not self.argv:
            raise NeasError(f"job {self.name!r}: empty neas command line")

    @property
    def missing(self) -> list[Path]:
        """The job's ``done`` file and ``reads`` that are not there."""
        wanted = [self.out / self.done] if self.done is not None else []
        return [p for p in [*wanted, *self.reads] if not p.is_file()]

    @property
    def finished(self) -> bool:
        return self.done is not None and not self.missing

    def command(self) -> list[str]:
        """The argv to run now: with ``--resume`` when an earlier attempt left its run directory."""
        argv = list(self.argv)
        if self.resume and RESUME not in argv and self.out.is_dir() and is_run_dir(self.out):
            argv.append(RESUME)
        return argv


@dataclass
class JobResult:
    """What became of one job."""

    name: str
    out: Path
    status: str  # "done", "skipped" (finished before) or "failed"
    seconds: float = 0.0  # the run's own time (from submission to completion when it failed)
    error: str = field(default="", repr=False)  # one line naming the failure and its log


def stage_job(command: str, cfg, directory: Path, done: list[str], config_file: Path, name: str) -> Job | None:
    """A stage an orchestrating command ran in-process with :func:`~neas.rundir.run_stage`, as a job:
    ``neas <command> --config <config_file>`` (``cfg`` written there, without ``resume``: the job adds
    ``--resume`` when the directory was started). None when the stage is finished
    (:func:`~neas.rundir.stage_finished`: its ``done`` files there, weights intact, same config)."""
    if stage_finished(directory, done, cfg, name):
        return None
    write_yaml(config_file, {k: v for k, v in to_dict(cfg).items() if k != "resume"})
    return Job(name, [command, "--config", config_file], directory)


def _submitit(executor: str):
    try:
        import submitit
    except ImportError:
        raise NeasError(f"--executor {executor}: submitit is not installed (pip install 'submitit>=1.5')") from None
    _one_log(logging.getLogger("submitit"))
    return submitit


def _one_log(logger: logging.Logger) -> None:
    """submitit's lines through this process's logging only: its own handlers print each warning on
    stdout and stderr, and the root logger (the CLI's) a third time."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def _check(jobs: list[Job], executor: str, max_parallel: int, slurm: dict | None) -> None:
    if executor not in EXECUTORS:
        raise NeasError(
            f"--executor {show(executor)}: choose one of {', '.join(EXECUTORS)}{suggest(executor, EXECUTORS)}"
        )
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise NeasError(f"--max-parallel must be an integer >= 1, got {show(max_parallel)}")
    unknown = sorted(set(slurm or {}) - set(SLURM_KEYS))
    if unknown:
        raise NeasError(
            f"slurm option {unknown[0]!r} is unknown{suggest(unknown[0], SLURM_KEYS)}; valid: {', '.join(SLURM_KEYS)}"
        )
    names, outs = set(), {}
    for job in jobs:
        if job.name in names:
            raise NeasError(f"two jobs are named {job.name!r}: job names must be unique")
        names.add(job.name)
        if outs.setdefault(job.out.resolve(), job.name) != job.name:
            raise NeasError(f"jobs {outs[job.out.resolve()]!r} and {job.name!r} share the run directory {job.out}")


def check_executor(executor: str, slurm: dict | None = None) -> None:
    """What would stop every job of a command, refused before the command writes anything: no
    submitit, an unknown SLURM option, ``--executor slurm`` without ``sbatch``, ``srun`` or ``sacct``."""
    if importlib.util.find_spec("submitit") is None:
        raise NeasError(f"--executor {executor}: submitit is not installed (pip install 'submitit>=1.5')")
    unknown = sorted(set(slurm or {}) - set(SLURM_KEYS))
    if unknown:
        raise NeasError(
            f"slurm.{unknown[0]}: unknown SLURM option{suggest(unknown[0], SLURM_KEYS)}; valid: {', '.join(SLURM_KEYS)}"
        )
    if executor == "slurm":
        _check_slurm_tools()


def _check_slurm_tools() -> None:
    for tool in SLURM_TOOLS:
        if shutil.which(tool) is None:
            why = " (submitit follows the jobs' states with it)" if tool == "sacct" else ""
            raise NeasError(
                f"--executor slurm: {tool} not found on PATH{why} (run on a SLURM login node, or use --executor local)"
            )


def _visible_gpus() -> list[int | str]:
    """The CUDA devices local jobs share: those ``CUDA_VISIBLE_DEVICES`` lists (indices, or GPU / MIG
    UUIDs as given), else every device torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        tokens = [d.strip() for d in visible.split(",") if d.strip()]
        return [int(d) if d.isdigit() else d for d in tokens]
    import torch  # only when no variable says it; device_count() creates no CUDA context

    return list(range(torch.cuda.device_count()))


def _error_line(job: Job, sjob, exc: BaseException) -> str:
    """One line: the job, its run directory, the reason (its last ``neas: error:`` line when its log
    has one) and the path of its stderr log."""
    stderr = Path(sjob.paths.stderr)
    reason = ""
    if stderr.is_file():
        lines = [line for line in stderr.read_text(errors="replace").splitlines() if line.startswith("neas: error:")]
        reason = lines[-1].removeprefix("neas: error:").strip() if lines else ""
    if not reason:
        reason = " ".join(str(exc).strip().splitlines()[-1:]) or type(exc).__name__
    return f"{job.name} (run directory {job.out}): {reason[:300]} (log: {stderr})"


def _outcome(job: Job, sjob, start: float) -> JobResult:
    """The record of a finished submitit job (``exception()`` first: a debug job's ``result()``
    would start a debugger on failure)."""
    exc = sjob.exception()
    if exc is None:
        return JobResult(job.name, job.out, "done", float(sjob.result()))
    return JobResult(job.name, job.out, "failed", time.perf_counter() - start, _error_line(job, sjob, exc))


def _wait(running: dict, poll: float, check: Callable[[dict], None] | None = None) -> Iterator[JobResult]:
    """Blocks until one of ``running`` (submitit job -> (Job, start)) finishes; yields the records of
    those that did, removing them. ``check(running)`` is called between polls (it may raise)."""
    while True:
        finished = [sjob for sjob in running if sjob.done()]
        if finished:
            break
        if check is not None:
            check(running)
        time.sleep(poll)
    for sjob in finished:
        job, start = running.pop(sjob)
        yield _outcome(job, sjob, start)


def _run_debug(todo: list[Job], command: NeasCommand, log_dir: Path, max_parallel: int, slurm) -> Iterator[JobResult]:
    """In this process, one job after the other (for tests and debugging)."""
    executor = _submitit("debug").DebugExecutor(folder=log_dir / "%j")
    for job in todo:
        start = time.perf_counter()
        yield _outcome(job, executor.submit(command, job.command()), start)


def _run_local(todo: list[Job], command: NeasCommand, log_dir: Path, max_parallel: int, slurm) -> Iterator[JobResult]:
    """Subprocesses, at most ``max_parallel`` at once, each with its threads and one GPU, tied to this process."""
    executor = _submitit("local").LocalExecutor(folder=log_dir / "%j")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    threads = command.threads or 1  # never a share of the cores: max_parallel must not change the numbers
    parent, gpus = (os.getpid(), process_start(os.getpid())), _visible_gpus()
    queue, running, slots = list(todo), {}, {}  # slots: submitit job -> its parallel slot
    with interrupted_by():
        try:
            while queue or running:
                while queue and len(running) < max_parallel:
                    slot = min(set(range(max_parallel)) - set(slots.values()))
                    env = _device(executor, gpus, slot)
                    job = queue.pop(0)
                    sjob = executor.submit(NeasCommand(command.target, threads, env, parent), job.command())
                    running[sjob], slots[sjob] = (job, time.perf_counter()), slot
                for result in _wait(running, POLL_S["local"]):
                    slots = {s: slot for s, slot in slots.items() if s in running}
                    yield result
        finally:  # interrupted (Ctrl-C, SIGTERM, SIGHUP, an error): no job keeps training on its own
            _stop(list(running))


def _device(executor, gpus: list, slot: int) -> dict:
    """A local job's device: the slot's (an index also through submitit, so the job's process starts
    with it; a GPU or MIG UUID through the job's environment, set before the CLI runs), or none."""
    gpu = gpus[slot % len(gpus)] if gpus else None
    if isinstance(gpu, int):
        executor.update_parameters(gpus_per_node=1, visible_gpus=(gpu,))
    else:
        executor.update_parameters(gpus_per_node=0)
    return {} if gpu is None else {"CUDA_VISIBLE_DEVICES": str(gpu)}


def _stop(sjobs: list) -> None:
    """Stops running local jobs: SIGTERM to each one's submitit controller, which hands it to the job
    (handled like Ctrl-C); a controller still there after :data:`STOP_S` is killed, and its job with it."""
    controllers = [p for p in (getattr(sjob, "_process", None) for sjob in sjobs) if p is not None]
    for process in controllers:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_S
    for process in controllers:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _slurm_executor(log_dir: Path, slurm: dict | None, max_parallel: int, threads: int | None = None):
    """submitit's SLURM executor with the options of ``slurm`` (:data:`SLURM_KEYS`)."""
    _check_slurm_tools()
    submitit = _submitit("slurm")
    options = {"array_parallelism": max_parallel, **(slurm or {})}
    cpus = threads or options.get("cpus_per_task")
    setup = [*options.pop("setup", []), *([f"export OMP_NUM_THREADS={cpus}"] if cpus else [])]
    executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster="slurm")
    generic = {k: options.pop(k) for k in ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min") if k in options}
    try:
        executor.update_parameters(**generic, **{f"slurm_{k}": v for k, v in options.items()}, slurm_setup=setup)
    except (AssertionError, TypeError, ValueError) as exc:  # submitit checks types with assert
        raise NeasError(f"slurm options {show(slurm)}: {' '.join(str(exc).split())[:300]}") from None
    return executor


def _sacct_watch(array: str, jobs: int) -> Callable[[dict], None]:
    """A check that ends the wait for SLURM array ``array`` of ``jobs`` jobs when sacct has reported no
    state of any of them and none has finished for :data:`SACCT_WAIT_S` (sacct failing, printing
    nothing usable, accounting disabled): submitit would wait forever."""
    start, known = time.monotonic(), False

    def check(running: dict) -> None:
        nonlocal known
        known = known or len(running) < jobs or any(str(sjob.state).upper() != "UNKNOWN" for sjob in running)
        if not known and time.monotonic() - start > SACCT_WAIT_S:
            raise NeasError(
                f"--executor slurm: sacct reported no state of job array {array} in {SACCT_WAIT_S:.0f} s, so neas "
                f"cannot tell when its jobs end (does `sacct -j {array}` work here? SLURM accounting may be off). "
                f"The jobs were not cancelled (squeue -j {array}; scancel {array}); rerun once they have ended: "
                "finished jobs are skipped"
            )

    return check


def _run_slurm(todo: list[Job], command: NeasCommand, log_dir: Path, max_parallel: int, slurm) -> Iterator[JobResult]:
    """One SLURM job array; then waits for its tasks."""
    executor = _slurm_executor(log_dir, slurm, max_parallel, command.threads)
    try:
        sjobs = executor.map_array(command, [job.command() for job in todo])
    except Exception as exc:
        raise NeasError(
            f"--executor slurm: the job array was not submitted: {' '.join(str(exc).split())[:300]}"
        ) from None
    array = sjobs[0].job_id.split("_")[0]
    log.info("submitted SLURM job array %s (%d jobs; logs in %s)", array, len(sjobs), log_dir)
    start = time.perf_counter()
    running = {sjob: (job, start) for sjob, job in zip(sjobs, todo)}
    check = _sacct_watch(array, len(sjobs))
    while running:
        yield from _wait(running, POLL_S["slurm"], check)


def _wait_while_held(todo: list[Job]) -> tuple[list[Job], list[JobResult]]:
    """The jobs whose run directory no other process holds, waiting up to :data:`HELD_WAIT_S` for the
    others (a job of an earlier call that was killed stops on its own within seconds); those still
    held then are failed records that name the holder."""
    held = {job.name: pid for job in todo if (pid := lock_holder(job.out))}
    if held:
        log.warning(
            "still in use by another process: %s; waiting up to %.0f s for it to end",
            ", ".join(f"{name} (PID {pid})" for name, pid in held.items()),
            HELD_WAIT_S,
        )
    deadline = time.monotonic() + HELD_WAIT_S
    while held and time.monotonic() < deadline:
        time.sleep(0.2)
        held = {job.name: pid for job in todo if job.name in held and (pid := lock_holder(job.out))}
    failed = [
        JobResult(
            job.name,
            job.out,
            "failed",
            error=f"{job.name} (run directory {job.out}): still in use by PID {held[job.name]}, a process this call "
            f"did not start (a job of an earlier call that was stopped?); it ends on its own, or stop it "
            f"(kill {held[job.name]}), then rerun",
        )
        for job in todo
        if job.name in held
    ]
    return [job for job in todo if job.name not in held], failed


_RUNNERS = {"debug": _run_debug, "local": _run_local, "slurm": _run_slurm}


def job_command(executor: str, threads_per_job: int) -> NeasCommand:
    """What the jobs of ``neas run``, ``rank`` and ``ablate`` call: the CLI with ``threads_per_job``
    threads (their ``--threads-per-job``) when they run in processes of their own (``local``,
    ``slurm``), whatever ``max_parallel``; a ``debug`` job runs in this process at its threads, as the
    command's other stages do (and a job of ``neas compare``, a whole ``neas run``, at compare's)."""
    return NeasCommand(threads=None if executor == "debug" else threads_per_job)


def job_options(options) -> dict:
    """:func:`run_jobs`' options from a command's executor settings (``neas.options.ExecutorOptions``:
    ``executor``, ``max_parallel``, ``slurm`` and ``threads_per_job``, the command of :func:`job_command`)."""
    return {
        "executor": options.executor,
        "max_parallel": options.max_parallel,
        "slurm": options.slurm,
        "command": job_command(options.executor, options.threads_per_job),
    }


def run_jobs(
    jobs: Sequence[Job],
    executor: str = "local",
    max_parallel: int = 1,
    slurm: dict | None = None,
    log_dir: str | Path = "neas-jobs",
    progress: bool = True,
    check: bool = True,
    command: NeasCommand | None = None,
) -> list[JobResult]:
    """Runs ``jobs`` with ``executor`` (:data:`EXECUTORS`); returns one :class:`JobResult` per job, in order.

    Args:
        max_parallel: jobs running at once (``local``; the default ``array_parallelism`` of ``slurm``).
        slurm: options of the ``slurm`` executor (:data:`SLURM_KEYS`); ignored by the others.
        log_dir: submitit's folder: each job's pickles and its stdout/stderr logs, under its id.
        check: raise one NeasError naming every failed job (else return their records).
        command: what each job calls with its argv: ``NeasCommand(target, threads)`` (default: the neas
            CLI; ``threads`` None: ``local`` gives each job 1 thread, the others leave them).
    """
    jobs = list(jobs)
    _check(jobs, executor, max_parallel, slurm)
    records: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        if job.finished:
            records[job.name] = JobResult(job.name, job.out, "skipped")
            log.info("%s: skipped: finished (%s)", job.name, job.out / job.done)
            continue
        if job.done is not None and (job.out / job.done).is_file():
            log.warning("%s: not finished: %s missing; running it again", job.name, ", ".join(map(str, job.missing)))
        todo.append(job)
    if executor != "slurm":  # a job of an earlier, killed call may still hold its directory
        todo, held = _wait_while_held(todo)
        records.update((r.name, r) for r in held)
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="jobs", unit="job", disable=not progress) as bar:
        if todo:
            runner = _RUNNERS[executor](todo, command or NeasCommand(), Path(log_dir), max_parallel, slurm)
            with contextlib.closing(runner):
                for result in runner:
                    records[result.name] = result
                    log.info("%s: %s in %.1f s", result.name, result.status, result.seconds)
                    bar.update()
    results = [records[job.name] for job in jobs]
    failed = [r for r in results if r.status == "failed"]
    if failed and check:
        raise NeasError(f"{len(failed)} of {len(jobs)} jobs failed: " + "; ".join(r.error for r in failed))
    return results
