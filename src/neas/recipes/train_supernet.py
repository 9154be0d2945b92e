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
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from neas import dist
from neas.config import to_dict
from neas.data import Augment, BatchLoader, calibration_sets, load_dataset
from neas.data.calibration import check_same_calibration
from neas.errors import NeasError
from neas.log import MetricLogger
from neas.nn.precision import full_precision
from neas.rundir import SHRINK_ROUNDS, SHRUNK_SPACE, SUPERNET, RunDir, releases_run_dir, round_file
from neas.schemas.supernet import SupernetConfig
from neas.shrink import shrink_round
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace
from neas.supernet import Supernet
from neas.supernet.io import SupernetFile, save_supernet
from neas.train.checkpoint import save_checkpoint
from neas.train.loop import Precision, epoch_seed, linear_lr, resume_run, seed_everything, train_epoch

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
    sets = calibration_sets(full, cfg.holdout, cfg.bn_batches * cfg.batch_size, cfg.probe_images)
    train = sets.train
    if len(train) < cfg.batch_size * world:
        raise NeasError(
            f"the training part has {len(train)} images, fewer than one global batch ({cfg.batch_size} x {world})"
        )
    augment = Augment(pad=max(1, space.input_size // 8), flip=cfg.data != "digits") if cfg.augment else None
    loader = BatchLoader(train, cfg.batch_size, True, augment, cfg.seed, rank, world, device, workers=cfg.workers)
    # BN and probe batches are identical on every rank (every rank derives the same drops).
    bn = sets.bn_batches(cfg.batch_size, device, cfg.workers)
    probe = sets.score_batches(min(cfg.batch_size * 4, len(sets.score)), device, cfg.workers)
    return full, loader, bn, probe, sets.record()


def _epoch(
    model: Supernet,
    loader,
    shrunk: ShrunkSpace,
    cfg: SupernetConfig,
    *,
    epoch: int,
    optimizer,
    precision,
    base_lr: float,
    device,
) -> tuple[dict, str]:
    """One epoch of uniformly sampled ensembles; returns its metrics and a digest of the ensembles sampled."""
    steps, world = len(loader), dist.get_world_size()
    arch_gen = random.Random(f"{cfg.seed}:{epoch}:arch")  # identical on every rank
    digest = hashlib.sha256()
    archs, communicated = {}, []

    def set_lr(step):
        lr = linear_lr(base_lr, step, steps * cfg.epochs, cfg.warmup_epochs * steps)
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

    metrics = train_epoch(
        model,
        loader.epoch(epoch),
        forward,
        optimizer,
        precision,
        epoch=epoch,
        steps=steps,
        device=device,
        set_lr=set_lr,
        after_backward=after_backward,
        accuracy=True,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
    )
    if communicated:
        metrics["allreduce_mb_per_step"] = sum(communicated) / len(communicated) / 2**20
    return metrics, digest.hexdigest()


def _setup_model(cfg: SupernetConfig, space: SearchSpace, num_classes: int, device, world: int):
    """The supernet (its initial weights a function of the seed) and its SGD optimizer; returns them and the base lr."""
    seed_everything(cfg.seed)
    model = Supernet(space, num_classes, cfg.scale_shared_grad).to(device, memory_format=torch.channels_last)
    if cfg.compile == "blocks":
        model.compile_blocks()
    base_lr = cfg.lr if cfg.lr is not None else 0.5 * cfg.batch_size * world / 1024
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, optimizer, base_lr


def _resume(run: RunDir, model, optimizer, precision: Precision, space: SearchSpace, calibration: dict):
    """(shrunk space, first epoch, shrinking rounds done): the checkpoint's, or a fresh start's."""
    if not run.resuming:
        return ShrunkSpace.full(space), 0, 0
    state = resume_run(run, model, optimizer)
    precision.load_state_dict(state.get("scaler"))
    check_same_calibration(run, state, calibration)
    shrunk = ShrunkSpace.from_json(space, state["shrunk"])
    log.info("resuming %s after epoch %d (%d combinations left)", run.path, state["epoch"] + 1, shrunk.num_combinations)
    return shrunk, state["epoch"] + 1, state["shrink_rounds"]


def _shrink_if_due(
    run: RunDir,
    model,
    shrunk: ShrunkSpace,
    cfg: SupernetConfig,
    epoch: int,
    rounds: int,
    bn_batches,
    probe_batches,
    calibration: dict,
) -> tuple[ShrunkSpace, int, str]:
    """Algorithm 1's shrinking round after ``epoch`` when one is due; writes its record. Returns the
    shrunk space, the rounds done and a note for the log line."""
    due = cfg.shrink.mode != "none" and (epoch + 1) % cfg.shrink.every == 0 and epoch + 1 < cfg.epochs
    if not due or shrunk.num_combinations <= cfg.shrink.until:
        return shrunk, rounds, ""
    gen = random.Random(f"{cfg.seed}:{epoch}:shrink")
    bar = tqdm(
        total=cfg.shrink.samples, desc=f"shrink round {rounds + 1}", leave=False, disable=None if run.main else True
    )
    before = shrunk.num_combinations
    shrunk, record = shrink_round(model, shrunk, cfg.shrink, bn_batches, probe_batches, gen, bar)
    bar.close()
    run.write_json(
        f"{SHRINK_ROUNDS}/{round_file(rounds)}",
        {"round": rounds, "epoch": epoch + 1, "calibration": calibration, **record},
        indent=None,
    )
    return shrunk, rounds + 1, f"  shrink {before} -> {shrunk.num_combinations}"


def _log_epoch(cfg: SupernetConfig, epoch: int, metrics: dict, combinations: int, note: str) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  ens-acc %.1f%%  lr %.4g  %.0f img/s  %d combinations%s",
        epoch + 1,
        cfg.epochs,
        metrics["loss"],
        100 * metrics["ensemble_acc"],
        metrics["lr"],
        metrics["images_per_s"],
        combinations,
        note,
    )


def _end_epoch(
    run: RunDir,
    logger: MetricLogger,
    model,
    optimizer,
    cfg: SupernetConfig,
    epoch: int,
    steps: int,
    metrics: dict,
    shrunk: ShrunkSpace,
    rounds: int,
    calibration: dict,
    precision: Precision,
    note: str,
) -> None:
    """Rank 0's end of an epoch: the metric line, then the checkpoint (resume trims metric lines after it)."""
    state = {
        "epoch": epoch,
        "shrink_rounds": rounds,
        "shrunk": shrunk.to_json(),
        "seed": cfg.seed,
        "steps": (epoch + 1) * steps,
        "calibration": calibration,
        "scaler": precision.state_dict(),
    }
    logger.log((epoch + 1) * steps, epoch=epoch, **metrics)
    save_checkpoint(run, f"epoch_{epoch:04d}", model, optimizer, state)
    _log_epoch(cfg, epoch, metrics, shrunk.num_combinations, note)


def _write_supernet(run: RunDir, model, cfg: SupernetConfig, space: SearchSpace, shrunk: ShrunkSpace, classes) -> None:
    info = SupernetFile(
        space,
        shrunk,
        tuple(classes),
        cfg.data,
        cfg.data_dir,
        cfg.holdout,
        cfg.shrink.mode,
        cfg.epochs - 1,
        to_dict(cfg),
    )
    save_supernet(model, info, run / SUPERNET)
    run.write_json(SHRUNK_SPACE, shrunk.to_json())
    log.info("supernet written to %s", run / SUPERNET)


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
    shrunk, start_epoch, rounds = _resume(run, model, optimizer, precision, space, calibration)
    dist.broadcast_module(model)  # rank 0's weights everywhere (the gradients are then reduced by hand)
    logger, steps = MetricLogger(run), len(loader)
    if run.main:
        probe = sum(len(y) for _, y in probe_batches)
        log.info(
            f"supernet: space {space.name!r} ({space.num_layers} layers, {shrunk.num_combinations} combinations), "
            f"{full.num_classes} classes, {len(loader.data)} train images, {probe} probe images, {steps} steps/epoch, "
            f"device {device} x{run.world}"
        )
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch, run.rank))  # dropout: a function of (seed, epoch, rank)
        metrics, digest = _epoch(
            model,
            loader,
            shrunk,
            cfg,
            epoch=epoch,
            optimizer=optimizer,
            base_lr=base_lr,
            device=device,
            precision=precision,
        )
        if len(set(dist.all_gather_object(digest))) != 1:
            raise NeasError(
                f"epoch {epoch + 1}: ranks sampled different ensembles; check that every rank runs the same "
                "seed and config"
            )
        shrunk, rounds, note = _shrink_if_due(
            run, model, shrunk, cfg, epoch, rounds, bn_batches, probe_batches, calibration
        )
        metrics["combinations"] = shrunk.num_combinations
        if run.main:
            _end_epoch(
                run, logger, model, optimizer, cfg, epoch, steps, metrics, shrunk, rounds, calibration, precision, note
            )
        dist.barrier()
    run.on_main(lambda: _write_supernet(run, model, cfg, space, shrunk, full.classes))
    logger.close()
    dist.barrier()
    return run.path
