"""The training loop both training recipes run (:func:`train_epoch`), and what they share
around it: AMP, learning-rate schedules, seeding and resuming from a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from neas import dist
from neas.errors import NeasError
from neas.nn.precision import full_precision
from neas.rundir import truncate_metrics
from neas.seeding import seed_everything, stream_seed
from neas.train.checkpoint import load_checkpoint

__all__ = [
    "Precision",
    "TrainStep",
    "amp_dtype",
    "autocast",
    "epoch_seed",
    "linear_lr",
    "resume_run",
    "seed_everything",
    "train_epoch",
]


log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor, torch.Tensor, int], "tuple[torch.Tensor, list[torch.Tensor]]"]


class _EpochTotals:
    """An epoch's loss sum, correct count and first non-finite step, kept on the device: the host
    reads them only at :meth:`check` (every ``check_every`` steps and at the end)."""

    def __init__(self, device: torch.device, epoch: int, accuracy: bool):
        self.epoch, self.accuracy, self.seen = epoch, accuracy, 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # the first step with a non-finite loss
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)  # and that loss

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: list[torch.Tensor], y: torch.Tensor, step: int) -> None:
        loss = loss.detach()
        new_bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(new_bad, step, self.first_bad)
        self.bad_value = torch.where(new_bad, loss.float(), self.bad_value)
        self.loss_sum += loss.double() * len(y)
        self.seen += len(y)
        if self.accuracy:
            self.correct += (full_precision(torch.stack(logits)).mean(0).argmax(1) == y).sum()

    def check(self, bar) -> None:
        """Stops the run on a non-finite loss on any rank (none is left waiting in a collective)."""
        epoch = self.epoch + 1
        if dist.get_world_size() > 1:
            anywhere = int(dist.all_reduce_max(self.first_bad))
            if anywhere >= 0 and int(self.first_bad) < 0:
                raise NeasError(
                    f"the loss became non-finite on another rank by step {anywhere} (epoch {epoch}); stopping"
                )
        bad = int(self.first_bad)  # the one host sync, every check_every steps
        if bad >= 0:
            # every finished epoch wrote a checkpoint, so one exists exactly when this is not the first epoch
            kept = (
                "the last good checkpoint is kept"
                if epoch > 1
                else "no checkpoint was written yet (--resume starts it over in place)"
            )
            raise NeasError(f"the loss became {float(self.bad_value)} at step {bad} (epoch {epoch}); stopping — {kept}")
        bar.set_postfix(self.means(), refresh=False)

    def means(self) -> dict:
        n = max(self.seen, 1)
        return {"loss": float(self.loss_sum) / n, **({"ensemble_acc": int(self.correct) / n} if self.accuracy else {})}


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """What one training step runs, in order: ``set_lr(step)``; ``forward(x, y, step)`` under
    ``precision``'s autocast, returning the loss and the K path logits; backward through its scaler;
    ``after_backward(step)`` (the supernet's all-reduce); the optimizer step; ``after_step(step)``
    (the EMA)."""

    forward: Forward
    optimizer: torch.optim.Optimizer
    precision: Precision
    set_lr: Callable[[int], None] | None = None
    after_backward: Callable[[int], None] | None = None
    after_step: Callable[[int], None] | None = None
    accuracy: bool = False  # also count the top-1 of the mean path logits (``ensemble_acc``)


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    run_step: TrainStep,
    *,
    epoch: int,
    steps: int,
    device: torch.device,
    desc: str = "",
    check_every: int = 50,
) -> dict:
    """Trains ``model`` for one epoch of ``run_step`` (step ``i`` is global step ``epoch * steps + i``);
    returns its metrics, averaged over ranks.

    No step waits for the device (:class:`_EpochTotals`): a non-finite loss stops the run at the
    next check, naming its step, before any checkpoint is written.

    Returns:
        ``loss`` (mean per image), ``ensemble_acc`` (top-1 of the mean logits, with
        ``run_step.accuracy``), ``images_per_s`` (all ranks) and the last ``lr``.
    """
    model.train()
    hook, precision = run_step, run_step.precision
    totals, start = _EpochTotals(device, epoch, hook.accuracy), time.perf_counter()
    bar = tqdm(batches, total=steps, desc=desc, leave=False, disable=None if dist.is_main_process() else True)
    for i, (x, y) in enumerate(bar):
        step = epoch * steps + i
        if hook.set_lr is not None:
            hook.set_lr(step)
        with precision.autocast():
            loss, logits = hook.forward(x, y, step)
        hook.optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        if hook.after_backward is not None:
            hook.after_backward(step)
        precision.scaler.step(hook.optimizer)
        precision.scaler.update()
        if hook.after_step is not None:
            hook.after_step(step)
        totals.add(loss, logits, y, step)
        if (i + 1) % check_every == 0:
            totals.check(bar)
    totals.check(bar)
    elapsed = time.perf_counter() - start
    metrics = dist.all_reduce_mean(totals.means(), device)
    metrics["images_per_s"] = totals.seen * dist.get_world_size() / elapsed
    metrics["lr"] = hook.optimizer.param_groups[0]["lr"]
    return metrics


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The global RNG seed of an epoch on a rank (dropout, drop path): a resumed run repeats it."""
    return stream_seed(seed, "epoch", epoch, rank)


def resume_run(run: Path, model: torch.nn.Module, optimizer, extra: dict | None = None) -> dict:
    """Loads the last complete checkpoint of ``run`` into ``model``/``optimizer`` (and ``extra``
    modules), drops the metric lines of the epochs that will be redone; returns the saved state."""

    state = load_checkpoint(run, model, optimizer, extra or {})
    if dist.is_main_process():
        truncate_metrics(run, state["epoch"])
    return state


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 on CUDA (fp16 where bf16 is unsupported); ``None`` (full precision) on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    dtype = amp_dtype(device, enabled)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


@dataclasses.dataclass
class Precision:
    """A run's mixed precision, decided once: the autocast dtype (None: full precision) and the
    loss scaler, active only for fp16 (bf16 and fp32 need none). The scaler's state goes into
    every checkpoint (:meth:`state_dict`), so an fp16 run resumes exactly."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def of(cls, device: torch.device, enabled: bool = True) -> Precision:
        dtype = amp_dtype(device, enabled)
        return cls(dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))

    def autocast(self):
        return contextlib.nullcontext() if self.dtype is None else torch.autocast("cuda", dtype=self.dtype)

    def state_dict(self) -> dict:
        """The scaler's state, JSON numbers only (empty when it is not in use)."""
        return dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.scaler.load_state_dict(state)


def linear_lr(base: float, step: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up for ``warmup`` steps, then linear annealing to 0 at ``total`` (paper §4)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))
