"""Phase 1: K-path supernet training with diversity-guided search-space shrinking.

    neas train-supernet --space tiny --data digits --out runs/supernet --epochs 12 --shrink-every 3
    torchrun --nproc_per_node 8 -m neas train-supernet --config configs/imagenet.yaml --out runs/in1k

Every step samples an ensemble uniformly from the current shrunk space (split point
included) and minimises the sum of the K path losses (DESIGN.md §4); every ``shrink_every``
epochs the space is shrunk (§6) until at most ``shrink_until`` combinations remain. The run
directory holds ``config.yaml``, ``state.json`` + ``checkpoints/`` (resumable),
``supernet.safetensors``, ``shrink/round_XX.json``, ``metrics.jsonl`` and TensorBoard events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from neas import dist
from neas.data import Augment, BatchLoader, calibration_sets, load_dataset
from neas.errors import NeasError, suggest
from neas.log import MetricLogger
from neas.shrink import SHRINK_MODES, ShrinkSettings, shrink_round
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace
from neas.supernet import Supernet
from neas.supernet.io import SupernetFile, save_supernet
from neas.train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from neas.train.loop import autocast, grad_scaler, linear_lr, prepare_run_dir, seed_everything, truncate_metrics

__all__ = ["SupernetConfig", "train_supernet"]

log = logging.getLogger(__name__)


@dataclass
class SupernetConfig:
    """Every option of ``neas train-supernet``; each is also a YAML key."""

    out: str = "runs/supernet"  # run directory
    space: str = "tiny"  # search space preset or YAML file
    data: str = "digits"  # digits | cifar10 | cifar100 | imagefolder
    data_dir: "str | None" = None  # dataset root (cifar: download dir or ImageFolder copy)
    download: bool = False  # let torchvision download cifar10/cifar100
    holdout: float = 0.1  # fraction of the training split held out to score candidates
    epochs: int = 12
    batch_size: int = 64  # per process
    lr: "float | None" = None  # default: 0.5 * global batch / 1024 (paper: 0.5 at 1024)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: int = 0
    scale_shared_grad: bool = True  # divide the shared part's gradient by K
    augment: bool = True  # random crop (+ flip except on digits) for in-memory data
    shrink: str = "diversity"  # diversity | accuracy | none
    shrink_every: int = 20  # E: epochs between shrinking rounds
    shrink_drop: int = 20  # k: combinations dropped per round
    shrink_until: int = 0  # T: stop shrinking once at most T combinations remain
    shrink_samples: int = 20  # Z: ensembles sampled per round
    shrink_beta: float = 1e-3  # beta of the similarity exp(-beta * distance)
    shrink_gamma: float = 5.0  # gamma of the quality exp(gamma * accuracy)
    bn_batches: int = 4  # R: batches for BN recalibration before probing an ensemble
    probe_images: int = 256  # held-out images each sampled ensemble is scored on
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA
    workers: int = 4  # loader processes for streamed (on-disk) datasets
    resume: bool = False

    def validate(self) -> "SupernetConfig":
        if self.shrink not in SHRINK_MODES:
            raise NeasError(f"shrink: unknown mode {self.shrink!r}{suggest(self.shrink, SHRINK_MODES)}; modes: {', '.join(SHRINK_MODES)}")
        for key in ("epochs", "batch_size", "shrink_every", "shrink_samples", "bn_batches", "probe_images"):
            if getattr(self, key) < 1:
                raise NeasError(f"{key} must be at least 1, got {getattr(self, key)}")
        for key in ("shrink_drop", "shrink_until", "warmup_epochs", "workers"):
            if getattr(self, key) < 0:
                raise NeasError(f"{key} must not be negative, got {getattr(self, key)}")
        if not 0.0 <= self.holdout < 1.0:
            raise NeasError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.lr is not None and not self.lr > 0:
            raise NeasError(f"lr must be positive, got {self.lr}")
        return self


def _data(cfg: SupernetConfig, space: SearchSpace, device, rank: int, world: int):
    full = load_dataset(cfg.data, "train", space.input_size, cfg.data_dir, cfg.download)
    if space.in_channels != 3:
        raise NeasError(f"space {space.name!r} expects in_channels={space.in_channels}, but dataset {cfg.data!r} has 3-channel images")
    if full.num_classes < 2:
        raise NeasError(f"dataset {cfg.data!r} has {full.num_classes} class; at least 2 are needed")
    sets = calibration_sets(full, cfg.holdout, cfg.bn_batches * cfg.batch_size, cfg.probe_images)
    train = sets.train
    if len(train) < cfg.batch_size * world:
        raise NeasError(f"the training part has {len(train)} images, fewer than one global batch ({cfg.batch_size} x {world})")
    augment = Augment(pad=max(1, space.input_size // 8), flip=cfg.data != "digits") if cfg.augment else None
    loader = BatchLoader(train, cfg.batch_size, True, augment, cfg.seed, rank, world, device, workers=cfg.workers)
    # BN and probe batches are identical on every rank (every rank derives the same drops).
    bn = sets.bn_batches(cfg.batch_size, device, cfg.workers)
    probe = sets.score_batches(min(cfg.batch_size * 4, len(sets.score)), device, cfg.workers)
    return full, loader, bn, probe, sets.record()


def _train_epoch(model, net, optimizer, loader, space, shrunk, cfg, epoch, steps_per_epoch, total_steps, base_lr, device):
    """One epoch; returns (metrics dict, arch digest). ``net`` may be the DDP wrapper of ``model``."""
    model.train()
    scaler = grad_scaler(device, cfg.amp)
    arch_gen = random.Random(f"{cfg.seed}:{epoch}:arch")  # identical on every rank
    digest = hashlib.sha256()
    loss_sum, correct, seen, start = 0.0, 0.0, 0, time.perf_counter()
    bar = tqdm(loader.epoch(epoch), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=None if dist.is_main_process() else True)
    for i, (x, y) in enumerate(bar):
        step = epoch * steps_per_epoch + i
        lr = linear_lr(base_lr, step, total_steps, cfg.warmup_epochs * steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        arch = EnsembleArch.sample(space, arch_gen, shrunk)
        digest.update(str(arch).encode())
        with autocast(device, cfg.amp):
            logits = net(x, arch)
            loss = sum(F.cross_entropy(l.float(), y) for l in logits)
        if not torch.isfinite(loss):
            raise NeasError(f"the loss became {loss.item()} at step {step} (epoch {epoch + 1}); stopping — the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if net is not model:  # DDP reduces zeros for unused blocks: leave them untouched (grad None)
            used = {id(p) for m in model.used_modules(arch) for p in m.parameters()}
            for p in model.parameters():
                if id(p) not in used:
                    p.grad = None
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            loss_sum += loss.item() * len(y)
            correct += (torch.stack(logits).float().mean(0).argmax(1) == y).sum().item()
            seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.1%}", refresh=False)
    elapsed = time.perf_counter() - start
    metrics = dist.all_reduce_mean({"loss": loss_sum / max(seen, 1), "ensemble_acc": correct / max(seen, 1)}, device)
    metrics["images_per_s"] = seen * dist.get_world_size() / elapsed
    metrics["lr"] = lr
    return metrics, digest.hexdigest()


def train_supernet(cfg: SupernetConfig) -> Path:
    """Runs (or resumes) supernet training; returns the run directory."""
    cfg.validate()
    device = dist.init(cfg.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    space = SearchSpace.resolve(cfg.space)
    run = prepare_run_dir(cfg.out, cfg.resume, cfg) if dist.is_main_process() else Path(cfg.out)
    dist.barrier()
    full, loader, bn_batches, probe_batches, calibration = _data(cfg, space, device, rank, world)
    seed_everything(cfg.seed)  # the initial weights are a function of the seed
    model = Supernet(space, full.num_classes, cfg.scale_shared_grad).to(device, memory_format=torch.channels_last)
    base_lr = cfg.lr if cfg.lr is not None else 0.5 * cfg.batch_size * world / 1024
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    shrunk, start_epoch, rounds = ShrunkSpace.full(space), 0, 0
    if cfg.resume:
        state = load_checkpoint(run, model, optimizer)
        shrunk = ShrunkSpace.from_json(space, state["shrunk"])
        start_epoch, rounds = state["epoch"] + 1, state["shrink_rounds"]
        if dist.is_main_process():
            truncate_metrics(run, state["epoch"])
        log.info("resuming %s after epoch %d (%d combinations left)", run, state["epoch"] + 1, shrunk.num_combinations)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    settings = ShrinkSettings(cfg.shrink, cfg.shrink_drop, cfg.shrink_until, cfg.shrink_samples, cfg.shrink_beta, cfg.shrink_gamma)
    logger = MetricLogger(run)
    steps = len(loader)
    total = steps * cfg.epochs
    if dist.is_main_process():
        (run / "shrink").mkdir(exist_ok=True)
        log.info(
            "supernet: space %r (%d layers, %d combinations), %d classes, %d train images, %d probe images, "
            "%d steps/epoch, device %s x%d",
            space.name, space.num_layers, shrunk.num_combinations, full.num_classes, len(loader.data),
            sum(len(y) for _, y in probe_batches), steps, device, world,
        )
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 1000 + epoch * 16 + rank)  # dropout: a function of (seed, epoch, rank)
        metrics, digest = _train_epoch(model, net, optimizer, loader, space, shrunk, cfg, epoch, steps, total, base_lr, device)
        if len(set(dist.all_gather_object(digest))) != 1:
            raise NeasError(f"epoch {epoch + 1}: ranks sampled different ensembles; check that every rank runs the same seed and config")
        note = ""
        due = cfg.shrink != "none" and (epoch + 1) % cfg.shrink_every == 0 and epoch + 1 < cfg.epochs
        if due and shrunk.num_combinations > cfg.shrink_until:
            gen = random.Random(f"{cfg.seed}:{epoch}:shrink")
            bar = tqdm(total=cfg.shrink_samples, desc=f"shrink round {rounds + 1}", leave=False, disable=None if dist.is_main_process() else True)
            before = shrunk.num_combinations
            shrunk, record = shrink_round(model, shrunk, settings, bn_batches, probe_batches, gen, bar)
            bar.close()
            record = {"round": rounds, "epoch": epoch + 1, "calibration": calibration, **record}
            if dist.is_main_process():
                atomic_write_text(run / "shrink" / f"round_{rounds:02d}.json", json.dumps(record) + "\n")
            rounds += 1
            note = f"  shrink {before} -> {shrunk.num_combinations}"
        metrics["combinations"] = shrunk.num_combinations
        if dist.is_main_process():
            state = {"epoch": epoch, "shrink_rounds": rounds, "shrunk": shrunk.to_json(), "seed": cfg.seed, "steps": (epoch + 1) * steps}
            logger.log((epoch + 1) * steps, epoch=epoch, **metrics)  # before the checkpoint: resume trims it
            save_checkpoint(run, f"epoch_{epoch:04d}", model, optimizer, state)
            log.info(
                "epoch %d/%d  loss %.4f  ens-acc %.1f%%  lr %.4g  %.0f img/s  %d combinations%s",
                epoch + 1, cfg.epochs, metrics["loss"], 100 * metrics["ensemble_acc"], metrics["lr"],
                metrics["images_per_s"], shrunk.num_combinations, note,
            )
        dist.barrier()
    if dist.is_main_process():
        info = SupernetFile(space, shrunk, tuple(full.classes), cfg.data, cfg.data_dir, cfg.holdout, cfg.shrink, cfg.epochs - 1,
                            asdict(cfg))
        save_supernet(model, info, run / "supernet.safetensors")
        atomic_write_text(run / "shrunk_space.json", json.dumps(shrunk.to_json(), indent=1) + "\n")
        log.info("supernet written to %s", run / "supernet.safetensors")
    logger.close()
    dist.barrier()
    return run
