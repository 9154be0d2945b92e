"""Phase 1: K-path supernet training with diversity-guided search-space shrinking.

    neas train-supernet --space tiny --data digits --out runs/supernet --epochs 12 --shrink-every 3
    torchrun --nproc_per_node 8 -m neas train-supernet --config configs/imagenet.yaml --out runs/in1k

Every step samples an ensemble uniformly from the current shrunk space (split point
included) and minimises the sum of the K path losses (docs/DESIGN.md §4); every ``shrink_every``
epochs the space is shrunk (§6) until at most ``shrink_until`` combinations remain. The run
directory holds ``config.yaml``, ``state.json`` + ``checkpoints/`` (resumable),
``supernet.safetensors``, ``shrink/round_XX.json``, ``metrics.jsonl`` and TensorBoard events.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from neas import dist
from neas.config import to_dict
from neas.data import Augment, BatchLoader, Training, calibration_sets, load_dataset
from neas.data.calibration import check_same_calibration
from neas.errors import NeasError
from neas.nn.precision import full_precision
from neas.rundir import RunDir, releases_run_dir
from neas.runfiles import SHRINK_ROUNDS, SHRUNK_SPACE, SUPERNET, round_file
from neas.schemas.supernet import SupernetConfig
from neas.shrink import shrink_round
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace
from neas.supernet import Supernet
from neas.supernet.io import SupernetFile, save_supernet
from neas.train.loop import Precision, TrainStep, linear_lr, seed_everything, train_epoch
from neas.train.recipe import TrainingRecipe, check_global_batch, run_training, scaled_lr

__all__ = ["SupernetConfig", "train_supernet"]

log = logging.getLogger(__name__)


def _setup_data(cfg: SupernetConfig, space: SearchSpace, device, rank: int, world: int):
    full = load_dataset(cfg.data, "train", space.input_size, cfg.data_dir, cfg.download, **cfg.decoding)
    if space.in_channels != 3:
        raise NeasError(
            f"space {space.name!r} expects in_channels={space.in_channels}, but dataset {cfg.data!r} has 3-channel "
            "images"
        )
    if full.num_classes < 2:
        raise NeasError(f"dataset {cfg.data!r} has {full.num_classes} class; at least 2 are needed")
    names = ("bn_batches x batch_size", "probe_images")
    sets = calibration_sets(full, cfg.holdout, cfg.bn_batches * cfg.batch_size, cfg.probe_images, names)
    train = sets.train
    check_global_batch(len(train), cfg.batch_size, world, what="images of the training part")
    augment = Augment(pad=max(1, space.input_size // 8), flip=cfg.data != "digits") if cfg.augment else None
    loader = BatchLoader(train, cfg.batch_size, Training(cfg.seed, augment, rank, world), device, workers=cfg.workers)
    # BN and probe batches are identical on every rank (every rank derives the same drops).
    bn = sets.bn_batches(cfg.batch_size, device, cfg.workers)
    probe = sets.score_batches(min(cfg.batch_size * 4, len(sets.score)), device, cfg.workers)
    return full, loader, bn, probe, sets.record()


def _epoch(job: _SupernetTraining, epoch: int) -> tuple[dict, str]:
    """One epoch of uniformly sampled ensembles; returns its metrics and a digest of the ensembles sampled."""
    cfg, model, loader, optimizer, shrunk = job.cfg, job.model, job.loader, job.optimizer, job.shrunk
    steps, world = len(loader), dist.get_world_size()
    arch_gen = random.Random(f"{cfg.seed}:{epoch}:arch")  # identical on every rank
    digest = hashlib.sha256()
    archs, communicated = {}, []

    def set_lr(step):
        lr = linear_lr(job.base_lr, step, steps * cfg.epochs, cfg.warmup_epochs * steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

    def forward(x, y, step):
        arch = archs[step] = EnsembleArch.sample(model.space, arch_gen, shrunk)
        digest.update(str(arch).encode())
        logits = model(x, arch)
        return sum(F.cross_entropy(full_precision(lg), y) for lg in logits), logits

    def after_backward(step):
        # under torchrun: average the gradients of exactly the sampled ensemble's weights (every rank
        # sampled the same one); the rest keep grad None, so the optimizer leaves them untouched
        arch = archs.pop(step)
        if world > 1:
            params = list(dict.fromkeys(p for m in model.used_modules(arch) for p in m.parameters()))
            communicated.append(dist.all_reduce_grads(params))

    step = TrainStep(forward, optimizer, job.precision, set_lr, after_backward, accuracy=True)
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    metrics = train_epoch(model, loader.epoch(epoch), step, epoch=epoch, steps=steps, device=job.run.device, desc=desc)
    if communicated:
        metrics["allreduce_mb_per_step"] = sum(communicated) / len(communicated) / 2**20
    return metrics, digest.hexdigest()


def _setup_model(cfg: SupernetConfig, space: SearchSpace, num_classes: int, device, world: int):
    """The supernet (its initial weights a function of the seed) and its SGD optimizer; returns them and the base lr."""
    seed_everything(cfg.seed)
    model = Supernet(space, num_classes, cfg.scale_shared_grad).to(device, memory_format=torch.channels_last)
    if cfg.compile == "blocks":
        model.compile_blocks()
    base_lr = cfg.lr if cfg.lr is not None else scaled_lr(0.5, 1024, cfg.batch_size, world)  # the paper's 0.5 at 1024
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, optimizer, base_lr


def _shrink_if_due(job: _SupernetTraining, epoch: int) -> str:
    """Algorithm 1's shrinking round after ``epoch`` when one is due: shrinks ``job``'s space and writes
    the round's record; returns a note for the log line."""
    cfg, rounds, before = job.cfg, job.rounds, job.shrunk.num_combinations
    due = cfg.shrink.mode != "none" and (epoch + 1) % cfg.shrink.every == 0 and epoch + 1 < cfg.epochs
    if not due or before <= cfg.shrink.until:
        return ""
    gen = random.Random(f"{cfg.seed}:{epoch}:shrink")
    bar = job.run.progress(total=cfg.shrink.samples, desc=f"shrink round {rounds + 1}", leave=False)
    job.shrunk, record = shrink_round(job.model, job.shrunk, cfg.shrink, *job.batches, gen, bar)
    bar.close()
    job.run.write_json(
        f"{SHRINK_ROUNDS}/{round_file(rounds)}",
        {"round": rounds, "epoch": epoch + 1, "calibration": job.calibration, **record},
        indent=None,
    )
    job.rounds = rounds + 1
    return f"  shrink {before} -> {job.shrunk.num_combinations}"


def _write_supernet(run: RunDir, model, cfg: SupernetConfig, space: SearchSpace, shrunk: ShrunkSpace, classes) -> None:
    info = SupernetFile(
        space,
        shrunk,
        tuple(classes),
        cfg.data,
        cfg.resolved_data_dir,  # `neas search` from anywhere
        cfg.holdout,
        cfg.shrink.mode,
        cfg.epochs - 1,
        to_dict(cfg),
    )
    save_supernet(model, info, run / SUPERNET)
    run.write_json(SHRUNK_SPACE, shrunk.to_json())
    log.info("supernet written to %s", run / SUPERNET)


@dataclass
class _SupernetTraining(TrainingRecipe):
    """Supernet training as :func:`neas.train.recipe.run_training` runs it: set up by :func:`train_supernet`."""

    cfg: SupernetConfig
    run: RunDir
    model: Supernet
    optimizer: torch.optim.Optimizer
    precision: Precision
    base_lr: float
    loader: BatchLoader
    batches: tuple  # (BN batches, probe batches): identical on every rank
    calibration: dict  # the record of how the training split was carved
    classes: tuple
    shrunk: ShrunkSpace
    rounds: int = 0  # shrinking rounds done
    note: str = ""  # the last epoch's shrinking, for its log line

    @property
    def steps(self) -> int:
        return len(self.loader)

    def load_state_dict(self, state: dict) -> None:
        check_same_calibration(self.run, state, self.calibration)
        self.shrunk = ShrunkSpace.from_json(self.model.space, state["shrunk"])
        self.rounds = state["shrink_rounds"]

    def state_dict(self, epoch: int) -> dict:
        return {
            "shrink_rounds": self.rounds,
            "shrunk": self.shrunk.to_json(),
            "steps": (epoch + 1) * self.steps,
            "calibration": self.calibration,
        }

    def start(self, first_epoch: int) -> str:
        dist.broadcast_module(self.model)  # rank 0's weights everywhere (the gradients are then reduced by hand)
        space, probe = self.model.space, sum(len(y) for _, y in self.batches[1])
        return (
            f"supernet: space {space.name!r} ({space.num_layers} layers, {self.shrunk.num_combinations} combinations), "
            f"{len(self.classes)} classes, {len(self.loader.data)} train images, {probe} probe images, "
            f"{self.steps} steps/epoch, device {self.run.device} x{self.run.world}"
        )

    def train_one_epoch(self, epoch: int) -> dict:
        metrics, digest = _epoch(self, epoch)
        if len(set(dist.all_gather_object(digest))) != 1:
            raise NeasError(
                f"epoch {epoch + 1}: ranks sampled different ensembles; check that every rank runs the same "
                "seed and config"
            )
        self.note = _shrink_if_due(self, epoch)
        metrics["combinations"] = self.shrunk.num_combinations
        return metrics

    def epoch_line(self, epoch: int, metrics: dict) -> str:
        return (
            f"epoch {epoch + 1}/{self.cfg.epochs}  loss {metrics['loss']:.4f}  "
            f"ens-acc {100 * metrics['ensemble_acc']:.1f}%  lr {metrics['lr']:.4g}  "
            f"{metrics['images_per_s']:.0f} img/s  {self.shrunk.num_combinations} combinations{self.note}"
        )

    def finish(self) -> None:
        _write_supernet(self.run, self.model, self.cfg, self.model.space, self.shrunk, self.classes)


@releases_run_dir
def train_supernet(cfg: SupernetConfig) -> Path:
    """Runs (or resumes) supernet training; returns the run directory."""
    device = dist.init(cfg.device)
    space = SearchSpace.resolve(cfg.space)
    if space.num_paths == 1 and cfg.shrink.mode == "diversity":
        raise NeasError(
            f"shrink: diversity compares pairs of paths, and space {space.name!r} has one path (a single "
            f"network); use shrink quality, accuracy or none"
        )
    run = RunDir.open(cfg, "train-supernet", device)
    full, loader, bn_batches, probe_batches, calibration = _setup_data(cfg, space, device, run.rank, run.world)
    model, optimizer, base_lr = _setup_model(cfg, space, full.num_classes, device, run.world)
    precision = Precision.of(device, cfg.amp)
    batches, classes = (bn_batches, probe_batches), tuple(full.classes)
    recipe = _SupernetTraining(
        cfg, run, model, optimizer, precision, base_lr, loader, batches, calibration, classes, ShrunkSpace.full(space)
    )
    run_training(recipe)
    return run.path
