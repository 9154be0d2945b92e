"""The training loop both training recipes run (:func:`train_epoch`), and what they share
around it: AMP, learning-rate schedules, seeding, run directories and resuming."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import yaml
from tqdm import tqdm

from neas.config import from_dict, to_dict
from neas.errors import NeasError

__all__ = [
    "amp_dtype",
    "autocast",
    "grad_scaler",
    "linear_lr",
    "seed_everything",
    "prepare_run_dir",
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
) -> dict:
    """Trains ``model`` for one epoch; returns its metrics, averaged over ranks.

    Per step ``i`` (global step ``epoch * steps + i``): ``set_lr(step)``; ``forward(x, y, step)``
    under autocast returns the loss and the K path logits; a non-finite loss stops the run,
    naming the step; backward through the scaler, ``after_backward(step)``, the optimizer step,
    ``after_step(step)``.

    Returns:
        ``loss`` (mean per image), ``ensemble_acc`` (top-1 of the mean logits, with
        ``accuracy``), ``images_per_s`` (all ranks) and the last ``lr``.
    """
    from neas import dist

    model.train()
    loss_sum, correct, seen, start = 0.0, 0.0, 0, time.perf_counter()
    bar = tqdm(batches, total=steps, desc=desc, leave=False, disable=None if dist.is_main_process() else True)
    for i, (x, y) in enumerate(bar):
        step = epoch * steps + i
        if set_lr is not None:
            set_lr(step)
        with autocast(device, amp):
            loss, logits = forward(x, y, step)
        if not torch.isfinite(loss):
            raise NeasError(f"the loss became {loss.item()} at step {step} (epoch {epoch + 1}); stopping — the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward(step)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step(step)
        with torch.no_grad():
            loss_sum += loss.item() * len(y)
            seen += len(y)
            if accuracy:
                correct += (torch.stack(logits).float().mean(0).argmax(1) == y).sum().item()
        postfix = {"loss": f"{loss_sum / seen:.3f}", **({"acc": f"{correct / seen:.1%}"} if accuracy else {})}
        bar.set_postfix(postfix, refresh=False)
    elapsed = time.perf_counter() - start
    metrics = {"loss": loss_sum / max(seen, 1), **({"ensemble_acc": correct / max(seen, 1)} if accuracy else {})}
    metrics = dist.all_reduce_mean(metrics, device)
    metrics["images_per_s"] = seen * dist.get_world_size() / elapsed
    metrics["lr"] = optimizer.param_groups[0]["lr"]
    return metrics


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The global RNG seed of an epoch on a rank (dropout, RandAugment): a resumed run repeats it."""
    return seed * 1000 + epoch * 16 + rank


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


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's (timm's RandAugment draws from it) and torch's global RNGs."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run_dir(out: "str | Path", resume: bool, config, ignore=("resume", "device", "workers")) -> Path:
    """Creates the run directory, or checks it for ``--resume``; writes ``config.yaml``.

    Refuses to reuse a non-empty directory without ``--resume`` (nothing is overwritten), and
    refuses ``--resume`` with a different config (the differing keys are listed).
    """
    run = Path(out)
    if resume:
        if not (run / "state.json").is_file():
            raise NeasError(f"--resume: {run} has no checkpoint to resume from (no state.json)")
        check_resume_config(run, config, ignore)
    elif run.exists() and any(run.iterdir()):
        raise NeasError(f"run directory {run} already exists and is not empty: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    from neas import dist

    if dist.is_main_process():
        from neas.train.checkpoint import atomic_write_text

        atomic_write_text(run / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    return run


def check_resume_config(run: Path, config, ignore) -> None:
    path = run / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text()) or {}
    try:  # compare values, not spellings: "1.5M" and 1500000 are one budget
        old = to_dict(from_dict(type(config), old))
    except NeasError:
        pass
    new = to_dict(config)
    diff = [k for k in sorted(set(old) | set(new)) if k not in ignore and old.get(k) != new.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise NeasError(f"--resume: the config differs from the one {run} was started with ({detail})")


def truncate_metrics(run: Path, last_epoch: int) -> None:
    """Drops metric lines of epochs after ``last_epoch`` (they are redone on resume)."""
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
        if record.get("epoch", -1) <= last_epoch:
            keep.append(line)
    from neas.train.checkpoint import atomic_write_text

    atomic_write_text(path, "".join(l + "\n" for l in keep))


def run_stage(directory: Path, done: "list[str]", runner, cfg, name: str):
    """Runs one stage of an orchestrating command (``neas run``, ``neas ablate``): skips it when
    every file in ``done`` exists, resumes it when it has a checkpoint, starts it otherwise."""
    if all((directory / f).is_file() for f in done):
        log.info("%s: done already (%s)", name, directory)
        return
    resumable = (directory / "state.json").is_file()
    from neas import dist

    if directory.exists() and not resumable and dist.is_main_process():
        log.info("%s: restarting (it stopped before its first checkpoint)", name)
        shutil.rmtree(directory)
    dist.barrier()
    runner(dataclasses.replace(cfg, resume=resumable))
