"""Pieces shared by the training recipes: device setup, AMP, learning-rate schedules, run dirs."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import torch
import yaml

from neas.config import to_dict
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
]


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
