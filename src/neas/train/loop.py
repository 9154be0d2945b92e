"""The training loop both training recipes run (:func:`train_epoch`), and what they share
around it: AMP, learning-rate schedules, seeding, run directories and resuming."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import yaml
from tqdm import tqdm

from neas.config import from_dict, to_dict
from neas.errors import NeasError
from neas.io import write_json, write_text, write_yaml
from neas.seeding import seed_everything, stream_seed

__all__ = [
    "amp_dtype",
    "autocast",
    "grad_scaler",
    "linear_lr",
    "seed_everything",
    "prepare_run_dir",
    "is_run_dir",
    "claim_dir",
    "release_run_dir",
    "releases_run_dir",
    "MARKER",
    "check_resume_config",
    "truncate_metrics",
    "resume_run",
    "epoch_seed",
    "train_epoch",
    "run_stage",
]


log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor, torch.Tensor, int], "tuple[torch.Tensor, list[torch.Tensor]]"]


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    forward: Forward,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    epoch: int,
    steps: int,
    device: torch.device,
    amp: bool = True,
    set_lr: "Callable[[int], None] | None" = None,
    after_backward: "Callable[[int], None] | None" = None,
    after_step: "Callable[[int], None] | None" = None,
    accuracy: bool = False,
    desc: str = "",
    check_every: int = 50,
) -> dict:
    """Trains ``model`` for one epoch; returns its metrics, averaged over ranks.

    Per step ``i`` (global step ``epoch * steps + i``): ``set_lr(step)``; ``forward(x, y, step)``
    under autocast returns the loss and the K path logits; backward through the scaler,
    ``after_backward(step)``, the optimizer step, ``after_step(step)``.

    No step waits for the device: the loss sum, the correct count and the first non-finite step
    stay on the device, and the host looks at them every ``check_every`` steps and at the end
    (a non-finite loss then stops the run, naming its step, before any checkpoint is written).

    Returns:
        ``loss`` (mean per image), ``ensemble_acc`` (top-1 of the mean logits, with
        ``accuracy``), ``images_per_s`` (all ranks) and the last ``lr``.
    """
    from neas import dist

    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # the first step with a non-finite loss
    bad_value = torch.zeros((), dtype=torch.float32, device=device)  # and that loss
    seen, start = 0, time.perf_counter()
    bar = tqdm(batches, total=steps, desc=desc, leave=False, disable=None if dist.is_main_process() else True)

    def check(step: int) -> None:
        if dist.get_world_size() > 1:  # a NaN on any rank stops every rank (none is left waiting in a collective)
            import torch.distributed as tdist

            flag = first_bad.clone()
            tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
            if int(flag) >= 0 and int(first_bad) < 0:
                raise NeasError(f"the loss became non-finite on another rank by step {int(flag)} (epoch {epoch + 1}); stopping")
        bad = int(first_bad)  # the one host sync, every check_every steps
        if bad >= 0:
            # every finished epoch wrote a checkpoint, so one exists exactly when this is not the first epoch
            kept = "the last good checkpoint is kept" if epoch > 0 else "no checkpoint was written yet (--resume starts it over in place)"
            raise NeasError(f"the loss became {float(bad_value)} at step {bad} (epoch {epoch + 1}); stopping — {kept}")
        postfix = {"loss": f"{float(loss_sum) / max(seen, 1):.3f}", **({"acc": f"{int(correct) / max(seen, 1):.1%}"} if accuracy else {})}
        bar.set_postfix(postfix, refresh=False)

    step = epoch * steps
    for i, (x, y) in enumerate(bar):
        step = epoch * steps + i
        if set_lr is not None:
            set_lr(step)
        with autocast(device, amp):
            loss, logits = forward(x, y, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward(step)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step(step)
        with torch.no_grad():
            loss = loss.detach()
            new_bad = (first_bad < 0) & ~torch.isfinite(loss)
            first_bad = torch.where(new_bad, step, first_bad)
            bad_value = torch.where(new_bad, loss.float(), bad_value)
            loss_sum += loss.double() * len(y)
            seen += len(y)
            if accuracy:
                correct += (torch.stack(logits).float().mean(0).argmax(1) == y).sum()
        if (i + 1) % check_every == 0:
            check(step)
    check(step)
    elapsed = time.perf_counter() - start
    metrics = {"loss": float(loss_sum) / max(seen, 1), **({"ensemble_acc": int(correct) / max(seen, 1)} if accuracy else {})}
    metrics = dist.all_reduce_mean(metrics, device)
    metrics["images_per_s"] = seen * dist.get_world_size() / elapsed
    metrics["lr"] = optimizer.param_groups[0]["lr"]
    return metrics


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The global RNG seed of an epoch on a rank (dropout, drop path): a resumed run repeats it."""
    return stream_seed(seed, "epoch", epoch, rank)


def resume_run(run: Path, model: torch.nn.Module, optimizer, extra: "dict | None" = None) -> dict:
    """Loads the last complete checkpoint of ``run`` into ``model``/``optimizer`` (and ``extra``
    modules), drops the metric lines of the epochs that will be redone; returns the saved state."""
    from neas import dist
    from neas.train.checkpoint import load_checkpoint

    state = load_checkpoint(run, model, optimizer, extra or {})
    if dist.is_main_process():
        truncate_metrics(run, state["epoch"])
    return state


def amp_dtype(device: torch.device, enabled: bool = True) -> "torch.dtype | None":
    """bf16 on CUDA (fp16 where bf16 is unsupported); ``None`` (full precision) on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    dtype = amp_dtype(device, enabled)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, enabled) == torch.float16)


def linear_lr(base: float, step: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up for ``warmup`` steps, then linear annealing to 0 at ``total`` (paper §4)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))


MARKER = "neas-run.json"  # written first into every run directory: what a run may touch
_LOCKS: dict[str, object] = {}  # run directory -> its open, locked lock file (held until released or exit)


def lock_run_dir(run: Path) -> None:
    """Takes the exclusive lock of ``run`` (``.neas.lock``, ``fcntl``) for this process; a second
    process on the same directory is refused with the holder's PID. The lock goes with the process,
    so a killed run leaves no stale lock behind."""
    import fcntl
    import os

    key = str(run.resolve())
    if key in _LOCKS:
        return
    handle = open(run / ".neas.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise NeasError(f"{run} is in use by another neas process (PID {holder}): wait for it to finish or stop it") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous and previous != str(os.getpid()):
        log.info("%s: taking over from process %s, which no longer runs", run, previous)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _LOCKS[key] = handle


def release_run_dir(run: Path) -> None:
    handle = _LOCKS.pop(str(Path(run).resolve()), None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


def releases_run_dir(recipe):
    """Decorates a recipe ``recipe(cfg)``: whatever happens, its run directory's lock is let go when it
    returns (a notebook keeps its process; a failed run must not keep the lock)."""
    import functools

    @functools.wraps(recipe)
    def run(cfg):
        try:
            return recipe(cfg)
        finally:
            release_run_dir(Path(cfg.out))

    return run


def is_run_dir(run: Path, legacy: "tuple[str, ...]" = ("state.json", "config.yaml")) -> bool:
    """Whether ``run`` is a neas run directory: it has the marker, or (written before markers
    existed) all of the ``legacy`` files."""
    return (run / MARKER).is_file() or all((run / name).is_file() for name in legacy)


def claim_dir(out: "str | Path", kind: str, legacy: "tuple[str, ...]") -> Path:
    """The output directory of a command whose results accumulate across calls (``rank``,
    ``ablate``: each call reuses what earlier ones finished): created with the marker, or one this
    kind of command made before (or, before markers, one holding all of ``legacy``); any other
    non-empty directory is refused, untouched. Locked like a run directory."""
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise NeasError(f"--out {run} is a file, not a directory")
    if run.is_dir() and any(run.iterdir()):
        if not is_run_dir(run, legacy):
            raise NeasError(f"--out {run} exists and is not a neas {kind} directory (no {MARKER}); choose another --out; nothing was touched")
        _check_kind(run, kind)
    run.mkdir(parents=True, exist_ok=True)
    lock_run_dir(run)
    _write_marker(run, kind)
    return run


def _check_kind(run: Path, kind: str) -> None:
    marker = json.loads((run / MARKER).read_text()) if (run / MARKER).is_file() else {"kind": kind}
    if marker.get("kind") != kind:
        raise NeasError(f"{run} is a {marker.get('kind')} directory, not a {kind} one; choose another --out")


def _write_marker(run: Path, kind: str) -> None:
    """Writes the marker (kept once written), with ``cwd``: what the relative paths of the
    ``config.yaml`` written beside it mean."""
    try:
        marker = json.loads((run / MARKER).read_text())
    except (OSError, ValueError):
        marker = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if isinstance(marker, dict) and marker.get("cwd") != str(Path.cwd()):
        write_json(run / MARKER, {**marker, "cwd": str(Path.cwd())}, indent=None)


def prepare_run_dir(out: "str | Path", resume: bool, config, kind: str, ignore=("resume", "device", "workers", "out"),
                    legacy: "tuple[str, ...]" = ("state.json", "config.yaml")) -> Path:
    """Creates the run directory, or checks it for ``--resume``; locks it; writes the marker and
    ``config.yaml``.

    Refuses to reuse a non-empty directory without ``--resume`` (nothing is overwritten), and
    ``--resume`` of a directory that is not a neas run of this ``kind`` (nothing in it is touched)
    or whose config differs (the differing keys are listed; paths compare resolved, and ``out``
    not at all, so a moved or copied run resumes). A run that stopped before its first checkpoint
    starts over in place.
    """
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise NeasError(f"--out {run} is a file, not a directory")
    if resume:
        if not run.is_dir():
            raise NeasError(f"--resume: {run} does not exist, so there is no checkpoint to resume from")
        if not is_run_dir(run, legacy):
            raise NeasError(f"--resume: {run} is not a neas run directory (no {MARKER}); nothing in it was touched")
        _check_kind(run, kind)
        if "state.json" in legacy and not (run / "state.json").is_file():
            # nothing to continue: start over in place, with the corrected config if it changed
            log.info("%s stopped before its first checkpoint: starting it over in place", run)
            lock_run_dir(run)
            (run / "metrics.jsonl").unlink(missing_ok=True)  # ours (the directory carries the marker)
        else:
            check_resume_config(run, config, ignore)
            lock_run_dir(run)
    elif run.exists() and any(run.iterdir()):
        raise NeasError(f"run directory {run} already exists: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    lock_run_dir(run)
    _write_marker(run, kind)
    write_yaml(run / "config.yaml", to_dict(config))
    return run


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


def check_resume_config(run: Path, config, ignore) -> None:
    path = run / "config.yaml"
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise NeasError(f"--resume: {path} is not a readable config") from None
    if not isinstance(old, dict):
        raise NeasError(f"--resume: {path} is not a neas config (not a mapping)")
    try:  # compare values, not spellings: "1.5M" and 1500000 are one budget
        old = to_dict(from_dict(type(config), old))
    except NeasError:
        pass
    new = to_dict(config)
    try:
        old_cwd = Path(json.loads((run / MARKER).read_text()).get("cwd") or Path.cwd())
    except (OSError, ValueError, AttributeError):
        old_cwd = Path.cwd()
    old_home = (old_cwd / str(old.get("out") or run)).resolve().parent
    new_home = Path(str(new.get("out") or run)).resolve().parent
    diff = [k for k in sorted(set(old) | set(new))
            if k not in ignore and not _same_value(old.get(k), new.get(k), old_home, old_cwd, new_home)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise NeasError(f"--resume: the config differs from the one {run} was started with ({detail})")


def truncate_metrics(run: Path, last_epoch: int, key: str = "epoch") -> None:
    """Drops metric lines of epochs (or another ``key``: generations) after ``last_epoch``: they
    are redone on resume."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if record.get(key, -1) <= last_epoch:
            keep.append(line)
    write_text(path, "".join(l + "\n" for l in keep))


def run_stage(directory: Path, done: "list[str]", runner, cfg, name: str):
    """Runs one stage of an orchestrating command (``neas run``, ``neas ablate``): skips it when
    every file in ``done`` exists, resumes (or restarts in place) a stage directory it created,
    starts it otherwise. A directory that is not a neas run is refused, never deleted."""
    if all((directory / f).is_file() for f in done):
        check_resume_config(directory, cfg, ("resume", "device", "workers", "out"))  # never a stale result for new settings
        log.info("%s: done already (%s)", name, directory)
        return
    exists = directory.is_dir() and any(directory.iterdir())
    if exists and not is_run_dir(directory):
        raise NeasError(f"{directory} exists but is not a neas run directory (no {MARKER}): move it away; nothing was deleted")
    runner(dataclasses.replace(cfg, resume=exists))
