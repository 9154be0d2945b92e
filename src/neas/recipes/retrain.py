"""Retrain the found ensemble from scratch with the released models' recipe (DESIGN.md §9).

    neas retrain --arch runs/search/arch.json --data digits --out runs/retrain
    torchrun --nproc_per_node 8 -m neas retrain --arch neas-m --data imagefolder \\
        --data-dir /data/imagenet --recipe imagenet --out runs/neas-m

Built from timm's parts: RMSpropTF, cosine schedule with warm-up, weight decay without
biases/BN, label smoothing, dropout, RandAugment, random erasing, EMA (whose weights are the
ones reported and exported). The loss is the sum of the per-path losses; the shared trunk's
gradient is divided by K. Writes ``model.safetensors``, ``eval.json``, ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import RMSpropTF
from timm.optim._param_groups import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from tqdm import tqdm

from neas import dist
from neas.data import Augment, BatchLoader, holdout_split, load_dataset
from neas.ensemble import build_ensemble
from neas.ensemble.io import save_ensemble
from neas.ensemble.metrics import evaluate_ensemble
from neas.errors import NeasError, suggest
from neas.log import MetricLogger
from neas.space import EnsembleArch, SearchSpace
from neas.train.checkpoint import load_checkpoint, save_checkpoint
from neas.train.loop import autocast, grad_scaler, prepare_run_dir, seed_everything, truncate_metrics
from neas.train.recipes import RETRAIN_PRESETS

__all__ = ["RetrainConfig", "retrain", "resolve_arch_and_space"]

log = logging.getLogger(__name__)


@dataclass
class RetrainConfig:
    """Every option of ``neas retrain``; each is also a YAML key. ``None`` takes the recipe's value."""

    arch: str = "neas-s"  # neas-s/m/l or an arch JSON file (a search's arch.json)
    space: "str | None" = None  # default: the arch file's space, else imagenet
    data: str = "digits"
    data_dir: "str | None" = None
    download: bool = False
    out: str = "runs/retrain"
    recipe: str = "small"  # small | imagenet: defaults for the fields below
    epochs: "int | None" = None
    batch_size: "int | None" = None  # per process
    lr_per_2048: "float | None" = None  # learning rate per 2048 images (scaled by the global batch)
    warmup_epochs: "int | None" = None
    weight_decay: "float | None" = None
    label_smoothing: "float | None" = None
    dropout: "float | None" = None
    randaugment: "str | None" = None  # a timm policy, or 'none'
    erase_prob: "float | None" = None
    ema_decay: "float | None" = None  # 0 disables the EMA
    holdout: float = 0.0  # train without this held-out fraction (to mirror a search's split)
    eval_split: str = "test"  # test | holdout (score on the held-out part, e.g. for ranking studies)
    eval_every: int = 1  # epochs between test evaluations
    compile: str = "auto"  # torch.compile the training forward: on | off | auto (on for runs of >= 5000 steps)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 4
    resume: bool = False

    def resolved(self) -> "RetrainConfig":
        if self.recipe not in RETRAIN_PRESETS:
            raise NeasError(f"recipe: unknown {self.recipe!r}{suggest(self.recipe, RETRAIN_PRESETS)}; recipes: {', '.join(RETRAIN_PRESETS)}")
        preset = RETRAIN_PRESETS[self.recipe]
        values = {k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in preset.items()}
        cfg = dataclasses.replace(self, **values)
        if cfg.randaugment in ("none", ""):
            cfg = dataclasses.replace(cfg, randaugment="none")
        for key in ("epochs", "batch_size", "eval_every"):
            if getattr(cfg, key) < 1:
                raise NeasError(f"{key} must be at least 1, got {getattr(cfg, key)}")
        if cfg.compile not in ("auto", "on", "off"):
            raise NeasError(f"compile must be auto, on or off, got {cfg.compile!r}")
        if not 0 <= cfg.ema_decay < 1:
            raise NeasError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        return cfg


def resolve_arch_and_space(arch_spec: str, space_spec: "str | None") -> tuple[EnsembleArch, SearchSpace]:
    arch = EnsembleArch.resolve(arch_spec)
    stored = None
    if str(arch_spec).endswith(".json") and Path(arch_spec).is_file():
        stored = json.loads(Path(arch_spec).read_text()).get("space")
    if space_spec is not None:
        space = SearchSpace.resolve(space_spec)
    elif isinstance(stored, dict):
        space = SearchSpace.from_dict(stored)
    else:
        space = SearchSpace.resolve(stored or "imagenet")
    arch.validate(space)
    return arch, space


class _PathLogits(nn.Module):
    """DDP wraps this, so every path's logits come out of one forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.path_logits(x)


def retrain(cfg: RetrainConfig) -> Path:
    """Runs (or resumes) the retraining; returns the run directory."""
    cfg = cfg.resolved()
    device = dist.init(cfg.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    arch, space = resolve_arch_and_space(cfg.arch, cfg.space)
    space = dataclasses.replace(space, dropout=cfg.dropout)
    train_full = load_dataset(cfg.data, "train", space.input_size, cfg.data_dir, cfg.download)
    if cfg.eval_split not in ("test", "holdout"):
        raise NeasError(f"eval_split must be test or holdout, got {cfg.eval_split!r}")
    if cfg.eval_split == "holdout" and not cfg.holdout:
        raise NeasError("eval_split holdout needs a holdout fraction > 0")
    test = None if cfg.eval_split == "holdout" else load_dataset(cfg.data, "test", space.input_size, cfg.data_dir, cfg.download)
    if cfg.holdout:
        keep, held = holdout_split(train_full.labels, cfg.holdout)
        train_full, held_out = train_full.subset(keep), train_full.subset(held)
        test = test if test is not None else held_out
    run = prepare_run_dir(cfg.out, cfg.resume, cfg) if dist.is_main_process() else Path(cfg.out)
    dist.barrier()
    augment = Augment(
        pad=max(1, space.input_size // 8), flip=cfg.data != "digits",
        randaugment=None if cfg.randaugment == "none" else cfg.randaugment, erase_prob=cfg.erase_prob,
    )
    loader = BatchLoader(train_full, cfg.batch_size, True, augment, cfg.seed, rank, world, device, workers=cfg.workers)
    test_loader = BatchLoader(test, cfg.batch_size * 2, False, device=device, workers=cfg.workers)
    seed_everything(cfg.seed)
    net = build_ensemble(space, arch, train_full.num_classes).to(device, memory_format=torch.channels_last)
    lr = cfg.lr_per_2048 * cfg.batch_size * world / 2048
    optimizer = RMSpropTF(param_groups_weight_decay(net, cfg.weight_decay), lr=lr, alpha=0.9, eps=1e-3, momentum=0.9)
    steps = len(loader)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps * cfg.epochs, warmup_t=steps * cfg.warmup_epochs,
                                  warmup_lr_init=lr * 1e-3, lr_min=lr * 1e-3, t_in_epochs=False)
    ema = ModelEmaV3(net, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    extra = {"ema": ema.module} if ema is not None else {}
    start = 0
    if cfg.resume:
        state = load_checkpoint(run, net, optimizer, extra)
        start = state["epoch"] + 1
        if dist.is_main_process():
            truncate_metrics(run, state["epoch"])
        log.info("resuming %s after epoch %d", run, start)
    wrapped = _PathLogits(net)
    # torch.compile: 1.13x faster steps on 2 CPU cores but ~2 minutes to compile (docs/PERFORMANCE.md),
    # so "auto" compiles only runs long enough to win it back
    if cfg.compile == "on" or (cfg.compile == "auto" and steps * cfg.epochs >= 5000):
        log.info("compiling the training forward with torch.compile")
        wrapped = torch.compile(wrapped)
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else nn.CrossEntropyLoss()
    scaler = grad_scaler(device, cfg.amp)
    logger = MetricLogger(run)
    report = ema.module if ema is not None else net
    if dist.is_main_process():
        log.info("retrain %s in space %r: %d train / %d test images, %d classes, %d steps/epoch, lr %.4g, recipe %s, device %s x%d",
                 arch, space.name, len(train_full), len(test), train_full.num_classes, steps, lr, cfg.recipe, device, world)
    result = None
    for epoch in range(start, cfg.epochs):
        seed_everything(cfg.seed * 1000 + epoch * 16 + rank)
        net.train()
        loss_sum, seen, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader.epoch(epoch), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if dist.is_main_process() else True)
        for i, (x, y) in enumerate(bar):
            step = epoch * steps + i
            scheduler.step_update(step)
            with autocast(device, cfg.amp):
                loss = sum(criterion(l.float(), y) for l in wrapped(x))
            if not torch.isfinite(loss):
                raise NeasError(f"the loss became {loss.item()} at step {step} (epoch {epoch + 1}); stopping — the last good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(net, step=step)
            loss_sum += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        metrics = dist.all_reduce_mean({"loss": loss_sum / max(seen, 1)}, device)
        metrics["images_per_s"] = seen * world / (time.perf_counter() - t0)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            result = evaluate_ensemble(report, test_loader.epoch(0))
            metrics.update({"test_top1": result["ensemble"]["top1"], "test_top5": result["ensemble"]["top5"], "test_loss": result["ensemble"]["loss"]})
            metrics.update({f"test_top1_path{j}": result[f"path{j}"]["top1"] for j in range(arch.num_paths)})
        if dist.is_main_process():
            logger.log((epoch + 1) * steps, epoch=epoch, **metrics)
            save_checkpoint(run, f"epoch_{epoch:04d}", net, optimizer, {"epoch": epoch, "seed": cfg.seed}, extra=extra)
            test_note = f"  test top-1 {100 * metrics['test_top1']:.2f}%" if "test_top1" in metrics else ""
            log.info("epoch %d/%d  loss %.4f  lr %.4g  %.0f img/s%s", epoch + 1, cfg.epochs, metrics["loss"], metrics["lr"], metrics["images_per_s"], test_note)
        dist.barrier()
    if result is None:  # resumed after the last epoch
        result = evaluate_ensemble(report, test_loader.epoch(0))
    if dist.is_main_process():
        meta = {"classes": train_full.classes, "weights": "ema" if ema is not None else "raw",
                "data": {"data": cfg.data, "data_dir": cfg.data_dir}, "recipe": cfg.recipe}
        save_ensemble(report, run / "model.safetensors", **meta)
        from neas.train.checkpoint import atomic_write_text

        atomic_write_text(run / "eval.json", json.dumps({"split": cfg.eval_split, **result}, indent=1) + "\n")
        log.info("test: ensemble top-1 %.2f%%  (%s)", 100 * result["ensemble"]["top1"],
                 ", ".join(f"path{j} {100 * result[f'path{j}']['top1']:.2f}%" for j in range(arch.num_paths)))
    logger.close()
    dist.barrier()
    return run
