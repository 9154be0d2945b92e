"""The one shape of a training recipe, and the one driver that runs it (torchtune's recipe interface).

A training recipe (``train-supernet``, ``retrain``, ``detect``) builds its data, model and optimizer,
then hands itself to :func:`run_training`, which owns everything every training does the same way:

    start = resume (the newest intact checkpoint, its metric lines after it dropped) or 0
    recipe.start(start)                      # every rank: wrap (DDP, compile), broadcast; the banner
    for epoch in range(start, epochs):
        seed everything from (seed, epoch, rank)
        metrics = recipe.train_one_epoch(epoch)             # every rank
        rank 0: metrics += recipe.evaluate(epoch); the metric line; the checkpoint; the log line
        barrier
    rank 0: recipe.finish()                  # the run's results (weights, eval.json, report)

So no recipe tests for rank 0 or waits at a barrier; ``dist.py`` and :class:`neas.rundir.RunDir`
are the rest of the distributed vocabulary. A recipe is a dataclass that names :class:`TrainingRecipe`
as its base (for the defaults of the optional methods); the driver calls it, never the reverse.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch

from neas import dist
from neas.errors import NeasError
from neas.log import MetricLogger
from neas.rundir import RunDir
from neas.seeding import seed_everything
from neas.train.checkpoint import save_checkpoint
from neas.train.loop import Precision, epoch_seed, resume_run

__all__ = ["TrainingRecipe", "check_global_batch", "run_training", "scaled_lr"]

log = logging.getLogger(__name__)


class TrainingRecipe(Protocol):
    """What :func:`run_training` needs of a recipe; a recipe names it as its base for the defaults."""

    cfg: Any  # the recipe's config: ``seed`` and ``epochs`` are the driver's
    run: RunDir
    model: torch.nn.Module  # the weights checkpointed as ``model.*``
    optimizer: torch.optim.Optimizer
    precision: Precision

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (the metric line's step is (epoch + 1) * steps)."""

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Further modules checkpointed beside the model (the EMA), by prefix."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the recipe's own fields of a checkpoint's state (the shrunk space)."""

    def state_dict(self, epoch: int) -> dict:
        """The recipe's own fields of the state written after ``epoch``."""
        return {}

    def start(self, first_epoch: int) -> str:
        """Every rank, once the weights are final (fresh or resumed): wraps the model (DDP,
        compile) and broadcasts what must match; returns the banner rank 0 logs."""

    def train_one_epoch(self, epoch: int) -> dict:
        """Every rank: one epoch; returns its metrics (the same on every rank)."""

    def evaluate(self, epoch: int) -> dict:
        """Rank 0, after ``epoch``: further metrics for its line (a quick test score), or {}."""
        return {}

    def epoch_line(self, epoch: int, metrics: dict) -> str:
        """The log line of a finished epoch."""

    def finish(self) -> None:
        """Rank 0, after the last epoch: the run's results."""


def _resume(recipe: TrainingRecipe) -> int:
    """The first epoch to train: 0, or the one after the checkpoint a resumed run continues from."""
    run = recipe.run
    if not run.resuming:
        return 0
    state = resume_run(run, recipe.model, recipe.optimizer, recipe.extra_modules())
    recipe.precision.load_state_dict(state.get("scaler"))
    recipe.load_state_dict(state)
    log.info("resuming %s after epoch %d", run.path, state["epoch"] + 1)
    return state["epoch"] + 1


def _end_epoch(recipe: TrainingRecipe, logger: MetricLogger, epoch: int, metrics: dict) -> None:
    """Rank 0's end of an epoch: the metric line, then the checkpoint (resume trims metric lines after it)."""
    metrics.update(recipe.evaluate(epoch))
    logger.log((epoch + 1) * recipe.steps, epoch=epoch, **metrics)
    state = {"epoch": epoch, "seed": recipe.cfg.seed, **recipe.state_dict(epoch)}
    state["scaler"] = recipe.precision.state_dict()
    name = f"epoch_{epoch:04d}"
    save_checkpoint(recipe.run, name, recipe.model, recipe.optimizer, state, extra=recipe.extra_modules())
    log.info("%s", recipe.epoch_line(epoch, metrics))


def run_training(recipe: TrainingRecipe) -> None:
    """Runs (or resumes) ``recipe`` to its last epoch and its results, on every rank."""
    run = recipe.run
    start = _resume(recipe)
    banner = recipe.start(start)
    if run.main:
        log.info("%s", banner)
    logger = MetricLogger(run)
    for epoch in range(start, recipe.cfg.epochs):
        seed_everything(epoch_seed(recipe.cfg.seed, epoch, run.rank))  # dropout, drop path: a function of these
        metrics = recipe.train_one_epoch(epoch)
        if run.main:
            _end_epoch(recipe, logger, epoch, metrics)
        dist.barrier()
    if run.main:
        recipe.finish()
    logger.close()
    dist.barrier()


def check_global_batch(images: int, batch_size: int, world: int, field: str = "batch_size", what: str = "") -> None:
    """Refuses a training part smaller than one global batch (``batch_size`` x ``world`` images):
    no process would draw a full batch. ``field`` names the setting, ``what`` the images."""
    if batch_size * world > images:
        fit = max(1, images // world)
        hint = f"--batch-size {fit}" if field == "batch_size" else f"{field}={fit}"
        raise NeasError(
            f"{field}: {batch_size} x {world} process(es) is more than the {images} {what or 'training images'}; "
            f"use {hint} or less"
        )


def scaled_lr(lr_per_reference: float, reference: int, batch_size: int, world: int) -> float:
    """The linear scaling rule (Goyal et al.): ``lr_per_reference`` at a global batch of ``reference``,
    scaled to this run's global batch ``batch_size x world``."""
    return lr_per_reference * batch_size * world / reference
